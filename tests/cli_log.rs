//! `ltxd log ...` and `ltxd restore`, run as an operator would.

use std::path::Path;

use assert_cmd::Command;
use ltxd::ltx::{Format, PageSize};
use ltxd::workload::SyntheticDatabase;

fn ltxd() -> Command {
    Command::cargo_bin("ltxd").unwrap()
}

fn output(cmd: &mut Command) -> String {
    String::from_utf8(cmd.assert().success().get_output().stdout.clone()).unwrap()
}

/// Writes `n` consecutive transactions as LTX files and returns their paths and the database
/// file after the last one.
fn ltx_files(dir: &Path, n: usize) -> (Vec<std::path::PathBuf>, Vec<u8>) {
    let mut db = SyntheticDatabase::new(PageSize::new(4096).unwrap(), Format::V3, 4, 21);
    let paths = (0..n)
        .map(|_| {
            let bytes = db.next_transaction(3).unwrap();
            let path = dir.join(ltxd::ltx::file_name(db.txid(), db.txid()));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    (paths, db.file_bytes())
}

#[test]
fn import_list_verify_export_compact_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let files_dir = dir.path().join("in");
    std::fs::create_dir(&files_dir).unwrap();
    let (files, final_db) = ltx_files(&files_dir, 30);

    ltxd()
        .args(["log", "import", "--db", "app.db", "--data-dir"])
        .arg(&data)
        .args(&files[..20])
        .assert()
        .success();
    // A gap in the chain is refused, naming the problem.
    ltxd()
        .args(["log", "import", "--db", "app.db", "--data-dir"])
        .arg(&data)
        .arg(&files[25])
        .assert()
        .failure()
        .stderr(predicates::str::contains("does not follow the log head"));
    ltxd()
        .args(["log", "import", "--db", "app.db", "--data-dir"])
        .arg(&data)
        .args(&files[20..])
        .assert()
        .success();

    let list = output(ltxd().args(["log", "list", "--data-dir"]).arg(&data));
    assert_eq!(list.lines().count(), 31, "{list}");
    let json: serde_json::Value = serde_json::from_str(&output(
        ltxd()
            .args(["log", "list", "--json", "--data-dir"])
            .arg(&data),
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 30);

    let verify = output(ltxd().args(["log", "verify", "--data-dir"]).arg(&data));
    assert!(verify.contains("app.db: ok (30 records"), "{verify}");

    let restored = dir.path().join("restored.db");
    ltxd()
        .args(["restore", "--db", "app.db", "-o"])
        .arg(&restored)
        .arg("--data-dir")
        .arg(&data)
        .assert()
        .success();
    assert_eq!(std::fs::read(&restored).unwrap(), final_db);

    let export = dir.path().join("export");
    ltxd()
        .args(["log", "export", "--db", "app.db", "--out"])
        .arg(&export)
        .arg("--data-dir")
        .arg(&data)
        .assert()
        .success();
    let mut exported: Vec<_> = std::fs::read_dir(&export)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    exported.sort();
    assert_eq!(exported.len(), 30);
    assert_eq!(exported[0], "0000000000000001-0000000000000001.ltx");
    for (path, original) in exported.iter().zip(&files) {
        assert_eq!(
            std::fs::read(export.join(path)).unwrap(),
            std::fs::read(original).unwrap()
        );
    }

    let compact = output(
        ltxd()
            .args(["log", "compact", "--db", "app.db", "--data-dir"])
            .arg(&data),
    );
    assert!(
        compact.contains("snapshot at TXID 000000000000001e"),
        "{compact}"
    );
    ltxd()
        .args(["log", "verify", "--data-dir"])
        .arg(&data)
        .assert()
        .success();
    ltxd()
        .args(["restore", "--db", "app.db", "--txid", "30", "-o"])
        .arg(&restored)
        .arg("--data-dir")
        .arg(&data)
        .assert()
        .success();
    assert_eq!(std::fs::read(&restored).unwrap(), final_db);
}

#[test]
fn verify_exits_1_and_names_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (files, _) = ltx_files(dir.path(), 5);
    ltxd()
        .args(["log", "import", "--db", "app.db", "--data-dir"])
        .arg(&data)
        .args(&files)
        .assert()
        .success();
    let segment = data.join("dbs/app.db/segments/0000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[300] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();
    let assert = ltxd()
        .args(["log", "verify", "--data-dir"])
        .arg(&data)
        .assert()
        .failure()
        .code(1);
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(out.contains("checksum mismatch"), "{out}");
}

#[test]
fn restore_refuses_a_point_the_log_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (files, _) = ltx_files(dir.path(), 3);
    ltxd()
        .args(["log", "import", "--db", "app.db", "--data-dir"])
        .arg(&data)
        .args(&files)
        .assert()
        .success();
    ltxd()
        .args([
            "restore",
            "--db",
            "app.db",
            "--txid",
            "9",
            "-o",
            "x.db",
            "--data-dir",
        ])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicates::str::contains("cannot be restored"));
    ltxd()
        .args(["restore", "--db", "nope.db", "-o", "x.db", "--data-dir"])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicates::str::contains("no database"));
}
