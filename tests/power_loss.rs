//! Power-loss tests: the real `ltxd` binary with its data directory on lossyfs
//! (`tools/lossyfs`), which forgets every write not yet made durable when the power is cut. A
//! trap cuts the power just before the n-th operation of some kind (an fsync under `segments/`,
//! a rename under `snapshots/`, a write to the sled index, ...); the writer is then killed, the
//! file system keeps only what was durable, and the node restarts from that.
//!
//! After every crash: `ltxd log verify` passes, no acknowledged transaction is missing, the
//! database has the log's checksum, and a replica's log is a prefix of its primary's. Tens of
//! crash points by default; set `LTXD_LONG=1` for more than 1,000. See docs/power-loss.md.

mod common;
mod power;

use std::process::Command;

use common::{spawn_write_load, Node};
use ltxd::database::checksum_file;
use ltxd::log::{Log, ReadFrom};
use ltxd::ltx::{Checksum, TxId};
use ltxd_lossyfs::{Action, Mounted, Op, Trap};

use power::{crash_points, wait_for_power_cut, Rig, Scenario, XorShift};

/// Where the power is cut while `ltxd debug write-load` appends, compacts, snapshots and
/// retains.
const LOG_SCENARIOS: &[Scenario] = &[
    Scenario::new("append fdatasync", &[Op::Fsync], "/segments/", 80),
    Scenario::new("append write", &[Op::Write], "/segments/0", 300),
    Scenario::new(
        "segment creation",
        &[Op::Create, Op::Fsyncdir],
        "/segments",
        12,
    ),
    Scenario::new(
        "compaction rewrite",
        &[Op::Write, Op::Fsync],
        "/segments/.ltxd-",
        40,
    ),
    Scenario::new("compaction rename", &[Op::Rename], "/segments/", 8),
    Scenario::new(
        "snapshot",
        &[Op::Write, Op::Fsync, Op::Rename, Op::Fsyncdir],
        "/snapshots",
        30,
    ),
    Scenario::new("retention", &[Op::Unlink, Op::Fsyncdir], "/segments", 12),
    Scenario::new(
        "index writes",
        &[Op::Write, Op::Fsync, Op::Rename],
        "/index",
        60,
    ),
    // The index is deleted first, so that the writer rebuilds it as it opens the log.
    Scenario::new(
        "index rebuild",
        &[Op::Write, Op::Fsync, Op::Rename],
        "/index",
        20,
    ),
    Scenario::new("anything", &[], "", 3000),
];

/// After a power cut: the log in `data` verifies, holds every acknowledged append, and restores
/// a database with its head's checksum.
fn check_log(
    data: &std::path::Path,
    scratch: &std::path::Path,
    acks: &[(TxId, Checksum)],
    label: &str,
) {
    let verify = Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args(["log", "verify", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{label}: ltxd log verify failed: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let log = Log::open(data).unwrap();
    let Ok(dblog) = log.existing("load.db") else {
        assert!(acks.is_empty(), "{label}: the log lost its database");
        return;
    };
    common::assert_acknowledged_kept(&dblog, acks, scratch, label);
}

#[test]
fn power_loss_during_log_writes_loses_no_acknowledged_append() {
    let rig = Rig::new("log");
    let points = crash_points(LOG_SCENARIOS.len() * 3, 1200);
    let mut rng = XorShift(0x5eed_1055);
    let mut total_acks = 0;
    for point in 0..points {
        let scenario = &LOG_SCENARIOS[point % LOG_SCENARIOS.len()];
        let trap = scenario.trap(&mut rng);
        let label = format!("crash point {point} ({}, n={})", scenario.name, trap.nth);
        if scenario.name == "index rebuild" {
            let _ = std::fs::remove_dir_all(rig.live().join("data/index"));
        }
        let mounted = rig.mount(Some(trap));
        let data = mounted.mountpoint().join("data");
        let (mut writer, reader) = spawn_write_load(&data, point as u64, 3 + rng.next() % 10);
        wait_for_power_cut(&mounted, &mut writer.child, &label);
        drop(writer);
        let acks = reader.join().unwrap();
        total_acks += acks.len();
        eprintln!("{label}: {}", mounted.power_cut().unwrap_or_default());
        mounted.unmount().unwrap();
        // The node restarts on what was durable.
        check_log(&rig.live().join("data"), &rig.scratch(), &acks, &label);
    }
    assert!(
        total_acks > points,
        "the writer barely ran: {total_acks} acks in {points} crash points"
    );
}

/// A process that crashed (SIGKILL: the page cache keeps its writes) left files and names its
/// successor must make durable before it builds on them: a crash between creating a segment and
/// syncing its directory, then appends by the next process, then a power loss.
#[test]
fn a_process_crash_then_a_power_loss_loses_no_acknowledged_append() {
    let rig = Rig::new("kill");
    let points = crash_points(12, 200);
    let mut rng = XorShift(0x5eed_3055);
    for point in 0..points {
        let kill = Trap {
            ops: vec![Op::Fsyncdir],
            path_contains: "/segments".into(),
            nth: 1 + rng.next() % 4,
            action: Action::KillCaller,
        };
        let label = format!("crash point {point} (killed at fsyncdir #{})", kill.nth);
        let mounted = rig.mount(Some(kill));
        let data = mounted.mountpoint().join("data");
        let (mut first, first_reader) = spawn_write_load(&data, point as u64, 2 + rng.next() % 4);
        let start = std::time::Instant::now();
        while first.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(120),
                "{label}: the kill trap never fired"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(
            mounted.killed().is_some(),
            "{label}: the writer exited by itself"
        );
        drop(first);
        let mut acks = first_reader.join().unwrap();

        let cut = Trap {
            ops: vec![Op::Fsync],
            path_contains: "/segments/".into(),
            nth: 1 + rng.next() % 10,
            action: Action::CutPower,
        };
        let label = format!("{label}, then power cut at fsync #{}", cut.nth);
        mounted.arm(cut);
        let (mut second, second_reader) = spawn_write_load(&data, point as u64 + 1000, 1000);
        wait_for_power_cut(&mounted, &mut second.child, &label);
        drop(second);
        acks.extend(second_reader.join().unwrap());
        eprintln!("{label}: {}", mounted.power_cut().unwrap_or_default());
        mounted.unmount().unwrap();
        check_log(&rig.live().join("data"), &rig.scratch(), &acks, &label);
    }
}

/// Where the power is cut on a primary taking commits through its mount.
const PRIMARY_SCENARIOS: &[Scenario] = &[
    Scenario::new("commit fdatasync", &[Op::Fsync], "/segments/", 40),
    Scenario::new("database write", &[Op::Write], "/database", 60),
    Scenario::new("commit write", &[Op::Write], "/segments/", 60),
    Scenario::new("anything", &[], "", 600),
];

/// Where the power is cut on a primary in WAL mode. The first is the regression test of a
/// commit acknowledged although its log append failed (the capture at the WAL write lock's
/// unlock, whose failure SQLite ignores).
const PRIMARY_WAL_SCENARIOS: &[Scenario] = &[
    Scenario::new("commit write", &[Op::Write], "/segments/", 60),
    Scenario::new("WAL write", &[Op::Write], "/wal", 60),
    Scenario::new("commit fdatasync", &[Op::Fsync], "/segments/", 40),
    Scenario::new("anything", &[], "", 600),
];

/// Where the power is cut on a replica applying its primary's commits.
const REPLICA_SCENARIOS: &[Scenario] = &[
    Scenario::new("replica log fdatasync", &[Op::Fsync], "/segments/", 40),
    Scenario::new("replica apply", &[Op::Write], "/database", 60),
    Scenario::new("anything", &[], "", 600),
];

/// Where the power is cut on a new replica (an empty data directory) joining: adopting the
/// cluster ID, storing the epoch, and applying its first snapshot.
const JOIN_SCENARIOS: &[Scenario] = &[
    Scenario::new("cluster ID and epoch", &[Op::Rename], "", 2).before_start(),
    Scenario::new(
        "first snapshot",
        &[Op::Write, Op::Fsync, Op::Rename],
        "/dbs/",
        30,
    ),
    Scenario::new("anything while joining", &[], "", 200),
];

/// A node's lossyfs rig, and the data directory in it the node uses.
struct Machine {
    rig: Rig,
    node: Node,
}

impl Machine {
    /// Moves `node`'s data directory onto a lossyfs rig. The node must be stopped.
    fn new(name: &str, mut node: Node) -> Machine {
        let rig = Rig::new(name);
        let lossy = rig.mountpoint().join("data");
        let old = node.data.display().to_string();
        node.edit_config(|text| text.replace(&old, &lossy.display().to_string()));
        node.data = lossy;
        Machine { rig, node }
    }

    /// The data directory after an unmount.
    fn live_data(&self) -> std::path::PathBuf {
        self.rig.live().join("data")
    }
}

/// Stops a node that has power (SIGTERM); kills one that lost it.
fn halt(node: &mut Node, powered: bool) {
    if powered {
        node.stop();
    } else {
        node.kill();
        detach(&node.mnt);
    }
}

/// Detaches the dead mount a killed node left, so that its next start waits for the new one
/// (the kernel may answer a `stat` of the dead mount from its cache for a while).
fn detach(dir: &std::path::Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let name = dir.display().to_string();
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(name.as_str()))
    {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn power_loss_on_a_primary_or_its_replica_loses_no_acknowledged_commit() {
    let mut primary = Node::primary();
    let mut replica = Node::replica_of(&primary);
    replica.stop();
    primary.stop();
    let mut primary = Machine::new("primary", primary);
    let mut replica = Machine::new("replica", replica);
    let points = crash_points(8, 80);
    let mut rng = XorShift(0x5eed_2055);
    let mut acked: Vec<i64> = Vec::new();
    let mut next = 0i64;
    for point in 0..points {
        let target_primary = point % 3 == 0;
        let joining = point % 3 == 2;
        // Every other round of three crash points runs in WAL mode.
        let wal = (point / 3) % 2 == 1;
        let (scenarios, round) = match (target_primary, joining, wal) {
            (true, _, false) => (PRIMARY_SCENARIOS, point / 6),
            (true, _, true) => (PRIMARY_WAL_SCENARIOS, point / 6),
            (false, true, _) => (JOIN_SCENARIOS, point / 3),
            (false, false, _) => (REPLICA_SCENARIOS, point / 3),
        };
        let scenario = &scenarios[round % scenarios.len()];
        let trap = scenario.trap(&mut rng);
        let who = if target_primary { "primary" } else { "replica" };
        let mode = if wal { "WAL" } else { "DELETE" };
        let label = format!(
            "crash point {point} ({who}, {mode}: {}, n={})",
            scenario.name, trap.nth
        );
        if joining {
            std::fs::remove_dir_all(replica.rig.live().join("data")).ok();
        }
        let plossy = primary.rig.mount(None);
        let rlossy = replica.rig.mount(None);
        let target: &Mounted = if target_primary { &plossy } else { &rlossy };
        primary.node.start();
        if scenario.before_start {
            target.arm(trap.clone());
        }
        replica.node.start();

        // Every commit acknowledged before is still there, on the restarted primary.
        let present = rows(&primary.node);
        let lost: Vec<&i64> = acked.iter().filter(|i| !present.contains(i)).collect();
        assert!(lost.is_empty(), "{label}: acknowledged rows lost: {lost:?}");

        // Commit until the power goes. A commit in flight on a primary that loses power waits
        // in its mount until the node is killed, so the commits run on a thread of their own.
        let conn = rusqlite::Connection::open(primary.node.path("app.db")).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY)", [])
            .unwrap();
        conn.pragma_update(None, "journal_mode", mode).unwrap();
        if !scenario.before_start {
            target.arm(trap.clone());
        }
        let probe = target.probe();
        let first = next;
        let writer = std::thread::spawn(move || {
            let (mut acks, mut i) = (Vec::new(), first);
            while !probe.is_cut() {
                let done = conn.execute("INSERT INTO t VALUES (?1)", [i]);
                // A commit that returns once the primary has lost power does not count: the
                // application would have lost power with it.
                let after_cut = target_primary && probe.is_cut();
                match done {
                    Ok(_) if !after_cut => acks.push(i),
                    Ok(_) => {}
                    Err(err) if !target_primary => {
                        return Err(format!("a commit failed on a primary with power: {err}"));
                    }
                    Err(_) => {}
                }
                i += 1;
            }
            Ok((acks, i))
        });
        let start = std::time::Instant::now();
        while target.power_cut().is_none() && !writer.is_finished() {
            if start.elapsed() > std::time::Duration::from_secs(120) {
                target.power_off("the trap never fired");
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if target_primary {
            halt(&mut primary.node, false);
        }
        let (new_acks, after) = writer
            .join()
            .unwrap()
            .unwrap_or_else(|err| panic!("{label}: {err}"));
        let cut = target.power_cut().unwrap_or_default();
        assert_ne!(
            cut,
            "the trap never fired",
            "{label}: {:?}",
            target.report().counts
        );
        acked.extend(new_acks);
        next = after;
        eprintln!("{label}: {cut}");
        halt(&mut replica.node, target_primary);
        halt(&mut primary.node, !target_primary);
        plossy.unmount().unwrap();
        rlossy.unmount().unwrap();

        // The node that stopped cleanly has a database file at its log's head.
        let clean = if target_primary { &replica } else { &primary };
        check_database_matches_log(&clean.live_data(), &label);

        // What survived verifies, and the replica's log is a prefix of the primary's.
        for machine in [&primary, &replica] {
            let data = machine.live_data();
            if !data.join("dbs").exists() {
                continue;
            }
            let verify = std::process::Command::new(env!("CARGO_BIN_EXE_ltxd"))
                .args(["log", "verify", "--data-dir"])
                .arg(&data)
                .output()
                .unwrap();
            assert!(
                verify.status.success(),
                "{label}: ltxd log verify failed: {}",
                String::from_utf8_lossy(&verify.stdout)
            );
        }
        check_prefix(&primary.live_data(), &replica.live_data(), &label);
    }
}

/// The rows of table `t` on `node` (none before the table exists).
fn rows(node: &Node) -> Vec<i64> {
    match node.sqlite_result("app.db", "SELECT i FROM t;") {
        Ok(out) => out.lines().filter_map(|l| l.trim().parse().ok()).collect(),
        Err(err) if err.contains("no such table") => Vec::new(),
        Err(err) => panic!("{err}\n{}", node.daemon_log()),
    }
}

/// The database file in the data directory `data` has its log's head checksum.
fn check_database_matches_log(data: &std::path::Path, label: &str) {
    let Ok(log) = Log::open(data) else {
        panic!("{label}: the log in {} does not open", data.display());
    };
    let Ok(db) = log.existing("app.db") else {
        return;
    };
    let head = db.head();
    if head.txid == TxId::ZERO {
        return;
    }
    let file = db.layout().database_file();
    assert_eq!(
        checksum_file(&file).unwrap().checksum,
        head.post_apply_checksum,
        "{label}: {} differs from its log's head {head}",
        file.display()
    );
}

/// The replica's log ends at a position of the primary's history.
fn check_prefix(primary: &std::path::Path, replica: &std::path::Path, label: &str) {
    let Ok(rlog) = Log::open(replica) else {
        panic!("{label}: the replica's log does not open");
    };
    let Ok(rdb) = rlog.existing("app.db") else {
        return;
    };
    let plog = Log::open(primary).unwrap();
    let pdb = plog.existing("app.db").unwrap();
    let head = rdb.head();
    assert!(
        head.txid <= pdb.head().txid,
        "{label}: the replica's head {head} is past the primary's {}",
        pdb.head()
    );
    assert_ne!(
        pdb.read_from(head),
        ReadFrom::Diverged,
        "{label}: the replica's head {head} is not in the primary's history"
    );
}
