use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use super::{Action, Disk, Op, Trap, ROOT};

/// A live directory and a store beside it.
struct Bench {
    _dir: tempfile::TempDir,
    live: PathBuf,
    store: PathBuf,
}

fn bench() -> Bench {
    let dir = tempfile::Builder::new()
        .prefix("lossyfs-unit-")
        .tempdir()
        .unwrap();
    let live = dir.path().join("live");
    fs::create_dir(&live).unwrap();
    let store = dir.path().join("store");
    Bench {
        live,
        store,
        _dir: dir,
    }
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Every file under `dir`, with its contents, sorted.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                walk(root, &path, out);
            } else {
                out.push((rel, fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn crash(mut disk: Disk) {
    disk.power_off("test".into());
    let report = disk.finish().unwrap();
    assert_eq!(report.power_cut.as_deref(), Some("test"));
}

fn file(n: &str, data: &[u8]) -> (String, Vec<u8>) {
    (n.to_string(), data.to_vec())
}

#[test]
fn an_unsynced_write_is_lost_and_a_synced_one_kept() {
    let b = bench();
    fs::write(b.live.join("f"), b"old contents").unwrap();
    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let ino = disk.lookup(ROOT, name("f")).unwrap();
    let fh = disk.open(ino, true).unwrap();
    disk.write(fh, 0, b"NEW").unwrap();
    assert_eq!(fs::read(b.live.join("f")).unwrap(), b"NEW contents");
    crash(disk);
    assert_eq!(contents(&b.live), vec![file("f", b"old contents")]);

    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let ino = disk.lookup(ROOT, name("f")).unwrap();
    let fh = disk.open(ino, true).unwrap();
    disk.write(fh, 0, b"NEW").unwrap();
    disk.fsync(ino, Some(fh)).unwrap();
    disk.write(fh, 4, b"CONTENTS").unwrap();
    crash(disk);
    assert_eq!(contents(&b.live), vec![file("f", b"NEW contents")]);
}

#[test]
fn a_new_file_needs_its_directory_synced_to_survive() {
    let b = bench();
    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let (ino, fh) = disk.create(ROOT, name("new"), 0o644, true).unwrap();
    disk.write(fh, 0, b"data").unwrap();
    disk.fsync(ino, Some(fh)).unwrap();
    crash(disk);
    assert_eq!(contents(&b.live), vec![]);

    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let (_, fh) = disk.create(ROOT, name("new"), 0o644, true).unwrap();
    disk.fsyncdir(ROOT).unwrap();
    disk.write(fh, 0, b"data").unwrap();
    crash(disk);
    // The name survived, the unsynced data did not.
    assert_eq!(contents(&b.live), vec![file("new", b"")]);
}

#[test]
fn a_rename_survives_only_once_its_directory_is_synced() {
    let b = bench();
    fs::write(b.live.join("target"), b"old").unwrap();
    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let (ino, fh) = disk.create(ROOT, name("tmp"), 0o600, true).unwrap();
    disk.write(fh, 0, b"new").unwrap();
    disk.fsync(ino, Some(fh)).unwrap();
    disk.rename(ROOT, name("tmp"), ROOT, name("target"), false)
        .unwrap();
    assert_eq!(contents(&b.live), vec![file("target", b"new")]);
    crash(disk);
    assert_eq!(contents(&b.live), vec![file("target", b"old")]);

    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let (ino, fh) = disk.create(ROOT, name("tmp"), 0o600, true).unwrap();
    disk.write(fh, 0, b"new").unwrap();
    disk.fsync(ino, Some(fh)).unwrap();
    disk.rename(ROOT, name("tmp"), ROOT, name("target"), false)
        .unwrap();
    disk.fsyncdir(ROOT).unwrap();
    crash(disk);
    assert_eq!(contents(&b.live), vec![file("target", b"new")]);
}

#[test]
fn an_unlink_is_undone_without_a_directory_sync() {
    let b = bench();
    fs::create_dir(b.live.join("d")).unwrap();
    fs::write(b.live.join("d/a"), b"a").unwrap();
    fs::write(b.live.join("d/b"), b"b").unwrap();
    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let d = disk.lookup(ROOT, name("d")).unwrap();
    // A file still open after its unlink keeps working.
    let a = disk.lookup(d, name("a")).unwrap();
    let fh = disk.open(a, true).unwrap();
    disk.unlink(d, name("a")).unwrap();
    disk.write(fh, 1, b"a2").unwrap();
    assert_eq!(disk.read(fh, 0, 10).unwrap(), b"aa2");
    disk.unlink(d, name("b")).unwrap();
    crash(disk);
    assert_eq!(
        contents(&b.live),
        vec![("d/".into(), vec![]), file("d/a", b"a"), file("d/b", b"b")]
    );

    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let d = disk.lookup(ROOT, name("d")).unwrap();
    disk.unlink(d, name("a")).unwrap();
    disk.fsyncdir(d).unwrap();
    disk.unlink(d, name("b")).unwrap();
    crash(disk);
    assert_eq!(
        contents(&b.live),
        vec![("d/".into(), vec![]), file("d/b", b"b")]
    );
}

#[test]
fn a_new_directory_keeps_only_synced_entries() {
    let b = bench();
    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let d = disk.mkdir(ROOT, name("d"), 0o755).unwrap();
    let (f, fh) = disk.create(d, name("f"), 0o644, true).unwrap();
    disk.write(fh, 0, b"x").unwrap();
    disk.fsync(f, Some(fh)).unwrap();
    disk.fsyncdir(ROOT).unwrap();
    crash(disk);
    assert_eq!(contents(&b.live), vec![("d/".into(), vec![])]);
}

#[test]
fn truncation_is_durable_only_once_synced() {
    let b = bench();
    fs::write(b.live.join("f"), b"0123456789").unwrap();
    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let ino = disk.lookup(ROOT, name("f")).unwrap();
    disk.truncate(ino, None, 4).unwrap();
    crash(disk);
    assert_eq!(contents(&b.live), vec![file("f", b"0123456789")]);

    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let ino = disk.lookup(ROOT, name("f")).unwrap();
    let fh = disk.open(ino, true).unwrap();
    disk.truncate(ino, Some(fh), 4).unwrap();
    // Growing again reads zeros, not the old bytes.
    disk.truncate(ino, Some(fh), 6).unwrap();
    disk.fsync(ino, Some(fh)).unwrap();
    crash(disk);
    assert_eq!(contents(&b.live), vec![file("f", b"0123\0\0")]);
}

#[test]
fn a_clean_finish_keeps_everything() {
    let b = bench();
    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let (_, fh) = disk.create(ROOT, name("f"), 0o644, true).unwrap();
    disk.write(fh, 0, b"kept").unwrap();
    let report = disk.finish().unwrap();
    assert_eq!(report.power_cut, None);
    assert_eq!(report.counts["create"], 1);
    assert_eq!(report.counts["write"], 1);
    assert_eq!(contents(&b.live), vec![file("f", b"kept")]);
    assert!(!b.store.exists());
}

#[test]
fn the_trap_cuts_the_power_at_the_nth_matching_operation() {
    let b = bench();
    fs::create_dir(b.live.join("logs")).unwrap();
    let trap = Trap {
        ops: vec![Op::Fsync],
        path_contains: "logs".into(),
        nth: 2,
        action: Action::CutPower,
    };
    let mut disk = Disk::new(&b.live, &b.store, Some(trap)).unwrap();
    let logs = disk.lookup(ROOT, name("logs")).unwrap();
    let (other, ofh) = disk.create(ROOT, name("other"), 0o644, true).unwrap();
    disk.fsync(other, Some(ofh)).unwrap();
    let (f, fh) = disk.create(logs, name("f"), 0o644, true).unwrap();
    disk.fsyncdir(logs).unwrap();
    disk.write(fh, 0, b"one").unwrap();
    disk.fsync(f, Some(fh)).unwrap();
    disk.write(fh, 3, b"two").unwrap();
    let err = disk.fsync(f, Some(fh)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(disk.power_cut().unwrap().contains("fsync #2"));
    // Everything fails from now on, reads included.
    assert!(disk.read(fh, 0, 3).is_err());
    assert!(disk.write(fh, 0, b"x").is_err());
    let report = disk.finish().unwrap();
    assert_eq!(report.counts["fsync"], 2);
    assert_eq!(report.counts["fsyncdir"], 1);
    assert_eq!(
        contents(&b.live),
        vec![("logs/".into(), vec![]), file("logs/f", b"one")]
    );
}

#[test]
fn renaming_a_directory_moves_what_is_under_it() {
    let b = bench();
    fs::create_dir_all(b.live.join("a/b")).unwrap();
    fs::write(b.live.join("a/b/f"), b"f").unwrap();
    let mut disk = Disk::new(&b.live, &b.store, None).unwrap();
    let a = disk.lookup(ROOT, name("a")).unwrap();
    disk.rename(ROOT, name("a"), ROOT, name("c"), false)
        .unwrap();
    assert_eq!(disk.lookup(ROOT, name("c")).unwrap(), a);
    let bdir = disk.lookup(a, name("b")).unwrap();
    let f = disk.lookup(bdir, name("f")).unwrap();
    assert_eq!(disk.live_path(f).unwrap(), b.live.join("c/b/f"));
    disk.fsyncdir(ROOT).unwrap();
    crash(disk);
    assert_eq!(
        contents(&b.live),
        vec![
            ("c/".into(), vec![]),
            ("c/b/".into(), vec![]),
            file("c/b/f", b"f")
        ]
    );
}

#[test]
fn a_kill_trap_fails_one_operation_and_keeps_the_power_on() {
    let b = bench();
    let trap = Trap {
        ops: vec![Op::Fsyncdir],
        path_contains: String::new(),
        nth: 1,
        action: Action::KillCaller,
    };
    let mut disk = Disk::new(&b.live, &b.store, Some(trap)).unwrap();
    let (_, fh) = disk.create(ROOT, name("f"), 0o644, true).unwrap();
    assert!(disk.fsyncdir(ROOT).is_err());
    assert!(disk.killed().unwrap().contains("fsyncdir #1"));
    assert_eq!(disk.power_cut(), None);
    // The trap is spent; the next sync works, and what was written stays.
    disk.write(fh, 0, b"kept").unwrap();
    disk.fsyncdir(ROOT).unwrap();
    let report = disk.finish().unwrap();
    assert!(report.killed.is_some());
    assert_eq!(contents(&b.live), vec![file("f", b"kept")]);
}
