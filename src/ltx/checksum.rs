//! LTX checksums: CRC-64/GO-ISO page checksums, the rolling database checksum, and the file hash.

use crc_fast::{CrcAlgorithm, Digest};

use super::page::PageNo;
pub use ltxd_protocol::Checksum;

/// A streaming CRC-64/GO-ISO hash (Go's `crc64.ISO` table), the CRC under every LTX checksum.
#[derive(Clone)]
pub struct Crc64(Digest);

impl Crc64 {
    /// A fresh hash.
    pub fn new() -> Crc64 {
        Crc64(Digest::new(CrcAlgorithm::Crc64GoIso))
    }

    /// Feeds bytes into the hash.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The CRC of everything fed so far, without the LTX flag bit.
    pub fn crc(&self) -> u64 {
        self.0.finalize()
    }

    /// The CRC with [`Checksum::FLAG`] set, as LTX stores it.
    pub fn checksum(&self) -> Checksum {
        Checksum(Checksum::FLAG | self.crc())
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Crc64::new()
    }
}

/// The checksum of one page: `FLAG | CRC(be32(pgno) || data)`.
pub fn page_checksum(pgno: PageNo, data: &[u8]) -> Checksum {
    let mut crc = Crc64::new();
    crc.update(&pgno.0.to_be_bytes());
    crc.update(data);
    crc.checksum()
}

/// The rolling database checksum: the XOR of the page checksums of every page but the lock page,
/// with the flag bit set. Pages can be added and removed in any order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatabaseChecksum(u64);

impl DatabaseChecksum {
    /// The checksum of an empty database.
    pub fn new() -> DatabaseChecksum {
        DatabaseChecksum(0)
    }

    /// Starts from a stored database checksum, to update it incrementally.
    pub fn from_checksum(checksum: Checksum) -> DatabaseChecksum {
        DatabaseChecksum(checksum.0 & !Checksum::FLAG)
    }

    /// XORs a page checksum in (a new page) or out (a page removed or overwritten).
    pub fn toggle(&mut self, page: Checksum) {
        self.0 ^= page.0;
    }

    /// The checksum as stored: the flag bit is always set.
    pub fn checksum(self) -> Checksum {
        Checksum(Checksum::FLAG | self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_go_iso_check_value() {
        let mut crc = Crc64::new();
        crc.update(b"123456789");
        assert_eq!(crc.crc(), 0xb909_56c7_75a4_1001);
    }

    #[test]
    fn page_checksums_match_the_reference_vectors() {
        let zero = vec![0u8; 4096];
        let ramp: Vec<u8> = (0..4096).map(|i| i as u8).collect();
        assert_eq!(page_checksum(PageNo(1), &zero).0, 0xd932_8f59_2d9e_733d);
        assert_eq!(page_checksum(PageNo(2), &zero).0, 0xf790_1e47_304c_a33f);
        assert_eq!(page_checksum(PageNo(1), &ramp).0, 0xda58_33f1_0d97_8faa);
        assert_eq!(page_checksum(PageNo(7), &ramp).0, 0xb71d_11cd_3632_2faf);
    }

    #[test]
    fn database_checksum_matches_the_reference_vectors() {
        let p1: Vec<u8> = (0..512).map(|i| i as u8).collect();
        let p2 = vec![0xab; 512];
        let p2b = vec![0xcd; 512];
        let mut db = DatabaseChecksum::new();
        db.toggle(page_checksum(PageNo(1), &p1));
        db.toggle(page_checksum(PageNo(2), &p2));
        assert_eq!(db.checksum().0, 0xeec3_64f7_c955_b271);
        db.toggle(page_checksum(PageNo(2), &p2));
        db.toggle(page_checksum(PageNo(2), &p2b));
        assert_eq!(db.checksum().0, 0xaac0_c4f7_c955_b271);
        assert_eq!(DatabaseChecksum::new().checksum(), Checksum::EMPTY_DATABASE);
    }
}
