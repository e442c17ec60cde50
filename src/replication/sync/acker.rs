//! The replica's side of synchronous replication: after each file is in its log, it tells the
//! primary how far its log goes (`Connector::ack`). Acknowledgements are coalesced: while one is
//! on its way, newer positions replace older ones, and the next carries the newest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ltxd_protocol::{Connector, Pos};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a failed acknowledgement waits before the next try (the primary may be restarting;
/// the stream notices that on its own).
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// Sends the replica's positions to the primary for one stream that negotiated `acks`. Dropping
/// it stops the sending.
pub struct Acker {
    positions: watch::Sender<BTreeMap<String, Pos>>,
    task: JoinHandle<()>,
}

impl Acker {
    /// Starts acknowledging to the primary at `url` as replica `node_id`, with the positions the
    /// replica's log held when it subscribed (sent at once, so that a replica that is already
    /// caught up counts before the next commit).
    pub fn start(
        connector: Arc<dyn Connector>,
        url: String,
        node_id: u64,
        held: BTreeMap<String, Pos>,
    ) -> Acker {
        let (positions, mut changes) = watch::channel(held);
        changes.mark_changed();
        let task = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let positions = changes.borrow_and_update().clone();
                if let Err(err) = connector.ack(&url, node_id, &positions).await {
                    tracing::debug!(%err, url, "cannot acknowledge to the primary");
                    tokio::time::sleep(RETRY_DELAY).await;
                    changes.mark_changed();
                }
            }
        });
        Acker { positions, task }
    }

    /// `db` is at `pos` in the replica's log.
    pub fn applied(&self, db: &str, pos: Pos) {
        self.positions.send_modify(|positions| {
            positions.insert(db.to_string(), pos);
        });
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
