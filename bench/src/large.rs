//! Large bodies through the pipe: a POST of N bytes from an app on the
//! client node to a `post_sink` handler on the server node, and a GET of N
//! bytes from its `get_source` handler, each timed beside a raw TLS copy of
//! the same size over loopback with the same TLS 1.3 configuration.
//!
//! While each transfer runs, small requests go through the same pipe
//! connection one after another, to see whether the big body stalls them.
//! Both nodes run in child processes, so their peak resident memory
//! (`VmHWM`, reset before each transfer) is theirs alone. A transfer the
//! pipe refuses (a 413 above `max_body_bytes`, say) is reported as not run,
//! with the status and message, and the other figures still are.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, SizeHint};
use restpipe_tests::{CertFiles, LOOPBACK, NodeSettings, Role, SERVER_NAME};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::identities::Identities;
use crate::loadgen::{self, Load, Outcome, RequestShape};
use crate::node_process::{NodeProcess, Placement};
use crate::plan::Plan;
use crate::report::{Report, Row, Verdict, clip, latency, percent, size};
use crate::{probe, procfs};

const SCENARIO: &str = "large bodies";
/// Transfers of each kind; the median counts, so one descheduling of a
/// 2-core machine's busy process does not decide the figure.
const REPEATS: usize = 3;
/// Size of each write of the raw copy and each frame of the POST body.
const CHUNK_BYTES: usize = 64 * 1024;
/// Target: the pipe's rate as a share of the raw TLS copy.
const MIN_RATE_RATIO: f64 = 0.5;
/// Target: peak memory of a node above its idle memory.
const MAX_PEAK_ABOVE_IDLE: f64 = 64.0 * 1024.0 * 1024.0;
/// Target: p99 of small requests during the transfer.
const MAX_SMALL_P99: Duration = Duration::from_millis(10);
/// Longest wait for the client node to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Rest before idle memory is read.
const SETTLE: Duration = Duration::from_secs(1);
/// The small requests sent alongside.
const SMALL_PATH: &str = "/server/time";

/// Which transfer.
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// App → client node → server node's `post_sink`.
    Post,
    /// Server node's `get_source` → client node → app.
    Get,
}

impl Direction {
    fn verb(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Get => "GET",
        }
    }

    fn label(self, bytes: u64) -> String {
        match self {
            Self::Post => format!("POST {} to the server", size(bytes as f64)),
            Self::Get => format!("GET {} from the server", size(bytes as f64)),
        }
    }
}

/// How a transfer ended.
enum Transfer {
    /// Every byte arrived; how long it took.
    Done(Duration),
    /// The pipe refused or broke it: status and message.
    Failed(String),
}

/// Runs the scenario.
pub fn run(plan: &Plan, identities: &mut Identities, report: &mut Report) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.cores)
        .enable_all()
        .build()?;
    let server_identity = identities.pki().server();
    let client_identity = identities.pki().client("bench-raw-copy");
    let raw_tls = RawTls {
        server: server_identity.server_config()?,
        client: client_identity.client_config()?,
    };
    let server_files = identities.write_files(SERVER_NAME, Role::Server)?;
    let client_files = identities.write_files("bench-large-client", Role::Client)?;
    let outcome = runtime.block_on(through_pipe(
        plan,
        &server_files,
        &client_files,
        identities.dir(),
        &raw_tls,
        report,
    ));
    runtime.shutdown_timeout(Duration::from_secs(2));
    report.note(format!(
        "Large bodies: both nodes run in child processes with default settings (`max_body_bytes` {}); the raw copy writes the same number of bytes in {} KiB writes over one tokio-rustls connection with the nodes' own TLS configurations, both ends in the benchmark process on {} threads, and waits for the receiver to confirm the count. Each transfer through the pipe runs {REPEATS} times, each right after a raw copy, so that both meet the machine in the same state; the median time of each counts. Peak memory is `VmHWM` over the {REPEATS} transfers of a kind, after resetting it (`/proc/<pid>/clear_refs`), minus `VmRSS` at rest just after the reset; CPU is each process's `utime + stime` during the transfers through the pipe, as a share of their time (the load generator's includes the small requests). Small requests are `GET {SMALL_PATH}` one after another through the same client node and pipe connection, all through each transfer through the pipe.",
        size(NodeSettings::default().max_body_bytes as f64),
        CHUNK_BYTES / 1024,
        plan.cores,
    ));
    outcome
}

/// The TLS configurations of the raw copy: the nodes' own.
struct RawTls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

async fn through_pipe(
    plan: &Plan,
    server_files: &CertFiles,
    client_files: &CertFiles,
    dir: &std::path::Path,
    raw_tls: &RawTls,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (server, pipe) =
        NodeProcess::start_server(server_files, LOOPBACK, &dir.join("server-large.log")).await?;
    let client = NodeProcess::start(
        client_files,
        Placement::Client { server: pipe },
        &dir.join("client-large.log"),
    )
    .await?;
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        while probe::connected_peers(client.http).await.ok() != Some(1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("the client node did not connect to the server node")?;

    // Small requests at rest: the baseline of the ones during transfers.
    let at_rest = loadgen::run(&small_requests(&client, plan.warmup + plan.load, None)).await?;

    for direction in [Direction::Post, Direction::Get] {
        tokio::time::sleep(SETTLE).await;
        // Reset first, so the peak is never below the idle figure.
        let peaks_reset = server.reset_peak().and(client.reset_peak()).is_ok();
        let idle = Pair {
            server: server.rss()?,
            client: client.rss()?,
        };
        let mut rounds = Rounds::new()?;
        for _ in 0..REPEATS {
            rounds.raw.push(
                raw_tls_copy(
                    plan.large_bytes,
                    raw_tls.server.clone(),
                    raw_tls.client.clone(),
                )
                .await?,
            );
            rounds.pipe_once(plan, direction, &server, &client).await?;
            if rounds.failure.is_some() {
                break;
            }
        }
        let raw_rate = mib_per_second(plan.large_bytes, median(&mut rounds.raw));
        report.add(Row::new(
            SCENARIO,
            format!(
                "raw TLS 1.3 copy of {} over loopback, one before each {} (median of {})",
                size(plan.large_bytes as f64),
                direction.verb(),
                rounds.raw.len()
            ),
            format!("{raw_rate:.0} MiB/s"),
        ));
        let total: Duration = rounds.times.iter().sum();
        let transfer = match rounds.failure {
            Some(why) => Transfer::Failed(why),
            None => Transfer::Done(median(&mut rounds.times)),
        };
        let measured = Measured {
            direction,
            bytes: plan.large_bytes,
            transfer,
            raw_rate,
            during: rounds.during,
            idle,
            peak: Pair {
                server: server.peak()?,
                client: client.peak()?,
            },
            peaks_reset,
            cpu: rounds.cpu,
            total,
        };
        add_rows(report, &measured, &at_rest);
    }
    client.stop().await?;
    server.stop().await
}

/// What the transfers of one kind measured so far.
struct Rounds {
    /// Times of the raw copies.
    raw: Vec<Duration>,
    /// Times of the transfers through the pipe.
    times: Vec<Duration>,
    /// Why a transfer through the pipe failed, if one did (the last).
    failure: Option<String>,
    /// The small requests sent during the transfers through the pipe.
    during: Outcome,
    /// CPU used during them: server node, client node, this process.
    cpu: [Duration; 3],
}

impl Rounds {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            raw: Vec::with_capacity(REPEATS),
            times: Vec::with_capacity(REPEATS),
            failure: None,
            during: Outcome::empty(Duration::ZERO)?,
            cpu: [Duration::ZERO; 3],
        })
    }

    /// One transfer through the pipe, with small requests beside it.
    async fn pipe_once(
        &mut self,
        plan: &Plan,
        direction: Direction,
        server: &NodeProcess,
        client: &NodeProcess,
    ) -> anyhow::Result<()> {
        let cpu_before = cpu_times(server, client)?;
        let stop = CancellationToken::new();
        let probe = tokio::spawn({
            let load = small_requests(client, plan.transfer_bound, Some(stop.clone()));
            async move { loadgen::run(&load).await }
        });
        let bound = plan.transfer_bound;
        let attempt = tokio::time::timeout(
            bound,
            transfer(direction, client.http, plan.large_bytes, bound),
        );
        match attempt.await {
            Ok(Ok(Transfer::Done(elapsed))) => self.times.push(elapsed),
            Ok(Ok(Transfer::Failed(why))) => self.failure = Some(why),
            Ok(Err(error)) => self.failure = Some(format!("{error:#}")),
            Err(_) => self.failure = Some(format!("not finished within {bound:?}")),
        }
        stop.cancel();
        let cpu_after = cpu_times(server, client)?;
        for (i, used) in self.cpu.iter_mut().enumerate() {
            *used += cpu_after[i].saturating_sub(cpu_before[i]);
        }
        let during = probe.await.context("the small-request probe panicked")??;
        self.during.merge(during)
    }
}

/// Small requests through `client`, one at a time, until `stop` or `bound`.
fn small_requests(client: &NodeProcess, bound: Duration, stop: Option<CancellationToken>) -> Load {
    Load {
        addr: client.http,
        path: SMALL_PATH.to_owned(),
        shape: RequestShape::default(),
        concurrency: 1,
        warmup: Duration::ZERO,
        duration: bound,
        stop,
    }
}

/// A figure of each node.
#[derive(Debug, Clone, Copy)]
struct Pair {
    server: u64,
    client: u64,
}

/// Everything one transfer measured.
struct Measured {
    direction: Direction,
    bytes: u64,
    transfer: Transfer,
    raw_rate: f64,
    /// The small requests sent during the transfer.
    during: Outcome,
    /// Resident memory just before.
    idle: Pair,
    /// Peak resident memory during.
    peak: Pair,
    /// Whether the peaks were reset before (else: peak since start).
    peaks_reset: bool,
    /// CPU used during: server node, client node, this process.
    cpu: [Duration; 3],
    /// Time of all the repeats together.
    total: Duration,
}

/// CPU time so far of the server node, the client node and this process.
fn cpu_times(server: &NodeProcess, client: &NodeProcess) -> anyhow::Result<[Duration; 3]> {
    Ok([
        server.cpu_time()?,
        client.cpu_time()?,
        procfs::cpu_time(procfs::own_pid())?,
    ])
}

fn add_rows(report: &mut Report, measured: &Measured, at_rest: &Outcome) {
    let Measured {
        direction,
        bytes,
        ref transfer,
        raw_rate,
        ref during,
        idle,
        peak,
        peaks_reset,
        cpu,
        total,
    } = *measured;
    let label = direction.label(bytes);
    let name = |what: &str| format!("{label}: {what}");
    let rate_target = format!("≥ {:.0}% of raw TLS copy", MIN_RATE_RATIO * 100.0);
    let raw = format!("raw TLS copy {raw_rate:.0} MiB/s");
    let elapsed = match transfer {
        Transfer::Failed(why) => {
            report.add(
                Row::new(
                    SCENARIO,
                    name("throughput"),
                    format!("not run: {}", clip(why, 200)),
                )
                .baseline(raw)
                .target_unjudged(rate_target, Verdict::NotRun),
            );
            return;
        }
        Transfer::Done(elapsed) => *elapsed,
    };
    let rate = mib_per_second(bytes, elapsed);
    report.add(
        Row::new(
            SCENARIO,
            name("throughput"),
            format!(
                "{rate:.0} MiB/s ({} of raw TLS; median of {REPEATS})",
                percent(rate, raw_rate)
            ),
        )
        .baseline(raw)
        .target(rate_target, rate >= MIN_RATE_RATIO * raw_rate),
    );
    let p99 = during.quantile(0.99);
    let mut small = format!("{} ({} requests", latency(p99), during.ok);
    if during.failed > 0 {
        small.push_str(&format!(
            ", {} failed: {}",
            during.failed,
            clip(during.first_failure.as_deref().unwrap_or(""), 80)
        ));
    }
    small.push(')');
    report.add(
        Row::new(
            SCENARIO,
            name("small-request p99 during the transfer"),
            small,
        )
        .baseline(format!("at rest {}", latency(at_rest.quantile(0.99))))
        .target(
            format!("< {}", latency(MAX_SMALL_P99)),
            during.ok > 0 && during.failed == 0 && p99 < MAX_SMALL_P99,
        ),
    );
    let share = |cpu: Duration| format!("{:.0}%", 100.0 * cpu.as_secs_f64() / total.as_secs_f64());
    report.add(Row::new(
        SCENARIO,
        name("CPU during the transfer, share of one core"),
        format!(
            "client node {}, server node {}, load generator {}",
            share(cpu[1]),
            share(cpu[0]),
            share(cpu[2])
        ),
    ));
    let since = if peaks_reset {
        ""
    } else {
        " (peak since start)"
    };
    for (node, idle, peak) in [
        ("client node", idle.client, peak.client),
        ("server node", idle.server, peak.server),
    ] {
        // Resident memory can shrink a little after the reset.
        let above = (peak as f64 - idle as f64).max(0.0);
        report.add(
            Row::new(
                SCENARIO,
                name(&format!("{node} peak memory above idle{since}")),
                size(above),
            )
            .baseline(format!("idle {}", size(idle as f64)))
            .target(
                format!("≤ {}", size(MAX_PEAK_ABOVE_IDLE)),
                above <= MAX_PEAK_ABOVE_IDLE,
            ),
        );
    }
}

/// The median of `times` (the upper one of an even count).
fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn mib_per_second(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

/// One transfer through the client node's front at `addr`.
async fn transfer(
    direction: Direction,
    addr: SocketAddr,
    bytes: u64,
    bound: Duration,
) -> anyhow::Result<Transfer> {
    let timeout_header = bound.as_secs().to_string();
    let host = addr.to_string();
    let started = Instant::now();
    let response = match direction {
        Direction::Post => {
            let mut sender = probe::connect::<Zeros>(addr).await?;
            let request = http::Request::post("/server/sink")
                .header(http::header::HOST, &host)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .header(http::header::CONTENT_LENGTH, bytes)
                .header("x-pipe-timeout", &timeout_header)
                .body(Zeros::new(bytes))?;
            sender.send_request(request).await?
        }
        Direction::Get => {
            let mut sender = probe::connect::<Empty<Bytes>>(addr).await?;
            let request = http::Request::get(format!("/server/source?bytes={bytes}"))
                .header(http::header::HOST, &host)
                .header("x-pipe-timeout", &timeout_header)
                .body(Empty::new())?;
            sender.send_request(request).await?
        }
    };
    let status = response.status();
    let mut body = response.into_body();
    if status != http::StatusCode::OK {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(Transfer::Failed(format!(
            "{status}: {}",
            String::from_utf8_lossy(&text)
        )));
    }
    // Count the body as it arrives; nothing is kept.
    let mut received = 0u64;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            received += data.len() as u64;
            if matches!(direction, Direction::Post) {
                kept.extend_from_slice(&data);
            }
        }
    }
    let elapsed = started.elapsed();
    let delivered = match direction {
        Direction::Get => received,
        Direction::Post => serde_json::from_slice::<serde_json::Value>(&kept)
            .ok()
            .and_then(|reply| reply["bytes"].as_u64())
            .unwrap_or(0),
    };
    if delivered != bytes {
        return Ok(Transfer::Failed(format!(
            "200 but {delivered} of {bytes} bytes arrived"
        )));
    }
    Ok(Transfer::Done(elapsed))
}

/// A request body of `left` zero bytes, handed out as slices of one shared
/// chunk: the generator itself allocates nothing per byte sent.
struct Zeros {
    left: u64,
    chunk: Bytes,
}

impl Zeros {
    fn new(bytes: u64) -> Self {
        Self {
            left: bytes,
            chunk: Bytes::from(vec![0u8; CHUNK_BYTES]),
        }
    }
}

impl hyper::body::Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let len = self.left.min(CHUNK_BYTES as u64) as usize;
        self.left -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Copies `bytes` over one TLS connection on loopback with the nodes' TLS
/// configurations; the time until the receiver confirmed the count.
async fn raw_tls_copy(
    bytes: u64,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let receiver = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            let read = tls.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            total += read as u64;
        }
        tls.write_all(&total.to_be_bytes()).await?;
        tls.shutdown().await?;
        anyhow::Ok(total)
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(client);
    let mut tls = connector
        .connect(ServerName::try_from(SERVER_NAME)?, tcp)
        .await
        .context("raw copy: TLS handshake")?;
    let chunk = vec![0u8; CHUNK_BYTES];
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let len = left.min(CHUNK_BYTES as u64) as usize;
        tls.write_all(&chunk[..len]).await?;
        left -= len as u64;
    }
    tls.shutdown().await?;
    let mut confirmed = [0u8; 8];
    tls.read_exact(&mut confirmed).await?;
    let elapsed = started.elapsed();
    let received = receiver.await.context("raw copy receiver panicked")??;
    anyhow::ensure!(
        received == bytes && u64::from_be_bytes(confirmed) == bytes,
        "raw copy: {received} of {bytes} bytes arrived"
    );
    Ok(elapsed)
}
