//! Telling v1 from v3. The two formats share their magic and header, so the format is read from
//! the file's layout, and the file checksum decides whenever the layout fits both or neither.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::decoder::{Decoder, Verified};
use super::error::{LtxError, Section};
use super::format::Format;
use super::header::{be_u64, Header, HEADER_LEN, TRAILER_LEN};

/// Which formats a file's layout allows.
fn layout_candidates<R: Read + Seek>(r: &mut R) -> Result<(bool, bool), LtxError> {
    let len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let header = Header::read_from(r)?;
    if header.is_compressed() {
        return Ok((true, false));
    }
    let page_size = u64::from(header.page_size()?.get());
    let tail_len = len.min(64);
    r.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    r.read_exact(&mut tail)?;
    let at_end = |back: u64| (tail_len >= back).then(|| (tail_len - back) as usize);

    // v1: 100-byte header, whole 4+page_size frames, a 4-byte zero end marker, the trailer.
    let v1_body = len.checked_sub((HEADER_LEN + 4 + TRAILER_LEN) as u64);
    let v1 = v1_body.is_some_and(|body| body % (4 + page_size) == 0)
        && at_end(20).is_some_and(|i| tail[i..i + 4] == [0; 4]);

    // v3: ... 6-byte zero end marker, index ending in a 0 terminator, u64 index size, trailer.
    let v3 = at_end(24).is_some_and(|i| {
        let index_len = be_u64(&tail, i);
        let fixed = (HEADER_LEN + 6 + 8 + TRAILER_LEN) as u64;
        index_len >= 1 && index_len.checked_add(fixed).is_some_and(|n| n <= len) && tail[i - 1] == 0
    });
    Ok((v1, v3))
}

/// Determines the format of a seekable LTX file, and leaves the reader at its start.
///
/// When the layout fits exactly one format, that format is returned; decoding then reports
/// any fault precisely. When it fits both or neither, the file is decoded in full both ways: a
/// single format that verifies wins, none gives [`LtxError::UnknownFormat`] with both reasons,
/// and both (practically impossible) gives [`LtxError::AmbiguousFormat`].
pub fn detect_format<R: Read + Seek>(r: &mut R) -> Result<Format, LtxError> {
    let candidates = layout_candidates(r);
    r.seek(SeekFrom::Start(0))?;
    let chosen = match candidates {
        Ok((true, false)) => Some(Format::V1),
        Ok((false, true)) => Some(Format::V3),
        Ok(_) => None,
        Err(LtxError::Io(e)) => return Err(LtxError::Io(e)),
        Err(LtxError::Truncated(_)) => return Err(LtxError::Truncated(Section::Header)),
        Err(e @ (LtxError::BadMagic(_) | LtxError::BadPageSize(_))) => return Err(e),
        Err(_) => None,
    };
    if let Some(format) = chosen {
        return Ok(format);
    }
    let v1 = verify_as(r, Format::V1);
    let v3 = verify_as(r, Format::V3);
    r.seek(SeekFrom::Start(0))?;
    match (v1, v3) {
        (Ok(_), Ok(_)) => Err(LtxError::AmbiguousFormat),
        (Ok(_), Err(_)) => Ok(Format::V1),
        (Err(_), Ok(_)) => Ok(Format::V3),
        (Err(v1), Err(v3)) => Err(LtxError::UnknownFormat {
            v1: Box::new(v1),
            v3: Box::new(v3),
        }),
    }
}

fn verify_as<R: Read + Seek>(r: &mut R, format: Format) -> Result<Verified, LtxError> {
    r.seek(SeekFrom::Start(0))?;
    Decoder::new(BufReader::new(&mut *r), format)?.verify()
}

/// Opens an LTX file, detecting its format unless `format` names it.
pub fn open_file(
    path: &Path,
    format: Option<Format>,
) -> Result<Decoder<BufReader<File>>, LtxError> {
    let mut file = File::open(path)?;
    let format = match format {
        Some(f) => f,
        None => detect_format(&mut file)?,
    };
    Decoder::new(BufReader::with_capacity(256 * 1024, file), format)
}

/// Reads a whole file and verifies it, detecting its format unless `format` names it.
pub fn verify_file(path: &Path, format: Option<Format>) -> Result<Verified, LtxError> {
    open_file(path, format)?.verify()
}
