//! Mounting and unmounting: the FUSE session's life, and clearing a mount a crash left behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};

use super::busy_poll::BusyPoll;
use super::LtxdFs;

/// How long an unmount waits for applications to close their files before it detaches the
/// mount lazily.
const UNMOUNT_WAIT: Duration = Duration::from_secs(2);

/// A mounted file system, served by background threads until it is unmounted.
pub struct Mounted {
    session: fuser::BackgroundSession,
    busy_poll: Option<Arc<BusyPoll>>,
    dir: PathBuf,
    /// The FUSE connection's number (the mount's device minor), to abort it.
    connection: Option<u32>,
}

impl Mounted {
    /// Mounts `fs` at `dir`, serving requests on `threads` threads (one with busy polling).
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
        let busy_poll = fs.busy_poll();
        // A polling thread takes every request it can, so more threads would only be woken for
        // nothing: with busy polling, one thread serves.
        config.n_threads = Some(if busy_poll.is_some() {
            1
        } else {
            threads.max(1)
        });
        config.clone_fd = true;
        let applier = fs.applier();
        let session = fuser::Session::new(fs, dir, &config)?;
        applier.set_mount(session.notifier(), dir);
        if let Some(busy_poll) = &busy_poll {
            busy_poll.start(std::os::fd::AsFd::as_fd(&session))?;
            tracing::info!(window = ?busy_poll.window(), "busy polling the FUSE device");
        }
        let session = session.spawn()?;
        // Never `stat` the mount from here: a SIGKILL while this process waits on its own
        // mount would leave it unkillable (the request is answered by threads already gone).
        let connection = connection_of(dir);
        Ok(Mounted {
            session,
            busy_poll,
            dir: dir.to_path_buf(),
            connection,
        })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts and waits for the serving threads to finish. A file still open in the mount
    /// (an application, or a process between fork and exec) makes the kernel refuse: the unmount
    /// is retried for [`UNMOUNT_WAIT`], then the mount is detached lazily and its connection
    /// aborted, so that those files fail with ENOTCONN instead of keeping a dead mount.
    pub fn unmount(self) -> std::io::Result<()> {
        let deadline = Instant::now() + UNMOUNT_WAIT;
        loop {
            match umount(&self.dir, 0) {
                Ok(()) => break,
                // Unmounted already, from outside ltxd.
                Err(err) if err.raw_os_error() == Some(libc::EINVAL) => break,
                Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                    if Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    tracing::warn!(dir = %self.dir.display(), "files are still open in the mount: detaching it");
                    umount(&self.dir, libc::MNT_DETACH)?;
                    if let Some(connection) = self.connection {
                        let abort = format!("/sys/fs/fuse/connections/{connection}/abort");
                        if let Err(err) = std::fs::write(&abort, "1") {
                            tracing::warn!(%err, abort, "cannot abort the FUSE connection");
                        }
                    }
                    break;
                }
                Err(err) => return Err(err),
            }
        }
        if let Some(busy_poll) = &self.busy_poll {
            busy_poll.stop();
        }
        // The kernel has ended the session; fuser's own unmount then finds nothing to do.
        self.session.join()
    }
}

/// The FUSE connection number (device minor) of the newest mount at `dir`, from
/// `/proc/self/mountinfo`, which the kernel answers without asking the file system.
fn connection_of(dir: &Path) -> Option<u32> {
    let mountinfo = std::fs::read("/proc/self/mountinfo").ok()?;
    let dir = mountinfo_escape(dir);
    let device = mountinfo
        .split(|&byte| byte == b'\n')
        .rev()
        .find_map(|line| {
            let mut fields = line.split(|&byte| byte == b' ');
            let device = fields.nth(2)?;
            (fields.nth(1)? == dir.as_slice()).then_some(device)
        })?;
    let (_major, minor) = std::str::from_utf8(device).ok()?.split_once(':')?;
    minor.parse().ok()
}

/// `dir` as `/proc/self/mountinfo` writes it: space, tab, newline and backslash as octal escapes.
fn mountinfo_escape(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &byte in dir.as_os_str().as_encoded_bytes() {
        match byte {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend(format!("\\{byte:03o}").bytes()),
            _ => out.push(byte),
        }
    }
    out
}

/// `umount2(dir, flags)`.
fn umount(dir: &Path, flags: libc::c_int) -> std::io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
    umount(dir, libc::MNT_DETACH)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn mount_points_are_escaped_as_mountinfo_writes_them() {
        assert_eq!(
            super::mountinfo_escape(Path::new("/a b\\c")),
            b"/a\\040b\\134c"
        );
        assert_eq!(
            super::mountinfo_escape(Path::new("/tmp/é")),
            "/tmp/é".as_bytes()
        );
    }

    #[test]
    fn the_root_s_device_is_found() {
        // `/` is always mounted; its minor is whatever this machine's root device has.
        assert!(super::connection_of(Path::new("/")).is_some());
    }
}
