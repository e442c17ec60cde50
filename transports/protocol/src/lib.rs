//! The transport-neutral replication protocol of ltxd.
//!
//! This crate holds what every transport and the log share: transaction IDs, checksums and
//! positions; LiteFS's `/stream` wire format; the subscription request and its negotiated
//! extensions; the primary's and the replica's stream logic as state machines; and the
//! [`Service`] and [`Connector`] traits a transport adapts. It performs no I/O.

mod position;
pub mod primary;
pub mod replica;
mod request;
mod service;
pub mod wire;

pub use position::{Checksum, ParsePosError, Pos, TxId};
pub use request::{
    format_node_id, parse_node_id, Features, StreamRequest, CLUSTER_ID_HEADER, EPOCH_HEADER,
    FEATURES_HEADER, NODE_ID_HEADER,
};
pub use service::{
    BoxFuture, ByteStream, ConnectError, Connector, DatabaseStatus, NodeInfo, PrimaryRef,
    Promotion, ProxyStatus, Refusal, Service, StreamResponse, SyncInfo,
};
