//! Three `ltxd mount` candidates on one lease backend, a real etcd-server or the Consul
//! stand-in: the primary killed with SIGKILL during writes is replaced within the TTL plus 2 s
//! and the other node follows the new one; the old primary rejoins as a replica (resnapshotted
//! if it diverged); a clean shutdown hands over within a second; `ltxd promote` moves the
//! primary to a chosen replica during writes without losing an acknowledged one.

mod common;

use std::time::{Duration, Instant};

use common::leases::{Consul, Etcd};
use common::{pos, Node, Transport};

/// The lease TTL the tests use.
const TTL: Duration = Duration::from_secs(2);

/// The lease backend under test, kept alive for the cluster's life.
enum Backend {
    Etcd(Etcd),
    Consul(Consul),
}

impl Backend {
    fn lease_body(&self) -> String {
        let secs = TTL.as_secs();
        match self {
            Backend::Etcd(etcd) => format!(
                "  type: etcd\n  candidate: true\n  etcd:\n    endpoints: [{}]\n    key: /ltxd/failover\n    ttl: {secs}s\n",
                etcd.endpoint
            ),
            Backend::Consul(consul) => format!(
                "  type: consul\n  candidate: true\n  consul:\n    url: {}\n    key: ltxd/failover\n    ttl: {secs}s\n    lock-delay: 100ms\n",
                consul.url()
            ),
        }
    }
}

/// Waits for `done`, up to `timeout`; returns how long it took.
fn wait_for(
    timeout: Duration,
    what: &str,
    nodes: &[Node],
    mut done: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            let logs: Vec<String> = nodes.iter().map(Node::daemon_log).collect();
            panic!(
                "timed out after {timeout:?} waiting until {what}\n{}",
                logs.join("\n-----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The index of the one running node that says it is primary.
fn primary_of(nodes: &[Node]) -> Option<usize> {
    let primaries: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].is_running() && nodes[i].is_primary())
        .collect();
    match primaries.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

fn writable(node: &Node, db: &str) -> bool {
    node.sqlite_result(db, "INSERT INTO t(v) VALUES ('probe');")
        .is_ok()
}

/// Three candidates on `backend`, followed over `transport`, and the index of the one elected,
/// with a table `t(id, v)` in WAL mode in database `app.db`.
fn cluster(backend: &Backend, transport: Transport) -> (Vec<Node>, usize) {
    let lease = backend.lease_body();
    let nodes: Vec<Node> = (0..3)
        .map(|i| Node::cluster_member_over(&format!("node-{i}"), &lease, transport))
        .collect();
    let mut primary = 0;
    wait_for(
        Duration::from_secs(20),
        "a primary is elected",
        &nodes,
        || primary_of(&nodes).inspect(|&p| primary = p).is_some(),
    );
    nodes[primary].sqlite(
        "app.db",
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);",
    );
    (nodes, primary)
}

fn failover_after_a_kill_and_handover_after_a_clean_shutdown(backend: Backend) {
    let (mut nodes, first) = cluster(&backend, Transport::Http);
    let db = "app.db";
    for i in 0..20 {
        nodes[first].sqlite(db, &format!("INSERT INTO t(v) VALUES ('before {i}');"));
    }
    let others: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let want = pos(&nodes[first], db);
    wait_for(
        Duration::from_secs(20),
        "the replicas catch up",
        &nodes,
        || others.iter().all(|&i| pos(&nodes[i], db) == want),
    );

    // SIGKILL during a stream of writes: a candidate takes over within the TTL plus 2 s.
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for i in 0..200 {
                if nodes[first]
                    .sqlite_result(db, &format!("INSERT INTO t(v) VALUES ('during {i}');"))
                    .is_err()
                {
                    break;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let killed = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(nodes[first].pid().unwrap() as i32, libc::SIGKILL) };
        writer.join().unwrap();
        let mut second = 0;
        let took = wait_for(
            TTL + Duration::from_secs(10),
            "a new primary accepts writes",
            &nodes,
            || {
                others.iter().any(|&i| {
                    let ok = writable(&nodes[i], db);
                    if ok {
                        second = i;
                    }
                    ok
                })
            },
        );
        let since_kill = killed.elapsed().min(took + Duration::from_millis(200));
        assert!(
            since_kill <= TTL + Duration::from_secs(2),
            "failover took {since_kill:?}, more than the TTL plus 2 s"
        );
        eprintln!("failover after SIGKILL: {since_kill:?}");
    });
    nodes[first].kill();
    let second = primary_of(&nodes).expect("one primary after the failover");
    let third = others.iter().copied().find(|&i| i != second).unwrap();
    for i in 0..10 {
        nodes[second].sqlite(db, &format!("INSERT INTO t(v) VALUES ('after {i}');"));
    }
    let want = pos(&nodes[second], db);
    wait_for(
        Duration::from_secs(20),
        "the third node follows the new primary",
        &nodes,
        || pos(&nodes[third], db) == want,
    );

    // The old primary rejoins as a replica, resnapshotted if it diverged.
    nodes[first].start();
    wait_for(
        Duration::from_secs(30),
        "the old primary rejoins as a replica",
        &nodes,
        || pos(&nodes[first], db) == want,
    );
    assert!(!nodes[first].is_primary());
    assert_eq!(
        nodes[first].sqlite(db, "PRAGMA integrity_check;").trim(),
        "ok"
    );
    assert_eq!(
        nodes[first]
            .sqlite_result(db, "INSERT INTO t(v) VALUES ('no');")
            .unwrap_err()
            .trim(),
        "Runtime error near line 2: attempt to write a readonly database (8)"
    );

    // A clean shutdown releases the lease: a new primary within a second.
    let stopped = Instant::now();
    nodes[second].stop();
    let took = wait_for(
        Duration::from_secs(10),
        "a new primary after a clean shutdown",
        &nodes,
        || primary_of(&nodes).is_some(),
    );
    let handover = stopped.elapsed();
    eprintln!("handover after SIGTERM: {handover:?} ({took:?} after the process exited)");
    assert!(
        took <= Duration::from_secs(1),
        "handover took {took:?} after the old primary exited"
    );
    let third_primary = primary_of(&nodes).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the new primary accepts writes",
        &nodes,
        || writable(&nodes[third_primary], db),
    );
}

/// `ltxd promote` on a replica during a stream of writes: the replica becomes primary, every
/// write the old primary acknowledged is on it, the old primary follows it read-only, and the
/// third node follows too.
fn promotion(backend: Backend, transport: Transport) {
    let (nodes, old) = cluster(&backend, transport);
    let db = "app.db";
    let new = (old + 1) % 3;
    let third = (old + 2) % 3;
    let want = pos(&nodes[old], db);
    wait_for(
        Duration::from_secs(20),
        "the replicas catch up",
        &nodes,
        || pos(&nodes[new], db) == want && pos(&nodes[third], db) == want,
    );

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (acked, longest_gap) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            // Writes go to whichever of the two is primary; each value is written once, and
            // retried until one of them acknowledges it.
            let (mut acked, mut last_ack, mut longest_gap) =
                (Vec::new(), Instant::now(), Duration::ZERO);
            for i in 0.. {
                let sql = format!("INSERT INTO t(v) VALUES ('w{i}');");
                let deadline = Instant::now() + Duration::from_secs(20);
                while ![old, new]
                    .iter()
                    .any(|&n| nodes[n].sqlite_result(db, &sql).is_ok())
                {
                    assert!(
                        Instant::now() < deadline,
                        "no node accepted writes for 20 s"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                longest_gap = longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
                acked.push(format!("w{i}"));
                if stop.load(std::sync::atomic::Ordering::Relaxed) && i > 0 {
                    break;
                }
            }
            (acked, longest_gap)
        });
        std::thread::sleep(Duration::from_millis(300));
        let out = nodes[new].ltxd(&["promote", "--url", &nodes[new].url, "--wait", "10"]);
        eprintln!("{}", out.trim());
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap()
    });
    eprintln!(
        "promotion: {} writes, longest time without an acknowledged write {longest_gap:?}",
        acked.len()
    );
    assert!(nodes[new].is_primary(), "the promoted node is primary");
    assert!(!nodes[old].is_primary(), "the old primary stepped down");
    let rows = nodes[new].sqlite(db, "SELECT v FROM t ORDER BY id;");
    let rows: Vec<&str> = rows.lines().collect();
    for value in &acked {
        assert!(
            rows.contains(&value.as_str()),
            "acknowledged write {value} is missing on the new primary"
        );
    }
    let want = pos(&nodes[new], db);
    wait_for(
        Duration::from_secs(20),
        "the old primary and the third node follow the new one",
        &nodes,
        || pos(&nodes[old], db) == want && pos(&nodes[third], db) == want,
    );
    assert_eq!(
        nodes[old]
            .sqlite_result(db, "INSERT INTO t(v) VALUES ('no');")
            .unwrap_err()
            .trim(),
        "Runtime error near line 2: attempt to write a readonly database (8)"
    );
    assert_eq!(
        nodes[old].sqlite(db, "PRAGMA integrity_check;").trim(),
        "ok"
    );
}

fn promotion_moves_the_primary_without_losing_a_write(backend: Backend) {
    promotion(backend, Transport::Http);
}

#[test]
fn etcd_promotion_over_quic_moves_the_primary_without_losing_a_write() {
    promotion(Backend::Etcd(Etcd::start()), Transport::Quic);
}

/// One candidate, `node-a`, elected, with a row in table `t` of database `app.db`.
fn lone_primary(lease: &str) -> Node {
    let node = Node::cluster_member("node-a", lease);
    wait_for(
        Duration::from_secs(20),
        "node-a is primary",
        std::slice::from_ref(&node),
        || node.is_primary(),
    );
    node.sqlite("app.db", "CREATE TABLE t(v); INSERT INTO t VALUES (1);");
    node
}

/// A node's cluster ID file.
fn cluster_id(node: &Node) -> String {
    std::fs::read_to_string(node.data.join("clusterid")).unwrap()
}

/// A node that never joined the cluster (an empty data directory) may not lead it: when the
/// primary dies it waits, and it joins once a member leads again.
fn a_node_that_never_joined_the_cluster_never_leads_it(backend: Backend) {
    let lease = backend.lease_body();
    let mut nodes = vec![lone_primary(&lease)];
    let db = "app.db";
    let id = cluster_id(&nodes[0]);
    // Killed: its entry stays until the TTL runs out, so the newcomer starts as its replica.
    nodes[0].kill();
    nodes.push(Node::cluster_member("node-b", &lease));
    wait_for(
        TTL + Duration::from_secs(10),
        "node-b refuses to lead a cluster it never joined",
        &nodes,
        || {
            nodes[1]
                .daemon_log()
                .contains("which this node has not joined")
        },
    );
    assert!(!nodes[1].is_primary());
    nodes[0].start();
    wait_for(
        Duration::from_secs(20),
        "node-a leads again and node-b follows it",
        &nodes,
        || nodes[0].is_primary() && pos(&nodes[1], db) == pos(&nodes[0], db),
    );
    assert_eq!(cluster_id(&nodes[1]), id);
}

/// `lease.promote: true`: a candidate that joins a running cluster becomes its primary once it
/// has caught up.
#[test]
fn etcd_lease_promote_takes_over_once_caught_up() {
    let backend = Backend::Etcd(Etcd::start());
    let lease = backend.lease_body();
    let mut nodes = vec![lone_primary(&lease)];
    let db = "app.db";
    nodes.push(Node::cluster_member(
        "node-b",
        &format!("{lease}  promote: true\n"),
    ));
    wait_for(
        Duration::from_secs(10),
        "node-b promotes itself",
        &nodes,
        || nodes[1].is_primary() && !nodes[0].is_primary(),
    );
    assert_eq!(nodes[1].sqlite(db, "SELECT count(*) FROM t;").trim(), "1");
    assert!(writable(&nodes[1], db));
}

/// Every test above that takes a backend runs on each: one suite for etcd and the Consul stand-in.
macro_rules! on_each_backend {
    ($($test:ident),* $(,)?) => {
        mod etcd {
            $(#[test]
            fn $test() {
                super::$test(super::Backend::Etcd(super::Etcd::start()));
            })*
        }
        mod consul_standin {
            $(#[test]
            fn $test() {
                super::$test(super::Backend::Consul(super::Consul::start()));
            })*
        }
    };
}

on_each_backend!(
    failover_after_a_kill_and_handover_after_a_clean_shutdown,
    promotion_moves_the_primary_without_losing_a_write,
    a_node_that_never_joined_the_cluster_never_leads_it,
);
