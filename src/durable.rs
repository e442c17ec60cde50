//! The one path for durable writes: write a temporary file beside the target, fsync it, rename
//! it over the target, and fsync the directory. Crash tests target this module.
//!
//! A reader of the target sees either the old file or the complete new one, never a mix, and
//! once [`write_atomically`] returns the new file survives a crash.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `path` atomically and durably. `fill` writes the contents through a buffer; if it
/// fails, the target is untouched and the temporary file is removed.
pub fn write_atomically<T, E>(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<io::Error>,
{
    write_file_atomically(path, |file| {
        let mut writer = BufWriter::with_capacity(256 * 1024, file);
        let value = fill(&mut writer)?;
        writer.flush()?;
        Ok(value)
    })
}

/// Like [`write_atomically`], but `fill` gets the temporary file itself, to seek or to write at
/// offsets. It must leave the complete contents in the file.
pub fn write_file_atomically<T, E>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<io::Error>,
{
    let dir = parent_dir(path);
    let mut temp = tempfile::Builder::new()
        .prefix(".ltxd-")
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    let value = fill(temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_dir(&dir)?;
    Ok(value)
}

/// Makes the finished file `temp` durable and moves it over `target`: fsync, rename, and fsync
/// the directory.
pub fn persist(temp: &Path, target: &Path) -> io::Result<()> {
    File::open(temp)?.sync_all()?;
    fs::rename(temp, target)?;
    sync_dir(&parent_dir(target))
}

/// Fsyncs a directory, making renames and creations inside it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Fsyncs a file that was written in place.
pub fn sync_file(file: &File) -> io::Result<()> {
    file.sync_all()
}

/// Creates a directory and its parents, fsyncing each parent that gained an entry.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }?;
    sync_dir(&parent_dir(dir))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_the_target_untouched_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        fs::write(&target, b"old").unwrap();
        let result: Result<(), io::Error> = write_atomically(&target, |w| {
            w.write_all(b"new but broken")?;
            Err(io::Error::other("fail"))
        });
        assert!(result.is_err());
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_successful_fill_replaces_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        write_atomically(&target, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
    }
}
