//! Reconciling a database's files with its log when the mount starts.
//!
//! The log is the truth. The database file, plus each prefix of the committed transactions in
//! its WAL, is checksummed; the state equal to the log's head is where the log stands, and any
//! committed WAL transaction after it is appended to the log, so a commit SQLite acknowledged is
//! never truncated away. The WAL is then checkpointed into the database file. When no state
//! matches (a crash left the files behind or ahead in a way the log does not describe), the
//! database is rebuilt from the log. A hot journal is never played back: the log already holds
//! every committed transaction, and an uncommitted one leaves no record.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::capture::{open_rw, read_database, Capture, CaptureError, Logical, State, WalFields};
use super::wal::{read_transactions, WalHeader, WalTransaction, WAL_HEADER_LEN};
use crate::database::{encode_database, EncodeOptions};
use crate::layout::DatabaseLayout;
use crate::ltx::{Format, PageSize, TxId};

/// The committed transactions of a database's WAL, if it has a valid header.
fn committed_wal(
    dir: &DatabaseLayout,
) -> Result<Option<(WalHeader, Vec<WalTransaction>)>, CaptureError> {
    let file = match File::open(dir.wal()) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = [0u8; WAL_HEADER_LEN as usize];
    if file.metadata()?.len() < WAL_HEADER_LEN || file.read_exact_at(&mut bytes, 0).is_err() {
        return Ok(None);
    }
    let Some(header) = WalHeader::parse(&bytes) else {
        return Ok(None);
    };
    let transactions = read_transactions(&file, &header, WAL_HEADER_LEN, header.checksum)?;
    Ok(Some((header, transactions)))
}

/// Removes the journal, WAL and shared-memory files, once the database file holds everything.
fn clear_side_files(dir: &DatabaseLayout) -> std::io::Result<()> {
    crate::durable::remove_files([dir.journal(), dir.wal(), dir.shm()])
}

/// Copies the transactions' pages into the database file and cuts it to the last commit size.
fn checkpoint(
    dir: &DatabaseLayout,
    page_size: PageSize,
    transactions: &[WalTransaction],
) -> Result<(), CaptureError> {
    let Some(last) = transactions.last() else {
        return Ok(());
    };
    let db = open_rw(&dir.database_file())?;
    let ps = u64::from(page_size.get());
    for tx in transactions {
        for (pgno, data) in tx.pages.iter().filter(|(p, _)| *p <= tx.commit) {
            db.write_all_at(data, u64::from(pgno - 1) * ps)?;
        }
    }
    db.set_len(u64::from(last.commit) * ps)?;
    crate::durable::sync_file(&db)?;
    Ok(())
}

/// Brings the database files of `capture` into agreement with its log. Returns the database's
/// page checksums when the file was already at the log's head, so that they are not read twice.
pub(super) fn reconcile(capture: &Capture) -> Result<Option<Logical>, CaptureError> {
    let dir = capture.layout();
    let head = capture.log().head();
    let mut logical = read_database(&dir.database_file())?;
    let wal = committed_wal(dir)?;
    if head.txid == TxId::ZERO {
        bootstrap(capture, logical, wal)?;
        return Ok(None);
    }
    let target = head.post_apply_checksum;
    let mut matched = (logical.checksum.checksum() == target).then_some(0);
    let page_size = wal.as_ref().and_then(|(h, _)| PageSize::new(h.page_size));
    if let (Some((_, transactions)), Some(ps)) = (&wal, page_size) {
        let mut progress = logical.clone();
        for (i, tx) in transactions.iter().enumerate() {
            progress.apply(ps, tx);
            if progress.checksum.checksum() == target {
                matched = Some(i + 1);
            }
        }
    }
    match (matched, wal, page_size) {
        (Some(k), Some((header, transactions)), Some(ps)) => {
            for tx in &transactions[..k] {
                logical.apply(ps, tx);
            }
            let mut state = State::from_logical(logical);
            for tx in &transactions[k..] {
                let fields = WalFields {
                    offset: tx.offset,
                    size: tx.size,
                    salts: (header.salt1, header.salt2),
                };
                let pos =
                    capture.commit(&mut state, ps, tx.commit, tx.pages.clone(), Some(fields))?;
                tracing::warn!(
                    db = capture.name(),
                    ?pos,
                    "recovered a committed WAL transaction missing from the log"
                );
            }
            checkpoint(dir, ps, &transactions)?;
        }
        (Some(_), _, _) => {
            // No WAL transaction was read: the file alone is at the head.
            clear_side_files(dir)?;
            return Ok(Some(logical));
        }
        (None, _, _) => {
            // A log with no database file yet (`ltxd log import`) is built, not repaired.
            let absent = !matches!(std::fs::metadata(dir.database_file()), Ok(m) if m.len() > 0);
            if absent {
                tracing::info!(db = capture.name(), txid = %head.txid, "building the database from the log");
            } else {
                tracing::warn!(db = capture.name(), txid = %head.txid, "the database files do not match the log; rebuilding the database from the log");
            }
            crate::log::restore(capture.log(), head.txid, &dir.database_file())?;
        }
    }
    clear_side_files(dir)?;
    Ok(None)
}

/// A database with no log yet: an existing file becomes the snapshot at TXID 1.
fn bootstrap(
    capture: &Capture,
    logical: Logical,
    wal: Option<(WalHeader, Vec<WalTransaction>)>,
) -> Result<(), CaptureError> {
    let dir = capture.layout();
    let journal = dir.journal();
    if journal.exists() && is_hot_journal(&journal)? {
        return Err(capture.unrecoverable(
            "a hot journal on a database ltxd has no log for; open it once with sqlite3 outside the mount",
        ));
    }
    if let Some((header, transactions)) = &wal {
        if let Some(ps) = PageSize::new(header.page_size) {
            checkpoint(dir, ps, transactions)?;
        }
    }
    clear_side_files(dir)?;
    if logical.page_size.is_none() && wal.is_none() {
        return Ok(());
    }
    let db_path = dir.database_file();
    let db = File::open(&db_path)?;
    if db.metadata()?.len() == 0 {
        return Ok(());
    }
    let options = EncodeOptions {
        format: Format::V1,
        compress: false,
        timestamp: super::capture::now_ms(),
        node_id: 0,
    };
    let mut snapshot = tempfile::tempfile_in(dir.dir())?;
    encode_database(&db, &db_path, &mut snapshot, options)?;
    let len = snapshot.metadata()?.len();
    use std::io::Seek;
    snapshot.rewind()?;
    capture
        .log()
        .append_stream(Format::V1, len, std::io::BufReader::new(snapshot))?;
    tracing::info!(
        db = capture.name(),
        "logged the existing database as its first snapshot"
    );
    Ok(())
}

/// True when a rollback journal holds a transaction: its header starts with the journal magic.
fn is_hot_journal(path: &Path) -> std::io::Result<bool> {
    let file = File::open(path)?;
    let mut magic = [0u8; 8];
    Ok(file.metadata()?.len() >= 28
        && file.read_exact_at(&mut magic, 0).is_ok()
        && magic == [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7])
}
