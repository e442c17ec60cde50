//! SQLite's write-ahead log: the 32-byte header, 24-byte frame headers, and SQLite's running
//! checksum, enough to read the committed transactions out of a `-wal` file.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The size of the WAL header.
pub const WAL_HEADER_LEN: u64 = 32;
/// The size of a frame header.
pub const FRAME_HEADER_LEN: u64 = 24;

/// The fields of a WAL header that frames must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    /// True when checksums read words big-endian (magic 0x377f0683).
    pub big_endian: bool,
    /// The database page size.
    pub page_size: u32,
    /// Salt-1, copied into every frame.
    pub salt1: u32,
    /// Salt-2, copied into every frame.
    pub salt2: u32,
    /// The running checksum after the header, where frame checksums start.
    pub checksum: (u32, u32),
}

impl WalHeader {
    /// Parses and checks a WAL header; `None` if it is not a valid one.
    pub fn parse(b: &[u8]) -> Option<WalHeader> {
        let b: &[u8; 32] = b.get(..32)?.try_into().ok()?;
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let big_endian = match word(0) {
            0x377f_0682 => false,
            0x377f_0683 => true,
            _ => return None,
        };
        let page_size = match word(8) {
            1 => 65536,
            n if n.is_power_of_two() && (512..=32768).contains(&n) => n,
            _ => return None,
        };
        let checksum = wal_checksum(big_endian, (0, 0), &b[..24]);
        if checksum != (word(24), word(28)) {
            return None;
        }
        Some(WalHeader {
            big_endian,
            page_size,
            salt1: word(16),
            salt2: word(20),
            checksum,
        })
    }

    /// The size of one frame: header and page.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN + u64::from(self.page_size)
    }
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing from `start`.
pub fn wal_checksum(big_endian: bool, start: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = start;
    for chunk in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (
                u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            )
        } else {
            (
                u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            )
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

/// One committed transaction read from the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalTransaction {
    /// Where its first frame starts.
    pub offset: u64,
    /// Bytes of frames it spans.
    pub size: u64,
    /// The database size in pages after it.
    pub commit: u32,
    /// The last version of each page it wrote, in page order.
    pub pages: Vec<(u32, Vec<u8>)>,
    /// The running checksum after its commit frame.
    pub checksum: (u32, u32),
}

/// Reads the committed transactions that start at `offset`, whose running checksum there is
/// `checksum`, stopping at the first frame that is incomplete, carries other salts, fails its
/// checksum, or belongs to a transaction without a commit frame yet.
pub fn read_transactions(
    wal: &File,
    header: &WalHeader,
    mut offset: u64,
    mut checksum: (u32, u32),
) -> std::io::Result<Vec<WalTransaction>> {
    let len = wal.metadata()?.len();
    let frame_len = header.frame_len();
    let mut frame = vec![0u8; frame_len as usize];
    let mut transactions = Vec::new();
    let mut pending: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
    let mut tx_start = offset;
    while offset + frame_len <= len {
        wal.read_exact_at(&mut frame, offset)?;
        let word = |at: usize| {
            u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]])
        };
        let (pgno, commit) = (word(0), word(4));
        if pgno == 0 || word(8) != header.salt1 || word(12) != header.salt2 {
            break;
        }
        let sum = wal_checksum(header.big_endian, checksum, &frame[..8]);
        let sum = wal_checksum(header.big_endian, sum, &frame[FRAME_HEADER_LEN as usize..]);
        if sum != (word(16), word(20)) {
            break;
        }
        checksum = sum;
        offset += frame_len;
        pending.insert(pgno, frame[FRAME_HEADER_LEN as usize..].to_vec());
        if commit != 0 {
            transactions.push(WalTransaction {
                offset: tx_start,
                size: offset - tx_start,
                commit,
                pages: std::mem::take(&mut pending).into_iter().collect(),
                checksum,
            });
            tx_start = offset;
        }
    }
    Ok(transactions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a WAL the way SQLite lays it out, for the parser to read back.
    fn wal(big_endian: bool, frames: &[(u32, u32, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        let magic: u32 = if big_endian { 0x377f_0683 } else { 0x377f_0682 };
        for w in [magic, 3_007_000, 512, 0, 11, 22] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        let sum = wal_checksum(big_endian, (0, 0), &out);
        out.extend_from_slice(&sum.0.to_be_bytes());
        out.extend_from_slice(&sum.1.to_be_bytes());
        let mut running = sum;
        for &(pgno, commit, fill) in frames {
            let mut hdr = Vec::new();
            for w in [pgno, commit, 11, 22] {
                hdr.extend_from_slice(&w.to_be_bytes());
            }
            let page = vec![fill; 512];
            running = wal_checksum(big_endian, running, &hdr[..8]);
            running = wal_checksum(big_endian, running, &page);
            hdr.extend_from_slice(&running.0.to_be_bytes());
            hdr.extend_from_slice(&running.1.to_be_bytes());
            out.extend_from_slice(&hdr);
            out.extend_from_slice(&page);
        }
        out
    }

    #[test]
    fn reads_committed_transactions_and_stops_at_an_uncommitted_tail() {
        for big_endian in [false, true] {
            let bytes = wal(
                big_endian,
                &[
                    (1, 0, 1),
                    (2, 0, 2),
                    (1, 3, 3),
                    (3, 0, 4),
                    (2, 4, 5),
                    (4, 0, 6),
                ],
            );
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("wal");
            std::fs::write(&path, &bytes).unwrap();
            let header = WalHeader::parse(&bytes).unwrap();
            let file = File::open(&path).unwrap();
            let txs = read_transactions(&file, &header, WAL_HEADER_LEN, header.checksum).unwrap();
            assert_eq!(txs.len(), 2);
            assert_eq!(txs[0].commit, 3);
            assert_eq!(
                txs[0]
                    .pages
                    .iter()
                    .map(|p| (p.0, p.1[0]))
                    .collect::<Vec<_>>(),
                [(1, 3), (2, 2)]
            );
            assert_eq!(txs[1].offset, WAL_HEADER_LEN + 3 * header.frame_len());
            assert_eq!(
                txs[1]
                    .pages
                    .iter()
                    .map(|p| (p.0, p.1[0]))
                    .collect::<Vec<_>>(),
                [(2, 5), (3, 4)]
            );
            let rest =
                read_transactions(&file, &header, txs[1].offset + txs[1].size, txs[1].checksum)
                    .unwrap();
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn a_bad_header_checksum_is_not_a_header() {
        let mut bytes = wal(false, &[]);
        bytes[20] ^= 1;
        assert!(WalHeader::parse(&bytes).is_none());
    }
}
