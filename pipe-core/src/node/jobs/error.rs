//! Why the job store failed.

use std::path::PathBuf;

/// A job store failure. Cloneable, so one failed commit can tell every
/// caller in its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another process has this store open.
    #[error(
        "the job store {} is open in another process (one node per state directory)",
        path.display()
    )]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The store file could not be opened: corrupt, another format, or the
    /// disk refused.
    #[error("cannot open the job store {}: {detail}", path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The store was written by a build with another schema.
    #[error(
        "the job store {} has schema version {found}; this build reads version {expected}",
        path.display()
    )]
    Schema {
        /// The store file.
        path: PathBuf,
        /// The version found.
        found: u64,
        /// The version this build reads.
        expected: u64,
    },
    /// Reading or writing failed (an I/O error).
    #[error("job store: {0}")]
    Storage(String),
    /// The disk is full.
    #[error("job store: the disk is full: {0}")]
    DiskFull(String),
    /// A record could not be read back.
    #[error("job store record {id}: {detail}")]
    Record {
        /// The job.
        id: String,
        /// What was wrong.
        detail: String,
    },
    /// The committing thread could not start.
    #[error("cannot start the job store's commit thread: {0}")]
    Thread(#[source] std::sync::Arc<std::io::Error>),
    /// The store is closed (the node is stopping).
    #[error("the job store is closed")]
    Closed,
}

impl StoreError {
    /// The error for `storage`, said as `text`: a full disk is told apart.
    fn of_storage(storage: Option<&redb::StorageError>, text: String) -> Self {
        match storage {
            Some(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::StorageFull => {
                Self::DiskFull(text)
            }
            _ => Self::Storage(text),
        }
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(error: redb::StorageError) -> Self {
        let text = error.to_string();
        Self::of_storage(Some(&error), text)
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(error: redb::TransactionError) -> Self {
        let storage = match &error {
            redb::TransactionError::Storage(storage) => Some(storage),
            _ => None,
        };
        Self::of_storage(storage, error.to_string())
    }
}

impl From<redb::TableError> for StoreError {
    fn from(error: redb::TableError) -> Self {
        let storage = match &error {
            redb::TableError::Storage(storage) => Some(storage),
            _ => None,
        };
        Self::of_storage(storage, error.to_string())
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(error: redb::CommitError) -> Self {
        let storage = match &error {
            redb::CommitError::Storage(storage) => Some(storage),
            _ => None,
        };
        Self::of_storage(storage, error.to_string())
    }
}
