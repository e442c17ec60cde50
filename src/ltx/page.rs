//! Page numbers and page sizes, and SQLite's lock page.

use std::fmt;

/// A SQLite page number. Page 1 is the first page; 0 is never a page (it ends an LTX page list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageNo(pub u32);

impl fmt::Display for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A validated database page size: a power of two from 512 to 65536.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageSize(u32);

impl PageSize {
    /// Validates a page size.
    pub fn new(size: u32) -> Option<PageSize> {
        (size.is_power_of_two() && (512..=65536).contains(&size)).then_some(PageSize(size))
    }

    /// The size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The size in bytes, as a `usize` for buffers.
    pub fn bytes(self) -> usize {
        self.0 as usize
    }

    /// The page that holds SQLite's PENDING byte (offset 0x40000000). It is never stored in LTX
    /// files and never counted in database checksums.
    pub fn lock_page(self) -> PageNo {
        PageNo(0x4000_0000 / self.0 + 1)
    }

    /// The number of data pages in a database of `commit` pages: the lock page does not count.
    pub fn data_pages(self, commit: u32) -> u32 {
        if commit >= self.lock_page().0 {
            commit - 1
        } else {
            commit
        }
    }

    /// Reads the page size from a SQLite database header (bytes 16-17, where 1 means 65536).
    pub fn from_sqlite_header(header: &[u8]) -> Option<PageSize> {
        let raw = u16::from_be_bytes([*header.get(16)?, *header.get(17)?]);
        PageSize::new(if raw == 1 { 65536 } else { u32::from(raw) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_pages_match_sqlite() {
        let cases = [
            (512, 2_097_153),
            (1024, 1_048_577),
            (4096, 262_145),
            (65536, 16_385),
        ];
        for (size, lock) in cases {
            assert_eq!(PageSize::new(size).unwrap().lock_page(), PageNo(lock));
        }
    }

    #[test]
    fn only_powers_of_two_in_range_are_page_sizes() {
        for bad in [0, 256, 1000, 131_072] {
            assert!(PageSize::new(bad).is_none());
        }
    }
}
