//! Group commit: every change to the store goes through one thread, which
//! takes all the changes waiting at once into one write transaction and one
//! commit (one fsync), then tells each caller. A burst of submissions costs
//! a few fsyncs, not one each; a caller hears "done" only once its change
//! is on disk.
//!
//! The store's file is opened again after a failed write (a full disk, an
//! I/O error): redb then refuses every read and write of the handle that
//! saw it, for good, while a new handle goes back to the last commit that
//! reached the disk. So a node whose disk filled up takes jobs again once
//! there is room, without a restart, and keeps every job it had accepted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, StorageError, TransactionError,
    WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;

/// Changes taken into one transaction at most.
const MAX_BATCH: usize = 4096;
/// Changes waiting for the committer before callers wait to add more.
const QUEUE: usize = 8192;
/// The store's page cache: memory stays bounded however long the queues.
const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// A file that could not be opened again is tried at most this often:
/// opening a file left by a failed write repairs it, reading all of it.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// The store's file: read by every handle of the store, written by the
/// committing thread, which opens it again after a failure.
#[derive(Debug)]
pub(super) struct StoreFile {
    path: PathBuf,
    state: RwLock<FileState>,
}

#[derive(Debug)]
enum FileState {
    Open(Database),
    /// Opening it again failed, at `at`, with `error`.
    Failed {
        error: StoreError,
        at: Instant,
    },
    /// The store is closed.
    Closed,
}

impl StoreFile {
    /// The store file at `path`, open as `db`.
    pub(super) fn new(path: PathBuf, db: Database) -> Self {
        Self {
            path,
            state: RwLock::new(FileState::Open(db)),
        }
    }

    /// Opens (or creates) the database at `path`, checking the checksum of
    /// every page in use: a file damaged since redb wrote it is refused as
    /// corrupt, where a plain open trusts it and redb may panic on the
    /// damaged page later. The check reads the whole file (about a second
    /// per GB).
    pub(super) fn open_database(path: &Path) -> Result<Database, DatabaseError> {
        Database::builder()
            .set_check_integrity_on_open(true)
            // redb's default cache is 1 GiB: a node's memory would follow
            // its queue on disk up to that.
            .set_cache_size(CACHE_BYTES)
            .create(path)
    }

    /// A read transaction on the last commit.
    pub(super) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.using(|db| Ok(db.begin_read()?))
    }

    /// `work` on the open database; a file that could not be opened again
    /// is tried again first, if [`REOPEN_EVERY`] has passed.
    fn using<T>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let due = match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            FileState::Failed { at, .. } => at.elapsed() >= REOPEN_EVERY,
            _ => false,
        };
        if due {
            // No database, so no transaction of it: safe from any thread.
            self.reopen_if(|state| {
                matches!(state, FileState::Failed { at, .. } if at.elapsed() >= REOPEN_EVERY)
            });
        }
        match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            FileState::Open(db) => work(db),
            FileState::Failed { error, .. } => Err(error.clone()),
            FileState::Closed => Err(StoreError::Closed),
        }
    }

    /// Opens the file again if redb has given up on its handle (a write
    /// failed). Only for the committing thread, between transactions: a
    /// write transaction in progress would make the check wait for it.
    fn recover(&self) {
        self.reopen_if(|state| match state {
            FileState::Open(db) => match db.begin_write() {
                Ok(probe) => {
                    let _ = probe.abort();
                    false
                }
                Err(error) => matches!(error, TransactionError::Storage(StorageError::PreviousIo)),
            },
            _ => false,
        });
    }

    /// Closes the database and opens the file again, if `due` says so of
    /// the state found under the lock.
    fn reopen_if(&self, due: impl FnOnce(&FileState) -> bool) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if !due(&state) {
            return;
        }
        if let FileState::Open(db) = std::mem::replace(&mut *state, FileState::Closed)
            && let Err(error) = db.close()
        {
            tracing::warn!(path = %self.path.display(), "closing the failed job store: {error}");
        }
        *state = match Self::open_database(&self.path) {
            Ok(db) => {
                tracing::info!(path = %self.path.display(), "job store opened again after a failure");
                FileState::Open(db)
            }
            Err(error) => {
                let error = StoreError::Open {
                    path: self.path.clone(),
                    detail: error.to_string(),
                };
                tracing::warn!("{error}; trying again in {REOPEN_EVERY:?}");
                FileState::Failed {
                    error,
                    at: Instant::now(),
                }
            }
        };
    }

    /// Closes the file for good.
    fn close(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let FileState::Open(db) = std::mem::replace(&mut *state, FileState::Closed)
            && let Err(error) = db.close()
        {
            tracing::warn!(path = %self.path.display(), "closing the job store: {error}");
        }
    }
}

/// Tells the caller of one change how its batch went.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// One change, called once: applied in its batch's transaction (`Some`),
/// or not at all (`None`: the batch failed before its turn). Returns what
/// tells its caller the batch's outcome, and its own failure, a storage
/// failure, which fails the whole batch.
type Change = Box<dyn FnOnce(Option<&WriteTransaction>) -> (Answer, Option<StoreError>) + Send>;

/// Commits done, and the time they took.
#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    micros: AtomicU64,
}

/// The handle to the committing thread.
#[derive(Clone)]
pub(super) struct Committer {
    changes: mpsc::Sender<Change>,
    counters: Arc<Counters>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("counters", &self.counters)
            .finish()
    }
}

impl Committer {
    /// Starts the committing thread over `file`; it ends when every handle
    /// is dropped, and closes the file then.
    pub(super) fn start(file: Arc<StoreFile>) -> Result<Self, StoreError> {
        let (changes, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let counting = counters.clone();
        let thread = std::thread::Builder::new()
            .name("restpipe-jobs-commit".into())
            .spawn(move || run(&file, rx, &counting))
            .map_err(|error| StoreError::Thread(Arc::new(error)))?;
        Ok(Self {
            changes,
            counters,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Stops taking changes, and waits until those already taken are
    /// committed and the thread (with its handle on the file) is gone.
    /// Blocking: for shutdown and tests. Only the last handle closes.
    pub(super) fn close(self) {
        let Self {
            changes, thread, ..
        } = self;
        drop(changes);
        if let Some(thread) = Arc::into_inner(thread) {
            let thread = thread.into_inner().unwrap_or_else(|e| e.into_inner());
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
    }

    /// Applies `change` in the next batch and returns its value once it is
    /// committed.
    pub(super) async fn apply<T: Send + 'static>(
        &self,
        change: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (change, outcome) = told(change);
        self.changes
            .send(change)
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits done so far (each one fsync).
    pub(super) fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    /// Microseconds spent committing so far (fsyncs included).
    pub(super) fn commit_micros(&self) -> u64 {
        self.counters.micros.load(Ordering::Relaxed)
    }
}

/// `change` as the committer takes it, and where its caller hears the
/// outcome: its value once committed, or the error that failed its batch.
fn told<T: Send + 'static>(
    change: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
) -> (Change, oneshot::Receiver<Result<T, StoreError>>) {
    let (done, outcome) = oneshot::channel();
    let change: Change = Box::new(move |txn| {
        let (value, failure) = match txn.map(change) {
            Some(Ok(value)) => (Some(value), None),
            Some(Err(error)) => (None, Some(error)),
            None => (None, None),
        };
        let answer: Answer = Box::new(move |outcome| {
            // A batch is committed only if every change in it was applied.
            let not_applied = || StoreError::Storage("the change was not applied".to_owned());
            let _ = done.send(outcome.and_then(|()| value.ok_or_else(not_applied)));
        });
        (answer, failure)
    });
    (change, outcome)
}

fn run(file: &StoreFile, mut changes: mpsc::Receiver<Change>, counters: &Counters) {
    while let Some(first) = changes.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match changes.try_recv() {
                Ok(change) => batch.push(change),
                Err(_) => break,
            }
        }
        commit(file, batch, counters);
    }
    file.close();
}

/// One transaction for `batch`: every caller learns the same outcome, after
/// the commit is counted.
fn commit(file: &StoreFile, batch: Vec<Change>, counters: &Counters) {
    let started = std::time::Instant::now();
    let txn = match file.using(|db| Ok(db.begin_write()?)) {
        Ok(txn) => txn,
        Err(error) => {
            let answers = batch.into_iter().map(|change| change(None).0).collect();
            return fail(file, &error, answers);
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    let mut failure = None;
    for change in batch {
        // After a failure the rest are not applied: nothing of it is kept.
        let (answer, failed) = change(failure.is_none().then_some(&txn));
        answers.push(answer);
        failure = failure.or(failed);
    }
    if let Some(error) = failure {
        drop(txn);
        return fail(file, &error, answers);
    }
    match txn.commit() {
        Ok(()) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            let took = started.elapsed().as_micros() as u64;
            counters.micros.fetch_add(took, Ordering::Relaxed);
            for answer in answers {
                answer(Ok(()));
            }
        }
        Err(error) => fail(file, &StoreError::from(error), answers),
    }
}

/// A failed batch: the file is opened again if the failure broke redb's
/// handle on it, then every caller is told `error`. In that order, so a
/// caller that reads right after hearing it finds a usable store.
fn fail(file: &StoreFile, error: &StoreError, answers: Vec<Answer>) {
    tracing::warn!(changes = answers.len(), "job store commit failed: {error}");
    file.recover();
    for answer in answers {
        answer(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, Instant};

    use super::*;

    /// A change that fails fails its batch, and every change in the batch
    /// hears why: none is told the store is closed.
    #[tokio::test]
    async fn every_change_of_a_failed_batch_hears_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let db = Database::create(&path).unwrap();
        let committer = Committer::start(Arc::new(StoreFile::new(path, db))).unwrap();

        // Hold the committing thread in a change of its own, so the next
        // three wait for it and make one batch.
        let (running_tx, running) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = committer.clone();
        let holding = tokio::spawn(async move {
            holder
                .apply(move |_| {
                    let _ = running_tx.send(());
                    let _ = held.recv();
                    Ok(())
                })
                .await
        });
        tokio::task::spawn_blocking(move || running.recv())
            .await
            .unwrap()
            .unwrap();
        let changes: Vec<_> = [false, true, false]
            .into_iter()
            .map(|fails| {
                let committer = committer.clone();
                tokio::spawn(async move {
                    committer
                        .apply(move |_| match fails {
                            true => Err(StoreError::Storage("a change failed".into())),
                            false => Ok(()),
                        })
                        .await
                })
            })
            .collect();
        let started = Instant::now();
        while committer.changes.capacity() > QUEUE - 3 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "changes not queued"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).unwrap();
        holding.await.unwrap().unwrap();

        for change in changes {
            match change.await.unwrap() {
                Err(StoreError::Storage(error)) => assert_eq!(error, "a change failed"),
                other => panic!("told {other:?}"),
            }
        }
        // The committer carries on.
        committer.apply(|_| Ok(())).await.unwrap();
    }

    /// A file that could not be opened again answers that error, without
    /// trying again, until [`REOPEN_EVERY`] has passed; then the next read
    /// opens it.
    #[test]
    fn a_file_that_could_not_be_opened_again_is_retried_after_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let failed = |ago: Duration| StoreFile {
            path: path.clone(),
            state: RwLock::new(FileState::Failed {
                error: StoreError::Storage("the disk is full".into()),
                at: Instant::now() - ago,
            }),
        };

        let recent = failed(Duration::ZERO);
        match recent.begin_read() {
            Err(StoreError::Storage(error)) => assert_eq!(error, "the disk is full"),
            other => panic!("{other:?}"),
        }
        assert!(!path.exists(), "tried again at once");

        let due = failed(REOPEN_EVERY);
        due.begin_read().unwrap();
        assert!(matches!(*due.state.read().unwrap(), FileState::Open(_)));
        due.close();
        assert!(matches!(due.begin_read(), Err(StoreError::Closed)));
    }
}
