//! Errors of database-file operations.

use std::path::PathBuf;

use crate::ltx::{Checksum, LtxError, TxId};

/// A failure to checksum, apply, encode or compact.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// An I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// An LTX file is invalid.
    #[error("{path}: {source}")]
    Ltx {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: LtxError,
    },
    /// The database file is not a SQLite database ltxd can read.
    #[error("{path}: not a usable SQLite database: {reason}")]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An LTX file does not apply to the database's current state.
    #[error("{path}: pre-apply checksum {expected} does not match the database checksum {actual}")]
    PreApplyMismatch {
        /// The LTX file.
        path: PathBuf,
        /// Its pre-apply checksum.
        expected: Checksum,
        /// The database's checksum.
        actual: Checksum,
    },
    /// Applying an LTX file did not produce the database it promised.
    #[error("{path}: post-apply checksum {expected} but the database checksum is {actual}")]
    PostApplyMismatch {
        /// The LTX file.
        path: PathBuf,
        /// Its post-apply checksum.
        expected: Checksum,
        /// The database's checksum after applying.
        actual: Checksum,
    },
    /// Consecutive LTX files whose TXIDs or checksums do not chain.
    #[error("{path}: does not follow the previous file: {reason}")]
    BrokenChain {
        /// The file that does not follow.
        path: PathBuf,
        /// Which link is broken.
        reason: String,
    },
    /// The page size of a file differs from the database's or the other files'.
    #[error("{path}: page size {found} differs from {expected}")]
    PageSizeMismatch {
        /// The file.
        path: PathBuf,
        /// The page size in use.
        expected: u32,
        /// The file's page size.
        found: u32,
    },
    /// A file that carries no checksums, which ltxd refuses to apply or compact.
    #[error("{0}: the file carries no checksums (flag 0x2); ltxd applies only checked files")]
    Unchecked(PathBuf),
    /// Compression was asked of v3, whose pages are always LZ4 blocks.
    #[error("compression applies to v1 only: v3 pages are always LZ4 blocks")]
    CompressV3,
    /// The operation was given nothing to work on.
    #[error("no input files")]
    NoInput,
}

impl DatabaseError {
    pub(crate) fn ltx(path: impl Into<PathBuf>) -> impl FnOnce(LtxError) -> DatabaseError {
        let path = path.into();
        move |source| DatabaseError::Ltx { path, source }
    }

    pub(crate) fn chain(path: impl Into<PathBuf>, prev_max: TxId, min: TxId) -> DatabaseError {
        DatabaseError::BrokenChain {
            path: path.into(),
            reason: format!("expected TXID {}, found {min}", TxId(prev_max.0 + 1)),
        }
    }
}
