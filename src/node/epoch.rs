//! The highest lease epoch this node has seen, kept in a small fsynced file so that fencing
//! survives a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a primary's stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The primary's epoch is older than one this node has already seen: it was deposed.
    #[error("fenced: the primary's lease epoch {epoch} is older than epoch {seen}, already seen")]
    Fenced {
        /// The primary's epoch.
        epoch: u64,
        /// The highest epoch seen.
        seen: u64,
    },
    /// The epoch file could not be read or written.
    #[error("the epoch file {path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        err: std::io::Error,
    },
}

/// The highest epoch seen, in `<data-dir>/epoch`.
#[derive(Debug)]
pub struct EpochFile {
    path: PathBuf,
    seen: Mutex<u64>,
}

impl EpochFile {
    /// Reads the file in `data_dir` (an absent file means epoch 0).
    pub fn open(data_dir: &Path) -> Result<EpochFile, EpochError> {
        let path = crate::layout::Layout::new(data_dir).epoch_file();
        let io = |err| EpochError::Io {
            path: path.clone(),
            err,
        };
        let seen = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not an epoch: {text:?}"),
                ))
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(io(err)),
        };
        Ok(EpochFile {
            path,
            seen: Mutex::new(seen),
        })
    }

    /// The highest epoch seen.
    pub fn seen(&self) -> u64 {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts a stream or lease of `epoch`: refuses one older than the highest seen, and
    /// makes a newer one durable before returning.
    pub fn observe(&self, epoch: u64) -> Result<(), EpochError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if epoch < *seen {
            return Err(EpochError::Fenced { epoch, seen: *seen });
        }
        if epoch > *seen {
            crate::durable::write_atomically(&self.path, |out| {
                std::io::Write::write_all(out, format!("{epoch}\n").as_bytes())
            })
            .map_err(|err: std::io::Error| EpochError::Io {
                path: self.path.clone(),
                err,
            })?;
            *seen = epoch;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_only_move_forward_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = EpochFile::open(dir.path()).unwrap();
        assert_eq!(epochs.seen(), 0);
        epochs.observe(5).unwrap();
        epochs.observe(5).unwrap();
        assert!(matches!(
            epochs.observe(4),
            Err(EpochError::Fenced { epoch: 4, seen: 5 })
        ));
        let reopened = EpochFile::open(dir.path()).unwrap();
        assert_eq!(reopened.seen(), 5);
        assert!(reopened.observe(3).is_err());
        std::fs::write(dir.path().join("epoch"), "garbage").unwrap();
        assert!(EpochFile::open(dir.path()).is_err());
    }
}
