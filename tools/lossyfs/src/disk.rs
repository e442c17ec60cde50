//! The disk model: a live directory that every operation changes at once, and a record of what
//! a power loss would keep.
//!
//! The rules are POSIX's and no kinder:
//! - a file's data and size are durable once the file is fsynced or fdatasynced;
//! - a name created, renamed or removed is durable once its directory is fsynced.
//!
//! The live directory is what processes see while the power is on. Beside it, the store keeps a
//! copy of each file's durable contents, made the first time the file changes (a file nobody
//! changed is its own durable copy), and every directory keeps the entries its last fsync saw.
//! A sync copies the ranges written since the last one into the store. After a power loss
//! ([`Disk::power_off`]), every operation fails with `EIO`, and [`Disk::finish`] rebuilds the
//! live directory from the durable entries and contents alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::ranges::Ranges;

/// The root directory's inode number.
pub const ROOT: u64 = 1;

/// An operation that changes the disk or makes a change durable: what a trap counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A write to a file.
    Write,
    /// A change of a file's size.
    Truncate,
    /// A new file.
    Create,
    /// A new directory.
    Mkdir,
    /// A file's name removed.
    Unlink,
    /// A directory removed.
    Rmdir,
    /// A name moved.
    Rename,
    /// An fsync or fdatasync of a file.
    Fsync,
    /// An fsync of a directory.
    Fsyncdir,
}

impl Op {
    /// Every operation, in a fixed order.
    pub const ALL: [Op; 9] = [
        Op::Write,
        Op::Truncate,
        Op::Create,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Rename,
        Op::Fsync,
        Op::Fsyncdir,
    ];

    /// The operation's name, as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Truncate => "truncate",
            Op::Create => "create",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Rename => "rename",
            Op::Fsync => "fsync",
            Op::Fsyncdir => "fsyncdir",
        }
    }

    /// The operation named `name`.
    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// What a trap does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Cuts the power: the operation and every later one fail, and only what was durable
    /// survives the session.
    CutPower,
    /// Kills the process that asked for the operation with SIGKILL instead of doing it, as a
    /// crash of that process would; the power stays on and nothing written is lost.
    KillCaller,
}

/// Fires just before the `nth` operation (counting from 1) that is one of `ops` and whose path
/// contains `path_contains`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trap {
    /// The operations counted; empty counts every one.
    pub ops: Vec<Op>,
    /// Only operations on a path containing this are counted (the relative path in the disk).
    pub path_contains: String,
    /// Which matching operation fires the trap.
    pub nth: u64,
    /// What it does then.
    pub action: Action,
}

/// A file or a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

struct Node {
    kind: Kind,
    /// The path in the live directory, relative to it; `None` once removed.
    path: Option<PathBuf>,
    /// A directory's entries as its last fsync saw them.
    durable_entries: BTreeMap<OsString, u64>,
    /// A file whose durable contents are in the store rather than in the live file.
    copied: bool,
    /// A file's ranges written (or cut off) since its last sync.
    dirty: Ranges,
}

/// What a session did: how many operations of each kind matched the trap's path, and whether
/// the power was cut.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations counted, by kind (only those whose path matches the trap's filter).
    pub counts: BTreeMap<&'static str, u64>,
    /// Why the power was cut, if it was.
    pub power_cut: Option<String>,
    /// Which operation's caller a trap killed, if one did.
    pub killed: Option<String>,
}

/// The disk: the live directory, the store of durable contents, and the trap.
pub struct Disk {
    live: PathBuf,
    store: PathBuf,
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, (u64, File)>,
    next_fh: u64,
    trap: Option<Trap>,
    counts: HashMap<Op, u64>,
    power_cut: Option<String>,
    killed: Option<String>,
    /// The process asking for the current operation (0: unknown).
    caller: u32,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl Disk {
    /// Takes over the live directory `live`, whose whole contents count as durable, keeping
    /// durable copies in `store` (emptied first; it must not be inside `live`).
    pub fn new(live: &Path, store: &Path, trap: Option<Trap>) -> io::Result<Disk> {
        if store.exists() {
            fs::remove_dir_all(store)?;
        }
        fs::create_dir_all(store.join("inodes"))?;
        let mut disk = Disk {
            live: live.to_path_buf(),
            store: store.to_path_buf(),
            nodes: HashMap::new(),
            by_path: HashMap::new(),
            next_ino: ROOT,
            handles: HashMap::new(),
            next_fh: 1,
            trap,
            counts: HashMap::new(),
            power_cut: None,
            killed: None,
            caller: 0,
        };
        disk.adopt(PathBuf::new(), Kind::Dir)?;
        Ok(disk)
    }

    /// Gives an existing file or directory (and a directory's contents) inode numbers.
    fn adopt(&mut self, path: PathBuf, kind: Kind) -> io::Result<u64> {
        let ino = self.new_node(kind, path.clone(), true);
        if kind == Kind::Dir {
            let mut entries = BTreeMap::new();
            for entry in fs::read_dir(self.live.join(&path))? {
                let entry = entry?;
                let child_kind = if entry.file_type()?.is_dir() {
                    Kind::Dir
                } else if entry.file_type()?.is_file() {
                    Kind::File
                } else {
                    continue;
                };
                let child = self.adopt(path.join(entry.file_name()), child_kind)?;
                entries.insert(entry.file_name(), child);
            }
            self.node_mut(ino)?.durable_entries = entries;
        }
        Ok(ino)
    }

    fn new_node(&mut self, kind: Kind, path: PathBuf, existing: bool) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_path.insert(path.clone(), ino);
        self.nodes.insert(
            ino,
            Node {
                kind,
                path: Some(path),
                durable_entries: BTreeMap::new(),
                copied: !existing,
                dirty: Ranges::default(),
            },
        );
        ino
    }

    fn node(&self, ino: u64) -> io::Result<&Node> {
        self.nodes.get(&ino).ok_or_else(enoent)
    }

    fn node_mut(&mut self, ino: u64) -> io::Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or_else(enoent)
    }

    /// The live path of `ino`, relative to the live directory.
    fn rel_path(&self, ino: u64) -> io::Result<PathBuf> {
        self.node(ino)?.path.clone().ok_or_else(enoent)
    }

    /// The live path of `ino`.
    pub fn live_path(&self, ino: u64) -> io::Result<PathBuf> {
        Ok(self.live.join(self.rel_path(ino)?))
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> io::Result<PathBuf> {
        let node = self.node(parent)?;
        if node.kind != Kind::Dir {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok(node.path.as_ref().ok_or_else(enoent)?.join(name))
    }

    fn store_path(&self, ino: u64) -> PathBuf {
        self.store.join("inodes").join(ino.to_string())
    }

    /// Refuses everything once the power is cut, counts the operation if its path matches the
    /// trap's filter, and cuts the power when the trap says so.
    fn gate(&mut self, op: Op, path: &Path) -> io::Result<()> {
        if self.power_cut.is_some() {
            return Err(eio());
        }
        let filter = self.trap.as_ref().map_or("", |t| t.path_contains.as_str());
        if !path.to_string_lossy().contains(filter) {
            return Ok(());
        }
        *self.counts.entry(op).or_default() += 1;
        let Some(trap) = &self.trap else {
            return Ok(());
        };
        if !trap.ops.is_empty() && !trap.ops.contains(&op) {
            return Ok(());
        }
        let matched: u64 = if trap.ops.is_empty() {
            self.counts.values().sum()
        } else {
            trap.ops.iter().filter_map(|o| self.counts.get(o)).sum()
        };
        if matched == trap.nth {
            let what = format!("trap: {} #{matched} on {}", op.name(), path.display());
            match trap.action {
                Action::CutPower => self.power_off(what),
                Action::KillCaller => {
                    self.trap = None;
                    self.killed = Some(what);
                    if self.caller != 0 && self.caller != std::process::id() {
                        // SAFETY: sending a signal has no memory-safety preconditions.
                        unsafe { libc::kill(self.caller as libc::pid_t, libc::SIGKILL) };
                    }
                }
            }
            return Err(eio());
        }
        Ok(())
    }

    /// Records which process asks for the next operations, for [`Action::KillCaller`].
    pub fn set_caller(&mut self, pid: u32) {
        self.caller = pid;
    }

    /// Which operation's caller a trap killed, if one did.
    pub fn killed(&self) -> Option<&str> {
        self.killed.as_deref()
    }

    /// Checks that the power is on, for operations that change nothing.
    fn powered(&self) -> io::Result<()> {
        match self.power_cut {
            Some(_) => Err(eio()),
            None => Ok(()),
        }
    }

    /// Arms `trap`, counting operations afresh from now.
    pub fn arm(&mut self, trap: Trap) {
        self.counts.clear();
        self.trap = Some(trap);
    }

    /// Cuts the power: from now on every operation fails, and [`Disk::finish`] keeps only what
    /// was durable.
    pub fn power_off(&mut self, reason: String) {
        if self.power_cut.is_none() {
            self.power_cut = Some(reason);
        }
    }

    /// Why the power was cut, if it was.
    pub fn power_cut(&self) -> Option<&str> {
        self.power_cut.as_deref()
    }

    /// Makes sure the store holds `ino`'s durable contents before its live file changes or goes.
    fn keep_durable_copy(&mut self, ino: u64) -> io::Result<()> {
        let node = self.node(ino)?;
        if node.kind != Kind::File || node.copied {
            return Ok(());
        }
        fs::copy(self.live_path(ino)?, self.store_path(ino))?;
        self.node_mut(ino)?.copied = true;
        Ok(())
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> io::Result<u64> {
        self.powered()?;
        let path = self.child_path(parent, name)?;
        self.by_path.get(&path).copied().ok_or_else(enoent)
    }

    /// The kind of `ino`.
    pub fn kind(&self, ino: u64) -> io::Result<Kind> {
        Ok(self.node(ino)?.kind)
    }

    /// The metadata of `ino`: of its open file `fh` if given, else of its live path.
    pub fn metadata(&self, ino: u64, fh: Option<u64>) -> io::Result<fs::Metadata> {
        self.powered()?;
        if let Some((_, file)) = fh.and_then(|fh| self.handles.get(&fh)) {
            return file.metadata();
        }
        if let Ok(path) = self.live_path(ino) {
            return fs::symlink_metadata(path);
        }
        // A removed file still open through some handle.
        match self.handles.values().find(|(i, _)| *i == ino) {
            Some((_, file)) => file.metadata(),
            None => Err(enoent()),
        }
    }

    /// The entries of directory `ino`: name, inode and kind.
    pub fn read_dir(&self, ino: u64) -> io::Result<Vec<(OsString, u64, Kind)>> {
        self.powered()?;
        let dir = self.rel_path(ino)?;
        let mut entries = Vec::new();
        for entry in fs::read_dir(self.live.join(&dir))? {
            let name = entry?.file_name();
            if let Some(&child) = self.by_path.get(&dir.join(&name)) {
                entries.push((name, child, self.node(child)?.kind));
            }
        }
        entries.sort();
        Ok(entries)
    }

    /// Creates file `name` in `parent` (failing if it exists when `exclusive`) and opens it.
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        exclusive: bool,
    ) -> io::Result<(u64, u64)> {
        let path = self.child_path(parent, name)?;
        self.gate(Op::Create, &path)?;
        if let Some(&ino) = self.by_path.get(&path) {
            if exclusive {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            let fh = self.open(ino, true)?;
            return Ok((ino, fh));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(self.live.join(&path))?;
        let ino = self.new_node(Kind::File, path, false);
        File::create(self.store_path(ino))?;
        Ok((ino, self.add_handle(ino, file)))
    }

    fn add_handle(&mut self, ino: u64, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, (ino, file));
        fh
    }

    /// Opens file `ino` for reading, and for writing if `write`.
    pub fn open(&mut self, ino: u64, write: bool) -> io::Result<u64> {
        self.powered()?;
        if self.node(ino)?.kind != Kind::File {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(self.live_path(ino)?)?;
        Ok(self.add_handle(ino, file))
    }

    /// Closes handle `fh`.
    pub fn release(&mut self, fh: u64) {
        self.handles.remove(&fh);
    }

    fn handle(&self, fh: u64) -> io::Result<&(u64, File)> {
        self.handles
            .get(&fh)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Reads up to `len` bytes at `offset` through handle `fh`.
    pub fn read(&self, fh: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.powered()?;
        let (_, file) = self.handle(fh)?;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match file.read_at(&mut buf[got..], offset + got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    fn path_for_gate(&self, ino: u64) -> PathBuf {
        self.rel_path(ino)
            .unwrap_or_else(|_| PathBuf::from("<removed>"))
    }

    /// Writes `data` at `offset` through handle `fh`.
    pub fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let ino = self.handle(fh)?.0;
        self.gate(Op::Write, &self.path_for_gate(ino))?;
        self.keep_durable_copy(ino)?;
        self.handle(fh)?.1.write_all_at(data, offset)?;
        self.node_mut(ino)?
            .dirty
            .insert(offset..offset + data.len() as u64);
        Ok(())
    }

    /// Sets the size of file `ino`, through handle `fh` if given.
    pub fn truncate(&mut self, ino: u64, fh: Option<u64>, len: u64) -> io::Result<()> {
        self.gate(Op::Truncate, &self.path_for_gate(ino))?;
        self.keep_durable_copy(ino)?;
        let old = match fh {
            Some(fh) => {
                let file = &self.handle(fh)?.1;
                let old = file.metadata()?.len();
                file.set_len(len)?;
                old
            }
            None => {
                let file = OpenOptions::new().write(true).open(self.live_path(ino)?)?;
                let old = file.metadata()?.len();
                file.set_len(len)?;
                old
            }
        };
        // The bytes cut off (or the old tail now read as zeros) differ from the durable copy.
        self.node_mut(ino)?.dirty.insert(len.min(old)..len.max(old));
        Ok(())
    }

    /// Sets the permission bits of `ino`. Not tracked for durability.
    pub fn chmod(&mut self, ino: u64, mode: u32) -> io::Result<()> {
        self.powered()?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            self.live_path(ino)?,
            fs::Permissions::from_mode(mode & 0o7777),
        )
    }

    /// Fsyncs (or fdatasyncs) file `ino`: its data and size become durable.
    pub fn fsync(&mut self, ino: u64, fh: Option<u64>) -> io::Result<()> {
        self.gate(Op::Fsync, &self.path_for_gate(ino))?;
        if self.node(ino)?.kind == Kind::Dir {
            return self.sync_entries(ino);
        }
        if self.node(ino)?.dirty.is_empty() {
            return Ok(());
        }
        let source = match fh.and_then(|fh| self.handles.get(&fh)) {
            Some((_, file)) => file.try_clone()?,
            None => File::open(self.live_path(ino)?)?,
        };
        let durable = OpenOptions::new().write(true).open(self.store_path(ino))?;
        let len = source.metadata()?.len();
        let node = self.node_mut(ino)?;
        let mut buf = Vec::new();
        for range in node.dirty.iter() {
            let end = range.end.min(len);
            if range.start >= end {
                continue;
            }
            buf.resize((end - range.start) as usize, 0);
            source.read_exact_at(&mut buf, range.start)?;
            durable.write_all_at(&buf, range.start)?;
        }
        durable.set_len(len)?;
        node.dirty.clear();
        Ok(())
    }

    /// Fsyncs directory `ino`: its entries as they are now become durable.
    pub fn fsyncdir(&mut self, ino: u64) -> io::Result<()> {
        self.gate(Op::Fsyncdir, &self.path_for_gate(ino))?;
        self.sync_entries(ino)
    }

    fn sync_entries(&mut self, ino: u64) -> io::Result<()> {
        let entries = self
            .read_dir(ino)?
            .into_iter()
            .map(|(name, child, _)| (name, child))
            .collect();
        self.node_mut(ino)?.durable_entries = entries;
        Ok(())
    }

    /// Creates directory `name` in `parent`.
    pub fn mkdir(&mut self, parent: u64, name: &OsStr, mode: u32) -> io::Result<u64> {
        let path = self.child_path(parent, name)?;
        self.gate(Op::Mkdir, &path)?;
        fs::DirBuilder::new()
            .mode(mode & 0o7777)
            .create(self.live.join(&path))?;
        Ok(self.new_node(Kind::Dir, path, false))
    }

    /// Removes file `name` from `parent`.
    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> io::Result<()> {
        let path = self.child_path(parent, name)?;
        self.gate(Op::Unlink, &path)?;
        let ino = *self.by_path.get(&path).ok_or_else(enoent)?;
        if self.node(ino)?.kind == Kind::Dir {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        self.keep_durable_copy(ino)?;
        fs::remove_file(self.live.join(&path))?;
        self.by_path.remove(&path);
        self.node_mut(ino)?.path = None;
        Ok(())
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> io::Result<()> {
        let path = self.child_path(parent, name)?;
        self.gate(Op::Rmdir, &path)?;
        let ino = *self.by_path.get(&path).ok_or_else(enoent)?;
        fs::remove_dir(self.live.join(&path))?;
        self.by_path.remove(&path);
        self.node_mut(ino)?.path = None;
        Ok(())
    }

    /// Moves `name` in `parent` to `new_name` in `new_parent`, replacing what is there unless
    /// `no_replace`.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> io::Result<()> {
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        self.gate(Op::Rename, &to)?;
        let ino = *self.by_path.get(&from).ok_or_else(enoent)?;
        let replaced = self.by_path.get(&to).copied();
        if no_replace && replaced.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        if let Some(old) = replaced.filter(|&old| old != ino) {
            self.keep_durable_copy(old)?;
        }
        fs::rename(self.live.join(&from), self.live.join(&to))?;
        if let Some(old) = replaced.filter(|&old| old != ino) {
            self.node_mut(old)?.path = None;
        }
        // Move the node and, for a directory, everything under it.
        let moved: Vec<(PathBuf, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old_path, i) in moved {
            self.by_path.remove(&old_path);
            let rest = old_path.strip_prefix(&from).map_err(io::Error::other)?;
            let new_path = if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
            self.by_path.insert(new_path.clone(), i);
            self.node_mut(i)?.path = Some(new_path);
        }
        Ok(())
    }

    /// What the session did.
    pub fn report(&self) -> Report {
        Report {
            counts: Op::ALL
                .iter()
                .map(|op| (op.name(), self.counts.get(op).copied().unwrap_or(0)))
                .collect(),
            power_cut: self.power_cut.clone(),
            killed: self.killed.clone(),
        }
    }

    /// Ends the session. After a power cut, the live directory is rebuilt from what was
    /// durable; otherwise it stays as it is (a clean shutdown syncs everything). The store is
    /// removed either way.
    pub fn finish(&mut self) -> io::Result<Report> {
        self.handles.clear();
        let report = self.report();
        if self.power_cut.is_some() {
            let rebuilt = self.store.join("rebuilt");
            fs::create_dir(&rebuilt)?;
            let mut visited = HashSet::from([ROOT]);
            self.materialize(ROOT, &rebuilt, &mut visited)?;
            for entry in fs::read_dir(&self.live)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(entry.path())?;
                } else {
                    fs::remove_file(entry.path())?;
                }
            }
            for entry in fs::read_dir(&rebuilt)? {
                let entry = entry?;
                fs::rename(entry.path(), self.live.join(entry.file_name()))?;
            }
        }
        fs::remove_dir_all(&self.store)?;
        Ok(report)
    }

    /// Writes directory `ino`'s durable entries, recursively, into `out`.
    fn materialize(&self, ino: u64, out: &Path, visited: &mut HashSet<u64>) -> io::Result<()> {
        for (name, &child) in &self.node(ino)?.durable_entries {
            let node = self.node(child)?;
            let target = out.join(name);
            match node.kind {
                Kind::Dir => {
                    fs::create_dir(&target)?;
                    if visited.insert(child) {
                        self.materialize(child, &target, visited)?;
                    }
                }
                Kind::File => {
                    let source = if node.copied {
                        self.store_path(child)
                    } else {
                        // Unchanged since the session started, so still at its live path.
                        self.live_path(child)?
                    };
                    fs::copy(source, target)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
