//! Rebuilding a database from the bucket, at a TXID or a time.
//!
//! The objects of the plan are streamed to files in a temporary directory beside the output,
//! then applied in one pass (each verified in full before its pages are written), so memory
//! stays bounded whatever the database's size.

use std::path::Path;

use super::chain::Chain;
use super::layout::ObjectName;
use super::store::Remote;
use super::BackupError;
use crate::database::{self, LtxSource};
use crate::ltx::TxId;

/// Which point of the history to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The newest TXID in the bucket.
    Latest,
    /// Exactly this TXID.
    Txid(TxId),
    /// The last TXID committed at or before this time (ms since the Unix epoch).
    Timestamp(i64),
}

/// The TXID `target` stands for in `chain`.
pub async fn resolve(
    remote: &Remote,
    db: &str,
    chain: &Chain,
    target: Target,
) -> Result<TxId, BackupError> {
    let not_in_bucket = |source| BackupError::NotInBucket {
        db: db.to_string(),
        source,
    };
    match target {
        Target::Txid(txid) => Ok(txid),
        Target::Latest => chain
            .tip()
            .map(|t| t.max)
            .ok_or_else(|| not_in_bucket(super::PlanError::NoBase(TxId::ZERO))),
        Target::Timestamp(ms) => {
            // Commit times grow with the TXID along one history: search by header timestamp.
            let mut candidates: Vec<ObjectName> = chain.valid().to_vec();
            candidates.sort_by_key(|o| (o.max, o.level));
            candidates.dedup_by_key(|o| o.max);
            let (mut lo, mut hi) = (0, candidates.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if remote.header(db, candidates[mid]).await?.timestamp <= ms {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo.checked_sub(1)
                .map(|i| candidates[i].max)
                .ok_or_else(|| not_in_bucket(super::PlanError::NoBase(TxId::ZERO)))
        }
    }
}

/// Writes database `db` as it was at `target` to `out`, atomically; returns the TXID.
pub async fn restore(
    remote: &Remote,
    db: &str,
    target: Target,
    out: &Path,
) -> Result<TxId, BackupError> {
    let listing = remote.list(db).await?;
    let chain = Chain::build(&listing.names(), &listing.markers);
    let txid = resolve(remote, db, &chain, target).await?;
    let plan = chain
        .plan(txid)
        .map_err(|source| BackupError::NotInBucket {
            db: db.to_string(),
            source,
        })?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".ltxd-restore-")
        .tempdir_in(parent)?;
    let files = remote.download_all(db, &plan, scratch.path()).await?;
    let sources: Vec<LtxSource> = files.into_iter().map(LtxSource::file).collect();
    let temp = scratch.path().join("db");
    database::apply_files(&temp, &sources)?;
    crate::durable::persist(&temp, out)?;
    Ok(txid)
}
