//! The page-order rules every LTX file obeys, shared by the encoder and the decoder.

use super::error::LtxError;
use super::header::Header;
use super::page::{PageNo, PageSize};

/// Checks page numbers as they stream past: ascending, no duplicates, none beyond the commit
/// size, never the lock page, and for snapshots every page from 1 to the commit size.
#[derive(Debug, Clone)]
pub(crate) struct PageSequence {
    commit: u32,
    lock_page: PageNo,
    snapshot: bool,
    last: Option<PageNo>,
    count: u32,
}

impl PageSequence {
    pub(crate) fn new(header: &Header, page_size: PageSize) -> PageSequence {
        PageSequence {
            commit: header.commit,
            lock_page: page_size.lock_page(),
            snapshot: header.is_snapshot(),
            last: None,
            count: 0,
        }
    }

    /// Accepts the next page number, or names the rule it breaks.
    pub(crate) fn push(&mut self, pgno: PageNo) -> Result<(), LtxError> {
        if pgno.0 > self.commit {
            return Err(LtxError::PageBeyondCommit {
                pgno,
                commit: self.commit,
            });
        }
        if pgno == self.lock_page {
            return Err(LtxError::LockPage(pgno));
        }
        if let Some(prev) = self.last {
            if pgno == prev {
                return Err(LtxError::DuplicatePage(pgno));
            }
            if pgno < prev {
                return Err(LtxError::PageOutOfOrder { prev, pgno });
            }
        }
        if self.snapshot && pgno != self.expected_next() {
            return Err(LtxError::SnapshotMissingPage {
                missing: self.expected_next(),
                commit: self.commit,
            });
        }
        self.last = Some(pgno);
        self.count += 1;
        Ok(())
    }

    /// Checks that a snapshot ended with every page present.
    pub(crate) fn finish(&self) -> Result<(), LtxError> {
        let next = self.expected_next();
        if self.snapshot && next.0 <= self.commit {
            return Err(LtxError::SnapshotMissingPage {
                missing: next,
                commit: self.commit,
            });
        }
        Ok(())
    }

    /// How many pages have been accepted.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    fn expected_next(&self) -> PageNo {
        let next = self.last.map_or(1, |p| p.0 + 1);
        if next == self.lock_page.0 {
            PageNo(next + 1)
        } else {
            PageNo(next)
        }
    }
}
