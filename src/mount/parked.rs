//! Lock requests that wait for the applier instead of failing.
//!
//! On a replica, the applier of replicated transactions holds SQLite's locks for the moment it
//! takes to write one transaction. A reader's non-blocking lock request that only the applier
//! blocks is parked here rather than refused with `EAGAIN`: refused, SQLite would sleep in its
//! busy handler (milliseconds) and could be refused again by the next apply, so a stream of
//! applies would starve readers. A parked request is answered when the applier releases its
//! locks, before the applier can lock again, so readers and applies take turns. A parked
//! request holds no FUSE worker thread; its reply is sent later from the applier's thread.

use fuser::ReplyEmpty;

use super::detector::Op;
use super::locks::{Holder, LockKind};

/// The lock owner the applier uses; no FUSE lock owner takes this value.
pub(super) const APPLIER: u64 = u64::MAX;

/// A lock request waiting for the applier to release an inode's locks.
pub(super) struct ParkedLock {
    /// The inode whose lock table the request is for.
    pub ino: u64,
    /// Who asked.
    pub holder: Holder,
    /// The first byte of the range.
    pub start: u64,
    /// The last byte of the range (inclusive).
    pub end: u64,
    /// Read or write.
    pub kind: LockKind,
    /// Where the answer goes.
    pub reply: ReplyEmpty,
}

impl ParkedLock {
    /// The request, as the detector takes it.
    pub fn op(&self) -> Op {
        Op::Lock {
            ino: self.ino,
            holder: self.holder,
            start: self.start,
            end: self.end,
            kind: self.kind,
        }
    }
}
