//! Requests through the pipe, both ways, at each concurrency: requests per
//! second and latency quantiles, beside a plain hyper HTTP server answering
//! the same JSON directly ([`baseline`]), loaded by the same generator in
//! the same run, and judged against two peers measured in the same run
//! ([`peers`]): NATS request-reply over mutual TLS, and a raw TLS 1.3
//! ping-pong ([`ping_pong`]), the floor of one request's latency.
//!
//! The two nodes and the baseline server share one multi-threaded runtime
//! (a worker per core, like the shipped binaries); the load generator has a
//! single-threaded runtime of its own, so generator and nodes never queue
//! behind each other in one scheduler (they do share the machine's cores).

mod baseline;
mod peers;
mod ping_pong;
mod rows;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::{
    BackoffSettings, LOOPBACK, NodeOptions, NodeSettings, Registry, Side, TestNode, TlsIdentity,
    try_start_client, try_start_server,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::peers::Peers;
use crate::identities::Identities;
use crate::loadgen::{self, Load, Outcome, RequestShape};
use crate::plan::Plan;
use crate::report::Report;
use crate::{nats_peer, payload, procfs};

const SCENARIO: &str = "throughput";
/// The client node's name, in server→client URLs.
const CLIENT_NAME: &str = "bench-client";
/// Longest wait for the client node to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Turns the pipe and the baseline take at each route and concurrency.
const ROUNDS: u32 = 3;
/// Longest wait for the nodes to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

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

/// Runs the baseline's hyper server alone on `listen`, on the runtime the
/// shipped binaries use (one worker per core), until the process is
/// killed: `bench/syscalls-per-request baseline` measures its CPU per
/// request the way it measures each node's.
pub fn serve_baseline(listen: SocketAddr) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            baseline::serve(listener, CancellationToken::new()).await;
            Ok(())
        })
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
    let peers = Peers::measure(
        plan,
        &server_identity,
        &client_identity,
        nodes_runtime.handle(),
        &load_runtime,
    )?;
    peers.add_rows(report);
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
                let (pipe, baseline) = alternated(&load_runtime, &pipe, &baseline)?;
                rows::add(report, plan, route, concurrency, (&pipe, &baseline), &peers);
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
    report.note(note(plan));
    measured
}

/// How the scenario measures, under the table.
fn note(plan: &Plan) -> String {
    let nats = match nats_peer::version() {
        Some(version) => format!("`nats-server` {version} (Debian's)"),
        None => "`nats-server` (not installed for this run, so its rows are skipped)".to_owned(),
    };
    let (lowest, highest) = (
        plan.concurrencies.iter().min().copied().unwrap_or(1),
        plan.concurrencies.iter().max().copied().unwrap_or(1),
    );
    format!(
        "Throughput: both nodes and the baseline hyper server run in the benchmark process on one tokio runtime of {cores} worker threads; the load generator (hyper client, one keep-alive connection per worker, closed loop) runs on its own single-threaded runtime. Each figure is {load} s of load after {warmup} s of warm-up, taken in {ROUNDS} rounds that alternate with the baseline's (pipe, baseline, pipe, …; each round a third of the load and of the warm-up, on new connections), so a spell when the machine is slower falls on both alike; the baseline answers the same `{{\"time_from_server\": <float>}}` JSON directly. CPU per request is the benchmark process's `utime + stime` over the load (warm-up included) divided by the requests answered: nodes (or baseline server) and load generator together, so the difference between the two columns is what the pipe costs. Before the nodes start, two peers are measured in the same run with the same warm-up and load, each exchanging the payloads of the pipe's request: a {request} B request (`GET /server/time`) and an answer of about {answer} B (`{{\"time_from_server\": <float>}}`, made afresh for each request). The raw TLS 1.3 ping-pong is one tokio-rustls connection over loopback with the nodes' own TLS configurations (mutual authentication), its answering end on the nodes' runtime and its asking end on the load generator's, each message a 4-byte length and the payload, one round trip at a time, each timed: the floor a request through the pipe (an HTTP hop at each end around the same kind of connection) cannot beat. NATS request-reply over mutual TLS runs on {nats} in a child process, with a CA of its own: a responder on a thread and single-threaded runtime of its own, with its own connection, and `concurrency` requesters sharing one connection on the load generator's runtime, both on async-nats, at concurrency {lowest} and {highest}.",
        cores = plan.cores,
        load = plan.load.as_secs_f64(),
        warmup = plan.warmup.as_secs_f64(),
        request = payload::REQUEST.len(),
        answer = payload::time_answer().len(),
    )
}

/// A load's outcome and the CPU this process (nodes, baseline server and
/// load generator together) used while it ran.
struct Costed {
    outcome: Outcome,
    cpu: Duration,
}

impl Costed {
    /// Adds a later round of the same load.
    fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.cpu += other.cpu;
        self.outcome.merge(other.outcome)
    }

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

/// Loads `pipe` and `baseline` in turn, [`ROUNDS`] times each for a share
/// of the plan's time, and adds up each one's rounds: a spell when the
/// machine is slower (another process, the host of a virtual machine)
/// then falls on both alike instead of on whichever ran during it.
fn alternated(
    runtime: &tokio::runtime::Runtime,
    pipe: &Load,
    baseline: &Load,
) -> anyhow::Result<(Costed, Costed)> {
    let share = |load: &Load| Load {
        warmup: load.warmup / ROUNDS,
        duration: load.duration / ROUNDS,
        ..load.clone()
    };
    let (pipe, baseline) = (share(pipe), share(baseline));
    let mut pipe_total = runtime.block_on(costed(loadgen::run(&pipe)))?;
    let mut baseline_total = runtime.block_on(costed(loadgen::run(&baseline)))?;
    for _ in 1..ROUNDS {
        pipe_total.merge(runtime.block_on(costed(loadgen::run(&pipe)))?)?;
        baseline_total.merge(runtime.block_on(costed(loadgen::run(&baseline)))?)?;
    }
    Ok((pipe_total, baseline_total))
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
    tokio::spawn(baseline::serve(baseline_listener, shutdown.clone()));

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
