//! Operations on SQLite database files and LTX files: the database checksum, applying LTX files,
//! encoding a database as a snapshot, and compacting a run of LTX files into one.

mod apply;
mod checksum;
mod compact;
mod encode;
mod error;
mod source;

pub use apply::{apply_files, write_pages, Applied, Base, FilePageSums, PageSums};
pub use checksum::{checksum_database, checksum_file, DatabaseState};
pub use compact::{compact, compact_files, compact_sources, MAX_FAN_IN};
pub use encode::{encode_database, encode_database_file, EncodeOptions};
pub use error::DatabaseError;
pub use source::{LtxSource, SourceDecoder, VerifiedLtx};
