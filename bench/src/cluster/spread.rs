//! Many clients over three server nodes of one cluster: how long they take
//! to get in, each node's memory per client held (beside a node outside
//! any cluster holding a third of them, in the same run), what NATS holds
//! and carries for them, and a listing of them all; then [`super::failover`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use restpipe_tests::{CertFiles, LOOPBACK, Nats, metrics};
use tokio::time::Instant;

use super::{
    NatsCounts, SCENARIO, SETTLE, cluster_settings, failover, held_by, listing, per_node,
    server_files, until_held,
};
use crate::fleet_process::FleetProcesses;
use crate::identities::Identities;
use crate::nats_peer;
use crate::node_process::NodeProcess;
use crate::plan::Plan;
use crate::procfs;
use crate::report::{Report, Row, latency, size, thousands};
use crate::statsd::Collector;

/// The cluster's server nodes; the last is the one killed.
pub(super) const NODE_IDS: [&str; 3] = ["s1", "s2", "s3"];

/// The cluster under test: NATS, its server nodes, and where they log.
pub(super) struct Spread {
    pub(super) nats: Nats,
    /// The nodes still running, in the order of [`NODE_IDS`].
    pub(super) nodes: Vec<NodeProcess>,
    /// Their logs.
    pub(super) logs: Vec<PathBuf>,
    /// Clients dialling them.
    pub(super) clients: usize,
}

impl Spread {
    /// The running nodes' local fronts.
    pub(super) fn fronts(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|node| node.http).collect()
    }

    /// `"30,000 clients over 3 nodes: <what>"`.
    pub(super) fn figure(&self, what: &str) -> String {
        format!(
            "{} clients over {} nodes: {what}",
            thousands(self.clients as f64),
            NODE_IDS.len()
        )
    }

    async fn stop(self) -> anyhow::Result<()> {
        for node in self.nodes {
            node.stop().await?;
        }
        nats_peer::stop_server(self.nats).await;
        Ok(())
    }
}

/// Memory per client of a node outside any cluster.
struct Baseline {
    clients: usize,
    /// How they connected.
    storm: Storm,
    /// `None` when they did not all connect in time.
    per_client: Option<f64>,
}

/// How a fleet dialling at once got in.
#[derive(Debug, Clone, Copy)]
struct Storm {
    /// Clients dialling.
    clients: usize,
    /// Until every one was held (`None`: not within the bound).
    took: Option<std::time::Duration>,
    /// Connection attempts the clients made until then (their statsd).
    attempts: u64,
    /// The most attempts in any one second.
    peak: u64,
}

impl Storm {
    /// Counts the attempts of `collector` from `dialled` to `done`.
    fn new(clients: usize, collector: &Collector, dialled: Instant, done: Option<Instant>) -> Self {
        let to = done.unwrap_or_else(Instant::now);
        let (from, to) = (dialled.into_std(), to.into_std());
        Self {
            clients,
            took: done.map(|done| done - dialled),
            attempts: collector.total(metrics::Counter::ConnectAttempt.statsd_name(), from, to),
            peak: collector.peak_per_second(
                metrics::Counter::ConnectAttempt.statsd_name(),
                from,
                to,
            ),
        }
    }

    /// `12.30 s (2,439/s; 1.02 attempts per client, peak 3,120/s)`.
    fn cell(&self) -> String {
        let attempts = format!(
            "{:.2} attempts per client, peak {}/s",
            self.attempts as f64 / self.clients.max(1) as f64,
            thousands(self.peak as f64)
        );
        match self.took {
            Some(took) => format!(
                "{:.2} s ({}/s; {attempts})",
                took.as_secs_f64(),
                thousands(self.clients as f64 / took.as_secs_f64().max(1e-9))
            ),
            None => format!("not all ({attempts})"),
        }
    }
}

/// What the part starts from.
struct Setup<'a> {
    plan: &'a Plan,
    /// The server nodes' identity files.
    server_files: CertFiles,
    /// The CA's certificate and key, for the fleets' children.
    authority: (PathBuf, PathBuf),
    /// Where logs go.
    dir: &'a Path,
}

/// Runs the spread and failover part and adds its rows to `report`.
pub(super) async fn run(
    plan: &Plan,
    identities: &Identities,
    report: &mut Report,
) -> anyhow::Result<()> {
    let setup = Setup {
        plan,
        server_files: server_files(identities)?,
        authority: identities.write_authority()?,
        dir: identities.dir(),
    };
    let count = plan.cluster_clients;
    eprintln!(
        "   baseline: {} clients on one node",
        count / NODE_IDS.len()
    );
    let baseline = baseline(&setup, count / NODE_IDS.len()).await?;
    eprintln!("   {count} clients over {} nodes", NODE_IDS.len());
    measure(&setup, &baseline, report).await
}

/// A node outside any cluster holding `clients` of the fleet.
async fn baseline(setup: &Setup<'_>, clients: usize) -> anyhow::Result<Baseline> {
    let log = setup.dir.join("cluster-baseline-server.log");
    let (server, pipe) = NodeProcess::start_server(&setup.server_files, LOOPBACK, &log).await?;
    tokio::time::sleep(SETTLE).await;
    let idle = server.rss()?;
    let collector = Collector::start()?;
    let mut fleet = FleetProcesses::start(
        &setup.authority,
        clients,
        &[pipe],
        Some(collector.addr()),
        setup.dir,
        "baseline",
    )
    .await?;
    let dialled = Instant::now();
    fleet.dial().await?;
    let bound = setup.plan.connect_bound;
    let held = until_held(&[server.http], clients, bound).await;
    let storm = Storm::new(
        clients,
        &collector,
        dialled,
        held.as_ref().map(|(at, _)| *at),
    );
    let per_client = match held {
        Some(_) => {
            tokio::time::sleep(SETTLE).await;
            Some((server.rss()? as f64 - idle as f64) / clients.max(1) as f64)
        }
        None => None,
    };
    fleet.stop().await?;
    server.stop().await?;
    Ok(Baseline {
        clients,
        storm,
        per_client,
    })
}

/// NATS and the three nodes, settled.
async fn start(setup: &Setup<'_>) -> anyhow::Result<Spread> {
    let nats = nats_peer::start_server().await?;
    let mut nodes = Vec::new();
    let mut logs = Vec::new();
    for id in NODE_IDS {
        let log = setup.dir.join(format!("cluster-spread-{id}.log"));
        let settings = cluster_settings(&nats, id);
        let (node, _) =
            NodeProcess::start_in_cluster(&setup.server_files, LOOPBACK, &settings, &log).await?;
        nodes.push(node);
        logs.push(log);
    }
    tokio::time::sleep(SETTLE).await;
    Ok(Spread {
        nats,
        nodes,
        logs,
        clients: setup.plan.cluster_clients,
    })
}

/// Memory of each node and of NATS.
struct Memory {
    nodes: Vec<u64>,
    nats: u64,
}

fn memory(spread: &Spread) -> anyhow::Result<Memory> {
    let nodes = spread
        .nodes
        .iter()
        .map(NodeProcess::rss)
        .collect::<anyhow::Result<_>>()?;
    let nats_pid = spread
        .nats
        .pid(0)
        .ok_or_else(|| anyhow::anyhow!("nats-server is not running"))?;
    Ok(Memory {
        nodes,
        nats: procfs::rss(nats_pid)?,
    })
}

async fn measure(
    setup: &Setup<'_>,
    baseline: &Baseline,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut spread = start(setup).await?;
    let outcome = connect_and_fail(setup, &mut spread, baseline, report).await;
    spread.stop().await?;
    outcome
}

/// Connects the fleet to the cluster, measures, kills a node
/// ([`failover::run`]) and stops the fleet.
async fn connect_and_fail(
    setup: &Setup<'_>,
    spread: &mut Spread,
    baseline: &Baseline,
    report: &mut Report,
) -> anyhow::Result<()> {
    let plan = setup.plan;
    let idle = memory(spread)?;
    let varz_idle = NatsCounts::now(&spread.nats).await?;
    let collector = Collector::start()?;
    let pipes = spread
        .nodes
        .iter()
        .map(|node| node.pipe)
        .collect::<Option<Vec<SocketAddr>>>()
        .ok_or_else(|| anyhow::anyhow!("a server node reported no pipe address"))?;
    let mut fleet = FleetProcesses::start(
        &setup.authority,
        spread.clients,
        &pipes,
        Some(collector.addr()),
        setup.dir,
        "spread",
    )
    .await?;
    let dialled = Instant::now();
    fleet.dial().await?;
    let measured = async {
        let fronts = spread.fronts();
        let Some((all_in, _)) = until_held(&fronts, spread.clients, plan.connect_bound).await
        else {
            let held = held_by(&fronts).await;
            let held: Vec<String> = held
                .iter()
                .map(|n| n.map_or("?".to_owned(), |n| thousands(n as f64)))
                .collect();
            report.add(
                Row::new(
                    SCENARIO,
                    spread.figure("all connected"),
                    format!(
                        "not within {:?}: {}",
                        plan.connect_bound,
                        per_node(&NODE_IDS, &held)
                    ),
                )
                .target("all", false),
            );
            return Ok(());
        };
        let storm = Storm::new(spread.clients, &collector, dialled, Some(all_in));
        tokio::time::sleep(SETTLE).await;
        let held: Vec<usize> = held_by(&fronts)
            .await
            .into_iter()
            .map(|n| n.unwrap_or(0))
            .collect();
        let loaded = memory(spread)?;
        let varz_loaded = NatsCounts::now(&spread.nats).await?;
        add_connect_rows(report, spread, &storm, baseline, &held);
        add_memory_rows(report, spread, (&idle, &loaded), &held, baseline);
        add_nats_rows(report, spread, (&idle, &loaded), (varz_idle, varz_loaded));
        let (listed, took) = listing(fronts[0]).await?;
        report.add(Row::new(
            SCENARIO,
            spread.figure("listing of every client from one node (`/_pipe/peers`)"),
            format!(
                "{} listed in {}",
                thousands(listed.len() as f64),
                latency(took)
            ),
        ));
        failover::run(plan, spread, &listed, &collector, report).await?;
        failover::add_refusals_row(report, spread);
        anyhow::Ok(())
    }
    .await;
    fleet.stop().await?;
    measured
}

fn add_connect_rows(
    report: &mut Report,
    spread: &Spread,
    storm: &Storm,
    baseline: &Baseline,
    held: &[usize],
) {
    report.add(
        Row::new(SCENARIO, spread.figure("all connected in"), storm.cell()).baseline(format!(
            "{} clients on a node outside any cluster: {}",
            thousands(baseline.clients as f64),
            baseline.storm.cell()
        )),
    );
    let held: Vec<String> = held.iter().map(|n| thousands(*n as f64)).collect();
    report.add(Row::new(
        SCENARIO,
        spread.figure("clients held by each node"),
        per_node(&NODE_IDS, &held),
    ));
}

fn add_memory_rows(
    report: &mut Report,
    spread: &Spread,
    (idle, loaded): (&Memory, &Memory),
    held: &[usize],
    baseline: &Baseline,
) {
    let per_client: Vec<f64> = (0..held.len())
        .map(|i| (loaded.nodes[i] as f64 - idle.nodes[i] as f64) / held[i].max(1) as f64)
        .collect();
    let mean = per_client.iter().sum::<f64>() / per_client.len().max(1) as f64;
    let cells: Vec<String> = per_client.iter().map(|bytes| size(*bytes)).collect();
    let over = baseline
        .per_client
        .map(|plain| {
            let sign = if mean >= plain { "+" } else { "" };
            format!("; {sign}{} against outside a cluster", size(mean - plain))
        })
        .unwrap_or_default();
    report.add(
        Row::new(
            SCENARIO,
            spread.figure("node RSS per client held"),
            format!(
                "{} (mean {}{over})",
                per_node(&NODE_IDS, &cells),
                size(mean)
            ),
        )
        .baseline(format!(
            "a node outside any cluster: {} ({} clients)",
            baseline
                .per_client
                .map_or_else(|| "not all connected".to_owned(), size),
            thousands(baseline.clients as f64)
        )),
    );
    let cells: Vec<String> = (0..held.len())
        .map(|i| {
            format!(
                "{} → {}",
                size(idle.nodes[i] as f64),
                size(loaded.nodes[i] as f64)
            )
        })
        .collect();
    report.add(Row::new(
        SCENARIO,
        spread.figure("node RSS, idle in the cluster → holding them"),
        per_node(&NODE_IDS, &cells),
    ));
}

fn add_nats_rows(
    report: &mut Report,
    spread: &Spread,
    (idle, loaded): (&Memory, &Memory),
    (before, after): (NatsCounts, NatsCounts),
) {
    let clients = spread.clients.max(1) as f64;
    report.add(Row::new(
        SCENARIO,
        spread.figure("NATS subscriptions; NATS RSS, idle → holding them"),
        format!(
            "{} (idle {}); {} → {} ({} per client)",
            thousands(after.subscriptions as f64),
            thousands(before.subscriptions as f64),
            size(idle.nats as f64),
            size(loaded.nats as f64),
            size((loaded.nats as f64 - idle.nats as f64) / clients)
        ),
    ));
    let during = after.since(&before);
    report.add(Row::new(
        SCENARIO,
        spread.figure("NATS messages while they connected, in / out"),
        format!(
            "{} / {} ({:.2} / {:.2} per client; {} / {})",
            thousands(during.in_msgs as f64),
            thousands(during.out_msgs as f64),
            during.in_msgs as f64 / clients,
            during.out_msgs as f64 / clients,
            size(during.in_bytes as f64),
            size(during.out_bytes as f64)
        ),
    ));
}
