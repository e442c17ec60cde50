//! Segment files: the log's on-disk unit. A segment is a run of records, each a 16-byte record
//! header followed by one complete LTX file. Appends go to the end of the last segment and are
//! fdatasynced before they are acknowledged; a torn tail fails its LTX file checksum.
//!
//! The active segment is extended ahead of its records with written zeros
//! ([`PREALLOCATION`] at a time), so that most appends overwrite blocks the file already has and
//! their fdatasync does not also commit a new file size and block allocation. Zeros are never a
//! record (a record header starts with a magic), so a scan of the last segment ends cleanly at a
//! zero tail ([`Tail::Preallocated`]). A sealed segment is cut to its records before the next one
//! is created, and a snapshot file is written whole, so zeros after their records are damage
//! ([`Tail::Exact`]).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::durable;
use crate::ltx::{Checksum, Decoder, Format, Header, TxId, Verified};

/// The size of a record header.
pub const RECORD_HEADER_LEN: u64 = 16;
/// How far the active segment is extended with zeros when an append reaches its end.
pub const PREALLOCATION: u64 = 1 << 20;
/// Zeros to write and compare against, a piece at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
const RECORD_MAGIC: &[u8; 4] = b"LTXR";

/// Where one record lives and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The first TXID of the segment holding the record (its file name).
    pub segment: TxId,
    /// Offset of the record header in the segment.
    pub offset: u64,
    /// Length of the LTX file that follows the record header.
    pub len: u64,
    /// The LTX format of the file.
    pub format: Format,
    /// First TXID covered.
    pub min_txid: TxId,
    /// Last TXID covered.
    pub max_txid: TxId,
    /// Database checksum before the record.
    pub pre_apply_checksum: Checksum,
    /// Database checksum after the record.
    pub post_apply_checksum: Checksum,
    /// The LTX file's own checksum: identifies the bytes on disk.
    pub file_checksum: Checksum,
    /// Header timestamp, in ms.
    pub timestamp: i64,
    /// Database size in pages after the record.
    pub commit: u32,
    /// Page size.
    pub page_size: u32,
}

impl Record {
    /// Where the LTX bytes start in the segment.
    pub fn data_offset(&self) -> u64 {
        self.offset + RECORD_HEADER_LEN
    }

    /// Where the next record starts.
    pub fn end(&self) -> u64 {
        self.data_offset() + self.len
    }

    /// True for a snapshot record (TXID 1 onward).
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == TxId(1)
    }

    pub(crate) fn from_verified(segment: TxId, offset: u64, len: u64, v: &Verified) -> Record {
        let h: &Header = &v.header;
        Record {
            segment,
            offset,
            len,
            format: v.format,
            min_txid: h.min_txid,
            max_txid: h.max_txid,
            pre_apply_checksum: h.pre_apply_checksum,
            post_apply_checksum: v.trailer.post_apply_checksum,
            file_checksum: v.trailer.file_checksum,
            timestamp: h.timestamp,
            commit: h.commit,
            page_size: h.page_size,
        }
    }
}

/// Encodes a record header.
pub fn encode_record_header(format: Format, len: u64) -> [u8; RECORD_HEADER_LEN as usize] {
    let mut b = [0u8; RECORD_HEADER_LEN as usize];
    b[0..4].copy_from_slice(RECORD_MAGIC);
    b[4] = format.version() as u8;
    b[8..16].copy_from_slice(&len.to_be_bytes());
    b
}

/// Writes one record at the current end of `file`: a record header, then the LTX file that
/// `fill` streams out. The header's length is filled in once the LTX file is complete.
pub fn write_record<T, E: From<io::Error>>(
    file: &mut File,
    format: Format,
    fill: impl FnOnce(&mut dyn io::Write) -> Result<T, E>,
) -> Result<T, E> {
    let start = file.seek(SeekFrom::End(0))?;
    file.write_all_at(&[0u8; RECORD_HEADER_LEN as usize], start)?;
    file.seek(SeekFrom::Start(start + RECORD_HEADER_LEN))?;
    let mut writer = io::BufWriter::with_capacity(256 * 1024, &mut *file);
    let value = fill(&mut writer)?;
    io::Write::flush(&mut writer)?;
    drop(writer);
    let end = file.seek(SeekFrom::End(0))?;
    file.write_all_at(
        &encode_record_header(format, end - start - RECORD_HEADER_LEN),
        start,
    )?;
    Ok(value)
}

/// Copies one stored record (header and LTX bytes) from `from` to the end of `to`.
pub fn copy_record(from: &Path, record: &Record, to: &mut File) -> io::Result<()> {
    let mut source = File::open(from)?;
    source.seek(SeekFrom::Start(record.offset))?;
    to.seek(SeekFrom::End(0))?;
    io::copy(&mut source.take(RECORD_HEADER_LEN + record.len), to)?;
    Ok(())
}

/// A record header that is not one: bad magic, unknown format, or reserved bits set.
#[derive(Debug, thiserror::Error)]
#[error("bad record header at offset {offset}")]
pub struct BadRecordHeader {
    /// Where it was found.
    pub offset: u64,
}

fn decode_record_header(
    b: &[u8; RECORD_HEADER_LEN as usize],
    offset: u64,
) -> Result<(Format, u64), BadRecordHeader> {
    let format = match b[4] {
        1 => Format::V1,
        3 => Format::V3,
        _ => return Err(BadRecordHeader { offset }),
    };
    if &b[0..4] != RECORD_MAGIC || b[5..8] != [0, 0, 0] {
        return Err(BadRecordHeader { offset });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&b[8..16]);
    Ok((format, u64::from_be_bytes(len)))
}

/// True when the bytes at the record's place in `file` are that record: its record header, and
/// the LTX trailer with its post-apply and file checksums. Two small reads; the file checksum
/// identifies the LTX bytes, so an index entry from another version of the file is caught.
pub fn record_matches(file: &File, record: &Record) -> io::Result<bool> {
    let mut hdr = [0u8; RECORD_HEADER_LEN as usize];
    let mut trailer = [0u8; 16];
    if record.len < 16 || file.read_exact_at(&mut hdr, record.offset).is_err() {
        return Ok(false);
    }
    if file.read_exact_at(&mut trailer, record.end() - 16).is_err() {
        return Ok(false);
    }
    let header_ok = decode_record_header(&hdr, record.offset)
        .is_ok_and(|(f, l)| f == record.format && l == record.len);
    Ok(header_ok
        && trailer[..8] == record.post_apply_checksum.0.to_be_bytes()
        && trailer[8..] == record.file_checksum.0.to_be_bytes())
}

/// The result of scanning a segment from some offset.
#[derive(Debug)]
pub struct Scan {
    /// The valid records found, in order.
    pub records: Vec<Record>,
    /// Where the valid records end.
    pub valid_len: u64,
    /// Why scanning stopped before the end of the file, if it did.
    pub stop: Option<String>,
}

/// How a scan treats zeros after the last record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// The file ends at its last record (a sealed segment, a snapshot): zeros are a bad record.
    Exact,
    /// The file may end in zeros (the last segment, which appends extend ahead of its records):
    /// an all-zero tail is the clean end.
    Preallocated,
}

/// Reads and verifies every record from `offset` to the end of the segment file. Scanning stops
/// at the first record that is incomplete or does not verify; what follows is the torn tail.
/// With [`Tail::Preallocated`], scanning also stops, cleanly, where only zeros follow.
pub fn scan(path: &Path, segment: TxId, offset: u64, tail: Tail) -> io::Result<Scan> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut records = Vec::new();
    let mut at = offset;
    let stop = loop {
        if at == file_len {
            break None;
        }
        let mut hdr = [0u8; RECORD_HEADER_LEN as usize];
        let got = (file_len - at).min(RECORD_HEADER_LEN);
        file.read_exact_at(&mut hdr[..got as usize], at)?;
        let zeros = hdr == [0; RECORD_HEADER_LEN as usize];
        if tail == Tail::Preallocated && zeros && is_zero(&file, at + got, file_len)? {
            break None;
        }
        if got < RECORD_HEADER_LEN {
            break Some(format!("partial record header at offset {at}"));
        }
        let (format, len) = match decode_record_header(&hdr, at) {
            Ok(x) => x,
            Err(e) => break Some(e.to_string()),
        };
        if len > file_len - at - RECORD_HEADER_LEN {
            break Some(format!(
                "record at offset {at} runs past the end of the file"
            ));
        }
        file.seek(SeekFrom::Start(at + RECORD_HEADER_LEN))?;
        let reader = BufReader::with_capacity(256 * 1024, (&mut file).take(len));
        let verified = Decoder::new(reader, format).and_then(|d| d.verify());
        match verified {
            Ok(v) => {
                records.push(Record::from_verified(segment, at, len, &v));
                at += RECORD_HEADER_LEN + len;
            }
            Err(e) => break Some(format!("record at offset {at}: {e}")),
        }
    };
    Ok(Scan {
        records,
        valid_len: at,
        stop,
    })
}

/// True when the bytes of `file` from `from` to `to` are all zeros.
fn is_zero(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = [0u8; ZEROS.len()];
    let mut at = from;
    while at < to {
        let n = (to - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n] != ZEROS[..n] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// The offset of the first valid record that starts after `from`, if any. A crash tears at most
/// the one append in flight, so a valid record after a bad one means damage, not a torn tail.
pub fn valid_record_after(path: &Path, segment: TxId, from: u64) -> io::Result<Option<u64>> {
    let mut file = File::open(path)?;
    let mut rest = Vec::new();
    file.seek(SeekFrom::Start(from + 1))?;
    file.read_to_end(&mut rest)?;
    let starts = rest
        .windows(RECORD_MAGIC.len())
        .enumerate()
        .filter(|(_, w)| w == RECORD_MAGIC);
    for (i, _) in starts {
        let at = from + 1 + i as u64;
        if !scan_one(path, segment, at)?.records.is_empty() {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

fn scan_one(path: &Path, segment: TxId, at: u64) -> io::Result<Scan> {
    let mut scanned = scan(path, segment, at, Tail::Preallocated)?;
    scanned.records.truncate(1);
    Ok(scanned)
}

/// The open segment that appends go to. Dropping it cuts its preallocated zeros (without a
/// sync: either length reads back the same records).
pub struct ActiveSegment {
    /// The segment's first TXID.
    pub id: TxId,
    /// When this process opened or created it.
    pub opened: std::time::Instant,
    file: File,
    len: u64,
    /// The file's length: `len` plus the preallocated zeros.
    allocated: u64,
}

impl ActiveSegment {
    /// Opens the last segment for appending at `valid_len`, its records' end. What follows is
    /// kept if it is all zeros (preallocated), and otherwise cut as a torn tail. Either way the
    /// segment is synced: a process that crashed may have written records it never synced, and
    /// recovery has just accepted them.
    pub fn open(path: PathBuf, id: TxId, valid_len: u64) -> io::Result<ActiveSegment> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut allocated = file.metadata()?.len();
        if allocated != valid_len && !is_zero(&file, valid_len, allocated)? {
            durable::truncate(&file, valid_len)?;
            allocated = valid_len;
        } else {
            durable::sync_data(&file)?;
        }
        Ok(ActiveSegment {
            id,
            opened: std::time::Instant::now(),
            file,
            len: valid_len,
            allocated,
        })
    }

    /// Creates the new, empty segment `path` named by `id`, and makes its directory entry
    /// durable.
    pub fn create(path: PathBuf, id: TxId) -> io::Result<ActiveSegment> {
        let file = durable::create_new(&path)?;
        Ok(ActiveSegment {
            id,
            opened: std::time::Instant::now(),
            file,
            len: 0,
            allocated: 0,
        })
    }

    /// The segment's length: where the next record goes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Writes `bytes` at the end of the segment without syncing. Returns where they start.
    pub fn write_at_end(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let at = self.len;
        let end = at + bytes.len() as u64;
        if end > self.allocated {
            // Zeros up to the next multiple of PREALLOCATION past the end; the bytes then
            // overwrite their share. The next sync commits the new size, once for many appends.
            let target = end.div_ceil(PREALLOCATION) * PREALLOCATION;
            let mut zeroed = self.allocated;
            while zeroed < target {
                let n = (target - zeroed).min(ZEROS.len() as u64) as usize;
                self.file.write_all_at(&ZEROS[..n], zeroed)?;
                zeroed += n as u64;
            }
            self.allocated = target;
        }
        self.file.write_all_at(bytes, at)?;
        self.len = end;
        Ok(at)
    }

    /// Makes everything written durable (fdatasync: the data and the file size).
    pub fn sync(&self) -> io::Result<()> {
        durable::sync_data(&self.file)
    }

    /// Cuts the preallocated zeros and makes the segment durable: it is complete, and appends go
    /// to a new one once it is dropped. On failure it stays the active segment, to be sealed
    /// again: a segment that is not the last must not end in zeros.
    pub fn seal(&mut self) -> io::Result<()> {
        self.truncate(self.len)?;
        self.sync()
    }

    /// Cuts the segment back to `len`, undoing writes that were not acknowledged.
    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        self.allocated = len;
        Ok(())
    }
}

impl Drop for ActiveSegment {
    fn drop(&mut self) {
        if self.allocated > self.len {
            let _ = self.file.set_len(self.len);
        }
    }
}
