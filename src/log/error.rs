//! Errors of the log.

use std::path::PathBuf;

use crate::database::DatabaseError;
use crate::ltx::{Checksum, LtxError, TxId};

impl From<LtxError> for LogError {
    /// An I/O error stays an I/O error; anything else is invalid LTX data.
    fn from(err: LtxError) -> LogError {
        match err {
            LtxError::Io(e) => LogError::Io(e),
            other => LogError::InvalidLtx(other),
        }
    }
}

/// A log operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The LTX data offered for append is invalid.
    #[error("invalid LTX data: {0}")]
    InvalidLtx(LtxError),
    /// An append that does not continue the log.
    #[error("database {db}: append of TXID {min} does not follow the log head at TXID {head}")]
    NotContiguous {
        /// The database.
        db: String,
        /// The log's last TXID.
        head: TxId,
        /// The appended file's first TXID.
        min: TxId,
    },
    /// An append whose pre-apply checksum is not the log's post-apply checksum.
    #[error("database {db}: pre-apply checksum {pre} does not match the log head checksum {head}")]
    ChecksumChain {
        /// The database.
        db: String,
        /// The log's post-apply checksum.
        head: Checksum,
        /// The appended file's pre-apply checksum.
        pre: Checksum,
    },
    /// A database name that cannot be a directory name.
    #[error("invalid database name {0:?}")]
    BadName(String),
    /// The log on disk is damaged somewhere other than its tail.
    #[error("{path}: corrupt log: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process has the data directory open.
    #[error(
        "{0}: the data directory is in use by another process (if no ltxd is running, one that was killed may be stuck in a request to its own mount: abort that mount's FUSE connection with `echo 1 > /sys/fs/fuse/connections/<minor>/abort`, the minor being the mount's device number in /proc/self/mountinfo)"
    )]
    InUse(PathBuf),
    /// An append failed and its bytes could not be cut back: the log refuses appends until it is
    /// opened again, when recovery cuts the torn tail.
    #[error("database {0}: an append failed and could not be undone; restart to recover the log")]
    Broken(String),
    /// No such database in the log.
    #[error("no database {0:?} in the log")]
    NoDatabase(String),
    /// A point in time that the log no longer (or never) held.
    #[error("database {db}: TXID {txid} cannot be restored: {reason}")]
    NotRetained {
        /// The database.
        db: String,
        /// The requested TXID.
        txid: TxId,
        /// Why.
        reason: String,
    },
    /// A database file operation failed.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The index cache failed; it is rebuilt from the segments.
    #[error("index: {0}")]
    Index(#[from] sled::Error),
}
