//! Synchronous replication (`replication.sync`): a commit returns to the application only after
//! enough candidate replicas hold it in their own log. See `docs/replication.md`.
//!
//! `waits.rs` is the primary's bookkeeping as a state machine without I/O; `gate.rs` runs it
//! for the mount and the replication service (timer, log lines, metrics); `acker.rs` is the
//! replica's side, which sends what its log holds back to the primary.

mod acker;
mod gate;
mod waits;

pub use acker::Acker;
pub use gate::{AckStream, SyncGate};
pub use waits::{AckWaits, Outcome, Released, SyncStatus};
