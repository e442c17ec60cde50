//! The node's role: primary or replica, as the lease decides.
//!
//! [`RoleMachine`] is the decision logic as a state machine with no I/O: it takes lease events,
//! observations of who the primary is, the passing of time and signals, and answers with
//! commands for the driver (make the mount writable, follow a primary, release the lease). Time
//! is an input, so every transition is tested step by step.
//!
//! The rule that matters most: a primary stops accepting writes before its lease can expire,
//! whether or not it heard that it lost it. It treats the lease as good only until
//! `renewed_at + ttl - margin`, and demotes itself at that instant if no renewal came back.

mod backoff;
mod cluster_id;
mod driver;
mod epoch;
mod role;

pub use backoff::Backoff;
pub use cluster_id::{ClusterIdError, ClusterIdFile};
pub use driver::{NodeDriver, NodeParts};
pub use epoch::{EpochError, EpochFile};
pub use role::{Command, Delays, Input, Role, RoleMachine};
