//! The on-disk layout of a data directory: the one place that knows where each file lives.
//!
//! ```text
//! <data-dir>/ltxd.lock                        held by the one process that has the log open
//! <data-dir>/epoch                            the highest lease epoch seen
//! <data-dir>/clusterid                        the cluster ID, in LiteFS's format
//! <data-dir>/index/                           sled: a cache of where records live (deletable)
//! <data-dir>/spool/                           received LTX files waiting to be applied (emptied on open)
//! <data-dir>/dbs/<db>/segments/<min>.seg      records of TXIDs from <min> on
//! <data-dir>/dbs/<db>/snapshots/<max>.seg     one snapshot record (TXID 1 to <max>)
//! <data-dir>/dbs/<db>/{database,journal,wal,shm}  the database's files behind the mount
//! ```
//!
//! Every path is built here and nowhere else; durable changes to these files go through
//! [`crate::durable`].

use std::path::{Path, PathBuf};

use crate::ltx::TxId;

/// The layout of one data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lock file held by the process that has the log open.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("ltxd.lock")
    }

    /// The file holding the highest lease epoch seen.
    pub fn epoch_file(&self) -> PathBuf {
        self.root.join("epoch")
    }

    /// The file holding the cluster ID.
    pub fn cluster_id_file(&self) -> PathBuf {
        self.root.join("clusterid")
    }

    /// The sled index's directory.
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// Where a replica spools the LTX files it receives before applying them.
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// The directory holding one directory per database.
    pub fn databases_dir(&self) -> PathBuf {
        self.root.join("dbs")
    }

    /// The layout of database `name`'s directory. The name must already be valid (a plain file
    /// name; see [`crate::log::Log::database`]).
    pub fn database(&self, name: &str) -> DatabaseLayout {
        DatabaseLayout::new(self.databases_dir().join(name))
    }
}

/// The layout of one database's directory, `<data-dir>/dbs/<db>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseLayout {
    dir: PathBuf,
}

/// Which of its two directories a log file lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFileKind {
    /// A segment of the chain, `segments/<min>.seg`.
    Segment,
    /// A snapshot, `snapshots/<max>.seg`.
    Snapshot,
}

/// The database's own files, which the mount passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseFile {
    /// The database file.
    Database,
    /// The rollback journal.
    Journal,
    /// The write-ahead log.
    Wal,
    /// The WAL's shared-memory index.
    Shm,
}

impl DatabaseFile {
    /// The file's name in the database's directory.
    pub fn file_name(self) -> &'static str {
        match self {
            DatabaseFile::Database => "database",
            DatabaseFile::Journal => "journal",
            DatabaseFile::Wal => "wal",
            DatabaseFile::Shm => "shm",
        }
    }
}

impl DatabaseLayout {
    /// The layout of the database directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> DatabaseLayout {
        DatabaseLayout { dir: dir.into() }
    }

    /// The database's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the chain's segments.
    pub fn segments_dir(&self) -> PathBuf {
        self.dir.join("segments")
    }

    /// The directory of the snapshots.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// The directory of log files of `kind`.
    pub fn log_dir(&self, kind: LogFileKind) -> PathBuf {
        match kind {
            LogFileKind::Segment => self.segments_dir(),
            LogFileKind::Snapshot => self.snapshots_dir(),
        }
    }

    /// The segment whose first TXID is `min`.
    pub fn segment(&self, min: TxId) -> PathBuf {
        self.log_file(LogFileKind::Segment, min)
    }

    /// The snapshot whose last TXID is `max`.
    pub fn snapshot(&self, max: TxId) -> PathBuf {
        self.log_file(LogFileKind::Snapshot, max)
    }

    /// The log file of `kind` named by `id`.
    pub fn log_file(&self, kind: LogFileKind, id: TxId) -> PathBuf {
        self.log_dir(kind).join(log_file_name(id))
    }

    /// One of the database's own files.
    pub fn file(&self, file: DatabaseFile) -> PathBuf {
        self.dir.join(file.file_name())
    }

    /// The database file.
    pub fn database_file(&self) -> PathBuf {
        self.file(DatabaseFile::Database)
    }

    /// The rollback journal.
    pub fn journal(&self) -> PathBuf {
        self.file(DatabaseFile::Journal)
    }

    /// The write-ahead log.
    pub fn wal(&self) -> PathBuf {
        self.file(DatabaseFile::Wal)
    }

    /// The WAL's shared-memory index.
    pub fn shm(&self) -> PathBuf {
        self.file(DatabaseFile::Shm)
    }
}

/// The file name of a segment or snapshot named by `id`.
pub fn log_file_name(id: TxId) -> String {
    format!("{id}.seg")
}

/// Parses a segment or snapshot file name back into its TXID.
pub fn parse_log_file_name(name: &str) -> Option<TxId> {
    name.strip_suffix(".seg")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_where_the_architecture_says() {
        let layout = Layout::new("/data");
        assert_eq!(layout.lock_file(), Path::new("/data/ltxd.lock"));
        assert_eq!(layout.epoch_file(), Path::new("/data/epoch"));
        assert_eq!(layout.cluster_id_file(), Path::new("/data/clusterid"));
        assert_eq!(layout.index_dir(), Path::new("/data/index"));
        assert_eq!(layout.spool_dir(), Path::new("/data/spool"));
        let db = layout.database("app.db");
        assert_eq!(db.dir(), Path::new("/data/dbs/app.db"));
        assert_eq!(
            db.segment(TxId(0x10)),
            Path::new("/data/dbs/app.db/segments/0000000000000010.seg")
        );
        assert_eq!(
            db.snapshot(TxId(0x20)),
            Path::new("/data/dbs/app.db/snapshots/0000000000000020.seg")
        );
        assert_eq!(db.wal(), Path::new("/data/dbs/app.db/wal"));
    }

    #[test]
    fn log_file_names_round_trip() {
        let name = log_file_name(TxId(0xabc));
        assert_eq!(parse_log_file_name(&name), Some(TxId(0xabc)));
        assert_eq!(parse_log_file_name("0000000000000abc.tmp"), None);
        assert_eq!(parse_log_file_name("zz.seg"), None);
    }
}
