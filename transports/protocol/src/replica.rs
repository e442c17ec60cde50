//! The replica's side of a replication stream, as a state machine with no I/O.
//!
//! A [`ReplicaStream`] turns decoded wire events into steps for the driver (apply this LTX file,
//! mark the node ready, note the primary's clock, take the lease) and checks that every LTX file
//! continues the replica's position. A file that does not is rejected, never applied: the driver
//! reconnects with its position, and the primary then sends a snapshot.

use std::collections::BTreeMap;

use crate::wire::{Event, Frame};
use crate::{Checksum, Pos, TxId};

/// What the replica must know about an LTX file to decide whether it may be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LtxSummary {
    /// The first transaction in the file.
    pub min_txid: TxId,
    /// The last transaction in the file.
    pub max_txid: TxId,
    /// The database checksum the file applies on top of (zero for a snapshot).
    pub pre_apply_checksum: Checksum,
    /// The database checksum after the file.
    pub post_apply_checksum: Checksum,
    /// When the primary committed the last transaction (ms since the epoch).
    pub timestamp_ms: i64,
}

impl LtxSummary {
    /// True for a snapshot: a file that starts at TXID 1 replaces the whole database.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == TxId(1)
    }
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Nothing,
    /// An LTX file for `db` begins; collect its data.
    BeginLtx {
        /// The database.
        db: String,
    },
    /// More of the current LTX file.
    LtxData(Vec<u8>),
    /// The current LTX file is complete: summarize it and call [`ReplicaStream::check`].
    LtxComplete {
        /// The database.
        db: String,
    },
    /// The replica has every database: it is ready.
    Ready,
    /// The primary's clock, for lag.
    Heartbeat {
        /// The primary's time (ms since the epoch).
        timestamp_ms: i64,
    },
    /// The primary hands its lease to this node; the stream ends.
    Handoff {
        /// The lease ID.
        lease_id: String,
    },
    /// The primary ended the stream.
    End,
}

/// Why the replica stops the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A frame came where the protocol does not allow it.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The LTX file does not continue the replica's position; it is not applied.
    #[error("database {db}: the file for TXIDs {min}..={max} does not follow position {pos}")]
    OutOfOrder {
        /// The database.
        db: String,
        /// The replica's position.
        pos: Pos,
        /// The file's first TXID.
        min: TxId,
        /// The file's last TXID.
        max: TxId,
    },
}

/// The state of the replica's stream.
#[derive(Debug, Default)]
pub struct ReplicaStream {
    positions: BTreeMap<String, Pos>,
    receiving: Option<String>,
    ready: bool,
    primary_clock_ms: Option<i64>,
}

impl ReplicaStream {
    /// A stream from the replica's current positions.
    pub fn new(positions: BTreeMap<String, Pos>) -> ReplicaStream {
        ReplicaStream {
            positions,
            ..ReplicaStream::default()
        }
    }

    /// The replica's positions.
    pub fn positions(&self) -> &BTreeMap<String, Pos> {
        &self.positions
    }

    /// True once the primary said Ready.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The primary's clock as last heard (a heartbeat or a transaction's timestamp).
    pub fn primary_clock_ms(&self) -> Option<i64> {
        self.primary_clock_ms
    }

    /// The next step for a decoded wire event.
    pub fn on_event(&mut self, event: Event) -> Result<Step, StreamError> {
        let in_ltx = self.receiving.is_some();
        match event {
            Event::LtxData(data) if in_ltx => Ok(Step::LtxData(data)),
            Event::LtxEnd if in_ltx => Ok(Step::LtxComplete {
                db: self.receiving.take().unwrap_or_default(),
            }),
            Event::LtxData(_) | Event::LtxEnd => Err(StreamError::Protocol(
                "LTX data outside an LTX frame".into(),
            )),
            Event::Frame(_) if in_ltx => {
                Err(StreamError::Protocol("a frame inside an LTX file".into()))
            }
            Event::Frame(frame) => Ok(self.on_frame(frame)),
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Step {
        match frame {
            Frame::Ltx { db, .. } => {
                self.receiving = Some(db.clone());
                Step::BeginLtx { db }
            }
            Frame::Ready => {
                self.ready = true;
                Step::Ready
            }
            Frame::End => Step::End,
            Frame::Heartbeat { timestamp_ms } => {
                self.primary_clock_ms = Some(timestamp_ms);
                Step::Heartbeat { timestamp_ms }
            }
            Frame::Handoff { lease_id } => Step::Handoff {
                lease_id: String::from_utf8_lossy(&lease_id).into_owned(),
            },
            Frame::DropDb { .. } | Frame::Hwm { .. } => Step::Nothing,
        }
    }

    /// Checks that a received file may be applied to `db`: a snapshot always may; any other file
    /// must start right after the replica's position, on top of its checksum.
    pub fn check(&self, db: &str, file: &LtxSummary) -> Result<(), StreamError> {
        let pos = self.positions.get(db).copied().unwrap_or(Pos::ZERO);
        let follows = pos.txid.next() == Some(file.min_txid)
            && pos.post_apply_checksum == file.pre_apply_checksum;
        if file.is_snapshot() || follows {
            Ok(())
        } else {
            Err(StreamError::OutOfOrder {
                db: db.to_string(),
                pos,
                min: file.min_txid,
                max: file.max_txid,
            })
        }
    }

    /// The driver applied a checked file: the replica now stands at its end.
    pub fn applied(&mut self, db: &str, file: &LtxSummary) {
        self.positions.insert(
            db.to_string(),
            Pos::new(file.max_txid, file.post_apply_checksum),
        );
        if self.ready {
            self.primary_clock_ms = Some(file.timestamp_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(min: u64, max: u64, pre: u64, post: u64) -> LtxSummary {
        LtxSummary {
            min_txid: TxId(min),
            max_txid: TxId(max),
            pre_apply_checksum: Checksum(pre),
            post_apply_checksum: Checksum(post),
            timestamp_ms: 5,
        }
    }

    #[test]
    fn an_ltx_frame_collects_data_until_its_end() {
        let mut stream = ReplicaStream::default();
        let begin = stream.on_event(Event::Frame(Frame::Ltx {
            db: "a".into(),
            size: 0,
        }));
        assert_eq!(begin, Ok(Step::BeginLtx { db: "a".into() }));
        assert_eq!(
            stream.on_event(Event::LtxData(vec![1])),
            Ok(Step::LtxData(vec![1]))
        );
        assert!(stream.on_event(Event::Frame(Frame::Ready)).is_err());
        assert_eq!(
            stream.on_event(Event::LtxEnd),
            Ok(Step::LtxComplete { db: "a".into() })
        );
        assert!(stream.on_event(Event::LtxEnd).is_err());
    }

    #[test]
    fn files_must_continue_the_position_unless_they_are_snapshots() {
        let mut stream =
            ReplicaStream::new([("a".to_string(), Pos::new(TxId(3), Checksum(30)))].into());
        assert!(stream.check("a", &summary(4, 4, 30, 40)).is_ok());
        assert!(stream.check("a", &summary(4, 6, 30, 60)).is_ok());
        assert!(stream.check("a", &summary(5, 5, 40, 50)).is_err());
        assert!(stream.check("a", &summary(4, 4, 31, 40)).is_err());
        assert!(stream.check("a", &summary(1, 9, 0, 90)).is_ok());
        assert!(stream.check("new", &summary(1, 1, 0, 10)).is_ok());
        assert!(stream.check("new", &summary(2, 2, 10, 20)).is_err());
        stream.applied("a", &summary(4, 4, 30, 40));
        assert_eq!(stream.positions()["a"], Pos::new(TxId(4), Checksum(40)));
    }

    #[test]
    fn ready_heartbeats_and_handoff_become_steps() {
        let mut stream = ReplicaStream::default();
        assert_eq!(stream.on_event(Event::Frame(Frame::Ready)), Ok(Step::Ready));
        assert!(stream.is_ready());
        assert_eq!(
            stream.on_event(Event::Frame(Frame::Heartbeat { timestamp_ms: 7 })),
            Ok(Step::Heartbeat { timestamp_ms: 7 })
        );
        assert_eq!(stream.primary_clock_ms(), Some(7));
        assert_eq!(
            stream.on_event(Event::Frame(Frame::Handoff {
                lease_id: b"x".to_vec()
            })),
            Ok(Step::Handoff {
                lease_id: "x".into()
            })
        );
        assert_eq!(stream.on_event(Event::Frame(Frame::End)), Ok(Step::End));
    }
}
