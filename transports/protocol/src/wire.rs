//! LiteFS's `/stream` wire format, which ltxd speaks over HTTP (and frames over QUIC):
//! the replica's position map, and the primary's frames, with LTX files sent as a chunked stream.
//!
//! Decoding is push-based and never panics: bytes arrive in any pieces, and malformed input is a
//! [`WireError`].

use std::collections::BTreeMap;

use crate::{Checksum, Pos, TxId};

/// The longest database name accepted on the wire.
pub const MAX_NAME_LEN: usize = 1024;
/// The longest handoff lease ID accepted on the wire.
pub const MAX_LEASE_ID_LEN: usize = 4096;
/// The largest chunk of a chunked LTX stream.
pub const MAX_CHUNK_LEN: usize = 65535;
/// The most databases a position map may list.
pub const MAX_POSITIONS: usize = 100_000;

/// Malformed bytes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended inside a structure that has a known length.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A frame type this protocol does not define.
    #[error("unknown frame type {0}")]
    UnknownFrame(u32),
    /// A name or ID longer than the protocol allows.
    #[error("{what} of {len} bytes exceeds the limit of {limit}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A database name that is not UTF-8.
    #[error("database name is not UTF-8")]
    BadName,
    /// Bytes after a complete position map.
    #[error("{0} bytes after the position map")]
    TrailingBytes(usize),
}

/// A frame from the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An LTX file for `db` follows as [`Event::LtxData`] chunks and an [`Event::LtxEnd`].
    Ltx {
        /// The database.
        db: String,
        /// The file's length, or 0 when unknown (LiteFS always sends 0).
        size: u64,
    },
    /// The first full pass over the databases is done.
    Ready,
    /// The primary is closing the stream.
    End,
    /// The primary has no such database (deprecated in LiteFS; ignored by replicas).
    DropDb {
        /// The database.
        db: String,
    },
    /// The primary hands its lease to this replica.
    Handoff {
        /// The lease ID.
        lease_id: Vec<u8>,
    },
    /// The backup high-water mark of a database.
    Hwm {
        /// The database.
        db: String,
        /// The TXID backed up.
        txid: TxId,
    },
    /// The primary is alive; its clock, in ms since the Unix epoch.
    Heartbeat {
        /// The primary's time.
        timestamp_ms: i64,
    },
}

const LTX: u32 = 1;
const READY: u32 = 2;
const END: u32 = 3;
const DROP_DB: u32 = 4;
const HANDOFF: u32 = 5;
const HWM: u32 = 6;
const HEARTBEAT: u32 = 7;

/// Encodes a position map, entries sorted by name, as a replica sends it.
pub fn encode_positions(positions: &BTreeMap<String, Pos>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(positions.len() as u32).to_be_bytes());
    for (name, pos) in positions {
        put_name(&mut out, name);
        out.extend_from_slice(&pos.txid.0.to_be_bytes());
        out.extend_from_slice(&pos.post_apply_checksum.0.to_be_bytes());
    }
    out
}

/// Decodes a complete position map.
pub fn decode_positions(bytes: &[u8]) -> Result<BTreeMap<String, Pos>, WireError> {
    let mut r = Reader { bytes, at: 0 };
    let count = r.u32("position count")? as usize;
    if count > MAX_POSITIONS {
        return Err(WireError::TooLong {
            what: "position map",
            len: count,
            limit: MAX_POSITIONS,
        });
    }
    let mut positions = BTreeMap::new();
    for _ in 0..count {
        let name = r.name()?;
        let txid = TxId(r.u64("position")?);
        let checksum = Checksum(r.u64("position")?);
        positions.insert(name, Pos::new(txid, checksum));
    }
    match bytes.len() - r.at {
        0 => Ok(positions),
        extra => Err(WireError::TrailingBytes(extra)),
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// Encodes a frame header. For [`Frame::Ltx`], follow it with [`encode_chunks`] of the file.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Ltx { db, size } => {
            out.extend_from_slice(&LTX.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            put_name(out, db);
        }
        Frame::Ready => out.extend_from_slice(&READY.to_be_bytes()),
        Frame::End => out.extend_from_slice(&END.to_be_bytes()),
        Frame::DropDb { db } => {
            out.extend_from_slice(&DROP_DB.to_be_bytes());
            put_name(out, db);
        }
        Frame::Handoff { lease_id } => {
            out.extend_from_slice(&HANDOFF.to_be_bytes());
            out.extend_from_slice(&(lease_id.len() as u32).to_be_bytes());
            out.extend_from_slice(lease_id);
        }
        Frame::Hwm { db, txid } => {
            out.extend_from_slice(&HWM.to_be_bytes());
            out.extend_from_slice(&txid.0.to_be_bytes());
            put_name(out, db);
        }
        Frame::Heartbeat { timestamp_ms } => {
            out.extend_from_slice(&HEARTBEAT.to_be_bytes());
            out.extend_from_slice(&timestamp_ms.to_be_bytes());
        }
    }
}

/// Encodes bytes as a chunked stream: `[u16 len][len bytes]`... then a zero length.
pub fn encode_chunks(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(MAX_CHUNK_LEN) {
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&0u16.to_be_bytes());
}

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A frame. After [`Frame::Ltx`] come its data chunks and then [`Event::LtxEnd`].
    Frame(Frame),
    /// The next bytes of the current LTX file.
    LtxData(Vec<u8>),
    /// The current LTX file is complete.
    LtxEnd,
}

/// A push decoder for the primary's frame stream.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    in_ltx: bool,
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True when no partial frame or chunk is buffered.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && !self.in_ltx
    }

    /// The next complete event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, WireError> {
        let mut r = Reader {
            bytes: &self.buf,
            at: 0,
        };
        let event = if self.in_ltx {
            match r.u16("chunk length") {
                Err(_) => return Ok(None),
                Ok(0) => Event::LtxEnd,
                Ok(len) => match r.take(len as usize, "chunk") {
                    Err(_) => return Ok(None),
                    Ok(data) => Event::LtxData(data.to_vec()),
                },
            }
        } else {
            match Self::frame(&mut r) {
                Err(WireError::Truncated(_)) => return Ok(None),
                Err(e) => return Err(e),
                Ok(frame) => Event::Frame(frame),
            }
        };
        self.in_ltx = matches!(&event, Event::Frame(Frame::Ltx { .. }) | Event::LtxData(_));
        let used = r.at;
        self.buf.drain(..used);
        Ok(Some(event))
    }

    fn frame(r: &mut Reader<'_>) -> Result<Frame, WireError> {
        Ok(match r.u32("frame type")? {
            LTX => {
                let size = r.u64("frame size")?;
                Frame::Ltx {
                    db: r.name()?,
                    size,
                }
            }
            READY => Frame::Ready,
            END => Frame::End,
            DROP_DB => Frame::DropDb { db: r.name()? },
            HANDOFF => {
                let len = r.u32("lease ID length")? as usize;
                if len > MAX_LEASE_ID_LEN {
                    return Err(WireError::TooLong {
                        what: "lease ID",
                        len,
                        limit: MAX_LEASE_ID_LEN,
                    });
                }
                Frame::Handoff {
                    lease_id: r.take(len, "lease ID")?.to_vec(),
                }
            }
            HWM => {
                let txid = TxId(r.u64("high-water mark")?);
                Frame::Hwm {
                    db: r.name()?,
                    txid,
                }
            }
            HEARTBEAT => Frame::Heartbeat {
                timestamp_ms: r.u64("heartbeat")? as i64,
            },
            other => return Err(WireError::UnknownFrame(other)),
        })
    }
}

/// Reads big-endian fields from a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(WireError::Truncated(what))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut x = [0u8; 8];
        x.copy_from_slice(b);
        Ok(u64::from_be_bytes(x))
    }

    fn name(&mut self) -> Result<String, WireError> {
        let len = self.u32("name length")? as usize;
        if len > MAX_NAME_LEN {
            return Err(WireError::TooLong {
                what: "database name",
                len,
                limit: MAX_NAME_LEN,
            });
        }
        let bytes = self.take(len, "name")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::BadName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_maps_round_trip_and_reject_garbage() {
        let mut positions = BTreeMap::new();
        positions.insert(
            "b.db".to_string(),
            Pos::new(TxId(9), Checksum(0x8000_0000_0000_0009)),
        );
        positions.insert(
            "a.db".to_string(),
            Pos::new(TxId(1), Checksum(0x8000_0000_0000_0001)),
        );
        let bytes = encode_positions(&positions);
        assert_eq!(&bytes[..4], &[0, 0, 0, 2]);
        assert_eq!(&bytes[8..12], b"a.db", "entries are sorted by name");
        assert_eq!(decode_positions(&bytes).unwrap(), positions);
        for cut in 0..bytes.len() {
            assert!(decode_positions(&bytes[..cut]).is_err());
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(decode_positions(&extra), Err(WireError::TrailingBytes(1)));
        assert!(matches!(
            decode_positions(&[0xff; 4]),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn frames_decode_from_any_split_of_the_stream() {
        let ltx: Vec<u8> = (0..150_000u32).map(|i| (i * 7) as u8).collect();
        let mut stream = Vec::new();
        encode_frame(
            &Frame::Ltx {
                db: "app.db".into(),
                size: ltx.len() as u64,
            },
            &mut stream,
        );
        encode_chunks(&ltx, &mut stream);
        for frame in [
            Frame::Hwm {
                db: "app.db".into(),
                txid: TxId(5),
            },
            Frame::Ready,
            Frame::Heartbeat {
                timestamp_ms: 1_700_000_000_000,
            },
            Frame::DropDb {
                db: "old.db".into(),
            },
            Frame::Handoff {
                lease_id: b"lease".to_vec(),
            },
            Frame::End,
        ] {
            encode_frame(&frame, &mut stream);
        }
        for piece in [1, 3, 7, 4096, stream.len()] {
            let mut decoder = FrameDecoder::new();
            let mut events = Vec::new();
            for part in stream.chunks(piece) {
                decoder.push(part);
                while let Some(event) = decoder.next_event().unwrap() {
                    events.push(event);
                }
            }
            assert!(decoder.is_idle());
            assert_eq!(
                events[0],
                Event::Frame(Frame::Ltx {
                    db: "app.db".into(),
                    size: ltx.len() as u64,
                })
            );
            let data: Vec<u8> = events
                .iter()
                .filter_map(|e| match e {
                    Event::LtxData(d) => Some(d.as_slice()),
                    _ => None,
                })
                .flatten()
                .copied()
                .collect();
            assert_eq!(data, ltx);
            let tail: Vec<&Event> = events
                .iter()
                .skip_while(|e| !matches!(e, Event::LtxEnd))
                .collect();
            assert_eq!(tail.len(), 7, "LtxEnd then six frames");
            assert_eq!(*tail.last().unwrap(), &Event::Frame(Frame::End));
        }
    }

    #[test]
    fn unknown_frames_and_oversized_names_are_errors() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&99u32.to_be_bytes());
        assert_eq!(decoder.next_event(), Err(WireError::UnknownFrame(99)));
        let mut decoder = FrameDecoder::new();
        decoder.push(&4u32.to_be_bytes());
        decoder.push(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decoder.next_event(),
            Err(WireError::TooLong { .. })
        ));
    }
}
