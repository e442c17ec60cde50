//! Compaction merges old records by time level without moving the head or losing any retained
//! restore point; snapshots and retention bound the log; subscribers keep their place unless
//! the size cap forces a snapshot on them.

use std::time::Duration;

use ltxd::log::{CursorError, DatabaseLog, Log, LogError, Policy, ReadFrom};
use ltxd::ltx::{Format, PageSize, Pos, TxId};
use ltxd::workload::SyntheticDatabase;

const HOUR_MS: i64 = 3_600_000;

/// Appends `batches` batches of `per_batch` transactions, sealing a segment after each batch.
/// Returns the database file after every transaction (index 0 = TXID 1) and the last timestamp.
fn build(
    log: &DatabaseLog,
    db: &mut SyntheticDatabase,
    batches: usize,
    per_batch: usize,
) -> Vec<Vec<u8>> {
    let mut states = Vec::new();
    for _ in 0..batches {
        for _ in 0..per_batch {
            log.append(&db.next_transaction(3).unwrap()).unwrap();
            states.push(db.file_bytes());
        }
        log.seal_active_segment_older_than(Duration::ZERO).unwrap();
    }
    states
}

fn now_after(log: &DatabaseLog, ms: i64) -> i64 {
    log.records().last().unwrap().timestamp + ms
}

fn setup(seed: u64) -> (tempfile::TempDir, Log, SyntheticDatabase) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let db = SyntheticDatabase::new(PageSize::new(4096).unwrap(), Format::V1, 4, seed);
    (dir, log, db)
}

#[test]
fn level_compaction_merges_old_records_and_keeps_the_head_and_the_chain() {
    let (dir, log, mut db) = setup(11);
    let dblog = log.database("app.db").unwrap();
    let states = build(&dblog, &mut db, 3, 60);
    let head = dblog.head();
    let report = dblog
        .compact_levels(&Policy::default(), now_after(&dblog, 2 * HOUR_MS))
        .unwrap();
    assert_eq!(report.segments, 3);
    assert!(
        report.records_after < report.records_before / 4,
        "{report:?}"
    );
    assert_eq!(dblog.head(), head);
    let verified = dblog.verify().unwrap();
    assert!(verified.faults.is_empty(), "{:?}", verified.faults);

    let out = dir.path().join("restored.db");
    ltxd::log::restore(&dblog, head.txid, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), *states.last().unwrap());
    for record in dblog.records() {
        ltxd::log::restore(&dblog, record.max_txid, &out).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            states[record.max_txid.0 as usize - 1]
        );
    }
    let inside = dblog
        .records()
        .iter()
        .find(|r| r.min_txid < r.max_txid)
        .unwrap()
        .min_txid;
    assert!(matches!(
        ltxd::log::restore(&dblog, inside, &out),
        Err(LogError::NotRetained { .. })
    ));

    drop((dblog, log));
    let reopened = Log::open(dir.path()).unwrap().database("app.db").unwrap();
    assert_eq!(reopened.head(), head);
    assert!(reopened.verify().unwrap().faults.is_empty());
}

#[test]
fn young_records_stay_individual() {
    let (_dir, log, mut db) = setup(12);
    let dblog = log.database("app.db").unwrap();
    build(&dblog, &mut db, 2, 40);
    let report = dblog
        .compact_levels(&Policy::default(), now_after(&dblog, 1_000))
        .unwrap();
    assert_eq!(report.segments, 0);
    assert_eq!(dblog.records().len(), 80);
}

#[tokio::test]
async fn compaction_never_merges_what_the_slowest_subscriber_has_not_read() {
    let (_dir, log, mut db) = setup(13);
    let dblog = log.database("app.db").unwrap();
    build(&dblog, &mut db, 2, 50);
    let r = dblog.records()[29].clone();
    let mut cursor = dblog
        .cursor(Pos::new(r.max_txid, r.post_apply_checksum))
        .unwrap_or_else(|e| panic!("{e:?}"));
    dblog
        .compact_levels(&Policy::default(), now_after(&dblog, 2 * HOUR_MS))
        .unwrap();
    assert!(dblog
        .records()
        .iter()
        .filter(|r| r.max_txid > TxId(30))
        .all(|r| r.min_txid == r.max_txid));
    for txid in 31..=100 {
        assert_eq!(cursor.next().await.unwrap().record.max_txid, TxId(txid));
    }
}

#[test]
fn snapshots_and_retention_bound_the_log_and_keep_the_head_restorable() {
    let (dir, log, mut db) = setup(14);
    let dblog = log.database("app.db").unwrap();
    let states = build(&dblog, &mut db, 4, 25);
    let policy = Policy {
        retention: Duration::ZERO,
        ..Policy::default()
    };
    let now = now_after(&dblog, 10);
    // No snapshot file yet: retention keeps everything.
    assert_eq!(
        dblog
            .enforce_retention(&policy, now)
            .unwrap()
            .segments_deleted,
        0
    );
    let snapshot = dblog.create_snapshot().unwrap().unwrap();
    assert_eq!(snapshot.max_txid, TxId(100));
    // More appends after the snapshot, in a new segment.
    build(&dblog, &mut db, 1, 10);
    let retained = dblog
        .enforce_retention(&policy, now_after(&dblog, 10))
        .unwrap();
    assert_eq!(retained.segments_deleted, 4, "{retained:?}");
    assert_eq!(dblog.records().first().unwrap().min_txid, TxId(101));
    assert_eq!(dblog.read_from(Pos::ZERO), ReadFrom::SnapshotNeeded);
    let out = dir.path().join("restored.db");
    ltxd::log::restore(&dblog, TxId(110), &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), db.file_bytes());
    ltxd::log::restore(&dblog, TxId(100), &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), states[99]);
    assert!(matches!(
        ltxd::log::restore(&dblog, TxId(50), &out),
        Err(LogError::NotRetained { .. })
    ));
    assert!(dblog.verify().unwrap().faults.is_empty());
}

#[tokio::test]
async fn retention_waits_for_subscribers_unless_the_size_cap_forces_it() {
    let (_dir, log, mut db) = setup(15);
    let dblog = log.database("app.db").unwrap();
    build(&dblog, &mut db, 4, 25);
    dblog.create_snapshot().unwrap();
    build(&dblog, &mut db, 1, 5);
    let r = dblog.records()[9].clone();
    let mut cursor = dblog
        .cursor(Pos::new(r.max_txid, r.post_apply_checksum))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let by_age = Policy {
        retention: Duration::ZERO,
        ..Policy::default()
    };
    let retained = dblog
        .enforce_retention(&by_age, now_after(&dblog, 10))
        .unwrap();
    assert_eq!(
        retained.segments_deleted, 0,
        "the subscriber at TXID 10 still needs segment 1"
    );
    let capped = Policy {
        max_bytes: Some(1),
        ..by_age
    };
    let retained = dblog
        .enforce_retention(&capped, now_after(&dblog, 10))
        .unwrap();
    assert!(retained.forced_by_size);
    assert!(retained.segments_deleted >= 1);
    assert!(matches!(
        cursor.next().await,
        Err(CursorError::SnapshotNeeded)
    ));
}
