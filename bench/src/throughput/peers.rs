//! What the pipe's requests are judged against besides the plain hyper
//! server, measured in the same run before the nodes start: the raw TLS
//! 1.3 ping-pong (the floor of one request's latency) and NATS
//! request/reply over mutual TLS (the peer a request could take instead).

use restpipe_tests::TlsIdentity;

use super::{SCENARIO, ping_pong};
use crate::loadgen::Outcome;
use crate::nats_peer;
use crate::plan::Plan;
use crate::report::{Report, Row, Verdict, latency, thousands};

/// How the NATS rows are named.
const NATS_LABEL: &str = "NATS request-reply over mutual TLS";
/// How the ping-pong rows are named.
const PING_PONG_LABEL: &str = "raw TLS 1.3 ping-pong";

/// The peers' figures.
pub(super) struct Peers {
    /// The raw TLS ping-pong, at concurrency 1.
    pub(super) ping_pong: Outcome,
    /// NATS request/reply at the plan's lowest and highest concurrency, or
    /// why it was not measured.
    pub(super) nats: Result<Vec<(usize, Outcome)>, String>,
}

impl Peers {
    /// Measures both peers: the ping-pong's answering end on `answerer`
    /// (the nodes' runtime), everything else on `load_runtime`.
    pub(super) fn measure(
        plan: &Plan,
        server: &TlsIdentity,
        client: &TlsIdentity,
        answerer: &tokio::runtime::Handle,
        load_runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Self> {
        eprintln!("   {PING_PONG_LABEL} at concurrency 1");
        let ping_pong = load_runtime.block_on(ping_pong::measure(
            answerer,
            server.server_config()?,
            client.client_config()?,
            plan.warmup,
            plan.load,
        ))?;
        let nats = if nats_peer::installed() {
            load_runtime
                .block_on(nats_loads(plan))
                .map_err(|error| format!("not run: {error:#}"))
        } else {
            Err(nats_peer::NOT_INSTALLED.to_owned())
        };
        Ok(Self { ping_pong, nats })
    }

    /// NATS's requests per second at `concurrency`, if measured.
    pub(super) fn nats_rate(&self, concurrency: usize) -> Option<f64> {
        let loads = self.nats.as_ref().ok()?;
        loads
            .iter()
            .find(|(measured_at, _)| *measured_at == concurrency)
            .map(|(_, outcome)| outcome.rate())
    }

    /// Why NATS was not measured (the cell for its targets), if it was not.
    pub(super) fn nats_missing(&self) -> Option<&str> {
        self.nats.as_ref().err().map(String::as_str)
    }

    /// The peers' own rows.
    pub(super) fn add_rows(&self, report: &mut Report) {
        let ping_pong = |what: &str| format!("{PING_PONG_LABEL}, concurrency 1: {what}");
        report.add(Row::new(
            SCENARIO,
            ping_pong("p50"),
            latency(self.ping_pong.quantile(0.5)),
        ));
        report.add(Row::new(
            SCENARIO,
            ping_pong("p99"),
            latency(self.ping_pong.quantile(0.99)),
        ));
        let loads = match &self.nats {
            Ok(loads) => loads,
            Err(why) => {
                report.add(
                    Row::new(SCENARIO, NATS_LABEL, why.as_str())
                        .target_unjudged("—", Verdict::NotRun),
                );
                return;
            }
        };
        let lowest = loads.iter().map(|(concurrency, _)| *concurrency).min();
        for (concurrency, outcome) in loads {
            let name = |what: &str| format!("{NATS_LABEL}, concurrency {concurrency}: {what}");
            report.add(Row::new(
                SCENARIO,
                name("requests/s"),
                format!("{}{}", thousands(outcome.rate()), failures(outcome)),
            ));
            if Some(*concurrency) == lowest {
                report.add(Row::new(
                    SCENARIO,
                    name("p50"),
                    latency(outcome.quantile(0.5)),
                ));
                report.add(Row::new(
                    SCENARIO,
                    name("p99"),
                    latency(outcome.quantile(0.99)),
                ));
            }
        }
    }
}

/// NATS request/reply at the plan's lowest and highest concurrency, on a
/// `nats-server` started for them and stopped after.
async fn nats_loads(plan: &Plan) -> anyhow::Result<Vec<(usize, Outcome)>> {
    let mut concurrencies: Vec<usize> = [
        plan.concurrencies.iter().min(),
        plan.concurrencies.iter().max(),
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect();
    concurrencies.dedup();
    let nats = nats_peer::start_server().await?;
    let responder = nats_peer::Responder::start(&nats).await;
    let measured = async {
        let _responder = responder?;
        let mut loads = Vec::with_capacity(concurrencies.len());
        for concurrency in concurrencies {
            eprintln!("   {NATS_LABEL} at concurrency {concurrency}");
            let outcome = nats_peer::load(&nats, concurrency, plan.warmup, plan.load).await?;
            loads.push((concurrency, outcome));
        }
        anyhow::Ok(loads)
    }
    .await;
    nats_peer::stop_server(nats).await;
    measured
}

/// `; 3 failed (first: …)`, or nothing when none did.
fn failures(outcome: &Outcome) -> String {
    match outcome.failed {
        0 if outcome.ok > 0 => String::new(),
        0 => "; none answered".to_owned(),
        failed => format!(
            "; {failed} failed (first: {})",
            outcome.first_failure.as_deref().unwrap_or("?")
        ),
    }
}
