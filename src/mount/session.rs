//! Mounting and unmounting: the FUSE session's life, and clearing a mount a crash left behind.

use std::path::{Path, PathBuf};

use fuser::{Config, MountOption, SessionACL};

use super::LtxdFs;

/// A mounted file system, served by background threads until it is unmounted.
pub struct Mounted {
    session: fuser::BackgroundSession,
    dir: PathBuf,
}

impl Mounted {
    /// Mounts `fs` at `dir`, serving requests on `threads` threads.
    pub fn mount(
        fs: LtxdFs,
        dir: &Path,
        allow_other: bool,
        threads: usize,
    ) -> std::io::Result<Mounted> {
        clear_stale_mount(dir)?;
        std::fs::create_dir_all(dir)?;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("ltxd".into()),
            MountOption::Subtype("ltxd".into()),
        ];
        config.acl = if allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(threads.max(1));
        config.clone_fd = true;
        let applier = fs.applier();
        let session = fuser::Session::new(fs, dir, &config)?;
        applier.set_notifier(session.notifier());
        let session = session.spawn()?;
        Ok(Mounted {
            session,
            dir: dir.to_path_buf(),
        })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts and waits for the serving threads to finish.
    pub fn unmount(self) -> std::io::Result<()> {
        self.session.umount_and_join()
    }
}

/// Detaches a FUSE mount at `dir` whose server is gone, as a crash leaves behind. The check is
/// `statfs`, which always reaches the file system's server (a `stat` may be answered from the
/// kernel's attribute cache for a while after the server died); a dead one gives `ENOTCONN`.
pub fn clear_stale_mount(dir: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path and `stats` a properly sized out-parameter.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut stats) } == 0 {
        return Ok(());
    }
    if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOTCONN) {
        return Ok(());
    }
    tracing::warn!(dir = %dir.display(), "clearing a stale mount left by a crash");
    // SAFETY: `c` is a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
