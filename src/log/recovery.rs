//! Opening a database's log: reconciling the segments on disk with the index, cutting a torn
//! tail, and finishing or undoing an interrupted compaction.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::index::IndexedDatabase;
use super::segment::{record_matches, scan, valid_record_after, Record, Tail};
use super::LogError;
use crate::durable;
use crate::layout::{parse_log_file_name, DatabaseLayout};
use crate::ltx::TxId;

/// The segments of one database as found on disk.
pub(super) struct Recovered {
    /// The records of the chain, in TXID order.
    pub records: Vec<Record>,
    /// Every segment's id and valid length, in order.
    pub segments: BTreeMap<TxId, u64>,
    /// The snapshot records, in TXID order.
    pub snapshots: Vec<Record>,
    /// True when the index did not describe the disk and must be rewritten.
    pub index_stale: bool,
}

/// Lists the segment files in `dir`, removing leftover temporary files.
fn segment_files(dir: &Path) -> Result<BTreeMap<TxId, u64>, LogError> {
    let mut found = BTreeMap::new();
    if !dir.exists() {
        return Ok(found);
    }
    let mut unfinished = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".ltxd-") && name.ends_with(".tmp") {
            tracing::info!(file = %entry.path().display(), "removing an unfinished temporary file");
            unfinished.push(entry.path());
        } else if let Some(id) = parse_log_file_name(&name) {
            found.insert(id, entry.metadata()?.len());
        }
    }
    durable::remove_files(unfinished)?;
    Ok(found)
}

/// The records of one segment: from the index when it describes the file, with any tail the
/// index missed scanned and verified; otherwise from a full scan. Only the last segment may end
/// in preallocated zeros or in a torn record, which is cut off.
fn segment_records(
    path: PathBuf,
    id: TxId,
    file_len: u64,
    indexed: Vec<Record>,
    is_last: bool,
    stale: &mut bool,
) -> Result<(Vec<Record>, u64), LogError> {
    let index_fits = !indexed.is_empty()
        && indexed[0].offset == 0
        && indexed.windows(2).all(|w| w[0].end() == w[1].offset)
        && indexed.last().is_some_and(|r| r.end() <= file_len)
        && all_match(&path, &indexed)?;
    let (mut records, from) = if index_fits {
        let end = indexed.last().map_or(0, Record::end);
        (indexed, end)
    } else {
        *stale = true;
        (Vec::new(), 0)
    };
    if from == file_len {
        return Ok((records, file_len));
    }
    let tail = if is_last {
        Tail::Preallocated
    } else {
        Tail::Exact
    };
    let scanned = scan(&path, id, from, tail)?;
    // Nothing after the indexed records but the last segment's preallocated zeros: the index
    // is current.
    if !scanned.records.is_empty() || scanned.stop.is_some() {
        *stale = true;
    }
    records.extend(scanned.records);
    if let Some(reason) = scanned.stop {
        if !is_last {
            return Err(LogError::Corrupt { path, reason });
        }
        if let Some(at) = valid_record_after(&path, id, scanned.valid_len)? {
            return Err(LogError::Corrupt {
                path,
                reason: format!(
                    "{reason}, yet a valid record follows at offset {at}: damage, not a torn tail"
                ),
            });
        }
        tracing::warn!(path = %path.display(), %reason, cut_at = scanned.valid_len, "cutting a torn tail");
    }
    Ok((records, scanned.valid_len))
}

/// True when every indexed record is on disk as the index describes it.
fn all_match(path: &Path, records: &[Record]) -> Result<bool, LogError> {
    let file = fs::File::open(path)?;
    for record in records {
        if !record_matches(&file, record)? {
            tracing::info!(path = %path.display(), offset = record.offset, "index entry does not match the segment; rescanning it");
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reconciles the segments and the snapshots of the database at `layout` with what the index
/// says.
pub(super) fn recover(
    layout: &DatabaseLayout,
    indexed: Option<IndexedDatabase>,
) -> Result<Recovered, LogError> {
    let mut stale = indexed.is_none();
    let indexed = indexed.unwrap_or_default();
    let files = segment_files(&layout.segments_dir())?;
    let last_id = files.keys().next_back().copied();
    let mut records: Vec<Record> = Vec::new();
    let mut segments = BTreeMap::new();
    for (&id, &len) in &files {
        let from_index: Vec<Record> = indexed
            .records
            .iter()
            .filter(|r| r.segment == id)
            .cloned()
            .collect();
        let path = layout.segment(id);
        let (found, valid_len) = segment_records(
            path.clone(),
            id,
            len,
            from_index,
            Some(id) == last_id,
            &mut stale,
        )?;
        let chain_max = records.last().map(|r| r.max_txid);
        if let (Some(max), Some(last)) = (chain_max, found.last()) {
            if last.max_txid <= max {
                // An interrupted compaction merged this segment into an earlier one.
                tracing::info!(path = %path.display(), "removing a segment superseded by a compaction");
                durable::remove_files([&path])?;
                stale = true;
                continue;
            }
        }
        let mut prev = records.last();
        for record in &found {
            if let Some(prev) = prev {
                if prev.max_txid.next() != Some(record.min_txid)
                    || prev.post_apply_checksum != record.pre_apply_checksum
                {
                    return Err(LogError::Corrupt {
                        path: path.clone(),
                        reason: format!(
                            "record {}-{} does not follow record {}-{}",
                            record.min_txid, record.max_txid, prev.min_txid, prev.max_txid
                        ),
                    });
                }
            }
            prev = Some(record);
        }
        records.extend(found);
        segments.insert(id, valid_len);
    }
    let snapshot_files = segment_files(&layout.snapshots_dir())?;
    let mut snapshots = Vec::new();
    for (&id, &len) in &snapshot_files {
        let from_index: Vec<Record> = indexed
            .snapshots
            .iter()
            .filter(|r| r.segment == id)
            .cloned()
            .collect();
        let path = layout.snapshot(id);
        let (found, _) = segment_records(path.clone(), id, len, from_index, false, &mut stale)?;
        match found.as_slice() {
            [one] if one.is_snapshot() && one.max_txid == id => snapshots.push(one.clone()),
            _ => {
                return Err(LogError::Corrupt {
                    path,
                    reason: "a snapshot file must hold exactly one snapshot record".into(),
                })
            }
        }
    }
    stale |= indexed.records.len() != records.len() || indexed.snapshots.len() != snapshots.len();
    Ok(Recovered {
        records,
        segments,
        snapshots,
        index_stale: stale,
    })
}
