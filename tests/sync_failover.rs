//! Failover under synchronous replication, with two candidates (a primary and one replica) on a
//! real etcd-server and on the Consul stand-in: a client writes through whichever mount is
//! primary and records every write it saw succeed, while the primary is SIGKILLed five times.
//! With `replication.sync: one`, the final primary holds every acknowledged write. The same run
//! with `sync: off` reports how many it lost (with `LTXD_LONG=1`; documented, not asserted).
//!
//! The client uses the DELETE journal mode: a primary killed while a commit waits fails the
//! journal's deletion, which SQLite reports, whereas it ignores a failed WAL unlock (see
//! `docs/replication.md`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::leases::{Consul, Etcd};
use common::{free_port, Node};

/// The lease TTL.
const TTL: Duration = Duration::from_secs(2);
/// How many times the primary is killed.
const KILLS: usize = 5;

/// The backend under test, alive for the cluster's life.
enum Backend {
    Etcd(Etcd),
    Consul(Consul),
}

impl Backend {
    fn lease(&self) -> String {
        let secs = TTL.as_secs();
        match self {
            Backend::Etcd(etcd) => format!(
                "  type: etcd\n  etcd:\n    endpoints: [{}]\n    key: /ltxd/sync-failover\n    ttl: {secs}s\n",
                etcd.endpoint
            ),
            Backend::Consul(consul) => format!(
                "  type: consul\n  consul:\n    url: {}\n    key: ltxd/sync-failover\n    ttl: {secs}s\n    lock-delay: 100ms\n",
                consul.url()
            ),
        }
    }
}

/// A candidate named `hostname` with `replication.sync: sync`.
fn candidate(backend: &Backend, hostname: &str, sync: &str) -> Node {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let lease = format!(
        "  hostname: {hostname}\n  advertise-url: {url}\n  reconnect-delay: 50ms\n  candidate: true\n{}",
        backend.lease()
    );
    let extra = format!("replication:\n  sync: {sync}\n  sync-timeout: 1s\n");
    Node::configured(&format!("127.0.0.1:{port}"), "", &url, &lease, &extra, None)
}

/// Waits until `done` holds, failing with `what` and the logs after 60 s.
fn wait_until(what: &str, nodes: &[Node], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(Node::daemon_log).collect();
            panic!("timed out waiting until {what}\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node's `/info`, if it answers.
fn info(node: &Node) -> Option<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args(["status", "--json", "--url", &node.url])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The index of the running node that says it is primary, if exactly one does.
fn primary_of(nodes: &[Node]) -> Option<usize> {
    let primaries: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            nodes[i].is_running() && info(&nodes[i]).is_some_and(|i| i["isPrimary"] == true)
        })
        .collect();
    match primaries.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// True when node `i` is primary, synchronous (not degraded) and has its replica acknowledging.
fn synchronous(nodes: &[Node], i: usize) -> bool {
    info(&nodes[i]).is_some_and(|info| {
        info["isPrimary"] == true
            && info["sync"]["degraded"] == false
            && info["sync"]["replicas"] == 1
    })
}

/// Runs the kill loop with `replication.sync: sync`; returns (acknowledged writes, lost ones).
fn kill_the_primary_during_writes(backend: Backend, sync: &str) -> (usize, Vec<u64>) {
    let mut nodes = vec![candidate(&backend, "node-a", sync)];
    wait_until("node-a is primary", &nodes, || {
        primary_of(&nodes) == Some(0)
    });
    nodes[0].sqlite(
        "app.db",
        "PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER);",
    );
    nodes.push(candidate(&backend, "node-b", sync));
    let settled = |nodes: &[Node], primary: usize| sync == "off" || synchronous(nodes, primary);
    wait_until("node-b follows", &nodes, || settled(&nodes, 0));

    let stop = AtomicBool::new(false);
    let target = AtomicUsize::new(0);
    let acked = Mutex::new(Vec::new());
    let nodes = Mutex::new(nodes);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Each value is written until a primary acknowledges it: on the node believed to be
            // primary, then on the other.
            let mut value = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let i = target.load(Ordering::SeqCst);
                let path = nodes.lock().unwrap()[i].path("app.db");
                let out = std::process::Command::new("timeout")
                    .args(["30", "sqlite3", "-batch", "-bail"])
                    .arg(&path)
                    .arg(".timeout 5000")
                    .arg(format!("INSERT INTO t(v) VALUES ({value});"))
                    .output();
                match out {
                    Ok(out) if out.status.success() => {
                        acked.lock().unwrap().push(value);
                        value += 1;
                    }
                    _ => {
                        target.store(1 - i, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        });
        for kill in 0..KILLS {
            let primary = {
                let nodes = nodes.lock().unwrap();
                let mut primary = 0;
                wait_until("one primary", &nodes, || {
                    primary_of(&nodes).inspect(|&p| primary = p).is_some()
                });
                wait_until("the replica acknowledges", &nodes, || {
                    settled(&nodes, primary)
                });
                primary
            };
            target.store(primary, Ordering::SeqCst);
            let before = acked.lock().unwrap().len();
            let deadline = Instant::now() + Duration::from_secs(30);
            while acked.lock().unwrap().len() < before + 20 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("kill {}: SIGKILL node {primary}", kill + 1);
            let mut nodes = nodes.lock().unwrap();
            nodes[primary].kill();
            let other = 1 - primary;
            wait_until("the other node takes over", &nodes, || {
                primary_of(&nodes) == Some(other)
            });
            nodes[primary].start();
        }
        stop.store(true, Ordering::SeqCst);
    });

    let nodes = nodes.into_inner().unwrap();
    let primary = primary_of(&nodes).expect("one primary at the end");
    let rows = nodes[primary].sqlite("app.db", "SELECT v FROM t;");
    let present: BTreeSet<u64> = rows.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let acked = acked.into_inner().unwrap();
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|v| !present.contains(v))
        .collect();
    eprintln!(
        "sync: {sync}: {} acknowledged writes, {} lost: {lost:?}",
        acked.len(),
        lost.len()
    );
    (acked.len(), lost)
}

#[test]
fn sync_one_loses_no_acknowledged_write_on_etcd() {
    let (acked, lost) = kill_the_primary_during_writes(Backend::Etcd(Etcd::start()), "one");
    assert!(acked > KILLS * 20, "only {acked} writes were acknowledged");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

#[test]
fn sync_one_loses_no_acknowledged_write_on_consul() {
    let (acked, lost) = kill_the_primary_during_writes(Backend::Consul(Consul::start()), "one");
    assert!(acked > KILLS * 20, "only {acked} writes were acknowledged");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// The same run without synchronous replication: how many acknowledged writes a failover loses
/// is reported, not asserted (it depends on timing). `LTXD_LONG=1` runs it.
#[test]
fn sync_off_reports_lost_writes_on_etcd() {
    if std::env::var("LTXD_LONG").is_err() {
        eprintln!("skipped: set LTXD_LONG=1 to run");
        return;
    }
    let (acked, lost) = kill_the_primary_during_writes(Backend::Etcd(Etcd::start()), "off");
    eprintln!(
        "sync: off on etcd: {acked} acknowledged, {} lost",
        lost.len()
    );
}
