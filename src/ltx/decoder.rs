//! The streaming LTX decoder for both formats, with strict validation.

use std::io::{self, Read};

use lz4_flex::frame::FrameDecoder;

use super::checksum::{page_checksum, Crc64, DatabaseChecksum};
use super::error::{LtxError, Section};
use super::format::{Format, PAGE_FLAG_SIZE};
use super::header::{be_u32, Header, Trailer, HEADER_LEN, TRAILER_LEN};
use super::page::{PageNo, PageSize};
use super::sequence::PageSequence;

/// A reader that counts the bytes it passes on, for v3 frame offsets.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Where the body comes from: straight from the reader, or from inside a v1 LZ4 frame.
enum Body<R: Read> {
    Raw(Counted<R>),
    Lz4(FrameDecoder<Counted<R>>),
}

impl<R: Read> Body<R> {
    fn read_exact(&mut self, buf: &mut [u8], section: Section) -> Result<(), LtxError> {
        match self {
            Body::Raw(r) => r
                .read_exact(buf)
                .map_err(|e| LtxError::from_read(e, section)),
            Body::Lz4(r) => r.read_exact(buf).map_err(|e| lz4_error(e, section)),
        }
    }

    fn raw(&mut self) -> &mut Counted<R> {
        match self {
            Body::Raw(r) => r,
            Body::Lz4(r) => r.get_mut(),
        }
    }
}

fn lz4_error(err: io::Error, section: Section) -> LtxError {
    let is_lz4 = err
        .get_ref()
        .is_some_and(|e| e.downcast_ref::<lz4_flex::frame::Error>().is_some());
    if is_lz4 {
        LtxError::BadLz4Frame(err.to_string())
    } else {
        LtxError::from_read(err, section)
    }
}

/// What a decoded page frame looked like on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFrame {
    /// The page number.
    pub pgno: PageNo,
    /// Where the frame starts in the file (in the uncompressed stream for v1 LZ4 files).
    pub offset: u64,
    /// The frame's encoded size: page header, size field and payload.
    pub size: u64,
}

/// A summary of a verified file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The file's format.
    pub format: Format,
    /// The header.
    pub header: Header,
    /// The trailer.
    pub trailer: Trailer,
    /// How many pages the file holds.
    pub page_count: u32,
}

/// Reads one LTX file page by page, checking every rule as it goes. Memory stays bounded
/// whatever the file's size: the v3 page index is checked against the frames through a hash of
/// their entries, not a copy.
///
/// Call [`Decoder::next_page`] until it returns `None`, then [`Decoder::finish`], which checks
/// the index, the trailer, the file checksum and, for snapshots, the post-apply checksum. Data
/// read before `finish` succeeds is not yet known to be intact.
pub struct Decoder<R: Read> {
    format: Format,
    header: Header,
    page_size: PageSize,
    body: Body<R>,
    file_hash: Crc64,
    uncompressed_offset: u64,
    sequence: PageSequence,
    snapshot_checksum: DatabaseChecksum,
    frames_hash: Crc64,
    pages_done: bool,
    compressed: Vec<u8>,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header of a file in `format`.
    pub fn new(reader: R, format: Format) -> Result<Decoder<R>, LtxError> {
        let mut reader = Counted {
            inner: reader,
            count: 0,
        };
        let mut bytes = [0u8; HEADER_LEN];
        reader
            .read_exact(&mut bytes)
            .map_err(|e| LtxError::from_read(e, Section::Header))?;
        let header = Header::decode(&bytes)?;
        header.validate(format)?;
        let page_size = header.page_size()?;
        let mut file_hash = Crc64::new();
        file_hash.update(&bytes);
        let body = if format == Format::V1 && header.is_compressed() {
            Body::Lz4(FrameDecoder::new(reader))
        } else {
            Body::Raw(reader)
        };
        Ok(Decoder {
            format,
            sequence: PageSequence::new(&header, page_size),
            header,
            page_size,
            body,
            file_hash,
            uncompressed_offset: HEADER_LEN as u64,
            snapshot_checksum: DatabaseChecksum::new(),
            frames_hash: Crc64::new(),
            pages_done: false,
            compressed: Vec::new(),
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The format being read.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The page size.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// Decodes the next page into `page` (exactly one page long). Returns `None` after the last
    /// page.
    pub fn next_page(&mut self, page: &mut [u8]) -> Result<Option<PageFrame>, LtxError> {
        if self.pages_done {
            return Ok(None);
        }
        if page.len() != self.page_size.bytes() {
            return Err(LtxError::BadEncoderInput(format!(
                "page buffer of {} bytes for page size {}",
                page.len(),
                self.page_size.get()
            )));
        }
        let frame = match self.format {
            Format::V1 => self.next_v1_page(page)?,
            Format::V3 => self.next_v3_page(page)?,
        };
        match frame {
            None => {
                self.pages_done = true;
                self.sequence.finish()?;
            }
            Some(frame) => {
                if self.header.is_snapshot() {
                    self.snapshot_checksum
                        .toggle(page_checksum(frame.pgno, page));
                }
            }
        }
        Ok(frame)
    }

    fn next_v1_page(&mut self, page: &mut [u8]) -> Result<Option<PageFrame>, LtxError> {
        let offset = self.uncompressed_offset;
        let mut pghdr = [0u8; 4];
        self.body.read_exact(&mut pghdr, Section::Pages)?;
        self.file_hash.update(&pghdr);
        self.uncompressed_offset += 4;
        let pgno = PageNo(u32::from_be_bytes(pghdr));
        if pgno.0 == 0 {
            return Ok(None);
        }
        self.sequence.push(pgno)?;
        self.body.read_exact(page, Section::Pages)?;
        self.file_hash.update(page);
        self.uncompressed_offset += page.len() as u64;
        Ok(Some(PageFrame {
            pgno,
            offset,
            size: 4 + page.len() as u64,
        }))
    }

    fn next_v3_page(&mut self, page: &mut [u8]) -> Result<Option<PageFrame>, LtxError> {
        let offset = self.body.raw().count;
        let mut pghdr = [0u8; 6];
        self.body.read_exact(&mut pghdr, Section::Pages)?;
        self.file_hash.update(&pghdr);
        let pgno = PageNo(be_u32(&pghdr, 0));
        let flags = u16::from_be_bytes([pghdr[4], pghdr[5]]);
        if pgno.0 == 0 {
            if flags != 0 {
                return Err(LtxError::BadPageFlags { pgno, flags });
            }
            return Ok(None);
        }
        if flags & !PAGE_FLAG_SIZE != 0 {
            return Err(LtxError::BadPageFlags { pgno, flags });
        }
        self.sequence.push(pgno)?;
        if flags & PAGE_FLAG_SIZE != 0 {
            self.read_v3_block(pgno, page)?;
        } else {
            self.read_v3_frame(pgno, page)?;
        }
        self.file_hash.update(page);
        let size = self.body.raw().count - offset;
        for value in [u64::from(pgno.0), offset, size] {
            self.frames_hash.update(&value.to_be_bytes());
        }
        Ok(Some(PageFrame { pgno, offset, size }))
    }

    /// A current-v3 page: a 4-byte compressed size and one LZ4 block.
    fn read_v3_block(&mut self, pgno: PageNo, page: &mut [u8]) -> Result<(), LtxError> {
        let mut size = [0u8; 4];
        self.body.read_exact(&mut size, Section::Pages)?;
        self.file_hash.update(&size);
        let csize = u32::from_be_bytes(size) as usize;
        let bound = lz4_flex::block::get_maximum_output_size(page.len());
        if csize == 0 || csize > bound {
            return Err(LtxError::BadCompressedPage {
                pgno,
                reason: format!("compressed size {csize} outside 1..={bound}"),
            });
        }
        self.compressed.resize(csize, 0);
        self.body.read_exact(&mut self.compressed, Section::Pages)?;
        let n = lz4_flex::block::decompress_into(&self.compressed, page).map_err(|e| {
            LtxError::BadCompressedPage {
                pgno,
                reason: e.to_string(),
            }
        })?;
        if n != page.len() {
            return Err(LtxError::BadCompressedPage {
                pgno,
                reason: format!("expands to {n} bytes, not one page"),
            });
        }
        Ok(())
    }

    /// An early-v3 page (ltx v0.5.0-v0.5.1): one LZ4 frame with no size prefix.
    fn read_v3_frame(&mut self, pgno: PageNo, page: &mut [u8]) -> Result<(), LtxError> {
        let bad = |e: io::Error| LtxError::BadCompressedPage {
            pgno,
            reason: e.to_string(),
        };
        let mut frame = FrameDecoder::new(self.body.raw());
        frame.read_exact(page).map_err(bad)?;
        let mut extra = [0u8; 1];
        if frame.read(&mut extra).map_err(bad)? != 0 {
            return Err(LtxError::BadCompressedPage {
                pgno,
                reason: "frame holds more than one page".into(),
            });
        }
        Ok(())
    }

    /// Reads the rest of the file and checks the end marker, the page index, the trailer, the
    /// file checksum, the absence of trailing bytes and, for snapshots, the post-apply checksum.
    pub fn finish(mut self) -> Result<Trailer, LtxError> {
        let mut scratch = vec![0u8; self.page_size.bytes()];
        while self.next_page(&mut scratch)?.is_some() {}
        if let Body::Lz4(frame) = &mut self.body {
            let mut extra = [0u8; 1];
            if frame
                .read(&mut extra)
                .map_err(|e| lz4_error(e, Section::Pages))?
                != 0
            {
                return Err(LtxError::BadLz4Frame(
                    "data continues after the end marker".into(),
                ));
            }
        }
        if self.format == Format::V3 {
            self.read_page_index()?;
        }
        let raw = self.body.raw();
        let mut bytes = [0u8; TRAILER_LEN];
        raw.read_exact(&mut bytes)
            .map_err(|e| LtxError::from_read(e, Section::Trailer))?;
        let trailer = Trailer::decode(&bytes);
        let mut extra = [0u8; 1];
        if read_retrying(raw, &mut extra)? != 0 {
            return Err(LtxError::TrailingData);
        }
        self.file_hash.update(&bytes[..8]);
        let computed = self.file_hash.checksum();
        if computed != trailer.file_checksum {
            return Err(LtxError::FileChecksumMismatch {
                stored: trailer.file_checksum,
                computed,
            });
        }
        trailer.validate_post_apply(&self.header)?;
        if self.header.is_snapshot() && !self.header.has_no_checksum() {
            let computed = self.snapshot_checksum.checksum();
            if computed != trailer.post_apply_checksum {
                return Err(LtxError::PostApplyChecksumMismatch {
                    stored: trailer.post_apply_checksum,
                    computed,
                });
            }
        }
        Ok(trailer)
    }

    /// Reads the v3 page index and its size, and checks that they describe the frames read.
    fn read_page_index(&mut self) -> Result<(), LtxError> {
        let raw = self.body.raw();
        let start = raw.count;
        let mut index_hash = Crc64::new();
        let mut entries = HashingReader {
            inner: raw,
            hash: &mut self.file_hash,
        };
        loop {
            let pgno = read_uvarint(&mut entries)?;
            if pgno == 0 {
                break;
            }
            let offset = read_uvarint(&mut entries)?;
            let size = read_uvarint(&mut entries)?;
            for value in [pgno, offset, size] {
                index_hash.update(&value.to_be_bytes());
            }
        }
        let index_len = raw_count(&entries) - start;
        let mut size = [0u8; 8];
        entries
            .read_exact(&mut size)
            .map_err(|e| LtxError::from_read(e, Section::PageIndex))?;
        if u64::from_be_bytes(size) != index_len {
            return Err(LtxError::BadPageIndex(format!(
                "size field says {} bytes, index has {index_len}",
                u64::from_be_bytes(size)
            )));
        }
        if index_hash.crc() != self.frames_hash.crc() {
            return Err(LtxError::BadPageIndex(
                "entries do not match the page frames".into(),
            ));
        }
        Ok(())
    }

    /// Decodes and checks the whole file, discarding the pages.
    pub fn verify(self) -> Result<Verified, LtxError> {
        let format = self.format;
        let header = self.header.clone();
        let mut page = vec![0u8; self.page_size.bytes()];
        let mut decoder = self;
        while decoder.next_page(&mut page)?.is_some() {}
        let page_count = decoder.sequence.count();
        let trailer = decoder.finish()?;
        Ok(Verified {
            format,
            header,
            trailer,
            page_count,
        })
    }
}

/// Hashes the index bytes into the file checksum as they are read.
struct HashingReader<'a, R> {
    inner: &'a mut Counted<R>,
    hash: &'a mut Crc64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn raw_count<R>(r: &HashingReader<'_, R>) -> u64 {
    r.inner.count
}

fn read_uvarint(r: &mut impl Read) -> Result<u64, LtxError> {
    leb128::read::unsigned(r).map_err(|e| match e {
        leb128::read::Error::IoError(e) => LtxError::from_read(e, Section::PageIndex),
        leb128::read::Error::Overflow => LtxError::BadPageIndex("varint overflows 64 bits".into()),
    })
}

fn read_retrying(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, LtxError> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return Ok(other?),
        }
    }
}
