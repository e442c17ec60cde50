//! `ltxd mount`'s wait for a role before it mounts, which SIGINT or SIGTERM ends at once.

use std::time::Duration;

use tokio::sync::watch;

/// How the wait for a role ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RoleWait {
    /// The node knows its role.
    Decided,
    /// No role within the limit (or the driver stopped).
    Undecided,
    /// A signal to stop arrived.
    Signal(i32),
}

/// How often pending signals are looked at while waiting.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Waits up to `limit` for `decided` to turn true, returning early on a pending signal.
pub async fn wait_for_role(
    decided: &mut watch::Receiver<bool>,
    signals: &mut signal_hook::iterator::Signals,
    limit: Duration,
) -> RoleWait {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(signal) = signals.pending().next() {
            return RoleWait::Signal(signal);
        }
        if *decided.borrow_and_update() {
            return RoleWait::Decided;
        }
        if tokio::time::Instant::now() >= deadline {
            return RoleWait::Undecided;
        }
        tokio::select! {
            changed = decided.changed() => if changed.is_err() {
                return RoleWait::Undecided;
            },
            () = tokio::time::sleep(SIGNAL_POLL) => {}
        }
    }
}
