//! Small HTTP client pieces on hyper's own client connection: a keep-alive
//! connection (what each load worker holds), one-off JSON GETs (how the
//! benchmark reads `/_pipe/health`), and a sampler of a node's connected
//! peers every 100 ms.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Deadline for opening a connection to a local HTTP front.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for one health request: a node answering slower than this is
/// recorded as not answering.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the peer sampler asks; the granularity of connection rates.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest a sampler runs, so a forgotten one cannot run forever.
const SAMPLER_LIFETIME: Duration = Duration::from_secs(3600);

/// Opens one keep-alive HTTP/1.1 connection to `addr`; the connection is
/// driven by a task on the current runtime.
pub async fn connect<B>(addr: SocketAddr) -> anyhow::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `GET path` on `addr` over a fresh connection; the JSON body.
pub async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut sender = connect::<Empty<Bytes>>(addr).await?;
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status.is_success(), "GET {path} on {addr}: {status}");
    Ok(serde_json::from_slice(&body)?)
}

/// How many peers the node at `addr` holds, from `/_pipe/health` (O(1) on
/// the node, unlike `/_pipe/status`, which lists every peer).
pub async fn connected_peers(addr: SocketAddr) -> anyhow::Result<usize> {
    let health = tokio::time::timeout(HEALTH_TIMEOUT, get_json(addr, "/_pipe/health"))
        .await
        .context("no health answer in time")??;
    let peers = health["connected_peers"]
        .as_u64()
        .context("health has no connected_peers")?;
    Ok(usize::try_from(peers)?)
}

/// Waits, at most `limit`, until the node at `addr` holds `count` peers.
pub async fn wait_for_peers(addr: SocketAddr, count: usize, limit: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(limit, async {
        while connected_peers(addr).await.ok() != Some(count) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| format!("the node at {addr} did not come to hold {count} peers in {limit:?}"))
}

/// One sample: when, and the peers held (`None`: the node did not answer).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When the answer came.
    pub at: Instant,
    /// Connected peers, if the node answered.
    pub peers: Option<usize>,
}

/// Samples a node's connected peers every [`SAMPLE_INTERVAL`] until
/// dropped; the node can be swapped (a restarted server).
#[derive(Debug)]
pub struct PeerSampler {
    target: Arc<Mutex<SocketAddr>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
}

impl PeerSampler {
    /// Starts sampling the node whose HTTP front is `addr`.
    pub fn start(addr: SocketAddr) -> Self {
        let target = Arc::new(Mutex::new(addr));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (task_target, task_samples, task_stop) =
            (target.clone(), samples.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let until = Instant::now() + SAMPLER_LIFETIME;
            while Instant::now() < until {
                tokio::select! {
                    _ = task_stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let addr = *lock(&task_target);
                let peers = connected_peers(addr).await.ok();
                lock(&task_samples).push(Sample {
                    at: Instant::now(),
                    peers,
                });
            }
        });
        Self {
            target,
            samples,
            stop,
        }
    }

    /// Samples the node at `addr` from now on.
    pub fn retarget(&self, addr: SocketAddr) {
        *lock(&self.target) = addr;
    }

    /// The latest answer.
    pub fn latest(&self) -> Option<usize> {
        lock(&self.samples).iter().rev().find_map(|s| s.peers)
    }

    /// Waits until a sample taken after `since` shows at least `count`
    /// peers; when it was taken, or `None` if not within `bound`.
    pub async fn wait_for(&self, count: usize, since: Instant, bound: Duration) -> Option<Instant> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            let reached = lock(&self.samples)
                .iter()
                .filter(|s| s.at >= since)
                .find(|s| s.peers.is_some_and(|p| p >= count))
                .map(|s| s.at);
            if reached.is_some() {
                return reached;
            }
            tokio::time::sleep(SAMPLE_INTERVAL / 2).await;
        }
        None
    }

    /// The most the held count rose within any one second of the samples
    /// taken in `[from, to]`: net admissions per second at the peak.
    pub fn peak_rise_per_second(&self, from: Instant, to: Instant) -> f64 {
        let samples: Vec<(Instant, usize)> = lock(&self.samples)
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .filter_map(|s| Some((s.at, s.peers?)))
            .collect();
        peak_rise(&samples, Duration::from_secs(1))
    }
}

impl Drop for PeerSampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The largest rise of the count within any `span` of `(time, count)`
/// samples (with `span` one second: the most admitted in any one second).
fn peak_rise(samples: &[(Instant, usize)], span: Duration) -> f64 {
    let mut best = 0;
    let mut start = 0;
    for end in 0..samples.len() {
        while samples[end].0 - samples[start].0 > span {
            start += 1;
        }
        best = best.max(samples[end].1.saturating_sub(samples[start].1));
    }
    best as f64
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rise_is_the_most_within_one_span() {
        let t0 = Instant::now();
        let at = |ms: u64, n: usize| (t0 + Duration::from_millis(ms), n);
        let samples = [
            at(0, 0),
            at(500, 100),
            at(1000, 1000),
            at(1500, 1200),
            at(2000, 1300),
        ];
        // 100 → 1200 from 0.5 s to 1.5 s.
        assert_eq!(peak_rise(&samples, Duration::from_secs(1)), 1100.0);
        // A phase shorter than the span: all of it.
        assert_eq!(peak_rise(&samples[..2], Duration::from_secs(1)), 100.0);
        assert_eq!(peak_rise(&[], Duration::from_secs(1)), 0.0);
    }
}
