//! Asking each of many clients once for `GET /client/<name>/time`, each
//! through a node of its own choosing, [`CONCURRENCY`] at a time, until
//! every one has answered 200: proof that every client is reachable from
//! that node, and when the last one was.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use super::ANSWER_TIMEOUT;
use crate::probe;
use crate::report::clip;

/// Requests in flight at once.
pub(super) const CONCURRENCY: usize = 64;
/// Pause before asking again for a client that did not answer 200.
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// A client, and the node front to ask it through.
pub(super) type Target = (String, SocketAddr);

/// What a sweep saw.
#[derive(Debug, Default)]
pub(super) struct Swept {
    /// Clients that answered 200.
    pub(super) answered: usize,
    /// Requests that did not (and were made again).
    pub(super) retries: u64,
    /// When the last 200 came.
    pub(super) last: Option<Instant>,
    /// The first request that did not answer 200, and why.
    pub(super) first_failure: Option<String>,
}

/// Asks every target once, again after any answer but 200, until all
/// answered or `bound` passed.
pub(super) async fn run(targets: Vec<Target>, bound: Duration) -> anyhow::Result<Swept> {
    let deadline = Instant::now() + bound;
    let queue = Arc::new(Mutex::new(VecDeque::from(targets)));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| tokio::spawn(worker(queue.clone(), deadline)))
        .collect();
    let mut swept = Swept::default();
    for worker in workers {
        let part = worker.await.context("a sweep worker panicked")?;
        swept.answered += part.answered;
        swept.retries += part.retries;
        swept.last = swept.last.max(part.last);
        if swept.first_failure.is_none() {
            swept.first_failure = part.first_failure;
        }
    }
    Ok(swept)
}

async fn worker(queue: Arc<Mutex<VecDeque<Target>>>, deadline: Instant) -> Swept {
    let mut connections: HashMap<SocketAddr, SendRequest<Empty<Bytes>>> = HashMap::new();
    let mut part = Swept::default();
    while Instant::now() < deadline {
        let Some(target) = lock(&queue).pop_front() else {
            break;
        };
        match ask(&mut connections, &target).await {
            Ok(http::StatusCode::OK) => {
                part.answered += 1;
                part.last = Some(Instant::now());
            }
            other => {
                let why = match other {
                    Ok(status) => status.to_string(),
                    Err(error) => {
                        // The connection may be broken: a new one next time.
                        connections.remove(&target.1);
                        format!("{error:#}")
                    }
                };
                part.retries += 1;
                part.first_failure
                    .get_or_insert_with(|| clip(&format!("{}: {why}", target.0), 160));
                lock(&queue).push_back(target);
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
    part
}

/// One `GET /client/<name>/time` through the target's node, on a kept
/// connection to it; its status.
async fn ask(
    connections: &mut HashMap<SocketAddr, SendRequest<Empty<Bytes>>>,
    (name, front): &Target,
) -> anyhow::Result<http::StatusCode> {
    let exchange = async {
        let sender = match connections.entry(*front) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(probe::connect(*front).await?)
            }
        };
        sender.ready().await?;
        let request = http::Request::get(format!("/client/{name}/time"))
            .header(http::header::HOST, front.to_string())
            .body(Empty::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        anyhow::Ok(status)
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .context("no answer in time")?
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
