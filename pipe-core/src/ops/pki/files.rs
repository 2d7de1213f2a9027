//! The kit's files: PEM files read within a cap, and files written in full
//! under a temporary name with their final mode, then renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{MAX_PEM_FILE_BYTES, PkiError};

/// Mode of private key files: owner read/write only.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// Mode of certificate files, which are public.
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Creates `dir` and its parents, if missing.
pub(super) fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Reads a PEM file (within [`MAX_PEM_FILE_BYTES`]) as text.
pub(super) fn read_text(path: &Path) -> Result<String, PkiError> {
    let bytes = read_limited(path).map_err(|err| match err {
        ReadLimitedError::Io(source) => PkiError::Read {
            path: path.to_path_buf(),
            source,
        },
        ReadLimitedError::TooLarge => PkiError::TooLarge {
            path: path.to_path_buf(),
        },
    })?;
    String::from_utf8(bytes).map_err(|_| PkiError::InvalidCertificate {
        path: path.to_path_buf(),
        reason: "the file is not text".to_owned(),
    })
}

/// Replaces `path` with `contents`, created with `mode`, through a
/// [`StagedFile`].
pub(super) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    StagedFile::create(path, contents, mode)
        .and_then(StagedFile::commit)
        .map_err(|source| PkiError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Why [`read_limited`] failed.
#[derive(Debug)]
pub(crate) enum ReadLimitedError {
    /// The file could not be opened or read.
    Io(io::Error),
    /// The file is over [`MAX_PEM_FILE_BYTES`].
    TooLarge,
}

/// Reads a whole file of at most [`MAX_PEM_FILE_BYTES`].
pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>, ReadLimitedError> {
    let file = File::open(path).map_err(ReadLimitedError::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadLimitedError::Io)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(ReadLimitedError::TooLarge);
    }
    Ok(bytes)
}

/// A file written in full under a temporary name beside its destination,
/// waiting to be renamed into place.
///
/// The temporary file is created with its final mode, so a private key is
/// never readable by others, and it is removed again if it is dropped before
/// [`StagedFile::commit`], so a failure leaves nothing behind.
#[derive(Debug)]
pub(crate) struct StagedFile {
    temporary: PathBuf,
    destination: PathBuf,
    committed: bool,
}

impl StagedFile {
    /// Writes `contents` to a new temporary file in `destination`'s directory
    /// (which must exist) and syncs it to disk.
    pub(crate) fn create(destination: &Path, contents: &[u8], mode: u32) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let file_name = destination
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .to_string_lossy()
            .into_owned();
        let mut attempt = 0;
        loop {
            let suffix = COUNTER.fetch_add(1, Ordering::Relaxed);
            let temporary = destination
                .with_file_name(format!(".{file_name}.{}.{suffix}.tmp", std::process::id()));
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
            #[cfg(not(unix))]
            let _ = mode;
            match options.open(&temporary) {
                Ok(mut file) => {
                    let staged = Self {
                        temporary,
                        destination: destination.to_path_buf(),
                        committed: false,
                    };
                    // The umask may have narrowed the mode (never widened it);
                    // set it exactly so a certificate stays world-readable.
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::PermissionsExt;
                        file.set_permissions(fs::Permissions::from_mode(mode))?;
                    }
                    file.write_all(contents)?;
                    file.sync_all()?;
                    return Ok(staged);
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Atomically replaces the destination with the staged file.
    pub(crate) fn commit(mut self) -> io::Result<()> {
        fs::rename(&self.temporary, &self.destination)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the file is ours and holds nothing useful.
            let _ = fs::remove_file(&self.temporary);
        }
    }
}
