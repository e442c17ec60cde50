//! A received LTX file on its way to the applier. Its chunks are written to a file in the spool
//! directory as they arrive (a megabyte at a time, on the blocking pool), and the whole file is
//! verified from there, so a replica's memory stays bounded whatever the size of the file.

use std::io::Write;
use std::path::PathBuf;

use tempfile::NamedTempFile;

use crate::database::{DatabaseError, LtxSource, VerifiedLtx};

/// How many received bytes are gathered before they are written to the spool file.
const WRITE_LEN: usize = 1 << 20;

/// Why a received file could not be spooled.
#[derive(Debug, thiserror::Error)]
pub(super) enum SpoolError {
    /// Writing the spool file failed.
    #[error("cannot spool the received file: {0}")]
    Io(#[from] std::io::Error),
    /// The file failed verification.
    #[error(transparent)]
    Bad(#[from] DatabaseError),
}

/// The file being received, if one is.
pub(super) struct Spool {
    dir: PathBuf,
    file: Option<NamedTempFile>,
    buffer: Vec<u8>,
}

/// A received file, verified in full; the spool file is removed when this is dropped.
pub(super) struct Spooled {
    ltx: VerifiedLtx,
    _file: NamedTempFile,
}

impl Spooled {
    /// The verified file.
    pub(super) fn ltx(&self) -> &VerifiedLtx {
        &self.ltx
    }
}

impl Spool {
    /// A spool writing its files in `dir`.
    pub(super) fn new(dir: PathBuf) -> Spool {
        Spool {
            dir,
            file: None,
            buffer: Vec::new(),
        }
    }

    /// Starts a new file, dropping anything received before.
    pub(super) fn begin(&mut self) {
        self.file = None;
        self.buffer.clear();
    }

    /// Adds received bytes to the file.
    pub(super) async fn push(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= WRITE_LEN {
            let (file, buffer) = (self.file.take(), std::mem::take(&mut self.buffer));
            let dir = self.dir.clone();
            let (file, mut buffer) = blocking(move || {
                let file = write(&dir, file, &buffer)?;
                Ok((file, buffer))
            })
            .await?;
            buffer.clear();
            (self.file, self.buffer) = (Some(file), buffer);
        }
        Ok(())
    }

    /// Ends the file: writes what is left and verifies all of it.
    pub(super) async fn finish(&mut self) -> Result<Spooled, SpoolError> {
        let (file, buffer) = (self.file.take(), std::mem::take(&mut self.buffer));
        let dir = self.dir.clone();
        blocking(move || {
            let file = write(&dir, file, &buffer)?;
            let ltx = VerifiedLtx::verify(LtxSource::file(file.path()))?;
            Ok(Spooled { ltx, _file: file })
        })
        .await
    }
}

/// Appends `bytes` to `file`, creating it in `dir` first if there is none yet.
fn write(
    dir: &std::path::Path,
    file: Option<NamedTempFile>,
    bytes: &[u8],
) -> std::io::Result<NamedTempFile> {
    let mut file = match file {
        Some(file) => file,
        None => tempfile::Builder::new()
            .prefix("ltx-")
            .suffix(".spool")
            .tempfile_in(dir)?,
    };
    file.write_all(bytes)?;
    Ok(file)
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| SpoolError::Io(std::io::Error::other(err)))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{Encoder, Format, Header, PageNo, PageSize};

    fn snapshot(pages: u32) -> Vec<u8> {
        let page_size = PageSize::new(4096).unwrap();
        let header = Header::new(page_size, pages, crate::ltx::TxId(1), crate::ltx::TxId(1));
        let mut encoder = Encoder::new(Vec::new(), Format::V1, header).unwrap();
        let mut checksum = crate::ltx::DatabaseChecksum::new();
        for pgno in 1..=pages {
            let page = vec![pgno as u8; 4096];
            checksum.toggle(crate::ltx::page_checksum(PageNo(pgno), &page));
            encoder.encode_page(PageNo(pgno), &page).unwrap();
        }
        encoder.finish(checksum.checksum()).unwrap().0
    }

    #[tokio::test]
    async fn a_file_arriving_in_pieces_is_verified_and_removed_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let file = snapshot(600);
        let mut spool = Spool::new(dir.path().to_path_buf());
        spool.begin();
        spool.push(b"left over from a broken stream").await.unwrap();
        spool.begin();
        for piece in file.chunks(60_000) {
            spool.push(piece).await.unwrap();
        }
        let spooled = spool.finish().await.unwrap();
        assert_eq!(spooled.ltx().byte_len(), file.len() as u64);
        assert_eq!(spooled.ltx().verified().page_count, 600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(spooled);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = snapshot(3);
        let last = file.len() - 20;
        file[last] ^= 1;
        let mut spool = Spool::new(dir.path().to_path_buf());
        spool.begin();
        spool.push(&file).await.unwrap();
        assert!(matches!(spool.finish().await, Err(SpoolError::Bad(_))));
    }
}
