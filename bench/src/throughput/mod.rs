//! Requests through the pipe, both ways, at each concurrency: requests per
//! second and latency quantiles, beside a plain hyper HTTP server answering
//! the same JSON directly ([`baseline`]), loaded by the same generator in
//! the same run, and judged against two peers measured in the same run
//! ([`peers`]): NATS request-reply over mutual TLS, and a raw TLS 1.3
//! ping-pong ([`ping_pong`]), the floor of one request's latency.
//!
//! Each node and the baseline server run in a child process of their own
//! (this binary re-executed, on the runtime the shipped binaries use: a
//! worker per core), as in a deployment; the load generator has a
//! single-threaded runtime in the benchmark process. CPU per request adds
//! up the processes the load went through.

mod baseline;
mod peers;
mod ping_pong;
mod rows;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use restpipe_tests::{CertFiles, Role, SERVER_NAME};

use self::baseline::BaselineProcess;
pub use self::baseline::{BaselineArgs, serve_process as serve_baseline};
use self::peers::Peers;
use crate::identities::Identities;
use crate::loadgen::{self, Load, Outcome, RequestShape};
use crate::node_pair::NodePair;
use crate::plan::Plan;
use crate::relay::RelayPair;
use crate::report::Report;
use crate::{nats_peer, payload, procfs};

const SCENARIO: &str = "throughput";
/// The client node's name, in server→client URLs.
const CLIENT_NAME: &str = "bench-client";
/// Turns the pipe and the baseline take at each route and concurrency.
const ROUNDS: u32 = 3;
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

/// Where a request for `route` enters `nodes`, and its path.
fn entry(nodes: &NodePair, route: Route) -> (SocketAddr, String) {
    match route {
        Route::ClientToServer => (nodes.client.http, "/server/time".to_owned()),
        Route::ServerToClient => (nodes.server.http, format!("/client/{CLIENT_NAME}/time")),
    }
}

/// Runs the scenario and adds its rows to `report`.
pub fn run(plan: &Plan, identities: &mut Identities, report: &mut Report) -> anyhow::Result<()> {
    let load_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server_identity = identities.pki().server();
    let client_identity = identities.pki().client(CLIENT_NAME);
    // The ping-pong's answering end gets a runtime like a node's, for the
    // peers' measurement only.
    let answer_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.cores)
        .thread_name("ping-pong")
        .enable_all()
        .build()?;
    let peers = Peers::measure(
        plan,
        &server_identity,
        &client_identity,
        answer_runtime.handle(),
        &load_runtime,
    )?;
    answer_runtime.shutdown_timeout(Duration::from_secs(1));
    peers.add_rows(report);
    let server_files = identities.write_files(SERVER_NAME, Role::Server)?;
    let client_files = identities.write_files(CLIENT_NAME, Role::Client)?;
    let files = (&server_files, &client_files);
    let dir = identities.dir();
    let baseline =
        load_runtime.block_on(BaselineProcess::start(&dir.join("baseline-throughput.log")))?;
    let measured = (|| -> anyhow::Result<()> {
        with_processes(&load_runtime, files, None, dir, |nodes, relay| {
            for route in [Route::ClientToServer, Route::ServerToClient] {
                for &concurrency in &plan.concurrencies {
                    eprintln!("   {} at concurrency {concurrency}", route.label());
                    let targets = Targets::new(nodes, &baseline, relay, route);
                    let measured = alternated(&load_runtime, plan, &targets, concurrency)?;
                    let pair = (&measured.pipe, &measured.baseline);
                    rows::add(report, plan, route, concurrency, pair, &peers);
                    if let Some(relay) = &measured.relay {
                        rows::add_relay(report, (concurrency, None), relay, pair);
                    }
                }
            }
            Ok(())
        })?;
        sharing_cores(plan, &load_runtime, files, dir, &baseline, report)
    })();
    stop(&load_runtime, baseline.stop());
    report.note(note(plan));
    measured
}

/// Reports a failure to stop child processes; the measurement stands.
fn stop(
    runtime: &tokio::runtime::Runtime,
    stopping: impl std::future::Future<Output = anyhow::Result<()>>,
) {
    if let Err(error) = runtime.block_on(stopping) {
        eprintln!("   stopping the benchmark's processes: {error:#}");
    }
}

/// The highest concurrency again, both ways, with the two nodes' worker
/// threads adding up to the machine's cores instead of one per core each:
/// how much of the gap to the baseline is two runtimes (and the load
/// generator) contending for the same cores, which no deployment with a
/// node per host has. A figure for the analysis, not a verdict.
fn sharing_cores(
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
    files: (&CertFiles, &CertFiles),
    dir: &Path,
    baseline: &BaselineProcess,
    report: &mut Report,
) -> anyhow::Result<()> {
    let workers = plan.cores / 2;
    let Some(&concurrency) = plan.concurrencies.iter().max() else {
        return Ok(());
    };
    if workers == 0 {
        return Ok(());
    }
    with_processes(runtime, files, Some(workers), dir, |nodes, relay| {
        for route in [Route::ClientToServer, Route::ServerToClient] {
            eprintln!(
                "   {} at concurrency {concurrency}, {workers} worker thread(s) per node",
                route.label()
            );
            let targets = Targets::new(nodes, baseline, relay, route);
            let measured = alternated(runtime, plan, &targets, concurrency)?;
            let pair = (&measured.pipe, &measured.baseline);
            rows::add_sharing_cores(report, route, concurrency, workers, pair);
            if let Some(relay) = &measured.relay {
                rows::add_relay(report, (concurrency, Some(workers)), relay, pair);
            }
        }
        Ok(())
    })
}

/// Starts the minimal relay and a pair of nodes, their processes each with
/// `workers` runtime worker threads (`None`: one per core), runs `load`
/// through them, and stops them.
fn with_processes(
    runtime: &tokio::runtime::Runtime,
    files: (&CertFiles, &CertFiles),
    workers: Option<usize>,
    dir: &Path,
    load: impl FnOnce(&NodePair, &RelayPair) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let label = match workers {
        None => "throughput".to_owned(),
        Some(workers) => format!("throughput-{workers}-workers"),
    };
    let relay = runtime.block_on(RelayPair::start(files, workers, dir))?;
    let loaded = match runtime.block_on(NodePair::start(files, workers, dir, &label)) {
        Ok(nodes) => {
            let loaded = load(&nodes, &relay);
            stop(runtime, nodes.stop());
            loaded
        }
        Err(error) => Err(error),
    };
    stop(runtime, relay.stop());
    loaded
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
        "Throughput: each node and the baseline hyper server run in a child process of their own with default settings, on the runtime the shipped binaries use (a worker per core: {cores}); the load generator (hyper client, one keep-alive connection per worker, closed loop) runs in the benchmark process on a single-threaded runtime. Each figure is {load} s of load after {warmup} s of warm-up, taken in {ROUNDS} rounds that alternate with the baseline's (pipe, baseline, pipe, …; each round a third of the load and of the warm-up, on new connections), so a spell when the machine is slower falls on both alike; the baseline answers the same `{{\"time_from_server\": <float>}}` JSON directly. CPU per request is `utime + stime` over the load (warm-up included) divided by the requests answered, of the processes the load went through: the two nodes (or the baseline server) and the benchmark process (the load generator), so the difference between the two columns is what the pipe costs. The rows of nodes with fewer worker threads run the highest concurrency again, both ways, on a second pair of nodes started with `TOKIO_WORKER_THREADS` = {shared} (the shipped binaries honour it too), so that the two nodes' workers add up to the machine's cores, as one node's do on a host of its own; the baseline keeps one worker per core; a figure for the analysis, not judged. Before the nodes start, two peers are measured in the same run with the same warm-up and load, each exchanging the payloads of the pipe's request: a {request} B request (`GET /server/time`) and an answer of about {answer} B (`{{\"time_from_server\": <float>}}`, made afresh for each request). The raw TLS 1.3 ping-pong is one tokio-rustls connection over loopback with the nodes' own TLS configurations (mutual authentication), its answering end in the benchmark process on a runtime of {cores} workers like a node's and its asking end on the load generator's, each message a 4-byte length and the payload, one round trip at a time, each timed: the floor a request through the pipe (an HTTP hop at each end around the same kind of connection) cannot beat. NATS request-reply over mutual TLS runs on {nats} in a child process, with a CA of its own: a responder on a thread and single-threaded runtime of its own, with its own connection, and `concurrency` requesters sharing one connection on the load generator's runtime, both on async-nats, at concurrency {lowest} and {highest}. The minimal relay of the pipe's shape (the design's floor; unjudged rows) is two more child processes on the same runtime: a front serving HTTP/1.1 with hyper, whose requests a writer task sends batched over one mutually authenticated TLS 1.3 connection (a 13-byte header: length, id and kind, and the request line), and a far end answering each with the same JSON in the same read; the front's reader hands each answer to its HTTP task by id. It has the pipe's handoffs and none of its features (protobuf, routing, limits, deadlines, cancellation, admission, metrics), and takes its turns with the client→server rounds.",
        cores = plan.cores,
        shared = plan.cores / 2,
        load = plan.load.as_secs_f64(),
        warmup = plan.warmup.as_secs_f64(),
        request = payload::REQUEST.len(),
        answer = payload::time_answer().len(),
    )
}

/// A load's outcome and the CPU the processes it went through used while
/// it ran (the benchmark process's load generator included).
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
        procfs::cores_busy(self.cpu, self.outcome.wall)
    }
}

/// Runs `load`, with the CPU that this process and `others` (the CPU
/// either has used so far) used meanwhile.
async fn costed(
    load: impl std::future::Future<Output = anyhow::Result<Outcome>>,
    others: impl Fn() -> anyhow::Result<Duration>,
) -> anyhow::Result<Costed> {
    let cpu_now = || Ok::<_, anyhow::Error>(procfs::cpu_time(procfs::own_pid())? + others()?);
    let before = cpu_now()?;
    let outcome = load.await?;
    let cpu = cpu_now()?.saturating_sub(before);
    Ok(Costed { outcome, cpu })
}

/// What [`alternated`] loads in turn.
struct Targets<'a> {
    nodes: &'a NodePair,
    route: Route,
    baseline: &'a BaselineProcess,
    /// The design's floor, when it takes turns too.
    relay: Option<&'a RelayPair>,
}

impl<'a> Targets<'a> {
    /// `route` through `nodes`, and the baseline; the relay, which is the
    /// same both ways, takes its turns with the first direction only.
    fn new(
        nodes: &'a NodePair,
        baseline: &'a BaselineProcess,
        relay: &'a RelayPair,
        route: Route,
    ) -> Self {
        let relay = matches!(route, Route::ClientToServer).then_some(relay);
        Self {
            nodes,
            route,
            baseline,
            relay,
        }
    }
}

/// Each target's rounds added up.
struct Measured {
    pipe: Costed,
    baseline: Costed,
    relay: Option<Costed>,
}

/// Loads `route` through the nodes, the baseline (and the relay) in turn at
/// `concurrency`, [`ROUNDS`] times each for a share of the plan's time,
/// and adds up each one's rounds: a spell when the machine is slower
/// (another process, the host of a virtual machine) then falls on all
/// alike instead of on whichever ran during it.
fn alternated(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    targets: &Targets<'_>,
    concurrency: usize,
) -> anyhow::Result<Measured> {
    let (addr, path) = entry(targets.nodes, targets.route);
    let pipe = Load {
        addr,
        path,
        shape: RequestShape::default(),
        concurrency,
        warmup: plan.warmup / ROUNDS,
        duration: plan.load / ROUNDS,
        stop: None,
    };
    let baseline = Load {
        addr: targets.baseline.http,
        path: "/time".to_owned(),
        ..pipe.clone()
    };
    let relay = targets.relay.map(|relay| Load {
        addr: relay.http,
        path: pipe.path.clone(),
        ..pipe.clone()
    });
    let round = |load: &Load, others: &dyn Fn() -> anyhow::Result<Duration>| {
        runtime.block_on(costed(loadgen::run(load), others))
    };
    let pipe_round = || round(&pipe, &|| targets.nodes.cpu());
    let baseline_round = || round(&baseline, &|| targets.baseline.cpu_time());
    let relay_round = || match (&relay, targets.relay) {
        (Some(load), Some(process)) => round(load, &|| process.cpu_time()).map(Some),
        _ => Ok(None),
    };
    let mut measured = Measured {
        pipe: pipe_round()?,
        baseline: baseline_round()?,
        relay: relay_round()?,
    };
    for _ in 1..ROUNDS {
        measured.pipe.merge(pipe_round()?)?;
        measured.baseline.merge(baseline_round()?)?;
        if let (Some(total), Some(next)) = (&mut measured.relay, relay_round()?) {
            total.merge(next)?;
        }
    }
    Ok(measured)
}
