//! The job store: one redb file per node in its state directory. Records
//! are JSON (versioned by the schema number in `meta`); request and result
//! bodies live beside them; each peer has a queue in submission order.
//! Reads go straight to the file; every change goes through the group
//! committer, and is on disk when its call returns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{DatabaseError, ReadableTable, TableDefinition, WriteTransaction};

use super::commit::{Committer, StoreFile};
use super::error::StoreError;
use super::record::{JobRecord, JobRequest, JobResult, JobState, NotifyStatus};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;
/// Jobs forgotten per transaction of a purge (few in tests, to see several).
pub(super) const PURGE_BATCH: usize = if cfg!(test) { 16 } else { 10_000 };
/// The store's file name in the state directory.
pub const STORE_FILE: &str = "jobs.redb";

pub(super) const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// (peer, seq) → id: each peer's jobs not yet ended, in submission order.
const QUEUE: TableDefinition<(&str, u64), &str> = TableDefinition::new("queue");
/// peer → jobs in its queue.
const QUEUE_LEN: TableDefinition<&str, u64> = TableDefinition::new("queue_len");
/// Idempotency key → id.
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("idempotency");
/// (id, which) → bytes: the request's body (0) and the result's (1).
const BODIES: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("bodies");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// state → jobs in it, kept as jobs move, so counting never scans.
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");
/// (due unix ms, job id) → attempts made: ended jobs whose notify hook is
/// still to be called, in the order they are due.
pub(super) const NOTIFY: TableDefinition<(u64, &str), u32> = TableDefinition::new("notify");

const REQUEST_BODY: u8 = 0;
const RESULT_BODY: u8 = 1;

/// A job to submit.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The peer it is for.
    pub peer: String,
    /// The handler's flattened name.
    pub handler: String,
    /// The request.
    pub request: JobRequest,
    /// The request's body.
    pub body: Vec<u8>,
    /// How long delivery is attempted, in milliseconds.
    pub expires_in_ms: u64,
    /// Where to POST the final state.
    pub notify: Option<String>,
    /// The caller's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Whether an interrupted run ends the job instead of a redelivery.
    pub at_most_once: bool,
}

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// A new job, durably queued.
    Created(JobRecord),
    /// The idempotency key already named this job.
    Existing(JobRecord),
    /// The peer's queue is full.
    QueueFull {
        /// Jobs in it.
        queued: u64,
    },
}

/// Why a change of state was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No job of that id.
    Unknown,
    /// The job is `from`, which may not become the state asked for.
    State {
        /// Its state.
        from: JobState,
    },
}

/// The store of one node: a cheap handle, shared by every part of the node
/// that needs jobs; [`JobStore::close`] closes it for all of them.
#[derive(Debug, Clone)]
pub struct JobStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// `None` once closed.
    open: RwLock<Option<Open>>,
    path: PathBuf,
    max_queue: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Open {
    file: Arc<StoreFile>,
    pub(super) committer: Committer,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A new id: creation time (ms, 12 hex digits), the store's submission
/// sequence number (12 hex digits), then 64 random bits, so ids sort by
/// creation, also within one millisecond, and cannot be guessed.
fn new_id(created_ms: u64, seq: u64) -> String {
    let random: u64 = rand::random();
    format!("{created_ms:012x}{seq:012x}{random:016x}")
}

impl JobStore {
    /// Opens (or creates) the store in `dir`, whose queues hold at most
    /// `max_queue` jobs per peer. Refused if another process has it open,
    /// if it is corrupt, or if it has another schema.
    pub fn open(dir: &Path, max_queue: u64) -> Result<Self, StoreError> {
        let path = dir.join(STORE_FILE);
        let open_error = |detail: String| StoreError::Open {
            path: path.clone(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let db = match StoreFile::open_database(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked { path });
            }
            Err(error) => return Err(open_error(error.to_string())),
        };
        let txn = db.begin_write().map_err(|e| open_error(e.to_string()))?;
        let found = schema(&txn).map_err(|e| open_error(e.to_string()))?;
        if let Some(found) = found.filter(|&found| found != SCHEMA_VERSION) {
            return Err(StoreError::Schema {
                path,
                found,
                expected: SCHEMA_VERSION,
            });
        }
        txn.commit().map_err(|e| open_error(e.to_string()))?;
        let file = Arc::new(StoreFile::new(path.clone(), db));
        let committer = Committer::start(file.clone())?;
        Ok(Self {
            shared: Arc::new(Shared {
                open: RwLock::new(Some(Open { file, committer })),
                path,
                max_queue,
            }),
        })
    }

    /// Closes the store for every handle: changes already taken are
    /// committed, then the file is let go (another process may open it).
    /// Later calls get [`StoreError::Closed`]. Blocking.
    pub fn close(&self) {
        let open = self
            .shared
            .open
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Open { committer, .. }) = open {
            // The committing thread closes the file as it ends.
            committer.close();
        }
    }

    pub(super) fn open_now(&self) -> Result<Open, StoreError> {
        let open = self.shared.open.read().unwrap_or_else(|e| e.into_inner());
        open.clone().ok_or(StoreError::Closed)
    }

    pub(super) fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.open_now()?.file.begin_read()
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Commits (fsyncs) done since the store opened.
    pub fn commits(&self) -> u64 {
        self.open_now().map_or(0, |open| open.committer.commits())
    }

    /// Microseconds its commits took in all (fsyncs included).
    pub fn commit_micros(&self) -> u64 {
        self.open_now()
            .map_or(0, |open| open.committer.commit_micros())
    }

    /// Queues `job` for its peer, durably; or returns the job its
    /// idempotency key already names; or says the peer's queue is full.
    pub async fn submit(&self, job: NewJob) -> Result<Submitted, StoreError> {
        let max_queue = self.shared.max_queue;
        let committer = self.open_now()?.committer;
        committer
            .apply(move |txn| submit(txn, job, max_queue))
            .await
    }

    /// The job `id`, if the store has it.
    pub fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let txn = self.read()?;
        let jobs = match txn.open_table(JOBS) {
            Ok(jobs) => jobs,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        jobs.get(id)?
            .map(|bytes| decode(id, bytes.value()))
            .transpose()
    }

    /// The request body of job `id` (empty if none).
    pub fn request_body(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        self.body(id, REQUEST_BODY)
    }

    /// The result body of job `id` (empty if none).
    pub fn result_body(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        self.body(id, RESULT_BODY)
    }

    fn body(&self, id: &str, which: u8) -> Result<Vec<u8>, StoreError> {
        let txn = self.read()?;
        let bodies = match txn.open_table(BODIES) {
            Ok(bodies) => bodies,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        Ok(bodies
            .get((id, which))?
            .map(|bytes| bytes.value().to_vec())
            .unwrap_or_default())
    }

    /// Up to `limit` jobs of `peer` not yet ended, in submission order.
    pub fn queue(&self, peer: &str, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let txn = self.read()?;
        let (queue, jobs) = match (txn.open_table(QUEUE), txn.open_table(JOBS)) {
            (Ok(queue), Ok(jobs)) => (queue, jobs),
            (Err(redb::TableError::TableDoesNotExist(_)), _)
            | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(error), _) | (_, Err(error)) => return Err(error.into()),
        };
        let mut found = Vec::new();
        for entry in queue.range((peer, 0)..=(peer, u64::MAX))?.take(limit) {
            let (_, id) = entry?;
            let id = id.value();
            if let Some(bytes) = jobs.get(id)? {
                found.push(decode(id, bytes.value())?);
            }
        }
        Ok(found)
    }

    /// Jobs in `peer`'s queue.
    pub fn queue_len(&self, peer: &str) -> Result<u64, StoreError> {
        let txn = self.read()?;
        match txn.open_table(QUEUE_LEN) {
            Ok(lengths) => Ok(lengths.get(peer)?.map_or(0, |len| len.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(error) => Err(error.into()),
        }
    }

    /// The peers with jobs in their queues, and how many each.
    pub fn queues(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.read()?;
        let lengths = match txn.open_table(QUEUE_LEN) {
            Ok(lengths) => lengths,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut queues = Vec::new();
        for entry in lengths.iter()? {
            let (peer, len) = entry?;
            if len.value() > 0 {
                queues.push((peer.value().to_owned(), len.value()));
            }
        }
        Ok(queues)
    }

    /// Up to `limit` jobs, newest first, only those in `state` and for
    /// `peer` when given, starting after the id `after`.
    pub fn list(
        &self,
        state: Option<JobState>,
        peer: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let txn = self.read()?;
        let jobs = match txn.open_table(JOBS) {
            Ok(jobs) => jobs,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let range = match after {
            Some(after) => jobs.range(..after)?,
            None => jobs.range::<&str>(..)?,
        };
        let mut found = Vec::new();
        for entry in range.rev() {
            if found.len() >= limit {
                break;
            }
            let (id, bytes) = entry?;
            let job = decode(id.value(), bytes.value())?;
            if state.is_none_or(|state| job.state == state)
                && peer.is_none_or(|peer| job.peer == peer)
            {
                found.push(job);
            }
        }
        Ok(found)
    }

    /// How many jobs are in each state.
    pub fn counts(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        let txn = self.read()?;
        let counts = match txn.open_table(COUNTS) {
            Ok(counts) => counts,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Ok(JobState::ALL.iter().map(|&state| (state, 0)).collect());
            }
            Err(error) => return Err(error.into()),
        };
        JobState::ALL
            .iter()
            .map(|&state| {
                let count = counts.get(state.as_str())?.map_or(0, |count| count.value());
                Ok((state, count))
            })
            .collect()
    }

    /// Moves job `id` to `next`, applying `change` to its record too; a
    /// job that ends leaves its peer's queue. Refused for an unknown job or
    /// a move its state does not allow.
    pub async fn advance(
        &self,
        id: &str,
        next: JobState,
        change: impl FnOnce(&mut JobRecord) + Send + 'static,
    ) -> Result<Result<JobRecord, Refused>, StoreError> {
        let id = id.to_owned();
        let committer = self.open_now()?.committer;
        committer
            .apply(move |txn| advance(txn, &id, next, change))
            .await
    }

    /// Marks the jobs `ids` delivered (one more attempt each) in one
    /// commit; returns those that were marked, as they are now (the others
    /// were cancelled or ended meanwhile).
    pub async fn mark_delivered(&self, ids: Vec<String>) -> Result<Vec<JobRecord>, StoreError> {
        let committer = self.open_now()?.committer;
        committer
            .apply(move |txn| {
                let mut marked = Vec::with_capacity(ids.len());
                for id in &ids {
                    if let Ok(job) = advance(txn, id, JobState::Delivered, |job| job.attempts += 1)?
                    {
                        marked.push(job);
                    }
                }
                Ok(marked)
            })
            .await
    }

    /// Forgets jobs that ended before `cutoff_ms` (unix ms): their records,
    /// bodies and idempotency keys. Returns how many went.
    pub async fn purge(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let committer = self.open_now()?.committer;
        let mut total = 0;
        // A bounded batch per transaction: submissions waiting on the
        // committer never wait for one huge purge.
        loop {
            let purged = committer.apply(move |txn| purge(txn, cutoff_ms)).await?;
            total += purged;
            if purged < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Ends job `id` in `state` (`succeeded`, or `failed` with `reason`)
    /// with `result` and its `body`: the response a poll gets.
    pub async fn finish(
        &self,
        id: &str,
        state: JobState,
        result: JobResult,
        body: Vec<u8>,
        reason: Option<String>,
    ) -> Result<Result<JobRecord, Refused>, StoreError> {
        let id = id.to_owned();
        let committer = self.open_now()?.committer;
        committer
            .apply(move |txn| {
                let finished = advance(txn, &id, state, |job| {
                    job.result = Some(result);
                    job.reason = reason;
                    if state == JobState::Succeeded {
                        job.progress = Some(100);
                    }
                })?;
                if finished.is_ok() {
                    txn.open_table(BODIES)?
                        .insert((id.as_str(), RESULT_BODY), body.as_slice())?;
                }
                Ok(finished)
            })
            .await
    }
}

/// The schema version in `meta`, writing ours into a new store.
fn schema(txn: &WriteTransaction) -> Result<Option<u64>, StoreError> {
    let mut meta = txn.open_table(META)?;
    let found = meta.get("schema")?.map(|version| version.value());
    if found.is_none() {
        meta.insert("schema", SCHEMA_VERSION)?;
    }
    Ok(found)
}

pub(super) fn decode(id: &str, bytes: &[u8]) -> Result<JobRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Record {
        id: id.to_owned(),
        detail: error.to_string(),
    })
}

pub(super) fn encode(job: &JobRecord) -> Vec<u8> {
    // A record of strings, numbers and byte lists always serializes.
    serde_json::to_vec(job).unwrap_or_default()
}

fn submit(txn: &WriteTransaction, job: NewJob, max_queue: u64) -> Result<Submitted, StoreError> {
    let mut jobs = txn.open_table(JOBS)?;
    let mut keys = txn.open_table(KEYS)?;
    if let Some(key) = &job.idempotency_key
        && let Some(id) = keys.get(key.as_str())?
    {
        let id = id.value().to_owned();
        if let Some(bytes) = jobs.get(id.as_str())? {
            return Ok(Submitted::Existing(decode(&id, bytes.value())?));
        }
    }
    let mut lengths = txn.open_table(QUEUE_LEN)?;
    let queued = lengths.get(job.peer.as_str())?.map_or(0, |len| len.value());
    if queued >= max_queue {
        return Ok(Submitted::QueueFull { queued });
    }
    let mut meta = txn.open_table(META)?;
    let seq = meta.get("next_seq")?.map_or(1, |seq| seq.value());
    meta.insert("next_seq", seq + 1)?;
    let now = now_ms();
    let record = JobRecord {
        id: new_id(now, seq),
        peer: job.peer,
        handler: job.handler,
        request: job.request,
        state: JobState::Queued,
        progress: None,
        created_ms: now,
        updated_ms: now,
        expires_ms: now.saturating_add(job.expires_in_ms),
        attempts: 0,
        notify: job.notify,
        idempotency_key: job.idempotency_key,
        at_most_once: job.at_most_once,
        seq,
        result: None,
        reason: None,
        notified: None,
    };
    let id = record.id.as_str();
    jobs.insert(id, encode(&record).as_slice())?;
    txn.open_table(QUEUE)?
        .insert((record.peer.as_str(), seq), id)?;
    lengths.insert(record.peer.as_str(), queued + 1)?;
    if !job.body.is_empty() {
        txn.open_table(BODIES)?
            .insert((id, REQUEST_BODY), job.body.as_slice())?;
    }
    if let Some(key) = &record.idempotency_key {
        keys.insert(key.as_str(), id)?;
    }
    count(txn, None, JobState::Queued)?;
    Ok(Submitted::Created(record))
}

fn purge(txn: &WriteTransaction, cutoff_ms: u64) -> Result<u64, StoreError> {
    let mut jobs = txn.open_table(JOBS)?;
    let mut ended = Vec::new();
    for entry in jobs.iter()? {
        let (id, bytes) = entry?;
        let job = decode(id.value(), bytes.value())?;
        // Ids sort by creation: nothing created after the cutoff can have
        // ended before it.
        if job.created_ms >= cutoff_ms {
            break;
        }
        if job.state.is_final() && job.updated_ms < cutoff_ms {
            ended.push(job);
            if ended.len() >= PURGE_BATCH {
                break;
            }
        }
    }
    let mut bodies = txn.open_table(BODIES)?;
    let mut keys = txn.open_table(KEYS)?;
    let mut counts = txn.open_table(COUNTS)?;
    for job in &ended {
        let id = job.id.as_str();
        jobs.remove(id)?;
        bodies.remove((id, REQUEST_BODY))?;
        bodies.remove((id, RESULT_BODY))?;
        if let Some(key) = &job.idempotency_key {
            keys.remove(key.as_str())?;
        }
        let was = counts
            .get(job.state.as_str())?
            .map_or(0, |count| count.value());
        counts.insert(job.state.as_str(), was.saturating_sub(1))?;
    }
    Ok(ended.len() as u64)
}

/// Moves one job's count from `from` (none: a new job) to `to`.
fn count(txn: &WriteTransaction, from: Option<JobState>, to: JobState) -> Result<(), StoreError> {
    if from == Some(to) {
        return Ok(());
    }
    let mut counts = txn.open_table(COUNTS)?;
    if let Some(from) = from {
        let was = counts.get(from.as_str())?.map_or(0, |count| count.value());
        counts.insert(from.as_str(), was.saturating_sub(1))?;
    }
    let was = counts.get(to.as_str())?.map_or(0, |count| count.value());
    counts.insert(to.as_str(), was + 1)?;
    Ok(())
}

fn advance(
    txn: &WriteTransaction,
    id: &str,
    next: JobState,
    change: impl FnOnce(&mut JobRecord),
) -> Result<Result<JobRecord, Refused>, StoreError> {
    let mut jobs = txn.open_table(JOBS)?;
    let Some(bytes) = jobs.get(id)?.map(|bytes| bytes.value().to_vec()) else {
        return Ok(Err(Refused::Unknown));
    };
    let mut job = decode(id, &bytes)?;
    if !job.state.may_become(next) {
        return Ok(Err(Refused::State { from: job.state }));
    }
    change(&mut job);
    count(txn, Some(job.state), next)?;
    job.state = next;
    job.updated_ms = now_ms();
    if next.is_final() && job.notify.is_some() {
        // Its hook is called once the end is on disk, by the notifier.
        job.notified = Some(NotifyStatus::default());
        txn.open_table(NOTIFY)?.insert((job.updated_ms, id), 0)?;
    }
    jobs.insert(id, encode(&job).as_slice())?;
    if next.is_final() {
        let mut queue = txn.open_table(QUEUE)?;
        if queue.remove((job.peer.as_str(), job.seq))?.is_some() {
            let mut lengths = txn.open_table(QUEUE_LEN)?;
            let queued = lengths.get(job.peer.as_str())?.map_or(0, |len| len.value());
            lengths.insert(job.peer.as_str(), queued.saturating_sub(1))?;
        }
        txn.open_table(BODIES)?.remove((id, REQUEST_BODY))?;
    }
    Ok(Ok(job))
}
