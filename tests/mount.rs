//! `ltxd mount` for real: SQLite (the sqlite3 CLI and rusqlite) on the FUSE mount, in every
//! journal mode, with several processes and connections; after each workload the database is
//! intact and the log rebuilds it byte for byte.

mod common;

use common::Node;

/// A small deterministic generator for workloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A script of `transactions` random transactions: inserts (some with large blobs), updates,
/// deletes, an index, a table created and dropped, and a VACUUM.
fn random_script(rng: &mut Rng, transactions: usize) -> String {
    let mut sql = String::new();
    for i in 0..transactions {
        sql.push_str("BEGIN IMMEDIATE;\n");
        for _ in 0..1 + rng.below(4) {
            match rng.below(10) {
                0..=4 => {
                    let size = if rng.below(8) == 0 { 20_000 + rng.below(200_000) } else { rng.below(300) };
                    sql.push_str(&format!("INSERT INTO t(k, v) VALUES ({}, randomblob({size}));\n", rng.below(1000)));
                }
                5 | 6 => sql.push_str(&format!("UPDATE t SET v = randomblob({}) WHERE k % 7 = {};\n", rng.below(500), rng.below(7))),
                7 => sql.push_str(&format!("DELETE FROM t WHERE k % 13 = {};\n", rng.below(13))),
                8 => sql.push_str("CREATE TABLE IF NOT EXISTS scratch(x); INSERT INTO scratch VALUES (randomblob(5000));\n"),
                _ => sql.push_str("DROP TABLE IF EXISTS scratch;\n"),
            }
        }
        sql.push_str("COMMIT;\n");
        if i == transactions / 2 {
            sql.push_str("CREATE INDEX IF NOT EXISTS t_k ON t(k);\n");
        }
    }
    sql
}

fn run_concurrently(node: &Node, db: &str, scripts: Vec<String>) {
    std::thread::scope(|scope| {
        for script in &scripts {
            scope.spawn(|| node.sqlite(db, script));
        }
    });
}

/// Three processes run random scripts at once in journal mode `mode`, then VACUUM and more; the
/// database stays intact and the log matches it.
fn concurrent_processes_in(mode: &str, node: &mut Node, seed: u64) {
    let db = "app.db";
    node.sqlite(db, &format!("PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);"));
    let mut rng = Rng(seed);
    // Rollback journal modes are per connection: every script sets its own.
    let pragma = format!("PRAGMA journal_mode={mode};\n");
    let scripts = (0..3)
        .map(|_| pragma.clone() + &random_script(&mut rng, 12))
        .collect();
    run_concurrently(node, db, scripts);
    node.sqlite(db, &format!("{pragma}VACUUM;"));
    node.sqlite(db, &(pragma.clone() + &random_script(&mut rng, 5)));
    assert_eq!(
        node.sqlite(db, "PRAGMA integrity_check;").trim(),
        "ok",
        "{mode}"
    );
    node.stop();
    node.check_log_matches_database(db);
}

#[test]
fn every_journal_mode_with_concurrent_processes() {
    for (i, mode) in ["DELETE", "TRUNCATE", "PERSIST", "WAL"]
        .into_iter()
        .enumerate()
    {
        concurrent_processes_in(mode, &mut Node::primary(), 0x1234 + i as u64);
    }
}

/// A blocking lock request (`F_SETLKW`) is granted when its holder unlocks: the kernel keeps the
/// mount's locks, so neither waits on the daemon, even when one thread serves every request
/// (`fuse.busy-poll`).
#[test]
fn a_blocking_lock_is_granted_when_its_holder_unlocks() {
    let mut node = Node::primary();
    node.stop();
    node.edit_config(|text| text.replacen("fuse:\n", "fuse:\n  busy-poll: 1ms\n", 1));
    node.start();
    node.sqlite("lock.db", "CREATE TABLE t(x);");
    let path = node.path("lock.db");
    let lock = |then: &str| {
        format!(
            "import fcntl, sys, time\nf = open(sys.argv[1], 'r+b')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\n{then}"
        )
    };
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            &lock("time.sleep(1)\nfcntl.lockf(f, fcntl.LOCK_UN)\n"),
        ])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n");
    // Blocks until the holder unlocks.
    let waiter = std::process::Command::new("python3")
        .args(["-c", &lock("")])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        waiter.status.success(),
        "{}",
        String::from_utf8_lossy(&waiter.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&waiter.stdout), "locked\n");
    assert!(holder.wait().unwrap().success());
}

/// `fuse.busy-poll` changes how requests are read, not what they do.
#[test]
fn concurrent_processes_with_busy_polling() {
    for (i, mode) in ["DELETE", "WAL"].into_iter().enumerate() {
        let mut node = Node::primary();
        node.stop();
        node.edit_config(|text| text.replacen("fuse:\n", "fuse:\n  busy-poll: 1ms\n", 1));
        node.start();
        assert!(node.daemon_log().contains("busy polling the FUSE device"));
        concurrent_processes_in(mode, &mut node, 0x5678 + i as u64);
    }
}

#[test]
fn rusqlite_connections_in_wal_and_delete_modes() {
    for (mode, connections) in [("wal", 4), ("delete", 2)] {
        let mut node = Node::primary();
        let path = node.path("r.db");
        let setup = rusqlite::Connection::open(&path).unwrap();
        setup.pragma_update(None, "journal_mode", mode).unwrap();
        setup
            .execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, v BLOB)")
            .unwrap();
        drop(setup);
        std::thread::scope(|scope| {
            for c in 0..connections {
                let path = path.clone();
                scope.spawn(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    conn.busy_timeout(std::time::Duration::from_secs(20))
                        .unwrap();
                    let mut rng = Rng(77 + c);
                    for _ in 0..25 {
                        let tx = conn.unchecked_transaction().unwrap();
                        tx.execute(
                            "INSERT INTO t(n, v) VALUES (?1, randomblob(?2))",
                            (c, rng.below(3000) as i64),
                        )
                        .unwrap();
                        if rng.below(3) == 0 {
                            tx.execute(
                                "UPDATE t SET n = n + 1 WHERE id % 5 = ?1",
                                [rng.below(5) as i64],
                            )
                            .unwrap();
                        }
                        tx.commit().unwrap();
                    }
                });
            }
        });
        let conn = rusqlite::Connection::open(&path).unwrap();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 25 * connections as i64);
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        drop(conn);
        node.stop();
        node.check_log_matches_database("r.db");
    }
}

#[test]
fn ten_one_mib_blobs_in_wal_read_back_byte_for_byte() {
    let mut node = Node::primary();
    let path = node.path("blobs.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.execute_batch("CREATE TABLE b(id INTEGER PRIMARY KEY, data BLOB)")
        .unwrap();
    let blob = |i: u8| -> Vec<u8> {
        (0..1 << 20)
            .map(|j: u32| (j as u8).wrapping_mul(31).wrapping_add(i))
            .collect()
    };
    for i in 0..10u8 {
        conn.execute(
            "INSERT INTO b(id, data) VALUES (?1, ?2)",
            (i64::from(i), blob(i)),
        )
        .unwrap();
    }
    drop(conn);
    let conn = rusqlite::Connection::open(&path).unwrap();
    for i in 0..10u8 {
        let data: Vec<u8> = conn
            .query_row("SELECT data FROM b WHERE id = ?1", [i64::from(i)], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(data == blob(i), "blob {i} differs");
    }
    drop(conn);
    node.stop();
    node.check_log_matches_database("blobs.db");
}

#[test]
fn position_file_tracks_the_log_and_primary_file_is_absent_on_the_primary() {
    let node = Node::primary();
    node.sqlite("p.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    let pos = std::fs::read_to_string(node.path("p.db-pos")).unwrap();
    assert_eq!(pos.len(), 34);
    assert!(pos.starts_with("0000000000000002/"), "{pos}");
    assert!(!node.path(".primary").exists());
}

#[test]
fn a_replica_refuses_writes_as_a_read_only_database() {
    let mut node = Node::primary();
    node.sqlite("ro.db", "CREATE TABLE t(x); INSERT INTO t VALUES (42);");
    node.stop();
    std::fs::write(
        node.root.path().join("ltxd.yml"),
        std::fs::read_to_string(node.root.path().join("ltxd.yml"))
            .unwrap()
            .replace("candidate: true", "candidate: false"),
    )
    .unwrap();
    node.start();
    assert_eq!(node.sqlite("ro.db", "SELECT x FROM t;").trim(), "42");
    let err = node
        .sqlite_result("ro.db", "INSERT INTO t VALUES (1);")
        .unwrap_err();
    assert!(
        err.contains("attempt to write a readonly database"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(node.path(".primary")).unwrap(),
        "primary-host\n"
    );
}

/// On a replica, leaving WAL mode fails with "disk I/O error", not a read-only error: SQLite
/// opened the database read-only (the mount refused it for writing with EROFS), but the WAL and
/// its index read-write (a replica's readers must be able to create them), so the connection
/// checkpoints to leave WAL mode and writes through its read-only descriptor, which the kernel
/// refuses (EBADF) before the mount sees a request, as for a plain read-only file. The message
/// is SQLite's; what matters is that nothing changes.
#[test]
fn leaving_wal_mode_on_a_replica_fails_and_changes_nothing() {
    let mut node = Node::primary();
    node.sqlite(
        "w.db",
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (42);",
    );
    node.stop();
    node.edit_config(|c| c.replace("candidate: true", "candidate: false"));
    node.start();
    assert_eq!(node.sqlite("w.db", "SELECT x FROM t;").trim(), "42");
    let before = std::fs::read(node.backing_db("w.db")).unwrap();
    let err = node
        .sqlite_result("w.db", "PRAGMA journal_mode=DELETE;")
        .unwrap_err();
    assert!(
        err.contains("disk I/O error") || err.contains("readonly"),
        "{err}"
    );
    assert_eq!(std::fs::read(node.backing_db("w.db")).unwrap(), before);
    assert_eq!(node.sqlite("w.db", "PRAGMA journal_mode;").trim(), "wal");
    assert_eq!(node.sqlite("w.db", "SELECT x FROM t;").trim(), "42");
}

/// In EXCLUSIVE locking mode the WAL index lives in the connection's memory, but each commit
/// still writes a commit frame, which is where the mount captures it.
#[test]
fn exclusive_locking_mode_in_wal_commits_every_transaction_to_the_log() {
    let mut node = Node::primary();
    let db = "x.db";
    node.sqlite(db, "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); BEGIN; INSERT INTO t VALUES (3); ROLLBACK; INSERT INTO t VALUES (4);");
    assert_eq!(node.sqlite(db, "SELECT sum(x) FROM t;").trim(), "7");
    node.stop();
    node.check_log_matches_database(db);
}

/// Journal modes MEMORY and OFF show no commit point to a mount that leaves locks to the
/// kernel: the first write of a transaction is refused, before anything changed.
#[test]
fn journal_modes_without_a_journal_file_are_refused_with_a_clear_log_line() {
    let mut node = Node::primary();
    for mode in ["MEMORY", "OFF"] {
        let db = format!("{}.db", mode.to_lowercase());
        node.sqlite(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
        let err = node
            .sqlite_result(
                &db,
                &format!("PRAGMA journal_mode={mode}; INSERT INTO t VALUES (2);"),
            )
            .unwrap_err();
        assert!(!err.is_empty(), "{mode}: the write must fail");
        assert_eq!(
            node.sqlite(&db, "SELECT sum(x) FROM t;").trim(),
            "1",
            "{mode}"
        );
    }
    assert!(
        node.daemon_log()
            .contains("journal modes MEMORY and OFF are not supported"),
        "the daemon must say why:\n{}",
        node.daemon_log()
    );
    node.stop();
    node.check_log_matches_database("memory.db");
    node.check_log_matches_database("off.db");
}

#[test]
fn fsync_of_files_and_of_the_directory_succeeds_and_the_listing_stays_current() {
    let node = Node::primary();
    // SQLite's fsyncs of the journal, the database and the directory (DELETE mode) are answered
    // by the kernel once the mount has declined the first of each.
    node.sqlite(
        "f.db",
        "PRAGMA journal_mode=DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);",
    );
    for _ in 0..2 {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(node.path("f.db"))
            .unwrap();
        file.sync_all().unwrap();
        file.sync_data().unwrap();
        let dir = std::fs::File::open(&node.mnt).unwrap();
        dir.sync_all().unwrap();
        dir.sync_data().unwrap();
    }
    let listing = |node: &Node| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&node.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(&node), ["f.db", "f.db-pos"]);
    node.sqlite("g.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    assert_eq!(listing(&node), ["f.db", "f.db-pos", "g.db", "g.db-pos"]);
    let conn = rusqlite::Connection::open(node.path("g.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(
        listing(&node),
        ["f.db", "f.db-pos", "g.db", "g.db-pos", "g.db-shm", "g.db-wal"]
    );
    drop(conn);
    assert_eq!(listing(&node), ["f.db", "f.db-pos", "g.db", "g.db-pos"]);
    assert_eq!(node.sqlite("f.db", "SELECT count(*) FROM t;").trim(), "2");
}

#[test]
fn a_journal_or_wal_created_after_a_lookup_found_none_is_seen_and_a_rollback_reads_the_journal() {
    let node = Node::primary();
    node.sqlite("n.db", "PRAGMA journal_mode=DELETE; CREATE TABLE t(x);");
    // The kernel may now cache that neither name exists.
    assert!(!node.path("n.db-journal").exists());
    assert!(!node.path("n.db-wal").exists());
    let conn = rusqlite::Connection::open(node.path("n.db")).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
        .unwrap();
    assert!(node.path("n.db-journal").exists());
    conn.execute_batch("COMMIT;").unwrap();
    assert!(!node.path("n.db-journal").exists());
    // A rollback reads the journal back (the journal bypasses the page cache).
    conn.execute_batch("BEGIN; INSERT INTO t VALUES (3); INSERT INTO t SELECT x FROM t; ROLLBACK;")
        .unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert!(node.path("n.db-wal").exists());
    drop(conn);
    assert!(!node.path("n.db-wal").exists());
    assert_eq!(node.sqlite("n.db", "SELECT count(*) FROM t;").trim(), "2");
}

#[test]
fn sigterm_unmounts_even_while_an_application_holds_a_file_open() {
    let mut node = Node::primary();
    node.sqlite("held.db", "CREATE TABLE t(v); INSERT INTO t VALUES (1);");
    let held = std::fs::File::open(node.path("held.db")).unwrap();
    // `stop` checks a clean exit and that the mount is gone.
    node.stop();
    assert!(
        node.daemon_log()
            .contains("files are still open in the mount: detaching it"),
        "{}",
        node.daemon_log()
    );
    drop(held);
}

#[test]
fn an_unmount_from_outside_stops_the_daemon_with_an_error() {
    let mut node = Node::primary();
    node.sqlite("u.db", "CREATE TABLE t(v); INSERT INTO t VALUES (1);");
    let dir = std::ffi::CString::new(node.mnt.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(dir.as_ptr(), 0) }, 0, "umount");
    let status = node.wait_for_exit(std::time::Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", node.daemon_log());
    assert!(
        node.daemon_log()
            .contains("the mount was unmounted by something other than ltxd"),
        "{}",
        node.daemon_log()
    );
    // The log kept the commits: a restart serves them.
    node.start();
    assert_eq!(node.sqlite("u.db", "SELECT count(*) FROM t;").trim(), "1");
}
