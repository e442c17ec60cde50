//! The primary's side: streams the log to each subscribed replica.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ltxd_protocol::primary::{PrimaryStream, Send};
use ltxd_protocol::wire::{encode_frame, Frame, MAX_CHUNK_LEN};
use ltxd_protocol::{
    BoxFuture, Connector, DatabaseStatus, Features, NodeInfo, Pos, PrimaryRef, Promotion, Refusal,
    Service, StreamRequest, StreamResponse,
};
use tokio::sync::mpsc;

use super::handoff::{HandoffOrder, Handoffs, StreamRegistration};
use super::log_view::LogReader;
use super::{NodeState, HEARTBEAT_INTERVAL};
use crate::log::{Log, LogError, Record};
use crate::metrics::{DatabaseSample, Metrics, NodeSample};
use crate::mount::now_ms;
use crate::node::ClusterIdFile;

/// How many encoded pieces may wait to be sent to one replica.
const STREAM_BUFFER: usize = 32;

/// Serves a node's log to replicas, over any transport, and hands the lease over on request.
pub struct LogService {
    log: Arc<Log>,
    node: Arc<NodeState>,
    handoffs: Arc<Handoffs>,
    cluster_id: Arc<ClusterIdFile>,
    connector: Arc<dyn Connector>,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
}

impl LogService {
    /// A service over `log`; streams are driven on threads that wait through `runtime`.
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
        }
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
        let request_node_id = request.node_id;
        let replica = ltxd_protocol::format_node_id(request_node_id);
        let machine = PrimaryStream::new(request, Features::ALL, &LogReader(&self.log));
        let features = machine.features();
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let driver = StreamDriver {
            log: Arc::clone(&self.log),
            machine,
            sender,
            runtime: self.runtime.clone(),
            registration: self.handoffs.register(request_node_id),
            order: None,
            node: Arc::clone(&self.node),
        };
        std::thread::Builder::new()
            .name(format!("stream-{replica}"))
            .spawn(move || {
                let span = tracing::info_span!("stream", replica);
                let _enter = span.enter();
                tracing::info!("replica subscribed");
                match driver.run() {
                    Ok(()) => tracing::info!("stream ended"),
                    Err(err) => tracing::info!(%err, "stream ended"),
                }
            })
            .map_err(|err| Refusal::BadRequest(format!("cannot start the stream: {err}")))?;
        Ok(StreamResponse {
            node_id: self.node.node_id,
            cluster_id: self.cluster_id.get(),
            epoch: self.node.epoch(),
            features,
            body: Box::pin(ReceiverStream(receiver)),
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
        }
    }

    fn metrics(&self) -> String {
        self.metrics.render(&self.sample())
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

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("the replica went away")]
    Gone,
    #[error("this node is no longer the primary")]
    Demoted,
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs one replica's stream on its own thread: blocking reads of the log, and waits for
/// changes through the runtime.
struct StreamDriver {
    log: Arc<Log>,
    machine: PrimaryStream,
    sender: mpsc::Sender<std::io::Result<Bytes>>,
    runtime: tokio::runtime::Handle,
    registration: StreamRegistration,
    /// The handoff this stream was ordered to send, once it has caught the replica up.
    order: Option<Arc<HandoffOrder>>,
    node: Arc<NodeState>,
}

impl StreamDriver {
    fn run(mut self) -> Result<(), StreamEnd> {
        let mut changes = self.log.changes();
        loop {
            while let Some(send) = self.machine.poll(&LogReader(&self.log)) {
                self.send(send)?;
            }
            if self.machine.is_finished() {
                break;
            }
            let sender = self.sender.clone();
            let orders = &mut self.registration.orders;
            let woke = self.runtime.block_on(async {
                tokio::select! {
                    changed = changes.changed() => if changed.is_ok() { Wake::Changed } else { Wake::Closed },
                    () = tokio::time::sleep(HEARTBEAT_INTERVAL) => Wake::Tick,
                    () = sender.closed() => Wake::Closed,
                    Some(order) = orders.recv() => Wake::HandOff(order),
                }
            });
            // A demoted primary stops streaming (within a heartbeat), so that its replicas look
            // for the new primary instead of waiting on a log that no longer grows.
            if self.order.is_none() && !self.node.is_primary() {
                return Err(StreamEnd::Demoted);
            }
            match woke {
                Wake::Changed => self.machine.changed(&LogReader(&self.log)),
                Wake::Tick => self.machine.tick(),
                Wake::Closed => return Err(StreamEnd::Gone),
                Wake::HandOff(order) => {
                    // Writes have stopped: send everything up to the head, then the lease.
                    self.machine.changed(&LogReader(&self.log));
                    self.machine.hand_off(order.lease_id.clone());
                    self.order = Some(order);
                }
            }
        }
        self.frame(&Frame::End)
    }

    fn send(&mut self, send: Send) -> Result<(), StreamEnd> {
        match send {
            Send::Record { db, after } => {
                let log = self.log.existing(&db)?;
                let record = log.record_after(after)?;
                match record {
                    Some(next)
                        if next.record.min_txid == next.record.max_txid
                            || self.machine.features().range_files =>
                    {
                        self.ltx(&db, &next.record, next.data)?;
                    }
                    // Compacted between the plan and the read: the plan is made again.
                    _ => self.machine.sent(&db, after),
                }
            }
            Send::Snapshot { db } => {
                let log = self.log.existing(&db)?;
                if let Some(snapshot) = log.snapshot_at_head()? {
                    let data = log.source(&snapshot).open_raw()?;
                    self.ltx(&db, &snapshot, data)?;
                }
            }
            Send::DropDb { db } => self.frame(&Frame::DropDb { db })?,
            Send::Ready => self.frame(&Frame::Ready)?,
            Send::Heartbeat => self.frame(&Frame::Heartbeat {
                timestamp_ms: crate::mount::now_ms(),
            })?,
            Send::Handoff { lease_id } => {
                if self.order.take().is_some_and(|order| order.start_sending()) {
                    tracing::info!("handing the lease to the replica");
                    self.frame(&Frame::Handoff {
                        lease_id: lease_id.into_bytes(),
                    })?;
                } else {
                    tracing::warn!("the handoff was cancelled before the replica caught up");
                }
            }
        }
        Ok(())
    }

    /// Sends one LTX file: its frame, its bytes in chunks, and the end of the chunks.
    fn ltx(&mut self, db: &str, record: &Record, mut data: impl Read) -> Result<(), StreamEnd> {
        let size = if self.machine.features().frame_lengths {
            record.len
        } else {
            0
        };
        let mut out = Vec::new();
        encode_frame(
            &Frame::Ltx {
                db: db.to_string(),
                size,
            },
            &mut out,
        );
        let mut piece = vec![0u8; MAX_CHUNK_LEN];
        loop {
            let n = read_full(&mut data, &mut piece)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&piece[..n]);
            if out.len() >= 4 * MAX_CHUNK_LEN {
                self.bytes(std::mem::take(&mut out))?;
            }
        }
        out.extend_from_slice(&0u16.to_be_bytes());
        self.bytes(out)?;
        self.machine
            .sent(db, Pos::new(record.max_txid, record.post_apply_checksum));
        Ok(())
    }

    fn frame(&mut self, frame: &Frame) -> Result<(), StreamEnd> {
        let mut out = Vec::new();
        encode_frame(frame, &mut out);
        self.bytes(out)
    }

    fn bytes(&mut self, bytes: Vec<u8>) -> Result<(), StreamEnd> {
        self.sender
            .blocking_send(Ok(Bytes::from(bytes)))
            .map_err(|_| StreamEnd::Gone)
    }
}

enum Wake {
    Changed,
    Tick,
    Closed,
    HandOff(Arc<HandoffOrder>),
}

/// Reads until `buf` is full or the reader ends.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// The receiving end of a stream's channel, as the protocol's byte stream.
struct ReceiverStream(mpsc::Receiver<std::io::Result<Bytes>>);

impl futures_core::Stream for ReceiverStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A duration of `ms` milliseconds (none if negative).
fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
