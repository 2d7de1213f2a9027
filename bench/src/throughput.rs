//! Requests through the pipe, both ways, at each concurrency: requests per
//! second and latency quantiles, beside a plain hyper HTTP server answering
//! the same JSON directly, loaded by the same generator in the same run.
//!
//! The two nodes and the baseline server share one multi-threaded runtime
//! (a worker per core, like the shipped binaries); the load generator has a
//! single-threaded runtime of its own, so generator and nodes never queue
//! behind each other in one scheduler (they do share the machine's cores).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use restpipe_tests::{
    BackoffSettings, LOOPBACK, NodeOptions, NodeSettings, Registry, Side, TestNode, TlsIdentity,
    try_start_client, try_start_server,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::identities::Identities;
use crate::loadgen::{self, Load, Outcome, RequestShape};
use crate::plan::Plan;
use crate::procfs;
use crate::report::{Report, Row, latency, percent, thousands};

const SCENARIO: &str = "throughput";
/// The client node's name, in server→client URLs.
const CLIENT_NAME: &str = "bench-client";
/// Longest wait for the client node to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the nodes to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Throughput target at the highest concurrency: this share of baseline.
const MIN_RATE_RATIO: f64 = 0.6;
/// Latency a pipe hop may add to the baseline median at concurrency 1.
const MAX_ADDED_P50: Duration = Duration::from_micros(100);
/// p99 bound at concurrency 1.
const MAX_P99: Duration = Duration::from_millis(1);

/// One direction through the pipe.
#[derive(Debug, Clone, Copy)]
enum Route {
    ClientToServer,
    ServerToClient,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Self::ClientToServer => "client→server",
            Self::ServerToClient => "server→client",
        }
    }
}

/// The nodes under load and the baseline, all on the nodes' runtime.
struct Setup {
    server: TestNode,
    client: TestNode,
    baseline: SocketAddr,
}

impl Setup {
    /// Where a request for `route` enters, and its path.
    fn entry(&self, route: Route) -> (SocketAddr, String) {
        match route {
            Route::ClientToServer => (self.client.http, "/server/time".to_owned()),
            Route::ServerToClient => (self.server.http, format!("/client/{CLIENT_NAME}/time")),
        }
    }
}

/// Runs the scenario and adds its rows to `report`.
pub fn run(plan: &Plan, identities: &mut Identities, report: &mut Report) -> anyhow::Result<()> {
    let nodes_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.cores)
        .thread_name("nodes")
        .enable_all()
        .build()?;
    let load_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server_identity = identities.pki().server();
    let client_identity = identities.pki().client(CLIENT_NAME);
    let shutdown = CancellationToken::new();
    let setup = nodes_runtime.block_on(start(&server_identity, &client_identity, &shutdown))?;

    let measured = (|| -> anyhow::Result<()> {
        for route in [Route::ClientToServer, Route::ServerToClient] {
            for &concurrency in &plan.concurrencies {
                let (addr, path) = setup.entry(route);
                let pipe = Load {
                    addr,
                    path,
                    shape: RequestShape::default(),
                    concurrency,
                    warmup: plan.warmup,
                    duration: plan.load,
                    stop: None,
                };
                let baseline = Load {
                    addr: setup.baseline,
                    path: "/time".to_owned(),
                    ..pipe.clone()
                };
                eprintln!("   {} at concurrency {concurrency}", route.label());
                let pipe = load_runtime.block_on(costed(loadgen::run(&pipe)))?;
                let baseline = load_runtime.block_on(costed(loadgen::run(&baseline)))?;
                add_rows(report, plan, route, concurrency, &pipe, &baseline);
            }
        }
        Ok(())
    })();

    nodes_runtime.block_on(async {
        shutdown.cancel();
        let stopped = async {
            setup.server.running.wait().await;
            setup.client.running.wait().await;
        };
        if tokio::time::timeout(STOP_TIMEOUT, stopped).await.is_err() {
            eprintln!("   the nodes had not stopped after {STOP_TIMEOUT:?}");
        }
    });
    nodes_runtime.shutdown_timeout(Duration::from_secs(1));
    report.note(format!(
        "Throughput: both nodes and the baseline hyper server run in the benchmark process on one tokio runtime of {} worker threads; the load generator (hyper client, one keep-alive connection per worker, closed loop) runs on its own single-threaded runtime. Each figure is {} s of load after {} s of warm-up; the baseline answers the same `{{\"time_from_server\": <float>}}` JSON directly. CPU per request is the benchmark process's `utime + stime` over the load (warm-up included) divided by the requests answered: nodes (or baseline server) and load generator together, so the difference between the two columns is what the pipe costs.",
        plan.cores,
        plan.load.as_secs_f64(),
        plan.warmup.as_secs_f64()
    ));
    measured
}

/// A load's outcome and the CPU this process (nodes, baseline server and
/// load generator together) used while it ran.
struct Costed {
    outcome: Outcome,
    cpu: Duration,
}

impl Costed {
    /// CPU per answered request, warm-up included.
    fn cpu_per_request(&self) -> Duration {
        self.cpu
            .checked_div(u32::try_from(self.outcome.completed.max(1)).unwrap_or(u32::MAX))
            .unwrap_or_default()
    }

    /// Cores kept busy on average.
    fn cores_busy(&self) -> f64 {
        self.cpu.as_secs_f64() / self.outcome.wall.as_secs_f64().max(1e-9)
    }
}

async fn costed(
    load: impl std::future::Future<Output = anyhow::Result<Outcome>>,
) -> anyhow::Result<Costed> {
    let before = procfs::cpu_time(procfs::own_pid())?;
    let outcome = load.await?;
    let cpu = procfs::cpu_time(procfs::own_pid())?.saturating_sub(before);
    Ok(Costed { outcome, cpu })
}

/// Starts the server node, the client node and the baseline, and waits
/// until the pipe is up.
async fn start(
    server_identity: &TlsIdentity,
    client_identity: &TlsIdentity,
    shutdown: &CancellationToken,
) -> anyhow::Result<Setup> {
    // The shipped defaults, not the test kit's fast ones.
    let options = |side| NodeOptions {
        handlers: Registry::with_examples(side),
        settings: NodeSettings::default(),
        backoff: BackoffSettings::default(),
        shutdown: shutdown.child_token(),
        ..NodeOptions::default()
    };
    let server = try_start_server(LOOPBACK, server_identity, options(Side::Server)).await?;
    let client =
        try_start_client(server.pipe_addr(), client_identity, options(Side::Client)).await?;
    let baseline_listener = TcpListener::bind(LOOPBACK).await?;
    let baseline = baseline_listener.local_addr()?;
    tokio::spawn(serve_baseline(baseline_listener, shutdown.clone()));

    restpipe_tests::wait::until(CONNECT_TIMEOUT, "the client node connected", || {
        server.has_peer(CLIENT_NAME) && client.is_connected()
    })
    .await
    .context("the client node did not connect to the server node")?;
    Ok(Setup {
        server,
        client,
        baseline,
    })
}

/// The baseline: a plain hyper HTTP/1.1 server answering every request with
/// the JSON `get_time` answers, with no pipe behind it.
async fn serve_baseline(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request| async { Ok::<_, Infallible>(time_response()) });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn time_response() -> http::Response<Full<Bytes>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let body =
        serde_json::to_vec(&serde_json::json!({ "time_from_server": now })).unwrap_or_default();
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn add_rows(
    report: &mut Report,
    plan: &Plan,
    route: Route,
    concurrency: usize,
    pipe_cost: &Costed,
    baseline_cost: &Costed,
) {
    let (pipe, baseline) = (&pipe_cost.outcome, &baseline_cost.outcome);
    let name = |what: &str| format!("{}, concurrency {concurrency}: {what}", route.label());
    let highest = plan.concurrencies.iter().max() == Some(&concurrency);
    let lowest = plan.concurrencies.iter().min() == Some(&concurrency);

    let ratio = pipe.rate() / baseline.rate().max(1e-9);
    let mut rate = Row::new(
        SCENARIO,
        name("requests/s"),
        format!(
            "{} ({} of baseline)",
            thousands(pipe.rate()),
            percent(pipe.rate(), baseline.rate())
        ),
    )
    .baseline(thousands(baseline.rate()));
    if highest {
        rate = rate.target(
            format!("≥ {:.0}% of baseline", MIN_RATE_RATIO * 100.0),
            ratio >= MIN_RATE_RATIO,
        );
    }
    report.add(rate);

    let (p50, base_p50) = (pipe.quantile(0.5), baseline.quantile(0.5));
    let mut median = Row::new(SCENARIO, name("p50"), latency(p50)).baseline(latency(base_p50));
    if lowest {
        median = median.target(
            format!("≤ baseline + {}", latency(MAX_ADDED_P50)),
            p50 <= base_p50 + MAX_ADDED_P50,
        );
    }
    report.add(median);

    let p99 = pipe.quantile(0.99);
    let mut tail =
        Row::new(SCENARIO, name("p99"), latency(p99)).baseline(latency(baseline.quantile(0.99)));
    if lowest {
        tail = tail.target(format!("< {}", latency(MAX_P99)), p99 < MAX_P99);
    }
    report.add(tail);

    report.add(
        Row::new(SCENARIO, name("p99.9"), latency(pipe.quantile(0.999)))
            .baseline(latency(baseline.quantile(0.999))),
    );
    let cost = |costed: &Costed| {
        format!(
            "{} ({:.2} cores busy)",
            latency(costed.cpu_per_request()),
            costed.cores_busy()
        )
    };
    report.add(
        Row::new(
            SCENARIO,
            name("CPU per request, whole process"),
            cost(pipe_cost),
        )
        .baseline(cost(baseline_cost)),
    );

    if pipe.failed > 0 || baseline.failed > 0 || pipe.ok == 0 {
        let failures = |outcome: &Outcome| {
            format!(
                "{}{}",
                outcome.failed,
                outcome
                    .first_failure
                    .as_deref()
                    .map(|f| format!(" (first: {f})"))
                    .unwrap_or_default()
            )
        };
        report.add(
            Row::new(SCENARIO, name("failed requests"), failures(pipe))
                .baseline(failures(baseline))
                .target("0", pipe.failed == 0 && pipe.ok > 0),
        );
    }
}
