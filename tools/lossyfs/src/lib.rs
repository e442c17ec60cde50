//! lossyfs: a FUSE pass-through that loses power on demand, for ltxd's power-loss tests.
//!
//! Processes see a normal file system over a live directory. lossyfs keeps track of what a
//! power loss would keep, by POSIX's rules: a file's data once it is fsynced or fdatasynced, a
//! name once its directory is fsynced (see [`disk`]). When the power is cut, by
//! [`Mounted::power_off`], by a [`Trap`] at the n-th matching operation, or by `SIGUSR1` to the
//! `lossyfs` binary, every later operation fails with `EIO`, and unmounting rewrites the live
//! directory to hold only what was durable. The next mount then sees what a machine would see
//! after the power came back.
//!
//! The same idea as LazyFS, at the size of a test tool: single-threaded, regular files and
//! directories only (no links, no special files), and everything it knows in memory.

pub mod disk;
mod fs;
mod ranges;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use disk::{Action, Op, Report, Trap};

use disk::Disk;
use fuser::{Config, MountOption, SessionACL};

/// How long an unmount waits for open files to be closed before it detaches the mount.
const UNMOUNT_WAIT: Duration = Duration::from_secs(5);

/// A mounted lossyfs, served by a background thread until [`Mounted::unmount`] (or drop).
pub struct Mounted {
    disk: Arc<Mutex<Disk>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    /// The FUSE connection's number (the mount's device minor), to abort it.
    connection: Option<u32>,
}

impl Mounted {
    /// Mounts lossyfs at `mountpoint` over the live directory `live`, whose contents all count
    /// as durable now, keeping its bookkeeping in `store` (emptied first; outside `live`).
    pub fn mount(
        live: &Path,
        store: &Path,
        mountpoint: &Path,
        trap: Option<Trap>,
    ) -> io::Result<Mounted> {
        let disk = Arc::new(Mutex::new(Disk::new(live, store, trap)?));
        std::fs::create_dir_all(mountpoint)?;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("lossyfs".into()),
            MountOption::Subtype("lossyfs".into()),
        ];
        config.acl = SessionACL::Owner;
        config.n_threads = Some(1);
        let session =
            fuser::Session::new(fs::LossyFs::new(Arc::clone(&disk)), mountpoint, &config)?;
        let session = session.spawn()?;
        let connection = std::fs::metadata(mountpoint)
            .ok()
            .map(|meta| libc::minor(std::os::unix::fs::MetadataExt::dev(&meta)));
        Ok(Mounted {
            disk,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
            connection,
        })
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Arms `trap`, counting operations afresh from now (a trap given to [`Mounted::mount`]
    /// counts from the start).
    pub fn arm(&self, trap: Trap) {
        self.disk().arm(trap);
    }

    /// Cuts the power now.
    pub fn power_off(&self, reason: &str) {
        self.disk().power_off(reason.to_string());
    }

    /// A handle that tells, from any thread, whether the power was cut.
    pub fn probe(&self) -> PowerProbe {
        PowerProbe(Arc::clone(&self.disk))
    }

    /// Why the power was cut, if it was.
    pub fn power_cut(&self) -> Option<String> {
        self.disk().power_cut().map(str::to_string)
    }

    /// Which operation's caller a trap killed, if one did.
    pub fn killed(&self) -> Option<String> {
        self.disk().killed().map(str::to_string)
    }

    /// What the session has done so far.
    pub fn report(&self) -> Report {
        self.disk().report()
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unmounts, then ends the session: after a power cut, the live directory keeps only what
    /// was durable. Every process using the mount must have closed its files (an unmount that
    /// stays busy for 5 s is detached lazily).
    pub fn unmount(mut self) -> io::Result<Report> {
        self.end_session()?;
        self.disk().finish()
    }

    fn end_session(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + UNMOUNT_WAIT;
        loop {
            match umount(&self.mountpoint, 0) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    self.detach();
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        session.join()
    }

    /// Detaches the mount and aborts its connection, so that files still open in it fail
    /// rather than keep the session alive.
    fn detach(&self) {
        let _ = umount(&self.mountpoint, libc::MNT_DETACH);
        if let Some(connection) = self.connection {
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{connection}/abort"), "1");
        }
    }
}

impl Drop for Mounted {
    /// A mount dropped without [`Mounted::unmount`] (a failing test) is detached, and its
    /// bookkeeping left as it is.
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.detach();
            let _ = session.join();
        }
    }
}

/// Tells whether a mount's power was cut, from any thread.
#[derive(Clone)]
pub struct PowerProbe(Arc<Mutex<Disk>>);

impl PowerProbe {
    /// True once the power was cut.
    pub fn is_cut(&self) -> bool {
        let disk = self.0.lock().unwrap_or_else(|p| p.into_inner());
        disk.power_cut().is_some()
    }
}

/// `umount2(dir, flags)`.
fn umount(dir: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
