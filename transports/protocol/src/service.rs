//! The boundary between the replication protocol and a transport.
//!
//! A transport is a thin adapter. On the primary it carries a [`StreamRequest`] to a
//! [`Service`] and the service's frame bytes back; on the replica a [`Connector`] does the
//! reverse. The frame bytes are LiteFS's `/stream` encoding ([`crate::wire`]) on every
//! transport, so nothing above this boundary knows which transport is in use.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;

use crate::{Features, Pos, StreamRequest};

/// A future a transport returns; boxed so that the traits can be used as `dyn` objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Encoded frames, as the primary produces them and the replica consumes them.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The primary's answer to a subscription.
pub struct StreamResponse {
    /// The primary's node ID.
    pub node_id: u64,
    /// The cluster ID, if the primary has one.
    pub cluster_id: Option<String>,
    /// The primary's lease epoch, when it states one (an ltxd extension).
    pub epoch: Option<u64>,
    /// The extensions in use on this stream.
    pub features: Features,
    /// The frames.
    pub body: ByteStream,
}

impl std::fmt::Debug for StreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResponse")
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("epoch", &self.epoch)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

/// Why a primary refused a subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// This node is not the primary.
    #[error("this node is not the primary")]
    NotPrimary,
    /// The caller is this node.
    #[error("cannot connect to self")]
    SelfConnect,
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The caller did not authenticate.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// This node may never become primary (`lease.candidate: false`), so it cannot be promoted.
    #[error("this node is not a candidate")]
    NotCandidate,
    /// The request was valid, but it could not be carried out (the replica to hand off to is
    /// not subscribed, the lease cannot be handed off, the primary is unreachable).
    #[error("{0}")]
    Failed(String),
    /// The node serves as many streams as it allows; the caller may try again later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

impl Refusal {
    /// The status code a transport answers with, as HTTP's (LiteFS's where it has one).
    pub fn status(&self) -> u16 {
        match self {
            Refusal::SelfConnect | Refusal::BadRequest(_) => 400,
            Refusal::Unauthorized(_) => 401,
            Refusal::NotCandidate => 409,
            Refusal::Overloaded(_) => 429,
            Refusal::Failed(_) => 500,
            Refusal::NotPrimary => 503,
        }
    }
}

/// What a promotion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promotion {
    /// The node was primary already.
    AlreadyPrimary,
    /// The primary handed its lease to this node; it becomes primary once it has taken it over.
    HandedOff,
}

/// A node's state, as `GET /info` reports it. The first fields are LiteFS's; `databases` is an
/// ltxd extension that LiteFS clients ignore.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The cluster ID, if set.
    #[serde(rename = "clusterID", default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// True on the primary.
    pub is_primary: bool,
    /// True if the node may become primary.
    pub candidate: bool,
    /// The data directory.
    #[serde(default)]
    pub path: String,
    /// The primary, as this node knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<PrimaryRef>,
    /// Each database's position and lag.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub databases: BTreeMap<String, DatabaseStatus>,
    /// The node's HTTP proxy, when it runs one (an ltxd extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyStatus>,
    /// Synchronous replication on a primary that has it on (an ltxd extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncInfo>,
}

/// Synchronous replication on a primary, as `/info` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncInfo {
    /// `replication.sync`: `one`, `quorum` or `all`.
    pub mode: String,
    /// True while degraded to asynchronous replication after a `sync-timeout`.
    #[serde(default)]
    pub degraded: bool,
    /// Time spent degraded since the node started (ms).
    #[serde(default)]
    pub degraded_ms: u64,
    /// Replicas connected with an acknowledging stream.
    #[serde(default)]
    pub replicas: usize,
    /// Commits waiting for acknowledgements now.
    #[serde(default)]
    pub waiting: usize,
    /// A moving average of how long acknowledged commits waited (µs).
    #[serde(default)]
    pub ack_wait_us: u64,
}

/// A node's HTTP proxy, as `/info` reports it: where other nodes' proxies forward to, and its
/// counters since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// `host:port` of the proxy, as other nodes reach it.
    pub addr: String,
    /// Requests sent on to the primary's proxy.
    #[serde(default)]
    pub forwarded: u64,
    /// Reads that waited for this node to reach their `__txid`.
    #[serde(default)]
    pub waited: u64,
    /// Reads whose wait ran out.
    #[serde(default)]
    pub timed_out: u64,
}

/// The primary, as `/info` names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrimaryRef {
    /// The primary's hostname.
    pub hostname: String,
}

/// One database on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// The TXID, as 16 hex digits.
    pub txid: String,
    /// The post-apply checksum, as 16 hex digits.
    pub checksum: String,
    /// On a replica, how far behind the primary's clock the last applied transaction is (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<i64>,
    /// On a primary that backs up: the last TXID in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_txid: Option<u64>,
    /// On a primary that backs up: the age of the oldest transaction not yet in the bucket
    /// (ms; 0 when caught up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_lag_ms: Option<u64>,
}

/// The primary side: what a transport serves.
pub trait Service: Send + Sync + 'static {
    /// Opens a replication stream for a replica.
    fn subscribe(&self, request: StreamRequest) -> Result<StreamResponse, Refusal>;
    /// This node's state.
    fn info(&self) -> NodeInfo;
    /// On the primary: stops accepting writes and hands the lease to the subscribed replica
    /// `node_id`, after it has been sent every transaction. Resolves once the handoff frame is on
    /// its way (LiteFS's `POST /handoff`).
    fn handoff(&self, node_id: u64) -> BoxFuture<'_, Result<(), Refusal>>;
    /// On a candidate replica: asks the primary to hand its lease to this node (LiteFS's
    /// `POST /promote`).
    fn promote(&self) -> BoxFuture<'_, Result<Promotion, Refusal>>;
    /// This node's metrics in Prometheus's text exposition format (`GET /metrics` over HTTP).
    fn metrics(&self) -> String;
    /// Replica `node_id` has each database up to the position given durably in its own log (an
    /// ltxd extension, `POST /ack` over HTTP). Only counted from a replica whose stream
    /// negotiated [`crate::Features::acks`]; refused with [`Refusal::NotPrimary`] elsewhere.
    fn ack(&self, node_id: u64, positions: BTreeMap<String, Pos>) -> Result<(), Refusal>;
}

/// Why a replica could not subscribe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not one this transport handles.
    #[error("bad URL {0}")]
    BadUrl(String),
    /// The peer refused.
    #[error("refused with status {status}: {message}")]
    Refused {
        /// The status code (HTTP's, or its equivalent).
        status: u16,
        /// The peer's message.
        message: String,
    },
    /// The connection failed.
    #[error("connection failed: {0}")]
    Io(String),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// The replica side: how a transport reaches a primary.
pub trait Connector: Send + Sync {
    /// Subscribes to the primary at `url`.
    fn subscribe<'a>(
        &'a self,
        url: &'a str,
        request: &'a StreamRequest,
    ) -> BoxFuture<'a, Result<StreamResponse, ConnectError>>;
    /// Reads a node's state.
    fn info<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<NodeInfo, ConnectError>>;
    /// Asks the primary at `url` to hand its lease to the replica `node_id` (see
    /// [`Service::handoff`]).
    fn handoff<'a>(&'a self, url: &'a str, node_id: u64)
        -> BoxFuture<'a, Result<(), ConnectError>>;
    /// Tells the primary at `url` that this replica, `node_id`, has each database up to the
    /// position given durably in its log (see [`Service::ack`]). Sent only on a stream that
    /// negotiated [`crate::Features::acks`].
    fn ack<'a>(
        &'a self,
        url: &'a str,
        node_id: u64,
        positions: &'a BTreeMap<String, Pos>,
    ) -> BoxFuture<'a, Result<(), ConnectError>>;
}
