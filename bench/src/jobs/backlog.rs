//! A server node and a client node with their stores: asynchronous round
//! trips beside the synchronous request of the same handler; then a
//! backlog queued while the client is stopped, delivered once it starts.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use super::submit::{self, JobsStatus, Submitted};
use super::{
    CLIENT_NAME, FILL_CONCURRENCY, SCENARIO, Setup, commits_between, cpu_cell, per_job_cell,
    start_server,
};
use crate::loadgen::{self, Load, Outcome};
use crate::node_process::{NodeProcess, Placement};
use crate::probe;
use crate::report::{Report, Row, clip, latency, thousands};

/// How often the delivery of a backlog is looked at.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Longest wait for the client node to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Round trips through a server and a connected client; then a backlog
/// queued for that client while it is stopped, delivered once it starts
/// again. Round trips come first: a job waits behind its peer's queue.
pub(super) async fn run(setup: &Setup<'_>, report: &mut Report) -> anyhow::Result<()> {
    let plan = setup.plan;
    let server = start_server(setup, "backlog", plan.jobs_backlog).await?;
    let pipe = server
        .pipe
        .context("the server node reported no pipe address")?;
    let client = start_client(setup, pipe).await?;
    wait_for_peers(&server, 1).await?;
    eprintln!("   round trips at concurrency 1");
    let trips = round_trips(setup, &server).await?;
    client.stop().await?;
    wait_for_peers(&server, 0).await?;
    eprintln!(
        "   queueing {} jobs for an offline client",
        thousands(plan.jobs_backlog as f64)
    );
    let peers = [CLIENT_NAME.to_owned()];
    let queued = submit::submit_jobs(
        server.http,
        &peers,
        plan.jobs_backlog,
        FILL_CONCURRENCY,
        plan.jobs_bound,
    )
    .await?;
    let before = submit::jobs_status(server.http).await?;
    let client = start_client(setup, pipe).await?;
    let delivered = deliver(setup, &server, &client, &before, queued.accepted).await?;
    add_backlog_rows(report, &queued, &delivered, &trips);
    add_round_trip_rows(report, &trips);
    client.stop().await?;
    server.stop().await
}

/// Starts the client node, with a state directory of its own, dialling the
/// server's pipe at `server`.
async fn start_client(setup: &Setup<'_>, server: SocketAddr) -> anyhow::Result<NodeProcess> {
    NodeProcess::start_keeping_jobs(
        &setup.client_files,
        Placement::Client { server },
        &setup.state_dir("client"),
        pipe_core::DEFAULT_MAX_QUEUED_JOBS,
        &setup.logs.join("client-jobs.log"),
    )
    .await
}

/// Waits until the server node holds `count` peers.
async fn wait_for_peers(server: &NodeProcess, count: usize) -> anyhow::Result<()> {
    probe::wait_for_peers(server.http, count, CONNECT_TIMEOUT)
        .await
        .context("the server node did not come to hold its peers")
}

/// How the backlog's delivery went.
struct Delivered {
    /// Jobs of the backlog that ended (succeeded or failed) within the
    /// bound.
    ended: u64,
    failed: u64,
    expected: u64,
    /// From the server seeing the client connected to the last job's end.
    took: Duration,
    /// Server commits meanwhile.
    commits: Option<u64>,
    /// CPU meanwhile: server node, client node.
    cpu: [Duration; 2],
}

/// Waits for the client to connect, then for the `expected` jobs queued
/// since `before` to end (within the plan's bound).
async fn deliver(
    setup: &Setup<'_>,
    server: &NodeProcess,
    client: &NodeProcess,
    before: &JobsStatus,
    expected: u64,
) -> anyhow::Result<Delivered> {
    let cpu_before = [server.cpu_time()?, client.cpu_time()?];
    wait_for_peers(server, 1).await?;
    let connected = Instant::now();
    eprintln!("   delivering {} jobs", thousands(expected as f64));
    let ended = |status: &JobsStatus| {
        (status.succeeded + status.failed).saturating_sub(before.succeeded + before.failed)
    };
    let mut now = before.clone();
    while ended(&now) < expected && connected.elapsed() < setup.plan.jobs_bound {
        tokio::time::sleep(POLL_EVERY).await;
        now = submit::jobs_status(server.http).await?;
    }
    let took = connected.elapsed();
    let cpu = [server.cpu_time()?, client.cpu_time()?];
    Ok(Delivered {
        ended: ended(&now),
        failed: now.failed.saturating_sub(before.failed),
        expected,
        took,
        commits: commits_between(before, &now),
        cpu: [0, 1].map(|i| cpu[i].saturating_sub(cpu_before[i])),
    })
}

fn add_backlog_rows(
    report: &mut Report,
    queued: &Submitted,
    delivered: &Delivered,
    trips: &RoundTrips,
) {
    let name = |what: &str| {
        format!(
            "backlog of {} for a client that connects later: {what}",
            thousands(delivered.expected as f64)
        )
    };
    let mut accepted = format!(
        "{} jobs/s ({} in {:.1} s)",
        thousands(queued.rate()),
        thousands(queued.accepted as f64),
        queued.took.as_secs_f64()
    );
    if queued.refused > 0 {
        accepted.push_str(&format!(
            "; {} refused, first: {}",
            queued.refused,
            clip(queued.first_refusal.as_deref().unwrap_or(""), 100)
        ));
    }
    report.add(Row::new(
        SCENARIO,
        name(&format!("queued at concurrency {FILL_CONCURRENCY}")),
        accepted,
    ));
    let rate = delivered.ended as f64 / delivered.took.as_secs_f64().max(1e-9);
    let mut value = format!(
        "{} jobs/s ({} in {:.1} s)",
        thousands(rate),
        thousands(delivered.ended as f64),
        delivered.took.as_secs_f64()
    );
    if delivered.ended < delivered.expected {
        value.push_str(&format!(
            "; only {} of {} ended within the bound",
            thousands(delivered.ended as f64),
            thousands(delivered.expected as f64)
        ));
    }
    if delivered.failed > 0 {
        value.push_str(&format!("; {} failed", delivered.failed));
    }
    report.add(
        Row::new(
            SCENARIO,
            name("delivered after the client connected"),
            value,
        )
        .baseline(format!(
            "synchronous POST, concurrency 1: {} requests/s",
            thousands(trips.synchronous.rate())
        )),
    );
    report.add(Row::new(
        SCENARIO,
        name("server commits (fsyncs) per job delivered"),
        per_job_cell(delivered.commits, delivered.ended),
    ));
    report.add(Row::new(
        SCENARIO,
        name("CPU during delivery"),
        format!(
            "server {}; client {}",
            cpu_cell(delivered.cpu[0], delivered.ended, delivered.took),
            cpu_cell(delivered.cpu[1], delivered.ended, delivered.took)
        ),
    ));
}

/// Asynchronous round trips beside synchronous requests.
struct RoundTrips {
    /// The synchronous POST of the same handler.
    synchronous: Outcome,
    /// Submit to result, as a caller sees it.
    total: Histogram<u64>,
    /// Submit to 202.
    accepted: Histogram<u64>,
    /// Inside the server node: creation to end.
    in_node: Histogram<u64>,
    /// Round trips that failed, and the first failure.
    failed: u64,
    first_failure: Option<String>,
}

/// The same handler at concurrency 1: synchronously, then as jobs.
async fn round_trips(setup: &Setup<'_>, server: &NodeProcess) -> anyhow::Result<RoundTrips> {
    let plan = setup.plan;
    let synchronous = loadgen::run(&Load {
        addr: server.http,
        path: submit::work_path(CLIENT_NAME),
        shape: submit::work_request(false),
        concurrency: 1,
        warmup: plan.warmup,
        duration: plan.load,
        stop: None,
    })
    .await?;
    let mut trips = RoundTrips {
        synchronous,
        total: loadgen::histogram()?,
        accepted: loadgen::histogram()?,
        in_node: loadgen::histogram()?,
        failed: 0,
        first_failure: None,
    };
    let host = server.http.to_string();
    let mut sender: SendRequest<Full<Bytes>> = probe::connect(server.http).await?;
    let started = Instant::now();
    while started.elapsed() < plan.warmup + plan.load {
        let measured = started.elapsed() >= plan.warmup;
        match submit::round_trip(&mut sender, &host, CLIENT_NAME).await {
            Ok(trip) if measured => {
                let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                trips.total.saturating_record(nanos(trip.total));
                trips.accepted.saturating_record(nanos(trip.accepted));
                trips.in_node.saturating_record(nanos(trip.in_node).max(1));
            }
            Ok(_) => {}
            Err(error) => {
                trips.failed += 1;
                trips.first_failure.get_or_insert(format!("{error:#}"));
                sender = probe::connect(server.http).await?;
            }
        }
    }
    Ok(trips)
}

fn add_round_trip_rows(report: &mut Report, trips: &RoundTrips) {
    let quantile =
        |histogram: &Histogram<u64>, q: f64| Duration::from_nanos(histogram.value_at_quantile(q));
    let name = |what: &str| format!("round trip at concurrency 1 (submit, then ?wait=): {what}");
    let (p50, sync_p50) = (quantile(&trips.total, 0.5), trips.synchronous.quantile(0.5));
    report.add(
        Row::new(
            SCENARIO,
            name("p50"),
            format!(
                "{} (+{} over synchronous; {} round trips)",
                latency(p50),
                latency(p50.saturating_sub(sync_p50)),
                trips.total.len()
            ),
        )
        .baseline(format!("synchronous POST {}", latency(sync_p50))),
    );
    report.add(
        Row::new(SCENARIO, name("p99"), latency(quantile(&trips.total, 0.99))).baseline(format!(
            "synchronous POST {}",
            latency(trips.synchronous.quantile(0.99))
        )),
    );
    report.add(Row::new(
        SCENARIO,
        name("p50 of the 202; of creation to end inside the node"),
        format!(
            "{}; {}",
            latency(quantile(&trips.accepted, 0.5)),
            latency(quantile(&trips.in_node, 0.5))
        ),
    ));
    if trips.failed > 0 || trips.synchronous.failed > 0 {
        report.add(
            Row::new(
                SCENARIO,
                name("failed"),
                format!(
                    "{} (first: {})",
                    trips.failed,
                    clip(trips.first_failure.as_deref().unwrap_or("none"), 160)
                ),
            )
            .baseline(trips.synchronous.failed.to_string())
            .target("0", trips.failed == 0),
        );
    }
}
