//! `ltxd::config`: LiteFS-compatible configuration files, as a user writes them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ltxd::config::{
    expand_env, parse_go_duration, BackupType, Config, ConfigError, ExecConfig, LeaseType,
    LoadOptions, LogFormat,
};

/// A hermetic environment built from pairs.
fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

fn parse_with_env(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("litefs.yml"), &env_of(pairs))
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, &[])
}

/// A configuration in the style of LiteFS's example for Fly.io: Consul lease, proxy, exec list,
/// environment-dependent candidacy.
const FLY_EXAMPLE: &str = r#"
# FUSE mount the application opens its database under.
fuse:
  dir: "/litefs"

# Internal storage; the application never touches it directly.
data:
  dir: "/var/lib/litefs"

# Stay up after a startup failure so the machine can be inspected.
exit-on-error: false

# Consistent reads and write redirection for a single-database app.
proxy:
  addr: ":8080"
  target: "localhost:8081"
  db: "db"
  passthrough:
    - "*.ico"
    - "*.png"

# Migrations on candidates, then the long-running server.
exec:
  - cmd: "app-migrate -dsn /litefs/db"
    if-candidate: true
  - cmd: "app-server -addr :8081 -dsn /litefs/db"

# Any node in the primary region may take the lease.
lease:
  type: "consul"
  advertise-url: "http://${HOSTNAME}.vm.${FLY_APP_NAME}.internal:20202"
  candidate: ${FLY_REGION == PRIMARY_REGION}
  promote: true

  consul:
    url: "${FLY_CONSUL_URL}"
    key: "litefs/${FLY_APP_NAME}"
"#;

#[test]
fn litefs_fly_example_parses() {
    let env = [
        ("HOSTNAME", "e286ed5c"),
        ("FLY_APP_NAME", "notes"),
        ("FLY_REGION", "ord"),
        ("PRIMARY_REGION", "ord"),
        (
            "FLY_CONSUL_URL",
            "https://:token@consul-iad.fly-shared.net/notes-abc/",
        ),
    ];
    let config = parse_with_env(FLY_EXAMPLE, &env).unwrap();
    assert!(!config.exit_on_error);
    assert_eq!(config.fuse.dir, "/litefs");
    assert_eq!(config.data.dir, "/var/lib/litefs");
    assert_eq!(config.proxy.addr, ":8080");
    assert_eq!(config.proxy.target, "localhost:8081");
    assert_eq!(config.proxy.db, "db");
    assert_eq!(config.proxy.passthrough, ["*.ico", "*.png"]);
    assert_eq!(
        config.exec,
        [
            ExecConfig {
                cmd: "app-migrate -dsn /litefs/db".into(),
                if_candidate: true,
            },
            ExecConfig::new("app-server -addr :8081 -dsn /litefs/db"),
        ]
    );
    assert_eq!(config.lease.kind, LeaseType::Consul);
    assert_eq!(
        config.lease.advertise_url,
        "http://e286ed5c.vm.notes.internal:20202"
    );
    assert!(config.lease.candidate);
    assert!(config.lease.promote);
    assert_eq!(
        config.lease.consul.url,
        "https://:token@consul-iad.fly-shared.net/notes-abc/"
    );
    assert_eq!(config.lease.consul.key, "litefs/notes");
    // Keys the file leaves out have LiteFS's defaults.
    assert_eq!(config.http.addr, ":20202");
    assert_eq!(config.lease.consul.ttl, Duration::from_secs(10));

    // In another region the same file makes a non-candidate.
    let mut env = env.to_vec();
    env[2] = ("FLY_REGION", "syd");
    let config = parse_with_env(FLY_EXAMPLE, &env).unwrap();
    assert!(!config.lease.candidate);
}

#[test]
fn static_primary_and_replica_parse() {
    let primary = "\
fuse:
  dir: /mnt/litefs
data:
  dir: /var/lib/litefs
lease:
  type: static
  hostname: node-a
  advertise-url: http://node-a:20202
  candidate: ${ ROLE == 'primary' }
exec: myapp serve
";
    let config = parse_with_env(primary, &[("ROLE", "primary")]).unwrap();
    assert_eq!(config.lease.kind, LeaseType::Static);
    assert!(config.lease.candidate);
    assert_eq!(config.exec, [ExecConfig::new("myapp serve")]);
    assert_eq!(config.fuse.dir, "/mnt/litefs");

    let config = parse_with_env(primary, &[("ROLE", "replica")]).unwrap();
    assert!(!config.lease.candidate);
    assert_eq!(config.lease.advertise_url, "http://node-a:20202");
}

/// Every key LiteFS knows, plus the etcd extension, with non-default values.
const EVERY_KEY: &str = "\
exit-on-error: false
skip-sync: true
strict-verify: true
exec:
  - cmd: migrate
    if-candidate: true
  - cmd: serve
data:
  dir: /data/store
  compress: false
  retention: 1h
  retention-monitor-interval: 1m30s
fuse:
  dir: /data/mnt
  allow-other: true
  debug: true
http:
  addr: 127.0.0.1:30303
  snapshot-timeout: 2m
proxy:
  addr: :8080
  target: localhost:8081
  db: app.db
  max-lag: 2s
  debug: true
  passthrough: [\"/static/*\"]
  always-forward: [\"/api/write*\", \"/login\"]
  primary-redirect-timeout: 500ms
  read-timeout: 1s
  read-header-timeout: 2s
  write-timeout: 3s
  idle-timeout: 4s
lease:
  type: etcd
  hostname: node-b
  advertise-url: http://node-b:30303
  candidate: false
  promote: true
  reconnect-delay: 250ms
  demote-delay: 1.5m
  databases:
    - app.db
    - audit.db
  consul:
    url: http://consul:8500
    key: litefs/app
    ttl: 20s
    lock-delay: 2s
  etcd:
    endpoints:
      - http://etcd-0:2379
      - http://etcd-1:2379
    key: /ltxd/app/lease
    ttl: 15s
    username: ltxd
    password: sekrit
    ca-file: /etc/ltxd/ca.pem
    cert-file: /etc/ltxd/client.pem
    key-file: /etc/ltxd/client-key.pem
backup:
  type: file
  path: /backups
  url: https://backup.example
  cluster: prod
  auth-token: tok
log:
  format: json
  timestamp: true
  debug: true
tracing:
  enabled: false
  path: /var/log/ltxd/trace.log
  max-size: 128
  max-count: 3
  compress: false
";

#[test]
fn every_key_parses() {
    let c = parse(EVERY_KEY).unwrap();
    assert!(!c.exit_on_error && c.skip_sync && c.strict_verify);
    assert_eq!(c.exec.len(), 2);
    assert!(c.exec[0].if_candidate && !c.exec[1].if_candidate);

    assert_eq!(c.data.dir, "/data/store");
    assert!(!c.data.compress);
    assert_eq!(c.data.retention, Duration::from_secs(3600));
    assert_eq!(c.data.retention_monitor_interval, Duration::from_secs(90));

    assert_eq!(c.fuse.dir, "/data/mnt");
    assert!(c.fuse.allow_other && c.fuse.debug);

    assert_eq!(c.http.addr, "127.0.0.1:30303");
    assert_eq!(c.http.snapshot_timeout, Duration::from_secs(120));

    let p = &c.proxy;
    assert_eq!(
        (p.addr.as_str(), p.target.as_str(), p.db.as_str()),
        (":8080", "localhost:8081", "app.db")
    );
    assert_eq!(p.max_lag, Duration::from_secs(2));
    assert!(p.debug);
    assert_eq!(p.passthrough, ["/static/*"]);
    assert_eq!(p.always_forward, ["/api/write*", "/login"]);
    assert_eq!(p.primary_redirect_timeout, Duration::from_millis(500));
    assert_eq!(p.read_timeout, Duration::from_secs(1));
    assert_eq!(p.read_header_timeout, Duration::from_secs(2));
    assert_eq!(p.write_timeout, Duration::from_secs(3));
    assert_eq!(p.idle_timeout, Duration::from_secs(4));

    let l = &c.lease;
    assert_eq!(l.kind, LeaseType::Etcd);
    assert_eq!(l.hostname, "node-b");
    assert_eq!(l.advertise_url, "http://node-b:30303");
    assert!(!l.candidate && l.promote);
    assert_eq!(l.reconnect_delay, Duration::from_millis(250));
    assert_eq!(l.demote_delay, Duration::from_secs(90));
    assert_eq!(l.databases, ["app.db", "audit.db"]);
    assert_eq!(l.consul.url, "http://consul:8500");
    assert_eq!(l.consul.key, "litefs/app");
    assert_eq!(l.consul.ttl, Duration::from_secs(20));
    assert_eq!(l.consul.lock_delay, Duration::from_secs(2));
    assert_eq!(
        l.etcd.endpoints,
        ["http://etcd-0:2379", "http://etcd-1:2379"]
    );
    assert_eq!(l.etcd.key, "/ltxd/app/lease");
    assert_eq!(l.etcd.ttl, Duration::from_secs(15));
    assert_eq!(
        (l.etcd.username.as_str(), l.etcd.password.as_str()),
        ("ltxd", "sekrit")
    );
    assert_eq!(l.etcd.ca_file, "/etc/ltxd/ca.pem");
    assert_eq!(l.etcd.cert_file, "/etc/ltxd/client.pem");
    assert_eq!(l.etcd.key_file, "/etc/ltxd/client-key.pem");

    assert_eq!(c.backup.kind, Some(BackupType::File));
    assert_eq!(c.backup.path, "/backups");
    assert_eq!(c.backup.url, "https://backup.example");
    assert_eq!(c.backup.cluster, "prod");
    assert_eq!(c.backup.auth_token, "tok");

    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.log.timestamp && c.log.debug);

    assert!(!c.tracing.enabled && !c.tracing.compress);
    assert_eq!(c.tracing.path, "/var/log/ltxd/trace.log");
    assert_eq!(c.tracing.max_size, 128);
    assert_eq!(c.tracing.max_count, 3);
}

#[test]
fn defaults_for_a_minimal_file() {
    let c = parse("lease:\n  type: static\n").unwrap();
    assert_eq!(c, Config::new(LeaseType::Static));
    assert!(c.exit_on_error);
    assert_eq!(c.data.dir, "/var/lib/litefs");
    assert!(c.data.compress);
    assert_eq!(c.data.retention, Duration::from_secs(600));
    assert_eq!(c.data.retention_monitor_interval, Duration::from_secs(60));
    assert_eq!(c.fuse.dir, "/litefs");
    assert_eq!(c.http.addr, ":20202");
    assert_eq!(c.proxy.max_lag, Duration::from_secs(10));
    assert!(c.lease.candidate);
    assert_eq!(c.lease.reconnect_delay, Duration::from_secs(1));
    assert_eq!(c.lease.demote_delay, Duration::from_secs(10));
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(c.tracing.enabled);
}

#[test]
fn go_durations() {
    for (text, want) in [
        ("10s", Duration::from_secs(10)),
        ("1m30s", Duration::from_secs(90)),
        ("500ms", Duration::from_millis(500)),
        ("1h", Duration::from_secs(3600)),
        ("1h2m3s4ms", Duration::new(3723, 4_000_000)),
        ("1.5h", Duration::from_secs(5400)),
        ("750us", Duration::from_micros(750)),
        ("0", Duration::ZERO),
    ] {
        assert_eq!(parse_go_duration(text).unwrap(), want, "{text}");
        let yaml = format!("data:\n  retention: {text}\nlease:\n  type: static\n");
        assert_eq!(parse(&yaml).unwrap().data.retention, want, "{text}");
    }
    for bad in ["soon", "10", "1d", "5 s", ""] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn env_expansion_rules() {
    let env = env_of(&[("A", "alpha"), ("B", "alpha"), ("C", "gamma")]);
    let cases = [
        ("$A", "alpha"),
        ("${A}", "alpha"),
        ("${  A  }", "alpha"),
        ("x${A}y", "xalphay"),
        ("$UNSET|${UNSET}", "|"),
        ("${ A == 'alpha' }", "true"),
        ("${ A != 'alpha' }", "false"),
        ("${ A == \"gamma\" }", "false"),
        ("${ A == B }", "true"),
        ("${ A == C }", "false"),
        ("${ A != C }", "true"),
        ("${ UNSET == '' }", "true"),
        ("price: $ 5", "price: $ 5"),
    ];
    for (text, want) in cases {
        assert_eq!(expand_env(text, &env), want, "{text}");
    }
}

#[test]
fn expansion_can_be_disabled() {
    let text = "lease:\n  type: static\n  hostname: \"${NAME}\"\n";
    let env = env_of(&[("NAME", "n1")]);
    let opts = LoadOptions {
        no_expand_env: true,
    };
    let c = Config::parse_with(text, Path::new("x.yml"), &env, &opts).unwrap();
    assert_eq!(c.lease.hostname, "${NAME}");
    let c = Config::parse(text, Path::new("x.yml"), &env).unwrap();
    assert_eq!(c.lease.hostname, "n1");
}

/// Asserts that `text` fails with a message naming `key` (a substring) and `line N`.
fn assert_error(text: &str, key: &str, line: u64) -> ConfigError {
    let err = parse(text).expect_err("the file should be rejected");
    let msg = err.to_string();
    assert!(msg.contains(key), "message does not name {key:?}:\n{msg}");
    assert!(
        msg.contains(&format!("line {line}")),
        "message lacks line {line}:\n{msg}"
    );
    assert!(
        msg.starts_with("litefs.yml: "),
        "message lacks the path:\n{msg}"
    );
    assert_eq!(err.line(), Some(line), "{msg}");
    err
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = "fuse:\n  dir: /litefs\nlease:\n  type: static\n  candidat: true\n";
    let err = assert_error(text, "candidat", 5);
    assert_eq!(err.key(), Some("lease.candidat"));
    // Top-level and nested unknown keys too.
    assert_error("lease:\n  type: static\nmount:\n  dir: /x\n", "mount", 3);
    assert_error(
        "lease:\n  type: consul\n  consul:\n    url: http://c\n    key: k\n    token: t\n",
        "lease.consul.token",
        6,
    );
}

#[test]
fn bad_values_name_key_and_line() {
    let err = assert_error(
        "fuse:\n  dir: /litefs\nlease:\n  type: static\n  candidate: maybe\n",
        "lease.candidate",
        5,
    );
    assert!(err.to_string().contains("maybe"), "{err}");
    let err = assert_error(
        "lease:\n  type: static\ndata:\n  retention: soon\n",
        "data.retention",
        4,
    );
    assert!(err.to_string().contains("soon"), "{err}");
    assert_error("lease:\n  type: zookeeper\n", "lease.type", 2);
    assert_error(
        "log:\n  format: xml\nlease:\n  type: static\n",
        "log.format",
        2,
    );
    assert_error(
        "lease:\n  type: static\ntracing:\n  max-count: many\n",
        "tracing.max-count",
        4,
    );
}

#[test]
fn missing_lease_type_is_named() {
    let err = assert_error(
        "fuse:\n  dir: /litefs\nlease:\n  hostname: a\n  candidate: true\n",
        "lease.type",
        5,
    );
    assert_eq!(err.key(), Some("lease.type"));
    let err = parse("fuse:\n  dir: /litefs\n").unwrap_err();
    assert_eq!(err.key(), Some("lease.type"));
    assert!(err.to_string().contains("lease"), "{err}");
}

#[test]
fn yaml_syntax_errors_have_path_and_line() {
    let err = parse("lease:\n  type: static\n   hostname: [a\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("litefs.yml: "), "{msg}");
    assert!(msg.contains("line "), "{msg}");
    assert!(err.line().is_some());
    // The snippet points into the file by name.
    assert!(msg.contains("--> litefs.yml:"), "{msg}");
}

#[test]
fn validation_errors_name_the_key() {
    let cases = [
        (
            "data:\n  dir: /same\nfuse:\n  dir: /same\nlease:\n  type: static\n",
            "data.dir",
        ),
        ("lease:\n  type: consul\n", "lease.consul.url"),
        (
            "lease:\n  type: consul\n  consul:\n    url: http://c:8500\n",
            "lease.consul.key",
        ),
        (
            "lease:\n  type: etcd\n  etcd:\n    key: k\n",
            "lease.etcd.endpoints",
        ),
        (
            "lease:\n  type: etcd\n  etcd:\n    endpoints: [http://e:2379]\n",
            "lease.etcd.key",
        ),
        (
            "lease:\n  type: static\n  candidate: false\n",
            "lease.advertise-url",
        ),
        (
            "lease:\n  type: static\n  databases: [a.db]\n",
            "lease.databases",
        ),
    ];
    for (text, key) in cases {
        let err = parse(text).expect_err(key);
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.to_string().contains(key), "{err}");
        assert!(err.line().is_some(), "{err}");
    }
}

#[test]
fn load_explicit_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yml");
    std::fs::write(&path, "lease:\n  type: static\n  hostname: $ME\n").unwrap();
    let env = env_of(&[("ME", "node-1")]);
    let (config, from) = Config::load(Some(&path), &env).unwrap();
    assert_eq!(from, path);
    assert_eq!(config.lease.hostname, "node-1");

    // Errors carry the file's path.
    std::fs::write(&path, "lease:\n  type: static\n  candidate: maybe\n").unwrap();
    let err = Config::load(Some(&path), &env).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("line 3") && msg.contains("candidate"), "{msg}");

    let missing = dir.path().join("nope.yml");
    let err = Config::load(Some(&missing), &env).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("nope.yml"), "{err}");
}

/// Whether a search path outside the test's control exists, which would change the outcome.
fn search_is_disturbed() -> bool {
    ["./ltxd.yml", "./litefs.yml", "/etc/litefs.yml"]
        .iter()
        .any(|p| Path::new(p).exists())
}

#[test]
fn load_searches_home() {
    if search_is_disturbed() {
        eprintln!("skipped: a config file exists in the search path");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("litefs.yml");
    std::fs::write(&file, "lease:\n  type: static\n").unwrap();
    let home_str = home.path().to_str().unwrap().to_string();
    let env = env_of(&[("HOME", &home_str)]);
    let (config, from) = Config::load(None, &env).unwrap();
    assert_eq!(from, file);
    assert_eq!(config.lease.kind, LeaseType::Static);
}

#[test]
fn load_reports_the_paths_searched() {
    if search_is_disturbed() {
        eprintln!("skipped: a config file exists in the search path");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let home_str = home.path().to_str().unwrap().to_string();
    let env = env_of(&[("HOME", &home_str)]);
    let err = Config::load(None, &env).unwrap_err();
    let ConfigError::NotFound { searched } = &err else {
        panic!("expected NotFound, got {err}");
    };
    let want: Vec<PathBuf> = vec![
        "./ltxd.yml".into(),
        "./litefs.yml".into(),
        home.path().join("litefs.yml"),
        "/etc/litefs.yml".into(),
    ];
    assert_eq!(searched, &want);
    let msg = err.to_string();
    for path in &want {
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}

/// `client-auth` without a server certificate built no TLS before, so the node served cleartext
/// that authenticated nobody, on every interface. Every transport section refuses it, naming
/// `cert-file` at its section's line; with the certificate, or under `insecure-dev`, it loads.
#[test]
fn client_auth_without_a_server_certificate_is_refused() {
    for section in ["http", "quic"] {
        let text = format!(
            "lease:\n  type: static\n{section}:\n  addr: \":20202\"\n  client-auth: true\n  \
             ca-file: /etc/ltxd/ca.crt\n"
        );
        let key = format!("{section}.cert-file");
        let err = assert_error(&text, &key, 3);
        assert_eq!(err.key(), Some(key.as_str()), "{err}");
        assert!(err.to_string().contains("authenticates nobody"), "{err}");

        let with_cert =
            format!("{text}  cert-file: /etc/ltxd/node.crt\n  key-file: /etc/ltxd/node.key\n");
        parse(&with_cert).unwrap();
        parse(&format!("{text}  insecure-dev: true\n")).unwrap();
    }
}

#[test]
fn http_limits_have_defaults_and_refuse_zero() {
    let config = parse("lease:\n  type: static\n").unwrap();
    assert_eq!(config.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.http.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.http.max_connections, 0);
    assert_eq!(config.http.max_streams_per_peer, 64);
    assert_eq!(config.http.max_subscriptions, 256);
    let config = parse(
        "http:\n  header-read-timeout: 1s\n  idle-timeout: 2s\n  max-connections: 10\n  max-streams-per-peer: 3\nlease:\n  type: static\n",
    )
    .unwrap();
    assert_eq!(config.http.header_read_timeout, Duration::from_secs(1));
    assert_eq!(config.http.idle_timeout, Duration::from_secs(2));
    assert_eq!(config.http.max_connections, 10);
    assert_eq!(config.http.max_streams_per_peer, 3);
    for (key, value) in [
        ("header-read-timeout", "0s"),
        ("idle-timeout", "0"),
        ("max-streams-per-peer", "0"),
        ("max-subscriptions", "0"),
    ] {
        assert_error(
            &format!("lease:\n  type: static\nhttp:\n  {key}: {value}\n"),
            &format!("http.{key}"),
            4,
        );
    }
}

#[test]
fn a_bad_http_addr_is_found_at_load_time_with_its_line() {
    for addr in [
        "\"not an addr\"",
        "\":port\"",
        "\"host:99999\"",
        "\"a b:80\"",
        "\"20202\"",
    ] {
        assert_error(
            &format!("lease:\n  type: static\nhttp:\n  addr: {addr}\n"),
            "http.addr",
            4,
        );
    }
    for addr in [
        "\":20202\"",
        "127.0.0.1:20202",
        "localhost:1",
        "\"[::1]:20202\"",
        "node-1.internal:80",
    ] {
        parse(&format!("lease:\n  type: static\nhttp:\n  addr: {addr}\n")).unwrap();
    }
}

#[test]
fn a_duplicate_key_is_named_without_the_yaml_library_advice() {
    let err = assert_error("lease:\n  type: static\n  type: consul\n", "lease.type", 3);
    let msg = err.to_string();
    assert!(msg.contains("duplicate mapping key"), "{msg}");
    assert!(!msg.contains("DuplicateKeyPolicy"), "{msg}");
}

#[test]
fn an_unreadable_file_names_its_cause_once() {
    let err = Config::load(Some(Path::new("/nonexistent/ltxd.yml")), &|_| None).unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
}
