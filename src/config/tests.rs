use std::collections::HashMap;

use super::locate::SCHEMA;
use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.yml"), &no_env)
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err,
    }
}

const STATIC: &str = "lease:\n  type: static\n";

#[test]
fn minimal_file_has_litefs_defaults() {
    let config = parse(STATIC).unwrap();
    assert_eq!(config, Config::new(LeaseType::Static));
    assert!(config.exit_on_error);
    assert!(!config.skip_sync && !config.strict_verify);
    assert!(config.exec.is_empty());
    assert_eq!(config.data.dir, "/var/lib/litefs");
    assert!(config.data.compress);
    assert_eq!(config.data.retention, Duration::from_secs(600));
    assert_eq!(
        config.data.retention_monitor_interval,
        Duration::from_secs(60)
    );
    assert_eq!(config.fuse.dir, "/litefs");
    assert!(!config.fuse.allow_other && !config.fuse.debug);
    assert_eq!(config.http.addr, ":20202");
    assert_eq!(config.http.snapshot_timeout, Duration::ZERO);
    assert_eq!(config.proxy.max_lag, Duration::from_secs(10));
    assert_eq!(
        config.proxy.primary_redirect_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(config.proxy.read_header_timeout, Duration::from_secs(10));
    assert_eq!(config.proxy.idle_timeout, Duration::from_secs(30));
    assert_eq!(config.proxy.read_timeout, Duration::ZERO);
    assert_eq!(config.proxy.write_timeout, Duration::ZERO);
    assert!(config.lease.candidate && !config.lease.promote);
    assert_eq!(config.lease.reconnect_delay, Duration::from_secs(1));
    assert_eq!(config.lease.demote_delay, Duration::from_secs(10));
    assert_eq!(config.lease.consul.ttl, Duration::from_secs(10));
    assert_eq!(config.lease.consul.lock_delay, Duration::from_secs(1));
    assert_eq!(config.lease.etcd.ttl, Duration::from_secs(10));
    assert_eq!(config.backup.kind, None);
    assert_eq!(config.log.format, LogFormat::Text);
    assert!(config.tracing.enabled && config.tracing.compress);
    assert_eq!(config.tracing.max_size, 64);
    assert_eq!(config.tracing.max_count, 8);
}

#[test]
fn null_values_keep_defaults() {
    // What `key: $UNSET` becomes after expansion.
    let text = "exit-on-error:\nexec:\ndata:\n  dir:\n  compress: ~\n  retention: null\n\
                fuse:\nhttp:\n  addr:\nlease:\n  type: static\n  candidate:\n  hostname:\n  \
                reconnect-delay:\n  consul:\n    ttl:\ntracing:\n  max-size:\n";
    assert_eq!(parse(text).unwrap(), Config::new(LeaseType::Static));
}

#[test]
fn nonpositive_lease_durations_keep_defaults() {
    let text = "lease:\n  type: static\n  consul:\n    ttl: 0s\n    lock-delay: -1s\n  etcd:\n    \
                ttl: \"0\"\n";
    let config = parse(text).unwrap();
    assert_eq!(config.lease.consul.ttl, defaults::LEASE_TTL);
    assert_eq!(config.lease.consul.lock_delay, defaults::CONSUL_LOCK_DELAY);
    assert_eq!(config.lease.etcd.ttl, defaults::LEASE_TTL);
    // Elsewhere zero stays zero (it disables the feature).
    let config =
        parse("data:\n  retention-monitor-interval: 0s\nlease:\n  type: static\n").unwrap();
    assert_eq!(config.data.retention_monitor_interval, Duration::ZERO);
}

#[test]
fn exec_forms() {
    let config = parse("exec: myapp -addr :8080\nlease:\n  type: static\n").unwrap();
    assert_eq!(config.exec, vec![ExecConfig::new("myapp -addr :8080")]);
    let config = parse(
        "exec:\n  - cmd: migrate up\n    if-candidate: true\n  - cmd: serve\nlease:\n  type: static\n",
    )
    .unwrap();
    assert_eq!(
        config.exec,
        vec![
            ExecConfig {
                cmd: "migrate up".into(),
                if_candidate: true
            },
            ExecConfig::new("serve")
        ]
    );
    let config = parse("exec: []\nlease:\n  type: static\n").unwrap();
    assert!(config.exec.is_empty());
}

#[test]
fn enums() {
    for (text, kind) in [
        ("static", LeaseType::Static),
        ("consul", LeaseType::Consul),
        ("etcd", LeaseType::Etcd),
    ] {
        assert_eq!(kind.as_str(), text);
        assert_eq!(kind.to_string(), text);
    }
    let config =
        parse("log:\n  format: json\nbackup:\n  type: litefs-cloud\nlease:\n  type: static\n")
            .unwrap();
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.backup.kind, Some(BackupType::LitefsCloud));
    let config = parse("backup:\n  type: \"\"\nlease:\n  type: static\n").unwrap();
    assert_eq!(config.backup.kind, None);
    let err = parse_err("backup:\n  type: gcs\nlease:\n  type: static\n");
    assert_eq!(err.key(), Some("backup.type"));
    assert_eq!(err.line(), Some(2));
}

#[test]
fn hostname_falls_back_to_the_machine() {
    let text = "lease:\n  type: static\n  hostname: ${HOSTNAME}\n";
    let config = parse(text).unwrap();
    assert_eq!(
        Some(config.lease.hostname),
        machine_hostname().or(Some(String::new()))
    );
    let env = |name: &str| (name == "HOSTNAME").then(|| "node-7".to_string());
    let config = Config::parse(text, Path::new("t.yml"), &env).unwrap();
    assert_eq!(config.lease.hostname, "node-7");
}

#[test]
fn no_expand_env_keeps_dollars() {
    let text = "lease:\n  type: static\n  hostname: \"$HOST\"\n";
    let env = |_: &str| Some("x".to_string());
    let options = LoadOptions {
        no_expand_env: true,
    };
    let config = Config::parse_with(text, Path::new("t.yml"), &env, &options).unwrap();
    assert_eq!(config.lease.hostname, "$HOST");
    let config = Config::parse(text, Path::new("t.yml"), &env).unwrap();
    assert_eq!(config.lease.hostname, "x");
}

#[test]
fn every_section_lists_the_schema_keys() {
    // An unknown key in each section must be attributed to that section, which also checks
    // that `SCHEMA` lists exactly the keys serde knows.
    for (section, _) in SCHEMA {
        let text = match *section {
            "" => "bogus: 1\nlease:\n  type: static\n".to_string(),
            "exec[]" => "exec:\n  - cmd: x\n    bogus: 1\nlease:\n  type: static\n".to_string(),
            "lease" => "lease:\n  type: static\n  bogus: 1\n".to_string(),
            "lease.consul" | "lease.etcd" => {
                let sub = section.trim_start_matches("lease.");
                format!("lease:\n  type: static\n  {sub}:\n    bogus: 1\n")
            }
            other => format!("{other}:\n  bogus: 1\nlease:\n  type: static\n"),
        };
        let err = parse_err(&text);
        let want = match *section {
            "" => "bogus".to_string(),
            "exec[]" => "exec[0].bogus".to_string(),
            other => format!("{other}.bogus"),
        };
        assert_eq!(err.key(), Some(want.as_str()), "{text}\n{err}");
        assert!(err.line().is_some(), "{err}");
    }
}

#[test]
fn value_errors_name_key_and_line() {
    let cases = [
        (
            "lease:\n  type: static\n  promote: perhaps\n",
            "lease.promote",
            3,
        ),
        (
            "http:\n  snapshot-timeout: 5\nlease:\n  type: static\n",
            "http.snapshot-timeout",
            2,
        ),
        (
            "lease:\n  type: static\n  consul:\n    lock-delay: 1d\n",
            "lease.consul.lock-delay",
            4,
        ),
        (
            "tracing:\n  max-size: big\nlease:\n  type: static\n",
            "tracing.max-size",
            2,
        ),
        (
            "fuse:\n  dir:\n    - a\nlease:\n  type: static\n",
            "fuse.dir",
            3,
        ),
        ("lease:\n  type: Static\n", "lease.type", 2),
        ("lease:\n  type: static\n  type: consul\n", "lease.type", 3),
    ];
    for (text, key, line) in cases {
        let err = parse_err(text);
        assert_eq!(err.key(), Some(key), "{err}");
        assert_eq!(err.line(), Some(line), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("line {line}")), "{msg}");
        assert!(msg.starts_with("test.yml: "), "{msg}");
    }
}

#[test]
fn missing_required_keys() {
    let err = parse_err("fuse:\n  dir: /mnt\n");
    assert_eq!(err.key(), Some("lease.type"));
    let err = parse_err("lease:\n  candidate: true\n");
    assert_eq!(err.key(), Some("lease.type"));
    assert_eq!(err.line(), Some(2));
    let err = parse_err("exec:\n  - cmd: a\n  - if-candidate: true\nlease:\n  type: static\n");
    assert_eq!(err.key(), Some("exec[1].cmd"));
    let err = parse_err("# nothing here\n\n");
    assert_eq!(err.key(), Some("lease.type"));
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn syntax_errors_have_a_line() {
    let err = parse_err("lease:\n  type: static\n hostname: x\n");
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert_eq!(err.line(), Some(3));
    assert!(err.to_string().contains("line 3"), "{err}");
    let err = parse_err("lease:\n  type: static\n  hostname: \"abc\n");
    assert!(err.line().is_some(), "{err}");
}

fn invalid(text: &str) -> (String, Option<u64>, String) {
    match parse_err(text) {
        ConfigError::Invalid {
            key, line, message, ..
        } => (key, line, message),
        other => panic!("expected a validation error, got {other}"),
    }
}

#[test]
fn validation_rules() {
    let (key, line, message) =
        invalid("data:\n  dir: /x\nfuse:\n  dir: /x/\nlease:\n  type: static\n");
    assert_eq!((key.as_str(), line), ("data.dir", Some(2)));
    assert!(message.contains("fuse.dir"), "{message}");

    let (key, line, _) = invalid("fuse:\n  dir: \"\"\nlease:\n  type: static\n");
    assert_eq!((key.as_str(), line), ("fuse.dir", Some(2)));

    let (key, line, _) = invalid("lease:\n  type: consul\n  consul:\n    key: k\n");
    assert_eq!((key.as_str(), line), ("lease.consul.url", Some(3)));
    let (key, _, _) = invalid("lease:\n  type: consul\n  consul:\n    url: http://c:8500\n");
    assert_eq!(key, "lease.consul.key");

    let (key, line, _) = invalid("lease:\n  type: etcd\n  etcd:\n    key: k\n");
    assert_eq!((key.as_str(), line), ("lease.etcd.endpoints", Some(3)));
    let (key, _, _) = invalid("lease:\n  type: etcd\n  etcd:\n    endpoints: [http://e:2379]\n");
    assert_eq!(key, "lease.etcd.key");
    let (key, _, _) = invalid(
        "lease:\n  type: etcd\n  etcd:\n    endpoints: [http://e:2379]\n    key: k\n    \
         cert-file: c.pem\n",
    );
    assert_eq!(key, "lease.etcd.key-file");

    let (key, line, message) =
        invalid("lease:\n  type: static\n  hostname: primary\n  candidate: false\n");
    assert_eq!((key.as_str(), line), ("lease.advertise-url", Some(1)));
    assert!(message.contains("replica"), "{message}");

    let (key, line, _) = invalid("lease:\n  type: static\n  databases:\n    - a.db\n");
    assert_eq!((key.as_str(), line), ("lease.databases", Some(3)));

    let (key, _, _) =
        invalid("proxy:\n  target: localhost:8081\n  db: app.db\nlease:\n  type: static\n");
    assert_eq!(key, "proxy.addr");
    let (key, _, _) = invalid("backup:\n  type: file\nlease:\n  type: static\n");
    assert_eq!(key, "backup.path");
    let (key, line, _) = invalid("exec:\n  - cmd: a\n  - cmd: \"\"\nlease:\n  type: static\n");
    assert_eq!((key.as_str(), line), ("exec[1].cmd", Some(3)));
    let (key, line, message) =
        invalid("lease:\n  type: static\nexec: \"myapp --name 'unclosed\"\n");
    assert_eq!((key.as_str(), line), ("exec", Some(3)));
    assert!(message.contains("quote"), "{message}");

    // The valid counterparts pass.
    parse(
        "lease:\n  type: static\n  candidate: false\n  advertise-url: http://p:20202\n  \
         databases: [a.db]\n",
    )
    .unwrap();
    parse("lease:\n  type: etcd\n  etcd:\n    endpoints: [http://e:2379]\n    key: k\n").unwrap();
}

#[test]
fn validate_in_code() {
    let mut config = Config::new(LeaseType::Consul);
    let err = config.validate().unwrap_err();
    assert_eq!(err.key(), Some("lease.consul.url"));
    assert_eq!(err.line(), None);
    assert!(
        err.to_string().starts_with("key `lease.consul.url`"),
        "{err}"
    );
    config.lease.consul.url = "http://localhost:8500".into();
    config.lease.consul.key = "litefs/app".into();
    config.validate().unwrap();
}

#[test]
fn secrets_are_not_debug_printed() {
    let mut config = Config::new(LeaseType::Etcd);
    config.lease.etcd.password = "hunter2".into();
    config.backup.auth_token = "FlyV1 secret".into();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("secret"),
        "{shown}"
    );
    assert!(shown.contains("<redacted>"));
}

#[test]
fn search_paths_order() {
    let vars: HashMap<&str, &str> = [("HOME", "/home/u")].into();
    let env = |name: &str| vars.get(name).map(|v| v.to_string());
    let paths = search_paths(&env);
    let want: Vec<PathBuf> = [
        "./ltxd.yml",
        "./litefs.yml",
        "/home/u/litefs.yml",
        "/etc/litefs.yml",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(paths, want);
    assert_eq!(search_paths(&no_env).len(), 3);
}

#[test]
fn yaml_forms_litefs_files_use() {
    // YAML 1.1 booleans, as Go's decoder accepts them for boolean keys.
    let config =
        parse("lease:\n  type: static\n  candidate: no\n  advertise-url: u\n  promote: on\n")
            .unwrap();
    assert!(!config.lease.candidate && config.lease.promote);
    // A leading document marker is fine; a second document is not.
    parse("---\nlease:\n  type: static\n").unwrap();
    let err = parse_err("lease:\n  type: static\n---\nlease:\n  type: static\n");
    assert!(err.line().is_some(), "{err}");
}

#[test]
fn s3_backup_keys() {
    let config = parse(
        "lease:\n  type: static\nbackup:\n  type: s3\n  bucket: b\n  path: p/q\n  \
         endpoint: http://127.0.0.1:9000\n  region: eu-west-1\n  force-path-style: true\n  \
         retention: 24h\n",
    )
    .unwrap();
    assert_eq!(config.backup.kind, Some(BackupType::S3));
    assert_eq!(
        (config.backup.bucket.as_str(), config.backup.path.as_str()),
        ("b", "p/q")
    );
    assert_eq!(config.backup.endpoint, "http://127.0.0.1:9000");
    assert_eq!(config.backup.region, "eu-west-1");
    assert!(config.backup.force_path_style);
    assert_eq!(config.backup.retention, Duration::from_secs(24 * 3600));
    assert_eq!(
        parse(STATIC).unwrap().backup.retention,
        Duration::from_secs(7 * 24 * 3600)
    );
    let (key, line, _) = invalid("lease:\n  type: static\nbackup:\n  type: s3\n");
    assert_eq!((key.as_str(), line), ("backup.bucket", Some(3)));
    let err =
        parse_err("lease:\n  type: static\nbackup:\n  type: s3\n  bucket: b\n  retention: soon\n");
    assert_eq!((err.key(), err.line()), (Some("backup.retention"), Some(6)));
    let err = parse_err("lease:\n  type: static\nbackup:\n  type: s3\n  buckets: b\n");
    assert_eq!((err.key(), err.line()), (Some("backup.buckets"), Some(5)));
}

#[test]
fn replication_sync_keys() {
    let config = parse(STATIC).unwrap();
    assert_eq!(config.replication.sync, SyncMode::Off);
    assert_eq!(config.replication.sync_timeout, Duration::from_secs(2));
    for (value, mode) in [
        ("off", SyncMode::Off),
        ("\"off\"", SyncMode::Off),
        ("one", SyncMode::One),
        ("quorum", SyncMode::Quorum),
        ("all", SyncMode::All),
        ("", SyncMode::Off),
    ] {
        let text = format!("lease:\n  type: static\nreplication:\n  sync: {value}\n");
        assert_eq!(parse(&text).unwrap().replication.sync, mode, "{value}");
    }
    let config =
        parse("lease:\n  type: static\nreplication:\n  sync: one\n  sync-timeout: 250ms\n")
            .unwrap();
    assert_eq!(config.replication.sync_timeout, Duration::from_millis(250));
    let err = parse_err("lease:\n  type: static\nreplication:\n  sync: two\n");
    assert_eq!((err.key(), err.line()), (Some("replication.sync"), Some(4)));
    let (key, line, _) =
        invalid("lease:\n  type: static\nreplication:\n  sync: all\n  sync-timeout: 0s\n");
    assert_eq!((key.as_str(), line), ("replication.sync-timeout", Some(5)));
    assert!(parse("lease:\n  type: static\nreplication:\n  sync-timeout: 0s\n").is_ok());
}
