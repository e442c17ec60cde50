//! Real-world LiteFS configuration files (`fixtures/configs/`), loaded unchanged: each must give
//! the values LiteFS would use, and be refused only where LiteFS refuses it too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ltxd::config::{machine_hostname, Config, ConfigError, LeaseType, LogFormat};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/configs")
        .join(name)
}

/// The environment of a Fly.io machine in the primary region, as those files expect it.
fn fly_env(name: &str) -> Option<String> {
    let pairs: HashMap<&str, &str> = [
        ("LITEFS_DIR", "/litefs"),
        ("INTERNAL_PORT", "8080"),
        ("PORT", "8081"),
        ("DATABASE_FILENAME", "sqlite.db"),
        ("FLY_REGION", "ams"),
        ("PRIMARY_REGION", "ams"),
        ("HOSTNAME", "d891e1b2"),
        ("FLY_APP_NAME", "my-app"),
        (
            "FLY_CONSUL_URL",
            "https://:token@consul-fra.fly-shared.net/my-app-xyz/",
        ),
    ]
    .into_iter()
    .collect();
    pairs.get(name).map(|v| v.to_string())
}

fn load(name: &str) -> Result<Config, ConfigError> {
    Config::load(Some(&fixture(name)), &fly_env).map(|(config, _)| config)
}

fn loads(name: &str) -> Config {
    load(name).unwrap_or_else(|err| panic!("{name}: LiteFS loads it, ltxd refused: {err}"))
}

fn machine() -> String {
    machine_hostname().expect("this machine has a hostname")
}

#[test]
fn the_litefs_repository_example() {
    let c = loads("litefs-repo-etc.yml");
    assert_eq!(c.fuse.dir, "/litefs");
    assert!(!c.fuse.allow_other && !c.fuse.debug);
    assert_eq!(c.data.dir, "/var/lib/litefs");
    assert!(c.data.compress, "data.compress defaults to true");
    assert_eq!(c.data.retention, Duration::from_secs(600));
    assert_eq!(c.data.retention_monitor_interval, Duration::from_secs(60));
    assert_eq!(c.exec.len(), 1);
    assert_eq!(c.exec[0].cmd, "myapp -addr :8081");
    assert!(!c.skip_sync && !c.exit_on_error);
    assert_eq!(c.http.addr, ":20202");
    assert_eq!(c.proxy.addr, ":8080");
    assert_eq!(c.proxy.target, "localhost:8081");
    assert_eq!(c.proxy.db, "my.db");
    assert_eq!(c.proxy.passthrough, ["/debug/*", "*.png"]);
    assert_eq!(c.proxy.max_lag, Duration::from_secs(10));
    assert_eq!(c.lease.kind, LeaseType::Consul);
    assert_eq!(c.lease.hostname, "myhost");
    assert_eq!(c.lease.advertise_url, "http://myhost:20202");
    assert!(c.lease.candidate && !c.lease.promote);
    assert_eq!(c.lease.reconnect_delay, Duration::from_secs(1));
    assert_eq!(c.lease.demote_delay, Duration::from_secs(10));
    assert_eq!(c.lease.consul.url, "http://myhost:8500");
    assert_eq!(c.lease.consul.key, "litefs/primary");
    assert_eq!(c.lease.consul.ttl, Duration::from_secs(10));
    assert_eq!(c.lease.consul.lock_delay, Duration::from_secs(1));
    assert!(c.tracing.enabled);
    assert_eq!(c.tracing.path, "/var/log/lifefs/trace.log");
    assert_eq!((c.tracing.max_size, c.tracing.max_count), (64, 10));
    assert!(c.tracing.compress);
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn the_litefs_repository_test_config() {
    let c = loads("litefs-repo-tests.yml");
    assert_eq!(c.fuse.dir, "/home/build/litefs");
    assert!(c.fuse.debug);
    assert_eq!(c.data.dir, "/home/build/lib/litefs");
    assert_eq!(c.lease.kind, LeaseType::Static);
    assert_eq!(c.lease.hostname, "myhost");
    assert_eq!(c.lease.advertise_url, "http://myhost:20202");
    assert!(c.lease.candidate);
}

#[test]
fn files_without_a_lease_type_are_refused_as_litefs_refuses_them() {
    for name in ["litefs-repo-single-exec.yml", "litefs-repo-multi-exec.yml"] {
        let err = load(name).expect_err("LiteFS's mount refuses a file without lease.type");
        assert!(err.to_string().contains("lease"), "{name}: {err}");
    }
}

#[test]
fn the_epic_stack_fly_config() {
    let c = loads("epic-stack-fly.yml");
    assert_eq!(c.fuse.dir, "/litefs");
    assert_eq!(c.data.dir, "/data/litefs");
    assert_eq!(c.proxy.addr, ":8080");
    assert_eq!(c.proxy.target, "localhost:8081");
    assert_eq!(c.proxy.db, "sqlite.db");
    assert_eq!(c.lease.kind, LeaseType::Consul);
    assert!(c.lease.candidate && c.lease.promote);
    assert_eq!(
        c.lease.advertise_url,
        "http://d891e1b2.vm.my-app.internal:20202"
    );
    // LiteFS takes the hostname from os.Hostname(), not from $HOSTNAME.
    assert_eq!(c.lease.hostname, machine());
    assert_eq!(c.lease.consul.key, "epic-stack-litefs/my-app");
    let cmds: Vec<_> = c
        .exec
        .iter()
        .map(|e| (e.cmd.as_str(), e.if_candidate))
        .collect();
    assert_eq!(
        cmds,
        [
            ("node ./other/setup-swap.js", false),
            ("npx prisma migrate deploy", true),
            ("npm start", false),
        ]
    );
}

#[test]
fn consul_without_hostname_uses_the_machine_and_the_http_port() {
    let c = loads("docs-consul-no-hostname.yml");
    assert_eq!(c.lease.kind, LeaseType::Consul);
    assert_eq!(c.lease.hostname, machine());
    assert_eq!(c.lease.advertise_url, format!("http://{}:20202", machine()));
    assert!(!c.exit_on_error);
}

#[test]
fn etcd_without_hostname_uses_the_machine_too() {
    let c = loads("ltxd-docs-etcd.yml");
    assert_eq!(c.lease.kind, LeaseType::Etcd);
    assert_eq!(c.lease.hostname, machine());
    assert_eq!(c.lease.advertise_url, format!("http://{}:20202", machine()));
    assert_eq!(c.lease.etcd.endpoints.len(), 3);
}

#[test]
fn static_leases_keep_what_is_written() {
    let primary = loads("docs-static-primary.yml");
    assert!(primary.lease.candidate);
    assert_eq!(primary.lease.hostname, "", "a static lease gets no default");
    assert_eq!(primary.lease.advertise_url, "http://primary-host:20202");
    let replica = loads("docs-static-replica.yml");
    assert!(!replica.lease.candidate);
    assert_eq!(replica.lease.hostname, "primary-host");
}

#[test]
fn every_documented_section_with_other_values() {
    let c = loads("docs-full-keys.yml");
    assert_eq!(
        (c.fuse.dir.as_str(), c.fuse.allow_other, c.fuse.debug),
        ("/mnt/litefs", true, true)
    );
    assert!(!c.data.compress);
    assert_eq!(c.data.retention, Duration::from_secs(3600));
    assert_eq!(c.data.retention_monitor_interval, Duration::from_secs(300));
    assert!(c.exit_on_error && c.skip_sync);
    assert_eq!(c.proxy.max_lag, Duration::from_secs(20));
    assert_eq!(c.proxy.always_forward, ["/sync/*"]);
    assert_eq!(c.lease.reconnect_delay, Duration::from_secs(2));
    assert_eq!(c.lease.demote_delay, Duration::from_secs(30));
    assert_eq!(c.lease.consul.ttl, Duration::from_secs(15));
    assert_eq!(c.lease.consul.lock_delay, Duration::from_secs(3));
    // The advertise URL follows http.addr's port.
    assert_eq!(c.lease.advertise_url, format!("http://{}:30303", machine()));
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.log.timestamp && c.log.debug);
    assert_eq!((c.tracing.max_size, c.tracing.max_count), (32, 4));
    assert!(!c.tracing.compress);
    assert_eq!(c.exec.len(), 2);
}

#[test]
fn every_fixture_is_covered() {
    let dir = fixture("");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.sort();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let source = include_str!("config_corpus.rs");
    for name in names {
        assert!(readme.contains(&name), "{name} is not listed in the README");
        assert!(
            source.contains(&format!("\"{name}\"")),
            "{name} has no test"
        );
    }
}
