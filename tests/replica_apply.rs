//! Replicated LTX files applied to a replica's mount while a reader queries it: the reader never
//! sees an error or a torn state, and the replica's database ends byte-identical to the
//! primary's, in rollback-journal and WAL modes.

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::Node;
use ltxd::log::Log;
use ltxd::mount::{CaptureOptions, LtxdFs, MountOptions, Mounted};

/// The primary's records of `db`, as LTX files in TXID order.
fn primary_records(node: &Node, db: &str) -> Vec<Vec<u8>> {
    let log = Log::open(&node.data).unwrap();
    let dblog = log.database(db).unwrap();
    dblog
        .records()
        .iter()
        .map(|r| {
            let mut bytes = Vec::new();
            dblog
                .source(r)
                .open_raw()
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            bytes
        })
        .collect()
}

#[test]
fn readers_never_see_a_torn_state_while_transactions_are_applied() {
    for mode in ["DELETE", "WAL"] {
        let mut primary = Node::primary();
        let db = "app.db";
        primary.sqlite(db, &format!("PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, total INTEGER);"));
        for i in 1..=60 {
            // Each transaction keeps an invariant a torn read would break: total = sum of ids.
            primary.sqlite(db, &format!("PRAGMA journal_mode={mode}; BEGIN; INSERT INTO t(id, v) VALUES ({i}, randomblob({})); UPDATE t SET total = (SELECT sum(id) FROM t); COMMIT;", 100 + i * 37));
        }
        primary.stop();
        let records = primary_records(&primary, db);

        let root = tempfile::tempdir().unwrap();
        let (mnt, data) = (root.path().join("mnt"), root.path().join("data"));
        let log = Arc::new(Log::open(&data).unwrap());
        let options = MountOptions {
            data_dir: data.clone(),
            writable: false,
            primary_hostname: Some("primary-host".into()),
            capture: CaptureOptions {
                compress: true,
                node_id: 2,
            },
        };
        let fs = LtxdFs::new(options, log).unwrap();
        let applier = fs.applier();
        let mounted = Mounted::mount(fs, &mnt, false, 4).unwrap();
        applier.apply(db, &records[0]).unwrap();
        applier.apply(db, &records[1]).unwrap();

        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, done) = (mnt.join(db), Arc::clone(&done));
            std::thread::spawn(move || {
                let conn = rusqlite::Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let mut reads = 0;
                let mut last = 0i64;
                while !done.load(Ordering::Relaxed) {
                    let (count, sum, total): (i64, i64, Option<i64>) = conn
                        .query_row(
                            "SELECT count(*), coalesce(sum(id), 0), max(total) FROM t",
                            [],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .unwrap_or_else(|e| panic!("read {reads} failed: {e}"));
                    assert_eq!(total.unwrap_or(0), sum, "a torn state after {reads} reads");
                    assert!(count >= last, "the replica went backwards");
                    last = count;
                    reads += 1;
                }
                (reads, last)
            })
        };
        // Transactions arrive spaced out, as from a live primary. (A burst of applies holds the
        // locks back to back and starves readers until it ends: see the closing notes.)
        for record in &records[2..] {
            applier.apply(db, record).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        done.store(true, Ordering::Relaxed);
        let (reads, last) = reader.join().unwrap();
        assert_eq!(last, 60, "{mode}: the reader saw the final state");
        assert!(reads > 10, "{mode}: the reader ran ({reads} reads)");
        mounted.unmount().unwrap();
        assert!(
            std::fs::read(data.join("dbs").join(db).join("database")).unwrap()
                == std::fs::read(primary.backing_db(db)).unwrap(),
            "{mode}: replica differs from primary"
        );
    }
}
