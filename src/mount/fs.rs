//! The FUSE file system: a flat directory of SQLite databases whose files pass through to the
//! data directory, with commits captured into each database's log before they are acknowledged.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use super::busy_poll::BusyPoll;
use super::capture::{Capture, CaptureError, CaptureOptions};
use super::detector::{Detector, Op, Refusal, Verdict, WAL_FRAME_HEADER_LEN};
use super::gate::{self, CommitGate, Committed};
use super::locks::MountLocks;
use super::names::{self, FileKind, Name, LAG_INO, PRIMARY_INO, ROOT_INO};
use super::trace::TraceRecorder;
use crate::log::Log;
use crate::metrics::Metrics;

/// How long the kernel may cache names and attributes.
const TTL: Duration = Duration::from_secs(1);

/// What the mount needs to know about the node.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// The data directory (`data.dir`).
    pub data_dir: PathBuf,
    /// False on a replica: databases are read-only.
    pub writable: bool,
    /// The primary's hostname, shown in `.primary` on replicas.
    pub primary_hostname: Option<String>,
    /// How commits are encoded.
    pub capture: CaptureOptions,
    /// Where each database's writes and commits are counted.
    pub metrics: Arc<Metrics>,
    /// `fuse.busy-poll`: how long the FUSE device is polled after a request; zero blocks.
    pub busy_poll: Duration,
}

/// The databases known to the mount, by index (inode numbers derive from the index).
#[derive(Default)]
pub(super) struct Databases {
    names: Vec<String>,
    captures: Vec<Arc<Capture>>,
}

struct Handle {
    file: Option<Arc<File>>,
    db: usize,
    kind: FileKind,
}

/// The state the file system shares with the code that applies replicated LTX files.
pub(super) struct Shared {
    pub(super) options: MountOptions,
    pub(super) log: Arc<Log>,
    pub(super) databases: RwLock<Databases>,
    /// Commit detection.
    pub(super) detector: Mutex<Detector>,
    /// The operation trace, with `LTXD_TRACE_OPS` (see [`super::trace`]).
    trace: Option<Mutex<TraceRecorder>>,
    pub(super) notifier: std::sync::OnceLock<fuser::Notifier>,
    /// The daemon's own descriptors on the mount, through which the applier and the handoff's
    /// drain take SQLite's locks.
    pub(super) mount_locks: MountLocks,
    /// Databases a replica's applier is creating: not shown until their first file is in.
    pub(super) hidden: Mutex<std::collections::HashSet<usize>>,
    /// True while the node is primary: databases may be written.
    pub(super) writable: std::sync::atomic::AtomicBool,
    /// The node's role as replication keeps it, for `.primary` and `.lag`.
    pub(super) node_view: std::sync::OnceLock<Arc<dyn NodeView>>,
    /// What a commit waits for before the application sees it (synchronous replication).
    pub(super) commit_gate: std::sync::OnceLock<Arc<dyn CommitGate>>,
    /// True once the kernel opens the root without a request: it then caches the root's
    /// listing, which must be invalidated when it changes without a request (see
    /// [`Shared::listing_changed`]).
    pub(super) listing_cached: std::sync::atomic::AtomicBool,
}

/// What the mount shows of the node's role: replication keeps it current.
pub trait NodeView: Send + Sync {
    /// The primary's hostname, or `None` on the primary.
    fn primary_hostname(&self) -> Option<String>;
    /// On a replica, how long ago the primary was last heard from (ms); `None` on the primary.
    fn lag_ms(&self) -> Option<i64>;
}

/// The ltxd FUSE file system.
pub struct LtxdFs {
    shared: Arc<Shared>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
    uid: u32,
    gid: u32,
    /// The kernel opens directories without asking (`FUSE_NO_OPENDIR_SUPPORT`).
    zero_message_opendir: bool,
    /// Called once the FUSE session has ended, whoever unmounted it.
    on_session_end: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// The polling switch, with `fuse.busy-poll`.
    busy_poll: Option<Arc<BusyPoll>>,
}

fn errno(err: &std::io::Error) -> Errno {
    Errno::from_i32(err.raw_os_error().unwrap_or(libc::EIO))
}

/// Logs a capture failure where it is handled, and turns it into the error the caller sees.
fn capture_failed(db: &str, err: &CaptureError) -> Errno {
    tracing::error!(db, %err, "commit capture failed; the commit is refused");
    Errno::EIO
}

impl LtxdFs {
    /// The state shared with the applier of replicated LTX files.
    pub fn applier(&self) -> super::Applier {
        super::Applier::new(Arc::clone(&self.shared))
    }

    /// Shows the node's role in `.primary` and `.lag` from `view` instead of the options.
    pub fn set_node_view(&self, view: Arc<dyn NodeView>) {
        let _ = self.shared.node_view.set(view);
    }

    /// Makes each commit wait for `gate` after it is in the log and before the application sees
    /// it succeed.
    pub fn set_commit_gate(&self, gate: Arc<dyn CommitGate>) {
        let _ = self.shared.commit_gate.set(gate);
    }

    /// Calls `f` once the FUSE session has ended: after an unmount by ltxd, by `umount` or
    /// `fusermount -u`, or after the connection was aborted.
    pub fn on_session_end(&mut self, f: impl FnOnce() + Send + Sync + 'static) {
        self.on_session_end = Some(Box::new(f));
    }

    /// The polling switch, if `fuse.busy-poll` is set; the mount starts it on the device.
    pub(super) fn busy_poll(&self) -> Option<Arc<BusyPoll>> {
        self.busy_poll.clone()
    }

    /// Tells the polling switch, if any, that a request arrived.
    fn note_request(&self) {
        if let Some(busy_poll) = &self.busy_poll {
            busy_poll.request();
        }
    }

    /// A file system over the databases of `log`, opening (and recovering) each one.
    pub fn new(options: MountOptions, log: Arc<Log>) -> Result<LtxdFs, CaptureError> {
        let writable = options.writable;
        let busy_poll = (!options.busy_poll.is_zero()).then(|| BusyPoll::new(options.busy_poll));
        let shared = Shared {
            options,
            log,
            databases: RwLock::new(Databases::default()),
            detector: Mutex::new(Detector::default()),
            trace: TraceRecorder::from_env().map(Mutex::new),
            notifier: std::sync::OnceLock::new(),
            mount_locks: MountLocks::default(),
            hidden: Mutex::new(std::collections::HashSet::new()),
            node_view: std::sync::OnceLock::new(),
            commit_gate: std::sync::OnceLock::new(),
            writable: std::sync::atomic::AtomicBool::new(writable),
            listing_cached: std::sync::atomic::AtomicBool::new(false),
        };
        let fs = LtxdFs {
            shared: Arc::new(shared),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            uid: daemon_uid(),
            gid: daemon_gid(),
            zero_message_opendir: false,
            on_session_end: None,
            busy_poll,
        };
        for name in fs.shared.log.database_names() {
            fs.shared.open_database(&name)?;
        }
        Ok(fs)
    }
}

impl Shared {
    pub(super) fn open_database(&self, name: &str) -> Result<usize, CaptureError> {
        if let Some(index) = self.database_index(name) {
            return Ok(index);
        }
        let mut dbs = self.databases.write().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = dbs.names.iter().position(|n| n == name) {
            return Ok(index);
        }
        let log = self.log.database(name)?;
        let counters = self.options.metrics.database(name);
        let capture = Capture::open(name, log, self.options.capture, counters)?;
        dbs.names.push(name.to_string());
        dbs.captures.push(Arc::new(capture));
        Ok(dbs.names.len() - 1)
    }

    pub(super) fn database_index(&self, name: &str) -> Option<usize> {
        let dbs = self.databases.read().unwrap_or_else(|p| p.into_inner());
        dbs.names.iter().position(|n| n == name)
    }

    /// The names of the databases the mount has, in the order they were opened.
    pub(super) fn database_names(&self) -> Vec<String> {
        let dbs = self.databases.read().unwrap_or_else(|p| p.into_inner());
        dbs.names.clone()
    }

    pub(super) fn capture(&self, db: usize) -> Option<Arc<Capture>> {
        let dbs = self.databases.read().unwrap_or_else(|p| p.into_inner());
        dbs.captures.get(db).cloned()
    }

    pub(super) fn backing_path(&self, db: usize, kind: FileKind) -> Option<PathBuf> {
        let capture = self.capture(db)?;
        Some(capture.layout().file(kind.backing_file()?))
    }

    pub(super) fn detector(&self) -> std::sync::MutexGuard<'_, Detector> {
        self.detector.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the detector what `op` means (see [`super::detector`]).
    pub(super) fn decide(&self, op: &Op) -> Verdict {
        let writable = self.is_writable();
        let verdict = self.detector().decide(op, writable);
        if let Some(trace) = &self.trace {
            trace
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(op, writable, verdict);
        }
        verdict
    }

    /// Does what the detector's verdict on an operation of file `ino` asks: captures a commit
    /// (a rollback-journal commit before the operation is performed, a WAL commit after it),
    /// forgets the WAL's read position, or refuses. A captured commit waits for the commit gate
    /// on this thread before this returns.
    pub(super) fn act(&self, ino: Option<u64>, verdict: Verdict) -> Result<(), Errno> {
        let committed = self.capture_or_refuse(ino, verdict)?;
        gate::wait(self.commit_gate.get(), committed);
        Ok(())
    }

    /// [`Shared::act`] up to the commit gate: returns the commit captured, if any, which must
    /// then pass the gate ([`gate::wait`] or [`gate::answer_after`]) before it is answered.
    pub(super) fn capture_or_refuse(
        &self,
        ino: Option<u64>,
        verdict: Verdict,
    ) -> Result<Option<Committed>, Errno> {
        let commit = match verdict {
            Verdict::Pass => return Ok(None),
            Verdict::Refuse(refusal) => {
                if refusal == Refusal::NoJournal {
                    tracing::error!(
                        ino,
                        "database write without a journal or a WAL: journal modes MEMORY and OFF are not supported, because they show no commit point"
                    );
                }
                return Err(Errno::from_i32(refusal.errno()));
            }
            commit => commit,
        };
        let (db, _) = ino.and_then(names::from_inode).ok_or(Errno::ENOENT)?;
        let capture = self.capture(db).ok_or(Errno::ENOENT)?;
        let captured = match commit {
            Verdict::CommitJournal => capture.commit_journal(),
            Verdict::CommitWal => capture.commit_wal(),
            _ => {
                capture.wal_reset();
                Ok(None)
            }
        };
        let pos = captured.map_err(|e| capture_failed(capture.name(), &e))?;
        Ok(pos.map(|pos| Committed {
            db: capture.name().to_string(),
            txid: pos.txid,
        }))
    }

    /// Drops the kernel's cached listing of the root, if it keeps one: called when the listing
    /// changes without a request through the kernel (a replicated database, a role change).
    pub(super) fn listing_changed(&self) {
        if !self.listing_cached.load(Ordering::SeqCst) {
            return;
        }
        if let Some(notifier) = self.notifier.get() {
            if let Err(err) = notifier.inval_inode(INodeNo(ROOT_INO), 0, 0) {
                tracing::warn!(%err, "cannot invalidate the cached listing of the mount");
            }
        }
    }

    /// True while a replica's applier creates database `db`: the mount does not show it yet.
    pub(super) fn is_hidden(&self, db: usize) -> bool {
        self.hidden
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&db)
    }

    /// True while databases may be written (the node is primary).
    pub(super) fn is_writable(&self) -> bool {
        self.writable.load(Ordering::SeqCst)
    }
}

impl LtxdFs {
    fn attr(
        &self,
        ino: u64,
        kind: FileType,
        perm: u16,
        meta: Option<&Metadata>,
        size: u64,
    ) -> FileAttr {
        let time = |t: Option<SystemTime>| t.unwrap_or(SystemTime::UNIX_EPOCH);
        FileAttr {
            ino: INodeNo(ino),
            size: meta.map_or(size, Metadata::len),
            blocks: meta.map_or(0, MetadataExt::blocks),
            atime: time(meta.and_then(|m| m.accessed().ok())),
            mtime: time(meta.and_then(|m| m.modified().ok())),
            ctime: time(meta.and_then(|m| m.modified().ok())),
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn file_perm(&self) -> u16 {
        if self.shared.is_writable() {
            0o644
        } else {
            0o444
        }
    }

    /// The attributes of an inode, or `ENOENT`.
    fn lookup_ino(&self, ino: u64) -> Result<FileAttr, Errno> {
        match ino {
            ROOT_INO => Ok(self.attr(ROOT_INO, FileType::Directory, 0o755, None, 0)),
            PRIMARY_INO | LAG_INO => {
                let content = self.node_file(ino).ok_or(Errno::ENOENT)?;
                Ok(self.attr(
                    ino,
                    FileType::RegularFile,
                    0o444,
                    None,
                    content.len() as u64,
                ))
            }
            _ => {
                let (db, kind) = names::from_inode(ino).ok_or(Errno::ENOENT)?;
                if kind == FileKind::Pos {
                    self.shared.capture(db).ok_or(Errno::ENOENT)?;
                    return Ok(self.attr(ino, FileType::RegularFile, 0o444, None, 34));
                }
                let path = self.shared.backing_path(db, kind).ok_or(Errno::ENOENT)?;
                let meta = std::fs::metadata(&path).map_err(|e| errno(&e))?;
                if kind == FileKind::Database
                    && !self.shared.is_writable()
                    && (meta.len() == 0 || self.shared.is_hidden(db))
                {
                    return Err(Errno::ENOENT);
                }
                Ok(self.attr(ino, FileType::RegularFile, self.file_perm(), Some(&meta), 0))
            }
        }
    }

    /// The content of `.primary` or `.lag`, or `None` where the file does not exist (on the
    /// primary).
    fn node_file(&self, ino: u64) -> Option<String> {
        let view = self.shared.node_view.get();
        match ino {
            PRIMARY_INO => view
                .map_or_else(
                    || {
                        (!self.shared.is_writable())
                            .then(|| self.shared.options.primary_hostname.clone())
                            .flatten()
                    },
                    |v| v.primary_hostname(),
                )
                .map(|host| format!("{host}\n")),
            LAG_INO => view.and_then(|v| v.lag_ms()).map(|lag| format!("{lag}\n")),
            _ => None,
        }
    }

    fn virtual_content(&self, ino: u64) -> Option<Vec<u8>> {
        if let Some(content) = self.node_file(ino) {
            return Some(content.into_bytes());
        }
        let (db, kind) = names::from_inode(ino)?;
        if kind != FileKind::Pos {
            return None;
        }
        let capture = self.shared.capture(db)?;
        // A database the applier is creating is in the log before its pages are written, and
        // hidden until they are: its position shows once it can be read.
        let pos = if self.shared.is_hidden(db) {
            crate::ltx::Pos::ZERO
        } else {
            capture.pos()
        };
        Some(format!("{pos}\n").into_bytes())
    }

    fn new_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, handle);
        fh
    }

    fn handle_file(&self, fh: u64) -> Option<(Arc<File>, usize, FileKind)> {
        let handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        let h = handles.get(&fh)?;
        Some((Arc::clone(h.file.as_ref()?), h.db, h.kind))
    }

    /// Asks the detector about `op` on file `ino` and acts on the verdict.
    fn detect(&self, op: Op) -> Result<(), Errno> {
        self.shared.act(op.ino(), self.shared.decide(&op))
    }

    /// True when the request comes from a thread of the daemon itself (the applier or the
    /// handoff's drain opening a database to take SQLite's locks).
    fn from_daemon(req: &Request) -> bool {
        Path::new(&format!("/proc/self/task/{}", req.pid())).exists()
    }

    fn open_backing(
        &self,
        db: usize,
        kind: FileKind,
        write: bool,
        create: bool,
    ) -> Result<File, Errno> {
        let path = self.shared.backing_path(db, kind).ok_or(Errno::ENOENT)?;
        OpenOptions::new()
            .read(true)
            .write(write)
            .create(create)
            .truncate(false)
            .open(&path)
            .map_err(|e| errno(&e))
    }

    fn wants_write(flags: OpenFlags) -> bool {
        !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY)
    }
}

/// How the kernel caches an open file. The journal and the WAL bypass the page cache: each of
/// SQLite's writes is then one request, where the page cache splits a write that does not start
/// on a page boundary in two (every journal record and WAL frame), and SQLite never maps either.
/// Their pages were rarely up to date in the cache anyway, for the same reason. The database
/// file and the WAL index keep their cached pages across opens: SQLite maps the index, and a
/// replica's applier invalidates what it changes in both.
fn open_flags(kind: FileKind) -> FopenFlags {
    match kind {
        FileKind::Journal | FileKind::Wal => FopenFlags::FOPEN_DIRECT_IO,
        _ => FopenFlags::FOPEN_KEEP_CACHE,
    }
}

/// True when a WAL write is the header of a commit frame: 24 bytes after the WAL header whose
/// database size (bytes 4 to 7) is set. SQLite writes a frame's header and its page apart.
fn is_commit_frame_header(offset: u64, data: &[u8]) -> bool {
    offset > WAL_FRAME_HEADER_LEN
        && data.len() as u64 == WAL_FRAME_HEADER_LEN
        && data[4..8] != [0; 4]
}

/// True when the kernel may cache that the file at `ino` does not exist: the journal and the WAL
/// of a database the mount has. SQLite looks for both at every transaction, and they are only
/// ever created through the kernel (the mount's `create`), which replaces the cached absence; the
/// applier and recovery never create them. Other names may appear without the kernel's
/// knowledge (a replicated database) and are not cached.
fn negative_entry_allowed(ino: u64) -> bool {
    matches!(
        names::from_inode(ino),
        Some((_, FileKind::Journal | FileKind::Wal))
    )
}

/// The daemon's user, which owns every file in the mount.
fn daemon_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// The daemon's group.
fn daemon_gid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| m.gid())
}

impl Filesystem for LtxdFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // FUSE_POSIX_LOCKS is not asked for: the kernel keeps SQLite's locks itself, so that a
        // read transaction makes no request (see `detector.rs` for the commit points).
        self.zero_message_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(ended) = self.on_session_end.take() {
            ended();
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.note_request();
        if parent.0 != ROOT_INO {
            return reply.error(Errno::ENOENT);
        }
        let ino = match name.to_str().and_then(names::parse) {
            Some(Name::Primary) => PRIMARY_INO,
            Some(Name::Lag) => LAG_INO,
            Some(Name::File(db, kind)) => match self.shared.database_index(&db) {
                Some(index) => names::inode(index, kind),
                None => return reply.error(Errno::ENOENT),
            },
            None => return reply.error(Errno::ENOENT),
        };
        match self.lookup_ino(ino) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(Errno::ENOENT) if negative_entry_allowed(ino) => {
                // Inode 0: the kernel remembers for TTL that the name does not exist.
                let attr = self.attr(0, FileType::RegularFile, 0, None, 0);
                reply.entry(&TTL, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.note_request();
        match self.lookup_ino(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.note_request();
        let result = (|| -> Result<FileAttr, Errno> {
            if let Some(size) = size {
                self.detect(Op::Truncate { ino: ino.0, size })?;
                let (db, kind) = names::from_inode(ino.0).ok_or(Errno::EPERM)?;
                let file = self.open_backing(db, kind, true, false)?;
                file.set_len(size).map_err(|e| errno(&e))?;
            }
            self.lookup_ino(ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.note_request();
        let result = (|| -> Result<(), Errno> {
            if parent.0 != ROOT_INO {
                return Err(Errno::ENOENT);
            }
            let Some(Name::File(db_name, kind)) = name.to_str().and_then(names::parse) else {
                return Err(Errno::EPERM);
            };
            let db = self.shared.database_index(&db_name).ok_or(Errno::ENOENT)?;
            let ino = names::inode(db, kind);
            let verdict = self.shared.decide(&Op::Unlink { ino });
            if verdict == Verdict::Refuse(Refusal::NotPermitted) {
                tracing::warn!(
                    db = db_name,
                    "refusing to delete a database through the mount"
                );
            }
            self.shared.act(Some(ino), verdict)?;
            let path = self.shared.backing_path(db, kind).ok_or(Errno::ENOENT)?;
            std::fs::remove_file(path).map_err(|e| errno(&e))
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.note_request();
        let result = (|| -> Result<(u64, FopenFlags), Errno> {
            if ino.0 == PRIMARY_INO
                || ino.0 == LAG_INO
                || names::from_inode(ino.0).is_some_and(|(_, k)| k == FileKind::Pos)
            {
                if Self::wants_write(flags) {
                    return Err(Errno::EACCES);
                }
                self.lookup_ino(ino.0)?;
                return Ok((0, FopenFlags::FOPEN_DIRECT_IO));
            }
            let (db, kind) = names::from_inode(ino.0).ok_or(Errno::ENOENT)?;
            let write = Self::wants_write(flags);
            let daemon = write && !self.shared.is_writable() && Self::from_daemon(req);
            self.detect(Op::Open {
                kind,
                write,
                daemon,
            })?;
            let file = self.open_backing(db, kind, write, false)?;
            let fh = self.new_handle(Handle {
                file: Some(Arc::new(file)),
                db,
                kind,
            });
            Ok((fh, open_flags(kind)))
        })();
        match result {
            Ok((fh, flags)) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.note_request();
        let result = (|| -> Result<(FileAttr, u64, FopenFlags), Errno> {
            if parent.0 != ROOT_INO {
                return Err(Errno::ENOENT);
            }
            let Some(Name::File(db_name, kind)) = name.to_str().and_then(names::parse) else {
                return Err(Errno::EACCES);
            };
            if kind == FileKind::Pos {
                return Err(Errno::EACCES);
            }
            let daemon = !self.shared.is_writable() && Self::from_daemon(req);
            self.detect(Op::Open {
                kind,
                write: true,
                daemon,
            })?;
            let db = match self.shared.database_index(&db_name) {
                Some(db) => db,
                None if kind == FileKind::Database => {
                    self.shared.open_database(&db_name).map_err(|e| {
                        tracing::error!(db = db_name, %e, "cannot create the database");
                        Errno::EIO
                    })?
                }
                None => return Err(Errno::ENOENT),
            };
            let file = self.open_backing(db, kind, true, true)?;
            if flags & libc::O_TRUNC != 0 {
                file.set_len(0).map_err(|e| errno(&e))?;
            }
            let fh = self.new_handle(Handle {
                file: Some(Arc::new(file)),
                db,
                kind,
            });
            Ok((
                self.lookup_ino(names::inode(db, kind))?,
                fh,
                open_flags(kind),
            ))
        })();
        match result {
            Ok((attr, fh, flags)) => {
                reply.created(&TTL, &attr, Generation(0), FileHandle(fh), flags)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.note_request();
        if let Some(content) = self.virtual_content(ino.0) {
            let start = (offset as usize).min(content.len());
            let end = (start + size as usize).min(content.len());
            return reply.data(&content[start..end]);
        }
        let Some((file, _, _)) = self.handle_file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..filled]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.note_request();
        let result = (|| -> Result<Option<Committed>, Errno> {
            let (file, db, kind) = self.handle_file(fh.0).ok_or(Errno::EBADF)?;
            let ino = names::inode(db, kind);
            let flag = match kind {
                FileKind::Wal => is_commit_frame_header(offset, data),
                FileKind::Database => self
                    .shared
                    .backing_path(db, FileKind::Wal)
                    .is_some_and(|wal| wal.exists()),
                _ => false,
            };
            let verdict = self.shared.decide(&Op::Write {
                ino,
                offset,
                len: data.len() as u64,
                zeroes: data.iter().all(|&b| b == 0),
                flag,
            });
            if verdict != Verdict::CommitWal {
                self.shared.act(Some(ino), verdict)?;
            }
            let capture = self.shared.capture(db).ok_or(Errno::ENOENT)?;
            file.write_all_at(data, offset).map_err(|e| errno(&e))?;
            let mut committed = None;
            if verdict == Verdict::CommitWal {
                // The page completes the commit frame: the log gets the commit before SQLite
                // learns that the write succeeded and publishes the frame in the WAL index.
                match self.shared.capture_or_refuse(Some(ino), verdict) {
                    Ok(c) => committed = c,
                    Err(e) => {
                        // The log does not have the commit: its frame must not count as
                        // committed if SQLite ever recovers the WAL.
                        let header = offset - WAL_FRAME_HEADER_LEN;
                        let _ = file.write_all_at(&[0; WAL_FRAME_HEADER_LEN as usize], header);
                        return Err(e);
                    }
                }
            }
            let counters = capture.counters();
            match kind {
                FileKind::Database => {
                    counters.database_writes.inc();
                    capture.database_written(offset, data);
                }
                FileKind::Journal => counters.journal_writes.inc(),
                FileKind::Wal => {
                    counters.wal_writes.inc();
                    if offset == 0 && data.len() >= 32 {
                        capture.wal_header_written(data);
                    }
                }
                FileKind::Shm => counters.shm_writes.inc(),
                FileKind::Pos => {}
            }
            Ok(committed)
        })();
        // A WAL commit is answered once it has passed the commit gate, off this thread.
        let len = data.len() as u32;
        match result {
            Ok(committed) => {
                gate::answer_after(self.shared.commit_gate.get(), committed, move || {
                    reply.written(len)
                })
            }
            Err(e) => reply.error(e),
        }
    }

    /// Locks are the kernel's, so a close means nothing to the mount: `ENOSYS` tells the kernel
    /// to stop sending `FLUSH` (it still writes back dirty pages of a mapped file first).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.note_request();
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    /// SQLite's fsyncs need not reach the disk: a commit is durable once its LTX record is
    /// fdatasynced in the log, and recovery rebuilds the database from the log whenever its files
    /// disagree with it. See docs/ARCHITECTURE.md. `ENOSYS` tells the kernel so: it then answers
    /// every later `fsync` and `fdatasync` with success itself, without a request.
    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// As [`Filesystem::fsync`], for the directory fsync SQLite makes after creating a journal.
    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// The root needs no handle. On the primary, where the kernel supports it, `ENOSYS` makes it
    /// open directories without a request (and without a `RELEASEDIR`) from then on: SQLite opens
    /// the directory for every journal it creates, to fsync it. The kernel then caches the
    /// root's listing; names created and removed through it keep that cache current, and
    /// [`Shared::listing_changed`] drops it for the changes a replica makes on its own. A replica
    /// that has never been primary keeps uncached listings.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.zero_message_opendir && self.shared.is_writable() {
            self.shared.listing_cached.store(true, Ordering::SeqCst);
            reply.error(Errno::ENOSYS);
        } else {
            reply.opened(FileHandle(0), FopenFlags::empty());
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT_INO {
            return reply.error(Errno::ENOENT);
        }
        let mut entries = vec![
            (ROOT_INO, FileType::Directory, ".".to_string()),
            (ROOT_INO, FileType::Directory, "..".to_string()),
        ];
        for (ino, name) in [(PRIMARY_INO, ".primary"), (LAG_INO, ".lag")] {
            if self.node_file(ino).is_some() {
                entries.push((ino, FileType::RegularFile, name.to_string()));
            }
        }
        let names: Vec<String> = self
            .shared
            .databases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .names
            .clone();
        for (db, name) in names.iter().enumerate() {
            for kind in [
                FileKind::Database,
                FileKind::Journal,
                FileKind::Wal,
                FileKind::Shm,
                FileKind::Pos,
            ] {
                let ino = names::inode(db, kind);
                if self.lookup_ino(ino).is_ok() {
                    entries.push((ino, FileType::RegularFile, kind.name_for(name)));
                }
            }
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match statvfs(&self.shared.options.data_dir) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, 255, s.bsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// The numbers `statfs` reports, from the data directory's file system.
struct FsStats {
    blocks: u64,
    bfree: u64,
    bavail: u64,
    files: u64,
    ffree: u64,
    bsize: u32,
}

fn statvfs(path: &Path) -> std::io::Result<FsStats> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(FsStats {
        blocks: s.f_blocks,
        bfree: s.f_bfree,
        bavail: s.f_bavail,
        files: s.f_files,
        ffree: s.f_ffree,
        bsize: s.f_bsize as u32,
    })
}
