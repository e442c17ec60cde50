//! Synchronous replication on the primary, as a state machine without I/O: which replicas
//! acknowledged which TXID, which commits wait, how many acknowledgements each needs, and when
//! the primary stops waiting (degrades to asynchronous replication) and starts again.
//!
//! Time is an input. The caller owns the waiters' tokens (`W`): whatever it needs to answer the
//! application once a commit is released.
//!
//! The rules (see `docs/replication.md`):
//! - Only replicas whose stream negotiated acknowledgements count; a replica offers them only
//!   when it is a lease candidate, so a LiteFS peer or a non-candidate is never counted.
//! - `one` needs one replica's acknowledgement; `quorum` a majority of the candidates (itself
//!   included), counting as candidates the most replicas this primary has had acknowledging at
//!   once (node IDs change at every start, so they cannot be counted), and at least one replica;
//!   `all` every replica with an acknowledging stream open, and at least one.
//! - An acknowledgement of TXID n covers every TXID up to n (the replica's log is contiguous),
//!   so commits in flight share acknowledgements (group commit).
//! - A commit still waiting `timeout` after it was registered releases every waiter and
//!   degrades: commits then return without waiting, until the required number of replicas
//!   have acknowledged the head of every database that has waited.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::SyncMode;
use crate::ltx::TxId;

/// Why a commit was released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Enough replicas acknowledged it.
    Acknowledged,
    /// Nothing was required: synchronous replication is off, or degraded.
    NotRequired,
    /// It waited for `sync-timeout`; the primary degraded to asynchronous replication.
    TimedOut,
}

/// A commit that may now be acknowledged to the application.
#[derive(Debug, PartialEq, Eq)]
pub struct Released<W> {
    /// The caller's token.
    pub token: W,
    /// How long it waited.
    pub waited: Duration,
    /// Why it was released.
    pub outcome: Outcome,
}

/// What `ltxd status` and `/metrics` show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// The configured mode.
    pub mode: SyncMode,
    /// True while degraded to asynchronous replication.
    pub degraded: bool,
    /// Time spent degraded in total, up to now.
    pub degraded_total: Duration,
    /// Replicas with an acknowledging stream open.
    pub replicas: usize,
    /// Commits waiting now.
    pub waiting: usize,
}

#[derive(Debug, Default)]
struct Replica {
    /// Acknowledging streams open (over QUIC, one per database).
    streams: usize,
    /// The highest TXID acknowledged, per database.
    acked: BTreeMap<String, TxId>,
}

#[derive(Debug)]
struct Waiter<W> {
    txid: TxId,
    since: Instant,
    token: W,
}

/// The acknowledgement state of a primary.
#[derive(Debug)]
pub struct AckWaits<W> {
    mode: SyncMode,
    timeout: Duration,
    replicas: BTreeMap<u64, Replica>,
    /// The most replicas with an acknowledging stream open at once: `quorum` counts them.
    peak: usize,
    /// The newest TXID registered per database.
    heads: BTreeMap<String, TxId>,
    /// The commits waiting, per database, in TXID order.
    waiting: BTreeMap<String, VecDeque<Waiter<W>>>,
    /// Since when the primary is degraded, if it is.
    degraded_since: Option<Instant>,
    /// Time spent degraded before `degraded_since`.
    degraded_before: Duration,
}

impl<W> AckWaits<W> {
    /// No replica, nothing waiting, not degraded.
    pub fn new(mode: SyncMode, timeout: Duration) -> Self {
        AckWaits {
            mode,
            timeout,
            replicas: BTreeMap::new(),
            peak: 0,
            heads: BTreeMap::new(),
            waiting: BTreeMap::new(),
            degraded_since: None,
            degraded_before: Duration::ZERO,
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// A replica opened a stream that carries acknowledgements.
    pub fn stream_opened(&mut self, node: u64) {
        self.replicas.entry(node).or_default().streams += 1;
        self.peak = self.peak.max(self.replicas.len());
    }

    /// A replica's acknowledging stream ended. Under `all`, commits that waited only for it
    /// are released.
    pub fn stream_closed(&mut self, node: u64, now: Instant) -> Vec<Released<W>> {
        if let Some(replica) = self.replicas.get_mut(&node) {
            replica.streams = replica.streams.saturating_sub(1);
            if replica.streams == 0 {
                self.replicas.remove(&node);
            }
        }
        self.settle(now)
    }

    /// Replica `node` has `db` up to `txid` in its log. Acknowledgements from a node without an
    /// acknowledging stream open are ignored.
    pub fn acked(&mut self, node: u64, db: &str, txid: TxId, now: Instant) -> Vec<Released<W>> {
        let Some(replica) = self.replicas.get_mut(&node) else {
            return Vec::new();
        };
        let acked = replica.acked.entry(db.to_string()).or_insert(TxId::ZERO);
        if txid <= *acked {
            return Vec::new();
        }
        *acked = txid;
        self.settle(now)
    }

    /// `db` committed `txid` to the local log. Returns the token at once when nothing needs to
    /// be waited for; otherwise it waits for [`AckWaits::acked`] or [`AckWaits::expire`].
    pub fn committed(
        &mut self,
        db: &str,
        txid: TxId,
        token: W,
        now: Instant,
    ) -> Option<Released<W>> {
        let head = self.heads.entry(db.to_string()).or_insert(TxId::ZERO);
        *head = (*head).max(txid);
        let not_required = Released {
            token,
            waited: Duration::ZERO,
            outcome: Outcome::NotRequired,
        };
        if self.mode == SyncMode::Off || self.degraded_since.is_some() {
            return Some(not_required);
        }
        if self.holders(db, txid) >= self.required() {
            return Some(Released {
                outcome: Outcome::Acknowledged,
                ..not_required
            });
        }
        self.waiting
            .entry(db.to_string())
            .or_default()
            .push_back(Waiter {
                txid,
                since: now,
                token: not_required.token,
            });
        None
    }

    /// When the oldest waiting commit times out, if any commit waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting
            .values()
            .filter_map(|queue| queue.front())
            .map(|waiter| waiter.since + self.timeout)
            .min()
    }

    /// Releases every waiting commit if one has waited `timeout` by `now`, and degrades.
    pub fn expire(&mut self, now: Instant) -> Vec<Released<W>> {
        if self.next_deadline().is_none_or(|deadline| deadline > now) {
            return Vec::new();
        }
        self.degraded_since = Some(now);
        let mut released = Vec::new();
        for (_, queue) in std::mem::take(&mut self.waiting) {
            released.extend(queue.into_iter().map(|waiter| Released {
                waited: now.saturating_duration_since(waiter.since),
                token: waiter.token,
                outcome: Outcome::TimedOut,
            }));
        }
        released
    }

    /// The state at `now`.
    pub fn status(&self, now: Instant) -> SyncStatus {
        let current = self
            .degraded_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        SyncStatus {
            mode: self.mode,
            degraded: self.degraded_since.is_some(),
            degraded_total: self.degraded_before + current,
            replicas: self.replicas.len(),
            waiting: self.waiting.values().map(VecDeque::len).sum(),
        }
    }

    /// How many replicas' acknowledgements a commit needs.
    fn required(&self) -> usize {
        match self.mode {
            SyncMode::Off => 0,
            SyncMode::One => 1,
            // A majority of (1 + peak) candidates, the primary being one of them.
            SyncMode::Quorum => (self.peak.div_ceil(2)).max(1),
            SyncMode::All => self.replicas.len().max(1),
        }
    }

    /// How many replicas have acknowledged `db` up to `txid`.
    fn holders(&self, db: &str, txid: TxId) -> usize {
        self.replicas
            .values()
            .filter(|replica| replica.acked.get(db).is_some_and(|&acked| acked >= txid))
            .count()
    }

    /// Releases what the acknowledgements now cover, and ends a degradation once every database's
    /// head is covered.
    fn settle(&mut self, now: Instant) -> Vec<Released<W>> {
        let required = self.required();
        if let Some(since) = self.degraded_since {
            let caught_up = self
                .heads
                .iter()
                .all(|(db, &head)| self.holders(db, head) >= required);
            if !caught_up {
                return Vec::new();
            }
            self.degraded_before += now.saturating_duration_since(since);
            self.degraded_since = None;
        }
        let mut released = Vec::new();
        let dbs: Vec<String> = self.waiting.keys().cloned().collect();
        for db in dbs {
            while let Some(front) = self.waiting.get(&db).and_then(VecDeque::front) {
                if self.holders(&db, front.txid) < required {
                    break;
                }
                if let Some(waiter) = self.waiting.get_mut(&db).and_then(VecDeque::pop_front) {
                    released.push(Released {
                        waited: now.saturating_duration_since(waiter.since),
                        token: waiter.token,
                        outcome: Outcome::Acknowledged,
                    });
                }
            }
            if self.waiting.get(&db).is_some_and(VecDeque::is_empty) {
                self.waiting.remove(&db);
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn tokens(released: Vec<Released<u32>>) -> Vec<(u32, Outcome)> {
        released.into_iter().map(|r| (r.token, r.outcome)).collect()
    }

    #[test]
    fn off_never_waits() {
        let t = Instant::now();
        let mut waits = AckWaits::new(SyncMode::Off, TIMEOUT);
        let released = waits.committed("a.db", TxId(1), 7, t).unwrap();
        assert_eq!(released.outcome, Outcome::NotRequired);
        assert_eq!(waits.next_deadline(), None);
    }

    #[test]
    fn one_waits_for_an_acknowledgement_that_covers_the_txid() {
        let t = Instant::now();
        let mut waits = AckWaits::new(SyncMode::One, TIMEOUT);
        waits.stream_opened(2);
        assert!(waits.committed("a.db", TxId(1), 1, t).is_none());
        assert!(waits.committed("a.db", TxId(2), 2, ms(t, 1)).is_none());
        assert!(waits.committed("b.db", TxId(1), 3, ms(t, 1)).is_none());
        assert_eq!(waits.status(t).waiting, 3);
        // An acknowledgement of another database, or of an older TXID, releases nothing more.
        assert_eq!(
            tokens(waits.acked(2, "a.db", TxId(1), ms(t, 2))),
            [(1, Outcome::Acknowledged)]
        );
        assert!(waits.acked(2, "a.db", TxId(1), ms(t, 2)).is_empty());
        // TXID 3 covers TXID 2 (group commit).
        let released = waits.acked(2, "a.db", TxId(3), ms(t, 5));
        assert_eq!(released.len(), 1);
        assert_eq!(
            (released[0].token, released[0].waited),
            (2, Duration::from_millis(4))
        );
        assert_eq!(
            tokens(waits.acked(2, "b.db", TxId(1), ms(t, 5))),
            [(3, Outcome::Acknowledged)]
        );
        // Already acknowledged when committed: no wait.
        let now = waits.committed("a.db", TxId(3), 4, ms(t, 6)).unwrap();
        assert_eq!(now.outcome, Outcome::Acknowledged);
        assert_eq!(waits.next_deadline(), None);
    }

    #[test]
    fn acknowledgements_count_only_from_acknowledging_streams() {
        let t = Instant::now();
        let mut waits = AckWaits::new(SyncMode::One, TIMEOUT);
        assert!(waits.committed("a.db", TxId(1), 1, t).is_none());
        // Node 9 never opened an acknowledging stream (a LiteFS peer, a non-candidate).
        assert!(waits.acked(9, "a.db", TxId(1), t).is_empty());
        waits.stream_opened(2);
        waits.stream_closed(2, t);
        assert!(waits.acked(2, "a.db", TxId(1), t).is_empty());
        assert_eq!(waits.status(t).waiting, 1);
    }

    #[test]
    fn quorum_counts_a_majority_of_the_most_candidates_seen_at_once() {
        let t = Instant::now();
        let mut waits = AckWaits::new(SyncMode::Quorum, TIMEOUT);
        for node in [2, 3, 4, 5] {
            waits.stream_opened(node);
        }
        // Five candidates: the primary and two replicas make a majority.
        assert!(waits.committed("a.db", TxId(1), 1, t).is_none());
        assert!(waits.acked(2, "a.db", TxId(1), t).is_empty());
        assert_eq!(
            tokens(waits.acked(5, "a.db", TxId(1), t)),
            [(1, Outcome::Acknowledged)]
        );
        // A replica that went away still counts as a candidate: two acknowledgements are
        // still needed.
        waits.stream_closed(5, t);
        assert!(waits.committed("a.db", TxId(2), 2, t).is_none());
        assert!(waits.acked(2, "a.db", TxId(2), t).is_empty());
        assert_eq!(
            tokens(waits.acked(3, "a.db", TxId(2), t)),
            [(2, Outcome::Acknowledged)]
        );
        // It comes back under a new node ID (they change at every start): still five
        // candidates, not six.
        waits.stream_opened(6);
        assert!(waits.committed("a.db", TxId(3), 3, t).is_none());
        assert!(waits.acked(6, "a.db", TxId(3), t).is_empty());
        assert_eq!(
            tokens(waits.acked(4, "a.db", TxId(3), t)),
            [(3, Outcome::Acknowledged)]
        );
        // Three candidates (primary + 2): one replica is enough.
        let mut waits = AckWaits::new(SyncMode::Quorum, TIMEOUT);
        waits.stream_opened(2);
        waits.stream_opened(3);
        assert!(waits.committed("a.db", TxId(1), 1, t).is_none());
        assert_eq!(
            tokens(waits.acked(3, "a.db", TxId(1), t)),
            [(1, Outcome::Acknowledged)]
        );
    }

    #[test]
    fn all_waits_for_every_connected_replica_and_not_for_one_that_left() {
        let t = Instant::now();
        let mut waits = AckWaits::new(SyncMode::All, TIMEOUT);
        waits.stream_opened(2);
        waits.stream_opened(3);
        waits.stream_opened(3); // QUIC: a stream per database
        assert!(waits.committed("a.db", TxId(1), 1, t).is_none());
        assert!(waits.acked(2, "a.db", TxId(1), t).is_empty());
        waits.stream_closed(3, t);
        assert_eq!(waits.status(t).replicas, 2);
        assert_eq!(
            tokens(waits.stream_closed(3, t)),
            [(1, Outcome::Acknowledged)]
        );
        assert_eq!(waits.status(t).replicas, 1);
    }

    #[test]
    fn a_timeout_degrades_until_the_replicas_catch_up() {
        let t = Instant::now();
        let mut waits = AckWaits::new(SyncMode::One, TIMEOUT);
        assert!(waits.committed("a.db", TxId(1), 1, t).is_none());
        assert!(waits.committed("a.db", TxId(2), 2, ms(t, 500)).is_none());
        assert_eq!(waits.next_deadline(), Some(ms(t, 2000)));
        assert!(waits.expire(ms(t, 1999)).is_empty());
        let released = waits.expire(ms(t, 2000));
        assert_eq!(
            tokens(released),
            [(1, Outcome::TimedOut), (2, Outcome::TimedOut)]
        );
        assert!(waits.status(ms(t, 2000)).degraded);
        // Degraded: commits return at once.
        let now = waits.committed("a.db", TxId(3), 3, ms(t, 2100)).unwrap();
        assert_eq!(now.outcome, Outcome::NotRequired);
        // A replica that acknowledges less than the head does not end it.
        waits.stream_opened(2);
        assert!(waits.acked(2, "a.db", TxId(2), ms(t, 3000)).is_empty());
        assert!(waits.status(ms(t, 3000)).degraded);
        waits.acked(2, "a.db", TxId(3), ms(t, 3500));
        let status = waits.status(ms(t, 4000));
        assert!(!status.degraded);
        assert_eq!(status.degraded_total, Duration::from_millis(1500));
        // Synchronous again.
        assert!(waits.committed("a.db", TxId(4), 4, ms(t, 4000)).is_none());
        assert_eq!(
            tokens(waits.acked(2, "a.db", TxId(4), ms(t, 4001))),
            [(4, Outcome::Acknowledged)]
        );
    }
}
