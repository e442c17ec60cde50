//! Throughput of the LTX codec and the database checksum (issue 2).
//!
//! Every benchmark works on the same 64 MiB database-equivalent: 16384 pages of 4 KiB, half of
//! them SQLite-like table leaf pages (compressible records and free space), half random bytes,
//! generated deterministically from a fixed seed. Throughput is always counted in *logical page
//! bytes* (64 MiB per iteration), whatever the encoded file's size, so the formats compare
//! directly as "database bytes per second".
//!
//! Groups:
//! - `encode`: a snapshot from in-memory pages into `std::io::sink()` (v1, v1 + LZ4, v3).
//! - `verify_snapshot`: `Decoder::verify` of the snapshot held in memory; also recomputes the
//!   database checksum of every page.
//! - `verify_incremental`: the same pages as an incremental file (MinTXID 2, pre-apply checksum
//!   set), which needs no database checksum: the difference to `verify_snapshot` is its cost.
//! - `database_checksum`: `checksum_database` over a `Cursor` on the 64 MiB SQLite image.
//! - `crc64`: raw CRC-64/GO-ISO over the image in one stream (the ceiling), and per 4 KiB page
//!   with a fresh hash each (`page_checksum`, what the database checksum does per page).
//!
//! Run: `cargo bench --bench ltx -- --warm-up-time 1 --measurement-time 5`, or
//! `benches/ltx-throughput.sh` for a JSON summary.

use std::hint::black_box;
use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};

use ltxd::database::checksum_database;
use ltxd::ltx::{
    page_checksum, Checksum, Crc64, DatabaseChecksum, Decoder, Encoder, Format, Header, PageNo,
    PageSize, TxId, FLAG_COMPRESS_LZ4,
};

const PAGE_SIZE: usize = 4096;
const PAGES: u32 = 16_384;
const SEED: u64 = 0x5eed_1234_abcd_0002;

/// SplitMix64: small, fast and deterministic; no dependency needed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Appends a SQLite varint (big-endian, 7 bits a byte; values here stay below 2^56).
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 9];
    let mut n = 0;
    loop {
        tmp[n] = (v & 0x7f) as u8;
        n += 1;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(if i == 0 { tmp[i] } else { tmp[i] | 0x80 });
    }
}

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.test",
    "corp.invalid",
    "users.example.org",
];
const STATUS: &[&str] = &["active", "pending", "disabled", "archived"];

/// One table-leaf cell: a row `(id INTEGER PRIMARY KEY, name TEXT, email TEXT, created INTEGER,
/// score REAL, status TEXT, note TEXT)` in SQLite's record format.
fn record_cell(rng: &mut Rng, rowid: u64) -> Vec<u8> {
    let first = WORDS[rng.below(WORDS.len() as u64) as usize];
    let last = WORDS[rng.below(WORDS.len() as u64) as usize];
    let name = format!("{first} {last}");
    let email = format!(
        "{first}.{last}{}@{}",
        rng.below(1000),
        DOMAINS[rng.below(DOMAINS.len() as u64) as usize]
    );
    let created = 1_700_000_000_000u64 + rowid * 1000 + rng.below(1000);
    let score = (rng.below(100_000) as f64) / 100.0;
    let status = STATUS[rng.below(STATUS.len() as u64) as usize];
    let note_words = rng.below(12) as usize;
    let note = (0..note_words)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ");

    let text = |s: &str| 13 + 2 * s.len() as u64;
    let serials = [
        0, // rowid alias: NULL
        text(&name),
        text(&email),
        6, // 8-byte integer
        7, // IEEE float
        text(status),
        text(&note),
    ];
    let mut header = Vec::new();
    for &s in &serials {
        put_varint(&mut header, s);
    }
    let mut payload = Vec::new();
    put_varint(&mut payload, header.len() as u64 + 1);
    payload.extend_from_slice(&header);
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(email.as_bytes());
    payload.extend_from_slice(&created.to_be_bytes());
    payload.extend_from_slice(&score.to_bits().to_be_bytes());
    payload.extend_from_slice(status.as_bytes());
    payload.extend_from_slice(note.as_bytes());

    let mut cell = Vec::new();
    put_varint(&mut cell, payload.len() as u64);
    put_varint(&mut cell, rowid);
    cell.extend_from_slice(&payload);
    cell
}

/// Fills `page` as a SQLite table leaf page whose b-tree header starts at `hdr` (100 on page 1):
/// cell pointers after the header, cells packed at the end, 60-95% used, zeros between.
fn leaf_page(rng: &mut Rng, page: &mut [u8], hdr: usize, first_rowid: u64) -> u64 {
    page[hdr..].fill(0);
    let target_used = (page.len() - hdr) * (60 + rng.below(36) as usize) / 100;
    let mut content = page.len();
    let mut ptr = hdr + 8;
    let mut rowid = first_rowid;
    let mut cells = 0u16;
    loop {
        let cell = record_cell(rng, rowid);
        let used = page.len() - content + cell.len() + 2 * (cells as usize + 1);
        if content - cell.len() < ptr + 2 || used > target_used {
            break;
        }
        content -= cell.len();
        page[content..content + cell.len()].copy_from_slice(&cell);
        page[ptr..ptr + 2].copy_from_slice(&(content as u16).to_be_bytes());
        ptr += 2;
        cells += 1;
        rowid += 1;
    }
    page[hdr] = 0x0d;
    page[hdr + 3..hdr + 5].copy_from_slice(&cells.to_be_bytes());
    page[hdr + 5..hdr + 7].copy_from_slice(&(content as u16).to_be_bytes());
    rowid
}

/// The 64 MiB database image: a valid SQLite header on page 1, then even pages SQLite-like and
/// odd pages random (page 1 is SQLite-like too).
fn database_image() -> Vec<u8> {
    let mut rng = Rng(SEED);
    let mut image = vec![0u8; PAGE_SIZE * PAGES as usize];
    let mut rowid = 1;
    for (i, page) in image.chunks_mut(PAGE_SIZE).enumerate() {
        let pgno = i + 1;
        if pgno == 1 {
            page[..16].copy_from_slice(b"SQLite format 3\0");
            page[16..18].copy_from_slice(&(PAGE_SIZE as u16).to_be_bytes());
            page[18] = 1; // file format write version (legacy)
            page[19] = 1; // read version
            page[21] = 64; // max embedded payload fraction
            page[22] = 32; // min embedded payload fraction
            page[23] = 32; // leaf payload fraction
            page[28..32].copy_from_slice(&PAGES.to_be_bytes()); // database size in pages
            page[44..48].copy_from_slice(&4u32.to_be_bytes()); // schema format
            page[56..60].copy_from_slice(&1u32.to_be_bytes()); // UTF-8
            rowid = leaf_page(&mut rng, page, 100, rowid);
        } else if pgno % 2 == 0 {
            rowid = leaf_page(&mut rng, page, 0, rowid);
        } else {
            rng.fill(page);
        }
    }
    image
}

fn page_size() -> PageSize {
    PageSize::new(PAGE_SIZE as u32).expect("valid page size")
}

fn pages(image: &[u8]) -> impl Iterator<Item = (PageNo, &[u8])> {
    image
        .chunks(PAGE_SIZE)
        .enumerate()
        .map(|(i, p)| (PageNo(i as u32 + 1), p))
}

/// The three encodings measured: name, format, header flags.
const VARIANTS: [(&str, Format, u32); 3] = [
    ("v1", Format::V1, 0),
    ("v1_lz4", Format::V1, FLAG_COMPRESS_LZ4),
    ("v3", Format::V3, 0),
];

fn snapshot_header(flags: u32) -> Header {
    let mut header = Header::new(page_size(), PAGES, TxId(1), TxId(1));
    header.flags = flags;
    header
}

fn database_checksum(image: &[u8]) -> Checksum {
    let mut db = DatabaseChecksum::new();
    for (pgno, data) in pages(image) {
        db.toggle(page_checksum(pgno, data));
    }
    db.checksum()
}

/// Encodes every page of `image` under `header` into `out`; a snapshot checks its own checksum.
fn encode<W: std::io::Write>(
    image: &[u8],
    out: W,
    format: Format,
    header: Header,
    post_apply: Option<Checksum>,
) -> W {
    let mut encoder = Encoder::new(out, format, header).expect("header");
    for (pgno, data) in pages(image) {
        encoder.encode_page(pgno, data).expect("page");
    }
    let (out, _) = match post_apply {
        None => encoder.finish_snapshot(),
        Some(checksum) => encoder.finish(checksum),
    }
    .expect("finish");
    out
}

/// A group of 64 MiB iterations: flat sampling, 20 samples, throughput in page bytes.
fn new_group<'a>(c: &'a mut Criterion, name: &str, bytes: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    group
}

fn bench_codec(c: &mut Criterion) {
    let image = database_image();
    let bytes = image.len() as u64;
    let db_checksum = database_checksum(&image);

    let mut snapshots = Vec::new();
    let mut incrementals = Vec::new();
    for (name, format, flags) in VARIANTS {
        let snapshot = encode(&image, Vec::new(), format, snapshot_header(flags), None);
        let mut header = Header::new(page_size(), PAGES, TxId(2), TxId(2));
        header.flags = flags;
        header.pre_apply_checksum = Checksum(Checksum::FLAG | 0x1234_5678_9abc_def0);
        let incremental = encode(&image, Vec::new(), format, header, Some(db_checksum));
        eprintln!(
            "ltx bench: {name}: snapshot {} bytes ({:.2} of the pages), incremental {} bytes",
            snapshot.len(),
            snapshot.len() as f64 / bytes as f64,
            incremental.len()
        );
        snapshots.push((name, format, snapshot));
        incrementals.push((name, format, incremental));
    }

    let mut group = new_group(c, "encode", bytes);
    for (name, format, flags) in VARIANTS {
        group.bench_function(name, |b| {
            b.iter(|| {
                encode(
                    black_box(&image),
                    std::io::sink(),
                    format,
                    snapshot_header(flags),
                    None,
                )
            })
        });
    }
    group.finish();

    for (group_name, files) in [
        ("verify_snapshot", &snapshots),
        ("verify_incremental", &incrementals),
    ] {
        let mut group = new_group(c, group_name, bytes);
        for (name, format, file) in files {
            group.bench_function(*name, |b| {
                b.iter(|| {
                    Decoder::new(Cursor::new(black_box(file.as_slice())), *format)
                        .expect("header")
                        .verify()
                        .expect("valid file")
                })
            });
        }
        group.finish();
    }

    let mut group = new_group(c, "database_checksum", bytes);
    group.bench_function("cursor", |b| {
        b.iter(|| {
            let state = checksum_database(
                Cursor::new(black_box(image.as_slice())),
                Path::new("bench.db"),
            )
            .expect("valid database");
            assert_eq!(state.checksum, db_checksum);
            state
        })
    });
    group.finish();

    let mut group = new_group(c, "crc64", bytes);
    group.bench_function("stream", |b| {
        b.iter(|| {
            let mut crc = Crc64::new();
            crc.update(black_box(&image));
            crc.crc()
        })
    });
    group.bench_function("per_page", |b| {
        b.iter(|| database_checksum(black_box(&image)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench_codec
}
criterion_main!(benches);
