//! lossyfs mounted for real: files written through the kernel, then the power cut.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ltxd_lossyfs::{Action, Mounted, Op, Trap};

struct Dirs {
    _dir: tempfile::TempDir,
    live: PathBuf,
    store: PathBuf,
    mnt: PathBuf,
}

fn dirs() -> Dirs {
    let dir = tempfile::Builder::new()
        .prefix("lossyfs-mount-")
        .tempdir()
        .unwrap();
    let (live, store, mnt) = (
        dir.path().join("live"),
        dir.path().join("store"),
        dir.path().join("mnt"),
    );
    fs::create_dir(&live).unwrap();
    Dirs {
        live,
        store,
        mnt,
        _dir: dir,
    }
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[test]
fn only_synced_data_and_names_survive_a_power_cut() {
    let d = dirs();
    fs::write(d.live.join("old"), b"before").unwrap();
    let mounted = Mounted::mount(&d.live, &d.store, &d.mnt, None).unwrap();
    let m = mounted.mountpoint().to_path_buf();
    assert_eq!(fs::read(m.join("old")).unwrap(), b"before");

    // A durable file: data synced, then its name.
    let mut kept = File::create(m.join("kept")).unwrap();
    kept.write_all(b"durable").unwrap();
    kept.sync_data().unwrap();
    sync_dir(&m);
    kept.write_all(b" and lost").unwrap();
    // A name made durable, its data never synced.
    fs::write(m.join("empty"), b"never synced").unwrap();
    sync_dir(&m);
    // An overwrite of an old file, unsynced.
    OpenOptions::new()
        .write(true)
        .open(m.join("old"))
        .unwrap()
        .write_all(b"AFTER!")
        .unwrap();
    // A directory with a synced file, whose own entry is synced.
    fs::create_dir(m.join("dir")).unwrap();
    sync_dir(&m);
    let mut inner = File::create(m.join("dir/inner")).unwrap();
    inner.write_all(b"inner").unwrap();
    inner.sync_all().unwrap();
    sync_dir(&m.join("dir"));
    // A file whose data was synced but whose name was not.
    let mut nameless = File::create(m.join("nameless")).unwrap();
    nameless.write_all(b"x").unwrap();
    nameless.sync_all().unwrap();
    drop((kept, nameless, inner));
    assert_eq!(fs::read(m.join("kept")).unwrap(), b"durable and lost");

    mounted.power_off("test");
    assert!(
        fs::read(m.join("kept")).is_err(),
        "reads fail once the power is cut"
    );
    let report = mounted.unmount().unwrap();
    assert_eq!(report.power_cut.as_deref(), Some("test"));

    let mut names: Vec<String> = fs::read_dir(&d.live)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "empty", "kept", "old"]);
    assert_eq!(fs::read(d.live.join("kept")).unwrap(), b"durable");
    assert_eq!(fs::read(d.live.join("empty")).unwrap(), b"");
    assert_eq!(fs::read(d.live.join("old")).unwrap(), b"before");
    assert_eq!(fs::read(d.live.join("dir/inner")).unwrap(), b"inner");
}

#[test]
fn an_atomic_replace_is_old_or_new_and_a_trap_stops_everything_after_it() {
    let d = dirs();
    fs::write(d.live.join("target"), b"old").unwrap();
    let trap = Trap {
        ops: vec![Op::Fsyncdir],
        path_contains: String::new(),
        nth: 2,
        action: Action::CutPower,
    };
    let mounted = Mounted::mount(&d.live, &d.store, &d.mnt, Some(trap)).unwrap();
    let m = mounted.mountpoint().to_path_buf();
    for (i, contents) in [b"new1", b"new2"].iter().enumerate() {
        let temp = m.join(format!(".tmp{i}"));
        let mut file = File::create(&temp).unwrap();
        file.write_all(*contents).unwrap();
        file.sync_all().unwrap();
        fs::rename(&temp, m.join("target")).unwrap();
        let synced = File::open(&m).unwrap().sync_all();
        assert_eq!(
            synced.is_ok(),
            i == 0,
            "the second directory sync cuts the power"
        );
    }
    assert!(mounted.power_cut().unwrap().contains("fsyncdir #2"));
    let report = mounted.unmount().unwrap();
    assert_eq!(report.counts["fsyncdir"], 2);
    assert_eq!(fs::read(d.live.join("target")).unwrap(), b"new1");
    assert_eq!(fs::read_dir(&d.live).unwrap().count(), 1);
}

#[test]
fn a_clean_unmount_keeps_everything() {
    let d = dirs();
    let mounted = Mounted::mount(&d.live, &d.store, &d.mnt, None).unwrap();
    fs::write(mounted.mountpoint().join("f"), b"unsynced but kept").unwrap();
    let report = mounted.unmount().unwrap();
    assert_eq!(report.power_cut, None);
    assert_eq!(fs::read(d.live.join("f")).unwrap(), b"unsynced but kept");
    assert!(!d.store.exists());
}
