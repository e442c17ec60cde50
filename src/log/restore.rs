//! Rebuilding a database file at any retained point of its log.

use std::path::Path;

use super::{DatabaseLog, LogError, Record};
use crate::database::{self, LtxSource};
use crate::ltx::TxId;

/// The records that rebuild the database at `target`: a snapshot (a snapshot file, or the chain's
/// own first record when it starts at TXID 1), then the chain up to exactly `target`.
pub fn restore_plan(log: &DatabaseLog, target: TxId) -> Result<Vec<Record>, LogError> {
    let not_retained = |reason: String| LogError::NotRetained {
        db: log.name().to_string(),
        txid: target,
        reason,
    };
    let records = log.records();
    let snapshots = log.snapshots();
    let head = log.head().txid;
    if target == TxId::ZERO || target > head {
        return Err(not_retained(format!("the log holds TXIDs up to {head}")));
    }
    let base = snapshots
        .iter()
        .filter(|s| s.max_txid <= target)
        .chain(
            records
                .iter()
                .filter(|r| r.is_snapshot() && r.max_txid <= target),
        )
        .max_by_key(|r| r.max_txid)
        .cloned()
        .ok_or_else(|| not_retained("no snapshot at or before it is retained".into()))?;
    let mut plan = vec![base];
    while let Some(last) = plan.last().map(|r| r.max_txid).filter(|&m| m < target) {
        let next = records
            .iter()
            .find(|r| Some(r.min_txid) == last.next())
            .ok_or_else(|| {
                not_retained(format!("the records after TXID {last} are not retained"))
            })?;
        if next.max_txid > target {
            return Err(not_retained(format!(
                "it lies inside compacted record {}-{}",
                next.min_txid, next.max_txid
            )));
        }
        plan.push(next.clone());
    }
    Ok(plan)
}

/// The last TXID committed at or before `timestamp_ms`.
pub fn txid_at_time(log: &DatabaseLog, timestamp_ms: i64) -> Result<TxId, LogError> {
    log.records()
        .iter()
        .chain(log.snapshots().iter())
        .filter(|r| r.timestamp <= timestamp_ms)
        .map(|r| r.max_txid)
        .max()
        .ok_or_else(|| LogError::NotRetained {
            db: log.name().to_string(),
            txid: TxId::ZERO,
            reason: format!("no retained transaction is as old as {timestamp_ms} ms"),
        })
}

/// Writes the database as it was at `target` to `out`, atomically.
pub fn restore(log: &DatabaseLog, target: TxId, out: &Path) -> Result<(), LogError> {
    let plan = restore_plan(log, target)?;
    let sources: Vec<LtxSource> = plan.iter().map(|r| log.source(r)).collect();
    let temp = out.with_file_name(format!(
        ".{}.restore-{}.tmp",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("db"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temp);
    let result = database::apply_files(&temp, &sources).map_err(LogError::from);
    match result {
        Ok(_) => Ok(crate::durable::persist(&temp, out)?),
        Err(err) => {
            let _ = std::fs::remove_file(&temp);
            Err(err)
        }
    }
}
