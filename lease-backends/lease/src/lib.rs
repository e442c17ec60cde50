//! The lease that decides which ltxd node is primary, as a trait that every backend implements:
//! static (a fixed primary named in configuration), Consul and etcd.
//!
//! The trait follows LiteFS's leaser: a candidate acquires the lease or learns who holds it;
//! the holder renews it within its TTL; anyone can read the primary's info. Every lease carries
//! an epoch that only grows, so replicas can fence off a deposed primary.

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

    /// The current primary, or [`LeaseError::NoPrimary`].
    fn primary_info(&self) -> BoxFuture<'_, Result<PrimaryInfo, LeaseError>>;

    /// The cluster ID stored with the lease, if one was set.
    fn cluster_id(&self) -> BoxFuture<'_, Result<Option<String>, LeaseError>>;

    /// Sets the cluster ID if none is set yet; it never changes once set.
    fn set_cluster_id<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LeaseError>>;
}

/// A held lease.
pub trait Lease: Send + Sync {
    /// The backend's ID for this lease (a session or lease ID).
    fn id(&self) -> &str;

    /// The epoch of this tenure: greater than every earlier holder's.
    fn epoch(&self) -> u64;

    /// How long the lease lasts without renewal.
    fn ttl(&self) -> Duration;

    /// Renews the lease, or fails with [`LeaseError::Expired`] if it was lost.
    fn renew(&self) -> BoxFuture<'_, Result<(), LeaseError>>;

    /// Releases the lease so another candidate can take over at once.
    fn release(&self) -> BoxFuture<'_, Result<(), LeaseError>>;
}
