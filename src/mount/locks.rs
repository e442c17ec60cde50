//! SQLite's locks as the daemon takes them: through its own descriptors on the mount.
//!
//! The kernel keeps the POSIX locks of the mount's files (the mount does not ask for
//! `FUSE_POSIX_LOCKS`). The replica's applier and the handoff's drain take SQLite's locks as any
//! SQLite connection would, through a descriptor of their own on the mount, so that the kernel
//! arbitrates them against every application's locks. They are open-file-description locks
//! (`F_OFD_SETLK`): they conflict with SQLite's process-owned locks, and closing another
//! descriptor of the daemon never drops them. A lock is released when its [`Held`] is dropped.
//!
//! SQLite takes its locks without waiting (`F_SETLK`) and retries in its busy handler; the
//! daemon polls the same way, yielding first and then sleeping a little longer each time, up to
//! a deadline.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::names::FileKind;

/// How many times a lock is retried with a yield before the daemon sleeps between tries.
const YIELDS: u32 = 64;
/// The longest sleep between two tries.
const MAX_SLEEP: Duration = Duration::from_millis(1);

/// Where the daemon opens its descriptors on the mount: the mount point, once mounted.
#[derive(Default)]
pub(super) struct MountLocks {
    dir: OnceLock<PathBuf>,
}

/// A write lock on bytes `start..=end` of a file of the mount, released on drop.
pub(super) struct Held {
    file: Arc<File>,
    start: u64,
    end: u64,
}

impl MountLocks {
    /// Where the file system is mounted, once it is.
    pub(super) fn set_dir(&self, dir: &Path) {
        let _ = self.dir.set(dir.to_path_buf());
    }

    /// A descriptor of the daemon's own on file `kind` of database `name` in the mount, open for
    /// writing (a write lock needs it); `create` creates the file if it is missing. `Ok(None)`
    /// when the file system is not mounted, or the file does not exist and is not created.
    /// It is closed when the last [`Held`] on it goes, so that it never keeps the mount busy.
    pub(super) fn open(
        &self,
        name: &str,
        kind: FileKind,
        create: bool,
    ) -> std::io::Result<Option<Arc<File>>> {
        let Some(dir) = self.dir.get() else {
            return Ok(None);
        };
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(dir.join(kind.name_for(name)))
        {
            Ok(file) => Ok(Some(Arc::new(file))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }
}

impl Held {
    /// Takes a write lock on bytes `start..=end` of `file`, retrying until `deadline`.
    /// `Ok(None)` when other owners still held a conflicting lock at the deadline.
    pub(super) fn take(
        file: &Arc<File>,
        (start, end): (u64, u64),
        deadline: Instant,
    ) -> std::io::Result<Option<Held>> {
        let mut tries = 0u32;
        let mut sleep = Duration::from_micros(10);
        loop {
            if set_lock(file, libc::F_WRLCK, start, end)? {
                return Ok(Some(Held {
                    file: Arc::clone(file),
                    start,
                    end,
                }));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tries += 1;
            if tries < YIELDS {
                std::thread::yield_now();
            } else {
                std::thread::sleep(sleep);
                sleep = (sleep * 2).min(MAX_SLEEP);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Err(err) = set_lock(&self.file, libc::F_UNLCK, self.start, self.end) {
            tracing::warn!(%err, "cannot release a lock on the mount");
        }
    }
}

/// `F_OFD_SETLK` of bytes `start..=end`: true when set, false when another owner conflicts.
fn set_lock(file: &File, kind: i32, start: u64, end: u64) -> std::io::Result<bool> {
    // SAFETY: an all-zero `flock` is valid; the fields set below describe the range.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start as libc::off_t;
    lock.l_len = (end - start + 1) as libc::off_t;
    // SAFETY: the descriptor is open for the call and `lock` is a valid `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_excludes_another_description_until_dropped() {
        let dir = tempfile::Builder::new()
            .prefix("h13r-locks")
            .tempdir()
            .unwrap();
        let path = dir.path().join("f");
        let open = || {
            Arc::new(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .unwrap(),
            )
        };
        let (a, b) = (open(), open());
        let soon = Instant::now() + Duration::from_millis(20);
        let held = Held::take(&a, (120, 127), soon).unwrap().expect("free");
        assert!(Held::take(&b, (123, 123), soon).unwrap().is_none());
        drop(held);
        let later = Instant::now() + Duration::from_millis(20);
        assert!(Held::take(&b, (123, 123), later).unwrap().is_some());
    }
}
