//! Applying LTX files to a database file, checking the checksum chain at every step.
//!
//! [`write_pages`] is the one page writer: `ltxd ltx apply`, both restores and a replica's
//! applies all write pages through it.

use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::checksum::checksum_database;
use super::{DatabaseError, VerifiedLtx};
use crate::ltx::{page_checksum, Checksum, DatabaseChecksum, PageNo, PageSize, Pos, TxId};

/// The result of applying LTX files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The position after the last file: its max TXID and post-apply checksum.
    pub pos: Pos,
    /// The database size in pages.
    pub pages: u32,
}

/// A database file as the page writer finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base {
    /// The page size, or `None` for an empty database.
    pub page_size: Option<PageSize>,
    /// The number of pages.
    pub pages: u32,
    /// The database checksum.
    pub checksum: Checksum,
}

impl Base {
    /// An empty database.
    pub const EMPTY: Base = Base {
        page_size: None,
        pages: 0,
        checksum: Checksum::EMPTY_DATABASE,
    };
}

/// Where the page writer learns the checksum of a page before it overwrites or truncates it,
/// and tells the new checksum of each page it writes.
pub trait PageSums {
    /// The checksum of page `pgno` as the database holds it now; `scratch` is a page-sized buffer.
    fn before(
        &mut self,
        file: &File,
        pgno: PageNo,
        scratch: &mut [u8],
    ) -> std::io::Result<Checksum>;
    /// Page `pgno` now has checksum `sum`.
    fn after(&mut self, pgno: PageNo, sum: Checksum);
}

/// Page checksums read from the database file itself.
pub struct FilePageSums;

impl PageSums for FilePageSums {
    fn before(
        &mut self,
        file: &File,
        pgno: PageNo,
        scratch: &mut [u8],
    ) -> std::io::Result<Checksum> {
        file.read_exact_at(scratch, u64::from(pgno.0 - 1) * scratch.len() as u64)?;
        Ok(page_checksum(pgno, scratch))
    }

    fn after(&mut self, _: PageNo, _: Checksum) {}
}

/// Applies `files` in order to the database at `db`, which may be a new file.
///
/// Each file is verified in full before any of its pages touch the database. An incremental
/// file applies only when its pre-apply checksum equals the database's checksum, consecutive
/// files must have consecutive TXIDs, and after each file the database checksum must equal the
/// file's post-apply checksum. The database is fsynced at the end.
pub fn apply_files(db: &Path, files: &[super::LtxSource]) -> Result<Applied, DatabaseError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(db)?;
    let state = checksum_database(BufReader::with_capacity(1 << 20, &file), db)?;
    let mut base = Base {
        page_size: state.page_size,
        pages: state.pages,
        checksum: state.checksum,
    };
    let mut pos = Pos::new(TxId::ZERO, state.checksum);
    let mut prev_max: Option<TxId> = None;
    for source in files {
        let ltx = VerifiedLtx::verify(source.clone())?;
        let header = ltx.header();
        if let Some(prev) = prev_max.filter(|prev| prev.next() != Some(header.min_txid)) {
            return Err(DatabaseError::chain(source.label(), prev, header.min_txid));
        }
        prev_max = Some(header.max_txid);
        let applied = write_pages(&file, base, &ltx, &mut FilePageSums)?;
        base = Base {
            page_size: (applied.pages > 0).then_some(ltx.page_size()),
            pages: applied.pages,
            checksum: applied.pos.post_apply_checksum,
        };
        pos = applied.pos;
    }
    crate::durable::sync_file(&file)?;
    Ok(Applied {
        pos,
        pages: base.pages,
    })
}

/// Writes the pages of a verified LTX file into the database `file`, which holds `base`, and
/// sets its size to the file's commit size. Memory holds two pages whatever the sizes.
///
/// An incremental file applies only on top of its pre-apply checksum and with the database's
/// page size; a snapshot replaces the whole database. `sums` gives the checksum of each page
/// the file overwrites or truncates away, and learns each new page's checksum. The database's
/// checksum afterwards must equal the file's post-apply checksum; pages may have been written
/// when that check, or reading the file, fails. The file is not synced.
pub fn write_pages(
    file: &File,
    base: Base,
    ltx: &VerifiedLtx,
    sums: &mut impl PageSums,
) -> Result<Applied, DatabaseError> {
    let path = &ltx.source().label();
    let header = ltx.header();
    if header.has_no_checksum() {
        return Err(DatabaseError::Unchecked(path.to_path_buf()));
    }
    let snapshot = header.is_snapshot();
    let page_size = ltx.page_size();
    if !snapshot {
        if header.pre_apply_checksum != base.checksum {
            return Err(DatabaseError::PreApplyMismatch {
                path: path.to_path_buf(),
                expected: header.pre_apply_checksum,
                actual: base.checksum,
            });
        }
        if let Some(current) = base.page_size.filter(|&ps| ps != page_size) {
            return Err(DatabaseError::PageSizeMismatch {
                path: path.to_path_buf(),
                expected: current.get(),
                found: page_size.get(),
            });
        }
    }
    let ps = page_size.bytes() as u64;
    let (old_pages, mut checksum) = if snapshot {
        (0, DatabaseChecksum::new())
    } else {
        (base.pages, DatabaseChecksum::from_checksum(base.checksum))
    };
    let lock_page = page_size.lock_page();
    let mut scratch = vec![0u8; page_size.bytes()];
    // Pages past the old end that the file does not write are zeros: cut any stale bytes there
    // first (a snapshot starts from an empty file).
    if snapshot || header.commit > old_pages {
        file.set_len(u64::from(old_pages) * ps)?;
    }
    let zeros = vec![0u8; page_size.bytes()];
    let mut next_grown = old_pages + 1;
    let mut decoder = ltx.source().open().map_err(DatabaseError::ltx(path))?;
    let mut page = vec![0u8; page_size.bytes()];
    while let Some(frame) = decoder
        .next_page(&mut page)
        .map_err(DatabaseError::ltx(path))?
    {
        let pgno = frame.pgno;
        if pgno.0 <= old_pages {
            checksum.toggle(sums.before(file, pgno, &mut scratch)?);
        } else {
            zero_pages(&mut checksum, sums, &zeros, lock_page, next_grown..pgno.0);
            next_grown = pgno.0 + 1;
        }
        let sum = page_checksum(pgno, &page);
        checksum.toggle(sum);
        sums.after(pgno, sum);
        file.write_all_at(&page, u64::from(pgno.0 - 1) * ps)?;
    }
    let trailer = decoder.finish().map_err(DatabaseError::ltx(path))?;
    for pgno in (header.commit + 1..=old_pages)
        .map(PageNo)
        .filter(|&p| p != lock_page)
    {
        checksum.toggle(sums.before(file, pgno, &mut scratch)?);
    }
    zero_pages(
        &mut checksum,
        sums,
        &zeros,
        lock_page,
        next_grown..header.commit + 1,
    );
    file.set_len(u64::from(header.commit) * ps)?;
    let actual = checksum.checksum();
    if actual != trailer.post_apply_checksum {
        return Err(DatabaseError::PostApplyMismatch {
            path: path.to_path_buf(),
            expected: trailer.post_apply_checksum,
            actual,
        });
    }
    Ok(Applied {
        pos: Pos::new(header.max_txid, trailer.post_apply_checksum),
        pages: header.commit,
    })
}

/// Counts pages `pages` in as zeros (a database grown past pages the file does not write).
fn zero_pages(
    checksum: &mut DatabaseChecksum,
    sums: &mut impl PageSums,
    zeros: &[u8],
    lock_page: PageNo,
    pages: std::ops::Range<u32>,
) {
    for pgno in pages.map(PageNo).filter(|&p| p != lock_page) {
        let sum = page_checksum(pgno, zeros);
        checksum.toggle(sum);
        sums.after(pgno, sum);
    }
}
