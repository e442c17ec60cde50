//! The replica's side: subscribes to the primary and applies what it sends.

use std::sync::Arc;
use std::time::Duration;

use ltxd_protocol::replica::{LtxSummary, ReplicaStream, Step, StreamError};
use ltxd_protocol::wire::{FrameDecoder, WireError};
use ltxd_protocol::{ConnectError, Connector, Features, StreamRequest};
use tokio::sync::watch;

use super::NodeState;
use crate::ltx::{detect_format, Decoder, LtxError};
use crate::mount::{Applier, ApplyError};
use crate::node::{EpochError, EpochFile};

/// How a follower connects.
#[derive(Clone, Debug)]
pub struct FollowerOptions {
    /// The primary's URL (its `lease.advertise-url`).
    pub primary_url: String,
    /// The first delay before reconnecting; it doubles up to `max_backoff`.
    pub reconnect_delay: Duration,
    /// The longest delay between attempts.
    pub max_backoff: Duration,
}

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
    #[error("database {db}: the primary sent a bad LTX file: {err}")]
    BadLtx { db: String, err: LtxError },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the stream ended without an End frame")]
    Eof,
    #[error(transparent)]
    Epoch(#[from] EpochError),
}

/// Follows the primary: subscribes, applies, and reconnects with backoff until stopped.
pub struct Follower {
    applier: Applier,
    epochs: Arc<EpochFile>,
    connector: Arc<dyn Connector>,
    node: Arc<NodeState>,
    options: FollowerOptions,
}

impl Follower {
    /// A follower that applies through `applier`.
    /// Streams whose lease epoch is older than the highest in `epochs` are refused (fencing).
    pub fn new(
        applier: Applier,
        epochs: Arc<EpochFile>,
        connector: Arc<dyn Connector>,
        node: Arc<NodeState>,
        options: FollowerOptions,
    ) -> Follower {
        Follower {
            applier,
            epochs,
            connector,
            node,
            options,
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut delay = self.options.reconnect_delay;
        while !*stop.borrow() {
            let result = tokio::select! {
                result = self.follow_once() => result,
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
    async fn follow_once(&self) -> Result<(), FollowError> {
        let positions = self.applier.positions();
        let request = StreamRequest {
            node_id: self.node.node_id,
            filter: None,
            positions: positions.clone(),
            features: Features::ALL,
        };
        let mut response = self
            .connector
            .subscribe(&self.options.primary_url, &request)
            .await?;
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
        let mut machine = ReplicaStream::new(positions);
        let mut decoder = FrameDecoder::new();
        let mut ltx = Vec::new();
        loop {
            let next = std::future::poll_fn(|cx| response.body.as_mut().poll_next(cx)).await;
            let Some(bytes) = next else {
                return Err(FollowError::Eof);
            };
            decoder.push(&bytes?);
            while let Some(event) = decoder.next_event()? {
                match machine.on_event(event)? {
                    Step::BeginLtx { .. } => ltx.clear(),
                    Step::LtxData(data) => ltx.extend_from_slice(&data),
                    Step::LtxComplete { db } => {
                        let file = std::mem::take(&mut ltx);
                        let summary = summarize(&file).map_err(|err| FollowError::BadLtx {
                            db: db.clone(),
                            err,
                        })?;
                        machine.check(&db, &summary)?;
                        self.apply(&db, file, &summary).await?;
                        machine.applied(&db, &summary);
                    }
                    Step::Ready => {
                        if !self.node.is_ready() {
                            tracing::info!("caught up with the primary");
                        }
                        self.node.set_ready();
                    }
                    Step::Heartbeat { timestamp_ms } => self.node.heard_from_primary(timestamp_ms),
                    Step::Handoff { lease_id } => {
                        tracing::info!(
                            lease_id,
                            "the primary offered a handoff, which this lease does not support"
                        );
                    }
                    Step::End => return Ok(()),
                    Step::Nothing => {}
                }
            }
        }
    }

    /// Applies one checked file on a blocking thread (the applier waits for readers' locks).
    async fn apply(
        &self,
        db: &str,
        file: Vec<u8>,
        summary: &LtxSummary,
    ) -> Result<(), FollowError> {
        let span = tracing::debug_span!("apply", db, txid = summary.max_txid.0);
        let _enter = span.enter();
        let applier = self.applier.clone();
        let name = db.to_string();
        tokio::task::spawn_blocking(move || applier.apply(&name, &file))
            .await
            .map_err(|err| FollowError::Io(std::io::Error::other(err)))??;
        self.node.applied(db, summary.timestamp_ms);
        if summary.is_snapshot() {
            tracing::info!(db, txid = summary.max_txid.0, "snapshot applied");
        }
        Ok(())
    }
}

/// Verifies a received LTX file and reads what the replica checks before applying it.
fn summarize(file: &[u8]) -> Result<LtxSummary, LtxError> {
    let format = detect_format(&mut std::io::Cursor::new(file))?;
    let verified = Decoder::new(file, format)?.verify()?;
    Ok(LtxSummary {
        min_txid: verified.header.min_txid,
        max_txid: verified.header.max_txid,
        pre_apply_checksum: verified.header.pre_apply_checksum,
        post_apply_checksum: verified.trailer.post_apply_checksum,
        timestamp_ms: verified.header.timestamp,
    })
}
