//! `ltxd mount`: the FUSE file system that captures SQLite commits into the log.
//!
//! Applications use SQLite unchanged on the mount. Each database's files pass through to
//! `<data-dir>/dbs/<name>/{database,journal,wal,shm}`. The kernel keeps SQLite's locks. A
//! rollback-journal commit is captured when the journal is deleted (DELETE), truncated
//! (TRUNCATE) or zeroed (PERSIST); a WAL commit at the write that completes its commit frame
//! (see `detector.rs`). Either way the LTX record is fdatasynced in the log before the file
//! operation that completes the commit returns, so an acknowledged commit is always in the log.

mod apply;
mod busy_poll;
mod capture;
mod detector;
mod fs;
mod gate;
mod locks;
mod names;
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
