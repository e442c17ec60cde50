//! Every reference fixture decodes, verifies, and matches the reference tools' outputs.

mod common;

use common::{fixture, ltx_fixtures};

use ltxd::ltx::{self, Checksum, Format, TxId};

#[test]
fn every_fixture_verifies_and_its_format_is_detected() {
    for (dir, format) in [("v1", Format::V1), ("v3", Format::V3)] {
        for path in ltx_fixtures(dir) {
            let verified =
                ltx::verify_file(&path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(verified.format, format, "{}", path.display());
        }
    }
}

#[test]
fn the_other_format_rejects_each_fixture_with_an_error() {
    for (dir, wrong) in [("v1", Format::V3), ("v3", Format::V1)] {
        for path in ltx_fixtures(dir) {
            assert!(
                ltx::verify_file(&path, Some(wrong)).is_err(),
                "{}",
                path.display()
            );
        }
    }
}

/// Header and trailer fields from `out/*.dump.txt` and `out/list.txt`.
#[test]
fn fields_and_checksums_equal_the_reference_dumps() {
    let cases = [
        (
            "v1/tiny-incr-0000000000000002-0000000000000002.ltx",
            3,
            2,
            0xc3e399840f9bcef7,
            0xa96b0eceae84c65f,
            Some(0x8065c89d515fcc20),
        ),
        (
            "v3/tiny-incr-0000000000000002-0000000000000002.ltx",
            3,
            2,
            0xc3e399840f9bcef7,
            0xa96b0eceae84c65f,
            Some(0x9cfb46abdd81bb9d),
        ),
        (
            "v3/small-incr-0000000000000002-0000000000000002.ltx",
            18,
            2,
            0x8e0795f88b195270,
            0xf2deab91e5306fab,
            Some(0x8a64a21e07d56c82),
        ),
        (
            "v1/small-incr-0000000000000002-0000000000000002.ltx",
            18,
            2,
            0x8e0795f88b195270,
            0xf2deab91e5306fab,
            None,
        ),
        (
            "v1/small-snapshot-0000000000000001-0000000000000001.ltx",
            18,
            1,
            0,
            0x8e0795f88b195270,
            None,
        ),
        (
            "v3/tiny-snapshot-fixedts-0000000000000001-0000000000000001.ltx",
            2,
            1,
            0,
            0xc3e399840f9bcef7,
            None,
        ),
    ];
    for (rel, commit, txid, pre, post, file) in cases {
        let v = ltx::verify_file(&fixture(rel), None).unwrap();
        assert_eq!(v.header.commit, commit, "{rel}");
        assert_eq!(v.header.min_txid, TxId(txid), "{rel}");
        assert_eq!(v.header.pre_apply_checksum, Checksum(pre), "{rel}");
        assert_eq!(v.trailer.post_apply_checksum, Checksum(post), "{rel}");
        if let Some(file) = file {
            assert_eq!(v.trailer.file_checksum, Checksum(file), "{rel}");
        }
    }
}

/// Inputs that once crashed a decoder (found by fuzzing or review) are rejected cleanly.
#[test]
fn regression_inputs_are_rejected_without_panicking() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        for format in [None, Some(Format::V1), Some(Format::V3)] {
            let _ = ltx::verify_file(&path, format);
        }
        count += 1;
    }
    assert!(count > 0);
}
