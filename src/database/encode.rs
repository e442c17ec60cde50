//! Encoding a database file as a snapshot LTX file.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use super::checksum::read_full;
use super::DatabaseError;
use crate::durable;
use crate::ltx::{Encoder, Format, Header, PageNo, PageSize, Trailer, TxId, FLAG_COMPRESS_LZ4};

/// How to encode a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The output format.
    pub format: Format,
    /// Wrap a v1 body in an LZ4 frame. v3 pages are always LZ4 blocks, so this is v1 only.
    pub compress: bool,
    /// The header timestamp, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The header's node ID.
    pub node_id: u64,
}

/// Encodes the database `db` (an open file, read from its start) as a snapshot at TXID 1 into
/// `out`. `path` names the database in errors.
pub fn encode_database<W: Write>(
    db: &File,
    path: &Path,
    out: W,
    options: EncodeOptions,
) -> Result<(W, Trailer), DatabaseError> {
    let not_a_db = |reason: &str| DatabaseError::NotADatabase {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if options.compress && options.format == Format::V3 {
        return Err(DatabaseError::CompressV3);
    }
    let len = db.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, db);
    let mut first = [0u8; 100];
    if read_full(&mut reader, &mut first)? < first.len() || !first.starts_with(b"SQLite format 3\0")
    {
        return Err(not_a_db("no SQLite header"));
    }
    let page_size =
        PageSize::from_sqlite_header(&first).ok_or_else(|| not_a_db("invalid page size"))?;
    let ps = u64::from(page_size.get());
    if len % ps != 0 || len / ps > u64::from(u32::MAX) {
        return Err(not_a_db("file size is not a whole number of pages"));
    }
    let commit = (len / ps) as u32;
    let mut header = Header::new(page_size, commit, TxId(1), TxId(1));
    header.timestamp = options.timestamp;
    header.node_id = options.node_id;
    if options.compress {
        header.flags |= FLAG_COMPRESS_LZ4;
    }
    let at = |e| DatabaseError::ltx(path)(e);
    let mut encoder = Encoder::new(out, options.format, header).map_err(at)?;
    let mut page = vec![0u8; page_size.bytes()];
    page[..first.len()].copy_from_slice(&first);
    let mut filled = first.len();
    for pgno in 1..=commit {
        if read_full(&mut reader, &mut page[filled..])? + filled != page.len() {
            return Err(not_a_db("the file shrank while it was read"));
        }
        filled = 0;
        if PageNo(pgno) != page_size.lock_page() {
            encoder.encode_page(PageNo(pgno), &page).map_err(at)?;
        }
    }
    encoder.finish_snapshot().map_err(at)
}

/// Encodes the database file `db` as a snapshot written atomically to `out`.
pub fn encode_database_file(
    db: &Path,
    out: &Path,
    options: EncodeOptions,
) -> Result<Trailer, DatabaseError> {
    let file = File::open(db)?;
    durable::write_atomically(out, |w| {
        encode_database(&file, db, w, options).map(|(_, trailer)| trailer)
    })
}
