//! `ltxd mount`: the FUSE file system that captures SQLite commits into the log.
//!
//! Applications use SQLite unchanged on the mount. Each database's files pass through to
//! `<data-dir>/dbs/<name>/{database,journal,wal,shm}`. A rollback-journal commit is captured when
//! the journal is deleted (DELETE), truncated (TRUNCATE) or zeroed (PERSIST), or without a
//! journal file (MEMORY, OFF) when the writer's EXCLUSIVE lock ends; a WAL commit when the
//! writer releases the WAL write lock (see `detector.rs`). Either way the LTX record is
//! fdatasynced in the log before the file operation that completes the commit returns, so an
//! acknowledged commit is always in the log.

mod apply;
mod busy_poll;
mod capture;
mod detector;
mod fs;
mod gate;
mod lock_wait;
mod locks;
mod names;
mod parked;
mod recovery;
mod session;
mod shm;
mod trace;
mod wal;

pub use apply::{Applier, ApplyError};
pub use capture::{now_ms, CaptureError, CaptureOptions};
pub use fs::{LtxdFs, MountOptions, NodeView};
pub use gate::CommitGate;
pub use session::{clear_stale_mount, Mounted};
