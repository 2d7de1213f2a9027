//! NATS request/reply alone, on the same `nats-server` as the cluster and
//! with the same mutual TLS: a responder and a requester built on
//! async-nats, one connection each, the reply the size of the pipe's `time`
//! answer. A forwarded request makes one such round trip besides the
//! direct path, so this is the least a forward can add.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use restpipe_tests::Nats;
use tokio::time::Instant;

use crate::loadgen::Outcome;

/// The subject the responder answers on.
const SUBJECT: &str = "bench.rr.time";
/// What the responder answers: as long as the pipe's `time` reply.
const ANSWER: &[u8] = br#"{"time": "2026-11-26T09:00:00.000000+00:00"}"#;
/// Deadline of one request; a slower one counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A responder on a thread (and runtime) of its own, answering until
/// dropped.
pub(super) struct Responder {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    /// Starts answering [`SUBJECT`] on `nats`, once subscribed.
    pub(super) async fn start(nats: &Nats) -> anyhow::Result<Self> {
        let client = connect(nats).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("nats-responder".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the NATS responder");
                runtime.block_on(respond(client, ready, stopped));
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
            let _ = client.publish(reply, Bytes::from_static(ANSWER)).await;
        }
    }
}

/// A client of `nats` with the benchmark's mutual TLS.
async fn connect(nats: &Nats) -> anyhow::Result<async_nats::Client> {
    let tls = nats.tls();
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(tls.ca)
        .add_client_certificate(tls.cert, tls.key)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(nats.url(0))
        .await
        .context("connecting to nats-server")?;
    Ok(client)
}

/// `concurrency` requesters on one connection, each sending one request
/// after another for `warmup` and then `duration`, as the load generator
/// does with HTTP.
pub(super) async fn load(
    nats: &Nats,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let client = connect(nats).await?;
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
        let answer = client.request(SUBJECT, Bytes::new()).await;
        let done = Instant::now();
        let measured = sent >= measure_from && done <= measure_until;
        match answer {
            Ok(answer) if answer.payload.as_ref() == ANSWER => {
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
