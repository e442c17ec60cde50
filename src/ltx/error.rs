//! The typed errors of the LTX codec. Each validation failure has its own variant.

use super::format::Format;
use super::page::PageNo;
use ltxd_protocol::{Checksum, TxId};

/// Where in an LTX file a truncation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The 100-byte header.
    Header,
    /// A page header or its data.
    Pages,
    /// The v3 page index or its size field.
    PageIndex,
    /// The 16-byte trailer.
    Trailer,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Pages => "page data",
            Section::PageIndex => "page index",
            Section::Trailer => "trailer",
        })
    }
}

/// An LTX encoding, decoding or validation failure.
#[derive(Debug, thiserror::Error)]
pub enum LtxError {
    /// An I/O error from the underlying reader or writer.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The file ends before the named section is complete.
    #[error("truncated file: unexpected end of {0}")]
    Truncated(Section),
    /// The file does not start with `LTX1`.
    #[error("invalid magic: expected \"LTX1\", found {0:02x?}")]
    BadMagic([u8; 4]),
    /// Header flags outside the set that the format allows.
    #[error("invalid header flags 0x{flags:08x} for format {format}")]
    BadFlags {
        /// The flags found.
        flags: u32,
        /// The format being read or written.
        format: Format,
    },
    /// A page size that is not a power of two from 512 to 65536.
    #[error("invalid page size {0}")]
    BadPageSize(u32),
    /// A zero TXID or a reversed range.
    #[error("invalid TXID range {min}-{max}")]
    BadTxIdRange {
        /// The header's MinTXID.
        min: TxId,
        /// The header's MaxTXID.
        max: TxId,
    },
    /// Inconsistent WAL offset, size and salts.
    #[error("invalid WAL fields: offset {offset}, size {size}, salts {salt1:08x} {salt2:08x}")]
    BadWalFields {
        /// WALOffset.
        offset: i64,
        /// WALSize.
        size: i64,
        /// WALSalt1.
        salt1: u32,
        /// WALSalt2.
        salt2: u32,
    },
    /// A pre-apply checksum that breaks the rules: zero for snapshots, flagged otherwise.
    #[error("invalid pre-apply checksum {checksum} for a {kind}")]
    BadPreApplyChecksum {
        /// The checksum found.
        checksum: Checksum,
        /// "snapshot" or "incremental file".
        kind: &'static str,
    },
    /// A post-apply checksum without the flag bit, or a deletion whose checksum is not the
    /// empty-database checksum.
    #[error("invalid post-apply checksum {0}")]
    BadPostApplyChecksum(Checksum),
    /// A page header flag that the format does not define.
    #[error("invalid page header flags 0x{flags:04x} on page {pgno}")]
    BadPageFlags {
        /// The page.
        pgno: PageNo,
        /// The flags found.
        flags: u16,
    },
    /// Page numbers that go backwards.
    #[error("page {pgno} out of order: it follows page {prev}")]
    PageOutOfOrder {
        /// The page before.
        prev: PageNo,
        /// The offending page.
        pgno: PageNo,
    },
    /// The same page twice.
    #[error("duplicate page {0}")]
    DuplicatePage(PageNo),
    /// A page beyond the database size the file commits to.
    #[error("page {pgno} is beyond the commit size of {commit} pages")]
    PageBeyondCommit {
        /// The offending page.
        pgno: PageNo,
        /// The header's Commit.
        commit: u32,
    },
    /// The lock page, which LTX never stores.
    #[error("page {0} is the lock page, which LTX files never contain")]
    LockPage(PageNo),
    /// Page data of the wrong length.
    #[error("page {pgno} has {len} bytes, expected {expected}")]
    BadPageLength {
        /// The page.
        pgno: PageNo,
        /// Its length.
        len: usize,
        /// The page size.
        expected: usize,
    },
    /// A snapshot that skips pages.
    #[error("snapshot is missing page {missing} (commit is {commit} pages)")]
    SnapshotMissingPage {
        /// The first missing page.
        missing: PageNo,
        /// The header's Commit.
        commit: u32,
    },
    /// A page whose compressed form is corrupt or does not expand to one page.
    #[error("page {pgno}: bad compressed data: {reason}")]
    BadCompressedPage {
        /// The page.
        pgno: PageNo,
        /// What was wrong.
        reason: String,
    },
    /// The v1 LZ4 frame is corrupt, or continues past the end marker.
    #[error("bad lz4 frame: {0}")]
    BadLz4Frame(String),
    /// The v3 page index does not describe the page frames, or is malformed.
    #[error("invalid page index: {0}")]
    BadPageIndex(String),
    /// Bytes after the trailer.
    #[error("unexpected data after the trailer")]
    TrailingData,
    /// The stored file checksum differs from the computed one.
    #[error("file checksum mismatch: stored {stored}, computed {computed}")]
    FileChecksumMismatch {
        /// From the trailer.
        stored: Checksum,
        /// Over the file's contents.
        computed: Checksum,
    },
    /// A post-apply checksum that differs from the database the pages produce.
    #[error("post-apply checksum mismatch: stored {stored}, computed {computed}")]
    PostApplyChecksumMismatch {
        /// From the trailer.
        stored: Checksum,
        /// Over the pages.
        computed: Checksum,
    },
    /// The bytes are a valid file in neither format.
    #[error("not a valid LTX file in any known format (as v1: {v1}; as v3: {v3})")]
    UnknownFormat {
        /// Why it is not v1.
        v1: Box<LtxError>,
        /// Why it is not v3.
        v3: Box<LtxError>,
    },
    /// The bytes are a valid file in both formats, so the format must be given.
    #[error("the file is valid as both v1 and v3; name the format explicitly")]
    AmbiguousFormat,
    /// Encoding was given pages or options that no valid file can hold.
    #[error("invalid encoder input: {0}")]
    BadEncoderInput(String),
}

impl LtxError {
    /// Maps an unexpected end of file in `section` to [`LtxError::Truncated`].
    pub(crate) fn from_read(err: std::io::Error, section: Section) -> LtxError {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            LtxError::Truncated(section)
        } else {
            LtxError::Io(err)
        }
    }
}
