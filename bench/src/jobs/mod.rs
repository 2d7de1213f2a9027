//! Asynchronous jobs (`Prefer: respond-async`): how fast a server node
//! accepts them durably, how fast it delivers a backlog to a client that
//! connects, what a large queue costs in memory, and what an asynchronous
//! round trip adds to the synchronous request.
//!
//! Every node runs in a child process with a state directory on the disk
//! the benchmark's temporary directory is on (or [`disk::STATE_PARENT_VAR`]),
//! each phase with a store of its own. The baseline of the store's figures
//! is the disk: page writes each followed by `fdatasync` (what a commit
//! ends with), one at a time, timed in the same directory in the same run.
//! Submissions come from hyper clients in this process, on a runtime of one
//! thread.

mod accept;
mod backlog;
mod disk;
mod queue;
mod submit;

use std::path::{Path, PathBuf};
use std::time::Duration;

use restpipe_tests::{CertFiles, LOOPBACK, Role, SERVER_NAME};

use self::submit::JobsStatus;
use crate::identities::Identities;
use crate::node_process::{NodeProcess, Placement};
use crate::plan::Plan;
use crate::procfs;
use crate::report::{Report, Row, latency, thousands};

const SCENARIO: &str = "jobs";
/// The client node of the round trips and the backlog.
const CLIENT_NAME: &str = "bench-jobs-client";
/// Workers submitting a backlog or a large queue.
const FILL_CONCURRENCY: usize = 64;
/// Target of the issue: jobs accepted per second at the highest
/// concurrency, on a 2-core machine.
const MIN_ACCEPT_RATE: f64 = 5_000.0;

/// What every phase needs.
struct Setup<'a> {
    plan: &'a Plan,
    /// Where node logs and identity files go.
    logs: &'a Path,
    /// Where the phases' state directories go.
    state_root: &'a Path,
    server_files: CertFiles,
    client_files: CertFiles,
    disk: disk::DiskBaseline,
}

impl Setup<'_> {
    /// A fresh state directory for `phase`.
    fn state_dir(&self, phase: &str) -> PathBuf {
        self.state_root.join(phase)
    }

    /// The disk's durable appends, as a baseline cell.
    fn disk_cell(&self) -> String {
        let growing = self.disk.growing;
        format!(
            "disk: {} appends + fdatasync/s, one at a time (p50 {})",
            thousands(growing.rate),
            latency(growing.p50)
        )
    }
}

/// Runs the scenario and adds its rows to `report`.
pub fn run(plan: &Plan, identities: &mut Identities, report: &mut Report) -> anyhow::Result<()> {
    // One thread: the load generator; the nodes are child processes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let root = disk::state_root()?;
    let file_system = disk::file_system(root.path()).unwrap_or_else(|| "unknown".to_owned());
    let disk = disk::disk_baseline(root.path(), plan.disk_samples)?;
    let cell = |writes: disk::DurableWrites| {
        format!(
            "{}/s (p50 {}, p99 {})",
            thousands(writes.rate),
            latency(writes.p50),
            latency(writes.p99)
        )
    };
    report.add(Row::new(
        SCENARIO,
        format!("baseline: 4 KiB write + fdatasync, one at a time, on the stores' disk ({file_system}): rewriting a page; appending one"),
        format!("{}; {}", cell(disk.in_place), cell(disk.growing)),
    ));
    let setup = Setup {
        plan,
        logs: identities.dir(),
        state_root: root.path(),
        server_files: identities.write_files(SERVER_NAME, Role::Server)?,
        client_files: identities.write_files(CLIENT_NAME, Role::Client)?,
        disk,
    };
    let outcome = runtime.block_on(async {
        accept::run(&setup, report).await?;
        backlog::run(&setup, report).await?;
        queue::run(&setup, report).await
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    report.note(note(plan, &file_system));
    outcome
}

/// How the scenario measures, under the table.
fn note(plan: &Plan, file_system: &str) -> String {
    format!(
        "Jobs: every node runs in a child process (`node-for-bench`, default settings but `--state-dir` and a `max_queued_jobs` raised to hold each phase's jobs for one peer), its store on {file_system} in a directory of its own per phase; submissions are `POST /client/<name>/{noun}` with a {body} B JSON body and `Prefer: respond-async` on the server node's front, from hyper clients on one thread, each worker on a keep-alive connection. Acceptance: {load} s of closed-loop load after {warmup} s of warm-up at each concurrency, the client never connected; commits per job is the growth of `jobs.commits` in `/_pipe/status` over the jobs accepted (warm-up included); CPU is the server process's `utime + stime` over the same jobs. Round trip: a server node and a client node (with its own state directory, so the handler runs once per job), at concurrency 1 on one connection: submit, then `GET` the `Location` with `?wait={wait}` until the result, against the same POST without `Prefer` through the same two nodes; the in-node figure is the job's `updated - created` from its status. Backlog: then the client node is stopped, {backlog} jobs are queued for it (at concurrency {fill}) and it starts again; delivery time runs from the server seeing it connected to `jobs.by_state` (polled every 100 ms) counting every one of them ended, or the bound of {bound} s. Large queue: {queued} jobs queued at concurrency {fill} for one client that never connects, the server's `VmRSS` read after each quarter, the store's size on disk at the end; then the node is stopped and started again on the same store.",
        noun = submit::NOUN,
        body = submit::work_request(true).body.len(),
        load = plan.load.as_secs_f64(),
        warmup = plan.warmup.as_secs_f64(),
        backlog = thousands(plan.jobs_backlog as f64),
        queued = thousands(plan.jobs_queued as f64),
        fill = FILL_CONCURRENCY,
        wait = submit::POLL_WAIT_SECONDS,
        bound = plan.jobs_bound.as_secs(),
    )
}

/// Starts a server node keeping its jobs in the phase's state directory,
/// its queues large enough for `jobs` jobs per peer.
async fn start_server(setup: &Setup<'_>, phase: &str, jobs: u64) -> anyhow::Result<NodeProcess> {
    NodeProcess::start_keeping_jobs(
        &setup.server_files,
        Placement::Server { listen: LOOPBACK },
        &setup.state_dir(phase),
        jobs.max(pipe_core::DEFAULT_MAX_QUEUED_JOBS),
        &setup.logs.join(format!("server-jobs-{phase}.log")),
    )
    .await
}

/// Commits between two status reads, if the node shows them.
fn commits_between(before: &JobsStatus, after: &JobsStatus) -> Option<u64> {
    Some(after.commits?.saturating_sub(before.commits?))
}

/// `commits` per job of `jobs`, as a cell.
fn per_job_cell(commits: Option<u64>, jobs: u64) -> String {
    match commits {
        Some(commits) => format!(
            "{:.3} ({} commits for {} jobs)",
            commits as f64 / jobs.max(1) as f64,
            thousands(commits as f64),
            thousands(jobs as f64)
        ),
        None => "not shown: this node's `/_pipe/status` has no `jobs.commits`".to_owned(),
    }
}

/// CPU per job and cores kept busy, as a cell.
fn cpu_cell(cpu: Duration, jobs: u64, wall: Duration) -> String {
    format!(
        "{} per job ({:.2} cores busy)",
        latency(cpu.div_f64(jobs.max(1) as f64)),
        procfs::cores_busy(cpu, wall)
    )
}
