//! The node's metrics for Prometheus: `GET /_pipe/metrics` on the local
//! front, and the same on a listener of its own (`--metrics-listen`) that
//! serves nothing else, for a scraper that must not reach the pipe.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::listener::{HttpAddr, HttpListener, accept, listener_cleanup};
use super::response::{ResponseBody, error_response, full};
use crate::node::Node;
use crate::node::metrics::{self, JobLevels, Levels};

/// The path of the metrics on the local front.
pub const METRICS_PATH: &str = "/_pipe/metrics";
/// The path scrapers look at by default, answered on the metrics listener
/// besides [`METRICS_PATH`].
const SCRAPE_PATH: &str = "/metrics";
/// Connections open at once on the metrics listener; past it a new one is
/// closed at once. A scraper keeps one open; a scrape takes well under a
/// millisecond.
const MAX_SCRAPES: usize = 16;
/// How long a scrape in progress may finish once the node stops.
const DRAIN: Duration = Duration::from_secs(1);

/// The metrics in the text exposition format, the gauges read now.
pub(super) fn metrics_response(node: &Node) -> Response<ResponseBody> {
    match node.metrics().scrape(&levels(node)) {
        Ok(text) => {
            let mut response = Response::new(full(Bytes::from(text)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        Err(error) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the metrics could not be written: {error}"),
        ),
    }
}

/// The node's levels, from where the statsd gauges read theirs: the peer
/// directory and, for a node that keeps jobs, its store.
fn levels(node: &Node) -> Levels {
    let peers = node.peers();
    let jobs = node.jobs().and_then(|jobs| {
        let store = jobs.store();
        let read = store
            .counts()
            .and_then(|counts| Ok((counts, store.queues()?)));
        match read {
            Ok((counts, queues)) => Some(JobLevels {
                queued: queues.iter().map(|(_, queued)| queued).sum(),
                by_state: counts
                    .into_iter()
                    .map(|(state, count)| (state.as_str(), count))
                    .collect(),
            }),
            Err(error) => {
                warn!("the job store's levels are left out of the metrics: {error}");
                None
            }
        }
    });
    Levels {
        peers: peers.len() as u64,
        in_flight: peers.in_flight() as u64,
        jobs,
    }
}

/// Serves the metrics alone on `listener` (at `/metrics` and
/// [`METRICS_PATH`]; anything else is 404) until `shutdown`.
pub async fn serve_metrics(listener: HttpListener, node: Arc<Node>, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        log_metrics_listening(&addr);
    }
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new());
    builder.header_read_timeout(Duration::from_secs(10));
    let open = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        let (io, caller) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!("metrics listener: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            debug!(caller = %caller.addr, "metrics connection closed: {MAX_SCRAPES} open already");
            continue;
        };
        let node = node.clone();
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let response = match request.uri().path() {
                METRICS_PATH | SCRAPE_PATH => metrics_response(&node),
                path => error_response(
                    StatusCode::NOT_FOUND,
                    format!("no such path {path:?}: this listener serves {SCRAPE_PATH} only"),
                ),
            };
            async move { Ok::<_, Infallible>(response) }
        });
        let watched = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                debug!("metrics connection ended: {error}");
            }
            drop(slot);
        });
    }
    drop(listener_cleanup(&listener));
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("a metrics connection was still open at shutdown; closing");
    }
}

/// Logs where the metrics listener listens.
fn log_metrics_listening(addr: &HttpAddr) {
    info!(%addr, "metrics listening (GET {SCRAPE_PATH})");
}
