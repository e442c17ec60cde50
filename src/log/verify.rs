//! Checking a database's log in full: every record of every segment and snapshot, and the chain.

use super::segment::{scan, Record, Tail};
use super::DatabaseLog;

/// The result of verifying a log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Records verified in the chain.
    pub records: usize,
    /// Snapshot files verified.
    pub snapshots: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Every fault found; empty when the log is sound.
    pub faults: Vec<String>,
}

impl DatabaseLog {
    /// Re-reads and verifies every segment and snapshot from disk, and checks that the records
    /// form one unbroken chain: consecutive TXIDs, each pre-apply checksum equal to the previous
    /// post-apply checksum. Nothing held in memory or in the index is trusted.
    pub fn verify(&self) -> std::io::Result<Verification> {
        let (segments, snapshots) = {
            let state = self.state();
            let segments: Vec<(crate::ltx::TxId, u64)> =
                state.segments.iter().map(|(&k, &v)| (k, v)).collect();
            (segments, state.snapshots.clone())
        };
        let mut report = Verification::default();
        let mut prev: Option<Record> = None;
        let last = segments.last().map(|&(id, _)| id);
        for (id, len) in segments {
            let path = self.layout().segment(id);
            let tail = if Some(id) == last {
                Tail::Preallocated
            } else {
                Tail::Exact
            };
            let scanned = scan(&path, id, 0, tail)?;
            if let Some(reason) = scanned.stop {
                report.faults.push(format!("{}: {reason}", path.display()));
            }
            if scanned.valid_len < len {
                report.faults.push(format!(
                    "{}: {} bytes valid of {len}",
                    path.display(),
                    scanned.valid_len
                ));
            }
            for record in scanned.records {
                if let Some(p) = &prev {
                    if p.max_txid.next() != Some(record.min_txid) {
                        report.faults.push(format!(
                            "TXID gap: {} is followed by {}",
                            p.max_txid, record.min_txid
                        ));
                    } else if p.post_apply_checksum != record.pre_apply_checksum {
                        report.faults.push(format!(
                            "checksum chain broken at TXID {}: pre-apply {} after post-apply {}",
                            record.min_txid, record.pre_apply_checksum, p.post_apply_checksum
                        ));
                    }
                }
                report.records += 1;
                report.bytes += record.end() - record.offset;
                prev = Some(record);
            }
        }
        for snapshot in snapshots {
            let path = self.layout().snapshot(snapshot.segment);
            let scanned = scan(&path, snapshot.segment, 0, Tail::Exact)?;
            match (scanned.stop, scanned.records.as_slice()) {
                (None, [one]) if one.post_apply_checksum == snapshot.post_apply_checksum => {
                    report.snapshots += 1;
                    report.bytes += scanned.valid_len;
                }
                (stop, _) => report.faults.push(format!(
                    "{}: {}",
                    path.display(),
                    stop.unwrap_or_else(|| "not the snapshot the log recorded".into())
                )),
            }
        }
        Ok(report)
    }
}
