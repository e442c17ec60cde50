//! Applying replicated LTX files to a mounted database, atomically with respect to its readers.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::capture::{CaptureError, Unlogged};
use super::detector::{Op, Verdict};
use super::fs::Shared;
use super::locks::{Holder, LockKind};
use super::names::{self, FileKind};
use super::parked::APPLIER;
use super::shm::{rewrite_header, ShmState, SHM_HEADER_LEN};
use crate::database::VerifiedLtx;
use crate::ltx::Pos;

/// PENDING, RESERVED and the SHARED range of a SQLite database file.
const DATABASE_LOCKS: (u64, u64) = (0x4000_0000, 0x4000_0002 + 509);
/// The WAL index's WRITE, CKPT, RECOVER and READ0-4 lock bytes.
const SHM_LOCKS: (u64, u64) = (120, 127);
/// How long an apply waits for readers to finish.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Why a replicated LTX file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Readers held the database longer than the applier waits.
    #[error("database {0}: readers held their locks too long")]
    Busy(String),
    /// The capture layer refused or failed the file.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// An I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Applies replicated LTX files to the mount's databases.
#[derive(Clone)]
pub struct Applier {
    shared: Arc<Shared>,
}

impl Applier {
    pub(super) fn new(shared: Arc<Shared>) -> Applier {
        Applier { shared }
    }

    /// Gives the applier the kernel notifier, once the file system is mounted.
    pub fn set_notifier(&self, notifier: fuser::Notifier) {
        let _ = self.shared.notifier.set(notifier);
    }

    /// Makes the mount writable (the node became primary) or read-only (it was demoted). A
    /// write that arrives after a demotion fails with `EROFS`, so SQLite reports "attempt to
    /// write a readonly database".
    pub fn set_writable(&self, writable: bool) {
        let was = self
            .shared
            .writable
            .swap(writable, std::sync::atomic::Ordering::SeqCst);
        if was != writable {
            // `.primary` and `.lag` come or go.
            self.shared.listing_changed();
        }
    }

    /// Makes the mount read-only once in-flight write transactions have finished: takes every
    /// database's writer lock (RESERVED, or the WAL index's WRITE lock), waiting up to `wait`
    /// in all, refuses writes, and lets go. A writer that keeps its lock longer (an EXCLUSIVE
    /// locking-mode connection) is cut off mid-transaction, as a demotion would. Returns the
    /// databases that were still busy.
    pub fn stop_writes_gracefully(&self, wait: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + wait;
        let mut held = Vec::new();
        let mut busy = Vec::new();
        for name in self.shared.database_names() {
            let Some(db) = self.shared.database_index(name.as_str()) else {
                continue;
            };
            let Some(capture) = self.shared.capture(db) else {
                continue;
            };
            let (ino, byte) = if in_wal_mode(&capture.layout().database_file()) {
                (names::inode(db, FileKind::Shm), SHM_LOCKS.0)
            } else {
                (names::inode(db, FileKind::Database), DATABASE_LOCKS.0 + 1)
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lock(ino, (byte, byte), left) {
                Ok(()) => held.push(ino),
                Err(_) => busy.push(name),
            }
        }
        self.set_writable(false);
        for ino in held {
            self.shared.release_applier_locks(ino);
        }
        busy
    }

    /// The position of database `name`, or zero if the mount does not have it.
    pub fn position(&self, name: &str) -> Pos {
        self.shared
            .database_index(name)
            .and_then(|db| self.shared.capture(db))
            .map_or(Pos::ZERO, |c| c.pos())
    }

    /// The position of every database the mount has.
    pub fn positions(&self) -> std::collections::BTreeMap<String, Pos> {
        let names = self.shared.database_names();
        names
            .into_iter()
            .map(|name| {
                let pos = self.position(&name);
                (name, pos)
            })
            .collect()
    }

    /// Where the follower spools received LTX files: `<data-dir>/spool`, emptied when the log
    /// is opened.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.shared.log.spool_dir()
    }

    /// Applies one verified LTX file to database `name` (creating it), holding its SQLite locks so that
    /// readers see the database before or after the file, never in between; then rewrites the
    /// WAL index for WAL-mode readers and drops the kernel's cached pages.
    pub fn apply(&self, name: &str, ltx: &VerifiedLtx) -> Result<Pos, ApplyError> {
        let db = self.shared.open_database(name)?;
        let capture = self
            .shared
            .capture(db)
            .ok_or_else(|| ApplyError::Busy(name.to_string()))?;
        let (db_ino, shm_ino) = (
            names::inode(db, FileKind::Database),
            names::inode(db, FileKind::Shm),
        );
        let lock = |ino: u64, range: (u64, u64)| self.lock(ino, range, LOCK_WAIT);
        // In WAL mode every connection holds SHARED on the database file for as long as it is
        // open, and a read transaction holds a read mark in the WAL index: the applier takes
        // every WAL index lock. In rollback mode a read transaction holds SHARED: the applier
        // takes PENDING first, as a SQLite writer does, so that new readers wait (parked)
        // while it waits for the current ones to finish.
        let locked = if in_wal_mode(&capture.layout().database_file()) {
            lock(shm_ino, SHM_LOCKS)
        } else {
            lock(db_ino, (DATABASE_LOCKS.0, DATABASE_LOCKS.0))
                .and_then(|()| lock(db_ino, DATABASE_LOCKS))
        };
        let written = match locked {
            Err(_) => Err(ApplyError::Busy(name.to_string())),
            Ok(()) => self.apply_locked(&capture, db_ino, shm_ino, ltx),
        };
        for ino in [db_ino, shm_ino] {
            self.shared.release_applier_locks(ino);
        }
        // A new database, or one that was empty, enters the listing; `.lag` appears with the
        // first file from the primary.
        self.shared.listing_changed();
        Ok(capture.log_replicated(written?)?)
    }

    /// Takes bytes `start..=end` of `ino` with a write lock as the applier, waiting up to
    /// `wait` for their holders to let go.
    fn lock(&self, ino: u64, (start, end): (u64, u64), wait: Duration) -> Result<(), ()> {
        let holder = Holder {
            owner: APPLIER,
            pid: std::process::id(),
        };
        let request = Op::Lock {
            ino,
            holder,
            start,
            end,
            kind: LockKind::Write,
        };
        self.shared
            .lock_changes
            .wait_for(wait, || match self.shared.decide(&request) {
                Verdict::Pass => Ok(()),
                _ => Err(()),
            })
    }

    fn apply_locked<'a>(
        &self,
        capture: &super::capture::Capture,
        db_ino: u64,
        shm_ino: u64,
        ltx: &'a VerifiedLtx,
    ) -> Result<Unlogged<'a>, ApplyError> {
        self.invalidate(shm_ino);
        let written = capture.write_replicated(ltx)?;
        self.rewrite_wal_index(&capture.layout().shm(), &capture.layout().database_file())?;
        // Readers may hold the WAL open: empty it rather than remove it.
        if let Ok(wal) = std::fs::OpenOptions::new()
            .write(true)
            .open(capture.layout().wal())
        {
            wal.set_len(0)?;
        }
        self.invalidate(db_ino);
        self.invalidate(shm_ino);
        Ok(written)
    }

    /// Rewrites the header of the WAL index in place, if readers created one, so that WAL-mode
    /// readers see the new database with an empty WAL. The file is never truncated: readers map
    /// it, and reading a mapped page past the end of the file would kill them with SIGBUS.
    fn rewrite_wal_index(&self, shm_path: &Path, db_path: &Path) -> std::io::Result<()> {
        let shm = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(shm_path)
        {
            Ok(shm) => shm,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        let mut header = vec![0u8; SHM_HEADER_LEN];
        if shm.read_exact_at(&mut header, 0).is_err() {
            // Shorter than a header: no reader initialized it, and the next one will.
            return Ok(());
        }
        let db = std::fs::File::open(db_path)?;
        let len = db.metadata()?.len();
        let mut db_header = [0u8; 100];
        db.read_exact_at(&mut db_header, 0)?;
        if let Some(page_size) = crate::ltx::PageSize::from_sqlite_header(&db_header) {
            let pages = (len / u64::from(page_size.get())) as u32;
            rewrite_header(
                &mut header,
                ShmState {
                    page_size: page_size.get(),
                    pages,
                },
            );
            shm.write_all_at(&header, 0)?;
        }
        Ok(())
    }

    /// Drops the kernel's cached pages of an inode, writing back any dirty ones first.
    fn invalidate(&self, ino: u64) {
        if let Some(notifier) = self.shared.notifier.get() {
            if let Err(err) = notifier.inval_inode(fuser::INodeNo(ino), 0, 0) {
                if err.raw_os_error() != Some(libc::ENOENT) {
                    tracing::warn!(ino, %err, "cannot invalidate the kernel cache");
                }
            }
        }
    }
}

/// True when the database file's header says WAL mode (read and write versions 2).
fn in_wal_mode(path: &std::path::Path) -> bool {
    let mut versions = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut versions, 18))
        .is_ok_and(|()| versions == [2, 2])
}
