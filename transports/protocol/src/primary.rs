//! The primary's side of a replication stream, as a state machine with no I/O.
//!
//! A [`PrimaryStream`] decides what to send a replica next: for each database, nothing (the
//! replica is caught up), the record that follows the replica's position, or a snapshot (the
//! replica is new, its position was compacted away, or it diverged). It follows LiteFS's server
//! loop: one pass over the dirty databases, `Ready` after the first pass, a heartbeat on every
//! tick, and a handoff when asked. The driver reads the log, writes frames, and reports back
//! with [`PrimaryStream::sent`].

use std::collections::BTreeSet;

use crate::{Features, Pos, StreamRequest, TxId};

/// What the primary's log says about a database, as the state machine needs it.
pub trait LogView {
    /// Every database the primary has.
    fn databases(&self) -> Vec<String>;
    /// The database's head, or `None` if the primary does not have it.
    fn head(&self, db: &str) -> Option<Pos>;
    /// The TXID range of the record that applies right on top of `after` (its first TXID follows
    /// `after.txid` and its pre-apply checksum is `after`'s checksum), if the log still has one.
    fn next_record(&self, db: &str, after: Pos) -> Option<(TxId, TxId)>;
}

/// What to send next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Send {
    /// The log record that applies on top of `after`.
    Record {
        /// The database.
        db: String,
        /// The replica's position, which the record follows.
        after: Pos,
    },
    /// A snapshot of the database at its head.
    Snapshot {
        /// The database.
        db: String,
    },
    /// The replica named a database the primary does not have (LiteFS's deprecated DropDB).
    DropDb {
        /// The database.
        db: String,
    },
    /// The first pass is done: the replica has every database.
    Ready,
    /// A heartbeat with the primary's clock.
    Heartbeat,
    /// The lease is handed to the replica; the stream ends after this.
    Handoff {
        /// The lease ID to take over.
        lease_id: String,
    },
}

/// The state of one replica's stream on the primary.
#[derive(Debug)]
pub struct PrimaryStream {
    request: StreamRequest,
    features: Features,
    dirty: BTreeSet<String>,
    ready_sent: bool,
    heartbeat_due: bool,
    handoff: Option<String>,
    finished: bool,
}

impl PrimaryStream {
    /// A stream for `request`; `features` are the extensions the primary supports.
    pub fn new(request: StreamRequest, features: Features, view: &dyn LogView) -> PrimaryStream {
        let features = features.intersect(request.features);
        let mut dirty: BTreeSet<String> = request.positions.keys().cloned().collect();
        dirty.extend(view.databases());
        PrimaryStream {
            request,
            features,
            dirty,
            ready_sent: false,
            heartbeat_due: false,
            handoff: None,
            finished: false,
        }
    }

    /// The extensions in use on this stream.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The replica's position in `db`, as the primary believes it.
    pub fn position(&self, db: &str) -> Pos {
        self.request.positions.get(db).copied().unwrap_or(Pos::ZERO)
    }

    /// The log changed: every database is looked at again.
    pub fn changed(&mut self, view: &dyn LogView) {
        self.dirty.extend(view.databases());
    }

    /// The heartbeat interval passed.
    pub fn tick(&mut self) {
        self.heartbeat_due = true;
    }

    /// Hands the lease to this replica once the current pass is done.
    pub fn hand_off(&mut self, lease_id: String) {
        self.handoff = Some(lease_id);
    }

    /// True once the stream must end (after a handoff).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The driver sent a record or snapshot; the replica now stands at `pos` in `db`.
    pub fn sent(&mut self, db: &str, pos: Pos) {
        self.request.positions.insert(db.to_string(), pos);
        self.dirty.insert(db.to_string());
    }

    /// What to send next, or `None` when there is nothing until the log changes or a tick.
    pub fn poll(&mut self, view: &dyn LogView) -> Option<Send> {
        if self.finished {
            return None;
        }
        while let Some(db) = self.dirty.pop_first() {
            if !self.request.wants(&db) {
                continue;
            }
            if let Some(send) = self.plan(&db, view) {
                return Some(send);
            }
        }
        if !self.ready_sent {
            self.ready_sent = true;
            self.heartbeat_due = true;
            return Some(Send::Ready);
        }
        if std::mem::take(&mut self.heartbeat_due) {
            return Some(Send::Heartbeat);
        }
        if let Some(lease_id) = self.handoff.take() {
            self.finished = true;
            return Some(Send::Handoff { lease_id });
        }
        None
    }

    /// What database `db` needs, if anything.
    fn plan(&mut self, db: &str, view: &dyn LogView) -> Option<Send> {
        let Some(head) = view.head(db) else {
            return self
                .request
                .positions
                .remove(db)
                .map(|_| Send::DropDb { db: db.to_string() });
        };
        let mut replica = self.position(db);
        let ahead = replica.txid > head.txid;
        let forked = replica.txid == head.txid && replica != head;
        if ahead || forked {
            replica = Pos::ZERO;
        }
        if replica.txid >= head.txid {
            return None;
        }
        if replica.txid == TxId::ZERO {
            return Some(Send::Snapshot { db: db.to_string() });
        }
        match view.next_record(db, replica) {
            Some((min, max)) if min == max || self.features.range_files => Some(Send::Record {
                db: db.to_string(),
                after: replica,
            }),
            _ => Some(Send::Snapshot { db: db.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Checksum;
    use std::collections::BTreeMap;

    /// A log of single-transaction records with checksum `txid * 10`, optionally with a
    /// compacted range.
    #[derive(Default)]
    struct FakeLog {
        dbs: BTreeMap<String, (u64, Vec<(u64, u64)>)>,
    }

    fn pos(txid: u64) -> Pos {
        Pos::new(TxId(txid), Checksum(Checksum::FLAG | (txid * 10)))
    }

    impl FakeLog {
        fn with(mut self, db: &str, head: u64, records: &[(u64, u64)]) -> FakeLog {
            self.dbs.insert(db.into(), (head, records.to_vec()));
            self
        }
    }

    impl LogView for FakeLog {
        fn databases(&self) -> Vec<String> {
            self.dbs.keys().cloned().collect()
        }
        fn head(&self, db: &str) -> Option<Pos> {
            self.dbs.get(db).map(|(head, _)| pos(*head))
        }
        fn next_record(&self, db: &str, after: Pos) -> Option<(TxId, TxId)> {
            let (_, records) = self.dbs.get(db)?;
            records
                .iter()
                .find(|(min, _)| *min == after.txid.0 + 1 && pos(after.txid.0) == after)
                .map(|&(min, max)| (TxId(min), TxId(max)))
        }
    }

    fn request(positions: &[(&str, Pos)], features: Features) -> StreamRequest {
        StreamRequest {
            node_id: 2,
            filter: None,
            positions: positions.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            features,
        }
    }

    /// Runs the stream until it goes idle, applying what it sends to the replica's positions.
    fn drain(stream: &mut PrimaryStream, log: &FakeLog) -> Vec<Send> {
        let mut sent = Vec::new();
        while let Some(send) = stream.poll(log) {
            match &send {
                Send::Record { db, after } => {
                    let (_, max) = log.next_record(db, *after).unwrap();
                    stream.sent(db, pos(max.0));
                }
                Send::Snapshot { db } => stream.sent(db, log.head(db).unwrap()),
                _ => {}
            }
            sent.push(send);
        }
        sent
    }

    #[test]
    fn a_new_replica_gets_a_snapshot_then_ready_and_a_heartbeat() {
        let log = FakeLog::default().with("a.db", 3, &[(1, 1), (2, 2), (3, 3)]);
        let mut stream = PrimaryStream::new(request(&[], Features::ALL), Features::ALL, &log);
        assert_eq!(
            drain(&mut stream, &log),
            vec![
                Send::Snapshot { db: "a.db".into() },
                Send::Ready,
                Send::Heartbeat
            ]
        );
    }

    #[test]
    fn a_replica_behind_gets_each_record_in_order() {
        let log = FakeLog::default().with("a.db", 3, &[(1, 1), (2, 2), (3, 3)]);
        let mut stream = PrimaryStream::new(
            request(&[("a.db", pos(1))], Features::NONE),
            Features::ALL,
            &log,
        );
        let sent = drain(&mut stream, &log);
        assert_eq!(
            sent[..2],
            [
                Send::Record {
                    db: "a.db".into(),
                    after: pos(1)
                },
                Send::Record {
                    db: "a.db".into(),
                    after: pos(2)
                }
            ]
        );
        assert_eq!(stream.position("a.db"), pos(3));
    }

    #[test]
    fn a_compacted_range_goes_only_to_replicas_that_negotiated_it() {
        let log = FakeLog::default().with("a.db", 5, &[(1, 1), (2, 5)]);
        let litefs = request(&[("a.db", pos(1))], Features::NONE);
        let mut stream = PrimaryStream::new(litefs, Features::ALL, &log);
        assert_eq!(
            stream.poll(&log),
            Some(Send::Snapshot { db: "a.db".into() })
        );
        let ltxd = request(&[("a.db", pos(1))], Features::ALL);
        let mut stream = PrimaryStream::new(ltxd, Features::ALL, &log);
        assert_eq!(
            stream.poll(&log),
            Some(Send::Record {
                db: "a.db".into(),
                after: pos(1)
            })
        );
    }

    #[test]
    fn diverged_ahead_or_compacted_replicas_get_snapshots() {
        let log = FakeLog::default().with("a.db", 3, &[(3, 3)]);
        let forked = Pos::new(TxId(2), Checksum(Checksum::FLAG | 999));
        for replica in [pos(9), Pos::new(TxId(3), Checksum(1)), forked, pos(1)] {
            let mut stream = PrimaryStream::new(
                request(&[("a.db", replica)], Features::ALL),
                Features::ALL,
                &log,
            );
            assert_eq!(
                stream.poll(&log),
                Some(Send::Snapshot { db: "a.db".into() }),
                "replica at {replica}"
            );
        }
    }

    #[test]
    fn caught_up_replicas_get_only_heartbeats_and_unknown_databases_are_dropped() {
        let log = FakeLog::default().with("a.db", 3, &[]);
        let mut stream = PrimaryStream::new(
            request(&[("a.db", pos(3)), ("gone.db", pos(4))], Features::ALL),
            Features::ALL,
            &log,
        );
        assert_eq!(
            drain(&mut stream, &log),
            vec![
                Send::DropDb {
                    db: "gone.db".into()
                },
                Send::Ready,
                Send::Heartbeat
            ]
        );
        assert_eq!(stream.poll(&log), None);
        stream.tick();
        assert_eq!(stream.poll(&log), Some(Send::Heartbeat));
    }

    #[test]
    fn new_databases_appear_and_the_filter_is_respected() {
        let mut log = FakeLog::default().with("a.db", 1, &[(1, 1)]);
        let mut req = request(&[], Features::ALL);
        req.filter = Some(["b.db".to_string()].into());
        let mut stream = PrimaryStream::new(req, Features::ALL, &log);
        assert_eq!(drain(&mut stream, &log), vec![Send::Ready, Send::Heartbeat]);
        log = log.with("b.db", 1, &[(1, 1)]);
        stream.changed(&log);
        assert_eq!(
            drain(&mut stream, &log),
            vec![Send::Snapshot { db: "b.db".into() }]
        );
    }

    #[test]
    fn a_handoff_ends_the_stream_after_the_pass() {
        let log = FakeLog::default().with("a.db", 1, &[(1, 1)]);
        let mut stream = PrimaryStream::new(request(&[], Features::ALL), Features::ALL, &log);
        stream.hand_off("lease-7".into());
        let sent = drain(&mut stream, &log);
        assert_eq!(
            sent.last(),
            Some(&Send::Handoff {
                lease_id: "lease-7".into()
            })
        );
        assert!(stream.is_finished());
        stream.tick();
        assert_eq!(stream.poll(&log), None);
    }
}
