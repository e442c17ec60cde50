//! Synchronous replication (`replication.sync: one`) with real processes: two candidates on the
//! Consul stand-in, over HTTP and over QUIC. Every commit the application sees succeed is
//! already in the replica's log; with the replica killed, a commit waits `sync-timeout` and the
//! primary degrades to asynchronous replication (a log line, `/info`, `/metrics`); once the
//! replica is back and caught up, commits wait for it again.

mod common;

use std::time::{Duration, Instant};

use common::leases::Consul;
use common::{free_port, free_udp_port, Node, Transport};

/// The lease TTL.
const TTL: Duration = Duration::from_secs(2);

/// A candidate named `hostname` with `replication.sync: one` and a 1 s timeout.
fn candidate(consul: &Consul, hostname: &str, transport: Transport) -> Node {
    let port = free_port();
    let (advertise_url, quic) = match transport {
        Transport::Http => (format!("http://127.0.0.1:{port}"), String::new()),
        Transport::Quic => {
            let quic = free_udp_port();
            (
                format!("quic://127.0.0.1:{quic}"),
                format!("quic:\n  addr: 127.0.0.1:{quic}\n  insecure-dev: true\n"),
            )
        }
    };
    let lease = format!(
        "  type: consul\n  hostname: {hostname}\n  advertise-url: {advertise_url}\n  \
         reconnect-delay: 50ms\n  candidate: true\n  consul:\n    url: {}\n    \
         key: ltxd/sync\n    ttl: {}s\n    lock-delay: 100ms\n",
        consul.url(),
        TTL.as_secs()
    );
    let extra = format!("{quic}replication:\n  sync: one\n  sync-timeout: 1s\n");
    Node::configured(
        &format!("127.0.0.1:{port}"),
        "",
        &advertise_url,
        &lease,
        &extra,
        None,
    )
}

/// Waits until `done` holds, failing with `what` and the daemons' logs after 30 s.
fn wait_until(what: &str, nodes: &[&Node], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(|n| n.daemon_log()).collect();
            panic!("timed out waiting until {what}\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The TXID in a node's `<db>-pos` file: its log's head.
fn txid(node: &Node, db: &str) -> u64 {
    std::fs::read_to_string(node.path(&format!("{db}-pos")))
        .ok()
        .and_then(|pos| u64::from_str_radix(pos.split('/').next()?.trim(), 16).ok())
        .unwrap_or(0)
}

/// The node's `/info`.
fn info(node: &Node) -> serde_json::Value {
    let out = node.ltxd(&["status", "--json", "--url", &node.url]);
    serde_json::from_str(&out).unwrap()
}

/// How often the primary logged that synchronous replication resumed.
fn resumed(node: &Node) -> usize {
    node.daemon_log()
        .matches("synchronous replication resumed")
        .count()
}

/// One commit through `primary`'s mount; returns the TXID it made.
fn commit(primary: &Node, n: usize) -> u64 {
    primary.sqlite("app.db", &format!("INSERT INTO t(v) VALUES ('row {n}');"));
    txid(primary, "app.db")
}

fn commits_are_acknowledged_by_the_replica_first(transport: Transport) {
    let consul = Consul::start();
    let a = candidate(&consul, "node-a", transport);
    wait_until("node-a is primary", &[&a], || a.is_primary());
    // Alone, the primary waits for the timeout once, then degrades.
    a.sqlite(
        "app.db",
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);",
    );
    assert_eq!(info(&a)["sync"]["degraded"], true);
    let mut b = candidate(&consul, "node-b", transport);
    wait_until("node-b catches up and acknowledges", &[&a, &b], || {
        let status = info(&a);
        status["sync"]["replicas"] == 1 && status["sync"]["degraded"] == false
    });
    assert_eq!(resumed(&a), 1);

    // Each commit is in the replica's log before the application sees it succeed: no wait
    // for the replica after the commit returns.
    for n in 0..30 {
        let made = commit(&a, n);
        assert!(
            txid(&b, "app.db") >= made,
            "commit {made} returned before the replica had it (replica at {})",
            txid(&b, "app.db")
        );
    }
    // Rollback-journal mode waits too.
    a.sqlite("app.db", "PRAGMA journal_mode=DELETE;");
    for n in 30..40 {
        let made = commit(&a, n);
        assert!(txid(&b, "app.db") >= made, "commit {made} (DELETE mode)");
    }
    assert_eq!(info(&a)["sync"]["degraded"], false);

    // Without the replica, a commit waits for the timeout, then returns, and the primary
    // degrades to asynchronous replication: later commits do not wait.
    b.kill();
    let started = Instant::now();
    commit(&a, 40);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "a commit with no replica returned before sync-timeout"
    );
    let status = info(&a);
    assert_eq!(status["sync"]["degraded"], true, "{status}");
    assert!(a.daemon_log().contains("synchronous replication degraded"));
    let text = a.ltxd(&["status", "--url", &a.url]);
    assert!(text.contains("DEGRADED"), "{text}");
    for n in 41..45 {
        commit(&a, n);
    }

    // The replica returns and catches up: synchronous again.
    b.start();
    wait_until(
        "the primary resumes synchronous replication",
        &[&a, &b],
        || info(&a)["sync"]["degraded"] == false,
    );
    assert_eq!(resumed(&a), 2);
    for n in 45..55 {
        let made = commit(&a, n);
        assert!(txid(&b, "app.db") >= made, "commit {made} after the return");
    }
    let scrape = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", a.url)])
        .output()
        .unwrap();
    let scrape = String::from_utf8_lossy(&scrape.stdout);
    for metric in [
        "ltxd_sync_mode{mode=\"one\"} 1",
        "ltxd_sync_degraded 0",
        // Over QUIC a killed replica's stream counts until the connection's idle timeout.
        "ltxd_sync_replicas ",
        "ltxd_sync_commits_total{outcome=\"timed_out\"} 2",
        "ltxd_sync_ack_wait_seconds_count",
    ] {
        assert!(scrape.contains(metric), "{metric} missing from:\n{scrape}");
    }
}

#[test]
fn commits_wait_for_the_replica_over_http() {
    commits_are_acknowledged_by_the_replica_first(Transport::Http);
}

#[test]
fn commits_wait_for_the_replica_over_quic() {
    commits_are_acknowledged_by_the_replica_first(Transport::Quic);
}
