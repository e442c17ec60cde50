//! The sled index: a cache of where each record lives. The segments are the truth; the index only
//! saves scanning them on open. It is checked against the segments every time it is loaded and
//! rebuilt from them when it is missing, stale or damaged, so its weak flush never matters.

use std::path::Path;

use super::segment::Record;
use crate::ltx::{Checksum, Format, TxId};

/// The index of every database in one data directory.
pub struct Index {
    db: sled::Db,
}

/// What the index holds for one database.
#[derive(Debug, Default)]
pub struct IndexedDatabase {
    /// Records in TXID order.
    pub records: Vec<Record>,
    /// Snapshot files, each a one-record segment; `segment` is the snapshot's max TXID.
    pub snapshots: Vec<Record>,
}

/// Which of a database's two trees an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Records of the chain.
    Record,
    /// Snapshot files.
    Snapshot,
}

impl Kind {
    fn tree(self) -> &'static str {
        match self {
            Kind::Record => "records",
            Kind::Snapshot => "snapshots",
        }
    }
}

const RECORD_VALUE_LEN: usize = 9 * 8 + 4 * 2 + 1;

impl Index {
    /// Opens the index at `dir`. An index that cannot be opened is deleted and started afresh;
    /// every database is then rebuilt from its segments.
    pub fn open(dir: &Path) -> sled::Result<Index> {
        let db = sled::Config::new().path(dir).open().or_else(|err| {
            tracing::warn!(path = %dir.display(), %err, "index unreadable; rebuilding it from the segments");
            let _ = std::fs::remove_dir_all(dir);
            sled::Config::new().path(dir).open()
        })?;
        Ok(Index { db })
    }

    fn tree(&self, kind: &str, name: &str) -> sled::Result<sled::Tree> {
        self.db.open_tree(format!("{kind}/{name}"))
    }

    /// Loads one database's entries, or `None` when they are absent or unreadable.
    pub fn load(&self, name: &str) -> Option<IndexedDatabase> {
        let load_tree = |kind| -> Option<Vec<Record>> {
            let tree = self.tree(kind, name).ok()?;
            tree.iter()
                .values()
                .map(|v| v.ok().and_then(|v| decode_record(&v)))
                .collect()
        };
        let records = load_tree(Kind::Record.tree())?;
        let snapshots = load_tree(Kind::Snapshot.tree())?;
        Some(IndexedDatabase { records, snapshots })
    }

    /// Replaces one database's entries.
    pub fn replace(
        &self,
        name: &str,
        records: &[Record],
        snapshots: &[Record],
    ) -> sled::Result<()> {
        for (kind, list) in [(Kind::Record, records), (Kind::Snapshot, snapshots)] {
            let tree = self.tree(kind.tree(), name)?;
            tree.clear()?;
            let mut batch = sled::Batch::default();
            for r in list {
                batch.insert(&r.max_txid.0.to_be_bytes(), encode_record(r).to_vec());
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Adds entries. Writes are not flushed: an entry lost in a crash is found again when the
    /// index is checked against the segments.
    pub fn insert(&self, kind: Kind, name: &str, records: &[Record]) -> sled::Result<()> {
        let tree = self.tree(kind.tree(), name)?;
        for r in records {
            tree.insert(r.max_txid.0.to_be_bytes(), encode_record(r).to_vec())?;
        }
        Ok(())
    }

    /// Removes entries.
    pub fn remove(&self, kind: Kind, name: &str, records: &[Record]) -> sled::Result<()> {
        let tree = self.tree(kind.tree(), name)?;
        for r in records {
            tree.remove(r.max_txid.0.to_be_bytes())?;
        }
        Ok(())
    }

    /// Flushes the index to disk in the background of a quiet moment.
    pub fn flush(&self) -> sled::Result<()> {
        self.db.flush().map(|_| ())
    }
}

fn encode_record(r: &Record) -> [u8; RECORD_VALUE_LEN] {
    let mut b = [0u8; RECORD_VALUE_LEN];
    let words = [
        r.segment.0,
        r.offset,
        r.len,
        r.min_txid.0,
        r.max_txid.0,
        r.pre_apply_checksum.0,
        r.post_apply_checksum.0,
        r.timestamp as u64,
        r.file_checksum.0,
    ];
    for (i, w) in words.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_be_bytes());
    }
    b[72..76].copy_from_slice(&r.commit.to_be_bytes());
    b[76..80].copy_from_slice(&r.page_size.to_be_bytes());
    b[80] = r.format.version() as u8;
    b
}

/// Decodes an entry, or `None` when it is not one. An entry whose record would end past the
/// largest offset is refused here, so that nothing checking it against a segment overflows.
fn decode_record(b: &[u8]) -> Option<Record> {
    if b.len() != RECORD_VALUE_LEN {
        return None;
    }
    let word = |i: usize| u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
    word(1)
        .checked_add(super::segment::RECORD_HEADER_LEN)?
        .checked_add(word(2))?;
    Some(Record {
        segment: TxId(word(0)),
        offset: word(1),
        len: word(2),
        min_txid: TxId(word(3)),
        max_txid: TxId(word(4)),
        pre_apply_checksum: Checksum(word(5)),
        post_apply_checksum: Checksum(word(6)),
        timestamp: word(7) as i64,
        file_checksum: Checksum(word(8)),
        commit: u32_at(72),
        page_size: u32_at(76),
        format: match b[80] {
            1 => Format::V1,
            3 => Format::V3,
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_whose_record_would_end_past_any_offset_is_refused() {
        let record = Record {
            segment: TxId(1),
            offset: 32,
            len: 100,
            format: Format::V1,
            min_txid: TxId(1),
            max_txid: TxId(1),
            pre_apply_checksum: Checksum(0),
            post_apply_checksum: Checksum(1),
            file_checksum: Checksum(2),
            timestamp: 0,
            commit: 1,
            page_size: 4096,
        };
        assert_eq!(decode_record(&encode_record(&record)), Some(record.clone()));
        let huge = Record {
            len: u64::MAX - 40,
            ..record
        };
        assert_eq!(decode_record(&encode_record(&huge)), None);
    }
}
