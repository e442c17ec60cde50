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
        if self.snapshot {
            if let Some(missing) = self.expected_next().filter(|&next| next != pgno) {
                return Err(LtxError::SnapshotMissingPage {
                    missing,
                    commit: self.commit,
                });
            }
        }
        self.last = Some(pgno);
        self.count += 1;
        Ok(())
    }

    /// Checks that a snapshot ended with every page present.
    pub(crate) fn finish(&self) -> Result<(), LtxError> {
        match self.expected_next() {
            Some(next) if self.snapshot && next.0 <= self.commit => {
                Err(LtxError::SnapshotMissingPage {
                    missing: next,
                    commit: self.commit,
                })
            }
            _ => Ok(()),
        }
    }

    /// How many pages have been accepted.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// The page a snapshot must hold next, or `None` past the last page number there is.
    fn expected_next(&self) -> Option<PageNo> {
        let next = self.last.map_or(Some(1), |p| p.0.checked_add(1))?;
        if next == self.lock_page.0 {
            next.checked_add(1).map(PageNo)
        } else {
            Some(PageNo(next))
        }
    }
}
