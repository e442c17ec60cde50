//! The transport-neutral replication protocol of ltxd.
//!
//! This crate holds the vocabulary that every transport and the log share: transaction IDs,
//! checksums and positions. It performs no I/O. Transports (HTTP, QUIC) are thin adapters over it.

mod position;
pub mod wire;

pub use position::{Checksum, ParsePosError, Pos, TxId};
