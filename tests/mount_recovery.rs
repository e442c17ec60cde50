//! Start-up recovery of `ltxd mount`, on files prepared by SQLite itself: a committed WAL
//! transaction missing from the log is appended to it, never truncated away; a database file
//! that disagrees with the log in a way no WAL prefix explains is rebuilt from the log.

use std::path::Path;
use std::sync::Arc;

use ltxd::log::Log;
use ltxd::ltx::TxId;
use ltxd::metrics::Metrics;
use ltxd::mount::{CaptureOptions, LtxdFs, MountOptions};

fn open_fs(data: &Path) -> (Arc<Log>, LtxdFs) {
    let log = Arc::new(Log::open(data).unwrap());
    let options = MountOptions {
        data_dir: data.to_path_buf(),
        writable: true,
        primary_hostname: None,
        capture: CaptureOptions {
            compress: true,
            node_id: 7,
        },
        metrics: Arc::new(Metrics::new()),
        busy_poll: std::time::Duration::ZERO,
    };
    let fs = LtxdFs::new(options, Arc::clone(&log)).unwrap();
    (log, fs)
}

fn rows(db: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A plain SQLite file to prepare states in, and the data directory's folder for `app.db`.
fn database_dirs(plain: &Path, data: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let backing = data.join("dbs/app.db");
    std::fs::create_dir_all(&backing).unwrap();
    (plain.join("x.db"), backing)
}

#[test]
fn a_committed_wal_transaction_missing_from_the_log_is_appended_not_truncated() {
    let (plain, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, backing) = database_dirs(plain.path(), data.path());

    let conn = rusqlite::Connection::open(&source).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(x); INSERT INTO t VALUES (1);
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
    std::fs::copy(&source, backing.join("database")).unwrap();
    {
        let (log, _fs) = open_fs(data.path());
        assert_eq!(
            log.database("app.db").unwrap().head().txid,
            TxId(1),
            "bootstrapped as a snapshot"
        );
    }

    // Transaction B commits in the WAL; the connection stays open, so nothing checkpoints it.
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    std::fs::copy(plain.path().join("x.db-wal"), backing.join("wal")).unwrap();

    let (log, fs) = open_fs(data.path());
    let head = log.database("app.db").unwrap().head();
    assert_eq!(
        head.txid,
        TxId(2),
        "the WAL transaction was recovered into the log"
    );
    drop(fs);
    assert!(
        !backing.join("wal").exists(),
        "the WAL was checkpointed into the database"
    );
    assert_eq!(rows(&backing.join("database")), [1, 2]);
    let state = ltxd::database::checksum_file(&backing.join("database")).unwrap();
    assert_eq!(state.checksum, head.post_apply_checksum);
}

#[test]
fn a_database_file_the_log_does_not_describe_is_rebuilt_from_the_log() {
    let (plain, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, backing) = database_dirs(plain.path(), data.path());
    let conn = rusqlite::Connection::open(&source).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
        .unwrap();
    drop(conn);
    std::fs::copy(&source, backing.join("database")).unwrap();
    let head = {
        let (log, _fs) = open_fs(data.path());
        log.database("app.db").unwrap().head()
    };
    // Lose part of a page, as a machine crash could without SQLite's fsyncs reaching the disk.
    let mut bytes = std::fs::read(backing.join("database")).unwrap();
    let len = bytes.len();
    bytes[len - 100..].fill(0xee);
    std::fs::write(backing.join("database"), &bytes).unwrap();
    std::fs::write(backing.join("journal"), b"stale journal").unwrap();

    let (log, _fs) = open_fs(data.path());
    assert_eq!(log.database("app.db").unwrap().head(), head);
    assert_eq!(
        std::fs::read(backing.join("database")).unwrap(),
        std::fs::read(&source).unwrap()
    );
    assert!(!backing.join("journal").exists());
    assert_eq!(rows(&backing.join("database")), [1, 2, 3]);
}
