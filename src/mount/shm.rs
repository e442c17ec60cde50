//! Rewriting SQLite's WAL index (`-shm`) after a replica applies an LTX file to the database
//! file, so that WAL-mode readers see the new database as one with an empty WAL.
//!
//! The index starts with two copies of a 48-byte header in the machine's byte order, then the
//! checkpoint info. Bumping the header's change counter makes every reader drop its page cache;
//! `mxFrame = 0` and `nBackfill = 0` say the WAL holds nothing to read.

use super::wal::wal_checksum;

/// The size of the WAL index header SQLite checks (two copies plus checkpoint info).
pub const SHM_HEADER_LEN: usize = 136;
const HEADER_COPY_LEN: usize = 48;
const CKPT_INFO_OFFSET: usize = 96;
/// SQLite's WAL index format version.
const WAL_INDEX_VERSION: u32 = 3_007_000;
/// A read mark no reader uses.
const READMARK_NOT_USED: u32 = 0xffff_ffff;

/// The database facts the new header states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmState {
    /// The page size.
    pub page_size: u32,
    /// The database size in pages.
    pub pages: u32,
}

/// Rewrites the header in `shm` (at least [`SHM_HEADER_LEN`] bytes, extended if shorter) for a
/// database now at `state` with an empty WAL, keeping the WAL salts and checksum byte order and
/// incrementing the change counter.
pub fn rewrite_header(shm: &mut Vec<u8>, state: ShmState) {
    if shm.len() < SHM_HEADER_LEN {
        shm.resize(SHM_HEADER_LEN, 0);
    }
    let native = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let change = native(shm, 8).wrapping_add(1);
    let big_endian_checksum = shm[13];
    let salts = (native(shm, 32), native(shm, 36));
    let mut header = [0u8; HEADER_COPY_LEN];
    header[0..4].copy_from_slice(&WAL_INDEX_VERSION.to_ne_bytes());
    header[8..12].copy_from_slice(&change.to_ne_bytes());
    header[12] = 1;
    header[13] = big_endian_checksum;
    let size_field = if state.page_size == 65536 {
        1u16
    } else {
        state.page_size as u16
    };
    header[14..16].copy_from_slice(&size_field.to_ne_bytes());
    header[20..24].copy_from_slice(&state.pages.to_ne_bytes());
    header[32..36].copy_from_slice(&salts.0.to_ne_bytes());
    header[36..40].copy_from_slice(&salts.1.to_ne_bytes());
    let native_is_big = cfg!(target_endian = "big");
    let (s0, s1) = wal_checksum(native_is_big, (0, 0), &header[..40]);
    header[40..44].copy_from_slice(&s0.to_ne_bytes());
    header[44..48].copy_from_slice(&s1.to_ne_bytes());
    shm[..HEADER_COPY_LEN].copy_from_slice(&header);
    shm[HEADER_COPY_LEN..2 * HEADER_COPY_LEN].copy_from_slice(&header);
    let ckpt = &mut shm[CKPT_INFO_OFFSET..CKPT_INFO_OFFSET + 24];
    ckpt[0..4].copy_from_slice(&0u32.to_ne_bytes());
    ckpt[4..8].copy_from_slice(&0u32.to_ne_bytes());
    for mark in 1..5 {
        ckpt[4 + mark * 4..8 + mark * 4].copy_from_slice(&READMARK_NOT_USED.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader in WAL mode with cached pages sees a database file changed behind its back once
    /// the WAL index header is rewritten, exactly as a replica applies an LTX file.
    #[test]
    fn a_wal_reader_sees_the_new_database_after_the_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let (replica, primary) = (dir.path().join("replica.db"), dir.path().join("primary.db"));
        let setup = rusqlite::Connection::open(&primary).unwrap();
        setup
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1); PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        std::fs::copy(&primary, &replica).unwrap();

        let reader = rusqlite::Connection::open(&replica).unwrap();
        let count = |c: &rusqlite::Connection| -> i64 {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(&reader), 1);

        // The primary commits more; the replica applies the new pages to its database file.
        setup
            .execute_batch("INSERT INTO t SELECT x + 1 FROM t; INSERT INTO t SELECT x + 2 FROM t; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        std::fs::write(&replica, std::fs::read(&primary).unwrap()).unwrap();
        let pages = (std::fs::metadata(&replica).unwrap().len() / 4096) as u32;
        let shm_path = dir.path().join("replica.db-shm");
        let mut shm = std::fs::read(&shm_path).unwrap();
        rewrite_header(
            &mut shm,
            ShmState {
                page_size: 4096,
                pages,
            },
        );
        std::fs::write(&shm_path, &shm).unwrap();

        assert_eq!(count(&reader), 4, "the reader must see the applied pages");
        let ok: String = reader
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
    }
}
