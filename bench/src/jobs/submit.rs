//! The HTTP side of the jobs scenario: submitting a fixed number of jobs
//! at a concurrency, one job's asynchronous round trip (submit, then
//! long-poll its `Location`), and what `/_pipe/status` says about jobs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::loadgen::RequestShape;
use crate::probe;
use crate::report::clip;

/// Deadline of one submission or poll; a slower one counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a round trip's poll waits for the job to end (`?wait=`).
pub const POLL_WAIT_SECONDS: u32 = 10;
/// A submitting worker whose connection keeps breaking gives up after
/// this many failures rather than spin.
const MAX_TRANSPORT_FAILURES: u64 = 100;
/// The body of every job: a small JSON document, as a report or a command
/// would be.
const JOB_BODY: &str = r#"{"report":"restpipe-bench","rows":[1,2,3,4,5,6,7,8,9,10]}"#;

/// The noun every job names: the client node's `post_work` handler.
pub const NOUN: &str = "work";

/// A POST of the job body to `post_work`, asynchronous (`Prefer:
/// respond-async`, answered 202) or not (answered 200).
pub fn work_request(asynchronous: bool) -> RequestShape {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if asynchronous {
        headers.insert("prefer", http::HeaderValue::from_static("respond-async"));
    }
    RequestShape {
        method: http::Method::POST,
        headers,
        body: Bytes::from_static(JOB_BODY.as_bytes()),
        expect: if asynchronous {
            http::StatusCode::ACCEPTED
        } else {
            http::StatusCode::OK
        },
    }
}

/// Where a job for `peer` is submitted on a server node's front.
pub fn work_path(peer: &str) -> String {
    format!("/client/{peer}/{NOUN}")
}

/// What a run of submissions did.
#[derive(Debug, Clone, Default)]
pub struct Submitted {
    /// Jobs answered 202.
    pub accepted: u64,
    /// Submissions answered otherwise, or not at all.
    pub refused: u64,
    /// What the first refusal said.
    pub first_refusal: Option<String>,
    /// From the first submission to the last answer.
    pub took: Duration,
}

impl Submitted {
    /// Jobs accepted per second.
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// Submits `count` jobs through the front at `addr`, spread in turn over
/// `peers`, from `concurrency` workers each on its own keep-alive
/// connection; stops early at `bound`.
pub async fn submit_jobs(
    addr: SocketAddr,
    peers: &[String],
    count: u64,
    concurrency: usize,
    bound: Duration,
) -> anyhow::Result<Submitted> {
    anyhow::ensure!(!peers.is_empty(), "jobs need a peer to be for");
    let next = Arc::new(AtomicU64::new(0));
    let paths: Arc<Vec<String>> = Arc::new(peers.iter().map(|peer| work_path(peer)).collect());
    let started = Instant::now();
    let until = started + bound;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| tokio::spawn(submitter(addr, paths.clone(), next.clone(), count, until)))
        .collect();
    let mut total = Submitted::default();
    for worker in workers {
        let part = worker.await.context("a submitting worker panicked")??;
        total.accepted += part.accepted;
        total.refused += part.refused;
        if total.first_refusal.is_none() {
            total.first_refusal = part.first_refusal;
        }
    }
    total.took = started.elapsed();
    Ok(total)
}

/// One worker: takes the next job number until `count` or `until`.
async fn submitter(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    next: Arc<AtomicU64>,
    count: u64,
    until: Instant,
) -> anyhow::Result<Submitted> {
    let shape = work_request(true);
    let host = addr.to_string();
    let mut part = Submitted::default();
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    let mut transport_failures = 0;
    while Instant::now() < until {
        let number = next.fetch_add(1, Ordering::Relaxed);
        if number >= count {
            break;
        }
        let path = &paths[(number % paths.len() as u64) as usize];
        let sender = match &mut connection {
            Some(sender) => sender,
            None => connection.insert(probe::connect(addr).await?),
        };
        let request = shape.request(path, &host)?;
        let failure = match tokio::time::timeout(REQUEST_TIMEOUT, exchange(sender, request)).await {
            Ok(Ok(answer)) if answer.status == http::StatusCode::ACCEPTED => None,
            Ok(Ok(answer)) => Some(answer.describe()),
            Ok(Err(error)) => {
                connection = None;
                transport_failures += 1;
                Some(format!("{error:#}"))
            }
            Err(_) => {
                connection = None;
                transport_failures += 1;
                Some(format!("no answer within {REQUEST_TIMEOUT:?}"))
            }
        };
        match failure {
            None => part.accepted += 1,
            Some(failure) => {
                part.refused += 1;
                part.first_refusal.get_or_insert(failure);
                if transport_failures >= MAX_TRANSPORT_FAILURES {
                    break;
                }
            }
        }
    }
    Ok(part)
}

/// One answer, read whole.
pub struct Answer {
    /// Its status.
    pub status: http::StatusCode,
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Answer {
    /// `status: body` (clipped), for a report cell.
    pub fn describe(&self) -> String {
        format!(
            "{}: {}",
            self.status,
            clip(&String::from_utf8_lossy(&self.body), 120)
        )
    }
}

/// Sends one request and reads the whole answer.
pub async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> anyhow::Result<Answer> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// One asynchronous round trip, as a caller makes it.
#[derive(Debug, Clone, Copy)]
pub struct RoundTrip {
    /// From sending the submission to its 202.
    pub accepted: Duration,
    /// From sending the submission to the end of the poll that brought the
    /// job's result.
    pub total: Duration,
    /// Inside the node: from the job's creation to its end (its record's
    /// `created` and `updated`, in milliseconds).
    pub in_node: Duration,
}

/// Submits one job for `peer` on `sender` (the front at `host`), then
/// long-polls its `Location` until the result: the handler's 200.
pub async fn round_trip(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    peer: &str,
) -> anyhow::Result<RoundTrip> {
    let started = Instant::now();
    let submission = work_request(true).request(&work_path(peer), host)?;
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange(sender, submission))
        .await
        .context("no answer to the submission")??;
    let accepted = started.elapsed();
    anyhow::ensure!(
        answer.status == http::StatusCode::ACCEPTED,
        "submission answered {}",
        answer.describe()
    );
    let location = answer
        .headers
        .get(http::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .context("a 202 without a Location")?
        .to_owned();
    let poll =
        RequestShape::default().request(&format!("{location}?wait={POLL_WAIT_SECONDS}"), host)?;
    let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange(sender, poll))
        .await
        .context("no answer to the poll")??;
    let total = started.elapsed();
    anyhow::ensure!(
        result.status == http::StatusCode::OK,
        "the poll answered {} (state {:?})",
        result.describe(),
        result.headers.get("x-pipe-job-state")
    );
    let status = RequestShape::default().request(&format!("{location}/status"), host)?;
    let status = exchange(sender, status).await?;
    let record: serde_json::Value = serde_json::from_slice(&status.body)
        .with_context(|| format!("the job's status: {}", status.describe()))?;
    let seconds = |field: &str| record[field].as_f64().unwrap_or(0.0);
    let in_node = Duration::from_secs_f64((seconds("updated") - seconds("created")).max(0.0));
    Ok(RoundTrip {
        accepted,
        total,
        in_node,
    })
}

/// What `/_pipe/status` says about a node's jobs.
#[derive(Debug, Clone, Default)]
pub struct JobsStatus {
    /// Jobs that ended `succeeded`.
    pub succeeded: u64,
    /// Jobs that ended `failed`.
    pub failed: u64,
    /// Jobs waiting in queues or on their way.
    pub pending: u64,
    /// Durable commits since the node started (`jobs.commits`), if the
    /// node shows them.
    pub commits: Option<u64>,
}

/// Reads the jobs part of the node's `/_pipe/status` at `addr`.
pub async fn jobs_status(addr: SocketAddr) -> anyhow::Result<JobsStatus> {
    let status = probe::get_json(addr, "/_pipe/status").await?;
    let jobs = &status["jobs"];
    anyhow::ensure!(
        jobs.is_object() && jobs.get("error").is_none(),
        "/_pipe/status shows no jobs: {jobs}"
    );
    let state = |name: &str| jobs["by_state"][name].as_u64().unwrap_or(0);
    Ok(JobsStatus {
        succeeded: state("succeeded"),
        failed: state("failed"),
        pending: state("queued") + state("delivered") + state("running"),
        commits: jobs["commits"].as_u64(),
    })
}
