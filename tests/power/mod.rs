//! The rig of the power-loss tests: a lossyfs mount over a live directory, crash points, and
//! waiting for the power to go.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use ltxd_lossyfs::{Action, Mounted, Op, Trap};

/// How long a trap may take to fire before the test gives up (a guard against hanging, not a
/// timing assertion: traps fire within a second or two).
const TRAP_DEADLINE: Duration = Duration::from_secs(120);

/// A temporary directory holding lossyfs's live directory, its store, its mount point and
/// scratch space.
pub struct Rig {
    dir: tempfile::TempDir,
}

impl Rig {
    /// A fresh rig; `name` makes its directory recognisable.
    pub fn new(name: &str) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ltxd-power-{name}-"))
            .tempdir()
            .unwrap();
        for sub in ["live", "scratch"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Rig { dir }
    }

    /// The live directory: after an unmount, what survived.
    pub fn live(&self) -> PathBuf {
        self.dir.path().join("live")
    }

    /// Space outside lossyfs.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// Where lossyfs is mounted.
    pub fn mountpoint(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Mounts lossyfs over the live directory, with `trap` armed.
    pub fn mount(&self, trap: Option<Trap>) -> Mounted {
        Mounted::mount(
            &self.live(),
            &self.dir.path().join("store"),
            &self.mountpoint(),
            trap,
        )
        .unwrap()
    }
}

/// Where a crash point cuts the power: just before the n-th of `ops` on a path containing
/// `path`, n drawn from 1 to `max_nth`.
pub struct Scenario {
    /// What the crash interrupts.
    pub name: &'static str,
    ops: &'static [Op],
    path: &'static str,
    max_nth: u64,
    /// Armed before the node starts rather than once it runs.
    pub before_start: bool,
}

impl Scenario {
    /// A scenario.
    pub const fn new(
        name: &'static str,
        ops: &'static [Op],
        path: &'static str,
        max_nth: u64,
    ) -> Scenario {
        Scenario {
            name,
            ops,
            path,
            max_nth,
            before_start: false,
        }
    }

    /// A scenario armed before the node starts.
    pub const fn before_start(self) -> Scenario {
        Scenario {
            before_start: true,
            ..self
        }
    }

    /// A trap for one crash point.
    pub fn trap(&self, rng: &mut XorShift) -> Trap {
        Trap {
            ops: self.ops.to_vec(),
            path_contains: self.path.to_string(),
            nth: 1 + rng.next() % self.max_nth,
            action: Action::CutPower,
        }
    }
}

/// `short` crash points, or `long` with `LTXD_LONG=1`.
pub fn crash_points(short: usize, long: usize) -> usize {
    if std::env::var_os("LTXD_LONG").is_some() {
        long
    } else {
        short
    }
}

/// Waits for the trap to cut the power. Panics if `process` exits first or the trap never fires.
pub fn wait_for_power_cut(mounted: &Mounted, process: &mut Child, label: &str) {
    let start = Instant::now();
    while mounted.power_cut().is_none() {
        if let Some(status) = process.try_wait().unwrap() {
            panic!("{label}: the process exited ({status}) before the power was cut");
        }
        assert!(
            start.elapsed() < TRAP_DEADLINE,
            "{label}: the trap never fired: {:?}",
            mounted.report().counts
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A small deterministic random number generator.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
