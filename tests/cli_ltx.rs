//! The `ltxd ltx` commands, run as a user would, against the reference tools' outputs.

mod common;

use common::{fixture, ltx_fixtures};

use assert_cmd::Command;

/// The reference snapshot (TXID 1) and incremental file (TXID 2) of fixture `name` in `format`.
fn snapshot_and_incremental(format: &str, name: &str) -> [std::path::PathBuf; 2] {
    [
        fixture(&format!(
            "{format}/{name}-snapshot-0000000000000001-0000000000000001.ltx"
        )),
        fixture(&format!(
            "{format}/{name}-incr-0000000000000002-0000000000000002.ltx"
        )),
    ]
}

fn ltxd() -> Command {
    Command::cargo_bin("ltxd").unwrap()
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

/// Splits a table row on runs of two or more spaces (a cell may hold one space).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

/// The rows the reference printed for one directory, from `out/list.txt`.
fn reference_rows(section_marker: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(fixture("out/list.txt")).unwrap();
    let section = text
        .split("# ltx list")
        .find(|s| s.contains(section_marker))
        .unwrap();
    section
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(cells)
        .collect()
}

#[test]
fn list_columns_equal_the_reference_tool() {
    for (dir, marker, version) in [("v1", "v1 files", "v1"), ("v3", "v3 files", "v3")] {
        let files = ltx_fixtures(dir);
        let out = stdout(ltxd().args(["ltx", "list"]).args(&files));
        let ours: Vec<Vec<String>> = out.lines().map(cells).collect();
        let reference = reference_rows(marker);
        assert_eq!(ours.len(), reference.len(), "{dir}: row count");
        for (ours, reference) in ours.iter().zip(&reference) {
            assert_eq!(&ours[..ours.len() - 1], &reference[..], "{dir}");
        }
        assert!(ours[1..].iter().all(|row| row.last().unwrap() == version));
    }
}

#[test]
fn checksum_equals_the_reference_tool() {
    let reference = std::fs::read_to_string(fixture("out/checksum.txt")).unwrap();
    for db in ["tiny.db", "tiny2.db", "small.db", "small2.db"] {
        let expected = reference
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{db}: ")))
            .map(|rest| rest[..16].to_string())
            .unwrap();
        let out = stdout(ltxd().args(["ltx", "checksum"]).arg(fixture(db)));
        assert_eq!(out.trim(), expected, "{db}");
    }
}

#[test]
fn dump_shows_the_reference_header_frames_and_trailer() {
    let file = "v1/tiny-incr-0000000000000002-0000000000000002.ltx";
    let out = stdout(ltxd().args(["ltx", "dump"]).arg(fixture(file)));
    let reference = std::fs::read_to_string(fixture(
        "out/v1-tiny-incr-0000000000000002-0000000000000002.dump.txt",
    ))
    .unwrap();
    for line in reference.lines().filter(|l| !l.is_empty()) {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
}

#[test]
fn apply_of_snapshot_then_incremental_reproduces_the_target_database() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["v1", "v3"] {
        for (name, target) in [("tiny", "tiny2.db"), ("small", "small2.db")] {
            let db = dir.path().join(format!("{format}-{name}.db"));
            ltxd()
                .args(["ltx", "apply", "--db"])
                .arg(&db)
                .args(snapshot_and_incremental(format, name))
                .assert()
                .success();
            assert_eq!(
                std::fs::read(&db).unwrap(),
                std::fs::read(fixture(target)).unwrap()
            );
        }
    }
}

#[test]
fn apply_refuses_a_broken_chain_and_leaves_the_database_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("small.db");
    std::fs::copy(fixture("small.db"), &db).unwrap();
    let before = std::fs::read(&db).unwrap();
    ltxd()
        .args(["ltx", "apply", "--db"])
        .arg(&db)
        .arg(fixture(
            "v1/tiny-incr-0000000000000002-0000000000000002.ltx",
        ))
        .assert()
        .failure()
        .stderr(predicates::str::contains("pre-apply checksum"));
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn encode_db_v1_reproduces_the_reference_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny", "small"] {
        let reference = fixture(&format!(
            "v1/{name}-snapshot-0000000000000001-0000000000000001.ltx"
        ));
        let json = stdout(ltxd().args(["ltx", "list", "--json"]).arg(&reference));
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        let timestamp = parsed[0]["header"]["timestamp"].as_i64().unwrap();
        let out = dir.path().join(format!("{name}.ltx"));
        ltxd()
            .args([
                "ltx",
                "encode-db",
                "--format",
                "v1",
                "--timestamp",
                &timestamp.to_string(),
                "-o",
            ])
            .arg(&out)
            .arg(fixture(&format!("{name}.db")))
            .assert()
            .success();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&reference).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn encoded_snapshots_in_every_format_apply_back_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--format", "v1"][..],
        &["--format", "v1", "--compress"],
        &["--format", "v3"],
    ] {
        let out = dir.path().join("snap.ltx");
        let db = dir.path().join("copy.db");
        let _ = std::fs::remove_file(&db);
        ltxd()
            .args(["ltx", "encode-db"])
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg(fixture("small2.db"))
            .assert()
            .success();
        ltxd().args(["ltx", "verify"]).arg(&out).assert().success();
        ltxd()
            .args(["ltx", "apply", "--db"])
            .arg(&db)
            .arg(&out)
            .assert()
            .success();
        assert_eq!(
            std::fs::read(&db).unwrap(),
            std::fs::read(fixture("small2.db")).unwrap(),
            "{args:?}"
        );
    }
}

#[test]
fn compact_merges_snapshot_and_incremental_into_one_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["v1", "v3"] {
        let out = dir.path().join(format!("{format}.ltx"));
        ltxd()
            .args(["ltx", "compact", "-o"])
            .arg(&out)
            .args(snapshot_and_incremental(format, "small"))
            .assert()
            .success();
        let db = dir.path().join(format!("{format}.db"));
        ltxd()
            .args(["ltx", "apply", "--db"])
            .arg(&db)
            .arg(&out)
            .assert()
            .success();
        assert_eq!(
            std::fs::read(&db).unwrap(),
            std::fs::read(fixture("small2.db")).unwrap()
        );
    }
}

#[test]
fn verify_reports_each_file_and_fails_on_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixture("v1/tiny-incr-0000000000000002-0000000000000002.ltx");
    let bad = dir.path().join("bad.ltx");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&bad, bytes).unwrap();
    let assert = ltxd()
        .args(["ltx", "verify"])
        .arg(&good)
        .arg(&bad)
        .assert()
        .failure()
        .code(1);
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(out.contains(": ok"), "{out}");
    assert!(out.contains("file checksum mismatch"), "{out}");
    assert!(out.contains("1 ok, 1 invalid"), "{out}");

    let json = ltxd()
        .args(["ltx", "verify", "--json"])
        .arg(&good)
        .arg(&bad)
        .assert()
        .failure();
    let parsed: serde_json::Value = serde_json::from_slice(&json.get_output().stdout).unwrap();
    assert_eq!(parsed[0]["ok"], true);
    assert_eq!(parsed[1]["ok"], false);
}

#[test]
fn dump_json_lists_pages_with_offsets() {
    let file = fixture("v3/tiny-incr-0000000000000002-0000000000000002.ltx");
    let out = stdout(ltxd().args(["ltx", "dump", "--json"]).arg(&file));
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pages: Vec<u64> = parsed["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pgno"].as_u64().unwrap())
        .collect();
    assert_eq!(pages, [1, 2, 3]);
    assert_eq!(parsed["pages"][0]["offset"], 100);
    assert_eq!(parsed["trailer"]["file_checksum"], "9cfb46abdd81bb9d");
}
