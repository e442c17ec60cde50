//! Replication across a simulated WAN (`tools/wan`): the primary in one network namespace, the
//! replica in another, joined by a link with 50 ms RTT and 1% loss. The same workload (ten 1 MiB
//! rows in WAL mode, then small commits) runs over HTTP (with a token) and over QUIC (TLS with a
//! development certificate, and a token), and the replica ends byte-identical to the primary.
//! Skipped, with the reason, without root, `ip` or `iptables`.

mod common;
// Only part of the harness's API is used here.
#[allow(dead_code)]
#[path = "../tools/wan/src/lib.rs"]
mod wan;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pos, Node};
use wan::{Profile, Side, Wan};

const TOKEN: &str = "wan-test-token";

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid(2) has no requirements.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the WAN harness needs root");
    }
    for tool in ["ip", "iptables"] {
        if std::process::Command::new(tool).arg("-V").output().is_err() {
            return Some("ip and iptables are needed");
        }
    }
    None
}

/// A node whose daemon runs in `side`'s namespace.
fn node_in(wan: &Arc<Wan>, side: Side, advertise_url: &str, candidate: bool, extra: &str) -> Node {
    let launcher = {
        let wan = Arc::clone(wan);
        Box::new(move |command| wan.spawn_in(side, command))
    };
    Node::configured(
        &format!("{}:20202", side.addr()),
        &format!("  token: {TOKEN}\n"),
        advertise_url,
        &format!(
            "  type: static\n  hostname: primary-host\n  advertise-url: {advertise_url}\n  reconnect-delay: 50ms\n  candidate: {candidate}\n"
        ),
        extra,
        Some(launcher),
    )
}

fn replicate_across(profile: Profile, quic: bool) {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let wan = Arc::new(Wan::start(profile).expect("the WAN link"));
    let primary_addr = Side::A.addr();
    let (url, primary_extra, replica_extra) = if quic {
        (
            format!("quic://{primary_addr}:4433"),
            format!("quic:\n  addr: {primary_addr}:4433\n  insecure-dev: true\n  token: {TOKEN}\n"),
            format!("quic:\n  insecure-dev: true\n  token: {TOKEN}\n"),
        )
    } else {
        (
            format!("http://{primary_addr}:20202"),
            String::new(),
            String::new(),
        )
    };
    let primary = node_in(&wan, Side::A, &url, true, &primary_extra);
    let replica = node_in(&wan, Side::B, &url, false, &replica_extra);
    let db = "wan.db";
    primary.sqlite(
        db,
        "PRAGMA journal_mode=WAL; CREATE TABLE b(id INTEGER PRIMARY KEY, data BLOB);",
    );
    for i in 0..10 {
        primary.sqlite(
            db,
            &format!("INSERT INTO b VALUES ({i}, randomblob(1048576));"),
        );
    }
    for i in 10..40 {
        primary.sqlite(db, &format!("INSERT INTO b VALUES ({i}, randomblob(100));"));
    }
    primary.sqlite(db, "PRAGMA wal_checkpoint(TRUNCATE);");
    let want = pos(&primary, db);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pos(&replica, db) != want {
        assert!(
            Instant::now() < deadline,
            "the replica did not catch up over {profile} ({})\n{}",
            if quic { "QUIC" } else { "HTTP" },
            replica.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::fs::read(primary.backing_db(db)).unwrap()
            == std::fs::read(replica.backing_db(db)).unwrap(),
        "the replica's database differs from the primary's"
    );
    assert_eq!(replica.sqlite(db, "PRAGMA integrity_check;").trim(), "ok");
    drop(replica);
    drop(primary);
}

#[test]
fn http_replication_across_a_50ms_lossy_link() {
    replicate_across(Profile::Wan50, false);
}

#[test]
fn quic_replication_across_a_50ms_lossy_link() {
    replicate_across(Profile::Wan50, true);
}
