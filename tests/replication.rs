//! Two `ltxd mount` processes on loopback: a primary on a static lease and a replica that follows
//! it over HTTP. The replica's databases end byte-identical to the primary's, readers on the
//! replica never see an error or a torn state, a restarted replica resumes where it stopped,
//! and a replica that fell behind retention or diverged is resnapshotted. `/info`, `/metrics`,
//! `.primary` and `.lag` show each node's role.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{pos, wait_until, Node, Transport};

/// Waits until the replica's position in `db` equals the primary's.
fn wait_caught_up(primary: &Node, replica: &Node, db: &str) {
    let want = pos(primary, db);
    assert!(!want.is_empty(), "the primary has no position for {db}");
    wait_until(
        Duration::from_secs(30),
        &format!("the replica reaches {want:?} in {db}"),
        &[primary, replica],
        || pos(replica, db) == want,
    );
}

/// Checkpoints the primary's WAL so that its database file holds every page, then compares it
/// with the replica's byte for byte.
fn assert_identical(primary: &Node, replica: &Node, db: &str) {
    primary.sqlite(db, "PRAGMA wal_checkpoint(TRUNCATE);");
    wait_caught_up(primary, replica, db);
    let ours = std::fs::read(primary.backing_db(db)).unwrap();
    // A replica puts a snapshot in its log before it writes the database file (under SQLite's
    // locks, which this read does not take), so its position can lead its file for a moment.
    wait_until(
        Duration::from_secs(10),
        &format!("{db}: the replica's database equals the primary's"),
        &[primary, replica],
        || std::fs::read(replica.backing_db(db)).unwrap_or_default() == ours,
    );
    assert_eq!(replica.sqlite(db, "PRAGMA integrity_check;").trim(), "ok");
}

/// How many snapshots the replica applied, from its log.
fn snapshots_applied(replica: &Node) -> usize {
    replica.daemon_log().matches("snapshot applied").count()
}

/// Waits until the replica has logged `count` applied snapshots, and checks it logged no more.
/// The line follows the position by a moment: a snapshot is put in the log first, then written
/// to the database file, then logged as applied.
fn wait_for_snapshots(replica: &Node, count: usize) {
    wait_until(
        Duration::from_secs(10),
        &format!("the replica has applied {count} snapshots"),
        &[replica],
        || snapshots_applied(replica) >= count,
    );
    assert_eq!(
        snapshots_applied(replica),
        count,
        "{}",
        replica.daemon_log()
    );
}

fn ten_one_mib_blobs_written_on_the_primary_are_read_back_on_the_replica(transport: Transport) {
    let primary = Node::primary_over(transport);
    let replica = Node::replica_of(&primary);
    let db = "blobs.db";
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
    let digest = "SELECT group_concat(id || ':' || length(data) || ':' || hex(substr(data, 1, 16)) || hex(substr(data, 524288, 16)) || hex(substr(data, -16)), ',') FROM b;";
    let want = primary.sqlite(db, digest);
    wait_caught_up(&primary, &replica, db);
    let full = |node: &Node| node.sqlite(db, "SELECT hex(data) FROM b ORDER BY id;");
    assert_eq!(replica.sqlite(db, digest), want);
    assert!(full(&replica) == full(&primary), "the blobs differ");
    assert_identical(&primary, &replica, db);
}

fn random_workloads_end_byte_identical_in_both_journal_modes(transport: Transport) {
    let primary = Node::primary_over(transport);
    let replica = Node::replica_of(&primary);
    for (db, mode) in [
        ("delete.db", "DELETE"),
        ("wal.db", "WAL"),
        ("trunc.db", "TRUNCATE"),
    ] {
        primary.sqlite(
            db,
            &format!("PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB);"),
        );
        let mut seed = 0x9e37_79b9_u64 ^ db.len() as u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..40 {
            let sql = match next(8) {
                0..=2 => format!(
                    "INSERT INTO t(v, b) VALUES ('r{round}', randomblob({}));",
                    next(9000)
                ),
                3 => format!("UPDATE t SET v = v || 'u' WHERE id % {} = 0;", next(5) + 1),
                4 => format!("DELETE FROM t WHERE id % {} = 1;", next(7) + 2),
                5 => "CREATE INDEX IF NOT EXISTS tv ON t(v);".to_string(),
                6 => "DROP INDEX IF EXISTS tv;".to_string(),
                _ => "VACUUM;".to_string(),
            };
            primary.sqlite(db, &format!("PRAGMA journal_mode={mode}; {sql}"));
        }
    }
    for db in ["delete.db", "wal.db", "trunc.db"] {
        assert_identical(&primary, &replica, db);
    }
    assert_eq!(
        replica.sqlite_result("wal.db", "INSERT INTO t(v) VALUES ('no');"),
        Err("Runtime error near line 2: attempt to write a readonly database (8)\n".into()),
        "a write on the replica is refused as read-only"
    );
}

fn a_reader_on_the_replica_never_sees_an_error_or_a_torn_state(transport: Transport) {
    for mode in ["DELETE", "WAL"] {
        let primary = Node::primary_over(transport);
        let replica = Node::replica_of(&primary);
        let db = "app.db";
        primary.sqlite(db, &format!("PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, total INTEGER);"));
        wait_caught_up(&primary, &replica, db);
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, done) = (replica.path(db), Arc::clone(&done));
            std::thread::spawn(move || {
                let conn = rusqlite::Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let (mut reads, mut last) = (0u64, 0i64);
                while !done.load(Ordering::Relaxed) {
                    // Each transaction keeps total = sum(id); a torn read would break it.
                    let (count, sum, total): (i64, i64, Option<i64>) = conn
                        .query_row(
                            "SELECT count(*), coalesce(sum(id), 0), max(total) FROM t",
                            [],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .unwrap_or_else(|e| panic!("{mode}: read {reads} failed: {e}"));
                    assert_eq!(
                        total.unwrap_or(0),
                        sum,
                        "{mode}: a torn state after {reads} reads"
                    );
                    assert!(count >= last, "{mode}: the replica went backwards");
                    last = count;
                    reads += 1;
                }
                (reads, last)
            })
        };
        for i in 1..=100 {
            primary.sqlite(db, &format!("BEGIN; INSERT INTO t(id, v) VALUES ({i}, randomblob({})); UPDATE t SET total = (SELECT sum(id) FROM t); COMMIT;", 100 + i * 37));
        }
        wait_caught_up(&primary, &replica, db);
        std::thread::sleep(Duration::from_millis(50));
        done.store(true, Ordering::Relaxed);
        let (reads, last) = reader.join().unwrap();
        assert_eq!(last, 100, "{mode}: the reader saw the final state");
        assert!(reads > 20, "{mode}: the reader ran ({reads} reads)");
        assert_identical(&primary, &replica, db);
    }
}

fn a_restarted_replica_resumes_without_a_snapshot(transport: Transport) {
    let primary = Node::primary_over(transport);
    let mut replica = Node::replica_of(&primary);
    let db = "resume.db";
    primary.sqlite(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(v);");
    for i in 0..20 {
        primary.sqlite(db, &format!("INSERT INTO t VALUES ({i});"));
    }
    wait_caught_up(&primary, &replica, db);
    // One snapshot brings a new replica up.
    wait_for_snapshots(&replica, 1);
    let before = 1;
    // Killed while the primary keeps writing.
    let writer = std::thread::scope(|scope| {
        let writes = scope.spawn(|| {
            for i in 20..60 {
                primary.sqlite(db, &format!("INSERT INTO t VALUES ({i});"));
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        replica.kill();
        writes.join()
    });
    writer.unwrap();
    replica.start();
    wait_caught_up(&primary, &replica, db);
    assert_eq!(
        snapshots_applied(&replica),
        before,
        "the restarted replica resumed from its position:\n{}",
        replica.daemon_log()
    );
    assert_eq!(replica.sqlite(db, "SELECT count(*) FROM t;").trim(), "60");
    assert_identical(&primary, &replica, db);
}

fn a_replica_behind_retention_gets_a_snapshot(transport: Transport) {
    let mut primary = Node::primary_over(transport);
    let mut replica = Node::replica_of(&primary);
    let db = "behind.db";
    primary.sqlite(db, "CREATE TABLE t(v);");
    wait_caught_up(&primary, &replica, db);
    replica.stop();
    for i in 0..30 {
        primary.sqlite(db, &format!("INSERT INTO t VALUES ({i});"));
    }
    // Snapshot at the head, then let retention drop the records the replica needs.
    primary.stop();
    let data = primary.data.display().to_string();
    primary.ltxd(&["log", "compact", "--data-dir", &data, "--db", db]);
    primary.edit_config(|text| {
        text.replace(
            "data:\n",
            "data:\n  retention: 1ms\n  retention-monitor-interval: 100ms\n",
        )
    });
    primary.start();
    std::thread::sleep(Duration::from_millis(500));
    let before = snapshots_applied(&replica);
    replica.start();
    wait_caught_up(&primary, &replica, db);
    wait_for_snapshots(&replica, before + 1);
    assert_identical(&primary, &replica, db);
}

fn a_diverged_replica_is_detected_by_checksum_and_resnapshotted(transport: Transport) {
    let primary = Node::primary_over(transport);
    let mut replica = Node::replica_of(&primary);
    let db = "split.db";
    primary.sqlite(db, "CREATE TABLE t(v);");
    for i in 0..5 {
        primary.sqlite(db, &format!("INSERT INTO t VALUES ({i});"));
    }
    wait_caught_up(&primary, &replica, db);
    // Split brain: the replica is started with its lease overridden and takes writes of its own,
    // at the same TXIDs the primary then uses for other writes.
    replica.stop();
    let own_url = replica.url.clone();
    let primary_url = primary.advertise_url.clone();
    replica.edit_config(|text| {
        text.replace("candidate: false", "candidate: true")
            .replace(&primary_url, &own_url)
    });
    replica.start();
    replica.sqlite(db, "INSERT INTO t VALUES ('rogue');");
    replica.stop();
    primary.sqlite(db, "INSERT INTO t VALUES ('real');");
    replica.edit_config(|text| {
        text.replace("candidate: true", "candidate: false")
            .replace(&own_url, &primary_url)
    });
    let before = snapshots_applied(&replica);
    replica.start();
    wait_caught_up(&primary, &replica, db);
    wait_for_snapshots(&replica, before + 1);
    assert_eq!(
        replica.sqlite(db, "SELECT group_concat(v) FROM t;").trim(),
        "0,1,2,3,4,real"
    );
    assert_identical(&primary, &replica, db);
}

fn status_metrics_primary_and_lag_files_show_each_nodes_role(transport: Transport) {
    let primary = Node::primary_over(transport);
    let replica = Node::replica_of(&primary);
    let db = "status.db";
    primary.sqlite(db, "CREATE TABLE t(v); INSERT INTO t VALUES (1);");
    wait_caught_up(&primary, &replica, db);
    assert_metrics_show_each_nodes_role(&primary, &replica, db);

    let text = primary.ltxd(&["status", "--url", &primary.url]);
    assert!(text.contains("role:      primary (candidate)"), "{text}");
    let txid = pos(&primary, db)[..16].to_string();
    assert!(text.contains(&format!("{db}  {txid}")), "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&replica.ltxd(&["status", "--url", &replica.url, "--json"])).unwrap();
    assert_eq!(json["isPrimary"], false);
    assert_eq!(json["primary"]["hostname"], "primary-host");
    assert_eq!(json["databases"][db]["txid"], txid.as_str());
    assert!(json["databases"][db]["lagMs"].as_i64().is_some(), "{json}");

    assert_eq!(
        std::fs::read_to_string(replica.path(".primary")).unwrap(),
        "primary-host\n"
    );
    let lag: i64 = std::fs::read_to_string(replica.path(".lag"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((0..10_000).contains(&lag), "lag {lag}");
    assert!(!primary.path(".primary").exists() && !primary.path(".lag").exists());
}

/// `GET /metrics` from `node`'s HTTP address: the body.
fn metrics(node: &Node) -> String {
    let addr = node.url.strip_prefix("http://").unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of `series` (a name, with its labels if any) in a metrics text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `/metrics` on both nodes, once the replica has caught up in `db`: each node's role, the
/// TXID on both, and on the primary a commit counted for every transaction in its log.
fn assert_metrics_show_each_nodes_role(primary: &Node, replica: &Node, db: &str) {
    let txid = u64::from_str_radix(&pos(primary, db)[..16], 16).unwrap() as f64;
    let series = |name: &str| format!("{name}{{db=\"{db}\"}}");

    let ours = metrics(primary);
    assert_eq!(metric(&ours, "litefs_is_primary"), Some(1.0), "{ours}");
    assert_eq!(metric(&ours, "litefs_db_count"), Some(1.0), "{ours}");
    assert_eq!(
        metric(&ours, "litefs_subscriber_count"),
        Some(1.0),
        "{ours}"
    );
    assert_eq!(
        metric(&ours, &series("litefs_db_txid")),
        Some(txid),
        "{ours}"
    );
    // Every transaction in the primary's log was committed through its mount.
    assert_eq!(
        metric(&ours, &series("litefs_db_commit_count")),
        Some(txid),
        "{ours}"
    );
    let journal_writes = metric(&ours, &series("litefs_db_journal_write_count")).unwrap_or(0.0);
    assert!(journal_writes >= txid, "{ours}");
    assert!(metric(&ours, "process_resident_memory_bytes").is_some_and(|rss| rss > 0.0));

    let theirs = metrics(replica);
    assert_eq!(metric(&theirs, "litefs_is_primary"), Some(0.0), "{theirs}");
    assert_eq!(
        metric(&theirs, &series("litefs_db_txid")),
        Some(txid),
        "{theirs}"
    );
    assert_eq!(
        metric(&theirs, &series("litefs_db_commit_count")).unwrap_or(0.0),
        0.0,
        "a replica commits nothing itself: {theirs}"
    );
    let lag = metric(&theirs, "litefs_lag_seconds").unwrap();
    assert!((0.0..10.0).contains(&lag), "{theirs}");
}

fn the_cluster_id_is_adopted_and_a_replica_of_another_cluster_applies_nothing(
    transport: Transport,
) {
    let primary = Node::primary_over(transport);
    let mut replica = Node::replica_of(&primary);
    let db = "cluster.db";
    primary.sqlite(db, "CREATE TABLE t(v); INSERT INTO t VALUES (1);");
    wait_caught_up(&primary, &replica, db);
    let id = std::fs::read_to_string(primary.data.join("clusterid")).unwrap();
    assert!(id.starts_with("LFSC") && id.len() == 21, "{id:?}");
    assert_eq!(
        std::fs::read_to_string(replica.data.join("clusterid")).unwrap(),
        id
    );
    let json: serde_json::Value =
        serde_json::from_str(&replica.ltxd(&["status", "--url", &replica.url, "--json"])).unwrap();
    assert_eq!(json["clusterID"], id.trim());

    // A static lease cannot be handed over: the replica is no candidate; the primary is primary.
    let promote = |node: &Node| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ltxd"))
            .args(["promote", "--url", &node.url])
            .output()
            .unwrap()
    };
    let refused = promote(&replica);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("not a candidate"),
        "{stderr}"
    );
    let out = promote(&primary);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already primary"));

    // The replica's data directory now says it belongs to another cluster: nothing is applied.
    replica.stop();
    std::fs::write(replica.data.join("clusterid"), "LFSC0000000000000001\n").unwrap();
    replica.start();
    let before = pos(&replica, db);
    primary.sqlite(db, "INSERT INTO t VALUES (2);");
    wait_until(
        Duration::from_secs(10),
        "the replica refuses the other cluster's primary",
        &[&primary, &replica],
        || replica.daemon_log().contains("cluster ID mismatch"),
    );
    assert_eq!(
        pos(&replica, db),
        before,
        "nothing from another cluster is applied"
    );
}

/// Every test above runs over each transport: one conformance suite for HTTP and QUIC.
macro_rules! over_each_transport {
    ($($test:ident),* $(,)?) => {
        mod http {
            $(#[test]
            fn $test() {
                super::$test(super::Transport::Http);
            })*
        }
        mod quic {
            $(#[test]
            fn $test() {
                super::$test(super::Transport::Quic);
            })*
        }
    };
}

over_each_transport!(
    the_cluster_id_is_adopted_and_a_replica_of_another_cluster_applies_nothing,
    ten_one_mib_blobs_written_on_the_primary_are_read_back_on_the_replica,
    random_workloads_end_byte_identical_in_both_journal_modes,
    a_reader_on_the_replica_never_sees_an_error_or_a_torn_state,
    a_restarted_replica_resumes_without_a_snapshot,
    a_replica_behind_retention_gets_a_snapshot,
    a_diverged_replica_is_detected_by_checksum_and_resnapshotted,
    status_metrics_primary_and_lag_files_show_each_nodes_role,
);
