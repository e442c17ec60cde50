//! Property tests: every file the encoder writes decodes to exactly what was encoded, in v1
//! (plain and LZ4-framed) and v3, with the format given or detected; and the encoder refuses
//! page sequences that no valid file holds, with the same error the decoder gives for them.

use std::io::Cursor;

use ltxd::ltx::{
    detect_format, Checksum, Crc64, DatabaseChecksum, Decoder, Encoder, Format, Header, LtxError,
    PageFrame, PageNo, PageSize, Trailer, TxId, FLAG_COMPRESS_LZ4, FLAG_NO_CHECKSUM, HEADER_LEN,
    TRAILER_LEN,
};
use proptest::prelude::*;

/// The on-disk variants under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    V1,
    V1Lz4,
    V3,
}

impl Variant {
    fn format(self) -> Format {
        match self {
            Variant::V1 | Variant::V1Lz4 => Format::V1,
            Variant::V3 => Format::V3,
        }
    }
}

/// How a page's bytes are made: compressible shapes and incompressible noise.
#[derive(Clone, Copy, Debug)]
enum Fill {
    Zeros,
    Byte(u8),
    /// A short random pattern, repeated.
    Pattern {
        seed: u64,
        period: usize,
    },
    /// Zeros with a random run somewhere in the page, like a sparse b-tree page.
    Sparse {
        seed: u64,
    },
    /// Random bytes throughout.
    Noise {
        seed: u64,
    },
}

fn fill_strategy() -> impl Strategy<Value = Fill> {
    prop_oneof![
        1 => Just(Fill::Zeros),
        1 => any::<u8>().prop_map(Fill::Byte),
        2 => (any::<u64>(), 1usize..64).prop_map(|(seed, period)| Fill::Pattern { seed, period }),
        2 => any::<u64>().prop_map(|seed| Fill::Sparse { seed }),
        2 => any::<u64>().prop_map(|seed| Fill::Noise { seed }),
    ]
}

/// xorshift64*: a fast deterministic byte source, so that large pages cost no strategy work.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn page_bytes(fill: Fill, page_size: usize) -> Vec<u8> {
    match fill {
        Fill::Zeros => vec![0; page_size],
        Fill::Byte(b) => vec![b; page_size],
        Fill::Pattern { seed, period } => noise(seed, period)
            .into_iter()
            .cycle()
            .take(page_size)
            .collect(),
        Fill::Sparse { seed } => {
            let mut page = vec![0; page_size];
            let start = (seed as usize) % page_size;
            let len = ((seed >> 32) as usize) % (page_size - start) + 1;
            page[start..start + len].copy_from_slice(&noise(seed, len));
            page
        }
        Fill::Noise { seed } => noise(seed, page_size),
    }
}

/// Page sizes biased small: each larger size is half as likely as the one before.
fn page_size_strategy() -> impl Strategy<Value = PageSize> {
    prop_oneof![
        64 => Just(512u32),
        32 => Just(1024),
        16 => Just(2048),
        8 => Just(4096),
        4 => Just(8192),
        2 => Just(16384),
        1 => Just(32768),
        1 => Just(65536),
    ]
    .prop_map(|size| PageSize::new(size).unwrap())
}

/// At most 128 KiB of pages per file (and at least 1 page), to keep debug runs fast.
fn max_pages(page_size: PageSize) -> usize {
    (128 * 1024 / page_size.bytes()).clamp(1, 24)
}

/// Page numbers and their contents, in file order.
type Pages = Vec<(PageNo, Vec<u8>)>;

/// One file's worth of input: header, pages and post-apply checksum.
#[derive(Debug, Clone)]
struct Case {
    variant: Variant,
    header: Header,
    pages: Pages,
    post_apply_checksum: Checksum,
}

/// The page numbers of a file: all of `1..=commit` for a snapshot; for an incremental file an
/// ascending subset of a commit size that may be far larger, sometimes just around the lock page
/// (which is never chosen).
fn page_numbers_strategy(page_size: PageSize, snapshot: bool) -> BoxedStrategy<(u32, Vec<u32>)> {
    let max = max_pages(page_size);
    if snapshot {
        return (0..=max as u32)
            .prop_map(|commit| (commit, (1..=commit).collect()))
            .boxed();
    }
    let lock = page_size.lock_page().0;
    let commit = prop_oneof![
        1 => Just(0u32),
        4 => 1u32..=max as u32 * 2,
        2 => 1u32..=1_000_000,
        1 => lock - 3..=lock + 3,
    ];
    commit
        .prop_flat_map(move |commit| {
            let low = if commit >= lock - 3 { lock - 3 } else { 1 };
            let picks = if commit == 0 { 0 } else { max };
            (
                Just(commit),
                proptest::collection::btree_set(low.min(commit)..=commit.max(1), 0..=picks),
            )
        })
        .prop_map(move |(commit, set)| {
            let pages = set
                .into_iter()
                .filter(|&p| commit != 0 && p != lock)
                .collect();
            (commit, pages)
        })
        .boxed()
}

/// WAL offset, size and salts that satisfy `Header::validate`: all zero outside WAL mode; in WAL
/// mode a positive offset, and a size that must be positive in v1 and may be 0 in v3.
fn wal_strategy(format: Format) -> impl Strategy<Value = (i64, i64, u32, u32)> {
    let min_size = if format == Format::V1 { 1 } else { 0 };
    prop_oneof![
        Just((0i64, 0i64, 0u32, 0u32)),
        (
            1..=i64::MAX,
            min_size..=i64::MAX,
            any::<u32>(),
            any::<u32>()
        ),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let variant = prop_oneof![Just(Variant::V1), Just(Variant::V1Lz4), Just(Variant::V3)];
    (variant, page_size_strategy(), any::<bool>())
        .prop_flat_map(|(variant, page_size, snapshot)| {
            (
                Just(variant),
                Just(page_size),
                Just(snapshot),
                page_numbers_strategy(page_size, snapshot),
                proptest::collection::vec(fill_strategy(), max_pages(page_size)),
                wal_strategy(variant.format()),
                (any::<i64>(), any::<u64>(), 1u64..=u64::MAX / 2, 0u64..1000),
                (prop::bool::weighted(0.15), any::<u64>(), any::<u64>()),
            )
        })
        .prop_map(
            |(variant, page_size, snapshot, (commit, pgnos), fills, wal, misc, checksums)| {
                let (timestamp, node_id, txid, span) = misc;
                let (no_checksum, pre, post) = checksums;
                let min_txid = if snapshot { 1 } else { txid + 1 };
                let mut header =
                    Header::new(page_size, commit, TxId(min_txid), TxId(min_txid + span));
                header.timestamp = timestamp;
                header.node_id = node_id;
                (
                    header.wal_offset,
                    header.wal_size,
                    header.wal_salt1,
                    header.wal_salt2,
                ) = wal;
                if variant == Variant::V1Lz4 {
                    header.flags |= FLAG_COMPRESS_LZ4;
                }
                let pages: Vec<_> = pgnos
                    .into_iter()
                    .zip(fills.into_iter().cycle())
                    .map(|(pgno, fill)| (PageNo(pgno), page_bytes(fill, page_size.bytes())))
                    .collect();
                let post_apply_checksum = if no_checksum {
                    header.flags |= FLAG_NO_CHECKSUM;
                    Checksum::ZERO
                } else {
                    if !snapshot {
                        header.pre_apply_checksum = Checksum(Checksum::FLAG | pre);
                    }
                    if snapshot || commit == 0 {
                        database_checksum(&pages)
                    } else {
                        Checksum(Checksum::FLAG | post)
                    }
                };
                Case {
                    variant,
                    header,
                    pages,
                    post_apply_checksum,
                }
            },
        )
}

fn database_checksum(pages: &[(PageNo, Vec<u8>)]) -> Checksum {
    let mut db = DatabaseChecksum::new();
    for (pgno, data) in pages {
        db.toggle(ltxd::ltx::page_checksum(*pgno, data));
    }
    db.checksum()
}

fn encode(case: &Case) -> Result<(Vec<u8>, Trailer), LtxError> {
    let mut encoder = Encoder::new(Vec::new(), case.variant.format(), case.header.clone())?;
    for (pgno, data) in &case.pages {
        encoder.encode_page(*pgno, data)?;
    }
    encoder.finish(case.post_apply_checksum)
}

/// What the decoder returns for a whole file.
struct Decoded {
    header: Header,
    pages: Pages,
    frames: Vec<PageFrame>,
    trailer: Trailer,
}

/// Decodes every page and the trailer.
fn decode(bytes: &[u8], format: Format) -> Result<Decoded, LtxError> {
    let mut decoder = Decoder::new(Cursor::new(bytes), format)?;
    let header = decoder.header().clone();
    let (mut pages, mut frames) = (Vec::new(), Vec::new());
    let mut page = vec![0u8; decoder.page_size().bytes()];
    while let Some(frame) = decoder.next_page(&mut page)? {
        pages.push((frame.pgno, page.clone()));
        frames.push(frame);
    }
    Ok(Decoded {
        header,
        pages,
        frames,
        trailer: decoder.finish()?,
    })
}

/// The file checksum as the format defines it, computed here from the bytes without the codec:
/// the CRC of the uncompressed file up to the post-apply checksum. In v1 that is the raw bytes (an
/// LZ4 frame holds exactly the plain v1 body); in v3 each page's LZ4 block is replaced by the page.
fn expected_file_checksum(case: &Case, bytes: &[u8], frames: &[PageFrame]) -> Checksum {
    let mut crc = Crc64::new();
    crc.update(&bytes[..HEADER_LEN]);
    match case.variant {
        Variant::V1 | Variant::V1Lz4 => {
            for (pgno, data) in &case.pages {
                crc.update(&pgno.0.to_be_bytes());
                crc.update(data);
            }
            crc.update(&[0; 4]);
        }
        Variant::V3 => {
            let mut end = HEADER_LEN;
            for (frame, (_, data)) in frames.iter().zip(&case.pages) {
                let start = frame.offset as usize;
                crc.update(&bytes[start..start + 10]);
                crc.update(data);
                end = start + frame.size as usize;
            }
            crc.update(&bytes[end..bytes.len() - TRAILER_LEN]);
        }
    }
    crc.update(&case.post_apply_checksum.0.to_be_bytes());
    crc.checksum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn encoded_files_decode_to_their_input(case in case_strategy()) {
        let format = case.variant.format();
        let (bytes, trailer) = encode(&case).unwrap();
        prop_assert_eq!(trailer.post_apply_checksum, case.post_apply_checksum);
        prop_assert_eq!(&bytes[bytes.len() - TRAILER_LEN..], &trailer.encode()[..]);

        let decoded = decode(&bytes, format).unwrap();
        prop_assert_eq!(&decoded.header, &case.header);
        prop_assert!(decoded.pages == case.pages, "decoded pages differ");
        prop_assert_eq!(decoded.trailer, trailer);
        // Frames are contiguous from the end of the header (in the uncompressed stream for v1 LZ4).
        let mut next_offset = HEADER_LEN as u64;
        for frame in &decoded.frames {
            prop_assert_eq!(frame.offset, next_offset, "page {}", frame.pgno);
            next_offset += frame.size;
        }
        prop_assert_eq!(
            trailer.file_checksum,
            expected_file_checksum(&case, &bytes, &decoded.frames)
        );

        let mut cursor = Cursor::new(&bytes[..]);
        prop_assert_eq!(detect_format(&mut cursor).unwrap(), format);
        prop_assert_eq!(cursor.position(), 0);
        let verified = Decoder::new(cursor, format).unwrap().verify().unwrap();
        prop_assert_eq!(verified.format, format);
        prop_assert_eq!(&verified.header, &case.header);
        prop_assert_eq!(verified.trailer, trailer);
        prop_assert_eq!(verified.page_count as usize, case.pages.len());

        if case.header.has_no_checksum() {
            prop_assert_eq!(trailer.post_apply_checksum, Checksum::ZERO);
        } else if case.header.is_snapshot() || case.header.commit == 0 {
            prop_assert_eq!(trailer.post_apply_checksum, database_checksum(&decoded.pages));
        } else {
            prop_assert!(trailer.post_apply_checksum.has_flag());
        }

        if case.variant == Variant::V1 {
            // Plain v1 has a fixed layout.
            let frame = 4 + case.header.page_size as usize;
            prop_assert_eq!(bytes.len(), HEADER_LEN + case.pages.len() * frame + 4 + TRAILER_LEN);
        }
    }
}

fn header(page_size: u32, commit: u32, min_txid: u64) -> Header {
    let mut header = Header::new(
        PageSize::new(page_size).unwrap(),
        commit,
        TxId(min_txid),
        TxId(min_txid),
    );
    if min_txid > 1 {
        header.pre_apply_checksum = Checksum(Checksum::FLAG | 0x1234);
    }
    header
}

/// A v1 file built by hand, without the encoder's checks, with a correct file checksum.
fn raw_v1_file(header: &Header, pgnos: &[u32], post_apply_checksum: Checksum) -> Vec<u8> {
    let mut bytes = header.encode().to_vec();
    for &pgno in pgnos {
        bytes.extend_from_slice(&pgno.to_be_bytes());
        bytes.extend(std::iter::repeat_n(pgno as u8, header.page_size as usize));
    }
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&post_apply_checksum.0.to_be_bytes());
    let mut crc = Crc64::new();
    crc.update(&bytes);
    bytes.extend_from_slice(&crc.checksum().0.to_be_bytes());
    bytes
}

/// Encodes `pgnos` (pages filled with the low byte of their number) and returns the first error.
fn encode_pages(format: Format, header: &Header, pgnos: &[u32]) -> Result<(), LtxError> {
    let mut encoder = Encoder::new(Vec::new(), format, header.clone())?;
    let mut pages = Vec::new();
    for &pgno in pgnos {
        let data = vec![pgno as u8; header.page_size as usize];
        encoder.encode_page(PageNo(pgno), &data)?;
        pages.push((PageNo(pgno), data));
    }
    let post = if header.is_snapshot() {
        database_checksum(&pages)
    } else {
        Checksum(Checksum::FLAG | 0x5678)
    };
    encoder.finish(post).map(drop)
}

/// A named page list, its header, and the error it must give.
type SequenceCase<'a> = (&'a str, &'a Header, &'a [u32], fn(&LtxError) -> bool);

#[test]
fn encoder_and_decoder_refuse_bad_page_sequences_with_the_same_error() {
    let incremental = header(4096, 10, 5);
    let snapshot = header(4096, 3, 1);
    // The lock page of 65536-byte pages is page 16385.
    let past_lock = header(65536, 16_390, 5);
    let cases: [SequenceCase; 7] = [
        ("out of order", &incremental, &[3, 2], |e| {
            matches!(
                e,
                LtxError::PageOutOfOrder {
                    prev: PageNo(3),
                    pgno: PageNo(2)
                }
            )
        }),
        ("duplicate", &incremental, &[2, 4, 4], |e| {
            matches!(e, LtxError::DuplicatePage(PageNo(4)))
        }),
        ("beyond commit", &incremental, &[1, 11], |e| {
            matches!(
                e,
                LtxError::PageBeyondCommit {
                    pgno: PageNo(11),
                    commit: 10
                }
            )
        }),
        ("lock page", &past_lock, &[16_384, 16_385], |e| {
            matches!(e, LtxError::LockPage(PageNo(16_385)))
        }),
        ("snapshot skips a page", &snapshot, &[1, 3], |e| {
            matches!(
                e,
                LtxError::SnapshotMissingPage {
                    missing: PageNo(2),
                    commit: 3
                }
            )
        }),
        ("snapshot ends early", &snapshot, &[1, 2], |e| {
            matches!(
                e,
                LtxError::SnapshotMissingPage {
                    missing: PageNo(3),
                    commit: 3
                }
            )
        }),
        ("snapshot starts late", &snapshot, &[2, 3], |e| {
            matches!(
                e,
                LtxError::SnapshotMissingPage {
                    missing: PageNo(1),
                    commit: 3
                }
            )
        }),
    ];
    for (name, header, pgnos, expected) in cases {
        for format in [Format::V1, Format::V3] {
            let err = encode_pages(format, header, pgnos).unwrap_err();
            assert!(expected(&err), "encoder, {name}, {format}: {err:?}");
        }
        // The decoder names the same fault in a hand-made file with a valid checksum.
        let post = if header.is_snapshot() {
            DatabaseChecksum::new().checksum()
        } else {
            Checksum(Checksum::FLAG | 1)
        };
        let bytes = raw_v1_file(header, pgnos, post);
        let err = Decoder::new(Cursor::new(&bytes), Format::V1)
            .unwrap()
            .verify()
            .unwrap_err();
        assert!(expected(&err), "decoder, {name}: {err:?}");
    }
}

#[test]
fn pages_around_the_lock_page_round_trip() {
    let header = header(65536, 16_390, 5);
    for format in [Format::V1, Format::V3] {
        encode_pages(format, &header, &[16_383, 16_384, 16_386, 16_390]).unwrap();
    }
}

#[test]
fn encoder_refuses_bad_pages_headers_and_checksums() {
    let incremental = header(4096, 10, 5);
    let mut encoder = Encoder::new(Vec::new(), Format::V1, incremental.clone()).unwrap();
    assert!(matches!(
        encoder.encode_page(PageNo(0), &[0; 4096]),
        Err(LtxError::BadEncoderInput(_))
    ));
    assert!(matches!(
        encoder.encode_page(PageNo(1), &[0; 4095]),
        Err(LtxError::BadPageLength {
            len: 4095,
            expected: 4096,
            ..
        })
    ));

    let mut lz4_v3 = incremental.clone();
    lz4_v3.flags = FLAG_COMPRESS_LZ4;
    assert!(matches!(
        Encoder::new(Vec::new(), Format::V3, lz4_v3).err(),
        Some(LtxError::BadFlags { .. })
    ));

    // A snapshot's post-apply checksum must be the checksum of its pages.
    let snapshot = header(4096, 1, 1);
    let mut encoder = Encoder::new(Vec::new(), Format::V3, snapshot).unwrap();
    encoder.encode_page(PageNo(1), &[7; 4096]).unwrap();
    assert!(matches!(
        encoder.finish(Checksum(Checksum::FLAG | 1)),
        Err(LtxError::PostApplyChecksumMismatch { .. })
    ));

    // Post-apply checksums carry the flag bit; a deletion's is the empty-database checksum.
    let encoder = Encoder::new(Vec::new(), Format::V1, incremental).unwrap();
    assert!(matches!(
        encoder.finish(Checksum(1)),
        Err(LtxError::BadPostApplyChecksum(_))
    ));
    let deletion = header(4096, 0, 5);
    let encoder = Encoder::new(Vec::new(), Format::V1, deletion).unwrap();
    assert!(matches!(
        encoder.finish(Checksum(Checksum::FLAG | 1)),
        Err(LtxError::BadPostApplyChecksum(_))
    ));
}

/// The sequence rules against a model, for random page lists: the encoder accepts a list if and
/// only if it is strictly ascending, within the commit size and, for a snapshot, exactly
/// `1..=commit`; and the first fault is reported with its own variant.
fn expected_fault(snapshot: bool, commit: u32, pgnos: &[u32]) -> Option<&'static str> {
    let mut prev: Option<u32> = None;
    for &pgno in pgnos {
        let next = prev.map_or(1, |p| p + 1);
        let fault = if pgno > commit {
            Some("PageBeyondCommit")
        } else if prev == Some(pgno) {
            Some("DuplicatePage")
        } else if prev.is_some_and(|p| pgno < p) {
            Some("PageOutOfOrder")
        } else if snapshot && pgno != next {
            Some("SnapshotMissingPage")
        } else {
            None
        };
        if fault.is_some() {
            return fault;
        }
        prev = Some(pgno);
    }
    let complete = prev.map_or(0, |p| p) == commit;
    (snapshot && !complete).then_some("SnapshotMissingPage")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encoder_accepts_exactly_the_valid_page_sequences(
        snapshot in any::<bool>(),
        commit in 1u32..=8,
        pgnos in proptest::collection::vec(1u32..=10, 0..=10),
        v3 in any::<bool>(),
    ) {
        let format = if v3 { Format::V3 } else { Format::V1 };
        let header = header(512, commit, if snapshot { 1 } else { 9 });
        let result = encode_pages(format, &header, &pgnos);
        let name = result.as_ref().err().map(|e| {
            let debug = format!("{e:?}");
            debug[..debug.find([' ', '(', '{']).unwrap_or(debug.len())].to_string()
        });
        prop_assert_eq!(name.as_deref(), expected_fault(snapshot, commit, &pgnos), "{:?}", result);
    }
}
