//! Large results live as files: a result body over [`FILE_AFTER`] is
//! written to `results/<id>` beside the store (fsynced, then renamed into
//! place, so a file present is whole) instead of into the store, and a poll
//! streams it out in bounded memory. Files whose job was purged (or that a
//! crash left half written) are removed with the purge.

use std::io;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::error::StoreError;
use super::store::JobStore;
use crate::wire::body::{BodyError, BodyStream};

/// Result bodies larger than this go to a file.
pub const FILE_AFTER: usize = 256 * 1024;
/// The directory of result files, beside the store file.
const RESULTS_DIR: &str = "results";

/// Where a result body was kept.
#[derive(Debug)]
pub(super) enum Kept {
    /// Small: in memory, to go into the store.
    Memory(Bytes),
    /// Large: in the job's result file, this many bytes.
    File(u64),
}

/// Why a result body could not be kept.
#[derive(Debug, thiserror::Error)]
pub(super) enum KeepError {
    /// It did not arrive whole (or was too large).
    #[error("the result did not arrive whole: {0}")]
    Body(#[from] BodyError),
    /// Its file could not be written (a full disk, say).
    #[error("the result could not be written to disk: {0}")]
    Disk(#[from] io::Error),
}

impl JobStore {
    /// The directory of result files.
    pub fn results_dir(&self) -> PathBuf {
        self.path()
            .parent()
            .map_or_else(|| PathBuf::from(RESULTS_DIR), |dir| dir.join(RESULTS_DIR))
    }

    /// The result file of job `id` (there only if its result is large).
    pub fn result_file(&self, id: &str) -> PathBuf {
        self.results_dir().join(id)
    }

    /// Takes a result body, `first` then the rest from `stream`, whole: in
    /// memory while it stays within [`FILE_AFTER`], else into job `id`'s
    /// result file, at most `max` bytes in all.
    pub(super) async fn keep_result_body(
        &self,
        id: &str,
        first: Bytes,
        stream: Option<BodyStream>,
        max: usize,
    ) -> Result<Kept, KeepError> {
        if first.len() > max {
            return Err(BodyError::TooLarge { limit: max as u64 }.into());
        }
        let mut held = BytesMut::from(first);
        let mut stream = stream.unwrap_or_else(|| BodyStream::from_bytes(Bytes::new()));
        while held.len() <= FILE_AFTER {
            match stream.chunk().await {
                None => return Ok(Kept::Memory(held.freeze())),
                Some(piece) => held.extend_from_slice(&piece?),
            }
            if held.len() > max {
                return Err(BodyError::TooLarge { limit: max as u64 }.into());
            }
        }
        let part = self.results_dir().join(format!("{id}.part"));
        let written = write_file(&part, held.freeze(), stream, max).await;
        let length = match written {
            Ok(length) => length,
            Err(error) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(error);
            }
        };
        tokio::fs::rename(&part, self.result_file(id)).await?;
        sync_dir(self.results_dir()).await?;
        Ok(Kept::File(length))
    }

    /// Removes result files whose job is no longer kept, and half-written
    /// ones. Returns how many went.
    pub async fn remove_orphan_results(&self) -> Result<usize, StoreError> {
        let dir = self.results_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => {
                let detail = format!("cannot read {}: {error}", dir.display());
                return Err(StoreError::Storage(detail));
            }
        };
        let mut removed = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let orphan = match name.strip_suffix(".part") {
                // Being written now, or left by a crash: only a job still
                // waiting for its result may be writing it.
                Some(id) => self.get(id)?.is_none_or(|job| job.state.is_final()),
                None => self.get(&name)?.is_none(),
            };
            if orphan && tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Writes `first` and the rest of `stream` to `path`, fsynced.
async fn write_file(
    path: &std::path::Path,
    first: Bytes,
    mut stream: BodyStream,
    max: usize,
) -> Result<u64, KeepError> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut file = tokio::fs::File::create(path).await?;
    let mut length = first.len() as u64;
    file.write_all(&first).await?;
    while let Some(piece) = stream.chunk().await {
        let piece = piece?;
        length += piece.len() as u64;
        if length > max as u64 {
            return Err(BodyError::TooLarge { limit: max as u64 }.into());
        }
        file.write_all(&piece).await?;
    }
    file.sync_all().await?;
    Ok(length)
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: PathBuf) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}
