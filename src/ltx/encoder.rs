//! The streaming LTX encoder for both formats.

use std::io::Write;

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

use super::checksum::{page_checksum, Crc64, DatabaseChecksum};
use super::error::LtxError;
use super::format::{Format, PAGE_FLAG_SIZE};
use super::header::{Header, Trailer};
use super::page::{PageNo, PageSize};
use super::sequence::PageSequence;
use ltxd_protocol::Checksum;

/// Where the body goes: straight to the writer, or through a v1 LZ4 frame.
enum Body<W: Write> {
    Raw(W),
    Lz4(FrameEncoder<W>),
}

impl<W: Write> Body<W> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Body::Raw(w) => w.write_all(bytes),
            Body::Lz4(w) => w.write_all(bytes),
        }
    }

    fn into_raw(self) -> Result<W, LtxError> {
        match self {
            Body::Raw(w) => Ok(w),
            Body::Lz4(w) => w.finish().map_err(|e| LtxError::BadLz4Frame(e.to_string())),
        }
    }
}

/// Writes one LTX file page by page. Memory stays bounded: v1 holds nothing per page, and v3
/// holds only its page index (about 10 bytes a page) until [`Encoder::finish`].
///
/// The encoder enforces every rule a decoder checks, so it never writes an invalid file. For a
/// snapshot it computes the database checksum of the pages and refuses a post-apply checksum
/// that differs.
pub struct Encoder<W: Write> {
    format: Format,
    header: Header,
    page_size: PageSize,
    body: Body<W>,
    file_hash: Crc64,
    offset: u64,
    sequence: PageSequence,
    snapshot_checksum: DatabaseChecksum,
    index: Vec<u8>,
    compressed: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    /// Validates the header for `format` and writes it. A v1 header with flag 0x1 makes the
    /// body an LZ4 frame.
    pub fn new(mut writer: W, format: Format, header: Header) -> Result<Encoder<W>, LtxError> {
        header.validate(format)?;
        let page_size = header.page_size()?;
        let bytes = header.encode();
        writer.write_all(&bytes)?;
        let mut file_hash = Crc64::new();
        file_hash.update(&bytes);
        let body = if format == Format::V1 && header.is_compressed() {
            let mut info = FrameInfo::new();
            info.block_size = BlockSize::Max64KB;
            info.block_mode = BlockMode::Independent;
            info.content_checksum = true;
            Body::Lz4(FrameEncoder::with_frame_info(info, writer))
        } else {
            Body::Raw(writer)
        };
        let compressed = match format {
            Format::V1 => Vec::new(),
            Format::V3 => vec![0; lz4_flex::block::get_maximum_output_size(page_size.bytes())],
        };
        Ok(Encoder {
            format,
            sequence: PageSequence::new(&header, page_size),
            header,
            page_size,
            body,
            file_hash,
            offset: bytes.len() as u64,
            snapshot_checksum: DatabaseChecksum::new(),
            index: Vec::new(),
            compressed,
        })
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Appends a page. Pages must come in ascending order, each exactly one page long.
    pub fn encode_page(&mut self, pgno: PageNo, data: &[u8]) -> Result<(), LtxError> {
        if pgno.0 == 0 {
            return Err(LtxError::BadEncoderInput("page number 0".into()));
        }
        if data.len() != self.page_size.bytes() {
            return Err(LtxError::BadPageLength {
                pgno,
                len: data.len(),
                expected: self.page_size.bytes(),
            });
        }
        self.sequence.push(pgno)?;
        if self.header.is_snapshot() {
            self.snapshot_checksum.toggle(page_checksum(pgno, data));
        }
        match self.format {
            Format::V1 => {
                let pghdr = pgno.0.to_be_bytes();
                self.write_hashed(&pghdr)?;
                self.write_hashed(data)?;
            }
            Format::V3 => self.encode_v3_page(pgno, data)?,
        }
        Ok(())
    }

    fn encode_v3_page(&mut self, pgno: PageNo, data: &[u8]) -> Result<(), LtxError> {
        let frame_offset = self.offset;
        let csize = lz4_flex::block::compress_into(data, &mut self.compressed)
            .map_err(|e| LtxError::BadEncoderInput(format!("lz4: {e}")))?;
        let mut prefix = [0u8; 10];
        prefix[0..4].copy_from_slice(&pgno.0.to_be_bytes());
        prefix[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        prefix[6..10].copy_from_slice(&(csize as u32).to_be_bytes());
        self.body.write_all(&prefix)?;
        self.body.write_all(&self.compressed[..csize])?;
        self.file_hash.update(&prefix);
        self.file_hash.update(data);
        self.offset += (prefix.len() + csize) as u64;
        for value in [
            u64::from(pgno.0),
            frame_offset,
            (prefix.len() + csize) as u64,
        ] {
            leb128::write::unsigned(&mut self.index, value)?;
        }
        Ok(())
    }

    fn write_hashed(&mut self, bytes: &[u8]) -> Result<(), LtxError> {
        self.body.write_all(bytes)?;
        self.file_hash.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Writes the end marker, the v3 page index and the trailer, and returns the writer.
    ///
    /// For a snapshot, `post_apply_checksum` must equal the checksum of the pages written.
    pub fn finish(mut self, post_apply_checksum: Checksum) -> Result<(W, Trailer), LtxError> {
        self.sequence.finish()?;
        let partial = Trailer {
            post_apply_checksum,
            file_checksum: Checksum::ZERO,
        };
        partial.validate_post_apply(&self.header)?;
        if self.header.is_snapshot() && !self.header.has_no_checksum() {
            let computed = self.snapshot_checksum.checksum();
            if computed != post_apply_checksum {
                return Err(LtxError::PostApplyChecksumMismatch {
                    stored: post_apply_checksum,
                    computed,
                });
            }
        }
        let end_marker = vec![0u8; self.format.page_header_len()];
        self.write_hashed(&end_marker)?;
        if self.format == Format::V3 {
            self.index.push(0);
            let index = std::mem::take(&mut self.index);
            self.write_hashed(&index)?;
            self.write_hashed(&(index.len() as u64).to_be_bytes())?;
        }
        let post = post_apply_checksum.0.to_be_bytes();
        self.file_hash.update(&post);
        let mut writer = self.body.into_raw()?;
        let trailer = Trailer {
            post_apply_checksum,
            file_checksum: self.file_hash.checksum(),
        };
        writer.write_all(&trailer.encode())?;
        Ok((writer, trailer))
    }

    /// Finishes a snapshot with the database checksum of the pages written as its post-apply
    /// checksum, and returns the writer and trailer.
    pub fn finish_snapshot(self) -> Result<(W, Trailer), LtxError> {
        if !self.header.is_snapshot() {
            return Err(LtxError::BadEncoderInput(
                "finish_snapshot on an incremental file".into(),
            ));
        }
        let checksum = if self.header.has_no_checksum() {
            Checksum::ZERO
        } else {
            self.snapshot_checksum.checksum()
        };
        self.finish(checksum)
    }

    /// How many pages have been written.
    pub fn page_count(&self) -> u32 {
        self.sequence.count()
    }
}
