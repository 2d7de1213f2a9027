//! Idle client nodes held by one server node: the server's memory per
//! connection, how long a storm of clients takes to get in, and how they
//! come back after the server is killed and started again on the same port.
//!
//! The server node runs in a child process, so its resident memory is its
//! own; the clients (see [`crate::fleet`]) run in this process and use
//! pipe-core's real reconnect loop with the default backoff. Server-side
//! admissions are sampled from `/_pipe/health` every 100 ms; client-side
//! attempts are counted from the clients' own statsd counters.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::process::count_in_log;
use restpipe_tests::{LOOPBACK, Metrics, StatsdSettings, metrics};
use tokio::time::Instant;

use crate::fleet::{Fleet, FleetSetup};
use crate::identities::Identities;
use crate::node_process::NodeProcess;
use crate::plan::Plan;
use crate::probe::PeerSampler;
use crate::procfs;
use crate::report::{Report, Row, clip, size, thousands};
use crate::statsd::Collector;

const SCENARIO: &str = "connections";
/// Target: server memory per idle connection.
const MAX_RSS_PER_CONNECTION: f64 = 30.0 * 1024.0;
/// Target: connections one server holds on this machine.
const HELD_TARGET: usize = 10_000;
/// Target: every client back this soon after a server restart.
const RECONNECT_TARGET: Duration = Duration::from_secs(60);
/// Time given to a node to settle before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);
/// What the server logs when it turns a client away (pipe-core's
/// `server.rs`); a valid client should never cause one.
const REFUSALS: [&str; 5] = [
    "TLS handshake refused",
    "TLS handshake timed out",
    "client refused",
    "pipe handshake failed",
    "accept failed",
];

/// Runs the scenario for each client count of the plan.
pub fn run(plan: &Plan, identities: &mut Identities, report: &mut Report) -> anyhow::Result<()> {
    let largest = plan.client_counts.iter().copied().max().unwrap_or(0);
    let setup = FleetSetup::prepare(plan, identities, largest)?;
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut outcome = Ok(());
    for &count in &plan.client_counts {
        eprintln!("   {count} clients");
        outcome = driver.block_on(measure(plan, &setup, count, report));
        if outcome.is_err() {
            break;
        }
    }
    setup.shutdown();
    report.note(
        "Connections: the server node runs in a child process (this binary, `node-for-bench`, started through `pipe_core::launch::start_server` with default settings); its memory is `VmRSS` from `/proc/<pid>/status`, read after 2 s of rest before and after the clients connect, the difference divided by the count. The simulated clients are real client nodes without their local HTTP front (`pipe_core::run_client`, one `Node` and one identity each, default backoff) on their own runtime in the benchmark process, sharing the machine's cores with the server. All dial at once. After the server is killed (SIGKILL) and started again on the same port, the time until its `/_pipe/health` shows every client again is measured from the kill; admissions/s are the steepest one-second rise of that count (sampled every 100 ms), attempts/s come from the clients' own `client.connect.new.tick` statsd counters."
    );
    outcome
}

/// Connects the first `count` of the setup's clients to a fresh server,
/// measures, restarts the server, measures the return, and stops everything.
async fn measure(
    plan: &Plan,
    setup: &FleetSetup,
    count: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let name = |what: &str| format!("{} clients: {what}", thousands(count as f64));
    let collector = Collector::start()?;
    let metrics = Metrics::new(&StatsdSettings {
        host: "127.0.0.1".to_owned(),
        port: collector.addr().port(),
        prefix: String::new(),
    })?;

    let first_log = setup.dir.join(format!("server-{count}-first.log"));
    let (server, pipe) =
        NodeProcess::start_server(&setup.server_files, LOOPBACK, &first_log).await?;
    tokio::time::sleep(SETTLE).await;
    let idle_rss = server.rss()?;
    let bench_before = procfs::rss(procfs::own_pid())?;

    let sampler = PeerSampler::start(server.http);
    let dialled = Instant::now();
    let identities = &setup.clients[..count];
    let fleet = Fleet::start(setup.runtime.handle(), identities, &[pipe], &metrics);
    let all_in = sampler.wait_for(count, dialled, plan.connect_bound).await;
    let Some(all_in) = all_in else {
        report.add(
            Row::new(
                SCENARIO,
                name("all connected"),
                format!(
                    "not within {:?}: {} of {count} (server {})",
                    plan.connect_bound,
                    fleet.connected(),
                    sampler.latest().unwrap_or(0)
                ),
            )
            .target(format!("{} held", thousands(HELD_TARGET as f64)), false),
        );
        add_refusals(report, &name, &first_log);
        fleet.stop().await;
        server.kill().await?;
        return Ok(());
    };
    let connect_time = all_in - dialled;
    let mut held = Row::new(
        SCENARIO,
        name("all connected in"),
        format!(
            "{:.2} s ({}/s)",
            connect_time.as_secs_f64(),
            thousands(count as f64 / connect_time.as_secs_f64().max(1e-9))
        ),
    );
    if count >= HELD_TARGET {
        held = held.target(format!("{} held", thousands(HELD_TARGET as f64)), true);
    }
    report.add(held);
    report.add(Row::new(
        SCENARIO,
        name("peak admissions/s while all dial at once"),
        thousands(sampler.peak_rise_per_second(dialled, all_in)),
    ));

    tokio::time::sleep(SETTLE).await;
    let held_rss = server.rss()?;
    let bench_after = procfs::rss(procfs::own_pid())?;
    let per_connection = (held_rss as f64 - idle_rss as f64) / count as f64;
    report.add(
        Row::new(
            SCENARIO,
            name("server RSS per connection"),
            size(per_connection),
        )
        .baseline(format!("idle server {}", size(idle_rss as f64)))
        .target(
            format!("≤ {}", size(MAX_RSS_PER_CONNECTION)),
            per_connection <= MAX_RSS_PER_CONNECTION,
        ),
    );
    report.add(Row::new(
        SCENARIO,
        name("server RSS, idle → holding them"),
        format!("{} → {}", size(idle_rss as f64), size(held_rss as f64)),
    ));
    report.add(Row::new(
        SCENARIO,
        name("simulated client memory per client (benchmark process)"),
        size((bench_after as f64 - bench_before as f64) / count as f64),
    ));

    // The restart: kill, start again on the same port, wait for everyone.
    let killed = Instant::now();
    server.kill().await?;
    let second_log = setup.dir.join(format!("server-{count}-restarted.log"));
    let (server, _) = NodeProcess::start_server(&setup.server_files, pipe, &second_log)
        .await
        .context("restarting the server node on the same port")?;
    let listening = Instant::now();
    sampler.retarget(server.http);
    let back = sampler.wait_for(count, listening, plan.connect_bound).await;
    let now = Instant::now();
    let attempts = collector.total(
        metrics::Counter::ConnectAttempt.statsd_name(),
        killed.into_std(),
        now.into_std(),
    );
    let peak_attempts = collector.peak_per_second(
        metrics::Counter::ConnectAttempt.statsd_name(),
        killed.into_std(),
        now.into_std(),
    );
    let value = match back {
        Some(back) => format!(
            "{:.2} s after the kill (server listening again after {} ms)",
            (back - killed).as_secs_f64(),
            (listening - killed).as_millis()
        ),
        None => format!(
            "not within {:?}: {} of {count} back",
            plan.connect_bound,
            sampler.latest().unwrap_or(0)
        ),
    };
    report.add(
        Row::new(SCENARIO, name("all back after a server restart"), value).target(
            format!("all within {} s", RECONNECT_TARGET.as_secs()),
            back.is_some_and(|back| back - killed <= RECONNECT_TARGET),
        ),
    );
    report.add(Row::new(
        SCENARIO,
        name("peak admissions/s after the restart (server)"),
        thousands(sampler.peak_rise_per_second(listening, now)),
    ));
    report.add(Row::new(
        SCENARIO,
        name("peak connection attempts/s after the restart (clients)"),
        format!(
            "{} ({} attempts in all, {:.2} per client)",
            thousands(peak_attempts as f64),
            thousands(attempts as f64),
            attempts as f64 / count as f64
        ),
    ));
    add_refusals(report, &name, &first_log);
    add_refusals(report, &name, &second_log);

    fleet.stop().await;
    server.stop().await?;
    Ok(())
}

/// A row counting the server's refusals of valid clients in `log`.
fn add_refusals(report: &mut Report, name: &dyn Fn(&str) -> String, log: &Path) {
    let which = if log.to_string_lossy().contains("restarted") {
        "refused by the restarted server"
    } else {
        "refused by the server"
    };
    let counts: Vec<(&str, usize)> = REFUSALS
        .iter()
        .map(|needle| (*needle, count_in_log(log, needle)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let value = if counts.is_empty() {
        "0".to_owned()
    } else {
        let first = first_line_with(log, &REFUSALS).unwrap_or_default();
        let breakdown: Vec<String> = counts
            .iter()
            .map(|(what, n)| format!("{what}: {n}"))
            .collect();
        format!(
            "{total} ({}; first: {})",
            breakdown.join(", "),
            clip(&first, 160)
        )
    };
    report.add(Row::new(SCENARIO, name(which), value).target("0", total == 0));
}

fn first_line_with(log: &Path, needles: &[&str]) -> Option<String> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .find(|line| needles.iter().any(|needle| line.contains(needle)))
        .map(str::to_owned)
}
