//! `ltxd mount` start-up and logging as an operator sees them: SIGTERM while the node waits for
//! a role, lease-watch failures that back off and name their cause, `--check-config`, one
//! warning per accepted key ltxd does not act on, JSON logs, and no WARN on a clean run.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Node};

/// A daemon started directly (it never mounts in these tests), killed on drop.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// `ltxd mount` on a Consul lease whose URL refuses connections: the node can never learn
    /// its role.
    fn on_unreachable_consul(candidate: bool) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("h19-startup")
            .tempdir()
            .unwrap();
        let config = dir.path().join("ltxd.yml");
        std::fs::write(
            &config,
            format!(
                "fuse:\n  dir: {mnt}\ndata:\n  dir: {data}\nhttp:\n  addr: 127.0.0.1:{http}\n\
                 lease:\n  type: consul\n  candidate: {candidate}\n  consul:\n    \
                 url: http://127.0.0.1:{consul}\n    key: ltxd/test\n",
                mnt = dir.path().join("mnt").display(),
                data = dir.path().join("data").display(),
                http = free_port(),
                consul = free_port(),
            ),
        )
        .unwrap();
        let log = dir.path().join("ltxd.log");
        let child = Command::new(env!("CARGO_BIN_EXE_ltxd"))
            .args(["mount", "-config"])
            .arg(&config)
            .env("LTXD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_during_the_role_wait_exits_at_once() {
    let mut daemon = Daemon::on_unreachable_consul(true);
    daemon.wait_for_log("configuration loaded");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    // The role wait lasts 30 s; a generous bound well below it shows the signal ended it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("shutting down before the node has a role"),
        "{}",
        daemon.log()
    );
}

#[test]
fn lease_watch_failures_back_off_and_name_their_cause() {
    let daemon = Daemon::on_unreachable_consul(false);
    daemon.wait_for_log("configuration loaded");
    std::thread::sleep(Duration::from_secs(6));
    let log = daemon.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lease watch failed") || l.contains("cannot watch the lease"))
        .collect();
    assert!(!failures.is_empty(), "{log}");
    // Retries after 0.5, 1, 2, 4 s: a handful in 6 s, where a busy loop logged ~20 a second.
    assert!(
        failures.len() <= 6,
        "{} failures in 6 s:\n{log}",
        failures.len()
    );
    assert!(
        failures[0].to_lowercase().contains("refused"),
        "the cause is missing: {}",
        failures[0]
    );
    assert!(failures[0].contains("retry_in"), "{}", failures[0]);
}

#[test]
fn check_config_prints_the_resolved_config_without_secrets() {
    let dir = tempfile::Builder::new()
        .prefix("h19-check")
        .tempdir()
        .unwrap();
    let config = dir.path().join("litefs.yml");
    std::fs::write(
        &config,
        "fuse:\n  dir: /litefs\nhttp:\n  token: sup3r-secret\nlease:\n  type: consul\n  \
         consul:\n    url: https://:acl-secret@consul.example\n    key: app\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args(["mount", "--check-config", "-config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("secret"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    let hostname = ltxd::config::machine_hostname().unwrap();
    assert!(
        stdout.contains(&format!("http://{hostname}:20202")),
        "the advertise URL defaults as LiteFS's: {stdout}"
    );
}

#[test]
fn litefs_mount_flags_are_accepted() {
    let dir = tempfile::Builder::new()
        .prefix("h19-flags")
        .tempdir()
        .unwrap();
    let config = dir.path().join("litefs.yml");
    std::fs::write(
        &config,
        "fuse:\n  dir: $MOUNT_DIR\nlease:\n  type: static\n  advertise-url: http://p:20202\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ltxd"))
            .args(["mount", "-config"])
            .arg(&config)
            .args(extra)
            .args(["--check-config"])
            .env("MOUNT_DIR", "/expanded")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = run(&[]);
    assert!(plain.contains("\"/expanded\""), "{plain}");
    let flagged = run(&[
        "-no-expand-env",
        "-skip-unmount",
        "-fuse.debug",
        "-debug",
        "-tracing=false",
    ]);
    assert!(flagged.contains("\"$MOUNT_DIR\""), "{flagged}");
    assert!(
        flagged.contains("debug: true"),
        "-fuse.debug and -debug set their keys: {flagged}"
    );
}

/// The daemon's log lines at WARN (or ERROR) level, in text format.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

#[test]
fn a_clean_run_logs_no_warning_and_no_colour() {
    let mut primary = Node::primary();
    let mut replica = Node::replica_of(&primary);
    primary.sqlite("app.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !replica
        .sqlite_result("app.db", "SELECT x FROM t")
        .is_ok_and(|out| out.trim() == "1")
    {
        assert!(Instant::now() < deadline, "{}", replica.daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    replica.stop();
    primary.stop();
    for node in [&primary, &replica] {
        let log = node.daemon_log();
        assert!(warnings(&log).is_empty(), "{log}");
        assert!(!log.contains('\x1b'), "ANSI colour in a log file:\n{log}");
    }
}

#[test]
fn an_unacted_key_is_named_once_at_start_up() {
    let port = free_port();
    let mut node = Node::configured(
        &format!("127.0.0.1:{port}"),
        "",
        &format!("http://127.0.0.1:{port}"),
        &format!("  type: static\n  candidate: true\n  advertise-url: http://127.0.0.1:{port}\n"),
        "strict-verify: true\n",
        None,
    );
    node.stop();
    let log = node.daemon_log();
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("strict-verify"))
        .collect();
    assert_eq!(named.len(), 1, "{log}");
    assert!(
        named[0].contains("WARN") && named[0].contains("not acted on"),
        "{log}"
    );
}

#[test]
fn json_logs_parse_line_by_line() {
    let port = free_port();
    let mut node = Node::configured(
        &format!("127.0.0.1:{port}"),
        "",
        &format!("http://127.0.0.1:{port}"),
        &format!("  type: static\n  candidate: true\n  advertise-url: http://127.0.0.1:{port}\n"),
        "log:\n  format: json\n  timestamp: true\n",
        None,
    );
    node.sqlite("app.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    node.stop();
    let log = node.daemon_log();
    let mut messages = Vec::new();
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}\n{log}"));
        for key in ["time", "level", "target", "msg"] {
            assert!(value.get(key).is_some(), "no {key}: {line}");
        }
        messages.push(value["msg"].as_str().unwrap().to_string());
    }
    assert!(messages.iter().any(|m| m == "mounted"), "{log}");
    assert!(messages.iter().any(|m| m == "unmounted"), "{log}");
}
