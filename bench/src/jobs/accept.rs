//! Acceptance: jobs a server node takes per second, each on disk before
//! its 202, while the client they are for is not connected.

use std::time::Duration;

use super::submit;
use super::{
    MIN_ACCEPT_RATE, SCENARIO, Setup, commits_between, cpu_cell, per_job_cell, start_server,
};
use crate::loadgen::{self, Load, Outcome};
use crate::procfs;
use crate::report::{Report, Row, latency, thousands};

/// Jobs accepted per second at each concurrency, by a server whose client
/// is not connected: every job is queued on disk before its 202.
pub(super) async fn run(setup: &Setup<'_>, report: &mut Report) -> anyhow::Result<()> {
    let plan = setup.plan;
    // More than the fastest conceivable node accepts in the load's time.
    let room = 1_000_000;
    let server = start_server(setup, "accept", room).await?;
    for &concurrency in &plan.concurrencies {
        let peer = format!("bench-offline-c{concurrency}");
        eprintln!("   accepting jobs at concurrency {concurrency}");
        let before = submit::jobs_status(server.http).await?;
        let cpu_before = [server.cpu_time()?, procfs::cpu_time(procfs::own_pid())?];
        let load = Load {
            addr: server.http,
            path: submit::work_path(&peer),
            shape: submit::work_request(true),
            concurrency,
            warmup: plan.warmup,
            duration: plan.load,
            stop: None,
        };
        let outcome = loadgen::run(&load).await?;
        let cpu_after = [server.cpu_time()?, procfs::cpu_time(procfs::own_pid())?];
        let cpu = [0, 1].map(|i| cpu_after[i].saturating_sub(cpu_before[i]));
        let after = submit::jobs_status(server.http).await?;
        let highest = plan.concurrencies.iter().max() == Some(&concurrency);
        let accepted = Accepted {
            concurrency,
            outcome,
            commits: commits_between(&before, &after),
            cpu,
        };
        add_acceptance_rows(setup, report, &accepted, highest);
    }
    server.stop().await
}

/// What one acceptance load measured.
struct Accepted {
    concurrency: usize,
    outcome: Outcome,
    /// Commits during the load, if the node shows them.
    commits: Option<u64>,
    /// CPU during the load: the server node, this process (the load
    /// generator).
    cpu: [Duration; 2],
}

fn add_acceptance_rows(setup: &Setup<'_>, report: &mut Report, accepted: &Accepted, highest: bool) {
    let Accepted {
        concurrency,
        ref outcome,
        commits,
        cpu,
    } = *accepted;
    let name =
        |what: &str| format!("accepted with the client offline, concurrency {concurrency}: {what}");
    let mut rate =
        Row::new(SCENARIO, name("jobs/s"), thousands(outcome.rate())).baseline(setup.disk_cell());
    if highest {
        rate = rate.target(
            format!("≥ {}", thousands(MIN_ACCEPT_RATE)),
            outcome.rate() >= MIN_ACCEPT_RATE && outcome.failed == 0,
        );
    }
    report.add(rate);
    report.add(
        Row::new(
            SCENARIO,
            name("202 p50 / p99"),
            format!(
                "{} / {}",
                latency(outcome.quantile(0.5)),
                latency(outcome.quantile(0.99))
            ),
        )
        .baseline(format!(
            "append + fdatasync {} / {}",
            latency(setup.disk.growing.p50),
            latency(setup.disk.growing.p99)
        )),
    );
    report.add(Row::new(
        SCENARIO,
        name("commits (fsyncs) per job"),
        per_job_cell(commits, outcome.completed),
    ));
    report.add(Row::new(
        SCENARIO,
        name("CPU"),
        format!(
            "server {}; load generator {}",
            cpu_cell(cpu[0], outcome.completed, outcome.wall),
            cpu_cell(cpu[1], outcome.completed, outcome.wall)
        ),
    ));
    if outcome.failed > 0 || outcome.ok == 0 {
        report.add(
            Row::new(
                SCENARIO,
                name("failed submissions"),
                format!(
                    "{} (first: {})",
                    outcome.failed,
                    outcome.first_failure.as_deref().unwrap_or("none")
                ),
            )
            .target("0", outcome.failed == 0 && outcome.ok > 0),
        );
    }
}
