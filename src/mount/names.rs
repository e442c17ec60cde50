//! The names in the mount's flat root directory, and the inode numbers behind them.

use crate::layout::DatabaseFile;

/// The kind of file a name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The SQLite database file.
    Database,
    /// Its rollback journal (`<db>-journal`).
    Journal,
    /// Its write-ahead log (`<db>-wal`).
    Wal,
    /// Its WAL index (`<db>-shm`).
    Shm,
    /// Its position, `TXID/checksum` (`<db>-pos`, read-only, virtual).
    Pos,
}

impl FileKind {
    const ALL: [FileKind; 5] = [
        FileKind::Database,
        FileKind::Journal,
        FileKind::Wal,
        FileKind::Shm,
        FileKind::Pos,
    ];

    fn suffix(self) -> &'static str {
        match self {
            FileKind::Database => "",
            FileKind::Journal => "-journal",
            FileKind::Wal => "-wal",
            FileKind::Shm => "-shm",
            FileKind::Pos => "-pos",
        }
    }

    /// The file behind it in the database's directory in the data directory.
    pub fn backing_file(self) -> Option<DatabaseFile> {
        match self {
            FileKind::Database => Some(DatabaseFile::Database),
            FileKind::Journal => Some(DatabaseFile::Journal),
            FileKind::Wal => Some(DatabaseFile::Wal),
            FileKind::Shm => Some(DatabaseFile::Shm),
            FileKind::Pos => None,
        }
    }

    /// The name of this file of database `db` in the mount.
    pub fn name_for(self, db: &str) -> String {
        format!("{db}{}", self.suffix())
    }

    fn index(self) -> u64 {
        FileKind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u64
    }
}

/// What a name in the mount refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// A file of a database.
    File(String, FileKind),
    /// `.primary`: the primary's hostname, on replicas.
    Primary,
    /// `.lag`: how far behind the primary a replica is, in milliseconds.
    Lag,
}

/// Parses a name in the mount's root directory.
pub fn parse(name: &str) -> Option<Name> {
    match name {
        ".primary" => return Some(Name::Primary),
        ".lag" => return Some(Name::Lag),
        _ => {}
    }
    if name.starts_with('.') || name.is_empty() || name.contains('/') {
        return None;
    }
    for kind in [
        FileKind::Journal,
        FileKind::Wal,
        FileKind::Shm,
        FileKind::Pos,
    ] {
        if let Some(db) = name.strip_suffix(kind.suffix()).filter(|db| !db.is_empty()) {
            return Some(Name::File(db.to_string(), kind));
        }
    }
    Some(Name::File(name.to_string(), FileKind::Database))
}

/// The root directory's inode.
pub const ROOT_INO: u64 = 1;
/// The `.primary` file's inode.
pub const PRIMARY_INO: u64 = 2;
/// The `.lag` file's inode.
pub const LAG_INO: u64 = 3;
const FIRST_DB_INO: u64 = 16;
const INOS_PER_DB: u64 = 8;

/// The inode of file `kind` of the database with index `db`.
pub fn inode(db: usize, kind: FileKind) -> u64 {
    FIRST_DB_INO + db as u64 * INOS_PER_DB + kind.index()
}

/// The database index and file kind of an inode, if it names a database file.
pub fn from_inode(ino: u64) -> Option<(usize, FileKind)> {
    let rel = ino.checked_sub(FIRST_DB_INO)?;
    let kind = *FileKind::ALL.get((rel % INOS_PER_DB) as usize)?;
    Some(((rel / INOS_PER_DB) as usize, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_inodes_round_trip() {
        assert_eq!(
            parse("app.db-wal"),
            Some(Name::File("app.db".into(), FileKind::Wal))
        );
        assert_eq!(
            parse("app.db"),
            Some(Name::File("app.db".into(), FileKind::Database))
        );
        assert_eq!(parse(".primary"), Some(Name::Primary));
        assert_eq!(parse(".lag"), Some(Name::Lag));
        assert_eq!(
            parse("-wal"),
            Some(Name::File("-wal".into(), FileKind::Database))
        );
        assert_eq!(parse(".hidden"), None);
        for kind in FileKind::ALL {
            assert_eq!(from_inode(inode(3, kind)), Some((3, kind)));
        }
        assert_eq!(from_inode(ROOT_INO), None);
    }
}
