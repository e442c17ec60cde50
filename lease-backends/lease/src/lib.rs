//! The lease that decides which ltxd node is primary, as a trait that every backend implements:
//! static (a fixed primary named in configuration), Consul and etcd.
//!
//! The trait follows LiteFS's leaser: a candidate acquires the lease or learns who holds it;
//! the holder renews it within its TTL; anyone can read the primary's info or watch it change.
//! Every lease carries an epoch that only grows, so replicas can fence off a deposed primary.
//! A primary can hand its lease to another node, which takes it over with
//! [`Leaser::acquire_existing`] and a new, greater epoch.
//!
//! The traits need no async runtime of their own; the network backends (Consul, etcd) expect
//! their futures to be polled inside a tokio runtime.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A future a backend returns; boxed so that the traits can be used as `dyn` objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who the primary is, as other nodes see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrimaryInfo {
    /// The primary's hostname.
    pub hostname: String,
    /// The URL replicas connect to.
    #[serde(rename = "advertise-url")]
    pub advertise_url: String,
}

/// Why a lease operation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Another node holds the lease.
    #[error("another node is primary")]
    PrimaryExists,
    /// Nobody holds the lease.
    #[error("there is no primary")]
    NoPrimary,
    /// The lease was lost: it expired or was taken over.
    #[error("the lease expired")]
    Expired,
    /// The backend cannot do this (for example, a static lease cannot be handed off).
    #[error("not supported by the {backend} lease: {what}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation.
        what: &'static str,
    },
    /// The cluster ID is already set, to a different value.
    #[error("the cluster ID is already set to {existing:?}")]
    ClusterIdMismatch {
        /// The cluster ID that is set.
        existing: String,
    },
    /// The backend's configuration is invalid (a bad URL, an unreadable TLS file, an empty key).
    #[error("invalid lease configuration: {0}")]
    Config(String),
    /// The backend failed (a network or server error); the operation may be retried.
    #[error("lease backend error: {0}")]
    Backend(String),
}

/// A lease backend: how a node becomes primary and learns who is.
pub trait Leaser: Send + Sync {
    /// The backend's name: "static", "consul" or "etcd".
    fn kind(&self) -> &'static str;

    /// This node's hostname, published while it holds the lease.
    fn hostname(&self) -> &str;

    /// This node's advertise URL, published while it holds the lease.
    fn advertise_url(&self) -> &str;

    /// Acquires the lease, or fails with [`LeaseError::PrimaryExists`].
    fn acquire(&self) -> BoxFuture<'_, Result<Box<dyn Lease>, LeaseError>>;

    /// Takes over the lease with ID `id`, which its holder hands to this node (the ID travels
    /// in the handoff frame). This node's info replaces the old holder's, and the new tenure's
    /// epoch is greater than the old one's. The old holder must stop acting as primary before it
    /// hands the lease over; afterwards its [`Lease::renew`] fails with [`LeaseError::Expired`]
    /// and its [`Lease::release`] does nothing. Fails with [`LeaseError::Expired`] if `id` is not
    /// the live lease that holds the primary key, and with [`LeaseError::Unsupported`] where the
    /// backend cannot hand off (static).
    fn acquire_existing<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Lease>, LeaseError>>;

    /// True if [`Leaser::acquire_existing`] can work: a primary refuses a handoff up front,
    /// without stopping its writes, when it cannot.
    fn supports_handoff(&self) -> bool {
        true
    }

    /// The current primary, or [`LeaseError::NoPrimary`].
    fn primary_info(&self) -> BoxFuture<'_, Result<PrimaryInfo, LeaseError>>;

    /// Watches the primary as it changes; see [`PrimaryWatch`].
    fn watch(&self) -> BoxFuture<'_, Result<Box<dyn PrimaryWatch>, LeaseError>>;

    /// The cluster ID stored with the lease, if one was set.
    fn cluster_id(&self) -> BoxFuture<'_, Result<Option<String>, LeaseError>>;

    /// Sets the cluster ID if none is set yet; it never changes once set. Setting the ID that is
    /// already set succeeds; setting another fails with [`LeaseError::ClusterIdMismatch`]. When
    /// several nodes race, exactly one ID wins.
    fn set_cluster_id<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LeaseError>>;
}

/// The primary as it changes, from [`Leaser::watch`].
///
/// The first call to [`next`](PrimaryWatch::next) returns the primary at the time of the call
/// (`None` when there is none, where [`Leaser::primary_info`] would fail with
/// [`LeaseError::NoPrimary`]). Each later call waits until the primary differs from the value it
/// last returned, and returns the new value. Changes in between are coalesced: a watcher sees
/// the latest state, not every state, so a node that loses the lease and wins it back quickly
/// may show no change at all. Only [`PrimaryInfo`] is compared, not epochs.
///
/// After an error the watch can be polled again: it reconnects, and returns the current primary
/// if it changed meanwhile. `next` is cancel-safe: dropping its future loses no change.
pub trait PrimaryWatch: Send {
    /// The primary when it differs from the last value returned (at once on the first call).
    fn next(&mut self) -> BoxFuture<'_, Result<Option<PrimaryInfo>, LeaseError>>;
}

/// A held lease.
pub trait Lease: Send + Sync {
    /// The backend's ID for this lease (a session or lease ID).
    fn id(&self) -> &str;

    /// The epoch of this tenure: greater than every earlier tenure's, including earlier tenures
    /// of the same node and the tenure this one took over by handoff.
    fn epoch(&self) -> u64;

    /// How long the lease lasts without renewal.
    fn ttl(&self) -> Duration;

    /// Renews the lease, or fails with [`LeaseError::Expired`] if it was lost: it expired, the
    /// key no longer carries this tenure, or it was handed to another node.
    fn renew(&self) -> BoxFuture<'_, Result<(), LeaseError>>;

    /// Releases the lease so another candidate can take over at once. Releasing a lease that
    /// was already lost (or handed off) does nothing and succeeds. Dropping a lease without
    /// releasing it leaves it to expire after its TTL, as if the node had died.
    fn release(&self) -> BoxFuture<'_, Result<(), LeaseError>>;
}

/// An error and its causes, outermost first, joined by `": "`, skipping a cause whose text the
/// previous one already contains: a network error's cause (the DNS failure, the refused
/// connection) is usually the part a user needs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod chain_tests {
    #[test]
    fn causes_are_appended_once() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(Wrapped(refused));
        assert_eq!(super::error_chain(&outer), "request failed: refused");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
