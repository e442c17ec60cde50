//! Retention: dropping old segments and snapshots by age, by total size, and only past the
//! slowest subscriber unless the size cap forces it.

use std::time::Duration;

use super::index::Kind;
use super::segment::Record;
use super::{DatabaseLog, LogError, Policy};
use crate::ltx::TxId;

/// What one retention pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Records deleted with them.
    pub records_deleted: usize,
    /// Snapshot files deleted.
    pub snapshots_deleted: usize,
    /// True when the size cap dropped records a connected subscriber had not read.
    pub forced_by_size: bool,
}

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintained {
    /// Level compaction.
    pub compacted: super::Compacted,
    /// The snapshot taken, if one was due.
    pub snapshot: Option<TxId>,
    /// Retention.
    pub retained: Retained,
}

impl DatabaseLog {
    /// Compacts by level, takes a snapshot if one is due, then enforces retention.
    pub fn maintain(&self, policy: &Policy, now_ms: i64) -> Result<Maintained, LogError> {
        self.seal_active_segment_older_than(policy.segment_max_age)?;
        let compacted = self.compact_levels(policy, now_ms)?;
        let snapshot = if self.snapshot_due(policy, now_ms) {
            self.create_snapshot()?.map(|r| r.max_txid)
        } else {
            None
        };
        let retained = self.enforce_retention(policy, now_ms)?;
        Ok(Maintained {
            compacted,
            snapshot,
            retained,
        })
    }

    /// Drops sealed segments whose records are all older than the retention period, covered by
    /// the newest snapshot and read by every subscriber; the size cap may override the
    /// subscribers. Snapshots older than the retention period, or that the chain no longer
    /// continues, are dropped too; the newest snapshot always stays.
    pub fn enforce_retention(&self, policy: &Policy, now_ms: i64) -> Result<Retained, LogError> {
        let subscriber = self.slowest_subscriber().map_or(TxId(u64::MAX), |p| p.txid);
        let mut report = Retained::default();
        let (dead_segments, dead_records, dead_snapshots) = {
            let mut state = self.state();
            let Some(base) = state.snapshots.last().cloned() else {
                return Ok(report);
            };
            let old_enough = now_ms - policy.retention.as_millis() as i64;
            let age_cut = state
                .records
                .iter()
                .filter(|r| r.timestamp < old_enough)
                .map(|r| r.max_txid)
                .max()
                .unwrap_or(TxId::ZERO);
            let mut cut = base.max_txid.min(age_cut).min(subscriber);
            let active = state.active.as_ref().map(|a| a.id);
            let sealed: Vec<(TxId, TxId)> = state
                .segments
                .keys()
                .filter(|&&id| Some(id) != active)
                .filter_map(|&id| {
                    state
                        .records
                        .iter()
                        .rev()
                        .find(|r| r.segment == id)
                        .map(|r| (id, r.max_txid))
                })
                .collect();
            if let Some(max_bytes) = policy.max_bytes {
                let total: u64 = state.segments.values().sum::<u64>()
                    + state.snapshots.iter().map(|r| r.end()).sum::<u64>();
                let mut excess = total.saturating_sub(max_bytes);
                let mut size_cut = TxId::ZERO;
                for &(id, max) in &sealed {
                    if excess == 0 || max > base.max_txid {
                        break;
                    }
                    excess = excess.saturating_sub(state.segments.get(&id).copied().unwrap_or(0));
                    size_cut = max;
                }
                if size_cut > cut {
                    report.forced_by_size = size_cut > subscriber;
                    cut = size_cut;
                }
            }
            let dead_segments: Vec<TxId> = sealed
                .iter()
                .take_while(|(_, max)| *max <= cut)
                .map(|(id, _)| *id)
                .collect();
            let dead_records: Vec<Record> = state
                .records
                .iter()
                .filter(|r| dead_segments.contains(&r.segment))
                .cloned()
                .collect();
            state
                .records
                .retain(|r| !dead_segments.contains(&r.segment));
            for id in &dead_segments {
                state.segments.remove(id);
            }
            let chain_start = state.records.first().map_or(TxId(u64::MAX), |r| r.min_txid);
            let dead_snapshots: Vec<Record> = state
                .snapshots
                .iter()
                .filter(|s| s.max_txid != base.max_txid)
                .filter(|s| s.max_txid.next() < Some(chain_start) || s.timestamp < old_enough)
                .cloned()
                .collect();
            state.snapshots.retain(|s| !dead_snapshots.contains(s));
            (dead_segments, dead_records, dead_snapshots)
        };
        self.remove_log_files(dead_segments.iter().copied(), &dead_snapshots)?;
        self.update_index(Kind::Record, &[], &dead_records);
        self.update_index(Kind::Snapshot, &[], &dead_snapshots);
        report.segments_deleted = dead_segments.len();
        report.records_deleted = dead_records.len();
        report.snapshots_deleted = dead_snapshots.len();
        if report.forced_by_size {
            tracing::warn!(
                db = self.name(),
                "size cap dropped records a replica still needs; it will get a snapshot"
            );
        }
        Ok(report)
    }
}

/// How old a record is at `now_ms`.
pub(super) fn age(record: &Record, now_ms: i64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(record.timestamp).max(0) as u64)
}
