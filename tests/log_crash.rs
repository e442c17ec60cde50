//! A writer killed with SIGKILL at random points, during appends and during compactions,
//! snapshots and retention, never loses an acknowledged append or breaks the chain. 20 trials by
//! default; set `LTXD_LONG=1` for 100.

mod common;

use std::path::Path;
use std::time::Duration;

use ltxd::log::Log;
use ltxd::ltx::{Checksum, TxId};

/// Runs one writer and kills it after `delay`; returns the `(TXID, checksum)` it acknowledged.
fn run_and_kill(
    data: &Path,
    seed: u64,
    maintain_every: u64,
    delay: Duration,
) -> Vec<(TxId, Checksum)> {
    let (writer, reader) = common::spawn_write_load(data, seed, maintain_every);
    std::thread::sleep(delay);
    drop(writer);
    reader.join().unwrap()
}

#[test]
fn sigkill_during_appends_and_compactions_loses_no_acknowledged_append() {
    let trials = if std::env::var_os("LTXD_LONG").is_some() {
        100
    } else {
        20
    };
    let dir = tempfile::tempdir().unwrap();
    let mut rng: u64 = 0x5eed;
    let mut total_acks = 0;
    for trial in 0..trials {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(40 + rng % 400);
        let acks = run_and_kill(dir.path(), trial, 3 + rng % 20, delay);
        total_acks += acks.len();

        let log = Log::open(dir.path()).unwrap();
        let dblog = log.database("load.db").unwrap();
        let verification = dblog.verify().unwrap();
        assert!(
            verification.faults.is_empty(),
            "trial {trial}: {:?}",
            verification.faults
        );
        common::assert_acknowledged_kept(&dblog, &acks, dir.path(), &format!("trial {trial}"));
    }
    assert!(
        total_acks > trials as usize * 5,
        "the writer barely ran: {total_acks} acks"
    );
}
