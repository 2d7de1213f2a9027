//! What holding idle clients costs a server node in CPU: with nothing to
//! do but heartbeats (a `Ping` after 5 s of silence each way, the default),
//! the server's user + system time over a fixed window, beside the same
//! server with no clients at all.
//!
//! The server runs in a child process (its `/proc/<pid>/stat` is its own);
//! the clients are the in-process [`crate::fleet`], with metrics off.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use pipe_core::DEFAULT_PING_INTERVAL;
use pipe_core::metrics::Metrics;
use pipe_core::pki::Role;
use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::identities::{ClientIdentity, NodeFiles, Pki, SERVER_NAME};
use crate::node_process::{NodeProcess, Placement};
use crate::plan::Plan;
use crate::probe::{self, PeerSampler};
use crate::procfs;
use crate::report::{Report, Row, thousands};

const SCENARIO: &str = "heartbeat";
/// Time given to the idle server to settle before its CPU is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs the scenario.
pub fn run(plan: &Plan, pki: &mut Pki, report: &mut Report) -> anyhow::Result<()> {
    let server_files = pki.write_files(SERVER_NAME, Role::Server)?;
    let identities = pki.clients(plan.heartbeat_clients)?.to_vec();
    let fleet_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.cores)
        .thread_name("fleet")
        .enable_all()
        .build()?;
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = driver.block_on(measure(
        plan,
        &identities,
        &server_files,
        fleet_runtime.handle(),
        pki.dir(),
        report,
    ));
    fleet_runtime.shutdown_timeout(Duration::from_secs(5));
    report.note(format!(
        "Heartbeat: CPU is `utime + stime` of the server node's process (`/proc/<pid>/stat`) over {} s, first with no clients, then holding the idle clients, measured from {} s after the last one connected so every connection is in its ping cycle (ping interval {} s, the default, on both sides; dead-after 15 s). Nothing else runs against the server in the window.",
        plan.heartbeat_window.as_secs(),
        (DEFAULT_PING_INTERVAL + SETTLE).as_secs(),
        DEFAULT_PING_INTERVAL.as_secs(),
    ));
    outcome
}

async fn measure(
    plan: &Plan,
    identities: &[ClientIdentity],
    server_files: &NodeFiles,
    fleet_runtime: &tokio::runtime::Handle,
    dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let count = identities.len();
    let name = |what: &str| format!("{} idle clients: {what}", thousands(count as f64));
    let window = plan.heartbeat_window;
    let log = dir.join("server-heartbeat.log");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let server =
        NodeProcess::start(server_files, Placement::Server { listen: loopback }, &log).await?;
    let pipe = server
        .pipe
        .context("the server node reported no pipe address")?;
    tokio::time::sleep(SETTLE).await;
    let idle_cpu = cpu_over(&server, window).await?;

    let sampler = PeerSampler::start(server.http);
    let dialled = Instant::now();
    let fleet = Fleet::start(fleet_runtime, identities, pipe, &Metrics::disabled());
    let all_in = sampler.wait_for(count, dialled, plan.connect_bound).await;
    // Its requests would count in the window.
    drop(sampler);
    if all_in.is_none() {
        report.add(Row::new(
            SCENARIO,
            name("server CPU"),
            format!(
                "not measured: only {} of {count} connected within {:?}",
                fleet.connected(),
                plan.connect_bound
            ),
        ));
        fleet.stop().await;
        return server.kill().await;
    }
    tokio::time::sleep(DEFAULT_PING_INTERVAL + SETTLE).await;
    let bench_before = procfs::cpu_time(procfs::own_pid())?;
    let held_cpu = cpu_over(&server, window).await?;
    let bench_cpu = procfs::cpu_time(procfs::own_pid())?.saturating_sub(bench_before);
    let still_held = probe::connected_peers(server.http).await?;

    let share = |cpu: Duration| 100.0 * cpu.as_secs_f64() / window.as_secs_f64();
    report.add(
        Row::new(
            SCENARIO,
            name("server CPU"),
            format!(
                "{:.1}% of one core ({:.1} µs per client per second)",
                share(held_cpu),
                held_cpu.as_secs_f64() * 1e6 / window.as_secs_f64() / count as f64
            ),
        )
        .baseline(format!("no clients: {:.1}%", share(idle_cpu))),
    );
    report.add(Row::new(
        SCENARIO,
        name("simulated clients' CPU (benchmark process)"),
        format!("{:.1}% of one core", share(bench_cpu)),
    ));
    report.add(
        Row::new(
            SCENARIO,
            name("still connected after the window"),
            format!(
                "{} of {}",
                thousands(still_held as f64),
                thousands(count as f64)
            ),
        )
        .target("all", still_held >= count),
    );
    fleet.stop().await;
    server.stop().await
}

/// CPU time `server` uses over the next `window`.
async fn cpu_over(server: &NodeProcess, window: Duration) -> anyhow::Result<Duration> {
    let before = server.cpu_time()?;
    tokio::time::sleep(window).await;
    Ok(server.cpu_time()?.saturating_sub(before))
}
