//! Every durable operation: the one module that calls fsync, fdatasync, rename, unlink and
//! directory syncs for the files of a data directory. Where the files are is
//! [`crate::layout`]'s business; how a change to them survives a power loss is this module's.
//!
//! The rules it follows (POSIX promises no more):
//! - a file's data and size are durable only after an fsync or fdatasync of the file;
//! - a name created, renamed or removed in a directory is durable only after an fsync of the
//!   directory;
//! - a file replaced with [`write_atomically`] is written beside the target, synced, renamed over
//!   it, and the directory synced, so a reader (or a restart) sees the old file or the complete
//!   new one, never a mix.

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

/// Fsyncs a file that was written in place: its data and all of its metadata.
pub fn sync_file(file: &File) -> io::Result<()> {
    file.sync_all()
}

/// Fdatasyncs a file that was written in place: its data, and its size when it changed.
pub fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Creates `path`, which must not exist, opened for reading and writing, and makes the empty
/// file and its directory entry durable.
pub fn create_new(path: &Path) -> io::Result<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    file.sync_all()?;
    sync_dir(&parent_dir(path))?;
    Ok(file)
}

/// Cuts `file` to `len` bytes, durably.
pub fn truncate(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)?;
    file.sync_data()
}

/// Removes each of `paths` that exists, then fsyncs each directory that lost an entry, once.
pub fn remove_files<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> io::Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        let path = path.as_ref();
        match fs::remove_file(path) {
            Ok(()) => {
                let dir = parent_dir(path);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    dirs.iter().try_for_each(|dir| sync_dir(dir))
}

/// Creates a directory and its parents, and makes each one's entry durable: it fsyncs the
/// parent of every level, including those that already existed, since a process that crashed
/// may have created them without a sync. A parent this process may not open is skipped.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        other => other?,
    }
    match sync_dir(&parent_dir(dir)) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && parent.is_some() => Ok(()),
        other => other,
    }
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
    fn remove_files_skips_absent_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"a").unwrap();
        remove_files([&a, &b]).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn create_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new");
        create_new(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        let err = create_new(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_successful_fill_replaces_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        write_atomically(&target, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
    }
}
