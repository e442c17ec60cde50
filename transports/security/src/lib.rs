//! TLS and authentication settings shared by ltxd's transports.
//!
//! Every transport that carries replication takes the same settings, under its own prefix
//! (`quic.` or `http.`): a certificate, its key, a CA to verify peers against, whether the server
//! demands client certificates (mTLS), an explicit development escape hatch, and a shared token.
//! This crate turns them into rustls configurations and a [`Token`]; the transports only use them.
//!
//! rustls runs with the **ring** crypto provider only, and TLS 1.3 only (QUIC requires it, and
//! every peer is ltxd). Nothing here reads the network.

mod error;
mod tls;
mod token;

pub use error::SecurityError;
pub use tls::{client_config, server_config, server_tls, ServerTls, TlsFiles};
pub use token::Token;
