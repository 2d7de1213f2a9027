//! Large results live as files: a result body over [`FILE_AFTER`] is
//! written to `results/<id>` beside the store (fsynced, then renamed into
//! place, so a file present is whole) instead of into the store, and a poll
//! streams it out in bounded memory. A node receiving a peer's job keeps a
//! large result the same way, in `received/<peer>-<id>`, and sends it from
//! there. Files whose job was purged (or that a crash left half written)
//! are removed with the purge.

use std::io;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::error::StoreError;
use super::store::JobStore;
use crate::wire::body::{BodyError, BodyStream};

/// Result bodies larger than this go to a file.
pub const FILE_AFTER: usize = 256 * 1024;
/// The directory of result files, beside the store file.
const RESULTS_DIR: &str = "results";
/// The directory of the results of peers' jobs, beside the store file.
const RECEIVED_DIR: &str = "received";
/// How much of a result file is read at a time.
const READ_CHUNK: usize = 64 * 1024;

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
        self.beside(RESULTS_DIR)
    }

    /// The directory of the result files of peers' jobs.
    pub fn received_dir(&self) -> PathBuf {
        self.beside(RECEIVED_DIR)
    }

    fn beside(&self, name: &str) -> PathBuf {
        self.path()
            .parent()
            .map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
    }

    /// The result file of `peer`'s job `id` run here (there only if its
    /// result is large). The peer's name is percent-encoded, so `-` parts
    /// it from the id.
    pub fn received_file(&self, peer: &str, id: &str) -> PathBuf {
        let peer = percent_encoding::utf8_percent_encode(peer, percent_encoding::NON_ALPHANUMERIC);
        self.received_dir().join(format!("{peer}-{id}"))
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
        spill(self.result_file(id), first, stream, max).await
    }

    /// Removes result files whose job is no longer kept, and half-written
    /// ones. Returns how many went.
    pub async fn remove_orphan_results(&self) -> Result<usize, StoreError> {
        let own = self.remove_orphan_own().await?;
        Ok(own + self.remove_orphan_received().await?)
    }

    /// Removes result files of this node's jobs no longer kept.
    async fn remove_orphan_own(&self) -> Result<usize, StoreError> {
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

    /// Removes the result files of peers' jobs no longer kept, and
    /// half-written ones of runs that ended.
    async fn remove_orphan_received(&self) -> Result<usize, StoreError> {
        let Ok(mut entries) = tokio::fs::read_dir(self.received_dir()).await else {
            return Ok(0);
        };
        let mut removed = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (name, part) = match name.strip_suffix(".part") {
                Some(name) => (name.to_owned(), true),
                None => (name, false),
            };
            let Some((peer, id)) = name.rsplit_once('-') else {
                continue;
            };
            let peer = percent_encoding::percent_decode_str(peer).decode_utf8_lossy();
            let orphan = match self.received_ended(&peer, id)? {
                None => true,
                // Still running: its file may be being written.
                Some(ended) => part && ended,
            };
            if orphan && tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Takes a body, `first` then the rest from `stream`, whole: in memory while
/// it stays within [`FILE_AFTER`], else into the file at `path` (written
/// beside it, fsynced, renamed into place), at most `max` bytes in all.
pub(super) async fn spill(
    path: PathBuf,
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
    let mut part = path.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let written = write_file(&part, held.freeze(), stream, max).await;
    let length = match written {
        Ok(length) => length,
        Err(error) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(error);
        }
    };
    tokio::fs::rename(&part, &path).await?;
    if let Some(dir) = path.parent() {
        sync_dir(dir.to_owned()).await?;
    }
    Ok(Kept::File(length))
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

/// A stream of the file at `path`, `length` bytes, read as its reader takes
/// it (polled in place, no task): a kept result sent again, in bounded
/// memory.
pub(super) fn file_stream(path: PathBuf, length: u64) -> BodyStream {
    let name = path.display().to_string();
    let fail = move |error: io::Error| {
        BodyError::Aborted(format!("cannot read the result file {name}: {error}"))
    };
    let pieces = futures_util::stream::once(tokio::fs::File::open(path))
        .map(move |opened| match opened {
            Ok(file) => ReaderStream::with_capacity(file, READ_CHUNK)
                .map_err(fail.clone())
                .left_stream(),
            Err(error) => futures_util::stream::iter([Err(fail(error))]).right_stream(),
        })
        .flatten();
    BodyStream::from_stream(pieces, Some(length))
}
