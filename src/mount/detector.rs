//! Commit detection as a state machine without I/O.
//!
//! The FUSE adapter (`fs.rs`) turns every request that may matter to a transaction into an
//! [`Op`] and asks the [`Detector`] what it means. The detector answers with a [`Verdict`]:
//! pass the operation through, capture a rollback-journal or WAL commit before it, note that the
//! WAL was reset, or refuse it. Its state is the POSIX lock table of every file of the mount
//! (SQLite's locks are how transaction boundaries show at the file level); the replica's applier
//! and the handoff's drain take their locks through it too, as the owner [`APPLIER`].
//!
//! Commit points: in rollback-journal modes, the unlink (DELETE), truncation to zero (TRUNCATE)
//! or zeroed header (PERSIST) of the journal; without a journal file (MEMORY, OFF), the release
//! of the database file's EXCLUSIVE lock after the database was written and the journal was
//! not; in WAL mode, the release of the WAL write lock (`-shm` byte 120) by its holder, or the
//! close of `-shm` while holding it. Refusals: any change
//! on a replica except to `-shm`; a WAL write while nobody holds the WAL write lock (EXCLUSIVE
//! locking mode in WAL hides transaction boundaries); the checkpoint lock while another owner
//! holds the WAL write lock (a checkpoint must not copy frames the log does not have yet); the
//! removal of a database; a lock that conflicts.
//!
//! The adapter does the I/O the verdict asks for. For [`Op::Unlock`] and [`Op::Close`], the
//! lock table changes only when the adapter calls [`Detector::release`], after it captured the
//! commit: nothing can take the WAL write lock between a commit and its record.
//!
//! Tests replay operation traces recorded from real SQLite sessions through the mount (see
//! `trace.rs` and `fixtures/mount-traces/`).

use std::collections::HashMap;

use super::locks::{Conflict, Holder, LockKind, LockTable};
use super::names::{self, FileKind};
use super::parked::APPLIER;

/// The WAL index's write lock byte: a writer releasing it has committed.
pub(super) const WAL_WRITE_LOCK: u64 = 120;
/// The WAL index's checkpoint lock byte.
pub(super) const WAL_CKPT_LOCK: u64 = 121;
/// The size of the rollback journal's header, which PERSIST mode zeroes to commit.
const JOURNAL_HEADER_LEN: u64 = 28;
/// The first byte of SQLite's SHARED range in the database file: a writer holds it with a write
/// lock (EXCLUSIVE) while it changes the file.
const SHARED_FIRST: u64 = 0x4000_0002;

/// A file operation, as the detector sees it. Files are named by inode (see `names.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// An open (or create) of a database's file of this kind, for writing or not.
    Open {
        /// The kind of file.
        kind: FileKind,
        /// True when opened for writing.
        write: bool,
    },
    /// A write of `len` bytes at `offset`.
    Write {
        /// The file.
        ino: u64,
        /// Where the write starts.
        offset: u64,
        /// How many bytes.
        len: u64,
        /// True when every byte written is zero.
        zeroes: bool,
    },
    /// A change of the file's size.
    Truncate {
        /// The file.
        ino: u64,
        /// The new size.
        size: u64,
    },
    /// A removal of the file.
    Unlink {
        /// The file.
        ino: u64,
    },
    /// A non-blocking lock request (a blocking one retries it).
    Lock {
        /// The file.
        ino: u64,
        /// Who asks.
        holder: Holder,
        /// The first byte.
        start: u64,
        /// The last byte (inclusive).
        end: u64,
        /// Read or write.
        kind: LockKind,
    },
    /// A release of a byte range.
    Unlock {
        /// The file.
        ino: u64,
        /// Who releases.
        owner: u64,
        /// The first byte.
        start: u64,
        /// The last byte (inclusive).
        end: u64,
    },
    /// A close (FUSE's flush): the owner's locks on the file go.
    Close {
        /// The file.
        ino: u64,
        /// Whose locks.
        owner: u64,
    },
}

/// What the adapter does with an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Perform it (a lock request: it was granted).
    Pass,
    /// Capture the rollback-journal commit, then perform it (a lock request: it was granted,
    /// and is answered once the commit is captured).
    CommitJournal,
    /// Capture the WAL commit, then perform it.
    CommitWal,
    /// Perform it; the WAL is empty or gone, so capture forgets its read position.
    WalReset,
    /// Refuse it.
    Refuse(Refusal),
}

/// Why an operation is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The node is a replica: only the WAL index may change.
    ReadOnly,
    /// A WAL write without the WAL write lock: EXCLUSIVE locking mode in WAL.
    ExclusiveWal,
    /// The file may not be removed or resized (a database, a virtual file).
    NotPermitted,
    /// Another owner holds a conflicting lock; `only_applier` when that is the applier alone.
    Conflict {
        /// True when nothing but the applier blocks the request.
        only_applier: bool,
    },
    /// The checkpoint lock while another owner holds the WAL write lock.
    CommitInProgress,
}

impl Refusal {
    /// The errno the application sees.
    pub(super) fn errno(self) -> i32 {
        match self {
            Refusal::ReadOnly => libc::EROFS,
            Refusal::ExclusiveWal | Refusal::NotPermitted => libc::EPERM,
            Refusal::Conflict { .. } | Refusal::CommitInProgress => libc::EAGAIN,
        }
    }
}

/// The detector: the lock tables of the mount's files, what each database's files were written
/// with since its last rollback-journal commit point, and the rules above.
#[derive(Debug, Default)]
pub(super) struct Detector {
    tables: HashMap<u64, LockTable>,
    written: HashMap<usize, Written>,
}

/// Which of a database's files were written since its last rollback-journal commit point.
#[derive(Clone, Copy, Debug, Default)]
struct Written {
    database: bool,
    journal: bool,
}

impl Op {
    /// The file the operation is on, unless it is an open (which names only a kind of file).
    pub(super) fn ino(&self) -> Option<u64> {
        match *self {
            Op::Open { .. } => None,
            Op::Write { ino, .. }
            | Op::Truncate { ino, .. }
            | Op::Unlink { ino }
            | Op::Lock { ino, .. }
            | Op::Unlock { ino, .. }
            | Op::Close { ino, .. } => Some(ino),
        }
    }
}

impl Detector {
    /// What `op` means, with the node `writable` (primary) or not. Grants lock requests; never
    /// changes a lock table for [`Op::Unlock`] and [`Op::Close`] (see [`Detector::release`]).
    pub(super) fn decide(&mut self, op: &Op, writable: bool) -> Verdict {
        match *op {
            // SQLite opens the WAL and its index read-write even for a read-only connection,
            // and only falls back to read-only when the file already exists. Writes to the WAL
            // are still refused.
            Op::Open { kind, write } => match kind {
                FileKind::Wal | FileKind::Shm => Verdict::Pass,
                _ if write && !writable => Verdict::Refuse(Refusal::ReadOnly),
                _ => Verdict::Pass,
            },
            Op::Write {
                ino,
                offset,
                len,
                zeroes,
            } => {
                let Some((db, kind)) = names::from_inode(ino) else {
                    return Verdict::Pass;
                };
                if !writable && kind != FileKind::Shm {
                    return Verdict::Refuse(Refusal::ReadOnly);
                }
                match kind {
                    FileKind::Journal if offset == 0 && len == JOURNAL_HEADER_LEN && zeroes => {
                        self.journal_commit(db)
                    }
                    FileKind::Journal => {
                        self.written.entry(db).or_default().journal = true;
                        Verdict::Pass
                    }
                    FileKind::Database => {
                        self.written.entry(db).or_default().database = true;
                        Verdict::Pass
                    }
                    FileKind::Wal if !self.writer_holds(shm(db), WAL_WRITE_LOCK) => {
                        Verdict::Refuse(Refusal::ExclusiveWal)
                    }
                    _ => Verdict::Pass,
                }
            }
            Op::Truncate { ino, size } => match names::from_inode(ino) {
                None | Some((_, FileKind::Pos)) => Verdict::Refuse(Refusal::NotPermitted),
                Some((_, kind)) if !writable && kind != FileKind::Shm => {
                    Verdict::Refuse(Refusal::ReadOnly)
                }
                Some((db, FileKind::Journal)) if size == 0 => self.journal_commit(db),
                Some((_, FileKind::Wal)) if size == 0 => Verdict::WalReset,
                Some(_) => Verdict::Pass,
            },
            Op::Unlink { ino } => match names::from_inode(ino) {
                Some((_, kind)) if !writable && kind != FileKind::Shm => {
                    Verdict::Refuse(Refusal::ReadOnly)
                }
                Some((db, FileKind::Journal)) => self.journal_commit(db),
                Some((_, FileKind::Wal)) => Verdict::WalReset,
                Some((_, FileKind::Shm)) => Verdict::Pass,
                Some((_, FileKind::Database | FileKind::Pos)) | None => {
                    Verdict::Refuse(Refusal::NotPermitted)
                }
            },
            Op::Lock {
                ino,
                holder,
                start,
                end,
                kind,
            } => self.lock(ino, holder, start, end, kind),
            Op::Unlock {
                ino,
                owner,
                start,
                end,
            } => {
                if (start..=end).contains(&WAL_WRITE_LOCK) && self.holds_wal_write(ino, owner) {
                    Verdict::CommitWal
                } else if (start..=end).contains(&SHARED_FIRST) {
                    self.exclusive_released(ino, owner)
                } else {
                    Verdict::Pass
                }
            }
            Op::Close { ino, owner } => {
                if self.holds_wal_write(ino, owner) {
                    Verdict::CommitWal
                } else {
                    self.exclusive_released(ino, owner)
                }
            }
        }
    }

    /// Performs an [`Op::Unlock`] or [`Op::Close`] in the lock tables, once the adapter has acted
    /// on its verdict. Returns true if a lock was released. Other operations change nothing.
    pub(super) fn release(&mut self, op: &Op) -> bool {
        let (ino, released) = match *op {
            Op::Unlock {
                ino,
                owner,
                start,
                end,
            } => (
                ino,
                self.tables
                    .get_mut(&ino)
                    .is_some_and(|t| t.unlock(owner, start, end)),
            ),
            Op::Close { ino, owner } => (
                ino,
                self.tables
                    .get_mut(&ino)
                    .is_some_and(|t| !t.unlock_all(owner).is_empty()),
            ),
            _ => return false,
        };
        if self.tables.get(&ino).is_some_and(LockTable::is_empty) {
            self.tables.remove(&ino);
        }
        released
    }

    /// F_GETLK: the first lock of another owner that would block the request.
    pub(super) fn test(
        &self,
        ino: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: LockKind,
    ) -> Option<Conflict> {
        self.tables.get(&ino)?.test(owner, start, end, kind)
    }

    fn lock(&mut self, ino: u64, holder: Holder, start: u64, end: u64, kind: LockKind) -> Verdict {
        let owner = holder.owner;
        // EXCLUSIVE down to SHARED ends a write transaction, as a release does.
        let downgrade = (kind == LockKind::Read && (start..=end).contains(&SHARED_FIRST))
            .then(|| self.exclusive_holder(ino, owner))
            .flatten();
        let table = self.tables.entry(ino).or_default();
        // A checkpoint must not copy frames of a commit that is not in the log yet.
        let checkpoint = names::from_inode(ino).is_some_and(|(_, k)| k == FileKind::Shm)
            && (start..=end).contains(&WAL_CKPT_LOCK);
        let writer_busy = checkpoint && table.others_hold(owner, WAL_WRITE_LOCK, WAL_WRITE_LOCK);
        if writer_busy
            && table
                .test_ignoring(
                    owner,
                    APPLIER,
                    WAL_WRITE_LOCK,
                    WAL_WRITE_LOCK,
                    LockKind::Write,
                )
                .is_some()
        {
            return Verdict::Refuse(Refusal::CommitInProgress);
        }
        let conflict = table.test(owner, start, end, kind).is_some();
        if writer_busy || conflict {
            let only_applier = owner != APPLIER
                && table
                    .test_ignoring(owner, APPLIER, start, end, kind)
                    .is_none();
            return Verdict::Refuse(Refusal::Conflict { only_applier });
        }
        match table.try_lock(holder, start, end, kind) {
            Ok(()) => match downgrade {
                Some(db) => self.unjournaled_commit(db),
                None => Verdict::Pass,
            },
            Err(_) => Verdict::Refuse(Refusal::Conflict {
                only_applier: false,
            }),
        }
    }

    /// A rollback-journal commit point of database `db`.
    fn journal_commit(&mut self, db: usize) -> Verdict {
        self.written.remove(&db);
        Verdict::CommitJournal
    }

    /// `owner` lets go of what it holds of `ino` at SQLite's SHARED range: if that was the
    /// EXCLUSIVE lock on a database file that was written without a journal (journal modes
    /// MEMORY and OFF), the transaction has committed (or rolled back, restoring the pages).
    /// After a hot journal, its rollback's commit point is the journal's removal or reset.
    fn exclusive_released(&mut self, ino: u64, owner: u64) -> Verdict {
        match self.exclusive_holder(ino, owner) {
            Some(db) => self.unjournaled_commit(db),
            None => Verdict::Pass,
        }
    }

    /// The database whose file `ino` is, if `owner` (a writer) holds its EXCLUSIVE lock.
    fn exclusive_holder(&self, ino: u64, owner: u64) -> Option<usize> {
        let (db, kind) = names::from_inode(ino)?;
        let held = self
            .tables
            .get(&ino)
            .is_some_and(|t| t.held(owner, SHARED_FIRST) == Some(LockKind::Write));
        (kind == FileKind::Database && owner != APPLIER && held).then_some(db)
    }

    /// The end of an EXCLUSIVE lock on database `db`: a commit point if the database was
    /// written and the journal was not.
    fn unjournaled_commit(&mut self, db: usize) -> Verdict {
        match self.written.get(&db) {
            Some(w) if w.database && !w.journal => self.journal_commit(db),
            _ => Verdict::Pass,
        }
    }

    /// True when an owner other than the applier holds byte `at` of `ino`.
    fn writer_holds(&self, ino: u64, at: u64) -> bool {
        self.tables
            .get(&ino)
            .is_some_and(|t| t.others_hold(APPLIER, at, at))
    }

    /// True when `owner`, a writer (the applier never commits), holds the WAL write lock.
    fn holds_wal_write(&self, ino: u64, owner: u64) -> bool {
        owner != APPLIER
            && kind(ino) == Some(FileKind::Shm)
            && self
                .tables
                .get(&ino)
                .is_some_and(|t| t.held(owner, WAL_WRITE_LOCK) == Some(LockKind::Write))
    }
}

fn kind(ino: u64) -> Option<FileKind> {
    names::from_inode(ino).map(|(_, kind)| kind)
}

fn shm(db: usize) -> u64 {
    names::inode(db, FileKind::Shm)
}

#[cfg(test)]
mod tests;
