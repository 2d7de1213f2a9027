//! Idle client nodes held by one server node: the server's memory per
//! connection, how long a storm of clients takes to get in, and how they
//! come back after the server is killed and started again on the same port.
//!
//! The server node runs in a child process, so its resident memory is its
//! own; the clients (see [`crate::fleet`]) run in this process, or beyond
//! [`MAX_PER_PROCESS`] in child processes ([`crate::fleet_process`]), and
//! use pipe-core's real reconnect loop with the default backoff, each from
//! one of several loopback source addresses. Server-side
//! admissions are sampled from `/_pipe/health` every 100 ms; client-side
//! attempts are counted from the clients' own statsd counters.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::process::count_in_log;
use restpipe_tests::{LOOPBACK, Metrics, StatsdSettings, metrics};
use tokio::time::Instant;

use crate::fleet::{Fleet, FleetSetup, SOURCE_ADDRESSES};
use crate::fleet_process::{FleetProcesses, MAX_PER_PROCESS};
use crate::identities::Identities;
use crate::node_process::NodeProcess;
use crate::plan::{Plan, SPARE_FILES};
use crate::probe::PeerSampler;
use crate::procfs;
use crate::report::{Report, Row, clip, size, thousands};
use crate::statsd::Collector;

const SCENARIO: &str = "connections";
/// Target: server memory per idle connection.
const MAX_RSS_PER_CONNECTION: f64 = 24.0 * 1024.0;
/// Target: connections one server holds.
const HELD_TARGET: usize = 100_000;
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

/// What the server logs when a caller hangs up before its TLS handshake
/// finished: nothing was refused.
pub(crate) const ABANDONED: &str = "TLS handshake abandoned";

/// Runs the scenario for each client count of the plan that one server
/// process can hold here; a count that cannot is reported as not run, and
/// the largest count that fits runs in its place.
pub fn run(plan: &Plan, identities: &mut Identities, report: &mut Report) -> anyhow::Result<()> {
    let counts = counts_to_run(plan, report);
    let in_process = counts
        .iter()
        .copied()
        .filter(|count| *count <= MAX_PER_PROCESS)
        .max()
        .unwrap_or(0);
    let setup = FleetSetup::prepare(plan, identities, in_process)?;
    let authority = identities.write_authority()?;
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut outcome = Ok(());
    for count in counts {
        eprintln!("   {count} clients");
        outcome = driver.block_on(measure(plan, &setup, &authority, count, report));
        if outcome.is_err() {
            break;
        }
    }
    setup.shutdown();
    report.note(format!(
        "Connections: the server node runs in a child process (this binary, `node-for-bench`, started through `pipe_core::launch::start_server` with default settings, `max_connections` raised to the client count where that is above the default 20,000); its memory is `VmRSS` from `/proc/<pid>/status`, read after 2 s of rest before and after the clients connect, the difference divided by the count. The simulated clients are real client nodes without their local HTTP front (`pipe_core::run_client`, one `Node` and one identity each, default backoff), up to {per_process} in the benchmark process on a runtime of their own, more in child processes of {per_process} each; they share the machine's cores with the server, and connect from {SOURCE_ADDRESSES} loopback source addresses (127.0.0.2 onward, pipe-core's `source_address`) so that no source runs out of ephemeral ports. All dial at once. After the server is killed (SIGKILL) and started again on the same port, the time until its `/_pipe/health` shows every client again is measured from the kill; admissions/s are the steepest one-second rise of that count (sampled every 100 ms), attempts/s come from the clients' own `client.connect.new.tick` statsd counters.",
        per_process = thousands(MAX_PER_PROCESS as f64),
    ));
    outcome
}

/// The plan's client counts that one server process can hold here (a
/// socket each, within the open-file limit), plus, if some cannot, the
/// largest that can (rounded down to a thousand); a row says why each
/// that cannot is not run.
fn counts_to_run(plan: &Plan, report: &mut Report) -> Vec<usize> {
    let max_held = plan.max_held();
    let (mut counts, too_many): (Vec<usize>, Vec<usize>) = plan
        .client_counts
        .iter()
        .partition(|count| **count <= max_held);
    let instead = if max_held >= 1_000 {
        max_held / 1_000 * 1_000
    } else {
        max_held
    };
    let runs_instead = !too_many.is_empty() && counts.iter().all(|count| *count < instead);
    if runs_instead {
        counts.push(instead);
    }
    for count in too_many {
        let mut value = format!(
            "not run: a process may open at most {} files here (hard `RLIMIT_NOFILE` limit; raising it needs `CAP_SYS_RESOURCE`), and the server node needs one per client and {SPARE_FILES} more: {}",
            thousands(plan.open_files as f64),
            thousands((count as u64 + SPARE_FILES) as f64),
        );
        if runs_instead {
            value.push_str(&format!(
                "; {} clients run instead",
                thousands(instead as f64)
            ));
        }
        report.add(
            Row::new(
                SCENARIO,
                format!("{} clients: all connected in", thousands(count as f64)),
                value,
            )
            .target(format!("{} held", thousands(HELD_TARGET as f64)), false),
        );
    }
    counts
}

/// The simulated clients of one measurement: in this process up to
/// [`MAX_PER_PROCESS`], beyond that in child processes (this process could
/// not open a socket for each).
enum Clients {
    /// A fleet on the setup's runtime, in this process.
    Here(Fleet),
    /// Fleets in child processes.
    Children(FleetProcesses),
}

impl Clients {
    /// Starts `count` clients dialling the server at `pipe`, reporting to
    /// `collector`; returns them, the memory of the processes they run in
    /// before they dialled, and when they dialled.
    async fn dial(
        setup: &FleetSetup,
        authority: &(PathBuf, PathBuf),
        count: usize,
        pipe: SocketAddr,
        collector: &Collector,
    ) -> anyhow::Result<(Self, u64, Instant)> {
        if count <= MAX_PER_PROCESS {
            let metrics = Metrics::new(&StatsdSettings {
                host: "127.0.0.1".to_owned(),
                port: collector.addr().port(),
                prefix: String::new(),
            })?;
            let before = procfs::rss(procfs::own_pid())?;
            let dialled = Instant::now();
            let identities = &setup.clients[..count];
            let fleet = Fleet::start(setup.runtime.handle(), identities, 0, &[pipe], &metrics);
            return Ok((Self::Here(fleet), before, dialled));
        }
        let label = format!("connections-{count}");
        let mut children = FleetProcesses::start(
            authority,
            count,
            &[pipe],
            Some(collector.addr()),
            &setup.dir,
            &label,
        )
        .await?;
        let before = children.rss()?;
        let dialled = Instant::now();
        children.dial().await?;
        Ok((Self::Children(children), before, dialled))
    }

    /// Resident memory of the processes the clients run in.
    fn memory(&self) -> anyhow::Result<u64> {
        match self {
            Self::Here(_) => procfs::rss(procfs::own_pid()),
            Self::Children(children) => children.rss(),
        }
    }

    /// Where the clients run, for the report.
    fn place(&self) -> &'static str {
        match self {
            Self::Here(_) => "benchmark process",
            Self::Children(_) => "child processes",
        }
    }

    /// How many are connected, where that can be seen from here.
    fn connected(&self) -> Option<usize> {
        match self {
            Self::Here(fleet) => Some(fleet.connected()),
            Self::Children(_) => None,
        }
    }

    /// Stops them all; they drain and close their connections.
    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Here(fleet) => {
                fleet.stop().await;
                Ok(())
            }
            Self::Children(children) => children.stop().await,
        }
    }
}

/// Connects `count` clients to a fresh server, measures, restarts the
/// server, measures the return, and stops everything.
async fn measure(
    plan: &Plan,
    setup: &FleetSetup,
    authority: &(PathBuf, PathBuf),
    count: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let name = |what: &str| format!("{} clients: {what}", thousands(count as f64));
    let collector = Collector::start()?;

    let first_log = setup.dir.join(format!("server-{count}-first.log"));
    let (server, pipe) =
        NodeProcess::start_server_holding(&setup.server_files, LOOPBACK, count, &first_log).await?;
    tokio::time::sleep(SETTLE).await;
    let idle_rss = server.rss()?;

    let sampler = PeerSampler::start(server.http);
    let (clients, clients_before, dialled) =
        Clients::dial(setup, authority, count, pipe, &collector).await?;
    let all_in = sampler.wait_for(count, dialled, plan.connect_bound).await;
    let Some(all_in) = all_in else {
        let seen = clients
            .connected()
            .map(|connected| format!("{connected} of {count}, "))
            .unwrap_or_default();
        report.add(
            Row::new(
                SCENARIO,
                name("all connected"),
                format!(
                    "not within {:?}: {seen}server {}",
                    plan.connect_bound,
                    sampler.latest().unwrap_or(0)
                ),
            )
            .target(format!("{} held", thousands(HELD_TARGET as f64)), false),
        );
        add_refusals(report, &name, &first_log);
        clients.stop().await?;
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
    let clients_after = clients.memory()?;
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
        name(&format!(
            "simulated client memory per client ({})",
            clients.place()
        )),
        size((clients_after as f64 - clients_before as f64) / count as f64),
    ));

    // The restart: kill, start again on the same port, wait for everyone.
    let killed = Instant::now();
    server.kill().await?;
    let second_log = setup.dir.join(format!("server-{count}-restarted.log"));
    let (server, _) =
        NodeProcess::start_server_holding(&setup.server_files, pipe, count, &second_log)
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

    clients.stop().await?;
    server.stop().await?;
    Ok(())
}

/// A row counting the server's refusals of valid clients in `log`.
fn add_refusals(report: &mut Report, name: &dyn Fn(&str) -> String, log: &Path) {
    let whose = if log.to_string_lossy().contains("restarted") {
        "the restarted server"
    } else {
        "the server"
    };
    let which = format!("refused by {whose}");
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
    report.add(Row::new(SCENARIO, name(&which), value).target("0", total == 0));
    // Not refusals: a client whose own handshake deadline passed on the
    // crowded machine hung up, and dialled again.
    let abandoned = count_in_log(log, ABANDONED);
    report.add(Row::new(
        SCENARIO,
        name(&format!(
            "handshakes with {whose} that the clients abandoned (and dialled again)"
        )),
        thousands(abandoned as f64),
    ));
}

fn first_line_with(log: &Path, needles: &[&str]) -> Option<String> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .find(|line| needles.iter().any(|needle| line.contains(needle)))
        .map(str::to_owned)
}
