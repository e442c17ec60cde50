//! The 100-byte LTX header and the 16-byte trailer, identical in every format.

use super::error::{LtxError, Section};
use super::format::{Format, FLAG_COMPRESS_LZ4, FLAG_NO_CHECKSUM};
use super::page::PageSize;
use ltxd_protocol::{Checksum, Pos, TxId};

/// The size of an encoded header.
pub const HEADER_LEN: usize = 100;
/// The size of an encoded trailer.
pub const TRAILER_LEN: usize = 16;
const MAGIC: &[u8; 4] = b"LTX1";

/// The LTX header: what a file holds and where it fits in a database's history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    /// Header flags ([`FLAG_COMPRESS_LZ4`], [`FLAG_NO_CHECKSUM`]).
    pub flags: u32,
    /// The database page size.
    pub page_size: u32,
    /// The database size in pages after the file is applied; 0 deletes the database.
    pub commit: u32,
    /// The first transaction in the file.
    #[serde(serialize_with = "serialize_display")]
    pub min_txid: TxId,
    /// The last transaction in the file.
    #[serde(serialize_with = "serialize_display")]
    pub max_txid: TxId,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The database checksum before the file is applied; 0 for snapshots.
    #[serde(serialize_with = "serialize_display")]
    pub pre_apply_checksum: Checksum,
    /// Byte offset in the SQLite WAL where the transaction's frames start; 0 outside WAL mode.
    pub wal_offset: i64,
    /// Bytes of WAL frames in the transaction.
    pub wal_size: i64,
    /// The WAL header's salt-1.
    pub wal_salt1: u32,
    /// The WAL header's salt-2.
    pub wal_salt2: u32,
    /// The node that wrote the file; 0 if unset.
    pub node_id: u64,
}

pub(crate) fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl Header {
    /// A header for a file covering `min..=max` with everything else zero.
    pub fn new(page_size: PageSize, commit: u32, min_txid: TxId, max_txid: TxId) -> Header {
        Header {
            flags: 0,
            page_size: page_size.get(),
            commit,
            min_txid,
            max_txid,
            timestamp: 0,
            pre_apply_checksum: Checksum::ZERO,
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: 0,
        }
    }

    /// True for a snapshot: a file that starts at TXID 1 and holds every page.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == TxId(1)
    }

    /// True when the v1 body is one LZ4 frame.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESS_LZ4 != 0
    }

    /// True when the file carries no pre- and post-apply checksums.
    pub fn has_no_checksum(&self) -> bool {
        self.flags & FLAG_NO_CHECKSUM != 0
    }

    /// The validated page size.
    pub fn page_size(&self) -> Result<PageSize, LtxError> {
        PageSize::new(self.page_size).ok_or(LtxError::BadPageSize(self.page_size))
    }

    /// The position a database must be at before this file applies.
    pub fn pre_apply_pos(&self) -> Pos {
        Pos::new(
            self.min_txid.prev().unwrap_or(TxId::ZERO),
            self.pre_apply_checksum,
        )
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.0.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.0.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.0.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    /// Decodes a header without validating its fields beyond the magic.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, LtxError> {
        if &b[0..4] != MAGIC {
            return Err(LtxError::BadMagic([b[0], b[1], b[2], b[3]]));
        }
        Ok(Header {
            flags: be_u32(b, 4),
            page_size: be_u32(b, 8),
            commit: be_u32(b, 12),
            min_txid: TxId(be_u64(b, 16)),
            max_txid: TxId(be_u64(b, 24)),
            timestamp: be_u64(b, 32) as i64,
            pre_apply_checksum: Checksum(be_u64(b, 40)),
            wal_offset: be_u64(b, 48) as i64,
            wal_size: be_u64(b, 56) as i64,
            wal_salt1: be_u32(b, 64),
            wal_salt2: be_u32(b, 68),
            node_id: be_u64(b, 72),
        })
    }

    /// Reads and decodes a header, mapping a short read to [`LtxError::Truncated`].
    pub fn read_from(r: &mut impl std::io::Read) -> Result<Header, LtxError> {
        let mut buf = [0u8; HEADER_LEN];
        r.read_exact(&mut buf)
            .map_err(|e| LtxError::from_read(e, Section::Header))?;
        Header::decode(&buf)
    }

    /// Checks every header rule of `format`.
    pub fn validate(&self, format: Format) -> Result<(), LtxError> {
        if self.flags & !format.flag_mask() != 0 {
            return Err(LtxError::BadFlags {
                flags: self.flags,
                format,
            });
        }
        self.page_size()?;
        if self.min_txid == TxId::ZERO || self.min_txid > self.max_txid {
            return Err(LtxError::BadTxIdRange {
                min: self.min_txid,
                max: self.max_txid,
            });
        }
        self.validate_wal_fields(format)?;
        let kind = if self.is_snapshot() {
            "snapshot"
        } else {
            "incremental file"
        };
        let pre = self.pre_apply_checksum;
        let pre_ok = if self.has_no_checksum() || self.is_snapshot() {
            pre == Checksum::ZERO
        } else {
            pre.has_flag()
        };
        if !pre_ok {
            return Err(LtxError::BadPreApplyChecksum {
                checksum: pre,
                kind,
            });
        }
        Ok(())
    }

    fn validate_wal_fields(&self, format: Format) -> Result<(), LtxError> {
        let (offset, size) = (self.wal_offset, self.wal_size);
        let has_salt = self.wal_salt1 != 0 || self.wal_salt2 != 0;
        let mut ok =
            offset >= 0 && size >= 0 && (!has_salt || offset != 0) && (offset != 0 || size == 0);
        if format == Format::V1 {
            ok &= (offset != 0) == (size != 0);
        }
        if ok {
            Ok(())
        } else {
            Err(LtxError::BadWalFields {
                offset,
                size,
                salt1: self.wal_salt1,
                salt2: self.wal_salt2,
            })
        }
    }
}

/// The LTX trailer: the database checksum after applying the file, and the file's own checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Trailer {
    /// The database checksum after the file is applied.
    #[serde(serialize_with = "serialize_display")]
    pub post_apply_checksum: Checksum,
    /// The checksum over the file's logical contents.
    #[serde(serialize_with = "serialize_display")]
    pub file_checksum: Checksum,
}

impl Trailer {
    /// Encodes the trailer.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..8].copy_from_slice(&self.post_apply_checksum.0.to_be_bytes());
        b[8..16].copy_from_slice(&self.file_checksum.0.to_be_bytes());
        b
    }

    /// Decodes a trailer.
    pub fn decode(b: &[u8; TRAILER_LEN]) -> Trailer {
        Trailer {
            post_apply_checksum: Checksum(be_u64(b, 0)),
            file_checksum: Checksum(be_u64(b, 8)),
        }
    }

    /// Checks the post-apply checksum against the header's rules.
    pub fn validate_post_apply(&self, header: &Header) -> Result<(), LtxError> {
        let post = self.post_apply_checksum;
        let ok = if header.has_no_checksum() {
            post == Checksum::ZERO
        } else if header.commit == 0 {
            post == Checksum::EMPTY_DATABASE
        } else {
            post.has_flag()
        };
        if ok {
            Ok(())
        } else {
            Err(LtxError::BadPostApplyChecksum(post))
        }
    }
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_matches_the_reference_layout() {
        let mut h = Header::new(PageSize::new(512).unwrap(), 2, TxId(1), TxId(1));
        h.timestamp = 1_700_000_000_000;
        let bytes = h.encode();
        let expected_prefix = [
            0x4c, 0x54, 0x58, 0x31, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0,
            0, 0, 0, 0, 0, 0, 1, 0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0,
        ];
        assert_eq!(&bytes[..40], &expected_prefix);
        assert!(bytes[40..].iter().all(|&b| b == 0));
        assert_eq!(Header::decode(&bytes).unwrap(), h);
        h.validate(Format::V1).unwrap();
        h.validate(Format::V3).unwrap();
    }

    #[test]
    fn validation_names_each_fault() {
        let base = Header::new(PageSize::new(4096).unwrap(), 2, TxId(2), TxId(2));
        let mut h = base.clone();
        h.flags = FLAG_COMPRESS_LZ4;
        assert!(matches!(
            h.validate(Format::V3),
            Err(LtxError::BadFlags { .. })
        ));
        h = base.clone();
        h.page_size = 1000;
        assert!(matches!(
            h.validate(Format::V1),
            Err(LtxError::BadPageSize(1000))
        ));
        h = base.clone();
        h.min_txid = TxId(3);
        assert!(matches!(
            h.validate(Format::V1),
            Err(LtxError::BadTxIdRange { .. })
        ));
        h = base.clone();
        assert!(matches!(
            h.validate(Format::V1),
            Err(LtxError::BadPreApplyChecksum { .. })
        ));
        h.pre_apply_checksum = Checksum(Checksum::FLAG | 5);
        h.wal_salt1 = 7;
        assert!(matches!(
            h.validate(Format::V1),
            Err(LtxError::BadWalFields { .. })
        ));
    }
}
