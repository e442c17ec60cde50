//! Busy polling of the FUSE device (`fuse.busy-poll`): while applications keep the mount busy,
//! the serving thread reads `/dev/fuse` without blocking, so that a request is picked up without
//! a wake-up; after a quiet spell of the configured length it blocks again.
//!
//! fuser's loop retries a read that fails with `EAGAIN`, so switching `O_NONBLOCK` on the
//! device's open file turns its blocking reads into polling and back. A governor thread does the
//! switching: a request that arrives while the loop blocks wakes it, and it switches back once a
//! whole window has passed without a request.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The polling switch of one mount.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    /// Requests seen; the governor compares it across a window.
    requests: AtomicU64,
    /// True while the device is non-blocking.
    polling: AtomicBool,
    wake: Mutex<Wake>,
    woken: Condvar,
}

#[derive(Debug, Default)]
struct Wake {
    requested: bool,
    stopped: bool,
}

impl BusyPoll {
    /// A switch that keeps polling until `window` passes without a request. It does nothing
    /// until [`BusyPoll::start`].
    pub fn new(window: Duration) -> Arc<BusyPoll> {
        Arc::new(BusyPoll {
            window,
            requests: AtomicU64::new(0),
            polling: AtomicBool::new(false),
            wake: Mutex::new(Wake::default()),
            woken: Condvar::new(),
        })
    }

    /// How long polling goes on after the last request.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Starts the governor over the FUSE device `device` (a duplicate is kept, so the
    /// governor never touches a closed descriptor).
    pub fn start(self: &Arc<Self>, device: BorrowedFd<'_>) -> std::io::Result<()> {
        let device = device.try_clone_to_owned()?;
        let this = Arc::clone(self);
        std::thread::Builder::new()
            .name("fuse-busy-poll".into())
            .spawn(move || this.govern(&device))?;
        Ok(())
    }

    /// Stops the governor; the device is left blocking.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.woken.notify_all();
    }

    /// Notes a request: called by every request handler that applications use on their commit
    /// path. Wakes the governor if the device is blocking.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !self.polling.load(Ordering::Relaxed) {
            self.lock().requested = true;
            self.woken.notify_all();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Wake> {
        self.wake.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn govern(&self, device: &OwnedFd) {
        loop {
            {
                let mut wake = self.lock();
                while !wake.requested && !wake.stopped {
                    wake = self
                        .woken
                        .wait(wake)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if wake.stopped {
                    return;
                }
                wake.requested = false;
            }
            if let Err(err) = set_nonblocking(device, true) {
                tracing::warn!(%err, "cannot poll the FUSE device: busy polling is off");
                return;
            }
            self.polling.store(true, Ordering::Relaxed);
            loop {
                let seen = self.requests.load(Ordering::Relaxed);
                let stopped = {
                    let wake = self.lock();
                    let (wake, _) = self
                        .woken
                        .wait_timeout_while(wake, self.window, |wake| !wake.stopped)
                        .unwrap_or_else(PoisonError::into_inner);
                    wake.stopped
                };
                if stopped || self.requests.load(Ordering::Relaxed) == seen {
                    break;
                }
            }
            self.polling.store(false, Ordering::Relaxed);
            if let Err(err) = set_nonblocking(device, false) {
                tracing::warn!(%err, "cannot make the FUSE device blocking again");
            }
        }
    }
}

/// Switches `O_NONBLOCK` on `device`'s open file.
fn set_nonblocking(device: &OwnedFd, on: bool) -> std::io::Result<()> {
    let fd = device.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `device` for the duration of the calls.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above; F_SETFL only changes the file status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn nonblocking(fd: &OwnedFd) -> bool {
        // SAFETY: `fd` is open.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        flags & libc::O_NONBLOCK != 0
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A pipe stands in for the device: the flag lives on the open file, which the governor's
    /// duplicate shares.
    #[test]
    fn polls_while_requests_come_and_blocks_after_a_quiet_window() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let device = OwnedFd::from(reader);
        let busy = BusyPoll::new(Duration::from_millis(20));
        busy.start(std::os::fd::AsFd::as_fd(&device)).unwrap();
        assert!(!nonblocking(&device), "blocking until a request");

        busy.request();
        wait_for("the device polls", || nonblocking(&device));
        // Requests more often than the window keep it polling.
        for _ in 0..10 {
            busy.request();
            std::thread::sleep(Duration::from_millis(5));
            assert!(nonblocking(&device));
        }
        wait_for("the device blocks again", || !nonblocking(&device));

        busy.request();
        wait_for("the device polls again", || nonblocking(&device));
        busy.stop();
        wait_for("the device blocks after stop", || !nonblocking(&device));
    }
}
