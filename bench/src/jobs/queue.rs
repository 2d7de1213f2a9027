//! A large queue: a server node's memory while jobs for one client that
//! never connects pile up in its store, the store's size, and a restart on
//! it.

use std::time::Duration;

use tokio::time::Instant;

use super::submit::{self, Submitted};
use super::{FILL_CONCURRENCY, SCENARIO, Setup, disk, start_server};
use crate::node_process::NodeProcess;
use crate::report::{Report, Row, clip, latency, size, thousands};

/// Rest before a node's memory at rest is read.
const SETTLE: Duration = Duration::from_secs(1);
/// Parts the queue is filled in, reading memory after each.
const QUARTERS: u64 = 4;
/// The client the queue is for; it never connects.
const QUEUE_PEER: &str = "bench-queue-client";

/// Memory of a server node while a queue for one offline client grows on
/// disk, its store's size, and a restart on that store.
pub(super) async fn run(setup: &Setup<'_>, report: &mut Report) -> anyhow::Result<()> {
    let plan = setup.plan;
    let server = start_server(setup, "queue", plan.jobs_queued).await?;
    let filled = fill(setup, &server).await;
    let stopped = server.stop().await;
    let filled = filled?;
    stopped?;
    let restart = Instant::now();
    let restarted = start_server(setup, "queue", plan.jobs_queued).await?;
    let ready = restart.elapsed();
    let pending = submit::jobs_status(restarted.http).await?.pending;
    tokio::time::sleep(SETTLE).await;
    let rss = restarted.rss()?;
    restarted.stop().await?;
    add_rows(report, plan.jobs_queued, &filled);
    report.add(Row::new(
        SCENARIO,
        queue_figure(plan.jobs_queued, "restart on that store"),
        format!(
            "ready in {}, {} jobs pending, RSS {} after {} s",
            latency(ready),
            thousands(pending as f64),
            size(rss as f64),
            SETTLE.as_secs()
        ),
    ));
    Ok(())
}

/// What filling the queue measured.
struct Filled {
    submitted: Submitted,
    /// Resident memory at rest before the first job.
    idle: u64,
    /// Jobs accepted per second in each quarter.
    rates: Vec<f64>,
    /// Resident memory after each quarter.
    rss: Vec<u64>,
    /// Peak resident memory.
    peak: u64,
    /// Bytes the state directory takes on disk, and the store file's length.
    on_disk: u64,
    file_length: u64,
}

/// Queues the plan's jobs on `server` in quarters, reading its memory
/// after each.
async fn fill(setup: &Setup<'_>, server: &NodeProcess) -> anyhow::Result<Filled> {
    let plan = setup.plan;
    tokio::time::sleep(SETTLE).await;
    let peers = [QUEUE_PEER.to_owned()];
    let part = plan.jobs_queued.div_ceil(QUARTERS);
    let mut filled = Filled {
        submitted: Submitted::default(),
        idle: server.rss()?,
        rates: Vec::new(),
        rss: Vec::new(),
        peak: 0,
        on_disk: 0,
        file_length: 0,
    };
    let started = Instant::now();
    let total = &mut filled.submitted;
    for quarter in 0..QUARTERS {
        let first = (quarter * part).min(plan.jobs_queued);
        let count = part.min(plan.jobs_queued - first);
        let left = plan.jobs_bound.saturating_sub(started.elapsed());
        eprintln!(
            "   queueing jobs {}..{}",
            thousands(first as f64),
            thousands((first + count) as f64)
        );
        let done = submit::submit_jobs(server.http, &peers, count, FILL_CONCURRENCY, left).await?;
        total.accepted += done.accepted;
        total.refused += done.refused;
        total.first_refusal = total.first_refusal.take().or(done.first_refusal.clone());
        filled.rates.push(done.rate());
        filled.rss.push(server.rss()?);
        if done.accepted < count {
            break;
        }
    }
    total.took = started.elapsed();
    filled.peak = server.peak()?;
    let state_dir = setup.state_dir("queue");
    filled.on_disk = disk::disk_usage(&state_dir);
    filled.file_length = disk::store_file_len(&state_dir);
    Ok(filled)
}

/// A figure of the queue of `jobs` jobs.
fn queue_figure(jobs: u64, what: &str) -> String {
    format!(
        "queue of {} jobs, client offline: {what}",
        thousands(jobs as f64)
    )
}

fn add_rows(report: &mut Report, jobs: u64, filled: &Filled) {
    let sizes = |values: &[u64]| -> String {
        let cells: Vec<String> = values.iter().map(|&bytes| size(bytes as f64)).collect();
        cells.join(" / ")
    };
    let last = filled.rss.last().copied().unwrap_or(filled.idle);
    report.add(Row::new(
        SCENARIO,
        queue_figure(jobs, "server RSS, idle → queue full (peak)"),
        format!(
            "{} → {} (peak {})",
            size(filled.idle as f64),
            size(last as f64),
            size(filled.peak as f64)
        ),
    ));
    report.add(Row::new(
        SCENARIO,
        queue_figure(jobs, "server RSS after each quarter"),
        sizes(&filled.rss),
    ));
    let total = &filled.submitted;
    let rates: Vec<String> = filled.rates.iter().map(|&rate| thousands(rate)).collect();
    let mut accepted = format!(
        "{} jobs/s by quarter; {} accepted in {:.1} s",
        rates.join(" / "),
        thousands(total.accepted as f64),
        total.took.as_secs_f64()
    );
    if total.refused > 0 {
        accepted.push_str(&format!(
            "; {} refused, first: {}",
            total.refused,
            clip(total.first_refusal.as_deref().unwrap_or(""), 100)
        ));
    }
    report.add(Row::new(
        SCENARIO,
        queue_figure(jobs, &format!("accepted at concurrency {FILL_CONCURRENCY}")),
        accepted,
    ));
    report.add(Row::new(
        SCENARIO,
        queue_figure(jobs, "store on disk"),
        format!(
            "{} ({} per job; file length {})",
            size(filled.on_disk as f64),
            size(filled.on_disk as f64 / total.accepted.max(1) as f64),
            size(filled.file_length as f64)
        ),
    ));
}
