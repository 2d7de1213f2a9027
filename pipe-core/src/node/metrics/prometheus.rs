//! The Prometheus side of the metrics: one registry per node, written in
//! the text exposition format by the Prometheus project's own client when
//! scraped. It holds one Prometheus metric for each entry of the table in
//! `names`, the labelled ones fed by the [`Metrics`](super::Metrics)
//! methods whose statsd name carries a value, and the levels read when
//! scraped. Every label value comes from a closed set or is bounded (the
//! handler names: [`MAX_HANDLER_LABELS`] per direction).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{PoisonError, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::names::{
    Counter, Exposed, Gauge, LATENCY_BUCKETS, MAX_HANDLER_LABELS, OTHER_HANDLER, Timing,
};

/// The prefix of every Prometheus metric name (`restpipe_events_sent_total`).
pub const PREFIX: &str = "restpipe";

/// Labels of one fixed pair: `{kind="timeout"}`.
type OneLabel = [(&'static str, &'static str); 1];
/// A gauge of seconds (a mean).
type SecondsGauge = PromGauge<f64, AtomicU64>;
/// How the histograms of a family are made.
type NewHistogram = fn() -> Histogram;

/// Levels read when Prometheus scrapes, from the same places the statsd
/// gauges read theirs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Levels {
    /// Connected peers ([`Gauge::Peers`]).
    pub peers: u64,
    /// Requests in flight, both ways ([`Gauge::InFlight`]).
    pub in_flight: u64,
    /// The job store's, for a node that keeps jobs.
    pub jobs: Option<JobLevels>,
}

/// What a node's job store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobLevels {
    /// Jobs waiting in all peers' queues ([`Gauge::JobsQueued`]).
    pub queued: u64,
    /// Jobs by state (`queued`, `running`, `succeeded`…), every state.
    pub by_state: Vec<(&'static str, u64)>,
}

/// A timing's Prometheus side.
#[derive(Debug)]
enum Seconds {
    /// Each duration observed.
    Histogram(Histogram),
    /// The last value, for a duration that is already a mean.
    Gauge(SecondsGauge),
}

/// Which way a request went, as its time's `direction` label says.
#[derive(Debug, Clone, Copy)]
pub(super) enum Direction {
    /// This node's local caller sent it to the peer (send to reply).
    Sent,
    /// The peer sent it and a handler of this node ran it (handler time).
    Received,
}

/// The labels of a request's time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    direction: &'static str,
    handler: String,
}

/// The registry and a handle on every metric in it.
#[derive(Debug)]
pub(super) struct Prometheus {
    registry: Registry,
    /// By [`Counter`], in its table's order.
    counters: Vec<PromCounter>,
    /// By [`Timing`].
    timings: Vec<Seconds>,
    /// By [`Gauge`].
    gauges: Vec<PromGauge>,
    sent: HandlerTimes,
    received: HandlerTimes,
    send_errors: Family<OneLabel, PromCounter>,
    jobs_ended: Family<OneLabel, PromCounter>,
    http_responses: Family<[(&'static str, u16); 1], PromCounter>,
    jobs: Family<OneLabel, PromGauge>,
}

impl Default for Prometheus {
    fn default() -> Self {
        Self::new()
    }
}

impl Prometheus {
    /// A registry holding every metric, all at zero.
    pub(super) fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let counters = register_counters(&mut registry);
        let timings = Timing::ALL
            .iter()
            .map(|timing| register_timing(&mut registry, timing.exposed()))
            .collect();
        let gauges = Gauge::ALL
            .iter()
            .map(|gauge| {
                let Exposed { name, help, .. } = gauge.exposed();
                let metric = PromGauge::default();
                registry.register(name, help, metric.clone());
                metric
            })
            .collect();
        let durations: Family<RequestLabels, Histogram, NewHistogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS.iter().copied()));
        registry.register(
            "request_duration_seconds",
            "Request times by direction and handler: sent, from sending an event to its reply; received, the time its handler took",
            durations.clone(),
        );
        let mut family = |name: &str, help: &str| {
            let family = Family::<OneLabel, PromCounter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let send_errors = family(
            "send_errors",
            "Requests to the peer that got no reply, by kind",
        );
        let jobs_ended = family("jobs_ended", "Jobs of this node that ended, by final state");
        let http_responses = Family::default();
        registry.register(
            "http_responses",
            "Responses of the local HTTP front to piped requests, by status code",
            http_responses.clone(),
        );
        let jobs = Family::default();
        registry.register("jobs", "Jobs in the store, by state", jobs.clone());
        Self {
            registry,
            counters,
            timings,
            gauges,
            sent: HandlerTimes::new(Direction::Sent, durations.clone()),
            received: HandlerTimes::new(Direction::Received, durations),
            send_errors,
            jobs_ended,
            http_responses,
            jobs,
        }
    }

    /// Adds `n` to `counter`.
    pub(super) fn count(&self, counter: Counter, n: u64) {
        self.counters[counter as usize].inc_by(n);
    }

    /// Records `seconds` under `timing`.
    pub(super) fn time(&self, timing: Timing, seconds: f64) {
        match &self.timings[timing as usize] {
            Seconds::Histogram(histogram) => histogram.observe(seconds),
            Seconds::Gauge(gauge) => {
                gauge.set(seconds);
            }
        }
    }

    /// Sets `gauge` to `value`.
    pub(super) fn set(&self, gauge: Gauge, value: u64) {
        self.gauges[gauge as usize].set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// A request that went `direction`, for `handler`, took `seconds`.
    pub(super) fn request_time(&self, direction: Direction, handler: &str, seconds: f64) {
        match direction {
            Direction::Sent => self.sent.observe(handler, seconds),
            Direction::Received => self.received.observe(handler, seconds),
        }
    }

    /// A request to the peer got no reply, for reason `kind`.
    pub(super) fn send_error(&self, kind: &'static str) {
        self.send_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// A job ended in `state`.
    pub(super) fn job_ended(&self, state: &'static str) {
        self.jobs_ended.get_or_create(&[("state", state)]).inc();
    }

    /// The local front answered a piped request with `status`.
    pub(super) fn http_response(&self, status: u16) {
        self.http_responses.get_or_create(&[("code", status)]).inc();
    }

    /// The metrics in the text exposition format, the levels set to
    /// `levels` first.
    pub(super) fn scrape(&self, levels: &Levels) -> Result<String, std::fmt::Error> {
        self.set(Gauge::Peers, levels.peers);
        self.set(Gauge::InFlight, levels.in_flight);
        if let Some(jobs) = &levels.jobs {
            self.set(Gauge::JobsQueued, jobs.queued);
            for &(state, count) in &jobs.by_state {
                let count = i64::try_from(count).unwrap_or(i64::MAX);
                self.jobs.get_or_create(&[("state", state)]).set(count);
            }
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Registers a counter for each entry of [`Counter`]'s table; those that
/// share a name become one family, with a label each.
fn register_counters(registry: &mut Registry) -> Vec<PromCounter> {
    let mut families: HashMap<&str, Family<OneLabel, PromCounter>> = HashMap::new();
    Counter::ALL
        .iter()
        .map(|counter| {
            let Exposed {
                name, help, label, ..
            } = counter.exposed();
            let Some(label) = label else {
                let metric = PromCounter::default();
                registry.register(name, help, metric.clone());
                return metric;
            };
            let family = families.entry(name).or_insert_with(|| {
                let family = Family::default();
                registry.register(name, help, family.clone());
                family
            });
            family.get_or_create_owned(&[label])
        })
        .collect()
}

fn register_timing(registry: &mut Registry, exposed: Exposed) -> Seconds {
    match exposed.buckets {
        Some(buckets) => {
            let histogram = Histogram::new(buckets.iter().copied());
            registry.register(exposed.name, exposed.help, histogram.clone());
            Seconds::Histogram(histogram)
        }
        None => {
            let gauge = SecondsGauge::default();
            registry.register(exposed.name, exposed.help, gauge.clone());
            Seconds::Gauge(gauge)
        }
    }
}

/// The request times of one direction: a histogram per handler name, for
/// the first [`MAX_HANDLER_LABELS`] names seen; the rest share
/// [`OTHER_HANDLER`]'s.
#[derive(Debug)]
struct HandlerTimes {
    direction: &'static str,
    family: Family<RequestLabels, Histogram, NewHistogram>,
    /// The histograms of the names seen, so a request finds its own
    /// without building a label set.
    known: RwLock<HashMap<String, Histogram>>,
}

impl HandlerTimes {
    fn new(direction: Direction, family: Family<RequestLabels, Histogram, NewHistogram>) -> Self {
        let direction = match direction {
            Direction::Sent => "sent",
            Direction::Received => "received",
        };
        Self {
            direction,
            family,
            known: RwLock::new(HashMap::new()),
        }
    }

    fn observe(&self, handler: &str, seconds: f64) {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(histogram) = known.get(handler) {
            histogram.observe(seconds);
            return;
        }
        drop(known);
        self.histogram(handler).observe(seconds);
    }

    /// The histogram of `handler`, made if there is room for its name.
    fn histogram(&self, handler: &str) -> Histogram {
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(histogram) = known.get(handler) {
            return histogram.clone();
        }
        let labels = |handler: &str| RequestLabels {
            direction: self.direction,
            handler: handler.to_owned(),
        };
        if known.len() >= MAX_HANDLER_LABELS {
            return self.family.get_or_create_owned(&labels(OTHER_HANDLER));
        }
        let histogram = self.family.get_or_create_owned(&labels(handler));
        known.insert(handler.to_owned(), histogram.clone());
        histogram
    }
}
