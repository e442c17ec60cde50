//! The primary's uploader: every interval, each database's records after the bucket's position
//! go to the bucket, one object per record.
//!
//! The uploader only reads the log (a cursor pins the records it has not uploaded against
//! retention), so a slow or unreachable bucket delays the backup and never a commit. A failed
//! pass forgets the database's state; the next pass reads the position back from the bucket and
//! goes on from there, so a crash or a failed request leaves neither a gap nor a duplicate.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tracing::Instrument;

use super::chain::Chain;
use super::layout::{EpochMarker, ObjectName, LEVEL_RECORDS, LEVEL_SNAPSHOT};
use super::metrics::{BackupMetrics, BackupStatus};
use super::store::{Listing, Remote};
use super::BackupError;
use crate::log::{DatabaseLog, Log, LogCursor, ReadFrom, Record};
use crate::ltx::{Header, Pos, TxId, HEADER_LEN};
use crate::replication::NodeState;

/// The default time between passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Uploads in flight at once, per database.
const CONCURRENCY: usize = 8;
/// Records taken from the log per batch.
const BATCH: usize = 64;
/// How many of the bucket's last objects are checked against the log for a common point.
const MAX_WALK_BACK: usize = 64;
/// How often retention runs in the bucket.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Where one database's backup stands.
struct DbState {
    /// The last position in the bucket.
    pos: Pos,
    /// The epoch this state was established under.
    epoch: u64,
    /// Keeps the log's records after `pos` from retention.
    _pin: Option<LogCursor>,
    /// The newest snapshot in the bucket.
    snapshot: TxId,
}

/// Uploads the log of every database to a bucket while the node is primary.
pub struct Uploader {
    remote: Remote,
    log: Arc<Log>,
    node: Arc<NodeState>,
    metrics: BackupMetrics,
    interval: Duration,
    retention: Duration,
    /// Each database's position and lag, as of its last pass.
    status: HashMap<String, BackupStatus>,
}

impl Uploader {
    /// An uploader of `log` to `remote`, keeping `retention` of history there.
    pub fn new(
        remote: Remote,
        log: Arc<Log>,
        node: Arc<NodeState>,
        metrics: BackupMetrics,
        retention: Duration,
    ) -> Uploader {
        Uploader {
            remote,
            log,
            node,
            metrics,
            interval: DEFAULT_INTERVAL,
            retention,
            status: HashMap::new(),
        }
    }

    /// Runs passes every interval until `stop` turns true.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut states: HashMap<String, DbState> = HashMap::new();
        let mut last_retention = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
            if !self.node.is_primary() {
                states.clear();
                continue;
            }
            let epoch = self.node.epoch().unwrap_or(0);
            let retain = last_retention.elapsed() >= RETENTION_EVERY;
            if retain {
                last_retention = tokio::time::Instant::now();
            }
            for name in self.log.database_names() {
                let Ok(db) = self.log.existing(&name) else {
                    continue;
                };
                let span = tracing::info_span!("backup", db = %name, epoch);
                let state = states.remove(&name);
                match self.pass(&db, epoch, state).instrument(span.clone()).await {
                    Ok(state) => {
                        self.report(&db, Some(&state));
                        states.insert(name.clone(), state);
                    }
                    Err(err) => {
                        span.in_scope(|| tracing::warn!(%err, "backup pass failed; retrying"));
                        self.metrics.error(&name);
                        self.report(&db, None);
                    }
                }
                if retain {
                    match super::retention::enforce(
                        &self.remote,
                        &name,
                        self.retention,
                        crate::mount::now_ms(),
                    )
                    .await
                    {
                        Ok(n) if n > 0 => {
                            tracing::info!(db = %name, deleted = n, "backup retention")
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!(db = %name, %err, "backup retention failed"),
                    }
                }
            }
        }
    }

    /// Records the position and lag of `db` for the metrics and `ltxd status` (`/info`).
    fn report(&mut self, db: &DatabaseLog, state: Option<&DbState>) {
        let entry = self.status.entry(db.name().to_string()).or_default();
        if let Some(state) = state {
            entry.txid = state.pos.txid.0;
        }
        let at = Pos::new(TxId(entry.txid), crate::ltx::Checksum(0));
        entry.lag_txids = db.head().txid.0.saturating_sub(entry.txid);
        entry.lag_ms = if entry.lag_txids == 0 {
            0
        } else {
            oldest_pending_ms(db, at).map_or(0, |t| (crate::mount::now_ms() - t).max(0) as u64)
        };
        self.metrics.set(db.name(), entry);
        self.node.set_backup(db.name(), entry.txid, entry.lag_ms);
    }

    /// One pass over `db`: resume from the bucket if needed, then upload what follows.
    async fn pass(
        &self,
        db: &Arc<DatabaseLog>,
        epoch: u64,
        state: Option<DbState>,
    ) -> Result<DbState, BackupError> {
        let mut state = match state.filter(|s| s.epoch == epoch) {
            Some(state) => state,
            None => self.resume(db, epoch).await?,
        };
        loop {
            let batch = next_batch(db, state.pos)?;
            if batch.is_empty() {
                break;
            }
            let mut uploads = Vec::with_capacity(batch.len());
            for (record, data) in batch {
                uploads.push(self.upload_record(db, record, data, epoch));
            }
            let mut results = futures::stream::iter(uploads).buffered(CONCURRENCY);
            while let Some(result) = results.next().await {
                let record = result?;
                self.metrics.uploaded(db.name(), record.len);
                state.pos = Pos::new(record.max_txid, record.post_apply_checksum);
            }
            state._pin = db.cursor(state.pos).ok();
        }
        self.upload_new_snapshot(db, &mut state, epoch).await?;
        Ok(state)
    }

    /// Uploads one record of the log as a level-0 object.
    async fn upload_record(
        &self,
        db: &DatabaseLog,
        record: Record,
        data: Box<dyn Read + Send>,
        epoch: u64,
    ) -> Result<Record, BackupError> {
        let name = ObjectName {
            min: record.min_txid,
            max: record.max_txid,
            epoch,
            level: LEVEL_RECORDS,
        };
        self.remote
            .upload(db.name(), name, record.len, data)
            .await?;
        Ok(record)
    }

    /// Uploads the log's newest snapshot when the bucket's is older and the chain reaches it.
    async fn upload_new_snapshot(
        &self,
        db: &DatabaseLog,
        state: &mut DbState,
        epoch: u64,
    ) -> Result<(), BackupError> {
        let Some(snapshot) = db.snapshots().last().cloned() else {
            return Ok(());
        };
        if snapshot.max_txid <= state.snapshot || snapshot.max_txid > state.pos.txid {
            return Ok(());
        }
        self.upload_snapshot_record(db, &snapshot, epoch).await?;
        state.snapshot = snapshot.max_txid;
        Ok(())
    }

    async fn upload_snapshot_record(
        &self,
        db: &DatabaseLog,
        snapshot: &Record,
        epoch: u64,
    ) -> Result<(), BackupError> {
        let name = ObjectName {
            min: TxId(1),
            max: snapshot.max_txid,
            epoch,
            level: LEVEL_SNAPSHOT,
        };
        let data = open_checked(db, snapshot)?;
        self.remote
            .upload(db.name(), name, snapshot.len, data)
            .await?;
        self.metrics.uploaded(db.name(), snapshot.len);
        tracing::info!(txid = %snapshot.max_txid, "uploaded a snapshot");
        Ok(())
    }

    /// Reads the bucket's position back and finds where the log continues it.
    async fn resume(&self, db: &Arc<DatabaseLog>, epoch: u64) -> Result<DbState, BackupError> {
        let listing = self.remote.list(db.name()).await?;
        if let Some(newer) = listing
            .markers
            .iter()
            .map(|m| m.epoch)
            .filter(|&e| e > epoch)
            .max()
        {
            return Err(BackupError::Diverged {
                db: db.name().to_string(),
                txid: 0,
                epoch,
                bucket_epoch: newer,
            });
        }
        let chain = Chain::build(&listing.names(), &listing.markers);
        let snapshot = chain
            .valid()
            .iter()
            .filter(|o| o.level == LEVEL_SNAPSHOT)
            .map(|o| o.max)
            .max()
            .unwrap_or(TxId::ZERO);
        let common = self.common_point(db, &chain, &listing).await?;
        let tip = chain.tip();
        if let (Some(tip), Some(common)) = (tip, common) {
            let newest_epoch = chain
                .valid()
                .iter()
                .filter(|o| o.max > common.txid)
                .map(|o| o.epoch)
                .max();
            if common.txid < tip.max && newest_epoch.is_some_and(|e| e >= epoch) {
                return Err(BackupError::Diverged {
                    db: db.name().to_string(),
                    txid: tip.max.0,
                    epoch,
                    bucket_epoch: newest_epoch.unwrap_or(0),
                });
            }
        }
        let start = common.map_or(TxId::ZERO, |p| p.txid);
        if tip.is_some() && common.is_none() {
            // The bucket holds a history this log does not share; only a newer epoch may
            // replace it, from TXID 1.
            let bucket_epoch = chain.valid().iter().map(|o| o.epoch).max().unwrap_or(0);
            if bucket_epoch >= epoch {
                return Err(BackupError::Diverged {
                    db: db.name().to_string(),
                    txid: tip.map_or(0, |t| t.max.0),
                    epoch,
                    bucket_epoch,
                });
            }
        }
        if !listing.markers.iter().any(|m| m.epoch == epoch) {
            let marker = EpochMarker {
                epoch,
                start: start.next().unwrap_or(TxId(1)),
            };
            self.remote.put_marker(db.name(), marker).await?;
            tracing::info!(start = %marker.start, "claimed the backup chain");
        }
        let mut state = DbState {
            pos: common.unwrap_or(Pos::ZERO),
            epoch,
            _pin: None,
            snapshot,
        };
        if db.read_from(state.pos) != ReadFrom::Records && containing(db, state.pos).is_none() {
            // The records after the bucket's position are gone from the log: start again from
            // a snapshot of the head.
            let db2 = Arc::clone(db);
            let record = tokio::task::spawn_blocking(move || db2.snapshot_at_head())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
            if let Some(record) = record {
                self.upload_snapshot_record(db, &record, epoch).await?;
                state.pos = Pos::new(record.max_txid, record.post_apply_checksum);
                state.snapshot = record.max_txid;
            }
        }
        state._pin = db.cursor(state.pos).ok();
        tracing::info!(txid = %state.pos.txid, "backup resumed from the bucket");
        Ok(state)
    }

    /// The newest position on the bucket's chain that the log's history holds.
    async fn common_point(
        &self,
        db: &DatabaseLog,
        chain: &Chain,
        listing: &Listing,
    ) -> Result<Option<Pos>, BackupError> {
        let Some(tip) = chain.tip() else {
            return Ok(Some(Pos::ZERO));
        };
        let plan = chain
            .plan(tip.max)
            .map_err(|source| BackupError::NotInBucket {
                db: db.name().to_string(),
                source,
            })?;
        for name in plan.iter().rev().take(MAX_WALK_BACK) {
            let size = listing
                .objects
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or(0, |(_, s, _)| *s);
            let trailer = self.remote.trailer(db.name(), *name, size).await?;
            let pos = Pos::new(name.max, trailer.post_apply_checksum);
            match db.read_from(pos) {
                ReadFrom::Records => return Ok(Some(pos)),
                ReadFrom::SnapshotNeeded => return Ok(Some(pos)),
                ReadFrom::Diverged => continue,
            }
        }
        Ok(None)
    }
}

/// A record and its LTX bytes, open for reading.
type Opened = (Record, Box<dyn Read + Send>);

/// Up to [`BATCH`] records after `pos`, opened. A record the log has compacted across `pos`
/// (it starts before the position) is taken whole: its object joins the chain where the
/// bucket's earlier objects end at its first TXID.
fn next_batch(db: &DatabaseLog, mut pos: Pos) -> Result<Vec<Opened>, BackupError> {
    let mut batch: Vec<Opened> = Vec::new();
    while batch.len() < BATCH {
        if let Some(next) = db.record_after(pos)? {
            pos = Pos::new(next.record.max_txid, next.record.post_apply_checksum);
            batch.push((next.record, Box::new(next.data)));
        } else if let Some(record) = containing(db, pos).filter(|_| pos.txid < db.head().txid) {
            let data = open_checked(db, &record)?;
            pos = Pos::new(record.max_txid, record.post_apply_checksum);
            batch.push((record, data));
        } else {
            break;
        }
    }
    Ok(batch)
}

/// The record that holds the TXID after `pos` without starting there.
fn containing(db: &DatabaseLog, pos: Pos) -> Option<Record> {
    let next = pos.txid.next()?;
    db.records()
        .into_iter()
        .find(|r| r.min_txid < next && next <= r.max_txid)
}

/// Opens `record`'s LTX bytes, checking that its header is the record's (a compaction may have
/// replaced the file since the record was listed).
fn open_checked(db: &DatabaseLog, record: &Record) -> Result<Box<dyn Read + Send>, BackupError> {
    let mut data = db.source(record).open_raw()?;
    let mut header = [0u8; HEADER_LEN];
    data.read_exact(&mut header)?;
    let decoded = Header::decode(&header)?;
    if decoded.min_txid != record.min_txid || decoded.max_txid != record.max_txid {
        return Err(BackupError::Io(std::io::Error::other(
            "the record moved while it was being read; retrying",
        )));
    }
    let rest = data.into_inner().take(record.len - HEADER_LEN as u64);
    Ok(Box::new(std::io::Cursor::new(header).chain(rest)))
}

/// The commit time of the first record after `pos`.
fn oldest_pending_ms(db: &DatabaseLog, pos: Pos) -> Option<i64> {
    db.record_after(pos)
        .ok()
        .flatten()
        .map(|r| r.record.timestamp)
        .or_else(|| containing(db, pos).map(|r| r.timestamp))
}
