//! The rolling checksum of a SQLite database file.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;

use super::DatabaseError;
use crate::ltx::{page_checksum, Checksum, DatabaseChecksum, PageNo, PageSize};

/// A database file's page size, page count and checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatabaseState {
    /// The page size, or `None` for an empty file.
    pub page_size: Option<PageSize>,
    /// The number of pages.
    pub pages: u32,
    /// The database checksum (the empty-database checksum for an empty file).
    pub checksum: Checksum,
}

/// Checksums a database read from `reader`: the XOR of every page checksum but the lock page's.
/// The page size comes from the SQLite header in the first page.
pub fn checksum_database(
    mut reader: impl Read,
    path: &Path,
) -> Result<DatabaseState, DatabaseError> {
    let not_a_db = |reason: String| DatabaseError::NotADatabase {
        path: path.to_path_buf(),
        reason,
    };
    let mut first = vec![0u8; 512];
    let n = read_full(&mut reader, &mut first)?;
    if n == 0 {
        return Ok(DatabaseState {
            page_size: None,
            pages: 0,
            checksum: Checksum::EMPTY_DATABASE,
        });
    }
    if n < 100 || !first.starts_with(b"SQLite format 3\0") {
        return Err(not_a_db("no SQLite header".into()));
    }
    let page_size = PageSize::from_sqlite_header(&first)
        .ok_or_else(|| not_a_db("invalid page size in the header".into()))?;
    let mut page = vec![0u8; page_size.bytes()];
    page[..n].copy_from_slice(&first[..n]);
    let mut filled = n + read_full(&mut reader, &mut page[n..])?;
    let mut checksum = DatabaseChecksum::new();
    let mut pgno = 1u32;
    let lock_page = page_size.lock_page();
    while filled == page.len() {
        if PageNo(pgno) != lock_page {
            checksum.toggle(page_checksum(PageNo(pgno), &page));
        }
        filled = read_full(&mut reader, &mut page)?;
        if filled == 0 {
            return Ok(DatabaseState {
                page_size: Some(page_size),
                pages: pgno,
                checksum: checksum.checksum(),
            });
        }
        pgno += 1;
    }
    Err(not_a_db(format!(
        "file size is not a multiple of the page size {}",
        page_size.get()
    )))
}

/// Checksums the database file at `path`.
pub fn checksum_file(path: &Path) -> Result<DatabaseState, DatabaseError> {
    let file = File::open(path)?;
    checksum_database(std::io::BufReader::with_capacity(1 << 20, file), path)
}

/// Reads until `buf` is full or the reader ends, returning the bytes read.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
