//! `exec` and `ltxd mount -- APP`: the application runs once the node is ready, signals reach
//! it while the mount stays writable, and its exit stops the daemon with its status.

mod common;

use std::time::Duration;

use common::Node;

/// Writes an executable shell script `name` into the node's directory and returns its path.
fn script(node: &Node, name: &str, body: &str) -> String {
    let path = node.root.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    path.display().to_string()
}

#[test]
fn exec_runs_migrations_then_the_application_which_writes_through_the_mount_until_sigterm() {
    let mut node = Node::primary();
    node.stop();
    let db = node.path("app.db").display().to_string();
    let migrate = script(
        &node,
        "migrate.sh",
        &format!("sqlite3 -cmd '.timeout 5000' {db} 'CREATE TABLE t(v TEXT);'"),
    );
    // The test reads while the application writes: both wait for SQLite's locks. The
    // application ends by itself within a minute, so that a failed test leaves nothing running.
    let app = script(
        &node,
        "app.sh",
        &format!(
            "q() {{ sqlite3 -cmd '.timeout 5000' {db} \"$1\"; }}\n\
             trap \"q \\\"INSERT INTO t VALUES ('at SIGTERM');\\\"; exit 0\" TERM\n\
             q \"INSERT INTO t VALUES ('started');\"\n\
             i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done"
        ),
    );
    node.edit_config(|text| {
        format!("{text}exec:\n  - cmd: sh {migrate}\n    if-candidate: true\n  - cmd: sh {app}\n")
    });
    node.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while node
        .sqlite_result("app.db", "SELECT count(*) FROM t;")
        .map(|out| out.trim().to_string())
        != Ok("1".to_string())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // `stop` sends SIGTERM and checks exit status 0 and that the mount is gone.
    node.stop();
    assert!(node.daemon_log().contains("exec: forwarding the signal"));
    node.edit_config(|text| text[..text.find("exec:").unwrap()].to_string());
    node.start();
    assert_eq!(
        node.sqlite("app.db", "SELECT v FROM t ORDER BY rowid;"),
        "started\nat SIGTERM\n"
    );
    node.stop();
    node.check_log_matches_database("app.db");
}

#[test]
fn the_application_after_dash_dash_exiting_stops_the_daemon_with_its_status() {
    let mut node = Node::primary();
    node.stop();
    let go = node.root.path().join("go");
    let db = node.path("x.db").display().to_string();
    let app = script(
        &node,
        "app.sh",
        &format!(
            "sqlite3 {db} 'CREATE TABLE t(v); INSERT INTO t VALUES (1);'\n\
             i=0; while [ ! -e {} ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i + 1)); done\nexit 7",
            go.display()
        ),
    );
    // `-config` among the application's arguments is left alone.
    node.set_application(&["sh", &app, "-config", "unused"]);
    node.start();
    std::fs::write(&go, "").unwrap();
    let status = node.wait_for_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(7), "{}", node.daemon_log());
    assert!(node
        .daemon_log()
        .contains("exec: the last command has exited"));
    node.set_application(&[]);
    node.start();
    assert_eq!(node.sqlite("x.db", "SELECT count(*) FROM t;").trim(), "1");
}
