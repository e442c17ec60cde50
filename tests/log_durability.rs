//! The log keeps every acknowledged append across reopen, torn tails, and loss or damage of its
//! index; it refuses appends that break the chain; cursors and restores read it back exactly.

use std::path::Path;

use ltxd::log::{CursorError, Log, LogError, ReadFrom};
use ltxd::ltx::{Checksum, Format, PageSize, Pos, TxId};
use ltxd::workload::SyntheticDatabase;

fn synthetic(seed: u64) -> SyntheticDatabase {
    SyntheticDatabase::new(PageSize::new(4096).unwrap(), Format::V1, 4, seed)
}

/// Appends `n` transactions and returns the database file after each, by TXID (index 0 = TXID 1).
fn append_n(log: &Log, db: &mut SyntheticDatabase, n: usize) -> Vec<Vec<u8>> {
    let dblog = log.database("app.db").unwrap();
    (0..n)
        .map(|_| {
            dblog.append(&db.next_transaction(3).unwrap()).unwrap();
            db.file_bytes()
        })
        .collect()
}

fn head(data: &Path) -> Pos {
    Log::open(data).unwrap().database("app.db").unwrap().head()
}

#[test]
fn appends_survive_reopen_and_restore_byte_identically_at_random_txids() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = synthetic(1);
    let states = {
        let log = Log::open(dir.path()).unwrap();
        // Two segments of many records each: recovery checks the chain across and within them.
        let mut states = append_n(&log, &mut db, 60);
        log.database("app.db")
            .unwrap()
            .seal_active_segment_older_than(std::time::Duration::ZERO)
            .unwrap();
        states.extend(append_n(&log, &mut db, 60));
        states
    };
    let log = Log::open(dir.path()).unwrap();
    let dblog = log.database("app.db").unwrap();
    assert_eq!(dblog.head(), Pos::new(TxId(120), db.checksum()));
    assert_eq!(dblog.records().len(), 120);
    let out = dir.path().join("restored.db");
    for txid in [1u64, 2, 17, 64, 119, 120] {
        ltxd::log::restore(&dblog, TxId(txid), &out).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            states[txid as usize - 1],
            "TXID {txid}"
        );
    }
    assert!(matches!(
        ltxd::log::restore(&dblog, TxId(121), &out),
        Err(LogError::NotRetained { .. })
    ));
}

#[test]
fn a_torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = synthetic(2);
    append_n(&Log::open(dir.path()).unwrap(), &mut db, 10);
    let expected = head(dir.path());
    let segment = dir.path().join("dbs/app.db/segments/0000000000000001.seg");
    let clean_len = std::fs::metadata(&segment).unwrap().len();
    let next = db.next_transaction(3).unwrap();
    for torn in [7, 16, 40, next.len() / 2, next.len() + 15] {
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.truncate(clean_len as usize);
        let mut record = ltxd_record(&next);
        record.truncate(torn.min(record.len() - 1));
        bytes.extend_from_slice(&record);
        std::fs::write(&segment, &bytes).unwrap();
        assert_eq!(head(dir.path()), expected, "torn at {torn}");
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), clean_len);
    }
    let log = Log::open(dir.path()).unwrap();
    log.database("app.db").unwrap().append(&next).unwrap();
    assert_eq!(log.database("app.db").unwrap().head().txid, TxId(11));
}

/// A record as the log stores it: the 16-byte record header, then the LTX file.
fn ltxd_record(ltx: &[u8]) -> Vec<u8> {
    let mut record = b"LTXR\x01\0\0\0".to_vec();
    record.extend_from_slice(&(ltx.len() as u64).to_be_bytes());
    record.extend_from_slice(ltx);
    record
}

#[test]
fn losing_or_damaging_the_index_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = synthetic(3);
    let log = Log::open(dir.path()).unwrap();
    append_n(&log, &mut db, 30);
    log.flush_index().unwrap();
    drop(log);
    let stale_index = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("index"), stale_index.path());
    let log = Log::open(dir.path()).unwrap();
    append_n(&log, &mut db, 30);
    drop(log);
    let expected = Pos::new(TxId(60), db.checksum());

    // A stale index (from 30 appends ago): the tail it lacks is scanned.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    copy_dir(stale_index.path(), &dir.path().join("index"));
    assert_eq!(head(dir.path()), expected);

    // No index at all.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    assert_eq!(head(dir.path()), expected);

    // An index whose files are garbage.
    for entry in walk(&dir.path().join("index")) {
        std::fs::write(&entry, vec![0xa5; 4096]).unwrap();
    }
    assert_eq!(head(dir.path()), expected);
    let log = Log::open(dir.path()).unwrap();
    let dblog = log.database("app.db").unwrap();
    let out = dir.path().join("restored.db");
    ltxd::log::restore(&dblog, TxId(60), &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), db.file_bytes());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn appends_that_break_the_chain_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let dblog = log.database("app.db").unwrap();
    let mut db = synthetic(4);
    let first = db.next_transaction(3).unwrap();
    let second = db.next_transaction(3).unwrap();
    let third = db.next_transaction(3).unwrap();
    assert!(matches!(
        dblog.append(&second),
        Err(LogError::NotContiguous { .. })
    ));
    dblog.append(&first).unwrap();
    assert!(matches!(
        dblog.append(&third),
        Err(LogError::NotContiguous { .. })
    ));
    let mut other = synthetic(5);
    other.next_transaction(3).unwrap();
    let diverged = other.next_transaction(3).unwrap();
    assert!(matches!(
        dblog.append(&diverged),
        Err(LogError::ChecksumChain { .. })
    ));
    let mut corrupt = second.clone();
    let at = corrupt.len() / 2;
    corrupt[at] ^= 0xff;
    assert!(matches!(
        dblog.append(&corrupt),
        Err(LogError::InvalidLtx(_))
    ));
    dblog.append(&second).unwrap();
    dblog.append(&third).unwrap();
    drop((dblog, log));
    assert_eq!(head(dir.path()), Pos::new(TxId(3), db.checksum()));
}

#[test]
fn read_from_tells_records_from_snapshot_needed_and_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut db = synthetic(6);
    append_n(&log, &mut db, 5);
    let dblog = log.database("app.db").unwrap();
    let records = dblog.records();
    let at = |i: usize| Pos::new(records[i].max_txid, records[i].post_apply_checksum);
    assert_eq!(dblog.read_from(at(2)), ReadFrom::Records);
    assert_eq!(dblog.read_from(at(4)), ReadFrom::Records);
    assert_eq!(
        dblog.read_from(Pos::new(TxId(3), Checksum(Checksum::FLAG | 1))),
        ReadFrom::Diverged
    );
    assert_eq!(
        dblog.read_from(Pos::new(TxId(9), db.checksum())),
        ReadFrom::Diverged
    );
    // The chain still starts at TXID 1, whose record is itself a snapshot.
    assert_eq!(dblog.read_from(Pos::ZERO), ReadFrom::Records);
}

#[tokio::test]
async fn a_cursor_yields_the_tail_then_waits_for_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut db = synthetic(7);
    append_n(&log, &mut db, 3);
    let dblog = log.database("app.db").unwrap();
    let first = dblog.records()[0].clone();
    let mut cursor = dblog
        .cursor(Pos::new(first.max_txid, first.post_apply_checksum))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(cursor.next().await.unwrap().record.max_txid, TxId(2));
    assert_eq!(cursor.next().await.unwrap().record.max_txid, TxId(3));
    assert_eq!(dblog.slowest_subscriber().unwrap().txid, TxId(3));
    let waiting = tokio::spawn(async move { cursor.next().await.map(|r| r.record.max_txid) });
    tokio::task::yield_now().await;
    dblog.append(&db.next_transaction(3).unwrap()).unwrap();
    let got: Result<TxId, CursorError> = waiting.await.unwrap();
    assert_eq!(got.unwrap(), TxId(4));
}

/// A flipped byte in the fifth of ten records (followed by `trailing_zeros` preallocated zeros)
/// makes the log refuse to open, and nothing is cut.
fn damage_in_the_fifth_record_is_refused_not_cut(trailing_zeros: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = synthetic(8);
    append_n(&Log::open(dir.path()).unwrap(), &mut db, 10);
    let segment = dir.path().join("dbs/app.db/segments/0000000000000001.seg");
    let log = Log::open(dir.path()).unwrap();
    let fifth = log.database("app.db").unwrap().records()[4].clone();
    drop(log);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[(fifth.data_offset() + 200) as usize] ^= 0x40;
    bytes.resize(bytes.len() + trailing_zeros, 0);
    std::fs::write(&segment, &bytes).unwrap();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let err = Log::open(dir.path())
        .err()
        .expect("a damaged log must not open");
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    assert!(
        std::fs::read(&segment).unwrap() == bytes,
        "nothing may be cut"
    );
}

#[test]
fn damage_before_the_last_record_is_refused_not_cut() {
    damage_in_the_fifth_record_is_refused_not_cut(0);
}

#[test]
fn encoded_appends_are_checked_against_the_chain_and_match_streamed_ones() {
    let encoded = |ltx: &[u8]| {
        ltxd::ltx::Decoder::new(ltx, Format::V1)
            .unwrap()
            .verify()
            .unwrap()
    };
    let (dir, streamed_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (log, streamed_log) = (
        Log::open(dir.path()).unwrap(),
        Log::open(streamed_dir.path()).unwrap(),
    );
    let (dblog, streamed) = (
        log.database("app.db").unwrap(),
        streamed_log.database("app.db").unwrap(),
    );
    let mut db = synthetic(6);
    let files: Vec<Vec<u8>> = (0..4).map(|_| db.next_transaction(3).unwrap()).collect();
    let append_encoded = |ltx: &[u8]| {
        dblog.append_encoded(&ltxd::log::EncodedLtx {
            bytes: ltx,
            written: encoded(ltx),
        })
    };
    assert!(matches!(
        append_encoded(&files[1]),
        Err(LogError::NotContiguous { .. })
    ));
    let mut other = synthetic(7);
    other.next_transaction(3).unwrap();
    let diverged = other.next_transaction(3).unwrap();
    for (i, ltx) in files.iter().enumerate() {
        let record = if i % 2 == 0 {
            append_encoded(ltx).unwrap()
        } else {
            dblog.append(ltx).unwrap()
        };
        assert_eq!(record, streamed.append(ltx).unwrap());
        if i == 0 {
            assert!(matches!(
                append_encoded(&diverged),
                Err(LogError::ChecksumChain { .. })
            ));
        }
    }
    drop((dblog, streamed, log, streamed_log));
    assert_eq!(head(dir.path()), Pos::new(TxId(4), db.checksum()));
    assert_eq!(
        std::fs::read(dir.path().join("dbs/app.db/segments/0000000000000001.seg")).unwrap(),
        std::fs::read(
            streamed_dir
                .path()
                .join("dbs/app.db/segments/0000000000000001.seg")
        )
        .unwrap()
    );
}

#[test]
fn preallocated_zeros_left_by_a_crash_are_a_clean_end_and_a_torn_record_among_them_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = synthetic(8);
    append_n(&Log::open(dir.path()).unwrap(), &mut db, 10);
    let expected = head(dir.path());
    let segment = dir.path().join("dbs/app.db/segments/0000000000000001.seg");
    let clean = std::fs::read(&segment).unwrap();
    let next = db.next_transaction(3).unwrap();
    // A crash leaves the active segment's preallocated zeros after its records.
    let mut bytes = clean.clone();
    bytes.resize(clean.len() + 3 * next.len() + 1000, 0);
    std::fs::write(&segment, &bytes).unwrap();
    assert_eq!(head(dir.path()), expected);
    {
        let log = Log::open(dir.path()).unwrap();
        let dblog = log.database("app.db").unwrap();
        assert!(dblog.verify().unwrap().faults.is_empty());
        dblog.append(&next).unwrap();
    }
    let after = std::fs::read(&segment).unwrap();
    assert_eq!(after.len(), clean.len() + ltxd_record(&next).len());
    assert_eq!(head(dir.path()).txid, TxId(11));
    // An append torn among the zeros is cut: its first block lost and a later one written, or
    // its first block written and the rest lost.
    let torn = ltxd_record(&db.next_transaction(3).unwrap());
    for (from, to) in [(4096, torn.len()), (0, 4096)] {
        let mut bytes = after.clone();
        bytes.resize(after.len() + torn.len() + 5000, 0);
        bytes[after.len() + from..after.len() + to].copy_from_slice(&torn[from..to]);
        std::fs::write(&segment, &bytes).unwrap();
        assert_eq!(head(dir.path()).txid, TxId(11), "written {from}..{to}");
        assert_eq!(std::fs::read(&segment).unwrap(), after);
    }
}

#[test]
fn the_active_segment_is_preallocated_while_open_and_cut_to_its_records_when_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = synthetic(9);
    let segment = dir.path().join("dbs/app.db/segments/0000000000000001.seg");
    let log = Log::open(dir.path()).unwrap();
    append_n(&log, &mut db, 3);
    let dblog = log.database("app.db").unwrap();
    let end = dblog.records().last().unwrap().end();
    assert!(std::fs::metadata(&segment).unwrap().len() > end);
    assert!(dblog.verify().unwrap().faults.is_empty());
    let pos = Pos::new(TxId(2), dblog.records()[1].post_apply_checksum);
    let third = dblog.record_after(pos).unwrap().unwrap();
    assert_eq!(third.record.max_txid, TxId(3));
    assert!(dblog.record_after(dblog.head()).unwrap().is_none());
    dblog
        .seal_active_segment_older_than(std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), end);
    append_n(&log, &mut db, 1);
    drop((dblog, log));
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), end);
    assert_eq!(head(dir.path()).txid, TxId(4));
}

#[test]
fn damage_before_preallocated_zeros_is_refused_not_cut() {
    damage_in_the_fifth_record_is_refused_not_cut(100_000);
}

/// Appends `n` zeros to the file at `path`.
fn append_zeros(path: &Path, n: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.resize(bytes.len() + n, 0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn zeros_after_a_sealed_segment_or_a_snapshot_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = synthetic(11);
    let sealed = dir.path().join("dbs/app.db/segments/0000000000000001.seg");
    let snapshot = {
        let log = Log::open(dir.path()).unwrap();
        append_n(&log, &mut db, 5);
        let dblog = log.database("app.db").unwrap();
        dblog
            .seal_active_segment_older_than(std::time::Duration::ZERO)
            .unwrap();
        append_n(&log, &mut db, 5);
        let snapshot = dblog.create_snapshot().unwrap().unwrap();
        let clean = std::fs::read(&sealed).unwrap();
        append_zeros(&sealed, 4096);
        assert!(!dblog.verify().unwrap().faults.is_empty());
        std::fs::write(&sealed, clean).unwrap();
        assert!(dblog.verify().unwrap().faults.is_empty());
        dir.path()
            .join("dbs/app.db/snapshots")
            .join(format!("{}.seg", snapshot.max_txid))
    };
    for path in [&sealed, &snapshot] {
        let clean = std::fs::read(path).unwrap();
        append_zeros(path, 4096);
        let err = Log::open(dir.path())
            .err()
            .expect("zeros after a complete file are damage");
        assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
        std::fs::write(path, clean).unwrap();
    }
    assert_eq!(head(dir.path()).txid, TxId(10));
}
