//! Several server nodes on a NATS backplane (issue 13): what a request
//! costs when it enters at a node other than its client's holder, and what
//! a cluster of three nodes costs and does with many clients when one of
//! its nodes is killed.
//!
//! - [`forwarded`]: `GET /client/<name>/time` on a node that forwards it
//!   over NATS to the node holding the client, beside the same request on
//!   the holder itself, at each concurrency of the plan.
//!   Beside them, NATS request/reply alone on the same server
//!   ([`crate::nats_peer`]): the round trip a forward adds at the least.
//! - [`spread`]: clients that know all three nodes spread over them: each
//!   node's memory per client held, beside a node outside any cluster;
//!   NATS's subscriptions, memory and traffic; a listing of every client.
//! - [`failover`]: one node killed (SIGKILL), and the time until each of
//!   its clients is held by another node and answers through each of them.
//!
//! Every server node runs in a child process (`node-for-bench` with
//! `--cluster`), every node on one `nats-server` with mutual TLS (the test
//! kit's [`Nats`]), so each process's CPU and memory are its own. Without
//! `nats-server` the scenario is skipped, with a row saying so.

mod failover;
mod forwarded;
mod spread;
mod sweep;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::cluster::ClusterSettings;
use restpipe_tests::{Nats, Role, SERVER_NAME};
use tokio::time::Instant;

use crate::identities::Identities;
use crate::nats_peer;
use crate::plan::Plan;
use crate::probe;
use crate::report::{Report, Row, Verdict, thousands};

const SCENARIO: &str = "cluster";
/// The subjects' namespace of the benchmark's cluster.
const CLUSTER_NAME: &str = "bench";
/// Time given to nodes to settle (heartbeats heard, memory quiet) before
/// their memory is read.
const SETTLE: Duration = Duration::from_secs(2);
/// How often the nodes' held clients are counted while waiting for them.
const COUNT_EVERY: Duration = Duration::from_millis(100);
/// Longest wait for one answer from a node's front.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the scenario and adds its rows to `report`.
pub fn run(plan: &Plan, identities: &Identities, report: &mut Report) -> anyhow::Result<()> {
    if !nats_peer::installed() {
        report.add(
            Row::new(SCENARIO, "scenario", nats_peer::NOT_INSTALLED)
                .target_unjudged("—", Verdict::NotRun),
        );
        return Ok(());
    }
    // One thread: the load generator and the probes; the nodes are child
    // processes, the simulated clients have a runtime of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        forwarded::run(plan, identities, report).await?;
        spread::run(plan, identities, report).await
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    report.note(note(plan));
    outcome
}

/// How the scenario measures, under the table.
fn note(plan: &Plan) -> String {
    format!(
        "Cluster: every server node runs in a child process (`node-for-bench --cluster`, default settings), all on one `nats-server` {nats} (the Debian package) with mutual TLS on loopback, which runs as a child process too. Forwarded requests: two server nodes and one client node (a child process, connected to the second); the same load generator as the throughput scenario ({load} s after {warmup} s of warm-up at each concurrency) sends `GET /client/<name>/time` to the holding node (direct, the baseline) and to the other node (forwarded over NATS request/reply), one after the other, then NATS request/reply alone at the same concurrency (a responder on a thread of its own and `concurrency` requesters sharing one connection, both on async-nats, on the same `nats-server` with the same mutual TLS, a reply as long as the pipe's): the round trip a forward adds at the least; CPU per request is each process's `utime + stime` over the load (warm-up included) divided by the requests answered. Spread: {clients} simulated clients (as in the connections scenario real client nodes without a front, default backoff, all from 127.0.0.1, but in child processes of up to {per_process} each, `fleet-for-bench`, since one process may hold at most 20,000 open files here), each given the three nodes' addresses, all dialling at once; each node's memory is `VmRSS` after 2 s of rest before and after, divided by the clients it holds; the baseline is a node outside any cluster holding a third of them, in the same run. After one node is killed (SIGKILL), the reconnect is done when the other two nodes' `/_pipe/health` counts add up to every client (sampled every 100 ms); then each of the killed node's clients is asked for `/client/<name>/time` through each of the two other nodes (one holds it, the other forwards the request; {sweep} requests at a time, each made again until 200).",
        nats = nats_peer::version().unwrap_or_default(),
        load = plan.load.as_secs_f64(),
        warmup = plan.warmup.as_secs_f64(),
        clients = thousands(plan.cluster_clients as f64),
        sweep = sweep::CONCURRENCY,
        per_process = thousands(crate::fleet_process::MAX_PER_PROCESS as f64),
    )
}

/// How server node `node_id` joins the benchmark's cluster on `nats`.
fn cluster_settings(nats: &Nats, node_id: &str) -> ClusterSettings {
    ClusterSettings {
        urls: nats.urls(),
        name: CLUSTER_NAME.to_owned(),
        node_id: node_id.to_owned(),
        tls: Some(nats.tls()),
    }
}

/// The server nodes' identity files (all nodes of a cluster share the name
/// their clients verify).
fn server_files(identities: &Identities) -> anyhow::Result<restpipe_tests::CertFiles> {
    identities.write_files(SERVER_NAME, Role::Server)
}

/// Clients held by each node whose front is in `fronts`, from
/// `/_pipe/health` (`None`: that node did not answer).
async fn held_by(fronts: &[SocketAddr]) -> Vec<Option<usize>> {
    let mut counts = Vec::with_capacity(fronts.len());
    for &front in fronts {
        counts.push(probe::connected_peers(front).await.ok());
    }
    counts
}

/// Waits until the nodes at `fronts` hold `count` clients together; when
/// that was seen and what each held, or `None` after `bound`.
async fn until_held(
    fronts: &[SocketAddr],
    count: usize,
    bound: Duration,
) -> Option<(Instant, Vec<usize>)> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        let held: Vec<usize> = held_by(fronts)
            .await
            .into_iter()
            .map(|n| n.unwrap_or(0))
            .collect();
        if held.iter().sum::<usize>() >= count {
            return Some((Instant::now(), held));
        }
        tokio::time::sleep(COUNT_EVERY).await;
    }
    None
}

/// A node's whole `/_pipe/peers` listing: every client of the cluster and
/// the node holding it, and how long the listing took.
async fn listing(front: SocketAddr) -> anyhow::Result<(Vec<(String, String)>, Duration)> {
    let asked = Instant::now();
    let peers = tokio::time::timeout(ANSWER_TIMEOUT, probe::get_json(front, "/_pipe/peers"))
        .await
        .context("no listing in time")??;
    let took = asked.elapsed();
    let listed = peers["peers"]
        .as_array()
        .context("a listing without peers")?
        .iter()
        .filter_map(|peer| {
            Some((
                peer["name"].as_str()?.to_owned(),
                peer["node"].as_str()?.to_owned(),
            ))
        })
        .collect();
    Ok((listed, took))
}

/// What NATS says of itself (`/varz`, `/subsz`): its subscriptions, and
/// its traffic and interest-graph changes so far.
#[derive(Debug, Clone, Copy, Default)]
struct NatsCounts {
    subscriptions: u64,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    /// Subscriptions made.
    inserts: u64,
    /// Subscriptions removed.
    removes: u64,
}

impl NatsCounts {
    /// The counts of member 0 of `nats` now.
    async fn now(nats: &Nats) -> anyhow::Result<Self> {
        let varz = probe::get_json(nats.monitor(0), "/varz").await?;
        let subsz = probe::get_json(nats.monitor(0), "/subsz").await?;
        let field = |json: &serde_json::Value, name: &str| json[name].as_u64().unwrap_or(0);
        Ok(Self {
            subscriptions: field(&varz, "subscriptions"),
            in_msgs: field(&varz, "in_msgs"),
            out_msgs: field(&varz, "out_msgs"),
            in_bytes: field(&varz, "in_bytes"),
            out_bytes: field(&varz, "out_bytes"),
            inserts: field(&subsz, "num_inserts"),
            removes: field(&subsz, "num_removes"),
        })
    }

    /// What happened between `earlier` and these counts.
    fn since(&self, earlier: &Self) -> Self {
        Self {
            subscriptions: self.subscriptions,
            in_msgs: self.in_msgs.saturating_sub(earlier.in_msgs),
            out_msgs: self.out_msgs.saturating_sub(earlier.out_msgs),
            in_bytes: self.in_bytes.saturating_sub(earlier.in_bytes),
            out_bytes: self.out_bytes.saturating_sub(earlier.out_bytes),
            inserts: self.inserts.saturating_sub(earlier.inserts),
            removes: self.removes.saturating_sub(earlier.removes),
        }
    }
}

/// `s1 10,012 / s2 9,970 / s3 10,018`.
fn per_node(ids: &[&str], values: &[String]) -> String {
    ids.iter()
        .zip(values)
        .map(|(id, value)| format!("{id} {value}"))
        .collect::<Vec<_>>()
        .join(" / ")
}
