//! Turning a database's commits into LTX records in its log: the logical database's page
//! checksums, the pages a rollback-journal transaction dirtied, and the WAL read position.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::wal::{read_transactions, WalHeader, WalTransaction, WAL_HEADER_LEN};
use crate::database::{write_pages, Base, PageSums, VerifiedLtx};
use crate::layout::DatabaseLayout;
use crate::log::{DatabaseLog, EncodedLtx, LogError};
use crate::ltx::{
    page_checksum, Checksum, DatabaseChecksum, Encoder, Format, Header, LtxError, PageNo, PageSize,
    Pos, TxId, Verified, FLAG_COMPRESS_LZ4,
};
use crate::metrics::DatabaseCounters;

/// A commit that could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Reading the database or WAL failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The log refused or failed the append.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The LTX could not be encoded.
    #[error(transparent)]
    Ltx(#[from] LtxError),
    /// Encoding or restoring a database file failed.
    #[error(transparent)]
    Database(#[from] crate::database::DatabaseError),
    /// A replicated file does not continue the database's position; nothing was written.
    #[error("database {db}: the file starting at TXID {min_txid} does not follow position {head}")]
    NotNext {
        /// The database.
        db: String,
        /// The database's position.
        head: Pos,
        /// The file's first TXID.
        min_txid: TxId,
    },
    /// The database's files are in a state ltxd cannot reconcile safely.
    #[error("database {db}: {reason}")]
    Unrecoverable {
        /// The database.
        db: String,
        /// Why.
        reason: String,
    },
}

/// How commits are encoded.
#[derive(Clone, Copy, Debug)]
pub struct CaptureOptions {
    /// Wrap each LTX body in an LZ4 frame (LiteFS's `data.compress`).
    pub compress: bool,
    /// This node's ID, written into every LTX header.
    pub node_id: u64,
}

/// The logical database as the log knows it.
pub(super) struct State {
    page_size: Option<PageSize>,
    /// Page checksums of the logical database, by page number - 1 (0 for the lock page).
    pages: Vec<Checksum>,
    checksum: DatabaseChecksum,
    /// Pages written to the database file since the last rollback-journal commit.
    dirty: BTreeSet<u32>,
    /// Where the next uncaptured WAL frame starts, once a WAL header has been seen.
    wal: Option<WalCursor>,
    /// The database file, open for reading commits. Nothing replaces it while capture is open
    /// (recovery's rebuild runs before, and a replica writes it in place).
    database_file: Option<File>,
    /// The WAL, open for reading commits; dropped when the WAL is reset or a new header is
    /// written, since SQLite may then have deleted it and created a new one.
    wal_file: Option<File>,
}

#[derive(Clone, Copy, Debug)]
struct WalCursor {
    header: WalHeader,
    offset: u64,
    checksum: (u32, u32),
}

/// One database's commit capture.
pub struct Capture {
    name: String,
    log: Arc<DatabaseLog>,
    options: CaptureOptions,
    counters: DatabaseCounters,
    state: Mutex<State>,
}

impl Capture {
    /// Opens capture for database `name`, whose files are in its log's directory, reconciling
    /// them with the log first (see `recovery.rs`).
    pub fn open(
        name: &str,
        log: Arc<DatabaseLog>,
        options: CaptureOptions,
        counters: DatabaseCounters,
    ) -> Result<Capture, CaptureError> {
        let capture = Capture {
            name: name.to_string(),
            log,
            options,
            counters,
            state: Mutex::new(State {
                page_size: None,
                pages: Vec::new(),
                checksum: DatabaseChecksum::new(),
                dirty: BTreeSet::new(),
                wal: None,
                database_file: None,
                wal_file: None,
            }),
        };
        let logical = super::recovery::reconcile(&capture)?;
        capture.load_checksums(logical)?;
        Ok(capture)
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's metrics.
    pub fn counters(&self) -> &DatabaseCounters {
        &self.counters
    }

    /// Where the database's files are.
    pub fn layout(&self) -> &DatabaseLayout {
        self.log.layout()
    }

    /// The database's log.
    pub fn log(&self) -> &Arc<DatabaseLog> {
        &self.log
    }

    /// The position of the last captured commit.
    pub fn pos(&self) -> Pos {
        self.log.head()
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the page checksums of the database file, which recovery left at the log's head:
    /// `logical` when recovery read them, or read from the file.
    fn load_checksums(&self, logical: Option<Logical>) -> Result<(), CaptureError> {
        let mut state = self.state();
        let logical = match logical {
            Some(logical) => logical,
            None => read_database(&self.layout().database_file())?,
        };
        let head = self.log.head();
        if head.txid != TxId::ZERO && logical.checksum.checksum() != head.post_apply_checksum {
            return Err(self.unrecoverable("the database does not match its log after recovery"));
        }
        state.page_size = logical.page_size;
        state.pages = logical.pages;
        state.checksum = logical.checksum;
        Ok(())
    }

    pub(super) fn unrecoverable(&self, reason: &str) -> CaptureError {
        CaptureError::Unrecoverable {
            db: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// Notes a write to the database file. The first write of page 1 teaches the page size.
    pub fn database_written(&self, offset: u64, data: &[u8]) {
        let mut state = self.state();
        if state.page_size.is_none() && offset == 0 {
            state.page_size = PageSize::from_sqlite_header(data);
        }
        let Some(page_size) = state.page_size else {
            return;
        };
        let ps = u64::from(page_size.get());
        let first = offset / ps + 1;
        let last = (offset + data.len().max(1) as u64 - 1) / ps + 1;
        for pgno in first..=last {
            state.dirty.insert(pgno as u32);
        }
    }

    /// Captures a rollback-journal commit: called when the journal is deleted, truncated or
    /// zeroed, before that change is made. A transaction that changed nothing (a rollback, or
    /// an empty transaction) leaves no record.
    pub fn commit_journal(&self) -> Result<Option<Pos>, CaptureError> {
        let mut guard = self.state();
        let state = &mut *guard;
        if state.dirty.is_empty() {
            return Ok(None);
        }
        let Some(page_size) = state.page_size else {
            state.dirty.clear();
            return Ok(None);
        };
        let file = match &state.database_file {
            Some(file) => file,
            None => state
                .database_file
                .insert(File::open(self.layout().database_file())?),
        };
        let ps = u64::from(page_size.get());
        let commit = database_size(file, page_size)?;
        let dirty: Vec<u32> = state
            .dirty
            .iter()
            .copied()
            .filter(|&p| p <= commit)
            .collect();
        let mut pages = Vec::with_capacity(dirty.len());
        let mut data = vec![0u8; page_size.bytes()];
        for &pgno in &dirty {
            if PageNo(pgno) == page_size.lock_page() {
                continue;
            }
            file.read_exact_at(&mut data, u64::from(pgno - 1) * ps)?;
            pages.push((pgno, data.clone()));
        }
        let pos = self.commit(state, page_size, commit, pages, None)?;
        state.dirty.clear();
        Ok(pos)
    }

    /// Notes a WAL header written at offset 0: frames after it are read from there.
    pub fn wal_header_written(&self, bytes: &[u8]) {
        let mut state = self.state();
        state.wal_file = None;
        state.wal = WalHeader::parse(bytes).map(|header| WalCursor {
            header,
            offset: WAL_HEADER_LEN,
            checksum: header.checksum,
        });
    }

    /// Notes that the WAL was truncated or deleted.
    pub fn wal_reset(&self) {
        let mut state = self.state();
        state.wal = None;
        state.wal_file = None;
    }

    /// Captures the WAL transactions committed since the last capture: called once the write
    /// that completes a commit frame is done, before it is acknowledged.
    pub fn commit_wal(&self) -> Result<Option<Pos>, CaptureError> {
        let mut guard = self.state();
        let state = &mut *guard;
        let Some(cursor) = state.wal else {
            return Ok(None);
        };
        let wal = match &state.wal_file {
            Some(file) => file,
            None => state.wal_file.insert(File::open(self.layout().wal())?),
        };
        let transactions = read_transactions(wal, &cursor.header, cursor.offset, cursor.checksum)?;
        let page_size = PageSize::new(cursor.header.page_size)
            .ok_or_else(|| self.unrecoverable("WAL page size"))?;
        let mut pos = None;
        for tx in transactions {
            let wal_fields = WalFields {
                offset: tx.offset,
                size: tx.size,
                salts: (cursor.header.salt1, cursor.header.salt2),
            };
            let (commit, next_checksum, end) = (tx.commit, tx.checksum, tx.offset + tx.size);
            pos = self
                .commit(state, page_size, commit, tx.pages, Some(wal_fields))?
                .or(pos);
            state.wal = Some(WalCursor {
                header: cursor.header,
                offset: end,
                checksum: next_checksum,
            });
        }
        Ok(pos)
    }

    /// Encodes and appends one commit that leaves the database at `commit` pages with `pages`
    /// changed, then updates the logical page checksums.
    pub(super) fn commit(
        &self,
        state: &mut State,
        page_size: PageSize,
        commit: u32,
        mut pages: Vec<(u32, Vec<u8>)>,
        wal: Option<WalFields>,
    ) -> Result<Option<Pos>, CaptureError> {
        pages.retain(|(p, _)| *p <= commit && PageNo(*p) != page_size.lock_page());
        let written: Vec<(u32, Checksum)> = pages
            .iter()
            .map(|(p, d)| (*p, page_checksum(PageNo(*p), d)))
            .collect();
        let next = state.next(page_size, commit, &written);
        let (checksum, grown) = (next.checksum, next.grown.clone());
        let head = self.log.head();
        if checksum == state.checksum
            && commit == state.pages.len() as u32
            && head.txid != TxId::ZERO
        {
            return Ok(None);
        }
        let txid = TxId(head.txid.0 + 1);
        let mut header = Header::new(page_size, commit, txid, txid);
        header.timestamp = now_ms();
        header.node_id = self.options.node_id;
        if self.options.compress {
            header.flags |= FLAG_COMPRESS_LZ4;
        }
        if txid != TxId(1) {
            header.pre_apply_checksum = head.post_apply_checksum;
        }
        if let Some(w) = wal {
            header.wal_offset = w.offset as i64;
            header.wal_size = w.size as i64;
            header.wal_salt1 = w.salts.0;
            header.wal_salt2 = w.salts.1;
        }
        let span = tracing::debug_span!("commit", db = %self.name, txid = %txid);
        let _enter = span.enter();
        let zeros = if grown.is_empty() {
            Vec::new()
        } else {
            vec![0u8; page_size.bytes()]
        };
        let mut all_pages: Vec<(u32, &[u8])> =
            pages.iter().map(|(p, d)| (*p, d.as_slice())).collect();
        all_pages.extend(grown.iter().map(|&p| (p, zeros.as_slice())));
        all_pages.sort_by_key(|(p, _)| *p);
        if txid == TxId(1) && all_pages.len() as u32 != page_size.data_pages(commit) {
            return Err(
                self.unrecoverable("the first transaction of a new database must write every page")
            );
        }
        let mut encoder = Encoder::new(Vec::new(), Format::V1, header)?;
        for (pgno, data) in &all_pages {
            encoder.encode_page(PageNo(*pgno), data)?;
        }
        let (header, page_count) = (encoder.header().clone(), encoder.page_count());
        let (bytes, trailer) = encoder.finish(checksum.checksum())?;
        self.log.append_encoded(&EncodedLtx {
            bytes: &bytes,
            written: Verified {
                format: Format::V1,
                header,
                trailer,
                page_count,
            },
        })?;
        state.install(page_size, commit, next);
        self.counters.commits.inc();
        Ok(Some(Pos::new(txid, checksum.checksum())))
    }
}

impl Capture {
    /// Writes a replicated, verified LTX file into the database file: checks that it follows
    /// the database's position (a snapshot replaces the log first), and writes its pages and
    /// size through the page writer ([`crate::database::write_pages`]). The caller holds the
    /// database's SQLite locks, so no reader sees a partial state. The file is not in the log
    /// yet unless it is a snapshot: [`Capture::log_replicated`] appends it after the locks are
    /// released, so that readers see it without waiting for the log's fsync. A crash in between
    /// leaves a database ahead of its log, which recovery rebuilds from the log, and the replica
    /// fetches the file again.
    pub fn write_replicated<'a>(&self, ltx: &'a VerifiedLtx) -> Result<Unlogged<'a>, CaptureError> {
        let mut state = self.state();
        let header = ltx.header();
        let snapshot = header.is_snapshot();
        if snapshot {
            self.log.reset_to_snapshot(
                ltx.verified().format,
                ltx.byte_len(),
                ltx.source().open_raw()?,
            )?;
            state.pages.clear();
            state.checksum = DatabaseChecksum::new();
        } else {
            let head = self.log.head();
            if head.txid.next() != Some(header.min_txid)
                || head.post_apply_checksum != header.pre_apply_checksum
            {
                return Err(CaptureError::NotNext {
                    db: self.name.clone(),
                    head,
                    min_txid: header.min_txid,
                });
            }
        }
        let base = Base {
            page_size: state.page_size,
            pages: state.pages.len() as u32,
            checksum: state.checksum.checksum(),
        };
        let db = open_rw(&self.layout().database_file())?;
        let mut sums = StatePageSums {
            sums: &mut state.pages,
            written: Vec::new(),
        };
        let applied = write_pages(&db, base, ltx, &mut sums)?;
        let written = sums.written;
        let ps = ltx.page_size().bytes() as u64;
        state.pages.truncate(applied.pages as usize);
        state.checksum = DatabaseChecksum::from_checksum(applied.pos.post_apply_checksum);
        state.page_size = Some(ltx.page_size());
        Ok(Unlogged {
            ltx,
            logged: snapshot,
            pos: applied.pos,
            pages: written,
            page_size: ps,
            len: u64::from(applied.pages) * ps,
        })
    }

    /// Appends a file written by [`Capture::write_replicated`] to the log (with its fsync).
    pub fn log_replicated(&self, file: Unlogged<'_>) -> Result<Pos, CaptureError> {
        if !file.logged {
            let _state = self.state();
            self.log.append_stream(
                file.ltx.verified().format,
                file.ltx.byte_len(),
                file.ltx.source().open_raw()?,
            )?;
        }
        Ok(file.pos)
    }
}

/// The capture's page checksums, as the page writer reads and updates them, and the pages it
/// wrote (for the applier, which drops exactly those from the kernel's cache).
struct StatePageSums<'a> {
    sums: &'a mut Vec<Checksum>,
    written: Vec<u32>,
}

impl PageSums for StatePageSums<'_> {
    fn before(&mut self, _: &File, pgno: PageNo, _: &mut [u8]) -> std::io::Result<Checksum> {
        Ok(self
            .sums
            .get(pgno.0 as usize - 1)
            .copied()
            .unwrap_or(Checksum::ZERO))
    }

    fn after(&mut self, pgno: PageNo, sum: Checksum) {
        let index = pgno.0 as usize - 1;
        if self.sums.len() <= index {
            self.sums.resize(index + 1, Checksum::ZERO);
        }
        self.sums[index] = sum;
        self.written.push(pgno.0);
    }
}

/// A replicated file in the database file, and perhaps not yet in the log.
#[must_use = "the file must be appended to the log with Capture::log_replicated"]
pub struct Unlogged<'a> {
    ltx: &'a VerifiedLtx,
    logged: bool,
    pos: Pos,
    /// The pages written, by number.
    pub(super) pages: Vec<u32>,
    /// Their size.
    pub(super) page_size: u64,
    /// The database file's new length.
    pub(super) len: u64,
}

/// Where a WAL transaction lay in the WAL, for the LTX header.
#[derive(Clone, Copy, Debug)]
pub(super) struct WalFields {
    pub offset: u64,
    pub size: u64,
    pub salts: (u32, u32),
}

/// A database file's page size and page checksums.
#[derive(Clone)]
pub(super) struct Logical {
    pub page_size: Option<PageSize>,
    pub pages: Vec<Checksum>,
    pub checksum: DatabaseChecksum,
}

/// Reads the page checksums of the database file at `path` (an absent or empty file is an
/// empty database).
pub(super) fn read_database(path: &Path) -> Result<Logical, CaptureError> {
    let mut logical = Logical {
        page_size: None,
        pages: Vec::new(),
        checksum: DatabaseChecksum::new(),
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(logical),
        Err(e) => return Err(e.into()),
    };
    if file.metadata()?.len() < 100 {
        return Ok(logical);
    }
    let mut header = [0u8; 100];
    file.read_exact_at(&mut header, 0)?;
    let page_size =
        PageSize::from_sqlite_header(&header).ok_or_else(|| CaptureError::Unrecoverable {
            db: path.display().to_string(),
            reason: "invalid page size in the database header".into(),
        })?;
    let pages = (file.metadata()?.len() / u64::from(page_size.get())) as u32;
    let mut data = vec![0u8; page_size.bytes()];
    logical.pages = vec![Checksum::ZERO; pages as usize];
    for pgno in (1..=pages).filter(|&p| PageNo(p) != page_size.lock_page()) {
        file.read_exact_at(&mut data, u64::from(pgno - 1) * u64::from(page_size.get()))?;
        let sum = page_checksum(PageNo(pgno), &data);
        logical.pages[pgno as usize - 1] = sum;
        logical.checksum.toggle(sum);
    }
    logical.page_size = Some(page_size);
    Ok(logical)
}

impl Logical {
    /// Applies a committed WAL transaction to the page checksums.
    pub(super) fn apply(&mut self, page_size: PageSize, tx: &WalTransaction) {
        for (pgno, data) in tx
            .pages
            .iter()
            .filter(|(p, _)| *p <= tx.commit && PageNo(*p) != page_size.lock_page())
        {
            if self.pages.len() < *pgno as usize {
                self.pages.resize(*pgno as usize, Checksum::ZERO);
            }
            let old = self.pages[*pgno as usize - 1];
            if old != Checksum::ZERO {
                self.checksum.toggle(old);
            }
            let new = page_checksum(PageNo(*pgno), data);
            self.checksum.toggle(new);
            self.pages[*pgno as usize - 1] = new;
        }
        for old in self.pages.drain(tx.commit as usize..) {
            if old != Checksum::ZERO {
                self.checksum.toggle(old);
            }
        }
        self.page_size = Some(page_size);
    }
}

/// The logical database after a commit: its checksum, every page checksum that changed, and the
/// pages it grew without writing (zeros).
#[derive(Clone, Debug)]
pub(super) struct NextState {
    pub checksum: DatabaseChecksum,
    pub updates: Vec<(u32, Checksum)>,
    pub grown: Vec<u32>,
}

impl State {
    /// The state after a commit that leaves `commit` pages with `written` pages changed.
    pub(super) fn next(
        &self,
        page_size: PageSize,
        commit: u32,
        written: &[(u32, Checksum)],
    ) -> NextState {
        let old_len = self.pages.len() as u32;
        let mut checksum = self.checksum;
        let mut updates = Vec::with_capacity(written.len());
        for &(pgno, new) in written
            .iter()
            .filter(|(p, _)| *p <= commit && PageNo(*p) != page_size.lock_page())
        {
            let old = self
                .pages
                .get(pgno as usize - 1)
                .copied()
                .unwrap_or(Checksum::ZERO);
            if old != Checksum::ZERO {
                checksum.toggle(old);
            }
            checksum.toggle(new);
            updates.push((pgno, new));
        }
        for pgno in commit + 1..=old_len {
            let old = self.pages[pgno as usize - 1];
            if old != Checksum::ZERO {
                checksum.toggle(old);
            }
        }
        let zeros = vec![0u8; page_size.bytes()];
        let grown: Vec<u32> = (old_len + 1..=commit)
            .filter(|&p| {
                PageNo(p) != page_size.lock_page() && !written.iter().any(|(q, _)| *q == p)
            })
            .collect();
        for &pgno in &grown {
            let sum = page_checksum(PageNo(pgno), &zeros);
            checksum.toggle(sum);
            updates.push((pgno, sum));
        }
        NextState {
            checksum,
            updates,
            grown,
        }
    }

    /// Makes `next` the current state.
    pub(super) fn install(&mut self, page_size: PageSize, commit: u32, next: NextState) {
        self.pages.resize(commit as usize, Checksum::ZERO);
        for (pgno, sum) in next.updates {
            if pgno <= commit && PageNo(pgno) != page_size.lock_page() {
                self.pages[pgno as usize - 1] = sum;
            }
        }
        self.checksum = next.checksum;
        self.page_size = Some(page_size);
    }

    /// Capture state for a database whose logical content is `logical`.
    pub(super) fn from_logical(logical: Logical) -> State {
        State {
            page_size: logical.page_size,
            pages: logical.pages,
            checksum: logical.checksum,
            dirty: BTreeSet::new(),
            wal: None,
            database_file: None,
            wal_file: None,
        }
    }
}

/// The database size in pages: the header's count when valid, else the file size.
pub(super) fn database_size(file: &File, page_size: PageSize) -> std::io::Result<u32> {
    let file_pages = (file.metadata()?.len() / u64::from(page_size.get())) as u32;
    let mut header = [0u8; 100];
    if file_pages == 0 {
        return Ok(0);
    }
    file.read_exact_at(&mut header, 0)?;
    let word = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (in_header, change_counter, valid_for) = (word(28), word(24), word(92));
    Ok(if in_header != 0 && change_counter == valid_for {
        in_header
    } else {
        file_pages
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Opens a database file for reading and writing.
pub(super) fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}
