//! The LTX file format, versions 1 (LiteFS) and 3 (current): streaming encoder and decoder,
//! checksums, and format detection. See `docs/ltx-format.md`.

mod checksum;
mod decoder;
mod detect;
mod encoder;
mod error;
mod format;
mod header;
mod page;
mod sequence;

pub use checksum::{page_checksum, Crc64, DatabaseChecksum};
pub use decoder::{Decoder, PageFrame, Verified};
pub use detect::{detect_format, open_file, verify_file};
pub use encoder::Encoder;
pub use error::{LtxError, Section};
pub use format::{Format, FLAG_COMPRESS_LZ4, FLAG_NO_CHECKSUM};
pub use header::{Header, Trailer, HEADER_LEN, TRAILER_LEN};
pub use ltxd_protocol::{Checksum, Pos, TxId};
pub use page::{PageNo, PageSize};

/// The LTX file name of a TXID range: `%016x-%016x.ltx`.
pub fn file_name(min: TxId, max: TxId) -> String {
    format!("{min}-{max}.ltx")
}
