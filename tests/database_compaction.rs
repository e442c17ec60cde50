//! Compaction equals sequential apply, for random histories that write, shrink and grow a
//! database, in both formats.

use std::path::{Path, PathBuf};

use ltxd::database::{self, LtxSource};
use ltxd::ltx::{
    page_checksum, Checksum, DatabaseChecksum, Encoder, Format, Header, PageNo, PageSize, TxId,
};
use proptest::prelude::*;

const PAGE_SIZE: u32 = 512;

/// One transaction: the database size after it, and the pages it writes (with a fill byte).
#[derive(Debug, Clone)]
struct Tx {
    commit: u32,
    writes: Vec<(u32, u8)>,
}

fn tx_strategy() -> impl Strategy<Value = Tx> {
    (1u32..12).prop_flat_map(|commit| {
        proptest::collection::btree_map(1..=commit, any::<u8>(), 0..=commit as usize).prop_map(
            move |writes| Tx {
                commit,
                writes: writes.into_iter().collect(),
            },
        )
    })
}

/// A page whose first bytes say which page it is, so it differs from every other page. Page 1
/// starts with a SQLite header, so that a partly applied file reads as a database.
fn page(pgno: u32, fill: u8) -> Vec<u8> {
    let mut data = vec![fill; PAGE_SIZE as usize];
    data[..4].copy_from_slice(&pgno.to_be_bytes());
    if pgno == 1 {
        data[..16].copy_from_slice(b"SQLite format 3\0");
        data[16..18].copy_from_slice(&(PAGE_SIZE as u16).to_be_bytes());
    }
    data
}

fn checksum(pages: &[Vec<u8>]) -> Checksum {
    let mut sum = DatabaseChecksum::new();
    for (i, data) in pages.iter().enumerate() {
        sum.toggle(page_checksum(PageNo(i as u32 + 1), data));
    }
    sum.checksum()
}

/// Writes the history as LTX files: a snapshot at TXID 1, then one file per transaction.
/// A grown page that a transaction does not write is zeros, as after a file truncation.
fn write_history(dir: &Path, format: Format, initial: u32, txs: &[Tx]) -> Vec<PathBuf> {
    let page_size = PageSize::new(PAGE_SIZE).unwrap();
    let mut db: Vec<Vec<u8>> = (1..=initial).map(|p| page(p, 0xaa)).collect();
    let mut paths = Vec::new();
    let mut write = |txid: u64, header: Header, pages: &[(u32, Vec<u8>)], post: Checksum| {
        let path = dir.join(ltxd::ltx::file_name(TxId(txid), TxId(txid)));
        let file = std::fs::File::create(&path).unwrap();
        let mut encoder = Encoder::new(file, format, header).unwrap();
        for (pgno, data) in pages {
            encoder.encode_page(PageNo(*pgno), data).unwrap();
        }
        encoder.finish(post).unwrap();
        paths.push(path);
    };
    let snapshot: Vec<(u32, Vec<u8>)> = db
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u32 + 1, d.clone()))
        .collect();
    write(
        1,
        Header::new(page_size, initial, TxId(1), TxId(1)),
        &snapshot,
        checksum(&db),
    );
    for (i, tx) in txs.iter().enumerate() {
        let txid = i as u64 + 2;
        let mut header = Header::new(page_size, tx.commit, TxId(txid), TxId(txid));
        header.pre_apply_checksum = checksum(&db);
        let pages: Vec<(u32, Vec<u8>)> = tx
            .writes
            .iter()
            .map(|&(p, fill)| (p, page(p, fill)))
            .collect();
        db.resize(tx.commit as usize, vec![0; PAGE_SIZE as usize]);
        for (pgno, data) in &pages {
            db[*pgno as usize - 1] = data.clone();
        }
        write(txid, header, &pages, checksum(&db));
    }
    paths
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn compacting_any_run_equals_applying_it_file_by_file(
        initial in 1u32..10,
        txs in proptest::collection::vec(tx_strategy(), 1..8),
        run_start in 0usize..8,
        v3 in any::<bool>(),
    ) {
        let format = if v3 { Format::V3 } else { Format::V1 };
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<LtxSource> = write_history(dir.path(), format, initial, &txs).into_iter().map(LtxSource::file).collect();
        let start = run_start % files.len();

        let sequential = dir.path().join("sequential.db");
        database::apply_files(&sequential, &files).unwrap();

        let compacted_ltx = dir.path().join("compacted.ltx");
        database::compact_files(&files[start..], &compacted_ltx, None, false).unwrap();
        let compacted = dir.path().join("compacted.db");
        database::apply_files(&compacted, &files[..start]).unwrap();
        let applied = database::apply_files(&compacted, &[LtxSource::file(&compacted_ltx)]).unwrap();

        prop_assert_eq!(std::fs::read(&compacted).unwrap(), std::fs::read(&sequential).unwrap());
        prop_assert_eq!(applied.pos.txid, TxId(files.len() as u64));
    }
}

/// Compacting `files` fails with a broken chain.
fn assert_compaction_breaks_the_chain(files: &[&std::path::PathBuf], out: &std::path::Path) {
    let sources: Vec<LtxSource> = files.iter().map(LtxSource::file).collect();
    let err = database::compact_files(&sources, out, None, false).unwrap_err();
    assert!(
        matches!(err, database::DatabaseError::BrokenChain { .. }),
        "{err}"
    );
}

#[test]
fn compaction_refuses_a_gap_in_txids() {
    let dir = tempfile::tempdir().unwrap();
    let tx = Tx {
        commit: 2,
        writes: vec![(1, 1)],
    };
    let files = write_history(dir.path(), Format::V1, 2, &[tx.clone(), tx]);
    let out = dir.path().join("out.ltx");
    assert_compaction_breaks_the_chain(&[&files[0], &files[2]], &out);
    assert!(!out.exists(), "a failed compaction must leave no output");
}

#[test]
fn compaction_refuses_a_broken_checksum_chain() {
    let dir = tempfile::tempdir().unwrap();
    let a = tempfile::tempdir().unwrap();
    let tx = |fill| Tx {
        commit: 2,
        writes: vec![(1, fill)],
    };
    let ours = write_history(dir.path(), Format::V3, 2, &[tx(1), tx(2)]);
    let theirs = write_history(a.path(), Format::V3, 2, &[tx(9), tx(2)]);
    let out = dir.path().join("out.ltx");
    assert_compaction_breaks_the_chain(&[&ours[1], &theirs[2]], &out);
}

/// More inputs than one merge opens at once are merged in rounds, with the same result.
#[test]
fn compacting_more_files_than_the_fan_in_merges_in_rounds() {
    use ltxd::workload::SyntheticDatabase;
    let dir = tempfile::tempdir().unwrap();
    let mut db = SyntheticDatabase::new(PageSize::new(4096).unwrap(), Format::V1, 4, 9);
    let count = database::MAX_FAN_IN * 2 + 7;
    let sources: Vec<LtxSource> = (0..count)
        .map(|_| {
            let bytes = db.next_transaction(3).unwrap();
            let path = dir.path().join(ltxd::ltx::file_name(db.txid(), db.txid()));
            std::fs::write(&path, bytes).unwrap();
            LtxSource::file(path)
        })
        .collect();
    let out = dir.path().join("all.ltx");
    database::compact_files(&sources, &out, None, false).unwrap();
    let restored = dir.path().join("restored.db");
    let applied = database::apply_files(&restored, &[LtxSource::file(&out)]).unwrap();
    assert_eq!(applied.pos.txid, TxId(count as u64));
    assert_eq!(std::fs::read(&restored).unwrap(), db.file_bytes());
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0, "intermediate merges leave no files");
}
