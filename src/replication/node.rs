//! What a node knows about itself and its primary, shared by the mount daemon, the service
//! that answers `/info`, and the follower.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

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
        }
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

    /// On a replica, how far the last applied transaction of `db` trails the primary's clock as
    /// last heard (ms).
    pub fn database_lag_ms(&self, db: &str) -> Option<i64> {
        let role = self.role();
        if role.is_primary {
            return None;
        }
        let applied = *role.applied_ms.get(db)?;
        role.primary_clock_ms.map(|clock| (clock - applied).max(0))
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
