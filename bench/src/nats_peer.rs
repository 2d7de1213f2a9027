//! NATS request/reply over mutual TLS, measured where the pipe's figures
//! need it: the peer the pipe's requests are judged against (throughput),
//! and the least a request forwarded between server nodes adds (cluster).
//!
//! A real `nats-server` (Debian's, the test kit's [`Nats`]) on free
//! loopback ports, requiring client certificates; a responder and a
//! requester built on async-nats, one connection each, exchanging what the
//! pipe's `GET /server/time` carries ([`crate::payload`]). Where
//! `nats-server` is missing, callers skip these figures with a row saying
//! so ([`NOT_INSTALLED`]).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use restpipe_tests::nats::{NatsTls, installed_nats_server};
use restpipe_tests::{Nats, Pki};
use tokio::time::Instant;

use crate::loadgen::Outcome;
use crate::payload;

/// The subject the responder answers on.
const SUBJECT: &str = "bench.rr.time";
/// Deadline of one request; a slower one counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The cell of a row whose figures need `nats-server` where it is missing.
pub const NOT_INSTALLED: &str =
    "skipped: nats-server is not installed (Debian: apt-get install nats-server)";

/// Whether `nats-server` is installed.
pub fn installed() -> bool {
    installed_nats_server().is_some()
}

/// `nats-server --version`'s version, for the notes.
pub fn version() -> Option<String> {
    let binary = installed_nats_server()?;
    let output = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .find(|word| word.starts_with('v'))
        .map(str::to_owned)
}

/// Starts a `nats-server` of one member with mutual TLS from a CA of its
/// own (a node's NATS certificate need not come from the pipe's CA).
/// The test kit panics when NATS does not start; here that is an error.
pub async fn start_server() -> anyhow::Result<Nats> {
    let started = tokio::spawn(async {
        let pki = Pki::new();
        Nats::start(&pki, 1).await
    })
    .await;
    started.map_err(|error| match error.try_into_panic() {
        Ok(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            anyhow::anyhow!("nats-server did not start: {why}")
        }
        Err(error) => anyhow::anyhow!("starting nats-server: {error}"),
    })
}

/// Stops every member of `nats` and waits for it, so its CPU counts as the
/// benchmark's own, not as other processes'.
pub async fn stop_server(mut nats: Nats) {
    nats.kill(0).await;
}

/// A responder on a thread (and runtime) of its own, connection included,
/// answering until dropped.
pub struct Responder {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    /// Starts answering [`SUBJECT`] on `nats`, once subscribed.
    pub async fn start(nats: &Nats) -> anyhow::Result<Self> {
        let (url, tls) = (nats.url(0), nats.tls());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("nats-responder".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(anyhow::anyhow!("a runtime: {error}")));
                        return;
                    }
                };
                // Connected here, so the connection's task runs on this
                // thread too, not on the caller's runtime.
                runtime.block_on(async move {
                    match connect(url, tls).await {
                        Ok(client) => respond(client, ready, stopped).await,
                        Err(error) => {
                            let _ = ready.send(Err(error));
                        }
                    }
                });
            })?;
        subscribed
            .await
            .context("the NATS responder did not subscribe")??;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn respond(
    client: async_nats::Client,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let subscribed = client.subscribe(SUBJECT).await;
    let mut requests = match subscribed {
        Ok(requests) => requests,
        Err(error) => {
            let _ = ready.send(Err(anyhow::anyhow!("subscribing: {error}")));
            return;
        }
    };
    // The subscription is in place once the server has seen it.
    let flushed = client.flush().await.map_err(anyhow::Error::from);
    let _ = ready.send(flushed);
    loop {
        let request = tokio::select! {
            _ = &mut stopped => return,
            request = requests.next() => request,
        };
        let Some(request) = request else { return };
        if let Some(reply) = request.reply {
            let _ = client.publish(reply, payload::time_answer()).await;
        }
    }
}

/// A client of the NATS server at `url` with the benchmark's mutual TLS.
async fn connect(url: String, tls: NatsTls) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(tls.ca)
        .add_client_certificate(tls.cert, tls.key)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(url)
        .await
        .context("connecting to nats-server")?;
    Ok(client)
}

/// `concurrency` requesters on one connection (made on the caller's
/// runtime), each sending one request after another for `warmup` and then
/// `duration`, as the load generator does with HTTP.
pub async fn load(
    nats: &Nats,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let client = connect(nats.url(0), nats.tls()).await?;
    let started = Instant::now();
    let measure_from = started + warmup;
    let measure_until = measure_from + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(requester(client.clone(), measure_from, measure_until)))
        .collect();
    let mut outcome = Outcome::empty(duration)?;
    for worker in workers {
        outcome.absorb(worker.await.context("a NATS requester panicked")??)?;
    }
    outcome.wall = started.elapsed();
    Ok(outcome)
}

async fn requester(
    client: async_nats::Client,
    measure_from: Instant,
    measure_until: Instant,
) -> anyhow::Result<Outcome> {
    let mut part = Outcome::empty(Duration::ZERO)?;
    while Instant::now() < measure_until {
        let sent = Instant::now();
        let answer = client
            .request(SUBJECT, Bytes::from_static(payload::REQUEST))
            .await;
        let done = Instant::now();
        let measured = sent >= measure_from && done <= measure_until;
        match answer {
            Ok(answer) if payload::is_time_answer(&answer.payload) => {
                part.completed += 1;
                if measured {
                    part.ok += 1;
                    let nanos = u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX);
                    part.latencies.saturating_record(nanos);
                }
            }
            other => {
                if measured {
                    part.failed += 1;
                }
                let why = match other {
                    Ok(answer) => format!("unexpected answer of {} bytes", answer.payload.len()),
                    Err(error) => error.to_string(),
                };
                part.first_failure.get_or_insert(why);
            }
        }
    }
    Ok(part)
}
