//! Metrics, for statsd and for Prometheus, fed from one place and never in
//! the way of a request.
//!
//! Every metric goes through a [`Metrics`] handle, and each of its calls
//! feeds both sides at once: statsd (through cadence, when configured: see
//! `statsd`) and the node's Prometheus registry (always, served at
//! `GET /_pipe/metrics`: see `prometheus`). Which statsd name goes with
//! which Prometheus metric is written down once, in the table of `names`,
//! so the two never disagree. No call waits: statsd metrics are appended to
//! a datagram sent without blocking, Prometheus ones are atomic additions.
//!
//! statsd names are sent with the configured prefix and a dot in front
//! (prefix `restpipe.server`: `restpipe.server.message.send.tick`);
//! Prometheus names start with `restpipe_`, counters end in `_total` and
//! times are in seconds. The original RestPipe's names are kept with these
//! meanings:
//!
//! - `message.send.tick` (counter; `restpipe_events_sent_total`): an event
//!   sent to the peer, counted on the node whose local HTTP caller made the
//!   request. Each one ends in a `message.send.timing` or a
//!   `message.send.error.<kind>.tick`, unless the local caller hung up
//!   first.
//! - `message.send.timing` (ms; the `direction="sent"` series of
//!   `restpipe_request_duration_seconds`, per handler): from sending an
//!   event to receiving its reply, for requests that got a reply.
//! - `message.receive.tick` (counter; `restpipe_events_received_total`):
//!   an event received from the peer.
//! - `message.receive.handle.timing` (ms; the `direction="received"`
//!   series of `restpipe_request_duration_seconds`): time the handler took,
//!   for every event handled (not for events cancelled before their handler
//!   finished).
//! - `message.received.handle.<handler>.tick` and
//!   `message.received.handle.<handler>.timing` (counter, ms; the
//!   `direction="received",handler="<handler>"` series): the same per
//!   handler, e.g. `message.received.handle.get_time.tick`. Events for a
//!   handler this node does not have count as `_unknown`, so a peer cannot
//!   create metric names at will; Prometheus also keeps at most
//!   [`MAX_HANDLER_LABELS`] handler names per direction (then `_other`).
//! - `client.connect.new.tick` (counter; `restpipe_connect_attempts_total`):
//!   a connection attempt started (client node), a TCP connection accepted
//!   (server node).
//! - `client.connect.connected.tick` (counter;
//!   `restpipe_connections_established_total`): a pipe connection
//!   established, after TLS and `Hello` (both sides).
//! - `client.connect.broken.tick` (counter;
//!   `restpipe_connections_broken_total`): an established connection
//!   ended, for whatever reason (both sides).
//! - `client.connect.heartbeat.timing` (ms;
//!   `restpipe_heartbeat_round_trip_seconds`): round trip of a `Ping`
//!   answered by its `Pong` (pings are sent on idle connections only).
//!
//! Added by restpipe:
//!
//! - `client.connect.fail.tick` (counter; `restpipe_connect_failures_total`):
//!   a failed connection attempt (client node).
//! - `client.connect.refused.tick` (counter;
//!   `restpipe_connections_refused_total`): a TCP connection the server
//!   node closed at once because too many handshakes were in progress, from
//!   its address or in all.
//! - `client.connect.revoked.tick` (counter; `restpipe_peers_revoked_total`):
//!   a peer shut out because its certificate is on the node's revocation
//!   list: a handshake refused (server node; a client node counts a refused
//!   server as a failed attempt) or an established connection closed after
//!   a reload (both).
//! - `client.reconnect.timing` (ms; `restpipe_reconnect_seconds`): client
//!   node, from losing the connection to being connected again.
//! - `connections.peers` (gauge; `restpipe_peers_connected`): connected
//!   peers, sent on every connect and disconnect.
//! - `requests.in_flight` (gauge; `restpipe_requests_in_flight`): requests
//!   in flight, ours waiting for the peer plus the peer's that our handlers
//!   work on; sent every second.
//! - `message.send.error.<kind>.tick` (counter;
//!   `restpipe_send_errors_total{kind}`): a request that got no reply;
//!   `<kind>` is `timeout`, `disconnected`, `going_away` or `too_large`
//!   (and, through a cluster, `not_connected`, `backplane`, `busy`).
//! - `message.receive.denied.tick`, `message.receive.busy.tick` (counters;
//!   `restpipe_events_denied_total`, `restpipe_events_busy_total`): an event
//!   the access policy refused; one refused because every handler slot and
//!   wait place of its connection was taken.
//! - `http.status.<code>` (counter; `restpipe_http_responses_total{code}`):
//!   a response of the local HTTP front to a piped request with that
//!   status, e.g. `http.status.200` (`/_pipe/...` excluded).
//! - `http.bytes.in`, `http.bytes.out` (counters;
//!   `restpipe_http_request_body_bytes_total`,
//!   `restpipe_http_response_body_bytes_total`): request and response body
//!   bytes on the local HTTP front (the same excluded).
//! - `cluster.forward.tick`, `cluster.forward.timing` (counter, ms;
//!   `restpipe_cluster_forwards_total`, `restpipe_cluster_forward_seconds`):
//!   a request for a client another node of the cluster holds; from sending
//!   it to its reply.
//!
//! Jobs (nodes with a state directory):
//!
//! - `jobs.accepted.tick`, `jobs.refused.tick` (counters;
//!   `restpipe_jobs_accepted_total`, `restpipe_jobs_refused_total`): a job
//!   accepted (202), or refused because its peer's queue was full (503).
//! - `jobs.delivery.tick` (counter; `restpipe_job_deliveries_total`): a
//!   delivery to the peer started (a redelivery counts again).
//! - `jobs.ended.<state>.tick` (counter; `restpipe_jobs_ended_total{state}`):
//!   a job of this node ended `succeeded`, `failed`, `expired` or
//!   `cancelled`.
//! - `jobs.queued` (gauge; `restpipe_jobs_queued`): jobs waiting in all
//!   peers' queues, sent twice a second.
//! - `jobs.commit.timing` (ms; the gauge `restpipe_job_commit_mean_seconds`):
//!   mean time of the store's commits (fsync included) over the last half
//!   second.
//! - `jobs.notify.sent.tick`, `jobs.notify.failed.tick`,
//!   `jobs.notify.gave_up.tick` (counters;
//!   `restpipe_job_notifications_total{outcome}`): a notify hook's call
//!   answered 2xx; failed, to be retried; failed with no attempt left.
//!
//! Prometheus alone: `restpipe_jobs{state}` (gauge), the jobs in the store
//! by state. Prometheus reads its gauges afresh at each scrape
//! ([`Levels`]), from where the statsd gauges read theirs.

mod names;
mod prometheus;
mod statsd;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use cadence::{Counted, Gauged, StatsdClient, Timed};
use tokio_util::sync::CancellationToken;

pub use names::{
    Counter, Exposed, Gauge, HANDLE_TIMING, LATENCY_BUCKETS, MAX_HANDLER_LABELS, OTHER_HANDLER,
    RECONNECT_BUCKETS, SEND_TIMING, Timing, UNKNOWN_HANDLER,
};
pub use prometheus::{JobLevels, Levels, PREFIX};
pub use statsd::{MetricsError, StatsdSettings};

use prometheus::{Direction, Prometheus};
use statsd::metric_safe;

/// The `Content-Type` of the metrics Prometheus scrapes: the text
/// exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// How often the gauges without a natural moment to send are reported.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A cheap, cloneable handle for recording metrics. Prometheus always
/// keeps them; statsd gets them when configured.
#[derive(Clone, Default)]
pub struct Metrics {
    statsd: Option<Arc<StatsdClient>>,
    prometheus: Arc<Prometheus>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl Metrics {
    /// Metrics that send nothing to statsd (Prometheus still keeps them).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Metrics for `settings`, or ones without statsd for `None`.
    pub fn from_settings(settings: Option<&StatsdSettings>) -> Result<Self, MetricsError> {
        settings.map_or_else(|| Ok(Self::disabled()), Self::new)
    }

    /// Metrics also sent to the statsd server of `settings`. Its host is
    /// resolved once, here: one that does not resolve is an error, so a
    /// typo stops the node at start instead of silently losing every
    /// metric.
    pub fn new(settings: &StatsdSettings) -> Result<Self, MetricsError> {
        Ok(Self {
            statsd: Some(statsd::client(settings)?),
            prometheus: Arc::default(),
        })
    }

    /// Whether metrics are sent to statsd.
    pub fn is_enabled(&self) -> bool {
        self.statsd.is_some()
    }

    /// Adds `n` to `counter`.
    pub fn count(&self, counter: Counter, n: u64) {
        self.prometheus.count(counter, n);
        if let Some(statsd) = &self.statsd {
            statsd.count_with_tags(counter.statsd_name(), n).send();
        }
    }

    /// Adds one to `counter`.
    pub fn incr(&self, counter: Counter) {
        self.count(counter, 1);
    }

    /// Records `duration` under `timing` (statsd: in milliseconds).
    pub fn timing(&self, timing: Timing, duration: Duration) {
        self.prometheus.time(timing, duration.as_secs_f64());
        if let Some(statsd) = &self.statsd {
            statsd.time_with_tags(timing.statsd_name(), duration).send();
        }
    }

    /// Sets `gauge` to `value`.
    pub fn gauge(&self, gauge: Gauge, value: u64) {
        self.prometheus.set(gauge, value);
        if let Some(statsd) = &self.statsd {
            statsd.gauge_with_tags(gauge.statsd_name(), value).send();
        }
    }

    /// An event sent to the peer for `handler` got its reply `took` after
    /// it was sent.
    pub fn replied(&self, handler: &str, took: Duration) {
        let handler = metric_safe(handler);
        self.prometheus
            .request_time(Direction::Sent, &handler, took.as_secs_f64());
        if let Some(statsd) = &self.statsd {
            statsd.time_with_tags(SEND_TIMING, took).send();
        }
    }

    /// An event was handled by `handler` (`None`: no such handler) in `took`.
    pub fn handled(&self, handler: Option<&str>, took: Duration) {
        let handler = handler.map_or(std::borrow::Cow::Borrowed(UNKNOWN_HANDLER), metric_safe);
        self.prometheus
            .request_time(Direction::Received, &handler, took.as_secs_f64());
        let Some(statsd) = &self.statsd else {
            return;
        };
        statsd.time_with_tags(HANDLE_TIMING, took).send();
        statsd
            .count_with_tags(&format!("message.received.handle.{handler}.tick"), 1)
            .send();
        statsd
            .time_with_tags(&format!("message.received.handle.{handler}.timing"), took)
            .send();
    }

    /// A request to the peer got no reply, for reason `kind` (one of a
    /// fixed few, hence `'static`).
    pub fn send_failed(&self, kind: &'static str) {
        self.prometheus.send_error(kind);
        if let Some(statsd) = &self.statsd {
            statsd
                .count_with_tags(&format!("message.send.error.{kind}.tick"), 1)
                .send();
        }
    }

    /// A job of this node ended in `state` (`succeeded`, `failed`,
    /// `expired`, `cancelled`).
    pub fn job_ended(&self, state: &'static str) {
        self.prometheus.job_ended(state);
        if let Some(statsd) = &self.statsd {
            statsd
                .count_with_tags(&format!("jobs.ended.{state}.tick"), 1)
                .send();
        }
    }

    /// The local HTTP front received a request body of `body_bytes`.
    pub fn http_request(&self, body_bytes: u64) {
        if body_bytes > 0 {
            self.count(Counter::HttpBytesIn, body_bytes);
        }
    }

    /// The local HTTP front answered with `status` and `body_bytes` of body.
    pub fn http_response(&self, status: u16, body_bytes: u64) {
        self.prometheus.http_response(status);
        if let Some(statsd) = &self.statsd {
            statsd
                .count_with_tags(&format!("http.status.{status}"), 1)
                .send();
        }
        if body_bytes > 0 {
            self.count(Counter::HttpBytesOut, body_bytes);
        }
    }

    /// Every metric in the Prometheus text exposition format (see
    /// [`CONTENT_TYPE`]), its gauges set to `levels` first.
    pub fn scrape(&self, levels: &Levels) -> Result<String, std::fmt::Error> {
        self.prometheus.scrape(levels)
    }
}

/// Sends the gauges that change with every request (`requests.in_flight`,
/// as `in_flight` counts it) every [`REPORT_INTERVAL`] until `shutdown`, so
/// the request path itself never sends them. Returns at once when statsd
/// is not configured: Prometheus reads its gauges when it scrapes.
pub async fn report(metrics: Metrics, in_flight: impl Fn() -> usize, shutdown: CancellationToken) {
    if !metrics.is_enabled() {
        return;
    }
    let mut ticks = tokio::time::interval(REPORT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let in_flight = u64::try_from(in_flight()).unwrap_or(u64::MAX);
        metrics.gauge(Gauge::InFlight, in_flight);
    }
}
