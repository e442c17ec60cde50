//! The wait between a commit reaching the local log and the application seeing it succeed:
//! synchronous replication plugs in here ([`CommitGate`]). Without a gate, a commit is answered
//! as soon as it is in the log.

use std::sync::Arc;

use crate::ltx::TxId;

/// What a commit waits for after it is in the local log and before the application sees it
/// succeed (the replicas' acknowledgements).
pub trait CommitGate: Send + Sync {
    /// Calls `done` once commit `txid` of `db` may be acknowledged to the application; at once
    /// when nothing needs to be waited for. `done` may run on another thread.
    fn after_commit(&self, db: &str, txid: TxId, done: Box<dyn FnOnce() + Send>);
}

/// A commit captured by a file operation, whose answer may have to wait for the gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Committed {
    /// The database.
    pub(super) db: String,
    /// Its new last TXID.
    pub(super) txid: TxId,
}

/// Runs `answer` once `committed` (if any) has passed `gate` (if any); at once otherwise.
pub(super) fn answer_after(
    gate: Option<&Arc<dyn CommitGate>>,
    committed: Option<Committed>,
    answer: impl FnOnce() + Send + 'static,
) {
    match (gate, committed) {
        (Some(gate), Some(committed)) => {
            gate.after_commit(&committed.db, committed.txid, Box::new(answer))
        }
        _ => answer(),
    }
}

/// Waits on this thread until `committed` (if any) has passed `gate` (if any).
pub(super) fn wait(gate: Option<&Arc<dyn CommitGate>>, committed: Option<Committed>) {
    let (passed, wait) = std::sync::mpsc::channel();
    answer_after(gate, committed, move || {
        let _ = passed.send(());
    });
    // The gate answers every commit (at the latest at its timeout); if it dropped the answer
    // instead, there is nothing left to wait for.
    let _ = wait.recv();
}
