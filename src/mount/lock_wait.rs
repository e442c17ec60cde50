//! Waiting for lock tables to change, for blocking lock requests (`F_SETLKW`).
//!
//! A [`LockWaiters`] counts changes. Whoever changes a lock table in a way that may let a waiter
//! in (an unlock, a release on close, a downgrade) calls [`LockWaiters::notify`] after the change;
//! a blocking request retries through [`LockWaiters::wait_for`], which sleeps between attempts
//! until the count moves. One `LockWaiters` may serve one file or all of them: a change to an
//! unrelated table only costs a waiter a spurious retry.
//!
//! No deadlock detection (`EDEADLK`) is done: a waiter waits until the lock is granted or its
//! timeout passes. SQLite itself only uses non-blocking `F_SETLK`.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lets blocking lock requests wait, with a timeout, until a lock table changes.
#[derive(Debug, Default)]
pub struct LockWaiters {
    /// How many times [`LockWaiters::notify`] was called (wrapping).
    generation: Mutex<u64>,
    /// Signalled on every change.
    changed: Condvar,
}

impl LockWaiters {
    /// Waiters with no change counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current change count, to pass to [`LockWaiters::wait`]. Read it before the attempt
    /// that may fail, so that a change between the attempt and the wait is not missed.
    pub fn generation(&self) -> u64 {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a change and wakes every waiter. Call it after the change is visible to them
    /// (after releasing the lock that guards the table, or while holding it).
    pub fn notify(&self) {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *generation = generation.wrapping_add(1);
        self.changed.notify_all();
    }

    /// Waits until the change count differs from `seen` or `timeout` passes. Returns true when it
    /// changed.
    pub fn wait(&self, seen: u64, timeout: Duration) -> bool {
        let generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (generation, _) = self
            .changed
            .wait_timeout_while(generation, timeout, |generation| *generation == seen)
            .unwrap_or_else(PoisonError::into_inner);
        *generation != seen
    }

    /// Runs `attempt` until it succeeds, waiting for a change between attempts, for at most
    /// `timeout`. Returns the first success, or the last failure once the timeout has passed.
    ///
    /// For `F_SETLKW`, `attempt` locks the table and calls
    /// [`LockTable::try_lock`](super::locks::LockTable::try_lock); the failure is the
    /// [`Conflict`](super::locks::Conflict). To give up early (a FUSE interrupt), make `attempt`
    /// fail for good and call [`LockWaiters::notify`] to wake it.
    pub fn wait_for<T, E>(
        &self,
        timeout: Duration,
        mut attempt: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let seen = self.generation();
            let failure = match attempt() {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let remaining = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => timeout,
            };
            if remaining.is_zero() {
                return Err(failure);
            }
            self.wait(seen, remaining);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::locks::{Holder, LockKind, LockTable};
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn wait_returns_false_on_timeout_and_true_on_change() {
        let waiters = LockWaiters::new();
        let seen = waiters.generation();
        assert!(!waiters.wait(seen, Duration::from_millis(10)));
        waiters.notify();
        assert!(waiters.wait(seen, Duration::from_secs(10)));
        assert_ne!(waiters.generation(), seen);
    }

    #[test]
    fn a_blocked_writer_gets_the_lock_once_the_reader_releases() {
        let table = Arc::new(Mutex::new(LockTable::default()));
        let waiters = Arc::new(LockWaiters::new());
        let reader = Holder { owner: 1, pid: 1 };
        let writer = Holder { owner: 2, pid: 2 };
        table
            .lock()
            .unwrap()
            .try_lock(reader, 0, 9, LockKind::Read)
            .unwrap();

        let blocked = {
            let (table, waiters) = (table.clone(), waiters.clone());
            thread::spawn(move || {
                waiters.wait_for(Duration::from_secs(60), || {
                    table
                        .lock()
                        .unwrap()
                        .try_lock(writer, 5, 5, LockKind::Write)
                })
            })
        };
        thread::sleep(Duration::from_millis(20));
        assert!(table.lock().unwrap().unlock(reader.owner, 0, 9));
        waiters.notify();

        assert_eq!(blocked.join().unwrap(), Ok(()));
        assert_eq!(
            table.lock().unwrap().held(writer.owner, 5),
            Some(LockKind::Write)
        );
    }

    #[test]
    fn a_blocked_request_times_out_with_the_conflict() {
        let mut table = LockTable::default();
        let reader = Holder { owner: 1, pid: 7 };
        table.try_lock(reader, 0, 9, LockKind::Read).unwrap();
        let waiters = LockWaiters::new();
        let mut attempts = 0;
        let result = waiters.wait_for(Duration::from_millis(20), || {
            attempts += 1;
            table.test(2, 0, 0, LockKind::Write).map_or(Ok(()), Err)
        });
        assert_eq!(result.unwrap_err().pid, 7);
        assert!(attempts >= 1);
    }
}
