//! `restpipe-bench`: restpipe's speed, memory and scale, each figure measured
//! beside a plain baseline in the same run, on loopback only.
//!
//! `restpipe-bench all` runs every scenario and writes the table into
//! `BENCH.md`; `--quick` runs each briefly (what CI does, to prove the
//! benchmark still works, never to judge the figures). One module per
//! scenario; [`report`] holds the table. Server nodes whose memory or CPU is
//! measured run in child processes (this same binary, `node-for-bench`), so
//! `/proc/<pid>` shows their cost alone.

mod fleet;
mod fleet_process;
mod identities;
mod loadgen;
mod nats_peer;
mod node_pair;
mod node_process;
mod payload;
mod plan;
mod probe;
mod procfs;
mod raw_copy;
mod relay;
mod report;
mod statsd;

mod cluster;
mod connections;
mod heartbeat;
mod jobs;
mod large;
mod throughput;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::identities::Identities;
use crate::plan::Plan;
use crate::report::Report;

/// mimalloc rather than glibc malloc: see the workspace manifest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// restpipe's benchmark: throughput and latency, connections held,
/// large bodies, heartbeat cost, a cluster of server nodes and asynchronous
/// jobs, each beside its baseline.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    /// Run each scenario briefly (small counts, 8 MiB bodies, 1 s of load):
    /// proves the benchmark works; the figures are not meaningful.
    #[arg(long, global = true)]
    quick: bool,
    /// Write the table to this file (replacing the generated section of an
    /// existing one). Default: `BENCH.md` at the workspace root for a full
    /// `all`, nowhere otherwise.
    #[arg(long, global = true, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every scenario, in turn.
    All,
    /// Requests through the pipe both ways at concurrency 1 and 64, against
    /// a plain hyper server.
    Throughput,
    /// Idle client nodes held by one server node; its memory, and the
    /// reconnect after a server restart.
    Connections,
    /// A large POST and GET through the pipe, against a raw TLS copy.
    Large,
    /// CPU of a server node holding idle clients (heartbeats only).
    Heartbeat,
    /// Three server nodes on NATS: requests forwarded to another node
    /// against direct ones, memory per client, one node killed.
    Cluster,
    /// Asynchronous jobs: accepted durably, a backlog delivered, a large
    /// queue's memory, the round trip against the synchronous request.
    Jobs,
    /// A node for the benchmark to measure from outside (internal).
    #[command(hide = true)]
    NodeForBench(Box<node_process::NodeArgs>),
    /// Simulated clients in a process of their own (internal).
    #[command(hide = true)]
    FleetForBench(fleet_process::FleetArgs),
    /// The throughput scenario's plain hyper server in a process of its
    /// own, for that scenario and `bench/syscalls-per-request baseline`
    /// (internal).
    #[command(hide = true)]
    BaselineForBench(throughput::BaselineArgs),
    /// One end of the throughput scenario's minimal relay, the design's
    /// floor (internal).
    #[command(hide = true)]
    RelayForBench(relay::RelayArgs),
}

/// Every scenario, in the order `all` runs them: quick ones first, so a
/// broken pipe shows up before the long ones.
const SCENARIOS: [Scenario; 6] = [
    Scenario::Throughput,
    Scenario::Large,
    Scenario::Connections,
    Scenario::Heartbeat,
    Scenario::Cluster,
    Scenario::Jobs,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Throughput,
    Connections,
    Large,
    Heartbeat,
    Cluster,
    Jobs,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::Connections => "connections",
            Self::Large => "large",
            Self::Heartbeat => "heartbeat",
            Self::Cluster => "cluster",
            Self::Jobs => "jobs",
        }
    }

    fn run(
        self,
        plan: &Plan,
        identities: &mut Identities,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        match self {
            Self::Throughput => throughput::run(plan, identities, report),
            Self::Connections => connections::run(plan, identities, report),
            Self::Large => large::run(plan, identities, report),
            Self::Heartbeat => heartbeat::run(plan, identities, report),
            Self::Cluster => cluster::run(plan, identities, report),
            Self::Jobs => jobs::run(plan, identities, report),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let scenarios: Vec<Scenario> = match cli.command {
        Command::NodeForBench(args) => return node_process::serve(*args),
        Command::FleetForBench(args) => return fleet_process::serve(args),
        Command::BaselineForBench(args) => return throughput::serve_baseline(args),
        Command::RelayForBench(args) => return relay::serve_process(args),
        Command::All => SCENARIOS.to_vec(),
        Command::Throughput => vec![Scenario::Throughput],
        Command::Connections => vec![Scenario::Connections],
        Command::Large => vec![Scenario::Large],
        Command::Heartbeat => vec![Scenario::Heartbeat],
        Command::Cluster => vec![Scenario::Cluster],
        Command::Jobs => vec![Scenario::Jobs],
    };
    init_logging("error");
    let open_files = procfs::raise_open_file_limit()?;
    let plan = Plan::new(cli.quick, open_files);
    let out = cli.out.or_else(|| {
        (scenarios.len() == SCENARIOS.len() && !cli.quick).then(report::default_bench_md)
    });
    eprintln!(
        "restpipe-bench: {} mode, {} cores, open-file limit {open_files}",
        plan.mode(),
        plan.cores
    );

    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_average: String = load_average
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let started = Instant::now();
    let mut identities = Identities::new()?;
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let mut report = Report::new(&plan, &arguments.join(" "));
    let mut broken = Vec::new();
    let mut others = Vec::new();
    for scenario in scenarios {
        eprintln!("== {}", scenario.name());
        let began = Instant::now();
        let cpu_before = procfs::CpuShare::now()?;
        let outcome = scenario.run(&plan, &mut identities, &mut report);
        let share = procfs::CpuShare::now()?.others_since(&cpu_before, plan.cores);
        others.push(format!("{} {:.0}%", scenario.name(), share * 100.0));
        if let Err(error) = outcome {
            // One broken scenario must not hide the others' figures.
            eprintln!("   {} broke: {error:#}", scenario.name());
            report.not_run(scenario.name(), &format!("{error:#}"));
            broken.push(scenario.name());
        }
        eprintln!("   {} took {:.1?}", scenario.name(), began.elapsed());
    }
    report.note(format!(
        "Other processes on the machine (builds, tests) used this share of all cores while each scenario ran, competing with it: {}. Load average at the start: {}.",
        others.join(", "),
        load_average.trim()
    ));
    report.finish(started.elapsed(), identities.issuance());

    println!("{}", report.render());
    if let Some(path) = out {
        report
            .write_into(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    // Missed targets are figures, not failures; only a broken benchmark is.
    anyhow::ensure!(
        broken.is_empty(),
        "scenarios that could not run: {}",
        broken.join(", ")
    );
    Ok(())
}

/// Logs to stderr at `default` (`RUST_LOG` overrides). The benchmark keeps
/// thousands of nodes in one process: anything chattier than errors would
/// measure the terminal.
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: a child node's log file is read back
    // into the table (the first refusal) and must stay plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
