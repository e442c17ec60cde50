//! Compacting a run of consecutive LTX files into one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{DatabaseError, LtxSource};
use crate::durable;
use crate::ltx::{Decoder, Encoder, Format, Header, PageNo, Trailer, FLAG_COMPRESS_LZ4};

/// One input of a compaction, positioned at its next page.
struct Input<R: Read> {
    path: PathBuf,
    decoder: Decoder<R>,
    current: Option<PageNo>,
    page: Vec<u8>,
}

impl<R: Read> Input<R> {
    fn advance(&mut self) -> Result<(), DatabaseError> {
        let frame = self
            .decoder
            .next_page(&mut self.page)
            .map_err(DatabaseError::ltx(&self.path))?;
        self.current = frame.map(|f| f.pgno);
        Ok(())
    }
}

/// Merges consecutive LTX files into one file covering their whole TXID range.
///
/// The last write of each page wins. Pages beyond the final commit size are dropped, and a page
/// that a later file truncated away and no later file wrote again is written as zeros, so that
/// applying the result equals applying the inputs in turn. Inputs must have consecutive TXIDs
/// and one page size, and each input's pre-apply checksum must equal the previous input's
/// post-apply checksum. The result is a snapshot when the first input is one; its pages are then
/// checksummed and must reproduce the last post-apply checksum.
pub fn compact<R: Read, W: Write>(
    inputs: Vec<(PathBuf, Decoder<R>)>,
    out: W,
    format: Format,
    flags: u32,
) -> Result<(W, Trailer), DatabaseError> {
    let headers: Vec<Header> = inputs.iter().map(|(_, d)| d.header().clone()).collect();
    let (first, last) = match (headers.first(), headers.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(DatabaseError::NoInput),
    };
    check_inputs(&inputs, &headers)?;
    let page_size = inputs[0].1.page_size();
    let mut header = Header::new(page_size, last.commit, first.min_txid, last.max_txid);
    header.flags = flags;
    header.timestamp = last.timestamp;
    header.pre_apply_checksum = first.pre_apply_checksum;
    let out_path = PathBuf::from("(compaction output)");
    let mut encoder = Encoder::new(out, format, header).map_err(DatabaseError::ltx(&out_path))?;

    let mut inputs: Vec<Input<R>> = inputs
        .into_iter()
        .map(|(path, decoder)| Input {
            path,
            decoder,
            current: None,
            page: vec![0u8; page_size.bytes()],
        })
        .collect();
    for input in &mut inputs {
        input.advance()?;
    }
    let commits: Vec<u32> = headers.iter().map(|h| h.commit).collect();
    let final_commit = last.commit;
    let zeros = vec![0u8; page_size.bytes()];
    // Pages above the smallest commit may have been truncated away and must be checked.
    let mut next_truncated = commits.iter().min().copied().unwrap_or(0).saturating_add(1);
    loop {
        let written = inputs.iter().filter_map(|i| i.current).min();
        let truncated = (next_truncated <= final_commit).then_some(PageNo(next_truncated));
        let Some(pgno) = [written, truncated].into_iter().flatten().min() else {
            break;
        };
        if pgno.0 >= next_truncated {
            next_truncated = pgno.0 + 1;
        }
        let writer = inputs.iter().rposition(|i| i.current == Some(pgno));
        if pgno.0 <= final_commit && pgno != page_size.lock_page() {
            let barrier = commits.iter().rposition(|&c| c < pgno.0);
            let data = match (writer, barrier) {
                (Some(w), Some(b)) if w > b => Some(&inputs[w].page[..]),
                (Some(w), None) => Some(&inputs[w].page[..]),
                (_, Some(_)) => Some(&zeros[..]),
                (None, None) => None,
            };
            if let Some(data) = data {
                encoder
                    .encode_page(pgno, data)
                    .map_err(DatabaseError::ltx(&out_path))?;
            }
        }
        for input in inputs.iter_mut().filter(|i| i.current == Some(pgno)) {
            input.advance()?;
        }
    }

    let mut prev: Option<(PathBuf, Trailer)> = None;
    for (input, header) in inputs.into_iter().zip(&headers) {
        let trailer = input
            .decoder
            .finish()
            .map_err(DatabaseError::ltx(&input.path))?;
        if let Some((_, prev_trailer)) = &prev {
            if prev_trailer.post_apply_checksum != header.pre_apply_checksum {
                return Err(DatabaseError::BrokenChain {
                    path: input.path,
                    reason: format!(
                        "pre-apply checksum {} differs from the previous post-apply checksum {}",
                        header.pre_apply_checksum, prev_trailer.post_apply_checksum
                    ),
                });
            }
        }
        prev = Some((input.path, trailer));
    }
    let post = prev.map(|(_, t)| t.post_apply_checksum).unwrap_or_default();
    encoder.finish(post).map_err(DatabaseError::ltx(&out_path))
}

fn check_inputs<R: Read>(
    inputs: &[(PathBuf, Decoder<R>)],
    headers: &[Header],
) -> Result<(), DatabaseError> {
    let page_size = headers[0].page_size;
    for (i, ((path, _), header)) in inputs.iter().zip(headers).enumerate() {
        if header.has_no_checksum() {
            return Err(DatabaseError::Unchecked(path.clone()));
        }
        if header.page_size != page_size {
            return Err(DatabaseError::PageSizeMismatch {
                path: path.clone(),
                expected: page_size,
                found: header.page_size,
            });
        }
        if let Some(prev) = i.checked_sub(1).map(|j| &headers[j]) {
            if prev.max_txid.next() != Some(header.min_txid) {
                return Err(DatabaseError::chain(path, prev.max_txid, header.min_txid));
            }
        }
    }
    Ok(())
}

/// The most inputs one merge opens at once; longer runs are merged in rounds through temporary
/// files, so compaction never runs out of file descriptors.
pub const MAX_FAN_IN: usize = 64;

/// Compacts `sources` into `out` (see [`compact`]), opening at most [`MAX_FAN_IN`] of them at
/// a time; intermediate merges go to temporary files in `scratch_dir`.
pub fn compact_sources(
    sources: &[LtxSource],
    out: &mut dyn Write,
    format: Format,
    flags: u32,
    scratch_dir: &Path,
) -> Result<Trailer, DatabaseError> {
    let mut sources = sources.to_vec();
    let mut scratch = Vec::new();
    while sources.len() > MAX_FAN_IN {
        let mut merged = Vec::with_capacity(sources.len() / MAX_FAN_IN + 1);
        for run in sources.chunks(MAX_FAN_IN) {
            let temp = tempfile::NamedTempFile::new_in(scratch_dir)?;
            compact(
                open_all(run)?,
                std::io::BufWriter::new(temp.as_file()),
                format,
                0,
            )?;
            let len = temp.as_file().metadata()?.len();
            merged.push(LtxSource::range(temp.path(), 0, len, format));
            scratch.push(temp);
        }
        sources = merged;
    }
    let (_, trailer) = compact(open_all(&sources)?, out, format, flags)?;
    drop(scratch);
    Ok(trailer)
}

fn open_all(
    sources: &[LtxSource],
) -> Result<Vec<(PathBuf, crate::database::SourceDecoder)>, DatabaseError> {
    sources
        .iter()
        .map(|source| {
            let label = source.label();
            let decoder = source.open().map_err(DatabaseError::ltx(&label))?;
            Ok((label, decoder))
        })
        .collect()
}

/// Compacts the LTX files `sources` into `out`, written atomically. The output format is
/// `format`, or the first input's; `compress` wraps a v1 body in an LZ4 frame.
pub fn compact_files(
    sources: &[LtxSource],
    out: &Path,
    format: Option<Format>,
    compress: bool,
) -> Result<Trailer, DatabaseError> {
    let first = sources.first().ok_or(DatabaseError::NoInput)?;
    let format = match format {
        Some(f) => f,
        None => first
            .open()
            .map_err(DatabaseError::ltx(first.label()))?
            .format(),
    };
    if compress && format == Format::V3 {
        return Err(DatabaseError::CompressV3);
    }
    let flags = if compress { FLAG_COMPRESS_LZ4 } else { 0 };
    let scratch_dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    durable::write_atomically(out, |w| {
        compact_sources(sources, w, format, flags, scratch_dir)
    })
}
