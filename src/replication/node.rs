//! What a node knows about itself and its primary, shared by the mount daemon, the service
//! that answers `/info`, and the follower.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use ltxd_lease::PrimaryInfo;

/// The node's role and, on a replica, how far behind each database is.
#[derive(Debug)]
pub struct NodeState {
    /// This process's node ID.
    pub node_id: u64,
    /// True if the node may become primary.
    pub candidate: bool,
    /// The data directory.
    pub data_dir: PathBuf,
    role: Mutex<Role>,
    proxy: OnceLock<Arc<crate::proxy::ProxyCounters>>,
}

#[derive(Debug, Default)]
struct Role {
    is_primary: bool,
    primary_hostname: Option<String>,
    /// On a replica, the primary's advertise URL.
    primary_url: Option<String>,
    epoch: Option<u64>,
    ready: bool,
    /// The primary's clock at the last contact (a heartbeat or an applied transaction).
    primary_clock_ms: Option<i64>,
    /// The commit time of the last transaction applied to each database.
    applied_ms: BTreeMap<String, i64>,
    /// The primary's clock at its last heartbeat. The primary sends one only once the stream
    /// has nothing else to send, so every database was caught up at that time.
    heartbeat_ms: Option<i64>,
    /// With a backup, each database's last TXID in the bucket and its lag (ms).
    backup: BTreeMap<String, (u64, u64)>,
}

impl NodeState {
    /// A node that is not primary yet.
    pub fn new(node_id: u64, candidate: bool, data_dir: PathBuf) -> NodeState {
        NodeState {
            node_id,
            candidate,
            data_dir,
            role: Mutex::new(Role::default()),
            proxy: OnceLock::new(),
        }
    }

    /// Records the node's proxy, for `/info`.
    pub fn set_proxy(&self, counters: Arc<crate::proxy::ProxyCounters>) {
        let _ = self.proxy.set(counters);
    }

    /// The node's proxy and its counters, when it runs one.
    pub fn proxy_status(&self) -> Option<ltxd_protocol::ProxyStatus> {
        self.proxy.get().map(|counters| counters.status())
    }

    fn role(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records where database `db`'s backup stands: its last TXID in the bucket, and the age in
    /// ms of the oldest transaction not yet there.
    pub fn set_backup(&self, db: &str, txid: u64, lag_ms: u64) {
        self.role().backup.insert(db.to_string(), (txid, lag_ms));
    }

    /// Where database `db`'s backup stands (see [`NodeState::set_backup`]).
    pub fn backup(&self, db: &str) -> Option<(u64, u64)> {
        self.role().backup.get(db).copied()
    }

    /// Makes this node the primary, with a lease of `epoch`.
    pub fn become_primary(&self, hostname: &str, epoch: Option<u64>) {
        let mut role = self.role();
        role.is_primary = true;
        role.primary_hostname = Some(hostname.to_string());
        role.primary_url = None;
        role.epoch = epoch;
        role.ready = true;
    }

    /// Makes this node a replica of `primary` (when known).
    pub fn become_replica(&self, primary: Option<&PrimaryInfo>) {
        let mut role = self.role();
        role.is_primary = false;
        role.primary_hostname = primary.map(|p| p.hostname.clone());
        role.primary_url = primary.map(|p| p.advertise_url.clone());
        role.epoch = None;
    }

    /// True on the primary.
    pub fn is_primary(&self) -> bool {
        self.role().is_primary
    }

    /// The primary's hostname, if known.
    pub fn primary_hostname(&self) -> Option<String> {
        self.role().primary_hostname.clone()
    }

    /// On a replica, the primary's advertise URL, if known.
    pub fn primary_url(&self) -> Option<String> {
        self.role().primary_url.clone()
    }

    /// The epoch of this node's lease, on the primary.
    pub fn epoch(&self) -> Option<u64> {
        self.role().epoch
    }

    /// True once a replica has caught up with the primary once (or on the primary).
    pub fn is_ready(&self) -> bool {
        self.role().ready
    }

    /// The primary said the replica has every database.
    pub fn set_ready(&self) {
        self.role().ready = true;
    }

    /// The primary's clock, from a heartbeat.
    pub fn heard_from_primary(&self, clock_ms: i64) {
        let mut role = self.role();
        role.primary_clock_ms = Some(role.primary_clock_ms.map_or(clock_ms, |c| c.max(clock_ms)));
        role.heartbeat_ms = Some(role.heartbeat_ms.map_or(clock_ms, |c| c.max(clock_ms)));
    }

    /// A transaction committed at `committed_ms` on the primary was applied to `db`.
    pub fn applied(&self, db: &str, committed_ms: i64) {
        let mut role = self.role();
        role.applied_ms.insert(db.to_string(), committed_ms);
        role.primary_clock_ms = Some(
            role.primary_clock_ms
                .map_or(committed_ms, |c| c.max(committed_ms)),
        );
    }

    /// On a replica, how long ago (ms, by the local clock) the primary was last heard from,
    /// as LiteFS's `.lag` reports it; `None` on the primary or before the first contact.
    pub fn lag_ms(&self, now_ms: i64) -> Option<i64> {
        let role = self.role();
        if role.is_primary {
            return None;
        }
        role.primary_clock_ms.map(|clock| (now_ms - clock).max(0))
    }

    /// On a replica, how far `db` is behind the primary (ms), as `.lag` measures it: the time,
    /// by the local clock at `now_ms`, since the replica last held every transaction of `db`
    /// the primary had committed. That is the later of the primary's last heartbeat (sent only
    /// when the replica lacks nothing) and the commit time of the last transaction applied to
    /// `db`. An idle, caught-up replica stays within a heartbeat interval of 0.
    pub fn database_lag_ms_at(&self, db: &str, now_ms: i64) -> Option<i64> {
        let role = self.role();
        if role.is_primary {
            return None;
        }
        let applied = role.applied_ms.get(db).copied();
        let caught_up = applied.max(role.heartbeat_ms)?;
        Some((now_ms - caught_up).max(0))
    }

    /// [`NodeState::database_lag_ms_at`] now.
    pub fn database_lag_ms(&self, db: &str) -> Option<i64> {
        self.database_lag_ms_at(db, crate::mount::now_ms())
    }
}

impl crate::mount::NodeView for NodeState {
    fn primary_hostname(&self) -> Option<String> {
        let role = self.role();
        (!role.is_primary)
            .then(|| role.primary_hostname.clone())
            .flatten()
    }

    fn lag_ms(&self) -> Option<i64> {
        NodeState::lag_ms(self, crate::mount::now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::NodeState;

    #[test]
    fn an_idle_caught_up_replica_has_no_lag() {
        let node = NodeState::new(1, false, "/tmp".into());
        assert_eq!(node.database_lag_ms_at("db", 0), None, "nothing heard yet");
        // The last write was 10 days ago; heartbeats keep coming.
        node.applied("db", 1_000);
        node.heard_from_primary(864_000_000);
        assert_eq!(node.database_lag_ms_at("db", 864_000_300), Some(300));
        assert_eq!(node.database_lag_ms_at("other", 864_000_300), Some(300));
    }

    #[test]
    fn a_replica_catching_up_lags_by_its_last_applied_commit() {
        let node = NodeState::new(1, false, "/tmp".into());
        node.heard_from_primary(1_000);
        node.applied("db", 5_000);
        assert_eq!(node.database_lag_ms_at("db", 9_000), Some(4_000));
        // The primary stopped talking: the lag keeps growing, as `.lag` does.
        assert_eq!(node.database_lag_ms_at("db", 20_000), Some(15_000));
    }

    #[test]
    fn the_primary_has_no_lag() {
        let node = NodeState::new(1, true, "/tmp".into());
        node.heard_from_primary(1_000);
        node.become_primary("me", None);
        assert_eq!(node.database_lag_ms_at("db", 2_000), None);
    }
}
