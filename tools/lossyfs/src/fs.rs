//! The FUSE adapter: each request becomes one [`Disk`] operation.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::disk::{Disk, Kind};

/// How long the kernel may cache names and attributes. Every change goes through this file
/// system, so its caches stay true.
const TTL: Duration = Duration::from_secs(1);

/// The file system served over FUSE.
pub struct LossyFs {
    disk: Arc<Mutex<Disk>>,
}

impl LossyFs {
    /// Serves `disk`.
    pub fn new(disk: Arc<Mutex<Disk>>) -> LossyFs {
        LossyFs { disk }
    }

    /// The disk, noting that `req`'s process is the caller.
    fn disk_for(&self, req: &Request) -> MutexGuard<'_, Disk> {
        let mut disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        disk.set_caller(req.pid());
        disk
    }

    fn attr(&self, disk: &Disk, ino: u64, fh: Option<u64>) -> io::Result<FileAttr> {
        let meta = disk.metadata(ino, fh)?;
        Ok(attr(ino, &meta))
    }
}

fn errno(err: io::Error) -> Errno {
    Errno::from(err)
}

fn time(t: io::Result<SystemTime>) -> SystemTime {
    t.unwrap_or(UNIX_EPOCH)
}

fn attr(ino: u64, meta: &Metadata) -> FileAttr {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_fifo() {
        FileType::NamedPipe
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time(meta.accessed()),
        mtime: time(meta.modified()),
        ctime: time(meta.modified()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn kind_of(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

fn reply_entry(reply: ReplyEntry, attr: io::Result<FileAttr>) {
    match attr {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_attr(reply: ReplyAttr, attr: io::Result<FileAttr>) {
    match attr {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: io::Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn wants_write(flags: OpenFlags) -> bool {
    flags.0 & libc::O_ACCMODE != libc::O_RDONLY
}

impl Filesystem for LossyFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let disk = self.disk_for(req);
        let attr = disk
            .lookup(parent.0, name)
            .and_then(|ino| self.attr(&disk, ino, None));
        reply_entry(reply, attr);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let disk = self.disk_for(req);
        reply_attr(reply, self.attr(&disk, ino.0, fh.map(|f| f.0)));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk_for(req);
        let fh = fh.map(|f| f.0);
        let result = (|| {
            if let Some(size) = size {
                disk.truncate(ino.0, fh, size)?;
            }
            if let Some(mode) = mode {
                disk.chmod(ino.0, mode)?;
            }
            self.attr(&disk, ino.0, fh)
        })();
        reply_attr(reply, result);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut disk = self.disk_for(req);
        let attr = disk
            .mkdir(parent.0, name, mode & !umask)
            .and_then(|ino| self.attr(&disk, ino, None));
        reply_entry(reply, attr);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.disk_for(req).unlink(parent.0, name));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.disk_for(req).rmdir(parent.0, name));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        reply_empty(
            reply,
            self.disk_for(req)
                .rename(parent.0, name, newparent.0, newname, no_replace),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut disk = self.disk_for(req);
        let result = (|| {
            let fh = disk.open(ino.0, wants_write(flags))?;
            if flags.0 & libc::O_TRUNC != 0 {
                disk.truncate(ino.0, Some(fh), 0)?;
            }
            Ok(fh)
        })();
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk_for(req);
        let exclusive = flags & libc::O_EXCL != 0;
        let result = (|| {
            let (ino, fh) = disk.create(parent.0, name, mode & !umask, exclusive)?;
            if flags & libc::O_TRUNC != 0 {
                disk.truncate(ino, Some(fh), 0)?;
            }
            Ok((self.attr(&disk, ino, Some(fh))?, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.disk_for(req).read(fh.0, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.disk_for(req).write(fh.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.disk_for(req).release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.disk_for(req).fsync(ino.0, Some(fh.0)));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.disk_for(req).kind(ino.0) {
            Ok(Kind::Dir) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(Kind::File) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.disk_for(req).read_dir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(e)),
        };
        let dots = [
            (OsStr::new(".").to_os_string(), ino.0, Kind::Dir),
            (OsStr::new("..").to_os_string(), ino.0, Kind::Dir),
        ];
        for (i, (name, child, kind)) in dots
            .into_iter()
            .chain(entries)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind_of(kind), &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.disk_for(req).fsyncdir(ino.0));
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let live = match self.disk_for(req).live_path(crate::disk::ROOT) {
            Ok(live) => live,
            Err(e) => return reply.error(errno(e)),
        };
        match statvfs(&live) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.disk_for(req).kind(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}

fn statvfs(path: &std::path::Path) -> io::Result<libc::statvfs> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path and `stats` a properly sized out-parameter.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stats)
}
