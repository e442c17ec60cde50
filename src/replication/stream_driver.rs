//! One replica's stream on the primary: a task that drives the protocol's [`PrimaryStream`]
//! against the log. It reads the log on tokio's blocking pool, one chunk at a time, and holds at
//! most [`STREAM_BUFFER_BYTES`] of encoded frames waiting for the replica, so a replica that stops
//! reading costs the primary a few hundred kilobytes and no thread.

use std::fs::File;
use std::io::{Read, Take};
use std::sync::Arc;

use bytes::Bytes;
use ltxd_protocol::primary::{PrimaryStream, Send};
use ltxd_protocol::wire::{encode_frame, Frame, MAX_CHUNK_LEN};
use ltxd_protocol::Pos;
use tokio::sync::Semaphore;

use super::byte_channel::ByteSender;
use super::handoff::{HandoffOrder, StreamRegistration};
use super::log_view::LogReader;
use super::{NodeState, HEARTBEAT_INTERVAL};
use crate::log::{Log, LogError, Record};

/// How many bytes of encoded frames may wait for one replica.
pub(super) const STREAM_BUFFER_BYTES: usize = 64 << 10;
/// How many reads of the log all streams together run at once on the blocking pool: each holds
/// a thread and a chunk, so 150 replicas asking for a snapshot at once take 8 threads, not 150.
pub(super) const CONCURRENT_READS: usize = 8;

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum StreamEnd {
    #[error("the replica went away")]
    Gone,
    #[error("this node is no longer the primary")]
    Demoted,
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Drives one replica's stream until it ends.
pub(super) struct StreamDriver {
    pub(super) log: Arc<Log>,
    pub(super) machine: PrimaryStream,
    pub(super) sender: ByteSender,
    pub(super) registration: StreamRegistration,
    /// The handoff this stream was ordered to send, once it has caught the replica up.
    pub(super) order: Option<Arc<HandoffOrder>>,
    pub(super) node: Arc<NodeState>,
    /// Shared by every stream: permits to read the log ([`CONCURRENT_READS`]).
    pub(super) reads: Arc<Semaphore>,
}

enum Wake {
    Changed,
    Tick,
    Closed,
    HandOff(Arc<HandoffOrder>),
}

/// An LTX file's bytes in the log.
type LtxData = Take<File>;

/// Runs `read` on tokio's blocking pool once one of `reads`' permits is free.
async fn blocking<T: std::marker::Send + 'static>(
    reads: &Semaphore,
    read: impl FnOnce() -> Result<T, StreamEnd> + std::marker::Send + 'static,
) -> Result<T, StreamEnd> {
    let _permit = reads
        .acquire()
        .await
        .map_err(|err| StreamEnd::Io(std::io::Error::other(err)))?;
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|err| StreamEnd::Io(std::io::Error::other(err)))?
}

impl StreamDriver {
    /// Streams until the machine finishes, the replica goes away, or this node is demoted.
    pub(super) async fn run(mut self) -> Result<(), StreamEnd> {
        let mut changes = self.log.changes();
        loop {
            while let Some(send) = self.machine.poll(&LogReader(&self.log)) {
                self.send(send).await?;
            }
            if self.machine.is_finished() {
                break;
            }
            let woke = tokio::select! {
                changed = changes.changed() => if changed.is_ok() { Wake::Changed } else { Wake::Closed },
                () = tokio::time::sleep(HEARTBEAT_INTERVAL) => Wake::Tick,
                () = self.sender.closed() => Wake::Closed,
                Some(order) = self.registration.orders.recv() => Wake::HandOff(order),
            };
            // A demoted primary stops streaming (within a heartbeat), so that its replicas look
            // for the new primary instead of waiting on a log that no longer grows.
            if self.order.is_none() && !self.node.is_primary() {
                return Err(StreamEnd::Demoted);
            }
            match woke {
                Wake::Changed => self.machine.changed(&LogReader(&self.log)),
                Wake::Tick => self.machine.tick(),
                Wake::Closed => return Err(StreamEnd::Gone),
                Wake::HandOff(order) => {
                    // Writes have stopped: send everything up to the head, then the lease.
                    self.machine.changed(&LogReader(&self.log));
                    self.machine.hand_off(order.lease_id.clone());
                    self.order = Some(order);
                }
            }
        }
        self.frame(&Frame::End).await
    }

    async fn send(&mut self, send: Send) -> Result<(), StreamEnd> {
        match send {
            Send::Record { db, after } => {
                let log = Arc::clone(&self.log);
                let name = db.clone();
                let record = blocking(&self.reads, move || {
                    let next = log.existing(&name)?.record_after(after)?;
                    Ok(next.map(|next| (next.record, next.data)))
                })
                .await?;
                match record {
                    Some((record, data))
                        if record.min_txid == record.max_txid
                            || self.machine.features().range_files =>
                    {
                        self.ltx(&db, &record, data).await?;
                    }
                    // Compacted between the plan and the read: the plan is made again.
                    _ => self.machine.sent(&db, after),
                }
            }
            Send::Snapshot { db } => {
                let log = Arc::clone(&self.log);
                let name = db.clone();
                let snapshot = blocking(&self.reads, move || {
                    let log = log.existing(&name)?;
                    let Some(snapshot) = log.snapshot_at_head()? else {
                        return Ok(None);
                    };
                    let data = log.source(&snapshot).open_raw()?;
                    Ok(Some((snapshot, data)))
                })
                .await?;
                if let Some((snapshot, data)) = snapshot {
                    self.ltx(&db, &snapshot, data).await?;
                }
            }
            Send::DropDb { db } => self.frame(&Frame::DropDb { db }).await?,
            Send::Ready => self.frame(&Frame::Ready).await?,
            Send::Heartbeat => {
                self.frame(&Frame::Heartbeat {
                    timestamp_ms: crate::mount::now_ms(),
                })
                .await?;
            }
            Send::Handoff { lease_id } => {
                if self.order.take().is_some_and(|order| order.start_sending()) {
                    tracing::info!("handing the lease to the replica");
                    self.frame(&Frame::Handoff {
                        lease_id: lease_id.into_bytes(),
                    })
                    .await?;
                } else {
                    tracing::warn!("the handoff was cancelled before the replica caught up");
                }
            }
        }
        Ok(())
    }

    /// Sends one LTX file: its frame, its bytes in chunks, and the end of the chunks. Each
    /// chunk is read on the blocking pool and sent before the next is read.
    async fn ltx(&mut self, db: &str, record: &Record, data: LtxData) -> Result<(), StreamEnd> {
        let size = if self.machine.features().frame_lengths {
            record.len
        } else {
            0
        };
        let mut out = Vec::new();
        encode_frame(
            &Frame::Ltx {
                db: db.to_string(),
                size,
            },
            &mut out,
        );
        let mut data = data;
        loop {
            let (returned, piece, ended) = blocking(&self.reads, move || {
                let ended = append_chunk(&mut data, &mut out)?;
                Ok((data, out, ended))
            })
            .await?;
            data = returned;
            self.bytes(piece).await?;
            if ended {
                break;
            }
            out = Vec::new();
        }
        self.machine
            .sent(db, Pos::new(record.max_txid, record.post_apply_checksum));
        Ok(())
    }

    async fn frame(&mut self, frame: &Frame) -> Result<(), StreamEnd> {
        let mut out = Vec::new();
        encode_frame(frame, &mut out);
        self.bytes(out).await
    }

    async fn bytes(&mut self, bytes: Vec<u8>) -> Result<(), StreamEnd> {
        self.sender
            .send(Bytes::from(bytes))
            .await
            .map_err(|_| StreamEnd::Gone)
    }
}

/// Reads the next chunk of `data` into `out` as the wire has it (a 2-byte length, then the
/// bytes). At the end of `data` it writes the zero length that ends the chunks, and returns true.
fn append_chunk(data: &mut impl Read, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let start = out.len();
    out.resize(start + 2 + MAX_CHUNK_LEN, 0);
    let n = read_full(data, &mut out[start + 2..])?;
    out.truncate(start + 2 + n);
    if n == 0 {
        out.truncate(start);
        out.extend_from_slice(&0u16.to_be_bytes());
        return Ok(true);
    }
    out[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
    // A short read is the end of the file.
    if n < MAX_CHUNK_LEN {
        out.extend_from_slice(&0u16.to_be_bytes());
        return Ok(true);
    }
    Ok(false)
}

/// Reads until `buf` is full or the reader ends.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks `append_chunk` writes for `len` bytes, as their lengths.
    fn chunk_lengths(len: usize) -> Vec<usize> {
        let data = vec![7u8; len];
        let mut reader = &data[..];
        let mut wire = Vec::new();
        while !append_chunk(&mut reader, &mut wire).unwrap() {}
        let mut lengths = Vec::new();
        let mut rest = &wire[..];
        loop {
            let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            lengths.push(n);
            rest = &rest[2 + n..];
            if n == 0 {
                break;
            }
        }
        assert!(rest.is_empty());
        lengths
    }

    #[test]
    fn chunks_are_full_until_the_last_and_end_with_a_zero_length() {
        assert_eq!(chunk_lengths(0), [0]);
        assert_eq!(chunk_lengths(10), [10, 0]);
        assert_eq!(chunk_lengths(MAX_CHUNK_LEN), [MAX_CHUNK_LEN, 0]);
        assert_eq!(
            chunk_lengths(2 * MAX_CHUNK_LEN + 3),
            [MAX_CHUNK_LEN, MAX_CHUNK_LEN, 3, 0]
        );
    }
}
