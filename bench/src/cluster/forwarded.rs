//! A request for a client that another node holds: `GET /client/<name>/time`
//! on the entry node, which forwards it over NATS request/reply to the
//! holding node, beside the same request on the holding node (direct), at
//! each concurrency of the plan, with the same load generator as the
//! throughput scenario.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::{LOOPBACK, Role};
use tokio::time::Instant;

use super::{ANSWER_TIMEOUT, NatsCounts, SCENARIO, cluster_settings, server_files};
use crate::identities::Identities;
use crate::loadgen::{self, Load, Outcome, RequestShape};
use crate::nats_peer;
use crate::node_process::{NodeProcess, Placement};
use crate::plan::Plan;
use crate::probe;
use crate::procfs;
use crate::report::{Report, Row, latency, percent, thousands};

/// The client node's name.
const CLIENT_NAME: &str = "bench-cluster-client";
/// Longest wait for the client to answer through both nodes.
const REACHABLE_WITHIN: Duration = Duration::from_secs(30);
/// Target: forwarded median latency at concurrency 1, as a multiple of
/// direct.
const MAX_P50_RATIO: f64 = 2.0;
/// Target: forwarded requests/s at the highest concurrency, as a share of
/// direct.
const MIN_RATE_RATIO: f64 = 0.5;

/// The processes whose CPU a load costs, in the order of [`Cpu`].
const PROCESSES: [&str; 5] = [
    "entry node",
    "holding node",
    "client node",
    "NATS",
    "load generator",
];

/// The two server nodes, the client node and NATS.
struct Nodes {
    entry: NodeProcess,
    holder: NodeProcess,
    client: NodeProcess,
    nats: restpipe_tests::Nats,
}

impl Nodes {
    /// Process ids, in the order of [`PROCESSES`].
    fn pids(&self) -> anyhow::Result<[u32; 5]> {
        let nats = self.nats.pid(0).context("nats-server is not running")?;
        Ok([
            self.entry.pid(),
            self.holder.pid(),
            self.client.pid(),
            nats,
            procfs::own_pid(),
        ])
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.client.stop().await?;
        self.entry.stop().await?;
        self.holder.stop().await?;
        nats_peer::stop_server(self.nats).await;
        Ok(())
    }
}

/// Runs the forwarded-request part and adds its rows to `report`.
pub(super) async fn run(
    plan: &Plan,
    identities: &Identities,
    report: &mut Report,
) -> anyhow::Result<()> {
    let nodes = start(identities).await?;
    let responder = nats_peer::Responder::start(&nodes.nats).await?;
    let path = format!("/client/{CLIENT_NAME}/time");
    let measured = async {
        for front in [nodes.holder.http, nodes.entry.http] {
            until_answered(front, &path).await?;
        }
        for &concurrency in &plan.concurrencies {
            eprintln!("   direct and forwarded at concurrency {concurrency}");
            let load = |addr| Load {
                addr,
                path: path.clone(),
                shape: RequestShape::default(),
                concurrency,
                warmup: plan.warmup,
                duration: plan.load,
                stop: None,
            };
            let direct = costed(&nodes, &load(nodes.holder.http)).await?;
            let forwarded = costed(&nodes, &load(nodes.entry.http)).await?;
            let alone = alone(&nodes, concurrency, plan).await?;
            add_rows(report, plan, concurrency, &forwarded, &direct);
            add_nats_row(
                report,
                concurrency,
                &alone,
                &forwarded.outcome,
                &direct.outcome,
            );
        }
        anyhow::Ok(())
    }
    .await;
    drop(responder);
    nodes.stop().await?;
    measured
}

/// NATS, two server nodes of one cluster (`s1` the entry, `s2` the
/// holder) and a client node connected to the holder.
async fn start(identities: &Identities) -> anyhow::Result<Nodes> {
    let logs = identities.dir();
    let nats = nats_peer::start_server().await?;
    let files = server_files(identities)?;
    let (entry, _) = NodeProcess::start_in_cluster(
        &files,
        LOOPBACK,
        &cluster_settings(&nats, "s1"),
        &logs.join("cluster-forward-s1.log"),
    )
    .await?;
    let (holder, holder_pipe) = NodeProcess::start_in_cluster(
        &files,
        LOOPBACK,
        &cluster_settings(&nats, "s2"),
        &logs.join("cluster-forward-s2.log"),
    )
    .await?;
    let client = NodeProcess::start(
        &identities.write_files(CLIENT_NAME, Role::Client)?,
        Placement::Client {
            server: holder_pipe,
        },
        &logs.join("cluster-forward-client.log"),
    )
    .await?;
    Ok(Nodes {
        entry,
        holder,
        client,
        nats,
    })
}

/// Waits until `GET path` on `front` answers 200.
async fn until_answered(front: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + REACHABLE_WITHIN;
    loop {
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, probe::get_json(front, path)).await;
        let why = match answer {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => "no answer in time".to_owned(),
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "GET {path} on {front} not answered within {REACHABLE_WITHIN:?}: {why}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU each process of [`PROCESSES`] used.
type Cpu = [Duration; 5];

/// A load's outcome, the CPU each process used while it ran, and what
/// NATS did meanwhile.
struct Costed {
    outcome: Outcome,
    cpu: Cpu,
    nats: NatsCounts,
}

async fn costed(nodes: &Nodes, load: &Load) -> anyhow::Result<Costed> {
    let pids = nodes.pids()?;
    let cpu_times = || -> anyhow::Result<Cpu> {
        let mut cpu = [Duration::ZERO; 5];
        for (slot, pid) in cpu.iter_mut().zip(pids) {
            *slot = procfs::cpu_time(pid)?;
        }
        Ok(cpu)
    };
    let nats_before = NatsCounts::now(&nodes.nats).await?;
    let before = cpu_times()?;
    let outcome = loadgen::run(load).await?;
    let after = cpu_times()?;
    let nats = NatsCounts::now(&nodes.nats).await?.since(&nats_before);
    let cpu = std::array::from_fn(|i| after[i].saturating_sub(before[i]));
    Ok(Costed { outcome, cpu, nats })
}

impl Costed {
    /// `entry node 40 µs, holding node 52 µs, … (1.84 cores busy)`: CPU
    /// per answered request of each process that did any work.
    fn cell(&self) -> String {
        let completed = u32::try_from(self.outcome.completed.max(1)).unwrap_or(u32::MAX);
        let parts: Vec<String> = PROCESSES
            .iter()
            .zip(self.cpu)
            .map(|(name, cpu)| format!("{name} {}", latency(cpu / completed)))
            .collect();
        let total: Duration = self.cpu.iter().sum();
        format!(
            "{} ({:.2} cores busy)",
            parts.join(", "),
            procfs::cores_busy(total, self.outcome.wall)
        )
    }

    /// `3.00 in, 3.00 out; 2.00 made, 2.00 removed`: NATS messages and
    /// subscription changes per answered request (warm-up included).
    fn nats_cell(&self) -> String {
        let per = |count: u64| count as f64 / self.outcome.completed.max(1) as f64;
        format!(
            "messages {:.2} in, {:.2} out; subscriptions {:.2} made, {:.2} removed",
            per(self.nats.in_msgs),
            per(self.nats.out_msgs),
            per(self.nats.inserts),
            per(self.nats.removes)
        )
    }
}

fn add_rows(
    report: &mut Report,
    plan: &Plan,
    concurrency: usize,
    forwarded_cost: &Costed,
    direct_cost: &Costed,
) {
    let (forwarded, direct) = (&forwarded_cost.outcome, &direct_cost.outcome);
    let name =
        |what: &str| format!("forwarded through another node, concurrency {concurrency}: {what}");
    let direct_cell = |value: String| format!("direct (on the holder) {value}");
    let highest = plan.concurrencies.iter().max() == Some(&concurrency);
    let lowest = plan.concurrencies.iter().min() == Some(&concurrency);

    let mut rate = Row::new(
        SCENARIO,
        name("requests/s"),
        format!(
            "{} ({} of direct)",
            thousands(forwarded.rate()),
            percent(forwarded.rate(), direct.rate())
        ),
    )
    .baseline(direct_cell(thousands(direct.rate())));
    if highest {
        rate = rate.target(
            format!("≥ {:.0}% of direct", MIN_RATE_RATIO * 100.0),
            forwarded.rate() >= MIN_RATE_RATIO * direct.rate() && forwarded.ok > 0,
        );
    }
    report.add(rate);

    let (p50, direct_p50) = (forwarded.quantile(0.5), direct.quantile(0.5));
    let ratio = p50.as_secs_f64() / direct_p50.as_secs_f64().max(1e-9);
    let mut median = Row::new(
        SCENARIO,
        name("p50"),
        format!(
            "{} ({ratio:.2}× direct, +{})",
            latency(p50),
            latency(p50.saturating_sub(direct_p50))
        ),
    )
    .baseline(direct_cell(latency(direct_p50)));
    if lowest {
        median = median.target(
            format!("≤ {MAX_P50_RATIO:.0}× direct"),
            ratio <= MAX_P50_RATIO && forwarded.ok > 0,
        );
    }
    report.add(median);
    report.add(
        Row::new(SCENARIO, name("p99"), latency(forwarded.quantile(0.99)))
            .baseline(direct_cell(latency(direct.quantile(0.99)))),
    );
    report.add(
        Row::new(SCENARIO, name("CPU per request"), forwarded_cost.cell())
            .baseline(direct_cell(direct_cost.cell())),
    );
    report.add(
        Row::new(
            SCENARIO,
            name("NATS per request"),
            forwarded_cost.nats_cell(),
        )
        .baseline(direct_cell(direct_cost.nats_cell())),
    );
    if forwarded.failed > 0 || direct.failed > 0 || forwarded.ok == 0 {
        report.add(
            Row::new(SCENARIO, name("failed requests"), forwarded.failures())
                .baseline(direct_cell(direct.failures()))
                .target("0", forwarded.failed == 0 && forwarded.ok > 0),
        );
    }
}

/// NATS request/reply alone: its outcome, and the CPU per request of the
/// benchmark's process (requester and responder) and of NATS.
struct Alone {
    outcome: Outcome,
    ends: Duration,
    nats: Duration,
}

async fn alone(nodes: &Nodes, concurrency: usize, plan: &Plan) -> anyhow::Result<Alone> {
    let nats_pid = nodes.nats.pid(0).context("nats-server is not running")?;
    let cpu = || -> anyhow::Result<(Duration, Duration)> {
        Ok((
            procfs::cpu_time(procfs::own_pid())?,
            procfs::cpu_time(nats_pid)?,
        ))
    };
    let before = cpu()?;
    let outcome = nats_peer::load(&nodes.nats, concurrency, plan.warmup, plan.load).await?;
    let after = cpu()?;
    let completed = u32::try_from(outcome.completed.max(1)).unwrap_or(u32::MAX);
    Ok(Alone {
        ends: after.0.saturating_sub(before.0) / completed,
        nats: after.1.saturating_sub(before.1) / completed,
        outcome,
    })
}

/// NATS request/reply alone at `concurrency`, beside what forwarding adds
/// to a direct request: the least it could add is one such round trip.
fn add_nats_row(
    report: &mut Report,
    concurrency: usize,
    costed: &Alone,
    forwarded: &Outcome,
    direct: &Outcome,
) {
    let alone = &costed.outcome;
    let added = forwarded.quantile(0.5).saturating_sub(direct.quantile(0.5));
    let failed = match alone.failed {
        0 => String::new(),
        n => format!(
            "; {n} failed (first: {})",
            alone.first_failure.as_deref().unwrap_or("?")
        ),
    };
    report.add(
        Row::new(
            SCENARIO,
            format!("NATS request/reply alone (async-nats, same server and TLS), concurrency {concurrency}"),
            format!(
                "{} req/s, p50 {}, p99 {}; CPU per request: requester and responder {}, NATS {}{failed}",
                thousands(alone.rate()),
                latency(alone.quantile(0.5)),
                latency(alone.quantile(0.99)),
                latency(costed.ends),
                latency(costed.nats)
            ),
        )
        .baseline(format!("forwarding adds {} to the direct p50", latency(added))),
    );
}
