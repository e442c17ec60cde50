//! The cluster ID, LiteFS's guard against joining the wrong cluster: `"LFSC"` and 16 uppercase
//! hex digits, kept in `<data-dir>/clusterid` (fsynced) and, where the backend can, with the
//! lease.
//!
//! A primary publishes its ID on the lease if none is set there (generating one if it has none).
//! A replica adopts the ID of the first primary it streams from and refuses a primary whose ID
//! differs. A node without an ID may not become primary of a cluster whose lease has one: it has
//! never been part of that cluster, so its data cannot be the cluster's.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// Why a cluster ID was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterIdError {
    /// The other side belongs to another cluster.
    #[error("cluster ID mismatch: this node belongs to {local}, the other side to {remote}")]
    Mismatch {
        /// This node's ID.
        local: String,
        /// The other side's.
        remote: String,
    },
    /// Not a cluster ID.
    #[error("invalid cluster ID {0:?}: expected \"LFSC\" and 16 hex digits")]
    Invalid(String),
    /// The file could not be read or written.
    #[error("the cluster ID file {path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        err: std::io::Error,
    },
}

/// The prefix of every cluster ID.
const PREFIX: &str = "LFSC";

/// This node's cluster ID, in `<data-dir>/clusterid`.
#[derive(Debug)]
pub struct ClusterIdFile {
    path: PathBuf,
    id: Mutex<Option<String>>,
}

impl ClusterIdFile {
    /// Reads the file in `data_dir` (absent: no ID yet).
    pub fn open(data_dir: &Path) -> Result<ClusterIdFile, ClusterIdError> {
        let path = crate::layout::Layout::new(data_dir).cluster_id_file();
        let id = match std::fs::read_to_string(&path) {
            Ok(text) => Some(validate(text.trim())?),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(ClusterIdError::Io { path, err }),
        };
        Ok(ClusterIdFile {
            path,
            id: Mutex::new(id),
        })
    }

    /// The ID, if this node has one.
    pub fn get(&self) -> Option<String> {
        self.id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Accepts `remote`, another node's or the lease's ID: adopts it (durably) if this node has
    /// none, and refuses it if it differs from this node's.
    pub fn accept(&self, remote: &str) -> Result<(), ClusterIdError> {
        let remote = validate(remote)?;
        let mut id = self.id.lock().unwrap_or_else(PoisonError::into_inner);
        match id.as_deref() {
            Some(local) if local == remote => Ok(()),
            Some(local) => Err(ClusterIdError::Mismatch {
                local: local.to_string(),
                remote,
            }),
            None => {
                self.write(&remote)?;
                tracing::info!(cluster_id = remote, "joined the cluster");
                *id = Some(remote);
                Ok(())
            }
        }
    }

    /// This node's ID, generated (durably) if it has none.
    pub fn get_or_generate(&self) -> Result<String, ClusterIdError> {
        let mut id = self.id.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = id.as_ref() {
            return Ok(id.clone());
        }
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).map_err(|err| ClusterIdError::Io {
            path: self.path.clone(),
            err: std::io::Error::other(err.to_string()),
        })?;
        let new = format!("{PREFIX}{:016X}", u64::from_be_bytes(bytes));
        self.write(&new)?;
        tracing::info!(cluster_id = new, "generated a cluster ID");
        *id = Some(new.clone());
        Ok(new)
    }

    fn write(&self, id: &str) -> Result<(), ClusterIdError> {
        crate::durable::write_atomically(&self.path, |out| {
            std::io::Write::write_all(out, format!("{id}\n").as_bytes())
        })
        .map_err(|err: std::io::Error| ClusterIdError::Io {
            path: self.path.clone(),
            err,
        })
    }
}

/// `id` if it is `"LFSC"` and 16 hex digits.
fn validate(id: &str) -> Result<String, ClusterIdError> {
    let valid = id.len() == PREFIX.len() + 16
        && id.starts_with(PREFIX)
        && id[PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit());
    if valid {
        Ok(id.to_string())
    } else {
        Err(ClusterIdError::Invalid(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_generated_or_adopted_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let file = ClusterIdFile::open(dir.path()).unwrap();
        assert_eq!(file.get(), None);
        let id = file.get_or_generate().unwrap();
        assert!(validate(&id).is_ok(), "{id}");
        assert_eq!(file.get_or_generate().unwrap(), id);
        file.accept(&id).unwrap();
        assert!(matches!(
            file.accept("LFSC0000000000000001"),
            Err(ClusterIdError::Mismatch { .. })
        ));
        assert_eq!(ClusterIdFile::open(dir.path()).unwrap().get(), Some(id));

        let other = tempfile::tempdir().unwrap();
        let file = ClusterIdFile::open(other.path()).unwrap();
        file.accept("LFSC00000000000000AB").unwrap();
        assert_eq!(
            ClusterIdFile::open(other.path()).unwrap().get().as_deref(),
            Some("LFSC00000000000000AB")
        );
    }

    #[test]
    fn malformed_ids_are_refused_from_disk_and_from_peers() {
        let dir = tempfile::tempdir().unwrap();
        let file = ClusterIdFile::open(dir.path()).unwrap();
        for bad in [
            "",
            "LFSC",
            "LFSC000000000000000G",
            "XXXX0000000000000000",
            "LFSC00000000000000001",
        ] {
            assert!(
                matches!(file.accept(bad), Err(ClusterIdError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(file.get(), None);
        std::fs::write(dir.path().join("clusterid"), "garbage\n").unwrap();
        assert!(matches!(
            ClusterIdFile::open(dir.path()),
            Err(ClusterIdError::Invalid(_))
        ));
    }
}
