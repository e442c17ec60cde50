//! Replication: the primary serves its log to replicas, and replicas apply what it sends.
//!
//! The protocol logic lives in `ltxd-protocol` as state machines with no I/O
//! ([`ltxd_protocol::primary::PrimaryStream`], [`ltxd_protocol::replica::ReplicaStream`]). This
//! module drives them against the log and the mount: [`LogService`] implements the
//! transport-neutral [`ltxd_protocol::Service`] for any transport to serve, and [`Follower`]
//! subscribes through any [`ltxd_protocol::Connector`] and applies each file through the
//! mount's [`crate::mount::Applier`]. [`Handoffs`] carries a lease handoff between the
//! streams, the service and the node driver.

mod byte_channel;
mod connector;
mod follower;
mod handoff;
mod log_view;
mod node;
mod service;
mod spool;
mod stream_driver;
pub mod sync;

pub use connector::SchemeConnector;
pub use follower::{Follower, FollowerOptions};
pub use handoff::{HandoffInbox, HandoffOrder, HandoffRequest, Handoffs, StreamRegistration};
pub use node::NodeState;
pub use service::{LogService, DEFAULT_MAX_SUBSCRIPTIONS};

/// How often the primary sends a heartbeat on an idle stream.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
