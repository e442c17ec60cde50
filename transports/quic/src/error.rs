//! [`QuicError`]: why a QUIC server or connector could not be set up.

use std::net::SocketAddr;
use std::time::Duration;

/// Why a QUIC server or connector could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The TLS configuration cannot carry QUIC (it must allow TLS 1.3 with AES-128-GCM).
    #[error("the TLS configuration cannot carry QUIC: {0}")]
    Tls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A timing option is out of range.
    #[error("{what} of {value:?} is out of range")]
    Option {
        /// The option, as its configuration key without the `quic.` prefix.
        what: &'static str,
        /// Its value.
        value: Duration,
    },
}
