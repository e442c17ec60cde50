//! One database's log: its chain of records in segments, its snapshots, and its subscribers.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::index::{Index, Kind};
use super::recovery::recover;
use super::segment::{encode_record_header, ActiveSegment, Record};
use super::LogError;
use crate::layout::{DatabaseLayout, LogFileKind};
use crate::ltx::{detect_format, Decoder, Format, Header, Pos, TxId, Verified};

/// Segments roll over once they reach this size.
pub const SEGMENT_TARGET_LEN: u64 = 64 << 20;

/// The mutable part of a database log, behind one lock.
pub(super) struct State {
    /// The chain of records, in TXID order.
    pub records: Vec<Record>,
    /// Every segment's id and length; the last one is the active segment.
    pub segments: BTreeMap<TxId, u64>,
    /// The segment appends go to.
    pub active: Option<ActiveSegment>,
    /// Snapshot records, in TXID order.
    pub snapshots: Vec<Record>,
    /// An append failed and could not be cut back: no append until the log is reopened.
    pub broken: bool,
}

impl State {
    /// The position after the last record: the log's head.
    pub fn head(&self) -> Pos {
        self.records
            .last()
            .or(self.snapshots.last())
            .map_or(Pos::ZERO, |r| Pos::new(r.max_txid, r.post_apply_checksum))
    }
}

/// One database's log.
pub struct DatabaseLog {
    name: String,
    layout: DatabaseLayout,
    index: Arc<Index>,
    state: Mutex<State>,
    head: watch::Sender<Pos>,
    /// The log-wide change counter (see [`super::Log::changes`]).
    changes: Arc<watch::Sender<u64>>,
    subscribers: Mutex<HashMap<u64, Pos>>,
    next_subscriber: AtomicU64,
}

/// What a reader at some position gets.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// Records follow from this position.
    Records,
    /// The position was compacted or retained away: start again from a snapshot.
    SnapshotNeeded,
    /// The position is not in this log's history (a split brain): start again from a snapshot.
    Diverged,
}

/// A record read from the log, with its LTX bytes open for reading.
pub struct LogRecord {
    /// Where the record is and what it holds.
    pub record: Record,
    /// The LTX file. It stays readable even if a compaction replaces its segment.
    pub data: std::io::Take<File>,
}

impl DatabaseLog {
    /// Opens (creating if needed) the log of database `name` in the directory of `layout`.
    pub(super) fn open(
        name: &str,
        layout: DatabaseLayout,
        index: Arc<Index>,
        changes: Arc<watch::Sender<u64>>,
    ) -> Result<DatabaseLog, LogError> {
        crate::durable::create_dir_all(&layout.segments_dir())?;
        crate::durable::create_dir_all(&layout.snapshots_dir())?;
        let recovered = recover(&layout, index.load(name))?;
        // A process that crashed may have left names it never synced (a segment created just
        // before the crash): make durable what recovery accepted before anything builds on it.
        crate::durable::sync_dir(&layout.segments_dir())?;
        crate::durable::sync_dir(&layout.snapshots_dir())?;
        if recovered.index_stale {
            tracing::info!(
                db = name,
                records = recovered.records.len(),
                "rebuilt the index from the segments"
            );
            index.replace(name, &recovered.records, &recovered.snapshots)?;
        }
        let active = match recovered.segments.iter().next_back() {
            Some((&id, &len)) => Some(ActiveSegment::open(layout.segment(id), id, len)?),
            None => None,
        };
        let state = State {
            records: recovered.records,
            segments: recovered.segments,
            active,
            snapshots: recovered.snapshots,
            broken: false,
        };
        let (head, _) = watch::channel(state.head());
        Ok(DatabaseLog {
            name: name.to_string(),
            layout,
            index,
            state: Mutex::new(state),
            head,
            changes,
            subscribers: Mutex::new(HashMap::new()),
            next_subscriber: AtomicU64::new(0),
        })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's directory.
    pub fn dir(&self) -> &Path {
        self.layout.dir()
    }

    /// The layout of the database's directory.
    pub fn layout(&self) -> &DatabaseLayout {
        &self.layout
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Updates the index cache. A failure is logged, not returned: the next open finds what the
    /// index lacks by checking it against the segments.
    pub(super) fn update_index(&self, kind: Kind, added: &[Record], removed: &[Record]) {
        let result = self
            .index
            .remove(kind, &self.name, removed)
            .and_then(|_| self.index.insert(kind, &self.name, added));
        if let Err(err) = result {
            tracing::warn!(db = %self.name, %err, "index update failed; the next open rescans");
        }
    }

    /// Replaces the records of sealed segment `id` after a rewrite. The new records must cover
    /// the same TXIDs with the same checksums at both ends.
    pub(super) fn replace_segment_records(
        &self,
        id: TxId,
        new: Vec<Record>,
        len: u64,
    ) -> Result<(), LogError> {
        let mut state = self.state();
        let old: Vec<Record> = state
            .records
            .iter()
            .filter(|r| r.segment == id)
            .cloned()
            .collect();
        let same_ends = match (old.first(), old.last(), new.first(), new.last()) {
            (Some(a), Some(b), Some(c), Some(d)) => {
                a.min_txid == c.min_txid
                    && a.pre_apply_checksum == c.pre_apply_checksum
                    && b.max_txid == d.max_txid
                    && b.post_apply_checksum == d.post_apply_checksum
            }
            _ => false,
        };
        if !same_ends {
            return Err(LogError::Corrupt {
                path: self.layout.segment(id),
                reason: "a rewritten segment does not cover the records it replaced".into(),
            });
        }
        let start = state
            .records
            .iter()
            .position(|r| r.segment == id)
            .unwrap_or(0);
        state
            .records
            .splice(start..start + old.len(), new.iter().cloned());
        state.segments.insert(id, len);
        drop(state);
        self.update_index(Kind::Record, &new, &old);
        Ok(())
    }

    /// Adds a snapshot record written to the snapshots directory.
    pub(super) fn add_snapshot(&self, record: Record) -> Result<(), LogError> {
        let mut state = self.state();
        state.snapshots.push(record.clone());
        state.snapshots.sort_by_key(|r| r.max_txid);
        drop(state);
        self.update_index(Kind::Snapshot, std::slice::from_ref(&record), &[]);
        Ok(())
    }

    /// The position after the last record.
    pub fn head(&self) -> Pos {
        *self.head.borrow()
    }

    pub(super) fn publish_head(&self, pos: Pos) {
        self.head.send_replace(pos);
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A copy of the records of the chain.
    pub fn records(&self) -> Vec<Record> {
        self.state().records.clone()
    }

    /// A copy of the snapshot records.
    pub fn snapshots(&self) -> Vec<Record> {
        self.state().snapshots.clone()
    }

    /// The path of a record's file: its segment, or its snapshot file.
    pub fn record_path(&self, record: &Record) -> PathBuf {
        let kind = if self.state().snapshots.contains(record) {
            LogFileKind::Snapshot
        } else {
            LogFileKind::Segment
        };
        self.layout.log_file(kind, record.segment)
    }

    /// Where a record's LTX bytes can be read.
    pub fn source(&self, record: &Record) -> crate::database::LtxSource {
        crate::database::LtxSource::range(
            self.record_path(record),
            record.data_offset(),
            record.len,
            record.format,
        )
    }

    /// Replaces the whole log with one snapshot of `len` bytes read from `ltx`, as a replica does
    /// when the primary sends it one. A crash in between leaves an empty log, and the replica then
    /// asks for a snapshot again.
    pub fn reset_to_snapshot(
        &self,
        format: Format,
        len: u64,
        ltx: impl Read,
    ) -> Result<Record, LogError> {
        {
            let mut state = self.state();
            let (records, snapshots) = (
                std::mem::take(&mut state.records),
                std::mem::take(&mut state.snapshots),
            );
            state.active = None;
            let segments = std::mem::take(&mut state.segments);
            self.remove_log_files(segments.keys().copied(), &snapshots)?;
            self.update_index(Kind::Record, &[], &records);
            self.update_index(Kind::Snapshot, &[], &snapshots);
        }
        self.publish_head(Pos::ZERO);
        self.append_stream(format, len, ltx)
    }

    /// Removes segments and snapshot files, durably: retention and a reset to a snapshot.
    pub(super) fn remove_log_files(
        &self,
        segments: impl IntoIterator<Item = TxId>,
        snapshots: &[Record],
    ) -> Result<(), LogError> {
        let segments = segments.into_iter().map(|id| self.layout.segment(id));
        let snapshots = snapshots.iter().map(|s| self.layout.snapshot(s.segment));
        Ok(crate::durable::remove_files(segments.chain(snapshots))?)
    }

    /// Appends one LTX file held in memory. See [`DatabaseLog::append_stream`].
    pub fn append(&self, ltx: &[u8]) -> Result<Record, LogError> {
        let format = detect_format(&mut Cursor::new(ltx))?;
        self.append_stream(format, ltx.len() as u64, ltx)
    }

    /// Appends an LTX file of `len` bytes read from `reader`, and returns once it is durable.
    ///
    /// The file must continue the log: its first TXID follows the head, and its pre-apply
    /// checksum equals the head's post-apply checksum (an empty log takes only a snapshot). The
    /// bytes are verified as they are copied into the segment; a file that fails verification,
    /// or any I/O error, leaves the log as it was.
    pub fn append_stream(
        &self,
        format: Format,
        len: u64,
        reader: impl Read,
    ) -> Result<Record, LogError> {
        let state = self.state();
        let mut tee = Tee {
            inner: reader.take(len),
            seen: Vec::with_capacity(crate::ltx::HEADER_LEN),
        };
        let header = crate::ltx::Header::read_from(&mut tee)?;
        self.check_continues(state.head(), &header)?;
        let header_bytes = std::mem::take(&mut tee.seen);
        self.append_record(state, header.min_txid, |segment| {
            let start = segment.len();
            segment.write_at_end(&encode_record_header(format, len))?;
            segment.write_at_end(&header_bytes)?;
            let rest = std::io::BufReader::with_capacity(
                COPY_BUFFER_LEN,
                CopyInto {
                    inner: tee.inner,
                    segment: &mut *segment,
                },
            );
            let verified =
                Decoder::new(Cursor::new(&header_bytes).chain(rest), format)?.verify()?;
            Ok(Record::from_verified(segment.id, start, len, &verified))
        })
    }

    /// Appends an LTX file that this process's [`crate::ltx::Encoder`] has just written in
    /// memory, and returns once it is durable. The encoder enforces every rule the decoder
    /// checks, so the bytes are not decoded again (debug builds still decode them and compare);
    /// the log checks that the file continues it, as [`DatabaseLog::append_stream`] does. Files
    /// from anywhere else (replication, import) go through [`DatabaseLog::append_stream`].
    pub fn append_encoded(&self, ltx: &EncodedLtx<'_>) -> Result<Record, LogError> {
        if cfg!(debug_assertions) {
            let decoded = Decoder::new(ltx.bytes, ltx.written.format)?.verify()?;
            assert_eq!(
                (decoded.header, decoded.trailer),
                (ltx.written.header.clone(), ltx.written.trailer),
                "the encoder's account of the file differs from the file"
            );
        }
        let state = self.state();
        let header = &ltx.written.header;
        self.check_continues(state.head(), header)?;
        let len = ltx.bytes.len() as u64;
        self.append_record(state, header.min_txid, |segment| {
            let start = segment.len();
            segment.write_at_end(&encode_record_header(ltx.written.format, len))?;
            segment.write_at_end(ltx.bytes)?;
            Ok(Record::from_verified(segment.id, start, len, &ltx.written))
        })
    }

    /// Refuses a file that does not continue the log at `head`: its first TXID must follow the
    /// head, and its pre-apply checksum equal the head's post-apply checksum.
    fn check_continues(&self, head: Pos, header: &Header) -> Result<(), LogError> {
        let expected = head.txid.next().unwrap_or(TxId::ZERO);
        if header.min_txid != expected {
            return Err(LogError::NotContiguous {
                db: self.name.clone(),
                head: head.txid,
                min: header.min_txid,
            });
        }
        if head.txid != TxId::ZERO && header.pre_apply_checksum != head.post_apply_checksum {
            return Err(LogError::ChecksumChain {
                db: self.name.clone(),
                head: head.post_apply_checksum,
                pre: header.pre_apply_checksum,
            });
        }
        Ok(())
    }

    /// Writes one record at the end of the active segment with `write`, syncs it, and adds it
    /// to the chain, then publishes the new head once `state` is released. A failure cuts the
    /// segment back, leaving the log as it was.
    fn append_record(
        &self,
        mut state: MutexGuard<'_, State>,
        min: TxId,
        write: impl FnOnce(&mut ActiveSegment) -> Result<Record, LogError>,
    ) -> Result<Record, LogError> {
        if state.broken {
            return Err(LogError::Broken(self.name.clone()));
        }
        let segment = self.segment_for_append(&mut state, min)?;
        let start = segment.len();
        let record = match write(&mut *segment).and_then(|record| {
            segment.sync()?;
            Ok(record)
        }) {
            Ok(record) => record,
            Err(err) => {
                if let Err(cut) = segment.truncate(start) {
                    // Appending after the failed bytes would bury them mid-segment.
                    tracing::error!(db = self.name, %err, %cut, "a failed append could not be cut back: appends are refused until restart");
                    state.broken = true;
                }
                return Err(err);
            }
        };
        let (id, end) = (segment.id, segment.len());
        state.segments.insert(id, end);
        state.records.push(record.clone());
        self.update_index(Kind::Record, std::slice::from_ref(&record), &[]);
        drop(state);
        self.publish_head(Pos::new(record.max_txid, record.post_apply_checksum));
        Ok(record)
    }

    /// The active segment, rolling over to a new one named `min` when it is full or absent.
    fn segment_for_append<'s>(
        &self,
        state: &'s mut State,
        min: TxId,
    ) -> Result<&'s mut ActiveSegment, LogError> {
        if let Some(full) = state
            .active
            .as_mut()
            .filter(|a| a.len() >= SEGMENT_TARGET_LEN)
        {
            full.seal()?;
            state.active = None;
        }
        let active = match state.active.take() {
            Some(active) => active,
            None => {
                let created = ActiveSegment::create(self.layout.segment(min), min)?;
                state.segments.insert(min, 0);
                created
            }
        };
        Ok(state.active.insert(active))
    }

    /// Seals the active segment once it is `max_age` old, so that the next append starts a new
    /// one and compaction and retention can work on this one.
    pub fn seal_active_segment_older_than(
        &self,
        max_age: std::time::Duration,
    ) -> Result<(), LogError> {
        let mut state = self.state();
        if let Some(active) = state
            .active
            .as_mut()
            .filter(|a| a.len() > 0 && a.opened.elapsed() >= max_age)
        {
            active.seal()?;
            state.active = None;
        }
        Ok(())
    }

    /// Where a reader at `pos` stands: records follow, or it needs a snapshot.
    pub fn read_from(&self, pos: Pos) -> ReadFrom {
        let state = self.state();
        let head = state.head();
        if pos.txid > head.txid {
            return ReadFrom::Diverged;
        }
        if pos.txid == head.txid {
            return if pos == head {
                ReadFrom::Records
            } else {
                ReadFrom::Diverged
            };
        }
        let ending = state.records.partition_point(|r| r.max_txid < pos.txid);
        if let Some(r) = state.records.get(ending).filter(|r| r.max_txid == pos.txid) {
            if r.post_apply_checksum != pos.post_apply_checksum {
                return ReadFrom::Diverged;
            }
        }
        match record_starting_after(&state.records, pos.txid) {
            Some(r) if r.is_snapshot() || r.pre_apply_checksum == pos.post_apply_checksum => {
                ReadFrom::Records
            }
            Some(_) => ReadFrom::Diverged,
            None => ReadFrom::SnapshotNeeded,
        }
    }

    /// The TXID range of the record that starts right after `txid`, if the log has one.
    pub fn range_after(&self, txid: TxId) -> Option<(TxId, TxId)> {
        let state = self.state();
        record_starting_after(&state.records, txid).map(|r| (r.min_txid, r.max_txid))
    }

    /// The record that starts right after `pos`, opened for reading, or `None` at the head.
    pub fn record_after(&self, pos: Pos) -> Result<Option<LogRecord>, LogError> {
        let state = self.state();
        let Some(record) = record_starting_after(&state.records, pos.txid) else {
            return Ok(None);
        };
        let mut file = File::open(self.layout.segment(record.segment))?;
        file.seek(SeekFrom::Start(record.data_offset()))?;
        Ok(Some(LogRecord {
            record: record.clone(),
            data: file.take(record.len),
        }))
    }

    /// A cursor that yields the records after `pos` and then waits for new ones.
    pub fn cursor(self: &Arc<Self>, pos: Pos) -> Result<LogCursor, ReadFrom> {
        match self.read_from(pos) {
            ReadFrom::Records => {}
            other => return Err(other),
        }
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, pos);
        Ok(LogCursor {
            log: Arc::clone(self),
            id,
            pos,
            head: self.head.subscribe(),
        })
    }

    /// The position of the slowest connected subscriber, if any.
    pub fn slowest_subscriber(&self) -> Option<Pos> {
        let subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subscribers.values().min_by_key(|p| p.txid).copied()
    }

    fn set_subscriber(&self, id: u64, pos: Option<Pos>) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        match pos {
            Some(pos) => subscribers.insert(id, pos),
            None => subscribers.remove(&id),
        };
    }
}

/// The record that starts right after `txid`, found by binary search (records are in TXID order).
fn record_starting_after(records: &[Record], txid: TxId) -> Option<&Record> {
    let next = txid.next()?;
    let at = records.partition_point(|r| r.min_txid < next);
    records.get(at).filter(|r| r.min_txid == next)
}

/// A subscriber reading a database's log from a position.
pub struct LogCursor {
    log: Arc<DatabaseLog>,
    id: u64,
    pos: Pos,
    head: watch::Receiver<Pos>,
}

/// Why a cursor cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// The records after the cursor were compacted or retained away.
    #[error("the records after the cursor are gone; a snapshot is needed")]
    SnapshotNeeded,
    /// The log was closed.
    #[error("the log was closed")]
    Closed,
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl LogCursor {
    /// The position of the last record yielded.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// The next record, waiting for one to be appended if the cursor is at the head.
    pub async fn next(&mut self) -> Result<LogRecord, CursorError> {
        loop {
            if let Some(record) = self.log.record_after(self.pos)? {
                self.pos = Pos::new(record.record.max_txid, record.record.post_apply_checksum);
                self.log.set_subscriber(self.id, Some(self.pos));
                return Ok(record);
            }
            if self.log.head().txid > self.pos.txid {
                return Err(CursorError::SnapshotNeeded);
            }
            self.head.changed().await.map_err(|_| CursorError::Closed)?;
        }
    }
}

impl Drop for LogCursor {
    fn drop(&mut self) {
        self.log.set_subscriber(self.id, None);
    }
}

/// An LTX file this process has just encoded in memory, for [`DatabaseLog::append_encoded`].
pub struct EncodedLtx<'a> {
    /// The file.
    pub bytes: &'a [u8],
    /// Its format, header, trailer and page count, as the encoder wrote them.
    pub written: Verified,
}

/// The buffer between a stream being appended and the segment, which it is written to in pieces
/// of this size. It is zero-filled once per append, so it is kept small.
const COPY_BUFFER_LEN: usize = 64 * 1024;

/// Keeps the bytes of the header it reads, so they can be written after the checks pass.
struct Tee<R> {
    inner: R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Copies what the decoder reads into the segment, after the part already written.
struct CopyInto<'a, R> {
    inner: R,
    segment: &'a mut ActiveSegment,
}

impl<R: Read> Read for CopyInto<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.segment.write_at_end(&buf[..n])?;
        Ok(n)
    }
}
