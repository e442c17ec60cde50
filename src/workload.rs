//! A synthetic database that emits consecutive LTX transactions, for tests, benchmarks and the
//! crash-test writer. Its pages form a valid-looking SQLite file (page 1 carries the header), so
//! the LTX it emits can be applied and restored like a real database's.

use crate::ltx::{
    page_checksum, Checksum, DatabaseChecksum, Encoder, Format, Header, LtxError, PageNo, PageSize,
    TxId,
};

/// A database held in memory that changes one random transaction at a time.
pub struct SyntheticDatabase {
    page_size: PageSize,
    format: Format,
    pages: Vec<Vec<u8>>,
    txid: TxId,
    checksum: DatabaseChecksum,
    rng: u64,
    timestamp: i64,
}

impl SyntheticDatabase {
    /// A database of `initial_pages` pages (at least 1) whose transactions are encoded in `format`.
    pub fn new(
        page_size: PageSize,
        format: Format,
        initial_pages: u32,
        seed: u64,
    ) -> SyntheticDatabase {
        let mut db = SyntheticDatabase {
            page_size,
            format,
            pages: Vec::new(),
            txid: TxId::ZERO,
            checksum: DatabaseChecksum::new(),
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            timestamp: 1_700_000_000_000,
        };
        for pgno in 1..=initial_pages.max(1) {
            let page = db.random_page(pgno);
            db.set_page(pgno, page);
        }
        db
    }

    /// Continues a database from its file at `txid`, as restored from a log.
    pub fn resume(
        page_size: PageSize,
        format: Format,
        file: &[u8],
        txid: TxId,
        seed: u64,
    ) -> SyntheticDatabase {
        let mut db = SyntheticDatabase::new(page_size, format, 1, seed);
        db.pages.clear();
        db.checksum = DatabaseChecksum::new();
        for (i, page) in file.chunks(page_size.bytes()).enumerate() {
            db.set_page(i as u32 + 1, page.to_vec());
        }
        db.txid = txid;
        db
    }

    /// The last TXID emitted.
    pub fn txid(&self) -> TxId {
        self.txid
    }

    /// The database checksum after the last transaction.
    pub fn checksum(&self) -> Checksum {
        self.checksum.checksum()
    }

    /// The database file as SQLite would hold it.
    pub fn file_bytes(&self) -> Vec<u8> {
        self.pages.concat()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic and good enough for workloads.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn random_page(&mut self, pgno: u32) -> Vec<u8> {
        let size = self.page_size.bytes();
        let mut page = vec![0u8; size];
        let fill = self.next_random();
        for (i, chunk) in page.chunks_mut(8).enumerate() {
            // Half compressible runs, half noise, like real b-tree pages.
            let word = if i % 2 == 0 { fill } else { self.next_random() };
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
        if pgno == 1 {
            page[..16].copy_from_slice(b"SQLite format 3\0");
            let raw = if size == 65536 { 1 } else { size as u16 };
            page[16..18].copy_from_slice(&raw.to_be_bytes());
        }
        page
    }

    fn set_page(&mut self, pgno: u32, data: Vec<u8>) {
        let index = pgno as usize - 1;
        let is_new = index >= self.pages.len();
        if is_new {
            self.pages
                .resize(index + 1, vec![0u8; self.page_size.bytes()]);
        }
        if PageNo(pgno) != self.page_size.lock_page() {
            if !is_new {
                self.checksum
                    .toggle(page_checksum(PageNo(pgno), &self.pages[index]));
            }
            self.checksum.toggle(page_checksum(PageNo(pgno), &data));
        }
        self.pages[index] = data;
    }

    /// The next transaction as an LTX file. The first is a snapshot of the initial pages; later
    /// ones write 1 to `max_pages` random pages, sometimes growing the database by a page.
    pub fn next_transaction(&mut self, max_pages: u32) -> Result<Vec<u8>, LtxError> {
        let txid = TxId(self.txid.0 + 1);
        self.timestamp += 1 + (self.next_random() % 50) as i64;
        let mut written: Vec<u32> = if txid == TxId(1) {
            (1..=self.pages.len() as u32).collect()
        } else {
            let count = 1 + self.next_random() % u64::from(max_pages.max(1));
            let grow = self.next_random().is_multiple_of(4);
            let mut pages: Vec<u32> = (0..count)
                .map(|_| 1 + (self.next_random() % self.pages.len() as u64) as u32)
                .collect();
            if grow {
                pages.push(self.pages.len() as u32 + 1);
            }
            pages
        };
        written.sort_unstable();
        written.dedup();
        written.retain(|&p| PageNo(p) != self.page_size.lock_page());
        let pre = self.checksum();
        for &pgno in &written {
            if txid != TxId(1) {
                let page = self.random_page(pgno);
                self.set_page(pgno, page);
            }
        }
        let commit = self.pages.len() as u32;
        let mut header = Header::new(self.page_size, commit, txid, txid);
        header.timestamp = self.timestamp;
        if txid != TxId(1) {
            header.pre_apply_checksum = pre;
        }
        let mut encoder = Encoder::new(Vec::new(), self.format, header)?;
        for &pgno in &written {
            encoder.encode_page(PageNo(pgno), &self.pages[pgno as usize - 1])?;
        }
        self.txid = txid;
        Ok(encoder.finish(self.checksum())?.0)
    }
}
