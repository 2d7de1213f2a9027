//! The pipe's rows at one concurrency in one direction, each beside the
//! plain hyper baseline, and its targets against the baseline and the
//! peers ([`Peers`]) measured in the same run.

use std::time::Duration;

use super::peers::Peers;
use super::{Costed, Route, SCENARIO};
use crate::loadgen::Outcome;
use crate::plan::Plan;
use crate::report::{Report, Row, Verdict, latency, percent, thousands};

/// Throughput target at the highest concurrency: this share of baseline.
const MIN_RATE_RATIO: f64 = 0.7;
/// Latency a pipe hop may add to the baseline median at concurrency 1.
const MAX_ADDED_P50: Duration = Duration::from_micros(100);
/// Latency the pipe may add to the raw TLS ping-pong's median at
/// concurrency 1.
const MAX_P50_OVER_PING_PONG: Duration = Duration::from_micros(40);
/// p99 bound at concurrency 1.
const MAX_P99: Duration = Duration::from_millis(1);

/// Adds the rows of `route` at `concurrency`.
pub(super) fn add(
    report: &mut Report,
    plan: &Plan,
    route: Route,
    concurrency: usize,
    (pipe_cost, baseline_cost): (&Costed, &Costed),
    peers: &Peers,
) {
    let (pipe, baseline) = (&pipe_cost.outcome, &baseline_cost.outcome);
    let name = |what: &str| format!("{}, concurrency {concurrency}: {what}", route.label());
    let highest = plan.concurrencies.iter().max() == Some(&concurrency);
    let lowest = plan.concurrencies.iter().min() == Some(&concurrency);

    let ratio = pipe.rate() / baseline.rate().max(1e-9);
    let mut rate = Row::new(
        SCENARIO,
        name("requests/s"),
        format!(
            "{} ({} of baseline)",
            thousands(pipe.rate()),
            percent(pipe.rate(), baseline.rate())
        ),
    )
    .baseline(thousands(baseline.rate()));
    if highest {
        rate = rate.target(
            format!("≥ {:.0}% of baseline", MIN_RATE_RATIO * 100.0),
            ratio >= MIN_RATE_RATIO,
        );
    }
    report.add(rate);
    if highest {
        report.add(against_nats(
            name("requests/s against NATS"),
            pipe,
            peers,
            concurrency,
        ));
    }

    let (p50, base_p50) = (pipe.quantile(0.5), baseline.quantile(0.5));
    let mut median = Row::new(SCENARIO, name("p50"), latency(p50)).baseline(latency(base_p50));
    if lowest {
        median = median.target(
            format!("≤ baseline + {}", latency(MAX_ADDED_P50)),
            p50 <= base_p50 + MAX_ADDED_P50,
        );
    }
    report.add(median);
    if lowest {
        let floor = peers.ping_pong.quantile(0.5);
        report.add(
            Row::new(
                SCENARIO,
                name("p50 against raw TLS ping-pong"),
                format!("{} (+{})", latency(p50), latency(p50.saturating_sub(floor))),
            )
            .baseline(format!("raw TLS ping-pong {}", latency(floor)))
            .target(
                format!("≤ raw TLS ping-pong + {}", latency(MAX_P50_OVER_PING_PONG)),
                pipe.ok > 0 && p50 <= floor + MAX_P50_OVER_PING_PONG,
            ),
        );
    }

    let p99 = pipe.quantile(0.99);
    let mut tail =
        Row::new(SCENARIO, name("p99"), latency(p99)).baseline(latency(baseline.quantile(0.99)));
    if lowest {
        tail = tail.target(format!("< {}", latency(MAX_P99)), p99 < MAX_P99);
    }
    report.add(tail);

    report.add(
        Row::new(SCENARIO, name("p99.9"), latency(pipe.quantile(0.999)))
            .baseline(latency(baseline.quantile(0.999))),
    );
    let cost = |costed: &Costed| {
        format!(
            "{} ({:.2} cores busy)",
            latency(costed.cpu_per_request()),
            costed.cores_busy()
        )
    };
    report.add(
        Row::new(
            SCENARIO,
            name("CPU per request, all processes"),
            cost(pipe_cost),
        )
        .baseline(cost(baseline_cost)),
    );

    if pipe.failed > 0 || baseline.failed > 0 || pipe.ok == 0 {
        report.add(
            Row::new(SCENARIO, name("failed requests"), pipe.failures())
                .baseline(baseline.failures())
                .target("0", pipe.failed == 0 && pipe.ok > 0),
        );
    }
}

/// The pipe's requests per second at `concurrency` with `workers` worker
/// threads per node, beside the baseline's (one per core): for the
/// analysis, not judged.
pub(super) fn add_sharing_cores(
    report: &mut Report,
    route: Route,
    concurrency: usize,
    workers: usize,
    (pipe, baseline): (&Costed, &Costed),
) {
    let (rate, base) = (pipe.outcome.rate(), baseline.outcome.rate());
    let threads = if workers == 1 { "thread" } else { "threads" };
    report.add(
        Row::new(
            SCENARIO,
            format!(
                "{}, concurrency {concurrency}, nodes with {workers} worker {threads} each: requests/s",
                route.label()
            ),
            format!(
                "{} ({} of baseline; CPU {} per request)",
                thousands(rate),
                percent(rate, base),
                latency(pipe.cpu_per_request())
            ),
        )
        .baseline(thousands(base)),
    );
}

/// The pipe's requests per second beside NATS request-reply's at the same
/// concurrency; not judged where NATS was not measured.
fn against_nats(figure: String, pipe: &Outcome, peers: &Peers, concurrency: usize) -> Row {
    const TARGET: &str = "> NATS request-reply";
    match (peers.nats_rate(concurrency), peers.nats_missing()) {
        (Some(nats), _) => Row::new(
            SCENARIO,
            figure,
            format!(
                "{} ({:.2}× NATS)",
                thousands(pipe.rate()),
                pipe.rate() / nats.max(1e-9)
            ),
        )
        .baseline(format!("NATS request-reply {}", thousands(nats)))
        .target(TARGET, pipe.ok > 0 && pipe.rate() > nats),
        (None, why) => Row::new(SCENARIO, figure, thousands(pipe.rate()))
            .baseline(format!(
                "NATS request-reply {}",
                why.unwrap_or("not measured at this concurrency")
            ))
            .target_unjudged(TARGET, Verdict::NotRun),
    }
}

/// The design's floor ([`crate::relay`]) at `concurrency`, its two ends
/// with `workers` worker threads each (`None`: one per core), beside the
/// baseline and the pipe of the same rounds: for the analysis, not judged.
pub(super) fn add_relay(
    report: &mut Report,
    (concurrency, workers): (usize, Option<usize>),
    relay: &Costed,
    (pipe, baseline): (&Costed, &Costed),
) {
    let threads = match workers {
        None => String::new(),
        Some(1) => ", ends with 1 worker thread each".to_owned(),
        Some(workers) => format!(", ends with {workers} worker threads each"),
    };
    let name = |what: &str| format!("{RELAY_LABEL}, concurrency {concurrency}{threads}: {what}");
    let (rate, base) = (relay.outcome.rate(), baseline.outcome.rate());
    report.add(
        Row::new(
            SCENARIO,
            name("requests/s"),
            format!(
                "{} ({} of baseline; the pipe made {} of it; CPU {} per request, the pipe's {})",
                thousands(rate),
                percent(rate, base),
                percent(pipe.outcome.rate(), rate),
                latency(relay.cpu_per_request()),
                latency(pipe.cpu_per_request()),
            ),
        )
        .baseline(thousands(base)),
    );
    report.add(
        Row::new(SCENARIO, name("p50"), latency(relay.outcome.quantile(0.5)))
            .baseline(latency(baseline.outcome.quantile(0.5))),
    );
    if relay.outcome.failed > 0 || relay.outcome.ok == 0 {
        report.add(
            Row::new(SCENARIO, name("failed requests"), relay.outcome.failures())
                .target("0", relay.outcome.failed == 0 && relay.outcome.ok > 0),
        );
    }
}

/// How the relay's rows are named.
const RELAY_LABEL: &str = "minimal relay of the pipe's shape (the design's floor)";
