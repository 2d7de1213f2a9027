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

mod beside;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::{CertFiles, NodeSettings, Role, SERVER_NAME};
use tokio_util::sync::CancellationToken;

use self::beside::Target;
use self::transfer::{Transfer, bounded_transfer};
use crate::identities::Identities;
use crate::loadgen::{self, Load, Outcome, RequestShape};
use crate::node_pair::NodePair;
use crate::node_process::NodeProcess;
use crate::plan::Plan;
use crate::procfs;
use crate::raw_copy::{self, CHUNK_BYTES, Copied};
use crate::relay::RelayPair;
use crate::report::{Report, Row, Verdict, clip, latency, percent, size};

const SCENARIO: &str = "large bodies";
/// Transfers of each kind; the median counts, so one descheduling of a
/// 2-core machine's busy process does not decide the figure.
const REPEATS: usize = 3;
/// Target: the pipe's rate as a share of the raw TLS copy.
const MIN_RATE_RATIO: f64 = 0.5;
/// Target: peak memory of a node above its idle memory.
const MAX_PEAK_ABOVE_IDLE: f64 = 64.0 * 1024.0 * 1024.0;
/// Target: p99 of small requests during the transfer.
const MAX_SMALL_P99: Duration = Duration::from_millis(10);
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
        "Large bodies: both nodes run in child processes with default settings (`max_body_bytes` {}); the raw copy writes the same number of bytes in {} KiB writes over one tokio-rustls connection with the nodes' own TLS configurations, both ends in the benchmark process on {} threads, and waits for the receiver to confirm the count; the plain TCP copy does the same without TLS (the least a byte costs to cross the app's plain HTTP hop to its node). Each transfer through the pipe runs {REPEATS} times, each right after a raw TLS copy and a plain TCP copy, so that all meet the machine in the same state; the median time of each counts. A copy's CPU is the benchmark process's `utime + stime` from its first write to the receiver's count (clock ticks of 10 ms, summed over the copies); the pipe's CPU per MiB counts the two nodes and the load generator (the sending or receiving app, and the small requests). Peak memory is `VmHWM` over the {REPEATS} transfers of a kind, after resetting it (`/proc/<pid>/clear_refs`), minus `VmRSS` at rest just after the reset; CPU is each process's `utime + stime` during the transfers through the pipe, as a share of their time (the load generator's includes the small requests). Small requests are `GET {SMALL_PATH}` one after another through the same client node and pipe connection, all through each transfer through the pipe. The rows of nodes with fewer worker threads make each transfer {REPEATS} times again, each right after a raw TLS copy, on a second pair of nodes started with `TOKIO_WORKER_THREADS` = {} (the shipped binaries honour it too), so that the two nodes' workers add up to the machine's cores, as one node's do on a host of its own, with no small requests alongside; a figure for the analysis, not judged. The minimal relay of the pipe's shape (the design's floor; the throughput scenario's note says what it is: here its front streams an upload to the far end in pieces of the pipe's chunk size and the far end answers a GET in such pieces, at most the pipe's 2 MiB window queued on either side) makes each transfer {REPEATS} times too, taking turns with the nodes (on their default runtime, and again on the nodes with fewer worker threads), with no small requests alongside, each round right after a raw TLS copy; the CPU per MiB of those rows is that of the processes a transfer went through and the benchmark process (the app), measured around each transfer; unjudged.",
        size(NodeSettings::default().max_body_bytes as f64),
        CHUNK_BYTES / 1024,
        plan.cores,
        plan.cores / 2,
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
    let files = (server_files, client_files);
    let nodes = NodePair::start(files, None, dir, "large").await?;
    let (server, client) = (&nodes.server, &nodes.client);
    // Small requests at rest: the baseline of the ones during transfers.
    let at_rest = loadgen::run(&small_requests(client, plan.warmup + plan.load, None)).await?;

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
            let (server_tls, client_tls) = (raw_tls.server.clone(), raw_tls.client.clone());
            rounds
                .raw
                .push(raw_copy::tls(plan.large_bytes, server_tls, client_tls).await?);
            rounds.tcp.push(raw_copy::tcp(plan.large_bytes).await?);
            rounds.pipe_once(plan, direction, server, client).await?;
            if rounds.failure.is_some() {
                break;
            }
        }
        let raw_rate = copy_row(
            report,
            plan.large_bytes,
            direction,
            "raw TLS 1.3",
            &rounds.raw,
        );
        copy_row(
            report,
            plan.large_bytes,
            direction,
            "plain TCP",
            &rounds.tcp,
        );
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
            transfers: rounds.times.len(),
        };
        add_rows(report, &measured, &at_rest);
    }
    let floor = beside_relay(plan, files, None, &nodes, dir, raw_tls, report).await;
    nodes.stop().await?;
    floor?;
    sharing_cores(plan, files, dir, raw_tls, report).await
}

/// Each transfer through the minimal relay of the pipe's shape (the
/// design's floor, its ends with `workers` worker threads each, `None`:
/// one per core) and through `nodes` in turn, each round after a raw TLS
/// copy, with no small requests alongside. A figure for the analysis.
async fn beside_relay(
    plan: &Plan,
    files: (&CertFiles, &CertFiles),
    workers: Option<usize>,
    nodes: &NodePair,
    dir: &std::path::Path,
    raw_tls: &RawTls,
    report: &mut Report,
) -> anyhow::Result<()> {
    let relay = RelayPair::start(files, workers, dir).await?;
    let (nodes_label, relay_label) = match workers {
        None => (
            "through the pipe again, taking turns with the relay, no small requests".to_owned(),
            "minimal relay of the pipe's shape (the design's floor)".to_owned(),
        ),
        Some(workers) => {
            let threads = if workers == 1 { "thread" } else { "threads" };
            (
                format!("nodes with {workers} worker {threads} each"),
                format!(
                    "minimal relay of the pipe's shape, ends with {workers} worker {threads} each"
                ),
            )
        }
    };
    let (nodes_cpu, relay_cpu) = (|| nodes.cpu(), || relay.cpu_time());
    let targets = [
        Target {
            label: nodes_label,
            addr: nodes.client.http,
            cpu: &nodes_cpu,
        },
        Target {
            label: relay_label,
            addr: relay.http,
            cpu: &relay_cpu,
        },
    ];
    let mut measured = Ok(());
    for direction in [Direction::Post, Direction::Get] {
        eprintln!(
            "   {}, {}",
            direction.label(plan.large_bytes),
            targets[1].label
        );
        measured = beside::transfers(plan, raw_tls, direction, &targets, report).await;
        if measured.is_err() {
            break;
        }
    }
    let stopped = relay.stop().await;
    measured.and(stopped)
}

/// Each transfer again on a second pair of nodes whose worker threads add
/// up to the machine's cores (`TOKIO_WORKER_THREADS` = cores / 2 each), as
/// one node's do on a host of its own, each beside a raw TLS copy: how much
/// of the gap is two runtimes and the app contending for the same cores. A
/// figure for the analysis, not a verdict; no small requests alongside.
async fn sharing_cores(
    plan: &Plan,
    files: (&CertFiles, &CertFiles),
    dir: &std::path::Path,
    raw_tls: &RawTls,
    report: &mut Report,
) -> anyhow::Result<()> {
    let workers = plan.cores / 2;
    if workers == 0 {
        return Ok(());
    }
    let nodes = NodePair::start(files, Some(workers), dir, "large-shared-cores").await?;
    let measured = beside_relay(plan, files, Some(workers), &nodes, dir, raw_tls, report).await;
    let stopped = nodes.stop().await;
    measured.and(stopped)
}

/// What the transfers of one kind measured so far.
struct Rounds {
    /// The raw TLS copies.
    raw: Vec<Copied>,
    /// The plain TCP copies.
    tcp: Vec<Copied>,
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
            tcp: Vec::with_capacity(REPEATS),
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
        let (addr, bytes) = (client.http, plan.large_bytes);
        match bounded_transfer(direction, addr, bytes, plan.transfer_bound).await {
            Ok(elapsed) => self.times.push(elapsed),
            Err(why) => self.failure = Some(why),
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
    /// Transfers through the pipe that ended.
    transfers: usize,
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
        transfers,
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
    let all: Duration = cpu.iter().sum();
    report.add(Row::new(
        SCENARIO,
        name("CPU per MiB moved, all three processes"),
        format!(
            "{} ({:.2} cores busy)",
            per_mib(all, bytes * transfers as u64),
            procfs::cores_busy(all, total)
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

/// The row of the copies of one kind (`what`) made beside the transfers in
/// `direction`; their median rate.
fn copy_row(
    report: &mut Report,
    bytes: u64,
    direction: Direction,
    what: &str,
    copies: &[Copied],
) -> f64 {
    let mut times: Vec<Duration> = copies.iter().map(|copy| copy.elapsed).collect();
    let rate = mib_per_second(bytes, median(&mut times));
    let cpu: Duration = copies.iter().map(|copy| copy.cpu).sum();
    let elapsed: Duration = times.iter().sum();
    report.add(Row::new(
        SCENARIO,
        format!(
            "{what} copy of {} over loopback, one before each {} (median of {})",
            size(bytes as f64),
            direction.verb(),
            copies.len()
        ),
        format!(
            "{rate:.0} MiB/s; CPU {} per MiB ({:.2} cores busy)",
            per_mib(cpu, bytes * copies.len() as u64),
            procfs::cores_busy(cpu, elapsed),
        ),
    ));
    rate
}

/// CPU time per MiB of `bytes` moved.
fn per_mib(cpu: Duration, bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    latency(Duration::from_secs_f64(cpu.as_secs_f64() / mib.max(1e-9)))
}

/// The median of `times` (the upper one of an even count).
fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn mib_per_second(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}
