//! One node of the cluster killed (SIGKILL) while its clients know the
//! other two: the time until the others hold every one of them again,
//! the connection attempts that took (the clients' own statsd counters),
//! and the time until each answers through each of the other nodes (one
//! holds it, the other forwards the request over the backplane).

use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::metrics;
use restpipe_tests::process::count_in_log;
use tokio::time::Instant;

use super::spread::{NODE_IDS, Spread};
use super::{SCENARIO, per_node, sweep, until_held};
use crate::plan::Plan;
use crate::report::{Report, Row, thousands};
use crate::statsd::Collector;

/// Target: every client of the killed node held again this soon (the
/// connections scenario's bound for a restarted server).
const RECONNECT_TARGET: Duration = Duration::from_secs(60);
/// What a server node logs when it turns a connection away after its
/// handshake began (pipe-core's `server.rs`); handshakes refused before,
/// past the admission bounds, are closed without a line.
const REFUSALS: [&str; 4] = [
    "TLS handshake refused",
    "TLS handshake timed out",
    "client refused",
    "pipe handshake failed",
];

/// Kills the last node of `spread` and measures its clients' return;
/// `listed` says which clients it held.
pub(super) async fn run(
    plan: &Plan,
    spread: &mut Spread,
    listed: &[(String, String)],
    collector: &Collector,
    report: &mut Report,
) -> anyhow::Result<()> {
    let victim_id = NODE_IDS[NODE_IDS.len() - 1];
    let moved: Vec<String> = listed
        .iter()
        .filter(|(_, node)| node == victim_id)
        .map(|(name, _)| name.clone())
        .collect();
    let prefix = spread.figure(&format!(
        "{victim_id} killed, its {} clients moving: ",
        thousands(moved.len() as f64)
    ));
    let figure = |what: &str| format!("{prefix}{what}");
    let victim = spread.nodes.pop().context("no node to kill")?;
    eprintln!("   killing {victim_id}, holding {} clients", moved.len());
    let killed = Instant::now();
    victim.kill().await?;

    let fronts = spread.fronts();
    let back = until_held(&fronts, spread.clients, plan.connect_bound).await;
    let Some((back_at, held)) = back else {
        report.add(
            Row::new(
                SCENARIO,
                figure("all held by the other nodes"),
                format!("not within {:?}", plan.connect_bound),
            )
            .target(
                format!("all within {} s", RECONNECT_TARGET.as_secs()),
                false,
            ),
        );
        return Ok(());
    };
    let back = Back {
        killed,
        back_at,
        held,
        moved: moved.len(),
    };
    add_return_rows(report, &figure, collector, &back);

    // Through every surviving node: one of them holds the client, so the
    // other forwards it over the backplane.
    let targets: Vec<sweep::Target> = moved
        .iter()
        .flat_map(|name| fronts.iter().map(|front| (name.clone(), *front)))
        .collect();
    let asked = targets.len();
    let began = Instant::now();
    let swept = sweep::run(targets, plan.connect_bound).await?;
    add_sweep_row(report, &figure, (killed, began), &swept, asked);
    Ok(())
}

/// When the killed node's clients were all held again.
struct Back {
    killed: Instant,
    back_at: Instant,
    /// Clients each surviving node held then.
    held: Vec<usize>,
    /// Clients the killed node held.
    moved: usize,
}

fn add_return_rows(
    report: &mut Report,
    figure: &dyn Fn(&str) -> String,
    collector: &Collector,
    back: &Back,
) {
    let survivor_ids = &NODE_IDS[..NODE_IDS.len() - 1];
    let held: Vec<String> = back.held.iter().map(|n| thousands(*n as f64)).collect();
    let took = back.back_at - back.killed;
    report.add(
        Row::new(
            SCENARIO,
            figure("all held by the other nodes"),
            format!(
                "{:.2} s after the kill (then {})",
                took.as_secs_f64(),
                per_node(survivor_ids, &held)
            ),
        )
        .target(
            format!("all within {} s", RECONNECT_TARGET.as_secs()),
            took <= RECONNECT_TARGET,
        ),
    );
    let (from, to) = (back.killed.into_std(), back.back_at.into_std());
    let attempts = collector.total(metrics::Counter::ConnectAttempt.statsd_name(), from, to);
    let peak = collector.peak_per_second(metrics::Counter::ConnectAttempt.statsd_name(), from, to);
    report.add(Row::new(
        SCENARIO,
        figure("connection attempts until then"),
        format!(
            "{} ({:.2} per moved client; peak {}/s)",
            thousands(attempts as f64),
            attempts as f64 / back.moved.max(1) as f64,
            thousands(peak as f64)
        ),
    ));
}

/// A row counting the connections every node of `spread` (the killed one
/// too: its log stays) logged as refused over the run.
pub(super) fn add_refusals_row(report: &mut Report, spread: &Spread) {
    let counts: Vec<(&str, usize)> = REFUSALS
        .iter()
        .map(|needle| {
            let count = spread
                .logs
                .iter()
                .map(|log| count_in_log(log, needle))
                .sum();
            (*needle, count)
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    let refused: usize = counts.iter().map(|(_, count)| count).sum();
    let breakdown: Vec<String> = counts
        .iter()
        .map(|(what, count)| format!("{what}: {}", thousands(*count as f64)))
        .collect();
    let value = if breakdown.is_empty() {
        "0".to_owned()
    } else {
        format!("{} ({})", thousands(refused as f64), breakdown.join(", "))
    };
    report.add(
        Row::new(
            SCENARIO,
            spread.figure("connections the nodes logged as refused, over the run"),
            value,
        )
        .target("0", refused == 0),
    );
    // Not refusals: callers that hung up before their handshake finished.
    let abandoned: usize = spread
        .logs
        .iter()
        .map(|log| count_in_log(log, crate::connections::ABANDONED))
        .sum();
    report.add(Row::new(
        SCENARIO,
        spread.figure("handshakes the clients abandoned (and dialled again), over the run"),
        thousands(abandoned as f64),
    ));
}

fn add_sweep_row(
    report: &mut Report,
    figure: &dyn Fn(&str) -> String,
    (killed, began): (Instant, Instant),
    swept: &sweep::Swept,
    asked: usize,
) {
    let all = swept.answered == asked;
    let value = match swept.last {
        Some(last) if all => format!(
            "{:.2} s after the kill (asked from {:.2} s on: {} requests in all, {} not 200 and made again{})",
            (last - killed).as_secs_f64(),
            (began - killed).as_secs_f64(),
            thousands((asked as u64 + swept.retries) as f64),
            thousands(swept.retries as f64),
            swept
                .first_failure
                .as_deref()
                .map(|f| format!("; first: {f}"))
                .unwrap_or_default()
        ),
        _ => format!(
            "{} of {} answered{}",
            thousands(swept.answered as f64),
            thousands(asked as f64),
            swept
                .first_failure
                .as_deref()
                .map(|f| format!("; first failure: {f}"))
                .unwrap_or_default()
        ),
    };
    report.add(
        Row::new(
            SCENARIO,
            figure("each answered through each of the other nodes"),
            value,
        )
        .target("all", all),
    );
}
