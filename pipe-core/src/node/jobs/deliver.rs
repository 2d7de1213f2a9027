//! Delivering queued jobs: whenever a peer with a queue is connected, its
//! jobs go to it in submission order, one at a time, each as an ordinary
//! event; the reply becomes the job's result, on disk before anything else
//! is told. A job whose peer goes away on the way waits in the queue for
//! the next connection (delivery is at-least-once); a job past its expiry
//! ends `expired`, connected peer or not.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::record::{JobRecord, JobResult, JobState};
use super::result_files::{KeepError, Kept};
use super::route::{Route, Sent};
use super::store::{JobStore, Refused};
use crate::link::PeerHandle;
use crate::node::cluster::Cluster;
use crate::node::directory::PeerDirectory;
use crate::node::metrics::{Counter, Gauge, Metrics, Timing};
use crate::wire::body::{BodyStream, INLINE_LIMIT};
use crate::wire::{Event, HandlerName, JobProgress, JobTag, RETURN_HANDLER_FAILED, Reply};

/// How often queues are looked at when nothing wakes the deliverer.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often ended jobs past their retention are purged, at most (a short
/// retention is looked at four times as often as it lasts).
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Jobs read from a queue at a time.
const BATCH: usize = 32;
/// How often the queue of a peer that is not connected is looked at for
/// jobs past their expiry (nothing else can happen to it).
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// A node's jobs: the store, and what runs them.
#[derive(Debug)]
pub struct Jobs {
    store: JobStore,
    wake: Notify,
    /// Jobs on their way to their peer, to stop if cancelled.
    in_flight: DashMap<String, CancellationToken>,
    /// Largest result body taken.
    max_body_bytes: usize,
    /// How long ended jobs are kept.
    retention: Duration,
    /// Peers' jobs running here, one lock each: a repeat waits for the run.
    pub(super) receiving: DashMap<(String, String), Arc<tokio::sync::Mutex<()>>>,
    /// The node's metrics.
    pub(super) metrics: Metrics,
    /// Told whenever one of the node's jobs ends.
    ended: Notify,
    /// The cluster, on a node of one: queues go to clients held elsewhere.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
}

impl Jobs {
    /// The jobs kept in `store`, with results up to `max_body_bytes`,
    /// ended ones kept for `retention`, counted in `metrics`.
    pub fn new(
        store: JobStore,
        max_body_bytes: usize,
        retention: Duration,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            wake: Notify::new(),
            in_flight: DashMap::new(),
            max_body_bytes,
            retention,
            receiving: DashMap::new(),
            metrics,
            ended: Notify::new(),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Largest result body taken.
    pub(super) fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The store.
    pub fn store(&self) -> &JobStore {
        &self.store
    }

    /// Something changed (a job queued, a peer connected): look at the
    /// queues now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Cancels job `id`: a queued one is dropped, one on its way is
    /// stopped (the peer gets a `Cancel`).
    pub async fn cancel(&self, id: &str) -> Result<Result<JobRecord, Refused>, super::StoreError> {
        let cancelled = self
            .store
            .advance(id, JobState::Cancelled, |job| {
                job.reason = Some("cancelled by its caller".to_owned());
            })
            .await?;
        if cancelled.is_ok() {
            self.ended(JobState::Cancelled);
            if let Some((_, token)) = self.in_flight.remove(id) {
                token.cancel();
            }
        }
        Ok(cancelled)
    }

    /// Delivers queued jobs to connected peers until `stop`.
    pub(crate) async fn run(
        self: Arc<Self>,
        peers: Arc<dyn PeerDirectory>,
        stop: CancellationToken,
    ) {
        let mut busy: std::collections::HashMap<String, tokio::task::JoinHandle<()>> =
            std::collections::HashMap::new();
        let mut purged_at = tokio::time::Instant::now();
        let mut commits = CommitTimes::default();
        let mut expiry_checked = std::collections::HashMap::new();
        let hooks = tokio::spawn(self.clone().call_hooks(stop.clone()));
        loop {
            let purge_every = PURGE_EVERY.min(self.retention / 4);
            if purged_at.elapsed() >= purge_every {
                purged_at = tokio::time::Instant::now();
                self.purge().await;
            }
            busy.retain(|_, task| !task.is_finished());
            match self.store.queues() {
                Ok(queues) => {
                    let queued = queues.iter().map(|(_, queued)| queued).sum();
                    self.metrics.gauge(Gauge::JobsQueued, queued);
                    commits.report(&self.store, &self.metrics);
                    expiry_checked.retain(|peer, _| queues.iter().any(|(queue, _)| queue == peer));
                    for (peer, _) in queues {
                        if busy.contains_key(&peer) {
                            continue;
                        }
                        let route = self.route(peers.as_ref(), &peer);
                        if route.is_none() {
                            // Not connected: only expiries to look for, and
                            // not on every wake (each accepted job wakes us).
                            let now = tokio::time::Instant::now();
                            let due = expiry_checked
                                .get(&peer)
                                .is_none_or(|last| now.duration_since(*last) >= EXPIRY_SWEEP);
                            if !due {
                                continue;
                            }
                            expiry_checked.insert(peer.clone(), now);
                        }
                        let jobs = self.clone();
                        let task = tokio::spawn(jobs.deliver(peer.clone(), route));
                        busy.insert(peer, task);
                    }
                }
                Err(error) => warn!("cannot read the job queues: {error}"),
            }
            let announced = async {
                match self.cluster.get() {
                    Some(cluster) => cluster.announced().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                () = announced => {}
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
        for (_, task) in busy {
            task.abort();
        }
        hooks.abort();
    }

    /// Forgets ended jobs, kept results and result files past their
    /// retention.
    async fn purge(&self) {
        let cutoff = now_ms().saturating_sub(self.retention.as_millis() as u64);
        let purged = match self.store.purge(cutoff).await {
            Ok(ended) => self
                .store
                .purge_received(cutoff)
                .await
                .map(|kept| ended + kept),
            Err(error) => Err(error),
        };
        let purged = match purged {
            Ok(purged) => self
                .store
                .remove_orphan_results()
                .await
                .map(|files| purged + files as u64),
            Err(error) => Err(error),
        };
        match purged {
            Ok(0) => {}
            Ok(purged) => debug!(purged, "jobs past their retention forgotten"),
            Err(error) => warn!("cannot purge ended jobs: {error}"),
        }
    }

    /// Works through `peer`'s queue: expires what is due, and, when the
    /// peer is connected, delivers the rest in order.
    async fn deliver(self: Arc<Self>, peer: String, route: Option<Route>) {
        loop {
            let queue = match self.store.queue(&peer, BATCH) {
                Ok(queue) => queue,
                Err(error) => {
                    warn!(%peer, "cannot read the job queue: {error}");
                    return;
                }
            };
            let mut due = Vec::new();
            for job in queue {
                if now_ms() >= job.expires_ms {
                    self.end(
                        &job.id,
                        JobState::Expired,
                        "not delivered before it expired",
                    )
                    .await;
                } else if job.at_most_once && job.attempts > 0 {
                    let reason = "interrupted: delivered once, and at-most-once forbids another";
                    self.end(&job.id, JobState::Failed, reason).await;
                } else {
                    due.push(job);
                }
            }
            let Some(route) = route.as_ref().filter(|route| route.is_accepting()) else {
                return;
            };
            if due.is_empty() || !self.deliver_batch(route, due).await {
                return;
            }
        }
    }

    /// Delivers `jobs` in order; whether the peer is still there. The
    /// at-least-once ones are marked delivered together first (one commit);
    /// an at-most-once one is marked alone, right before it goes, so a job
    /// never sent is never taken for interrupted. Results are kept while
    /// the next job goes (each job is still sent after the one before it
    /// was answered).
    async fn deliver_batch(self: &Arc<Self>, route: &Route, jobs: Vec<JobRecord>) -> bool {
        let ids = jobs
            .iter()
            .filter(|job| !job.at_most_once)
            .map(|job| job.id.clone())
            .collect();
        let mut marked: std::collections::HashMap<String, JobRecord> =
            match self.store.mark_delivered(ids).await {
                Ok(marked) => marked
                    .into_iter()
                    .map(|job| (job.id.clone(), job))
                    .collect(),
                Err(error) => {
                    warn!("cannot mark jobs delivered: {error}");
                    return false;
                }
            };
        let mut keeping = tokio::task::JoinSet::new();
        let mut peer_there = true;
        for job in jobs {
            let job = if job.at_most_once {
                match self
                    .store
                    .advance(&job.id, JobState::Delivered, |job| job.attempts += 1)
                    .await
                {
                    Ok(Ok(_)) => job,
                    _ => continue, // cancelled or ended meanwhile
                }
            } else {
                match marked.remove(&job.id) {
                    // Its attempts as they were before this delivery.
                    Some(_) => job,
                    None => continue,
                }
            };
            match self.deliver_one(route, job).await {
                Delivery::Done(Some(keep)) => {
                    keeping.spawn(keep);
                }
                Delivery::Done(None) | Delivery::Skipped => {}
                Delivery::PeerGone => {
                    peer_there = false;
                    break;
                }
            }
        }
        // Marked but never sent (the peer went): back in the queue.
        for id in marked.into_keys() {
            let _ = self.store.advance(&id, JobState::Queued, |_| {}).await;
        }
        keeping.join_all().await;
        peer_there
    }

    /// Delivers one job and keeps its outcome.
    async fn deliver_one(self: &Arc<Self>, route: &Route, job: JobRecord) -> Delivery {
        self.metrics.incr(Counter::JobDelivery);
        let body = match self.store.request_body(&job.id) {
            Ok(body) => body,
            Err(error) => {
                warn!(job = %job.id, "cannot read the job's body: {error}");
                return Delivery::Skipped;
            }
        };
        let event = event_of(&job, body);
        let tag = JobTag {
            id: job.id.clone(),
            redelivery: job.attempts > 0,
        };
        let left = Duration::from_millis(job.expires_ms.saturating_sub(now_ms()));
        let timeout = Duration::from_millis(job.request.timeout_ms).min(left);
        let stop = CancellationToken::new();
        self.in_flight.insert(job.id.clone(), stop.clone());
        debug!(job = %job.id, peer = %job.peer, attempt = job.attempts + 1, "delivering a job");
        let (progress, mut watch) = JobProgress::channel();
        let request = route.send(event, timeout, tag, progress);
        tokio::pin!(request);
        let outcome = loop {
            tokio::select! {
                outcome = &mut request => break Some(outcome),
                _ = stop.cancelled() => break None,
                Ok(()) = watch.changed() => {
                    let percent = *watch.borrow_and_update();
                    self.record_progress(&job.id, percent).await;
                }
            }
        };
        self.in_flight.remove(&job.id);
        match outcome {
            None => Delivery::Done(None), // cancelled: already ended
            Some(Sent::Reply(reply)) => {
                let jobs = self.clone();
                Delivery::Done(Some(Box::pin(async move {
                    jobs.keep_result(&job.id, *reply).await;
                })))
            }
            Some(Sent::PeerGone) => {
                let _ = self.store.advance(&job.id, JobState::Queued, |_| {}).await;
                Delivery::PeerGone
            }
            Some(Sent::Failed(status, reason)) => {
                self.fail(&job.id, status, &reason).await;
                Delivery::Done(None)
            }
        }
    }

    /// The way to `peer` for its jobs: its connection here, else the node
    /// of the cluster that announced it holds it.
    fn route(&self, peers: &dyn PeerDirectory, peer: &str) -> Option<Route> {
        if let Some(handle) = peers.get(peer).filter(PeerHandle::is_accepting) {
            return Some(Route::Local(handle));
        }
        let cluster = self.cluster.get()?;
        cluster
            .held_elsewhere(peer)
            .then(|| Route::Cluster(cluster.clone(), peer.to_owned()))
    }

    /// Delivers through `cluster` too: to clients other nodes hold.
    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The peer's handler runs the job and got `percent` of the way.
    async fn record_progress(&self, id: &str, percent: u8) {
        let recorded = self
            .store
            .advance(id, JobState::Running, move |job| {
                job.progress = Some(percent)
            })
            .await;
        if let Err(error) = recorded {
            warn!(job = %id, "cannot record the job's progress: {error}");
        }
    }

    /// Keeps `reply` as the job's result: a large body in a file.
    async fn keep_result(&self, id: &str, mut reply: Reply) {
        let (first, stream) = (std::mem::take(&mut reply.body), reply.stream.take());
        let kept = (self.store)
            .keep_result_body(id, first, stream, self.max_body_bytes)
            .await;
        let mut result = JobResult::of_reply(&reply);
        let body = match kept {
            Ok(Kept::Memory(body)) => body.to_vec(),
            Ok(Kept::File(length)) => {
                result.body_file = Some(length);
                Vec::new()
            }
            Err(error @ KeepError::Body(_)) => {
                return self.fail(id, 502, &error.to_string()).await;
            }
            Err(error @ KeepError::Disk(_)) => {
                return self.fail(id, 507, &error.to_string()).await;
            }
        };
        let ended = self
            .store
            .finish(id, JobState::Succeeded, result, body, None)
            .await;
        match ended {
            Ok(Ok(_)) => self.ended(JobState::Succeeded),
            Ok(Err(_)) => {} // it ended otherwise meanwhile (cancelled)
            Err(error) => warn!(job = %id, "cannot keep the job's result: {error}"),
        }
    }

    /// Ends the job `failed` with the response the synchronous call would
    /// have given: `status` and `{"error": reason}`.
    async fn fail(&self, id: &str, status: u16, reason: &str) {
        let body = serde_json::json!({ "error": reason }).to_string();
        let result = JobResult {
            http_status: status,
            return_code: RETURN_HANDLER_FAILED,
            content_type: crate::wire::JSON.to_owned(),
            headers: Vec::new(),
            body_file: None,
        };
        let ended = self
            .store
            .finish(
                id,
                JobState::Failed,
                result,
                body.into_bytes(),
                Some(reason.to_owned()),
            )
            .await;
        match ended {
            Ok(Ok(_)) => self.ended(JobState::Failed),
            Ok(Err(_)) => {}
            Err(error) => warn!(job = %id, "cannot keep the job's failure: {error}"),
        }
    }

    async fn end(&self, id: &str, state: JobState, reason: &str) {
        let reason = reason.to_owned();
        match self
            .store
            .advance(id, state, move |job| job.reason = Some(reason))
            .await
        {
            Ok(Ok(_)) => self.ended(state),
            Ok(Err(_)) => {}
            Err(error) => warn!(job = %id, "cannot end the job: {error}"),
        }
    }

    /// Counts a job that ended in `state`, and wakes those waiting for
    /// ends.
    fn ended(&self, state: JobState) {
        self.metrics.job_ended(state.as_str());
        self.ended.notify_waiters();
    }

    /// Resolves when one of the node's jobs ends (any job: check yours).
    /// Register it (`enable`) before looking, so no end is missed.
    pub fn some_job_ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.ended.notified()
    }
}

/// The store's commit count and time at the last report, to send the
/// mean commit time since then.
#[derive(Debug, Default)]
struct CommitTimes {
    commits: u64,
    micros: u64,
}

impl CommitTimes {
    fn report(&mut self, store: &JobStore, metrics: &Metrics) {
        let (commits, micros) = (store.commits(), store.commit_micros());
        let new = commits.saturating_sub(self.commits);
        if let Some(mean) = micros.saturating_sub(self.micros).checked_div(new) {
            metrics.timing(Timing::JobCommit, Duration::from_micros(mean));
        }
        (self.commits, self.micros) = (commits, micros);
    }
}

/// How one delivery went.
enum Delivery {
    /// The job was answered (a result, a failure, a cancel); what keeps
    /// the result, if there is one to keep.
    Done(Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>),
    /// The job was not delivered (it changed meanwhile, or its body could
    /// not be read).
    Skipped,
    /// The peer went away: the job waits for the next connection.
    PeerGone,
}

/// The event a job carries.
fn event_of(job: &JobRecord, body: Vec<u8>) -> Event {
    let request = &job.request;
    let mut headers = http::HeaderMap::new();
    for (name, value) in &request.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    Event {
        handler: HandlerName::new(request.verb.clone(), request.noun.clone()),
        args: request.args.clone(),
        query: request.query.clone(),
        content_type: request.content_type.clone(),
        headers,
        // A large body streams, as a caller's would.
        body: if body.len() <= INLINE_LIMIT {
            Bytes::from(body.clone())
        } else {
            Bytes::new()
        },
        stream: (body.len() > INLINE_LIMIT).then(|| BodyStream::from_bytes(Bytes::from(body))),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
