//! The primary's side: streams the log to each subscribed replica.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ltxd_protocol::primary::PrimaryStream;
use ltxd_protocol::{
    BoxFuture, Connector, DatabaseStatus, Features, NodeInfo, Pos, PrimaryRef, Promotion, Refusal,
    Service, StreamRequest, StreamResponse,
};
use tracing::Instrument;

use super::byte_channel;
use super::handoff::Handoffs;
use super::log_view::LogReader;
use super::stream_driver::{StreamDriver, CONCURRENT_READS, STREAM_BUFFER_BYTES};
use super::sync::SyncGate;
use super::NodeState;
use crate::config::SyncMode;
use crate::log::Log;
use crate::metrics::{DatabaseSample, Metrics, NodeSample};
use crate::mount::now_ms;
use crate::node::ClusterIdFile;

/// How many replica streams a node serves at once unless told otherwise.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 256;

/// Counts a subscription as open while it lives.
struct Subscription(Arc<AtomicUsize>);

impl Subscription {
    /// Counts one more subscription in `open`, unless it holds `max` already.
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Subscription> {
        open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Subscription(Arc::clone(open)))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves a node's log to replicas, over any transport, and hands the lease over on request.
pub struct LogService {
    log: Arc<Log>,
    node: Arc<NodeState>,
    handoffs: Arc<Handoffs>,
    cluster_id: Arc<ClusterIdFile>,
    connector: Arc<dyn Connector>,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
    max_subscriptions: usize,
    subscriptions: Arc<AtomicUsize>,
    /// Permits to read the log, shared by every stream.
    reads: Arc<tokio::sync::Semaphore>,
    /// Synchronous replication: the commits waiting for acknowledgements.
    sync: Arc<SyncGate>,
}

impl LogService {
    /// A service over `log`; streams are driven as tasks on `runtime`, at most
    /// [`DEFAULT_MAX_SUBSCRIPTIONS`] at once (see [`LogService::with_max_subscriptions`]).
    /// `handoffs` connects it to the node driver; `connector` reaches the primary when this node
    /// is promoted. Responses carry the cluster ID in `cluster_id`; `metrics` are served with
    /// the node's state sampled at each scrape.
    pub fn new(
        log: Arc<Log>,
        node: Arc<NodeState>,
        handoffs: Arc<Handoffs>,
        cluster_id: Arc<ClusterIdFile>,
        connector: Arc<dyn Connector>,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        LogService {
            log,
            node,
            handoffs,
            cluster_id,
            connector,
            metrics,
            runtime,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            subscriptions: Arc::default(),
            reads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_READS)),
            sync: SyncGate::new(SyncMode::Off, Duration::ZERO, None),
        }
    }

    /// Waits for replicas' acknowledgements as `sync` says: streams offer the `acks` feature
    /// when it is on, and acknowledgements reach it.
    pub fn with_sync(mut self, sync: Arc<SyncGate>) -> Self {
        self.sync = sync;
        self
    }

    /// At most `max` replica streams at once, over every transport; more are refused with
    /// [`Refusal::Overloaded`].
    pub fn with_max_subscriptions(mut self, max: usize) -> Self {
        self.max_subscriptions = max;
        self
    }

    /// Each database in the log, with its position.
    fn heads(&self) -> impl Iterator<Item = (String, Pos)> + '_ {
        self.log.database_names().into_iter().filter_map(|name| {
            let head = self.log.existing(&name).ok()?.head();
            Some((name, head))
        })
    }

    /// The node's state for a metrics scrape.
    fn sample(&self) -> NodeSample {
        let databases = self
            .heads()
            .map(|(name, head)| DatabaseSample {
                txid: head.txid.0,
                lag: self.node.database_lag_ms(&name).map(millis),
                name,
            })
            .collect();
        NodeSample {
            is_primary: self.node.is_primary(),
            subscribers: self.handoffs.stream_count(),
            lag: self.node.lag_ms(now_ms()).map(millis),
            databases,
        }
    }
}

impl Service for LogService {
    fn subscribe(&self, request: StreamRequest) -> Result<StreamResponse, Refusal> {
        if request.node_id == self.node.node_id {
            return Err(Refusal::SelfConnect);
        }
        if !self.node.is_primary() {
            return Err(Refusal::NotPrimary);
        }
        let Some(subscription) = Subscription::take(&self.subscriptions, self.max_subscriptions)
        else {
            return Err(Refusal::Overloaded(format!(
                "this node serves {} streams already",
                self.max_subscriptions
            )));
        };
        let request_node_id = request.node_id;
        let replica = ltxd_protocol::format_node_id(request_node_id);
        let offered = match self.sync.offers_acks() {
            true => Features::ALL,
            false => Features::ALL.without_acks(),
        };
        let machine = PrimaryStream::new(request, offered, &LogReader(&self.log));
        let features = machine.features();
        let acks = features
            .acks
            .then(|| self.sync.stream_opened(request_node_id));
        let (sender, receiver) = byte_channel::channel(STREAM_BUFFER_BYTES);
        let driver = StreamDriver {
            log: Arc::clone(&self.log),
            machine,
            sender,
            registration: self.handoffs.register(request_node_id),
            order: None,
            node: Arc::clone(&self.node),
            reads: Arc::clone(&self.reads),
        };
        let span = tracing::info_span!("stream", replica);
        self.runtime.spawn(
            async move {
                tracing::info!("replica subscribed");
                match driver.run().await {
                    Ok(()) => tracing::info!("stream ended"),
                    Err(err) => tracing::info!(%err, "stream ended"),
                }
                drop(acks);
                drop(subscription);
            }
            .instrument(span),
        );
        Ok(StreamResponse {
            node_id: self.node.node_id,
            cluster_id: self.cluster_id.get(),
            epoch: self.node.epoch(),
            features,
            body: Box::pin(receiver),
        })
    }

    fn info(&self) -> NodeInfo {
        let databases = self
            .heads()
            .map(|(name, head)| {
                let status = DatabaseStatus {
                    txid: format!("{:016x}", head.txid.0),
                    checksum: format!("{:016x}", head.post_apply_checksum.0),
                    lag_ms: self.node.database_lag_ms(&name),
                    backup_txid: self.node.backup(&name).map(|b| b.0),
                    backup_lag_ms: self.node.backup(&name).map(|b| b.1),
                };
                (name, status)
            })
            .collect();
        NodeInfo {
            cluster_id: self.cluster_id.get(),
            is_primary: self.node.is_primary(),
            candidate: self.node.candidate,
            path: self.node.data_dir.display().to_string(),
            primary: self
                .node
                .primary_hostname()
                .map(|hostname| PrimaryRef { hostname }),
            databases,
            proxy: self.node.proxy_status(),
            sync: (self.sync.offers_acks() && self.node.is_primary()).then(|| self.sync.info()),
        }
    }

    fn metrics(&self) -> String {
        self.sync.refresh_metrics();
        self.metrics.render(&self.sample())
    }

    fn ack(&self, node_id: u64, positions: BTreeMap<String, Pos>) -> Result<(), Refusal> {
        if !self.node.is_primary() {
            return Err(Refusal::NotPrimary);
        }
        // Only what this log holds can be acknowledged: a position beyond its head (another
        // primary's history) counts for nothing.
        let held: BTreeMap<String, Pos> = positions
            .into_iter()
            .filter(|(db, pos)| {
                self.log
                    .existing(db)
                    .is_ok_and(|log| log.head().txid >= pos.txid)
            })
            .collect();
        self.sync.acked(node_id, &held);
        Ok(())
    }

    fn handoff(&self, node_id: u64) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            if !self.node.is_primary() {
                return Err(Refusal::NotPrimary);
            }
            if !self.handoffs.is_subscribed(node_id) {
                return Err(Refusal::Failed(format!(
                    "node {} is not subscribed",
                    ltxd_protocol::format_node_id(node_id)
                )));
            }
            self.handoffs.request(node_id).await
        })
    }

    fn promote(&self) -> BoxFuture<'_, Result<Promotion, Refusal>> {
        Box::pin(async move {
            if !self.node.candidate {
                return Err(Refusal::NotCandidate);
            }
            if self.node.is_primary() {
                return Ok(Promotion::AlreadyPrimary);
            }
            let Some(url) = self.node.primary_url() else {
                return Err(Refusal::Failed("no primary is known".into()));
            };
            tracing::info!(primary = url, "asking the primary to hand over its lease");
            self.connector
                .handoff(&url, self.node.node_id)
                .await
                .map_err(|err| Refusal::Failed(format!("the primary at {url}: {err}")))?;
            Ok(Promotion::HandedOff)
        })
    }
}

/// A duration of `ms` milliseconds (none if negative).
fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
