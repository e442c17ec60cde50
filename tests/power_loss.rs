//! Power-loss tests: the real `ltxd` binary with its data directory on lossyfs
//! (`tools/lossyfs`), which forgets every write not yet made durable when the power is cut. A
//! trap cuts the power just before the n-th operation of some kind (an fsync under `segments/`,
//! a rename under `snapshots/`, a write to the sled index, ...); the writer is then killed, the
//! file system keeps only what was durable, and the node restarts from that.
//!
//! After every crash: `ltxd log verify` passes, no acknowledged transaction is missing, and the
//! database the log restores has the log's checksum. Tens of crash points by default; set
//! `LTXD_LONG=1` for more than 1,000. See docs/power-loss.md.

mod power;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use ltxd::database::checksum_file;
use ltxd::log::Log;
use ltxd::ltx::{Checksum, TxId};
use ltxd_lossyfs::Op;

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
    Scenario::new("index", &[Op::Write, Op::Fsync, Op::Rename], "/index", 60),
    Scenario::new("anything", &[], "", 3000),
];

/// A `write-load` process, killed when dropped.
struct Writer {
    child: Child,
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
        let mounted = rig.mount(Some(trap));
        let data = mounted.mountpoint().join("data");
        let mut writer = Writer {
            child: Command::new(env!("CARGO_BIN_EXE_ltxd"))
                .args(["debug", "write-load", "--count", "100000000"])
                .arg("--data-dir")
                .arg(&data)
                .args(["--seed", &point.to_string()])
                .args(["--maintain-every", &(3 + rng.next() % 10).to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        };
        let stdout = writer.child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| {
                    let mut words = line.strip_prefix("ack ")?.split(' ');
                    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
                })
                .collect::<Vec<(TxId, Checksum)>>()
        });
        wait_for_power_cut(&mounted, &mut writer.child, &label);
        drop(writer);
        let acks = reader.join().unwrap();
        total_acks += acks.len();
        mounted.unmount().unwrap();

        // The node restarts on what was durable.
        let data = rig.live().join("data");
        let verify = Command::new(env!("CARGO_BIN_EXE_ltxd"))
            .args(["log", "verify", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{label}: ltxd log verify failed: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
        let log = Log::open(&data).unwrap();
        let Ok(dblog) = log.existing("load.db") else {
            assert!(acks.is_empty(), "{label}: the log lost its database");
            continue;
        };
        let head = dblog.head();
        if let Some(&(last_txid, last_checksum)) = acks.last() {
            assert!(
                head.txid >= last_txid,
                "{label}: head {head} lost acknowledged TXID {last_txid}"
            );
            if head.txid == last_txid {
                assert_eq!(head.post_apply_checksum, last_checksum, "{label}");
            }
        }
        let records = dblog.records();
        for (txid, checksum) in &acks {
            if let Some(r) = records.iter().find(|r| r.max_txid == *txid) {
                assert_eq!(r.post_apply_checksum, *checksum, "{label}: TXID {txid}");
            }
        }
        if head.txid > TxId::ZERO {
            let restored = rig.scratch().join("restored.db");
            ltxd::log::restore(&dblog, head.txid, &restored).unwrap();
            assert_eq!(
                checksum_file(&restored).unwrap().checksum,
                head.post_apply_checksum,
                "{label}: the restored database differs from the log"
            );
        }
    }
    assert!(
        total_acks > points,
        "the writer barely ran: {total_acks} acks in {points} crash points"
    );
}
