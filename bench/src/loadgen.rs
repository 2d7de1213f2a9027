//! The load generator: `concurrency` workers, each with its own keep-alive
//! HTTP/1.1 connection (hyper's client), sending one request after another
//! for a fixed time and recording every latency in an HDR histogram.
//!
//! Each request is a GET answered 200 unless the load's [`RequestShape`]
//! says otherwise (a POST with a body and headers, answered 202, say).
//!
//! It is closed-loop (a worker waits for each reply before the next
//! request), so under saturation latencies are those a fixed set of callers
//! sees, not those of an open arrival rate. The same generator drives the
//! pipe and the baseline, so their ratio is fair.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::probe;
use crate::report::clip;

/// Longest latency the histograms hold (60 s, in nanoseconds); longer ones
/// are recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Deadline of one request; a slower one counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A worker whose connection keeps breaking gives up after this many
/// failures rather than spin.
const MAX_TRANSPORT_FAILURES: u64 = 100;

/// What load to apply.
#[derive(Debug, Clone)]
pub struct Load {
    /// The HTTP front to load.
    pub addr: SocketAddr,
    /// Path (and query) of every request.
    pub path: String,
    /// Method, headers, body and expected status of every request.
    pub shape: RequestShape,
    /// Workers, each with its own connection.
    pub concurrency: usize,
    /// Load applied before measuring starts.
    pub warmup: Duration,
    /// Longest measured time.
    pub duration: Duration,
    /// Ends the load early (a probe running alongside something else).
    pub stop: Option<CancellationToken>,
}

/// What every request of a load looks like, and the status that counts as
/// success.
#[derive(Debug, Clone)]
pub struct RequestShape {
    /// Its method.
    pub method: http::Method,
    /// Headers besides `Host`.
    pub headers: http::HeaderMap,
    /// Its body (empty: none).
    pub body: Bytes,
    /// The status of a successful answer.
    pub expect: http::StatusCode,
}

impl Default for RequestShape {
    /// A GET without a body, answered 200.
    fn default() -> Self {
        Self {
            method: http::Method::GET,
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
            expect: http::StatusCode::OK,
        }
    }
}

impl RequestShape {
    /// A request of this shape for `path` on `host`.
    pub fn request(&self, path: &str, host: &str) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let mut request = http::Request::builder()
            .method(self.method.clone())
            .uri(path)
            .header(http::header::HOST, host)
            .body(Full::new(self.body.clone()))?;
        request.headers_mut().extend(self.headers.clone());
        Ok(request)
    }
}

/// What the load measured.
#[derive(Debug)]
pub struct Outcome {
    /// Requests answered as expected (200 unless the shape says) in the
    /// measured time.
    pub ok: u64,
    /// Requests that failed (another status, a broken connection, too slow).
    pub failed: u64,
    /// Requests answered as expected in all, warm-up included.
    pub completed: u64,
    /// Wall time of the whole load, warm-up included.
    pub wall: Duration,
    /// Length of the measured time.
    pub measured: Duration,
    /// Latencies of the successful requests, in nanoseconds.
    pub latencies: Histogram<u64>,
    /// What the first failure was, for the report.
    pub first_failure: Option<String>,
}

impl Outcome {
    /// The failed count for a table cell, with the first failure's reason.
    pub fn failures(&self) -> String {
        match &self.first_failure {
            Some(first) => format!("{} (first: {first})", self.failed),
            None => self.failed.to_string(),
        }
    }

    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    /// Adds `other`, a later load of the same shape, to this one: counts,
    /// times and latencies together, the first failure kept.
    pub fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.ok += other.ok;
        self.failed += other.failed;
        self.completed += other.completed;
        self.wall += other.wall;
        self.measured += other.measured;
        self.latencies.add(&other.latencies)?;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        Ok(())
    }

    /// No requests yet, over `measured`.
    pub fn empty(measured: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            ok: 0,
            failed: 0,
            completed: 0,
            wall: Duration::ZERO,
            measured,
            latencies: histogram()?,
            first_failure: None,
        })
    }

    /// Adds one worker's requests and latencies (and its first failure, if
    /// none was seen yet).
    pub fn absorb(&mut self, part: Outcome) -> anyhow::Result<()> {
        self.ok += part.ok;
        self.failed += part.failed;
        self.completed += part.completed;
        self.latencies
            .add(&part.latencies)
            .map_err(|error| anyhow::anyhow!("merging histograms: {error:?}"))?;
        if self.first_failure.is_none() {
            self.first_failure = part.first_failure;
        }
        Ok(())
    }

    /// The latency at quantile `q` (0.5 is the median).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latencies.value_at_quantile(q))
    }
}

/// A fresh latency histogram: 1 ns to 60 s at three significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .map_err(|error| anyhow::anyhow!("creating a histogram: {error:?}"))
}

/// Applies `load` and waits for every worker.
pub async fn run(load: &Load) -> anyhow::Result<Outcome> {
    let load = Arc::new(load.clone());
    let started = Instant::now();
    let measure_from = started + load.warmup;
    let measure_until = measure_from + load.duration;
    let workers: Vec<_> = (0..load.concurrency)
        .map(|_| tokio::spawn(worker(load.clone(), measure_from, measure_until)))
        .collect();
    let mut outcome = Outcome::empty(Duration::ZERO)?;
    let mut ended = measure_from;
    for worker in workers {
        let part = worker.await.context("a load worker panicked")??;
        ended = ended.max(part.ended);
        outcome.absorb(part.outcome)?;
    }
    outcome.measured = ended
        .min(measure_until)
        .saturating_duration_since(measure_from);
    outcome.wall = started.elapsed();
    Ok(outcome)
}

/// One worker's share.
struct Part {
    /// Its requests and their latencies.
    outcome: Outcome,
    /// When its last measured request finished (or it was stopped).
    ended: Instant,
}

async fn worker(
    load: Arc<Load>,
    measure_from: Instant,
    measure_until: Instant,
) -> anyhow::Result<Part> {
    let mut part = Part {
        outcome: Outcome::empty(Duration::ZERO)?,
        ended: measure_from,
    };
    let stop = load.stop.clone().unwrap_or_default();
    let host = load.addr.to_string();
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    let mut transport_failures = 0;
    while Instant::now() < measure_until && !stop.is_cancelled() {
        let sender = match &mut connection {
            Some(sender) => sender,
            None => connection.insert(probe::connect(load.addr).await?),
        };
        let request = load.shape.request(&load.path, &host)?;
        let sent = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange(sender, request)).await;
        let done = Instant::now();
        let measured = sent >= measure_from && done <= measure_until && !stop.is_cancelled();
        let failure = match answer {
            Ok(Ok((status, _))) if status == load.shape.expect => {
                part.outcome.completed += 1;
                if measured {
                    part.outcome.ok += 1;
                    let nanos = u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX);
                    part.outcome.latencies.saturating_record(nanos);
                    part.ended = done;
                }
                None
            }
            Ok(Ok((status, body))) => Some(format!(
                "{status}: {}",
                clip(&String::from_utf8_lossy(&body), 120)
            )),
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
        if let Some(failure) = failure {
            if measured {
                part.outcome.failed += 1;
            }
            part.outcome.first_failure.get_or_insert(failure);
            if transport_failures >= MAX_TRANSPORT_FAILURES {
                break;
            }
        }
    }
    if stop.is_cancelled() {
        part.ended = part.ended.max(Instant::now().min(measure_until));
    }
    Ok(part)
}

/// Sends one request and reads the whole answer.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
