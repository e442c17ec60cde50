//! Commit detection as a state machine without I/O.
//!
//! The FUSE adapter (`fs.rs`) turns every request that may matter to a transaction into an
//! [`Op`] and asks the [`Detector`] what it means. The detector answers with a [`Verdict`]:
//! pass the operation through, capture a rollback-journal commit before it, capture a WAL
//! commit once it is performed, note that the WAL was reset, or refuse it.
//!
//! The kernel keeps SQLite's POSIX locks itself (the mount does not ask for `FUSE_POSIX_LOCKS`),
//! so a read transaction costs no request; commits are recognised from the writes that make
//! them. Commit points: in rollback-journal modes, the unlink (DELETE), truncation to zero
//! (TRUNCATE) or zeroed header (PERSIST) of the journal, captured before that operation is
//! performed; in WAL mode, the write that completes a commit frame (a frame whose header
//! carries the database size), SQLite's own commit point, captured after the write and before
//! it returns: SQLite updates the WAL index only after that, so no reader and no checkpoint can
//! see the frame before the log has it, in any locking mode. Refusals: any change on a
//! replica except to `-shm` (and the daemon's own opens, which only lock); a database write in
//! rollback mode with no journal written since the last commit point and no WAL (journal modes
//! MEMORY and OFF have no commit point the mount can see); the removal of a database.
//!
//! Tests replay operation traces recorded from real SQLite sessions through the mount (see
//! `trace.rs` and `fixtures/mount-traces/`).

use std::collections::HashMap;

use super::names::{self, FileKind};

/// The size of the rollback journal's header, which PERSIST mode zeroes to commit.
const JOURNAL_HEADER_LEN: u64 = 28;
/// The size of a WAL frame header; SQLite writes it on its own, then the page.
pub(super) const WAL_FRAME_HEADER_LEN: u64 = 24;

/// A file operation, as the detector sees it. Files are named by inode (see `names.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// An open (or create) of a database's file of this kind, for writing or not.
    Open {
        /// The kind of file.
        kind: FileKind,
        /// True when opened for writing.
        write: bool,
        /// True when the daemon itself opens it (the applier's or the drain's descriptor,
        /// which takes SQLite's locks and never writes).
        daemon: bool,
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
        /// A WAL write: a frame header whose database size is set (a commit frame). A
        /// database write: a WAL file exists beside the database (a checkpoint's write).
        flag: bool,
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
}

/// What the adapter does with an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Perform it.
    Pass,
    /// Capture the rollback-journal commit, then perform it.
    CommitJournal,
    /// Perform it (it completes a commit frame), then capture the WAL commit before answering.
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
    /// A database write with neither a journal nor a WAL: journal modes MEMORY and OFF.
    NoJournal,
    /// The file may not be removed or resized (a database, a virtual file).
    NotPermitted,
}

impl Refusal {
    /// The errno the application sees.
    pub(super) fn errno(self) -> i32 {
        match self {
            Refusal::ReadOnly => libc::EROFS,
            Refusal::NoJournal | Refusal::NotPermitted => libc::EPERM,
        }
    }
}

/// The detector: per database, whether its journal was written since its last commit point,
/// and where the page of a WAL commit frame whose header was written goes.
#[derive(Debug, Default)]
pub(super) struct Detector {
    journal_written: HashMap<usize, bool>,
    commit_frame_page: HashMap<usize, u64>,
}

impl Op {
    /// The file the operation is on, unless it is an open (which names only a kind of file).
    pub(super) fn ino(&self) -> Option<u64> {
        match *self {
            Op::Open { .. } => None,
            Op::Write { ino, .. } | Op::Truncate { ino, .. } | Op::Unlink { ino } => Some(ino),
        }
    }
}

impl Detector {
    /// What `op` means, with the node `writable` (primary) or not.
    pub(super) fn decide(&mut self, op: &Op, writable: bool) -> Verdict {
        match *op {
            // SQLite opens the WAL and its index read-write even for a read-only connection,
            // and only falls back to read-only when the file already exists. Writes to the WAL
            // are still refused.
            Op::Open {
                kind,
                write,
                daemon,
            } => match kind {
                FileKind::Wal | FileKind::Shm => Verdict::Pass,
                _ if write && !writable && !daemon => Verdict::Refuse(Refusal::ReadOnly),
                _ => Verdict::Pass,
            },
            Op::Write {
                ino,
                offset,
                len,
                zeroes,
                flag,
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
                        self.journal_written.insert(db, true);
                        Verdict::Pass
                    }
                    FileKind::Database
                        if !flag && !self.journal_written.get(&db).copied().unwrap_or(false) =>
                    {
                        Verdict::Refuse(Refusal::NoJournal)
                    }
                    FileKind::Wal => self.wal_write(db, offset, len, flag),
                    _ => Verdict::Pass,
                }
            }
            Op::Truncate { ino, size } => match names::from_inode(ino) {
                None | Some((_, FileKind::Pos)) => Verdict::Refuse(Refusal::NotPermitted),
                Some((_, kind)) if !writable && kind != FileKind::Shm => {
                    Verdict::Refuse(Refusal::ReadOnly)
                }
                Some((db, FileKind::Journal)) if size == 0 => self.journal_commit(db),
                Some((db, FileKind::Wal)) if size == 0 => self.wal_reset(db),
                Some(_) => Verdict::Pass,
            },
            Op::Unlink { ino } => match names::from_inode(ino) {
                Some((_, kind)) if !writable && kind != FileKind::Shm => {
                    Verdict::Refuse(Refusal::ReadOnly)
                }
                Some((db, FileKind::Journal)) => self.journal_commit(db),
                Some((db, FileKind::Wal)) => self.wal_reset(db),
                Some((_, FileKind::Shm)) => Verdict::Pass,
                Some((_, FileKind::Database | FileKind::Pos)) | None => {
                    Verdict::Refuse(Refusal::NotPermitted)
                }
            },
        }
    }

    /// A rollback-journal commit point of database `db`.
    fn journal_commit(&mut self, db: usize) -> Verdict {
        self.journal_written.remove(&db);
        Verdict::CommitJournal
    }

    /// A write to the WAL of database `db`. SQLite writes each frame as its header, then its
    /// page: the header of a commit frame announces the write that commits.
    fn wal_write(&mut self, db: usize, offset: u64, len: u64, commit_header: bool) -> Verdict {
        if len == WAL_FRAME_HEADER_LEN && offset > WAL_FRAME_HEADER_LEN {
            if commit_header {
                self.commit_frame_page
                    .insert(db, offset + WAL_FRAME_HEADER_LEN);
            } else {
                self.commit_frame_page.remove(&db);
            }
            return Verdict::Pass;
        }
        if self.commit_frame_page.get(&db) == Some(&offset) {
            self.commit_frame_page.remove(&db);
            return Verdict::CommitWal;
        }
        Verdict::Pass
    }

    /// The WAL of database `db` is emptied or removed.
    fn wal_reset(&mut self, db: usize) -> Verdict {
        self.commit_frame_page.remove(&db);
        Verdict::WalReset
    }
}

#[cfg(test)]
mod tests;
