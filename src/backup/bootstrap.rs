//! A new node's first start: with an empty data directory and a backup configured, each
//! database in the bucket is restored into the log as one snapshot, so the node then follows
//! the primary from the bucket's position and the primary sends only the tail.

use std::io::{Seek, SeekFrom};

use super::chain::Chain;
use super::store::Remote;
use super::BackupError;
use crate::database::{compact_sources, LtxSource};
use crate::log::Log;
use crate::ltx::{detect_format, TxId};

/// Restores every database of `remote` into `log` if the log holds none; returns what was
/// restored.
pub async fn bootstrap(remote: &Remote, log: &Log) -> Result<Vec<(String, TxId)>, BackupError> {
    if !log.database_names().is_empty() {
        return Ok(Vec::new());
    }
    let mut restored = Vec::new();
    for db in remote.databases().await? {
        let listing = remote.list(&db).await?;
        let chain = Chain::build(&listing.names(), &listing.markers);
        let Some(tip) = chain.tip() else { continue };
        let plan = chain
            .plan(tip.max)
            .map_err(|source| BackupError::NotInBucket {
                db: db.clone(),
                source,
            })?;
        let scratch = tempfile::Builder::new()
            .prefix(".ltxd-bootstrap-")
            .tempdir_in(log.dir())?;
        let files = remote.download_all(&db, &plan, scratch.path()).await?;
        let format = detect_format(&mut std::fs::File::open(&files[0])?)?;
        let sources: Vec<LtxSource> = files.into_iter().map(LtxSource::file).collect();
        let mut snapshot = tempfile::tempfile_in(scratch.path())?;
        {
            let mut out = std::io::BufWriter::new(&mut snapshot);
            compact_sources(&sources, &mut out, format, 0, scratch.path())?;
            std::io::Write::flush(&mut out)?;
        }
        let len = snapshot.seek(SeekFrom::End(0))?;
        snapshot.seek(SeekFrom::Start(0))?;
        let record =
            log.database(&db)?
                .append_stream(format, len, std::io::BufReader::new(snapshot))?;
        tracing::info!(db, txid = %record.max_txid, "restored from the backup");
        restored.push((db, record.max_txid));
    }
    Ok(restored)
}
