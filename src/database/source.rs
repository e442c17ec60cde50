//! Where an LTX file's bytes are: a whole file, or a record inside a log segment.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};

use super::DatabaseError;
use crate::ltx::{detect_format, Decoder, Format, Header, LtxError, PageSize, Verified};

/// An LTX file to read: a file of its own, or a byte range of a known format inside another
/// file. Each [`LtxSource::open`] starts a fresh decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LtxSource {
    path: PathBuf,
    range: Option<(u64, u64, Format)>,
}

/// A decoder over an [`LtxSource`].
pub type SourceDecoder = Decoder<BufReader<Take<File>>>;

impl LtxSource {
    /// A whole LTX file, whose format is detected when it is opened.
    pub fn file(path: impl Into<PathBuf>) -> LtxSource {
        LtxSource {
            path: path.into(),
            range: None,
        }
    }

    /// An LTX file of `format` stored at `offset..offset + len` in `path`.
    pub fn range(path: impl Into<PathBuf>, offset: u64, len: u64, format: Format) -> LtxSource {
        LtxSource {
            path: path.into(),
            range: Some((offset, len, format)),
        }
    }

    /// A name for error messages: the path, with the offset for a range.
    pub fn label(&self) -> PathBuf {
        match self.range {
            None => self.path.clone(),
            Some((offset, _, _)) => PathBuf::from(format!("{}@{offset}", self.path.display())),
        }
    }

    /// The file that holds the bytes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the LTX file's bytes, unverified.
    pub fn open_raw(&self) -> std::io::Result<Take<File>> {
        let mut file = File::open(&self.path)?;
        let (offset, len) = self.range.map_or((0, u64::MAX), |(o, l, _)| (o, l));
        file.seek(SeekFrom::Start(offset))?;
        Ok(file.take(len))
    }

    /// Opens a decoder at the start of the LTX file.
    pub fn open(&self) -> Result<SourceDecoder, LtxError> {
        let mut file = File::open(&self.path)?;
        let (offset, len, format) = match self.range {
            Some(range) => range,
            None => (0, u64::MAX, detect_format(&mut file)?),
        };
        file.seek(SeekFrom::Start(offset))?;
        Decoder::new(BufReader::with_capacity(128 * 1024, file.take(len)), format)
    }
}

/// An LTX file that was verified in full: the page writer's input.
#[derive(Clone, Debug)]
pub struct VerifiedLtx {
    source: LtxSource,
    verified: Verified,
    page_size: PageSize,
    len: u64,
}

impl VerifiedLtx {
    /// Decodes and checks all of `source`.
    pub fn verify(source: LtxSource) -> Result<VerifiedLtx, DatabaseError> {
        let verified = source
            .open()
            .and_then(|d| d.verify())
            .and_then(|v| Ok((v.header.page_size()?, v)))
            .map_err(DatabaseError::ltx(source.label()));
        let (page_size, verified) = verified?;
        let len = match source.range {
            Some((_, len, _)) => len,
            None => std::fs::metadata(&source.path)?.len(),
        };
        Ok(VerifiedLtx {
            source,
            verified,
            page_size,
            len,
        })
    }

    /// Where the file is.
    pub fn source(&self) -> &LtxSource {
        &self.source
    }

    /// Its format, header, trailer and page count.
    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    /// Its header.
    pub fn header(&self) -> &Header {
        &self.verified.header
    }

    /// Its length in bytes.
    pub fn byte_len(&self) -> u64 {
        self.len
    }

    /// Its page size.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }
}
