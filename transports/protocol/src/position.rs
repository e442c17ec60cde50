//! Transaction IDs, rolling checksums and positions.

use std::fmt;
use std::str::FromStr;

/// A transaction ID. TXID 1 is the first transaction of a database; 0 means "no data".
///
/// Its text form is 16 lowercase hex digits, as in LTX file names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub u64);

impl TxId {
    /// The absent TXID: a database with no transactions.
    pub const ZERO: TxId = TxId(0);

    /// The TXID after this one, or `None` on overflow.
    pub fn next(self) -> Option<TxId> {
        self.0.checked_add(1).map(TxId)
    }

    /// The TXID before this one, or `None` for TXID 0.
    pub fn prev(self) -> Option<TxId> {
        self.0.checked_sub(1).map(TxId)
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for TxId {
    type Err = ParsePosError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex16(s).map(TxId)
    }
}

/// A CRC-64/GO-ISO based checksum as stored in LTX files: a page, database or file checksum.
///
/// Every stored checksum has [`Checksum::FLAG`] set, so a valid checksum is never 0; the value 0
/// means "absent".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checksum(pub u64);

impl Checksum {
    /// The high bit that every stored checksum carries.
    pub const FLAG: u64 = 1 << 63;
    /// The checksum of an empty database, and the required post-apply checksum of a deletion.
    pub const EMPTY_DATABASE: Checksum = Checksum(Self::FLAG);
    /// The absent checksum.
    pub const ZERO: Checksum = Checksum(0);

    /// True when the flag bit is set, which every stored checksum must have.
    pub fn has_flag(self) -> bool {
        self.0 & Self::FLAG != 0
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Checksum {
    type Err = ParsePosError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex16(s).map(Checksum)
    }
}

/// A database position: the last applied TXID and the database checksum after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pos {
    /// The last transaction applied.
    pub txid: TxId,
    /// The rolling database checksum after that transaction.
    pub post_apply_checksum: Checksum,
}

impl Pos {
    /// The position of a database with no transactions.
    pub const ZERO: Pos = Pos {
        txid: TxId::ZERO,
        post_apply_checksum: Checksum::ZERO,
    };

    /// Builds a position.
    pub fn new(txid: TxId, post_apply_checksum: Checksum) -> Pos {
        Pos {
            txid,
            post_apply_checksum,
        }
    }
}

impl fmt::Display for Pos {
    /// The LiteFS text form: `%016x/%016x`, 33 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.txid, self.post_apply_checksum)
    }
}

impl FromStr for Pos {
    type Err = ParsePosError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (txid, checksum) = s
            .split_once('/')
            .filter(|_| s.len() == 33)
            .ok_or_else(|| ParsePosError(s.to_string()))?;
        Ok(Pos::new(txid.parse()?, checksum.parse()?))
    }
}

/// A TXID, checksum or position whose text form is not 16 (or 16/16) hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hex value {0:?}: expected 16 hex digits (or TXID/checksum for a position)")]
pub struct ParsePosError(String);

fn parse_hex16(s: &str) -> Result<u64, ParsePosError> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParsePosError(s.to_string()));
    }
    u64::from_str_radix(s, 16).map_err(|_| ParsePosError(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        let pos = Pos::new(TxId(0xff), Checksum(0x8000_0000_0000_0001));
        let text = pos.to_string();
        assert_eq!(text, "00000000000000ff/8000000000000001");
        assert_eq!(text.parse::<Pos>().unwrap(), pos);
    }

    #[test]
    fn rejects_malformed_positions() {
        for bad in [
            "",
            "ff/ff",
            "00000000000000ff-8000000000000001",
            "0000000000000zff/8000000000000001",
        ] {
            assert!(bad.parse::<Pos>().is_err(), "{bad}");
        }
    }
}
