//! When the log compacts, snapshots and forgets.

use std::time::Duration;

/// How a database's log is compacted and retained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Time levels, youngest first: records at least `min_age` old are merged per aligned
    /// `window`. Younger records stay individual.
    pub levels: Vec<Level>,
    /// Take a snapshot once the records after the newest one hold this many bytes.
    pub snapshot_after_bytes: u64,
    /// Take a snapshot once the newest one is this old and records follow it.
    pub snapshot_interval: Duration,
    /// Records and snapshots older than this may be dropped (the newest snapshot and the chain
    /// after it are always kept).
    pub retention: Duration,
    /// Keep the log under this many bytes, even if a connected replica then needs a snapshot.
    pub max_bytes: Option<u64>,
    /// Start a new segment once the active one is this old.
    pub segment_max_age: Duration,
}

/// One compaction level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// How old a record must be to be merged at this level.
    pub min_age: Duration,
    /// The aligned window whose records merge into one.
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        let level = |min_age, window| Level {
            min_age: Duration::from_secs(min_age),
            window: Duration::from_secs(window),
        };
        Policy {
            levels: vec![level(30, 30), level(300, 300), level(3600, 3600)],
            snapshot_after_bytes: 64 << 20,
            snapshot_interval: Duration::from_secs(3600),
            retention: Duration::from_secs(600),
            max_bytes: None,
            segment_max_age: Duration::from_secs(600),
        }
    }
}

impl Policy {
    /// The default policy with a retention period of `retention`. Segments are sealed at least
    /// that often, since retention drops whole sealed segments.
    pub fn with_retention(retention: Duration) -> Policy {
        let default = Policy::default();
        Policy {
            retention,
            segment_max_age: default.segment_max_age.min(retention),
            ..default
        }
    }

    /// The merge window for a record of age `age`, or `None` when it stays individual.
    pub fn window_for(&self, age: Duration) -> Option<Duration> {
        self.levels
            .iter()
            .rev()
            .find(|l| age >= l.min_age)
            .map(|l| l.window)
    }
}
