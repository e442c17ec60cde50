//! Applying LTX files to a database file, checking the checksum chain at every step.

use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::LtxSource;

use super::checksum::checksum_database;
use super::DatabaseError;
use crate::ltx::{page_checksum, DatabaseChecksum, PageNo, PageSize, Pos, TxId};

/// The result of applying LTX files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The position after the last file: its max TXID and post-apply checksum.
    pub pos: Pos,
    /// The database size in pages.
    pub pages: u32,
}

/// The database as the apply loop tracks it.
struct Target {
    file: File,
    page_size: Option<PageSize>,
    pages: u32,
    pos: Pos,
}

/// Applies `files` in order to the database at `db`, which may be a new file.
///
/// Each file is verified in full before any of its pages touch the database. An incremental
/// file applies only when its pre-apply checksum equals the database's checksum, consecutive
/// files must have consecutive TXIDs, and after each file the database checksum must equal the
/// file's post-apply checksum. The database is fsynced at the end.
pub fn apply_files(db: &Path, files: &[LtxSource]) -> Result<Applied, DatabaseError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(db)?;
    let state = checksum_database(BufReader::with_capacity(1 << 20, &file), db)?;
    let mut target = Target {
        file,
        page_size: state.page_size,
        pages: state.pages,
        pos: Pos::new(TxId::ZERO, state.checksum),
    };
    let mut prev_max = None;
    for source in files {
        let max = apply_one(&mut target, source, prev_max)?;
        prev_max = Some(max);
    }
    crate::durable::sync_file(&target.file)?;
    Ok(Applied {
        pos: target.pos,
        pages: target.pages,
    })
}

fn apply_one(
    target: &mut Target,
    source: &LtxSource,
    prev_max: Option<TxId>,
) -> Result<TxId, DatabaseError> {
    let path = &source.label();
    let verified = source
        .open()
        .and_then(|d| d.verify())
        .map_err(DatabaseError::ltx(path))?;
    let header = verified.header;
    if header.has_no_checksum() {
        return Err(DatabaseError::Unchecked(path.to_path_buf()));
    }
    if let Some(prev) = prev_max {
        if prev.next() != Some(header.min_txid) {
            return Err(DatabaseError::chain(path, prev, header.min_txid));
        }
    }
    let snapshot = header.is_snapshot();
    if !snapshot && header.pre_apply_checksum != target.pos.post_apply_checksum {
        return Err(DatabaseError::PreApplyMismatch {
            path: path.to_path_buf(),
            expected: header.pre_apply_checksum,
            actual: target.pos.post_apply_checksum,
        });
    }
    let mut decoder = source.open().map_err(DatabaseError::ltx(path))?;
    let page_size = decoder.page_size();
    if let Some(current) = target.page_size.filter(|&ps| ps != page_size && !snapshot) {
        return Err(DatabaseError::PageSizeMismatch {
            path: path.to_path_buf(),
            expected: current.get(),
            found: page_size.get(),
        });
    }
    let ps = page_size.bytes() as u64;
    let old_pages = if snapshot { 0 } else { target.pages };
    let mut checksum = if snapshot {
        DatabaseChecksum::new()
    } else {
        DatabaseChecksum::from_checksum(target.pos.post_apply_checksum)
    };
    let mut page = vec![0u8; page_size.bytes()];
    let mut old = vec![0u8; page_size.bytes()];
    while let Some(frame) = decoder
        .next_page(&mut page)
        .map_err(DatabaseError::ltx(path))?
    {
        let offset = u64::from(frame.pgno.0 - 1) * ps;
        if frame.pgno.0 <= old_pages {
            target.file.read_exact_at(&mut old, offset)?;
            checksum.toggle(page_checksum(frame.pgno, &old));
            checksum.toggle(page_checksum(frame.pgno, &page));
        } else if snapshot {
            checksum.toggle(page_checksum(frame.pgno, &page));
        }
        target.file.write_all_at(&page, offset)?;
    }
    let trailer = decoder.finish().map_err(DatabaseError::ltx(path))?;
    let lock_page = page_size.lock_page();
    let data_pages =
        |range: std::ops::RangeInclusive<u32>| range.filter(move |&p| PageNo(p) != lock_page);
    for pgno in data_pages(header.commit + 1..=old_pages) {
        target
            .file
            .read_exact_at(&mut old, u64::from(pgno - 1) * ps)?;
        checksum.toggle(page_checksum(PageNo(pgno), &old));
    }
    target.file.set_len(u64::from(header.commit) * ps)?;
    if !snapshot {
        for pgno in data_pages(old_pages + 1..=header.commit) {
            target
                .file
                .read_exact_at(&mut old, u64::from(pgno - 1) * ps)?;
            checksum.toggle(page_checksum(PageNo(pgno), &old));
        }
    }
    let actual = checksum.checksum();
    if actual != trailer.post_apply_checksum {
        return Err(DatabaseError::PostApplyMismatch {
            path: path.to_path_buf(),
            expected: trailer.post_apply_checksum,
            actual,
        });
    }
    target.page_size = (header.commit > 0).then_some(page_size);
    target.pages = header.commit;
    target.pos = Pos::new(header.max_txid, trailer.post_apply_checksum);
    Ok(header.max_txid)
}
