//! The two on-disk LTX formats and their differences.

use std::fmt;
use std::str::FromStr;

/// An LTX on-disk format. Both share the magic `LTX1` and the 100-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Format {
    /// LiteFS's format (ltx v0.3.x): raw pages with 4-byte page headers, no index, and an
    /// optional LZ4 frame around the body (header flag 0x1).
    V1,
    /// The current format (ltx v0.5.2+): an LZ4 block per page with 6-byte page headers, then a
    /// page index.
    V3,
}

impl Format {
    /// The version number the reference tools print.
    pub fn version(self) -> u32 {
        match self {
            Format::V1 => 1,
            Format::V3 => 3,
        }
    }

    /// The header flags this format allows.
    pub(crate) fn flag_mask(self) -> u32 {
        match self {
            Format::V1 => FLAG_COMPRESS_LZ4 | FLAG_NO_CHECKSUM,
            Format::V3 => FLAG_NO_CHECKSUM,
        }
    }

    /// The size of a page header: pgno, plus the flags in v3.
    pub(crate) fn page_header_len(self) -> usize {
        match self {
            Format::V1 => 4,
            Format::V3 => 6,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.version())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" | "1" => Ok(Format::V1),
            "v3" | "3" => Ok(Format::V3),
            _ => Err(format!("unknown LTX format {s:?}: expected v1 or v3")),
        }
    }
}

/// Header flag (v1 only): the body is one LZ4 frame.
pub const FLAG_COMPRESS_LZ4: u32 = 0x1;
/// Header flag: the file carries no pre- or post-apply checksums.
pub const FLAG_NO_CHECKSUM: u32 = 0x2;
/// v3 page-header flag: a 4-byte compressed size follows and the payload is an LZ4 block.
pub(crate) const PAGE_FLAG_SIZE: u16 = 0x1;
