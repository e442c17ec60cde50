//! The bucket layout: object keys and their parsing. No I/O.
//!
//! Under a prefix `P` (`backup.path`) each database `D` has
//!
//! ```text
//! P/D/ltx/<level>/<min>-<max>-<epoch>.ltx   one LTX file holding TXIDs min..=max (16 hex digits each)
//! P/D/epochs/<epoch>-<start>                 a primary of lease epoch <epoch> writes from TXID <start> on
//! ```
//!
//! Level 0 holds the log's records as the primary appended them, level 9 holds snapshots (TXID 1
//! onward), as in Litestream 0.5. The epoch in the name fences a deposed primary: see
//! [`super::chain`].

use crate::ltx::TxId;

/// The level of records uploaded as the log holds them.
pub const LEVEL_RECORDS: u8 = 0;
/// The level of snapshots.
pub const LEVEL_SNAPSHOT: u8 = 9;

/// One LTX object's place in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName {
    /// First TXID covered.
    pub min: TxId,
    /// Last TXID covered.
    pub max: TxId,
    /// The lease epoch of the primary that wrote it.
    pub epoch: u64,
    /// [`LEVEL_RECORDS`] or [`LEVEL_SNAPSHOT`].
    pub level: u8,
}

/// A primary's claim: from TXID `start` on, the chain is written under lease epoch `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpochMarker {
    /// The lease epoch.
    pub epoch: u64,
    /// The first TXID written under it.
    pub start: TxId,
}

/// The key prefix of database `db` under `prefix` (which may be empty), ending in `/`.
pub fn database_prefix(prefix: &str, db: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{db}/")
    } else {
        format!("{prefix}/{db}/")
    }
}

impl ObjectName {
    /// The key under the database prefix (see [`database_prefix`]).
    pub fn key(&self, db_prefix: &str) -> String {
        format!(
            "{db_prefix}ltx/{}/{:016x}-{:016x}-{:016x}.ltx",
            self.level, self.min.0, self.max.0, self.epoch
        )
    }

    /// Parses a key relative to the database prefix (`ltx/0/...`); `None` for anything else.
    pub fn parse(relative: &str) -> Option<ObjectName> {
        let rest = relative.strip_prefix("ltx/")?;
        let (level, file) = rest.split_once('/')?;
        let level: u8 = level.parse().ok()?;
        if level != LEVEL_RECORDS && level != LEVEL_SNAPSHOT {
            return None;
        }
        let stem = file.strip_suffix(".ltx")?;
        let mut parts = stem.split('-');
        let min = hex(parts.next()?)?;
        let max = hex(parts.next()?)?;
        let epoch = hex(parts.next()?)?;
        if parts.next().is_some() || min == 0 || max < min {
            return None;
        }
        if level == LEVEL_SNAPSHOT && min != 1 {
            return None;
        }
        Some(ObjectName {
            min: TxId(min),
            max: TxId(max),
            epoch,
            level,
        })
    }
}

impl EpochMarker {
    /// The key under the database prefix.
    pub fn key(&self, db_prefix: &str) -> String {
        format!(
            "{db_prefix}epochs/{:016x}-{:016x}",
            self.epoch, self.start.0
        )
    }

    /// Parses a key relative to the database prefix (`epochs/...`).
    pub fn parse(relative: &str) -> Option<EpochMarker> {
        let (epoch, start) = relative.strip_prefix("epochs/")?.split_once('-')?;
        Some(EpochMarker {
            epoch: hex(epoch)?,
            start: TxId(hex(start)?),
        })
    }
}

/// Exactly 16 lowercase hex digits.
fn hex(s: &str) -> Option<u64> {
    (s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| u64::from_str_radix(s, 16).ok())
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = ObjectName {
            min: TxId(5),
            max: TxId(0x1f),
            epoch: 3,
            level: LEVEL_RECORDS,
        };
        let prefix = database_prefix("/backups/x/", "db");
        assert_eq!(prefix, "backups/x/db/");
        let key = name.key(&prefix);
        assert_eq!(
            key,
            "backups/x/db/ltx/0/0000000000000005-000000000000001f-0000000000000003.ltx"
        );
        assert_eq!(ObjectName::parse(&key[prefix.len()..]), Some(name));
        let marker = EpochMarker {
            epoch: 7,
            start: TxId(9),
        };
        let key = marker.key(&prefix);
        assert_eq!(EpochMarker::parse(&key[prefix.len()..]), Some(marker));
        assert_eq!(database_prefix("", "db"), "db/");
    }

    #[test]
    fn foreign_keys_are_not_parsed() {
        for key in [
            "ltx/0/0000000000000005-0000000000000004-0000000000000000.ltx",
            "ltx/0/0000000000000000-0000000000000004-0000000000000000.ltx",
            "ltx/9/0000000000000002-0000000000000004-0000000000000000.ltx",
            "ltx/3/0000000000000001-0000000000000004-0000000000000000.ltx",
            "ltx/0/1-4-0.ltx",
            "ltx/0/0000000000000001-0000000000000004-0000000000000000.tmp",
            "ltx/0/000000000000000X-0000000000000004-0000000000000000.ltx",
            "other",
        ] {
            assert_eq!(ObjectName::parse(key), None, "{key}");
        }
        assert_eq!(EpochMarker::parse("epochs/1-2"), None);
    }
}
