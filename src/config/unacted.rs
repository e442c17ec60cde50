//! The keys ltxd accepts, as LiteFS does, but does not act on yet. `ltxd mount` logs one warning
//! at start-up for each one a configuration sets to something other than its default, so that
//! nobody relies on a feature silently missing. When a feature lands, its row goes.

use super::{defaults, BackupType, Config};

/// One key (or section) that is accepted but not acted on.
pub struct Unacted {
    /// The key or section, as written in the file (`tracing.*`).
    pub key: &'static str,
    /// Whether this configuration sets it.
    pub set: fn(&Config) -> bool,
    /// What the user gets instead.
    pub instead: &'static str,
}

/// Every accepted key ltxd does not act on yet.
pub const UNACTED: &[Unacted] = &[
    Unacted {
        key: "proxy.read-timeout",
        set: |c| !c.proxy.read_timeout.is_zero(),
        instead: "the proxy puts no time limit on reading a request body",
    },
    Unacted {
        key: "proxy.write-timeout",
        set: |c| !c.proxy.write_timeout.is_zero(),
        instead: "the proxy puts no time limit on writing a response",
    },
    Unacted {
        key: "proxy.idle-timeout",
        set: |c| c.proxy.idle_timeout != defaults::PROXY_IDLE_TIMEOUT,
        instead: "the proxy keeps idle client connections open until the client closes them",
    },
    Unacted {
        key: "backup.type: litefs-cloud",
        set: |c| c.backup.kind == Some(BackupType::LitefsCloud),
        instead: "no backup is made (LiteFS Cloud has shut down; backup.type: s3 or file back up)",
    },
    Unacted {
        key: "exit-on-error",
        set: |c| c.exit_on_error != defaults::EXIT_ON_ERROR,
        instead: "ltxd exits on a start-up error",
    },
    Unacted {
        key: "strict-verify",
        set: |c| c.strict_verify,
        instead: "checksums are verified as usual, not recomputed after every commit",
    },
    Unacted {
        key: "fuse.debug",
        set: |c| c.fuse.debug,
        instead: "FUSE requests are not logged (LTXD_LOG=ltxd::mount=trace shows them)",
    },
    Unacted {
        key: "http.snapshot-timeout",
        set: |c| !c.http.snapshot_timeout.is_zero(),
        instead: "building a snapshot has no time limit",
    },
    Unacted {
        key: "lease.databases",
        set: |c| !c.lease.databases.is_empty(),
        instead: "every database is replicated",
    },
    Unacted {
        key: "tracing.*",
        set: |c| c.tracing.enabled && !c.tracing.path.is_empty(),
        instead: "no trace log is written (LTXD_LOG=trace logs the same events to stderr)",
    },
];

impl Config {
    /// The rows of [`UNACTED`] this configuration sets.
    pub fn unacted(&self) -> Vec<&'static Unacted> {
        UNACTED.iter().filter(|row| (row.set)(self)).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{BackupType, Config, LeaseType};

    #[test]
    fn defaults_set_nothing_and_each_row_can_be_set() {
        assert!(Config::new(LeaseType::Static).unacted().is_empty());
        let mut config = Config::new(LeaseType::Static);
        config.proxy.read_timeout = std::time::Duration::from_secs(1);
        config.proxy.write_timeout = std::time::Duration::from_secs(1);
        config.proxy.idle_timeout = std::time::Duration::from_secs(1);
        config.backup.kind = Some(BackupType::LitefsCloud);
        config.exit_on_error = false;
        config.strict_verify = true;
        config.fuse.debug = true;
        config.http.snapshot_timeout = std::time::Duration::from_secs(1);
        config.lease.databases = vec!["db".into()];
        config.tracing.path = "/tmp/trace.log".into();
        let keys: Vec<_> = config.unacted().iter().map(|row| row.key).collect();
        assert_eq!(keys.len(), super::UNACTED.len(), "{keys:?}");
    }
}
