//! The replica's side: subscribes to the primary and applies what it sends.

use std::sync::Arc;
use std::time::Duration;

use ltxd_protocol::replica::{LtxSummary, ReplicaStream, Step, StreamError};
use ltxd_protocol::wire::{FrameDecoder, WireError};
use ltxd_protocol::{ConnectError, Connector, Features, Pos, StreamRequest};
use tokio::sync::watch;

use super::spool::{Spool, SpoolError, Spooled};
use super::sync::Acker;
use super::{Handoffs, NodeState};
use crate::database::VerifiedLtx;
use crate::mount::{Applier, ApplyError};
use crate::node::{ClusterIdError, ClusterIdFile, EpochError, EpochFile};

/// How a follower connects.
#[derive(Clone, Debug)]
pub struct FollowerOptions {
    /// The primary's URL (its `lease.advertise-url`).
    pub primary_url: String,
    /// The first delay before reconnecting; it doubles up to `max_backoff`.
    pub reconnect_delay: Duration,
    /// The longest delay between attempts.
    pub max_backoff: Duration,
    /// One subscription per database instead of one for all (over QUIC, each is its own
    /// stream, so a slow database never holds up the others). New databases are found by
    /// asking the primary's `/info` every second.
    pub stream_per_database: bool,
}

/// How often a follower with a stream per database looks for new databases.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);
/// How often a failure to list the primary's databases is repeated as a warning while it lasts.
const FAILURE_WARNING_INTERVAL: Duration = Duration::from_secs(30);
/// How long one look for new databases may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long subscribing (connecting and the primary's answer) may take before a retry.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one subscription ended.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the stream broke: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("database {db}: {err}")]
    Spool { db: String, err: SpoolError },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the stream ended without an End frame")]
    Eof,
    #[error(transparent)]
    Epoch(#[from] EpochError),
    #[error(transparent)]
    ClusterId(#[from] ClusterIdError),
}

/// Follows the primary: subscribes, applies, and reconnects with backoff until stopped.
#[derive(Clone)]
pub struct Follower {
    applier: Applier,
    epochs: Arc<EpochFile>,
    cluster_id: Arc<ClusterIdFile>,
    connector: Arc<dyn Connector>,
    node: Arc<NodeState>,
    handoffs: Arc<Handoffs>,
    options: FollowerOptions,
}

impl Follower {
    /// A follower that applies through `applier`.
    /// Streams whose lease epoch is older than the highest in `epochs` are refused (fencing), and
    /// so are primaries of another cluster than `cluster_id`'s (adopted from the first primary).
    /// A lease the primary hands over is passed on through `handoffs`.
    pub fn new(
        applier: Applier,
        epochs: Arc<EpochFile>,
        cluster_id: Arc<ClusterIdFile>,
        connector: Arc<dyn Connector>,
        node: Arc<NodeState>,
        handoffs: Arc<Handoffs>,
        options: FollowerOptions,
    ) -> Follower {
        Follower {
            applier,
            epochs,
            cluster_id,
            connector,
            node,
            handoffs,
            options,
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        if self.options.stream_per_database {
            self.follow_each_database(stop).await;
        } else {
            self.follow(None, stop).await;
        }
    }

    /// Keeps one stream per database: the local ones, and the primary's as it reports them.
    async fn follow_each_database(self, mut stop: watch::Receiver<bool>) {
        let mut streams = std::collections::BTreeMap::new();
        // When a failure to list the primary's databases was last a warning. A refusal, a TLS
        // failure or a wrong token is a warning at once (with no database yet, nothing else
        // would say why the mount stays empty), and again every `FAILURE_WARNING_INTERVAL` while
        // it lasts; the attempts in between are debug lines.
        let mut warned: Option<tokio::time::Instant> = None;
        while !*stop.borrow() {
            let local = self.applier.positions().into_keys();
            let listed = tokio::time::timeout(
                DISCOVERY_TIMEOUT,
                self.connector.info(&self.options.primary_url),
            )
            .await
            .unwrap_or_else(|_| Err(ConnectError::Io("listing the databases timed out".into())));
            let remote = match listed {
                Ok(info) => {
                    if warned.take().is_some() {
                        tracing::info!(url = self.options.primary_url, "the primary answers again");
                    }
                    info.databases.into_keys().collect()
                }
                Err(err) => {
                    let now = tokio::time::Instant::now();
                    if warned.is_none_or(|at| now - at >= FAILURE_WARNING_INTERVAL) {
                        tracing::warn!(
                            url = self.options.primary_url,
                            %err,
                            "cannot list the primary's databases"
                        );
                        warned = Some(now);
                    } else {
                        tracing::debug!(%err, "cannot list the primary's databases");
                    }
                    Vec::new()
                }
            };
            for name in local.chain(remote) {
                streams
                    .entry(name.clone())
                    .or_insert_with(|| tokio::spawn(self.clone().follow(Some(name), stop.clone())));
            }
            tokio::select! {
                () = tokio::time::sleep(DISCOVERY_INTERVAL) => {}
                _ = stop.changed() => break,
            }
        }
        for (_, stream) in streams {
            let _ = stream.await;
        }
    }

    /// Follows database `only` (or every database), reconnecting with backoff, until stopped.
    async fn follow(self, only: Option<String>, mut stop: watch::Receiver<bool>) {
        let mut delay = self.options.reconnect_delay;
        while !*stop.borrow() {
            let result = tokio::select! {
                result = self.follow_once(only.as_deref()) => result,
                _ = stop.changed() => break,
            };
            match result {
                Ok(()) => {
                    tracing::info!(
                        url = self.options.primary_url,
                        "the primary ended the stream"
                    );
                    delay = self.options.reconnect_delay;
                }
                Err(FollowError::Connect(err)) => {
                    tracing::warn!(url = self.options.primary_url, %err, "cannot subscribe");
                }
                Err(err) => {
                    tracing::warn!(url = self.options.primary_url, %err, "replication stream failed");
                    delay = self.options.reconnect_delay;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => break,
            }
            delay = (delay * 2).min(self.options.max_backoff);
        }
    }

    /// One subscription, from connecting to the end of the stream.
    async fn follow_once(&self, only: Option<&str>) -> Result<(), FollowError> {
        let mut positions = self.applier.positions();
        if let Some(db) = only {
            positions.retain(|name, _| name == db);
        }
        let request = StreamRequest {
            node_id: self.node.node_id,
            filter: only.map(|db| [db.to_string()].into()),
            positions: positions.clone(),
            // Acknowledgements (synchronous replication) count only from candidates.
            features: match self.node.candidate {
                true => Features::ALL,
                false => Features::ALL.without_acks(),
            },
        };
        let mut response = tokio::time::timeout(
            SUBSCRIBE_TIMEOUT,
            self.connector
                .subscribe(&self.options.primary_url, &request),
        )
        .await
        .map_err(|_| ConnectError::Io("subscribing timed out".into()))??;
        // Another cluster's primary (and its epochs) must not touch this node.
        if let Some(id) = &response.cluster_id {
            self.cluster_id.accept(id)?;
        }
        match response.epoch {
            Some(epoch) => self.epochs.observe(epoch)?,
            None => tracing::debug!("the primary states no lease epoch (a LiteFS primary)"),
        }
        tracing::info!(
            url = self.options.primary_url,
            primary = ltxd_protocol::format_node_id(response.node_id),
            epoch = response.epoch,
            "subscribed"
        );
        let acker = response.features.acks.then(|| {
            let url = self.options.primary_url.clone();
            Acker::start(
                Arc::clone(&self.connector),
                url,
                self.node.node_id,
                positions.clone(),
            )
        });
        let mut machine = ReplicaStream::new(positions);
        let mut decoder = FrameDecoder::new();
        let mut spool = Spool::new(self.applier.spool_dir());
        let mut receiving = String::new();
        loop {
            let next = std::future::poll_fn(|cx| response.body.as_mut().poll_next(cx)).await;
            let Some(bytes) = next else {
                return Err(FollowError::Eof);
            };
            decoder.push(&bytes?);
            while let Some(event) = decoder.next_event()? {
                match machine.on_event(event)? {
                    Step::BeginLtx { db } => {
                        spool.begin();
                        receiving = db;
                    }
                    Step::LtxData(data) => {
                        spool.push(&data).await.map_err(|err| FollowError::Spool {
                            db: receiving.clone(),
                            err,
                        })?;
                    }
                    Step::LtxComplete { db } => {
                        let file = spool.finish().await.map_err(|err| FollowError::Spool {
                            db: db.clone(),
                            err,
                        })?;
                        let summary = summarize(file.ltx());
                        machine.check(&db, &summary)?;
                        self.apply(&db, file, &summary).await?;
                        machine.applied(&db, &summary);
                        if let Some(acker) = &acker {
                            acker.applied(
                                &db,
                                Pos::new(summary.max_txid, summary.post_apply_checksum),
                            );
                        }
                    }
                    Step::Ready => {
                        if !self.node.is_ready() {
                            tracing::info!("caught up with the primary");
                        }
                        self.node.set_ready();
                    }
                    Step::Heartbeat { timestamp_ms } => self.node.heard_from_primary(timestamp_ms),
                    Step::Handoff { lease_id } => {
                        tracing::info!(lease_id, "the primary handed its lease to this node");
                        self.handoffs.offer(lease_id);
                    }
                    Step::End => return Ok(()),
                    Step::Nothing => {}
                }
            }
        }
    }

    /// Applies one checked file on a blocking thread (the applier waits for readers' locks),
    /// and removes its spool file.
    async fn apply(
        &self,
        db: &str,
        file: Spooled,
        summary: &LtxSummary,
    ) -> Result<(), FollowError> {
        let span = tracing::debug_span!("apply", db, txid = summary.max_txid.0);
        let _enter = span.enter();
        let applier = self.applier.clone();
        let name = db.to_string();
        tokio::task::spawn_blocking(move || applier.apply(&name, file.ltx()))
            .await
            .map_err(|err| FollowError::Io(std::io::Error::other(err)))??;
        self.node.applied(db, summary.timestamp_ms);
        if summary.is_snapshot() {
            tracing::info!(db, txid = summary.max_txid.0, "snapshot applied");
        }
        Ok(())
    }
}

/// What the replica checks before applying a verified file.
fn summarize(ltx: &VerifiedLtx) -> LtxSummary {
    let verified = ltx.verified();
    LtxSummary {
        min_txid: verified.header.min_txid,
        max_txid: verified.header.max_txid,
        pre_apply_checksum: verified.header.pre_apply_checksum,
        post_apply_checksum: verified.trailer.post_apply_checksum,
        timestamp_ms: verified.header.timestamp,
    }
}
