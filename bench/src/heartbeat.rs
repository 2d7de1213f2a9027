//! What holding idle clients costs a server node in CPU: with nothing to
//! do but heartbeats (a `Ping` after 5 s of silence each way, the default),
//! the server's user + system time over a fixed window, beside the same
//! server with no clients at all.
//!
//! The server runs in a child process (its `/proc/<pid>/stat` is its own);
//! the clients are the in-process [`crate::fleet`], with metrics off.

use std::time::Duration;

use restpipe_tests::{DEFAULT_PING_INTERVAL, LOOPBACK, Metrics};
use tokio::time::Instant;

use crate::fleet::{Fleet, FleetSetup};
use crate::identities::Identities;
use crate::node_process::NodeProcess;
use crate::plan::Plan;
use crate::probe::{self, PeerSampler};
use crate::procfs;
use crate::report::{Report, Row, thousands};

const SCENARIO: &str = "heartbeat";
/// Time given to the idle server to settle before its CPU is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs the scenario.
pub fn run(plan: &Plan, identities: &mut Identities, report: &mut Report) -> anyhow::Result<()> {
    let setup = FleetSetup::prepare(plan, identities, plan.heartbeat_clients)?;
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = driver.block_on(measure(plan, &setup, report));
    setup.shutdown();
    report.note(format!(
        "Heartbeat: CPU is `utime + stime` of the server node's process (`/proc/<pid>/stat`) over {} s, first with no clients, then holding the idle clients, measured from {} s after the last one connected so every connection is in its ping cycle (ping interval {} s, the default, on both sides; dead-after 15 s). Nothing else runs against the server in the window.",
        plan.heartbeat_window.as_secs(),
        (DEFAULT_PING_INTERVAL + SETTLE).as_secs(),
        DEFAULT_PING_INTERVAL.as_secs(),
    ));
    outcome
}

async fn measure(plan: &Plan, setup: &FleetSetup, report: &mut Report) -> anyhow::Result<()> {
    let count = setup.clients.len();
    let name = |what: &str| format!("{} idle clients: {what}", thousands(count as f64));
    let window = plan.heartbeat_window;
    let log = setup.dir.join("server-heartbeat.log");
    let (server, pipe) = NodeProcess::start_server(&setup.server_files, LOOPBACK, &log).await?;
    tokio::time::sleep(SETTLE).await;
    let idle_cpu = cpu_over(&server, window).await?;

    let sampler = PeerSampler::start(server.http);
    let dialled = Instant::now();
    let fleet = Fleet::start(
        setup.runtime.handle(),
        &setup.clients,
        0,
        &[pipe],
        &Metrics::disabled(),
    );
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
