//! The durable LTX log: per database, an append-only chain of LTX records in segment files, plus
//! snapshot files. The LTX data on disk is the truth; the sled index is a cache of where records
//! live, checked on open and rebuilt from the segments when missing or stale.
//!
//! Where the files live is [`crate::layout`]'s; every fsync, rename and unlink goes through
//! [`crate::durable`].

mod compaction;
mod database_log;
mod error;
mod index;
mod policy;
mod recovery;
mod restore;
mod retention;
mod segment;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use compaction::Compacted;
pub use database_log::{
    CursorError, DatabaseLog, EncodedLtx, LogCursor, LogRecord, ReadFrom, SEGMENT_TARGET_LEN,
};
pub use error::LogError;
pub use policy::{Level, Policy};
pub use restore::{restore, restore_plan, txid_at_time};
pub use retention::{Maintained, Retained};
pub use segment::{Record, RECORD_HEADER_LEN};
pub use verify::Verification;

use crate::layout::Layout;
use index::Index;

/// The logs of every database in one data directory.
pub struct Log {
    layout: Layout,
    _lock: std::fs::File,
    index: Arc<Index>,
    databases: Mutex<HashMap<String, Arc<DatabaseLog>>>,
    /// Counts changes to any database's head, and new databases.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Log {
    /// Opens the log in `data_dir`, recovering every database found there.
    ///
    /// One process at a time may open a data directory: a second gets [`LogError::InUse`].
    pub fn open(data_dir: &Path) -> Result<Log, LogError> {
        let layout = Layout::new(data_dir);
        crate::durable::create_dir_all(&layout.databases_dir())?;
        let lock = std::fs::File::create(layout.lock_file())?;
        lock.try_lock()
            .map_err(|_| LogError::InUse(data_dir.to_path_buf()))?;
        let index = Arc::new(Index::open(&layout.index_dir())?);
        let databases_dir = layout.databases_dir();
        let log = Log {
            layout,
            _lock: lock,
            index,
            databases: Mutex::new(HashMap::new()),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        };
        clear_spool(&log.layout.spool_dir())?;
        for entry in std::fs::read_dir(databases_dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if let Some(name) = entry.file_name().to_str() {
                    log.database(name)?;
                }
            }
        }
        Ok(log)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.layout.root()
    }

    /// The data directory's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Where a replica spools the LTX files it receives before applying them. Opening the log
    /// empties it: only the process holding the data directory's lock writes there.
    pub fn spool_dir(&self) -> PathBuf {
        self.layout.spool_dir()
    }

    /// The log of database `name`, opened (and created) on first use.
    pub fn database(&self, name: &str) -> Result<Arc<DatabaseLog>, LogError> {
        validate_name(name)?;
        let mut databases = self.databases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = databases.get(name) {
            return Ok(Arc::clone(db));
        }
        let span = tracing::info_span!("open", db = name);
        let _enter = span.enter();
        let db = Arc::new(DatabaseLog::open(
            name,
            self.layout.database(name),
            Arc::clone(&self.index),
            Arc::clone(&self.changes),
        )?);
        databases.insert(name.to_string(), Arc::clone(&db));
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
        Ok(db)
    }

    /// The log of an existing database.
    pub fn existing(&self, name: &str) -> Result<Arc<DatabaseLog>, LogError> {
        validate_name(name)?;
        if !self.layout.database(name).dir().is_dir() {
            return Err(LogError::NoDatabase(name.to_string()));
        }
        self.database(name)
    }

    /// The names of the databases, sorted.
    pub fn database_names(&self) -> Vec<String> {
        let databases = self.databases.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = databases.keys().cloned().collect();
        names.sort();
        names
    }

    /// A receiver that sees a change whenever any database's head moves or a database is added.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Flushes the index cache. Durability never depends on this.
    pub fn flush_index(&self) -> Result<(), LogError> {
        Ok(self.index.flush()?)
    }
}

/// A database name must be a plain file name: SQLite databases live flat in the mount.
fn validate_name(name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(LogError::BadName(name.to_string()))
    }
}

/// Removes what a previous process left in the spool directory, creating it if needed. Spooled
/// files are never durable state: a replica fetches a file again after a crash.
fn clear_spool(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    crate::durable::create_dir_all(dir)
}
