//! Corrupted reference fixtures never verify: every single-byte change, every truncation and any
//! trailing garbage gives an `Err` from format detection plus a full decode, never `Ok` and never
//! a panic. (The one exception, LZ4 bytes that still expand to the same pages, is explained at
//! [`every_byte_xor_ff_is_rejected`].)
//!
//! Coverage and speed: a fixture of at most [`EXHAUSTIVE_MAX_LEN`] bytes has every byte flipped
//! with XOR 0xff and XOR 0x01 and is truncated at every length. Doing that to the larger `small-*`
//! fixtures (5-74 KB) too takes about 190 s in debug, so by default every byte of their header,
//! of every page frame header (v1: the 4-byte pgno; v3: pgno, flags and size) and of their last
//! [`TAIL_LEN`] bytes (end marker, v3 page index and its size, trailer) is covered, and the rest
//! (page data) is sampled every [`BODY_STRIDE`] bytes (XOR 0x01: every `2 * BODY_STRIDE + 1`), odd
//! strides so that the samples fall at every position within a page. The whole file then runs in
//! about 10 s on an idle 2-core machine. Set the environment variable named by
//! [`EXHAUSTIVE_ENV`] for the full run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use ltxd::ltx::{
    detect_format, verify_file, Decoder, Format, Header, LtxError, PageNo, Section, Trailer,
    Verified, HEADER_LEN, TRAILER_LEN,
};

/// Fixtures up to this size are corrupted at every byte and truncated at every length.
const EXHAUSTIVE_MAX_LEN: usize = 16 * 1024;
/// Set (to anything) to treat every fixture exhaustively: about 3 minutes in debug on one core.
const EXHAUSTIVE_ENV: &str = "LTXD_CORRUPTION_EXHAUSTIVE";
/// Bytes at the end of every fixture that are always covered.
const TAIL_LEN: usize = 256;
/// The sampling stride through the page data of the larger fixtures.
const BODY_STRIDE: usize = 61;

struct Fixture {
    name: String,
    format: Format,
    bytes: Vec<u8>,
    /// File offsets of the bytes that hold structure rather than page data.
    structural: BTreeSet<usize>,
    /// File offsets of LZ4-compressed bytes: the v1 LZ4 frame, or the v3 page blocks.
    compressed: BTreeSet<usize>,
    /// The decoded header, pages and trailer.
    content: Content,
}

impl Fixture {
    fn is_exhaustive(&self) -> bool {
        self.bytes.len() <= EXHAUSTIVE_MAX_LEN || std::env::var_os(EXHAUSTIVE_ENV).is_some()
    }

    /// The offsets to corrupt: all of them for small fixtures, else structure plus a sample.
    fn offsets(&self, stride: usize) -> BTreeSet<usize> {
        if self.is_exhaustive() {
            return (0..self.bytes.len()).collect();
        }
        let mut offsets = self.structural.clone();
        offsets.extend((0..self.bytes.len()).step_by(stride));
        offsets
    }
}

fn fixtures() -> Vec<Fixture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ltx");
    let mut all = Vec::new();
    for (dir, format) in [("v1", Format::V1), ("v3", Format::V3)] {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "ltx"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            let (structural, compressed) = layout(&bytes, format);
            all.push(Fixture {
                name: format!("{dir}/{}", path.file_name().unwrap().to_string_lossy()),
                format,
                content: decode_content(&bytes, format).unwrap(),
                bytes,
                structural,
                compressed,
            });
        }
    }
    assert_eq!(
        all.len(),
        11,
        "expected the 6 v1 and 5 v3 reference fixtures"
    );
    all
}

/// The offsets of the structure (the header, every page frame header when frames are at file
/// offsets, i.e. not inside a v1 LZ4 frame, and the tail of the file) and of the LZ4 data.
fn layout(bytes: &[u8], format: Format) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let mut structural: BTreeSet<usize> = (0..HEADER_LEN).collect();
    structural.extend(bytes.len().saturating_sub(TAIL_LEN)..bytes.len());
    let mut compressed = BTreeSet::new();
    let mut decoder = Decoder::new(Cursor::new(bytes), format).unwrap();
    if decoder.header().is_compressed() {
        compressed.extend(HEADER_LEN..bytes.len() - TRAILER_LEN);
        return (structural, compressed);
    }
    let frame_header_len = match format {
        Format::V1 => 4,
        Format::V3 => 10,
    };
    let mut page = vec![0u8; decoder.page_size().bytes()];
    while let Some(frame) = decoder.next_page(&mut page).unwrap() {
        let (start, end) = (frame.offset as usize, (frame.offset + frame.size) as usize);
        structural.extend(start..start + frame_header_len);
        if format == Format::V3 {
            compressed.extend(start + frame_header_len..end);
        }
    }
    (structural, compressed)
}

/// Everything a decoder reports about a file.
#[derive(Debug, PartialEq, Eq)]
struct Content {
    header: Header,
    pages: Vec<(PageNo, Vec<u8>)>,
    trailer: Trailer,
}

fn decode_content(bytes: &[u8], format: Format) -> Result<Content, LtxError> {
    let mut decoder = Decoder::new(Cursor::new(bytes), format)?;
    let header = decoder.header().clone();
    let mut pages = Vec::new();
    let mut page = vec![0u8; decoder.page_size().bytes()];
    while let Some(frame) = decoder.next_page(&mut page)? {
        pages.push((frame.pgno, page.clone()));
    }
    let trailer = decoder.finish()?;
    Ok(Content {
        header,
        pages,
        trailer,
    })
}

/// What `verify_file(path, None)` does, on bytes in memory.
fn detect_and_verify(bytes: &[u8]) -> Result<Verified, LtxError> {
    let mut cursor = Cursor::new(bytes);
    let format = detect_format(&mut cursor)?;
    Decoder::new(cursor, format)?.verify()
}

/// Decodes `bytes` with format detection and returns the error; fails the test on `Ok` or a panic.
fn expect_rejected(bytes: &[u8], what: &dyn Fn() -> String) -> LtxError {
    match catch_unwind(AssertUnwindSafe(|| detect_and_verify(bytes))) {
        Ok(Err(e)) => e,
        Ok(Ok(verified)) => panic!("{} was accepted: {verified:?}", what()),
        Err(_) => panic!("{} made the decoder panic", what()),
    }
}

/// The variant name of an error, for tallies.
fn variant(e: &LtxError) -> String {
    let debug = format!("{e:?}");
    let end = debug.find([' ', '(', '{']).unwrap_or(debug.len());
    debug[..end].to_string()
}

/// Flips bytes one at a time and tallies the errors. The only change allowed to verify is one
/// inside LZ4 data that decompresses to the very same pages (see
/// [`every_byte_xor_ff_is_rejected`]).
fn flip_and_expect_rejected(fixture: &Fixture, mask: u8, stride: usize) -> BTreeMap<String, usize> {
    let mut copy = fixture.bytes.clone();
    let mut tally = BTreeMap::new();
    for at in fixture.offsets(stride) {
        copy[at] ^= mask;
        let what = || format!("{} with byte {at} XOR 0x{mask:02x}", fixture.name);
        let outcome = match catch_unwind(AssertUnwindSafe(|| detect_and_verify(&copy))) {
            Ok(Err(e)) => variant(&e),
            Ok(Ok(_)) if fixture.compressed.contains(&at) => {
                let content = decode_content(&copy, fixture.format);
                assert_eq!(content.as_ref().ok(), Some(&fixture.content), "{}", what());
                "Ok: same pages from other LZ4 bytes".to_string()
            }
            Ok(Ok(verified)) => panic!("{} was accepted: {verified:?}", what()),
            Err(_) => panic!("{} made the decoder panic", what()),
        };
        *tally.entry(outcome).or_default() += 1;
        copy[at] ^= mask;
    }
    tally
}

#[test]
fn the_fixtures_verify_before_they_are_corrupted() {
    for fixture in fixtures() {
        let verified =
            detect_and_verify(&fixture.bytes).unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
        assert_eq!(verified.format, fixture.format, "{}", fixture.name);
    }
}

/// Every flip is rejected, with one exception that no LTX decoder can catch: LZ4 is not a
/// canonical encoding and the file checksum covers the *uncompressed* pages, so a change to the
/// compressed bytes that still expands to the same pages leaves a file that is valid and means
/// exactly what the original did: for example a match offset into a run of zeros, where many
/// offsets copy the same zeros. It happens for a handful of bytes of the compressed fixtures
/// (see `docs/fuzzing.md`). The test checks that such a file decodes to the original header,
/// pages and trailer.
#[test]
fn every_byte_xor_ff_is_rejected() {
    for fixture in fixtures() {
        let tally = flip_and_expect_rejected(&fixture, 0xff, BODY_STRIDE);
        println!("{} XOR 0xff: {tally:?}", fixture.name);
    }
}

/// A one-bit change is the subtlest corruption; sampled twice as sparsely in the page data.
#[test]
fn every_byte_xor_01_is_rejected() {
    for fixture in fixtures() {
        let tally = flip_and_expect_rejected(&fixture, 0x01, 2 * BODY_STRIDE + 1);
        println!("{} XOR 0x01: {tally:?}", fixture.name);
    }
}

/// Bytes 80..100 are reserved and no decoder looks at them, but the file checksum covers them.
#[test]
fn reserved_header_bytes_are_covered_by_the_file_checksum() {
    for fixture in fixtures() {
        for at in 80..HEADER_LEN {
            for mask in [0x01, 0x80, 0xff] {
                let mut copy = fixture.bytes.clone();
                copy[at] ^= mask;
                let e = expect_rejected(&copy, &|| format!("{} byte {at}", fixture.name));
                assert!(
                    matches!(e, LtxError::FileChecksumMismatch { .. }),
                    "{} byte {at} XOR 0x{mask:02x}: {e:?}",
                    fixture.name
                );
            }
        }
    }
}

/// Truncation errors seen with format detection (`-- --nocapture` prints the tallies):
/// - a cut inside the header: `Truncated(Header)`;
/// - v1 LZ4 files: always `Truncated(..)`, as header flag 0x1 alone selects v1;
/// - other files: nearly always `UnknownFormat` (a cut file fits neither layout, so detection
///   decodes it both ways and reports both failures), except for a few cuts of plain v1 files
///   whose tail happens to fit the v3 layout; the v3 decoder then reports `BadPageFlags`.
///
/// With the format named, every cut gives `Truncated` with the section that was cut: `Header`,
/// `Pages` (page frames, the end marker, and the whole LZ4 frame of a v1 LZ4 file, except
/// that a cut inside its 4-byte end mark shows as `Trailer`), `PageIndex` (v3) or `Trailer`.
#[test]
fn every_truncation_is_rejected() {
    for fixture in fixtures() {
        let len = fixture.bytes.len();
        let lengths: BTreeSet<usize> = if fixture.is_exhaustive() {
            (0..len).collect()
        } else {
            // Every cut in and around the structure, and a sample of cuts through page data.
            let mut cuts: BTreeSet<usize> = fixture
                .structural
                .iter()
                .flat_map(|&at| [at, at + 1])
                .filter(|&cut| cut < len)
                .collect();
            cuts.extend((0..len).step_by(BODY_STRIDE));
            cuts
        };
        let (mut detected, mut named) = (BTreeMap::new(), BTreeMap::new());
        for cut in lengths {
            let prefix = &fixture.bytes[..cut];
            let what = || format!("{} cut to {cut} bytes", fixture.name);
            let e = expect_rejected(prefix, &what);
            if cut < HEADER_LEN {
                assert!(
                    matches!(e, LtxError::Truncated(Section::Header)),
                    "{}: {e:?}",
                    what()
                );
            }
            *detected.entry(variant(&e)).or_insert(0) += 1;

            let section =
                match Decoder::new(Cursor::new(prefix), fixture.format).and_then(|d| d.verify()) {
                    Err(LtxError::Truncated(section)) => section,
                    other => panic!("{} as {}: {other:?}", what(), fixture.format),
                };
            let expected = if cut < HEADER_LEN {
                Some(Section::Header)
            } else if cut >= len - TRAILER_LEN {
                Some(Section::Trailer)
            } else {
                None
            };
            assert!(
                expected.is_none_or(|s| s == section),
                "{} as {}: Truncated({section:?})",
                what(),
                fixture.format
            );
            *named.entry(format!("{section:?}")).or_insert(0) += 1;
        }
        println!(
            "{} truncated: detected {detected:?}; named {named:?}",
            fixture.name
        );
    }
}

/// Bytes after the trailer: detection may fail either way, but with the format named the error
/// is always `TrailingData`, even after the LZ4 frame of a v1 LZ4 file.
#[test]
fn trailing_garbage_is_rejected() {
    for fixture in fixtures() {
        let trailer = fixture.bytes[fixture.bytes.len() - TRAILER_LEN..].to_vec();
        let suffixes: [(&str, Vec<u8>); 6] = [
            ("one zero byte", vec![0]),
            ("one 0xff byte", vec![0xff]),
            ("a zero v1 end marker", vec![0; 4]),
            ("a zero v3 end marker", vec![0; 6]),
            ("a second trailer", trailer),
            ("the whole file again", fixture.bytes.clone()),
        ];
        for (name, suffix) in suffixes {
            let mut bytes = fixture.bytes.clone();
            bytes.extend_from_slice(&suffix);
            let what = || format!("{} followed by {name}", fixture.name);
            expect_rejected(&bytes, &what);
            match Decoder::new(Cursor::new(&bytes), fixture.format).and_then(|d| d.verify()) {
                Err(LtxError::TrailingData) => {}
                other => panic!("{} as {}: {other:?}", what(), fixture.format),
            }
        }
    }
}

/// The in-memory check above is `verify_file` without the file: both agree on corrupt files.
#[test]
fn verify_file_agrees_with_the_in_memory_check() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in fixtures() {
        let len = fixture.bytes.len();
        let mut flipped = fixture.bytes.clone();
        flipped[HEADER_LEN / 2] ^= 0xff;
        let mut garbage = fixture.bytes.clone();
        garbage.push(0);
        for (case, bytes) in [
            ("flipped", flipped),
            ("truncated", fixture.bytes[..len - 1].to_vec()),
            ("garbage", garbage),
        ] {
            let path = dir.path().join(format!("{case}.ltx"));
            std::fs::write(&path, &bytes).unwrap();
            let from_file = verify_file(&path, None).unwrap_err();
            let in_memory = detect_and_verify(&bytes).unwrap_err();
            assert_eq!(
                from_file.to_string(),
                in_memory.to_string(),
                "{} {case}",
                fixture.name
            );
        }
    }
}
