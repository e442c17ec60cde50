//! `ltxd status` as an operator uses it: true replication lag on an idle, caught-up pair, the
//! token from `--config`, and `--watch` refreshing in place in a terminal (tmux).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, Node};

/// `ltxd status --json` of a node.
fn info(url: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args(["status", "--json", "--url", url])
        .env_remove("LTXD_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A primary and a replica that has `app.db` at the primary's TXID.
fn caught_up_pair() -> (Node, Node) {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    primary.sqlite("app.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let want = &info(&primary.url)["databases"]["app.db"]["txid"];
        if !want.is_null() && info(&replica.url)["databases"]["app.db"]["txid"] == *want {
            break;
        }
        assert!(Instant::now() < deadline, "{}", replica.daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    (primary, replica)
}

#[test]
fn an_idle_caught_up_replica_shows_no_lag() {
    let (_primary, replica) = caught_up_pair();
    // Idle for longer than the bound below: a lag measured from the last commit (the old,
    // wrong LAG) would exceed it; the replication lag stays within a heartbeat (1 s) or so.
    std::thread::sleep(Duration::from_secs(5));
    let lag = info(&replica.url)["databases"]["app.db"]["lagMs"].as_i64();
    let lag = lag.expect("a replica that has heard from its primary reports a lag");
    assert!(lag < 3_000, "lag {lag} ms on an idle, caught-up replica");
}

#[test]
fn status_with_config_uses_its_token() {
    let port = free_port();
    let node = Node::configured(
        &format!("127.0.0.1:{port}"),
        "  token: t0ken-for-status\n",
        &format!("http://127.0.0.1:{port}"),
        &format!("  type: static\n  candidate: true\n  advertise-url: http://127.0.0.1:{port}\n"),
        "",
        None,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args(["status", "--config"])
        .arg(node.root.path().join("ltxd.yml"))
        .env_remove("LTXD_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("role:      primary"));
    // Without the token the node refuses.
    let out = Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args(["status", "--url", &node.url])
        .env_remove("LTXD_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A tmux session, killed on drop.
struct Tmux(String);

impl Tmux {
    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn status_watch_refreshes_in_place_in_a_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("tmux is not installed: skipping the terminal view");
        return;
    }
    let (primary, replica) = caught_up_pair();
    let session = format!("h19-status-{}", std::process::id());
    let command = format!(
        "{} status --watch --interval 0.2 --url {} --node {}",
        env!("CARGO_BIN_EXE_ltxd"),
        primary.url,
        replica.url
    );
    let status = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            &session,
            &command,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let tmux = Tmux(session);
    // Writes while the view refreshes: the TXID on screen follows them.
    for i in 0..20 {
        primary.sqlite("app.db", &format!("INSERT INTO t VALUES ({i});"));
    }
    let want = info(&primary.url)["databases"]["app.db"]["txid"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let screen = loop {
        let screen = tmux.capture();
        if screen.matches(&want).count() == 2 {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "TXID {want} not shown twice:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Refreshed in place: one view on the screen, not one per refresh scrolling by.
    assert_eq!(screen.matches("ltxd status --watch").count(), 1, "{screen}");
    assert_eq!(screen.matches("role:      primary").count(), 1, "{screen}");
    assert_eq!(screen.matches("role:      replica").count(), 1, "{screen}");
    assert!(screen.contains("TX/S"), "{screen}");
}
