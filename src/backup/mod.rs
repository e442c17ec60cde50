//! Continuous backup of the log to object storage (S3 or a directory), and restores from it.
//!
//! The primary's [`Uploader`] copies every record of every database's log to the bucket, one
//! object per record, each a valid LTX file named by its TXID range ([`layout`]). Only the
//! primary uploads, and the lease epoch in every name fences a deposed one ([`chain`]). Uploads
//! read the log and never hold a lock a commit needs, so a slow or unreachable bucket delays
//! only the backup. Where the backup stands is read back from the bucket at every start, so a
//! crash mid-upload resumes without a gap. [`restore`] rebuilds a database at any TXID the
//! bucket holds. The bucket layout and its limits are described in `docs/backup.md`.

pub mod bootstrap;
pub mod chain;
pub mod credentials;
pub mod layout;
pub mod metrics;
pub mod restore;
pub mod retention;
pub mod store;
pub mod uploader;

pub use chain::{Chain, PlanError};
pub use layout::{EpochMarker, ObjectName};
pub use metrics::BackupMetrics;
pub use store::{Listing, Location, Remote};
pub use uploader::Uploader;

use crate::config::{BackupConfig, BackupType};

/// What can go wrong with a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The object store refused or failed a request.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A local file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An object is not a valid LTX file.
    #[error("invalid LTX object: {0}")]
    Ltx(#[from] crate::ltx::LtxError),
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    /// Applying the objects failed.
    #[error(transparent)]
    Database(#[from] crate::database::DatabaseError),
    /// The TXID asked for is not in the bucket.
    #[error("database {db}: {source}")]
    NotInBucket {
        /// The database.
        db: String,
        /// Why.
        source: PlanError,
    },
    /// An object is shorter than an LTX header and trailer.
    #[error("object {0:?} is truncated")]
    Truncated(ObjectName),
    /// A record in the log ended before its length.
    #[error("the log record for {name:?} ended before its {len} bytes")]
    ShortRead {
        /// The object being written.
        name: ObjectName,
        /// The record's length.
        len: u64,
    },
    /// The bucket's chain is not this log's history, and this primary's epoch cannot supersede it.
    #[error("database {db}: the bucket's chain diverged from the log at TXID {txid} and epoch {epoch} is not newer than the bucket's {bucket_epoch}; not uploading")]
    Diverged {
        /// The database.
        db: String,
        /// The bucket's last TXID.
        txid: u64,
        /// This primary's epoch.
        epoch: u64,
        /// The epoch of the bucket's newest object.
        bucket_epoch: u64,
    },
    /// The bucket URL is not understood.
    #[error("backup location {0}")]
    Url(String),
}

impl Location {
    /// The location a `backup` section configures, or `None` when it configures none that ltxd
    /// acts on (no backup, or LiteFS Cloud).
    pub fn from_config(config: &BackupConfig) -> Option<Location> {
        match config.kind? {
            BackupType::File => Some(Location::Dir(config.path.clone().into())),
            BackupType::S3 => Some(Location::S3 {
                bucket: config.bucket.clone(),
                prefix: config.path.trim_matches('/').to_string(),
                endpoint: config.endpoint.clone(),
                region: config.region.clone(),
                force_path_style: config.force_path_style,
            }),
            BackupType::LitefsCloud => None,
        }
    }
}
