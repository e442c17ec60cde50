//! The QUIC transport for ltxd replication.
//!
//! A replica keeps one QUIC connection to each primary and opens one bidirectional stream per
//! subscription (typically one per database, through [`ltxd_protocol::StreamRequest::filter`]),
//! so that a slow database never holds up another: QUIC's flow control is per stream. Each
//! stream starts with a small request header and a response header (see `docs/quic.md`), then
//! carries LiteFS's `/stream` frame bytes exactly as the HTTP transport does, until the stream
//! finishes.
//!
//! TLS is always on (rustls with the ring provider, ALPN [`ALPN`]); the configurations come from
//! `ltxd-transport-security`. Replicas authenticate with a shared token, a client certificate,
//! or both.
//!
//! The crate is a thin adapter: everything it carries comes from or goes to a
//! [`ltxd_protocol::Service`] or a [`ltxd_protocol::Connector`].

mod body;
mod client;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod options;
mod server;

pub use client::QuicConnector;
pub use error::QuicError;
pub use options::QuicOptions;
pub use server::{serve, QuicServer};

/// The ALPN protocol ID of this transport.
pub const ALPN: &[u8] = b"ltxd/1";

/// The URL scheme this transport handles (`quic://host:port`).
pub const SCHEME: &str = "quic";
