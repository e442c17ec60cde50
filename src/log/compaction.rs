//! Compaction: merging old records of sealed segments into time windows, and taking snapshots.

use super::retention::age;
use super::segment::{copy_record, scan, write_record, Record, Tail};
use super::{DatabaseLog, LogError, Policy};
use crate::database::{compact_sources, DatabaseError};
use crate::durable;
use crate::ltx::TxId;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// Segments rewritten.
    pub segments: usize,
    /// Records before and after.
    pub records_before: usize,
    /// Records after.
    pub records_after: usize,
}

impl DatabaseLog {
    /// Merges the old records of every sealed segment by time level. A record the slowest
    /// subscriber has not yet read is never merged, so no connected replica loses its place.
    pub fn compact_levels(&self, policy: &Policy, now_ms: i64) -> Result<Compacted, LogError> {
        let limit = self
            .slowest_subscriber()
            .map_or(self.head().txid, |p| p.txid);
        let (sealed, records) = {
            let state = self.state();
            let active = state.active.as_ref().map(|a| a.id);
            let sealed: Vec<TxId> = state
                .segments
                .keys()
                .copied()
                .filter(|&id| Some(id) != active)
                .collect();
            (sealed, state.records.clone())
        };
        let mut report = Compacted::default();
        for id in sealed {
            let in_segment: Vec<Record> = records
                .iter()
                .filter(|r| r.segment == id)
                .cloned()
                .collect();
            let groups = group_by_window(&in_segment, policy, now_ms, limit);
            if groups.iter().all(|g| g.len() < 2) {
                continue;
            }
            let after = self.rewrite_segment(id, &groups)?;
            report.segments += 1;
            report.records_before += in_segment.len();
            report.records_after += after;
        }
        Ok(report)
    }

    /// Rewrites sealed segment `id` with each group of records merged into one, replacing the
    /// file atomically, and returns how many records it now holds.
    fn rewrite_segment(&self, id: TxId, groups: &[Vec<Record>]) -> Result<usize, LogError> {
        let path = self.layout().segment(id);
        durable::write_file_atomically(&path, |file| -> Result<(), LogError> {
            for group in groups {
                match group.as_slice() {
                    [one] => copy_record(&path, one, file)?,
                    _ => {
                        let format = group[0].format;
                        let sources: Vec<_> = group.iter().map(|r| self.source(r)).collect();
                        let scratch = self.layout().segments_dir();
                        write_record(file, format, |w| {
                            compact_sources(&sources, w, format, 0, &scratch)
                                .map(|_| ())
                                .map_err(LogError::from)
                        })?;
                    }
                }
            }
            Ok(())
        })?;
        let rescanned = scan(&path, id, 0, Tail::Exact)?;
        if let Some(reason) = rescanned.stop {
            return Err(LogError::Corrupt { path, reason });
        }
        let count = rescanned.records.len();
        self.replace_segment_records(id, rescanned.records, rescanned.valid_len)?;
        Ok(count)
    }

    /// Takes a snapshot at the head: the newest snapshot (or the chain's first record) compacted
    /// with every record after it. Returns `None` when the newest snapshot is already the head.
    pub fn create_snapshot(&self) -> Result<Option<Record>, LogError> {
        let (base, after) = {
            let state = self.state();
            let base = state
                .snapshots
                .iter()
                .chain(state.records.iter().filter(|r| r.is_snapshot()))
                .max_by_key(|r| r.max_txid)
                .cloned();
            let Some(base) = base else { return Ok(None) };
            let after: Vec<Record> = state
                .records
                .iter()
                .filter(|r| r.min_txid > base.max_txid)
                .cloned()
                .collect();
            (base, after)
        };
        let Some(last) = after.last() else {
            return Ok(None);
        };
        let max = last.max_txid;
        let path = self.layout().snapshot(max);
        let format = last.format;
        let sources: Vec<_> = std::iter::once(&base)
            .chain(&after)
            .map(|r| self.source(r))
            .collect();
        let scratch = self.layout().snapshots_dir();
        durable::write_file_atomically(&path, |file| {
            write_record(file, format, |w| {
                compact_sources(&sources, w, format, 0, &scratch)
                    .map(|_| ())
                    .map_err(|e: DatabaseError| LogError::from(e))
            })
        })?;
        let rescanned = scan(&path, max, 0, Tail::Exact)?;
        let record = match (rescanned.stop, rescanned.records.as_slice()) {
            (None, [one]) => one.clone(),
            (stop, _) => {
                return Err(LogError::Corrupt {
                    path,
                    reason: stop.unwrap_or_else(|| "snapshot file must hold one record".into()),
                })
            }
        };
        self.add_snapshot(record.clone())?;
        Ok(Some(record))
    }

    /// A snapshot of the database at the head, for a replica that needs one: the newest snapshot
    /// when nothing follows it, otherwise a new one (see [`DatabaseLog::create_snapshot`]).
    /// `None` for an empty log.
    pub fn snapshot_at_head(&self) -> Result<Option<Record>, LogError> {
        if let Some(created) = self.create_snapshot()? {
            return Ok(Some(created));
        }
        let state = self.state();
        Ok(state
            .snapshots
            .iter()
            .chain(state.records.iter().filter(|r| r.is_snapshot()))
            .max_by_key(|r| r.max_txid)
            .filter(|r| r.max_txid == state.head().txid)
            .cloned())
    }

    /// True when a snapshot is due under `policy`.
    pub fn snapshot_due(&self, policy: &Policy, now_ms: i64) -> bool {
        let state = self.state();
        let newest = state
            .snapshots
            .iter()
            .chain(state.records.iter().filter(|r| r.is_snapshot()))
            .max_by_key(|r| r.max_txid);
        let Some(newest) = newest else { return false };
        let after: Vec<&Record> = state
            .records
            .iter()
            .filter(|r| r.min_txid > newest.max_txid)
            .collect();
        let bytes: u64 = after.iter().map(|r| r.len).sum();
        !after.is_empty()
            && (bytes >= policy.snapshot_after_bytes
                || age(newest, now_ms) >= policy.snapshot_interval)
    }
}

/// Splits a segment's records into runs to merge: consecutive records in the same aligned
/// window of their level. Records younger than every level, or not yet read by the slowest
/// subscriber, stay alone.
fn group_by_window(
    records: &[Record],
    policy: &Policy,
    now_ms: i64,
    limit: TxId,
) -> Vec<Vec<Record>> {
    let key = |r: &Record| -> Option<(u128, i64)> {
        if r.max_txid > limit || r.is_snapshot() {
            return None;
        }
        let window = policy.window_for(age(r, now_ms))?.as_millis().max(1);
        Some((window, r.timestamp.div_euclid(window as i64)))
    };
    let mut groups: Vec<Vec<Record>> = Vec::new();
    let mut last_key = None;
    for record in records {
        let k = key(record);
        match (groups.last_mut(), k) {
            (Some(group), Some(k)) if last_key == Some(k) => group.push(record.clone()),
            _ => groups.push(vec![record.clone()]),
        }
        last_key = k;
    }
    groups
}
