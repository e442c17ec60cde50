//! Applying replicated LTX files to a mounted database, atomically with respect to its readers.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capture::{CaptureError, Unlogged};
use super::fs::Shared;
use super::locks::Held;
use super::names::{self, FileKind};
use super::shm::{rewrite_header, ShmState, SHM_HEADER_LEN};
use crate::database::VerifiedLtx;
use crate::ltx::Pos;

/// SQLite's PENDING byte in a database file.
const PENDING: u64 = 0x4000_0000;
/// SQLite's RESERVED byte: a writer in rollback mode holds it.
const RESERVED: u64 = PENDING + 1;
/// SQLite's SHARED range: readers hold a byte of it, a writer committing holds it all.
const SHARED_RANGE: (u64, u64) = (PENDING + 2, PENDING + 2 + 509);
/// The WAL index's WRITE lock byte: a WAL writer holds it.
const WAL_WRITE: u64 = 120;
/// The WAL index's WRITE, CKPT and RECOVER lock bytes.
const WAL_WRITER_LOCKS: (u64, u64) = (120, 122);
/// The WAL index's read marks READ0 to READ4: a read transaction holds one.
const WAL_READ_MARKS: std::ops::RangeInclusive<u64> = 123..=127;
/// Above this many pages changed, an apply drops every cached page of the database file
/// rather than invalidate them one by one.
const MAX_RANGES: usize = 256;
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

    /// Gives the applier the kernel notifier and the mount point, once the file system is
    /// mounted: it takes SQLite's locks through descriptors of its own on the mount.
    pub fn set_mount(&self, notifier: fuser::Notifier, dir: &Path) {
        let _ = self.shared.notifier.set(notifier);
        self.shared.mount_locks.set_dir(dir);
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
        let deadline = Instant::now() + wait;
        let mut held = Vec::new();
        let mut busy = Vec::new();
        for name in self.shared.database_names() {
            let Some(capture) = self
                .shared
                .database_index(&name)
                .and_then(|db| self.shared.capture(db))
            else {
                continue;
            };
            let (kind, byte) = if in_wal_mode(&capture.layout().database_file()) {
                (FileKind::Shm, WAL_WRITE)
            } else {
                (FileKind::Database, RESERVED)
            };
            let taken = match self.shared.mount_locks.open(&name, kind, false) {
                Ok(Some(file)) => Held::take(&file, (byte, byte), deadline),
                // No file in the mount: no writer has it open.
                Ok(None) => continue,
                Err(err) => Err(err),
            };
            match taken {
                Ok(Some(lock)) => held.push(lock),
                Ok(None) => busy.push(name),
                Err(err) => {
                    tracing::warn!(db = name, %err, "cannot take the writer lock to drain");
                    busy.push(name);
                }
            }
        }
        self.set_writable(false);
        drop(held);
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
    /// WAL index for WAL-mode readers and drops the kernel's cached copies of what changed.
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
        let db_path = capture.layout().database_file();
        // A database the replica does not have yet is not shown until its first file is in:
        // no reader can open it, so there are no locks to take.
        let new = std::fs::metadata(&db_path).map_or(true, |m| m.len() == 0);
        let written = if new {
            self.hidden(db, true);
            let written = self.apply_locked(&capture, db_ino, shm_ino, ltx);
            self.hidden(db, false);
            self.forget_absence(name);
            written
        } else {
            match self.lock_out_readers(name, in_wal_mode(&db_path)) {
                Ok(Some(locks)) => {
                    let written = self.apply_locked(&capture, db_ino, shm_ino, ltx);
                    drop(locks);
                    written
                }
                Ok(None) => Err(ApplyError::Busy(name.to_string())),
                Err(err) => Err(err.into()),
            }
        };
        // A new database, or one that was empty, enters the listing; `.lag` appears with the
        // first file from the primary.
        self.shared.listing_changed();
        Ok(capture.log_replicated(written?)?)
    }

    /// Takes the locks a SQLite writer would hold to change database `name` under its readers,
    /// through the applier's own descriptor on the mount, waiting up to [`LOCK_WAIT`] for the
    /// readers to finish. In WAL mode every connection holds SHARED on the database file for
    /// as long as it is open, and a read transaction holds a read mark in the WAL index: the
    /// applier takes the writer's locks and then every read mark, one at a time, so that the
    /// readers of a mark are shut out as soon as it is taken. In rollback mode a read
    /// transaction holds SHARED: the applier takes PENDING first, as a SQLite writer does, so
    /// that new readers wait (in SQLite's busy handler) while it waits for the current ones.
    /// `Ok(None)` when readers held their locks too long.
    fn lock_out_readers(&self, name: &str, wal: bool) -> std::io::Result<Option<Vec<Held>>> {
        let deadline = Instant::now() + LOCK_WAIT;
        let locks = &self.shared.mount_locks;
        let (file, ranges): (_, Vec<(u64, u64)>) = if wal {
            let marks = WAL_READ_MARKS.rev().map(|b| (b, b));
            (
                locks.open(name, FileKind::Shm, true)?,
                std::iter::once(WAL_WRITER_LOCKS).chain(marks).collect(),
            )
        } else {
            (
                locks.open(name, FileKind::Database, false)?,
                vec![(PENDING, PENDING), SHARED_RANGE],
            )
        };
        let Some(file) = file else {
            // Not mounted: nothing reads through the mount.
            return Ok(Some(Vec::new()));
        };
        let mut held = Vec::with_capacity(ranges.len());
        for range in ranges {
            match Held::take(&file, range, deadline)? {
                Some(lock) => held.push(lock),
                None => return Ok(None),
            }
        }
        Ok(Some(held))
    }

    /// Hides database `db` from the mount's lookups while it is created, or shows it again.
    fn hidden(&self, db: usize, hidden: bool) {
        let mut set = self.shared.hidden.lock().unwrap_or_else(|p| p.into_inner());
        if hidden {
            set.insert(db);
        } else {
            set.remove(&db);
        }
    }

    fn apply_locked<'a>(
        &self,
        capture: &super::capture::Capture,
        db_ino: u64,
        shm_ino: u64,
        ltx: &'a VerifiedLtx,
    ) -> Result<Unlogged<'a>, ApplyError> {
        self.invalidate(shm_ino, 0, 0);
        let written = capture.write_replicated(ltx)?;
        self.rewrite_wal_index(&capture.layout().shm(), &capture.layout().database_file())?;
        // Readers may hold the WAL open: empty it rather than remove it.
        if let Ok(wal) = std::fs::OpenOptions::new()
            .write(true)
            .open(capture.layout().wal())
        {
            wal.set_len(0)?;
        }
        // Only the pages the file changed leave the kernel's cache (and what lies past the new
        // end of the file); a snapshot replaces everything.
        if written.pages.len() > MAX_RANGES {
            self.invalidate(db_ino, 0, 0);
        } else {
            let ps = written.page_size;
            for &pgno in &written.pages {
                self.invalidate(db_ino, (u64::from(pgno) - 1) * ps, ps);
            }
            self.invalidate(db_ino, written.len, 0);
        }
        self.invalidate(shm_ino, 0, 0);
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

    /// Drops the kernel's cached pages of an inode from `offset` for `len` bytes (to the end
    /// when `len` is zero), writing back any dirty ones first, and its cached attributes.
    /// Drops the kernel's cached answer that database `name` does not exist (a lookup while it
    /// was hidden or empty is remembered for the entry TTL), so that it opens at once.
    fn forget_absence(&self, name: &str) {
        if let Some(notifier) = self.shared.notifier.get() {
            let root = fuser::INodeNo(names::ROOT_INO);
            if let Err(err) = notifier.inval_entry(root, std::ffi::OsStr::new(name)) {
                if err.raw_os_error() != Some(libc::ENOENT) {
                    tracing::warn!(db = name, %err, "cannot invalidate the kernel's cached name");
                }
            }
        }
    }

    fn invalidate(&self, ino: u64, offset: u64, len: u64) {
        if let Some(notifier) = self.shared.notifier.get() {
            let (offset, len) = (offset as i64, len as i64);
            if let Err(err) = notifier.inval_inode(fuser::INodeNo(ino), offset, len) {
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
