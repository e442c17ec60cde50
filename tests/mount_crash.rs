//! `ltxd mount` killed with SIGKILL during a stream of writes, 20 times (100 with
//! `LTXD_LONG=1`), alternating WAL and DELETE modes. After each remount the database is intact,
//! every acknowledged commit is present, and the log and the database agree.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Node;

/// Runs an INSERT stream in a sqlite3 process until the mount dies; returns the acknowledged
/// row IDs (each INSERT is its own transaction, echoed by a SELECT once it committed).
fn write_until_killed(
    node: &mut Node,
    db: &str,
    mode: &str,
    first_id: u64,
    delay: Duration,
) -> Vec<u64> {
    let mut sqlite = Command::new("sqlite3")
        .args(["-batch"])
        .arg(node.path(db))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = sqlite.stdin.take().unwrap();
    let mode = mode.to_string();
    let feeder = std::thread::spawn(move || {
        let _ = writeln!(stdin, ".timeout 5000\nPRAGMA journal_mode={mode};");
        for id in first_id..first_id + 1_000_000 {
            let size = if id % 17 == 0 { 40_000 } else { 200 };
            if writeln!(
                stdin,
                "INSERT INTO t(id, v) VALUES ({id}, randomblob({size})); SELECT {id};"
            )
            .is_err()
            {
                break;
            }
        }
    });
    let stdout = sqlite.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .collect::<Vec<u64>>()
    });
    std::thread::sleep(delay);
    node.kill();
    let _ = sqlite.kill();
    let _ = sqlite.wait();
    let _ = feeder.join();
    reader.join().unwrap()
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_commit() {
    let trials = if std::env::var_os("LTXD_LONG").is_some() {
        100
    } else {
        20
    };
    let mut node = Node::primary();
    let db = "crash.db";
    node.sqlite(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);");
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut rng: u64 = 0xc0ffee;
    for trial in 0..trials {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mode = if trial % 2 == 0 { "WAL" } else { "DELETE" };
        let first_id = acknowledged.last().map_or(1, |id| id + 1_000_000);
        let delay = Duration::from_millis(50 + rng % 300);
        let started = std::time::Instant::now();
        let acked = write_until_killed(&mut node, db, mode, first_id, delay);
        eprintln!(
            "trial {trial} ({mode}): {} commits acknowledged before the kill",
            acked.len()
        );
        acknowledged.extend(&acked);

        node.start();
        assert_eq!(
            node.sqlite(db, "PRAGMA integrity_check;").trim(),
            "ok",
            "trial {trial}"
        );
        let present: std::collections::HashSet<u64> = node
            .sqlite(db, "SELECT id FROM t;")
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        let lost: Vec<&u64> = acknowledged
            .iter()
            .filter(|id| !present.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "trial {trial} ({mode}): acknowledged rows lost: {lost:?}\n{}",
            node.daemon_log()
        );
        node.stop();
        node.check_log_matches_database(db);
        node.start();
        eprintln!("trial {trial}: checked in {:?}", started.elapsed());
    }
    assert!(
        acknowledged.len() > trials * 5,
        "the writer barely ran: {} rows",
        acknowledged.len()
    );
}
