//! Group commit: every change to the store goes through one thread, which
//! takes all the changes waiting at once into one write transaction and one
//! commit (one fsync), then tells each caller. A burst of submissions costs
//! a few fsyncs, not one each; a caller hears "done" only once its change
//! is on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;

/// Changes taken into one transaction at most.
const MAX_BATCH: usize = 4096;
/// Changes waiting for the committer before callers wait to add more.
const QUEUE: usize = 8192;

/// Tells the caller of one change how the commit went.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// One change, called once: with the batch's transaction, to apply it,
/// returning what to tell its caller once the commit is done (or failed);
/// or with the error that failed the batch before its turn, to tell its
/// caller that. An `Err` is a storage failure, which fails the whole batch;
/// the change has told its own caller.
type Change =
    Box<dyn FnOnce(Result<&WriteTransaction, StoreError>) -> Result<Answer, StoreError> + Send>;

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
    /// Starts the committing thread over `db`; it ends when every handle
    /// is dropped.
    pub(super) fn start(db: Arc<Database>) -> Result<Self, StoreError> {
        let (changes, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let counting = counters.clone();
        let thread = std::thread::Builder::new()
            .name("restpipe-jobs-commit".into())
            .spawn(move || run(&db, rx, &counting))
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
    let change: Change = Box::new(move |txn| match txn.and_then(change) {
        Ok(value) => Ok(Box::new(move |committed: Result<(), StoreError>| {
            let _ = done.send(committed.map(|()| value));
        }) as Answer),
        Err(error) => {
            let _ = done.send(Err(error.clone()));
            Err(error)
        }
    });
    (change, outcome)
}

fn run(db: &Database, mut changes: mpsc::Receiver<Change>, counters: &Counters) {
    while let Some(first) = changes.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match changes.try_recv() {
                Ok(change) => batch.push(change),
                Err(_) => break,
            }
        }
        commit(db, batch, counters);
    }
}

/// One transaction for `batch`: every caller learns the same outcome, after
/// the commit is counted.
fn commit(db: &Database, batch: Vec<Change>, counters: &Counters) {
    let started = std::time::Instant::now();
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(error) => {
            fail_all(&StoreError::from(error), Vec::new(), batch);
            return;
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    let mut remaining = batch.into_iter();
    for change in remaining.by_ref() {
        match change(Ok(&txn)) {
            Ok(answer) => answers.push(answer),
            Err(error) => {
                // A storage failure inside the transaction: nothing of it
                // is kept, and everyone in it is told.
                drop(txn);
                fail_all(&error, answers, remaining.collect());
                return;
            }
        }
    }
    let committed = txn.commit().map_err(StoreError::from);
    counters.commits.fetch_add(1, Ordering::Relaxed);
    let took = started.elapsed().as_micros() as u64;
    counters.micros.fetch_add(took, Ordering::Relaxed);
    for answer in answers {
        answer(committed.clone());
    }
}

/// Tells every caller of a failed batch its `error`: those whose changes
/// were applied (`answers`) and those whose turn never came (`unapplied`).
/// (A change that failed has told its own caller.)
fn fail_all(error: &StoreError, answers: Vec<Answer>, unapplied: Vec<Change>) {
    tracing::warn!(
        others = answers.len() + unapplied.len(),
        "job store commit failed: {error}"
    );
    for answer in answers {
        answer(Err(error.clone()));
    }
    for change in unapplied {
        let _ = change(Err(error.clone()));
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
        let db = Arc::new(Database::create(dir.path().join("store.redb")).unwrap());
        let committer = Committer::start(db).unwrap();

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
}
