//! statsd metrics through cadence, never in the way of a request.
//!
//! A [`Metrics`] handle formats a metric and drops it into a bounded queue;
//! a background thread sends each one promptly as its own UDP datagram from
//! a non-blocking socket. A full queue or an unreachable statsd loses
//! metrics, never time: no call here waits, and errors are swallowed (logged
//! at debug, sparingly). Disabled metrics (no statsd configured) cost a
//! branch and send nothing.
//!
//! Every name below is sent with the configured prefix and a dot in front
//! (prefix `restpipe.server`: `restpipe.server.message.send.tick`). The
//! original RestPipe's names are kept with these meanings:
//!
//! - `message.send.tick` (counter): an event sent to the peer, counted on the
//!   node whose local HTTP caller made the request. Each one ends in a
//!   `message.send.timing` or a `message.send.error.<kind>.tick`, unless
//!   the local caller hung up first.
//! - `message.send.timing` (ms): from sending an event to receiving its
//!   reply, for requests that got a reply.
//! - `message.receive.tick` (counter): an event received from the peer.
//! - `message.receive.handle.timing` (ms): time the handler took, for every
//!   event handled (not for events cancelled before their handler finished).
//! - `message.received.handle.<handler>.tick` and
//!   `message.received.handle.<handler>.timing` (counter, ms): the same per
//!   handler, e.g. `message.received.handle.get_time.tick`. Events for a
//!   handler this node does not have count as `_unknown`, so a peer cannot
//!   create metric names at will.
//! - `client.connect.new.tick` (counter): a connection attempt started
//!   (client node), a TCP connection accepted (server node).
//! - `client.connect.connected.tick` (counter): a pipe connection
//!   established, after TLS and `Hello` (both sides).
//! - `client.connect.broken.tick` (counter): an established connection
//!   ended, for whatever reason (both sides).
//! - `client.connect.heartbeat.timing` (ms): round trip of a `Ping`
//!   answered by its `Pong` (pings are sent on idle connections only).
//!
//! Added by restpipe:
//!
//! - `client.connect.fail.tick` (counter): a failed connection attempt
//!   (client node).
//! - `client.connect.refused.tick` (counter): a TCP connection the server
//!   node closed at once because too many handshakes were in progress, from
//!   its address or in all.
//! - `client.connect.revoked.tick` (counter): a peer shut out because its
//!   certificate is on the node's revocation list: a handshake refused
//!   (server node; a client node counts a refused server as a failed
//!   attempt) or an established connection closed after a reload (both).
//! - `client.reconnect.timing` (ms): client node, from losing the connection
//!   to being connected again.
//! - `connections.peers` (gauge): connected peers, sent on every connect and
//!   disconnect.
//! - `requests.in_flight` (gauge): requests in flight, ours waiting for the
//!   peer plus the peer's that our handlers work on; sent every second.
//! - `message.send.error.<kind>.tick` (counter): a request that got no
//!   reply; `<kind>` is `timeout`, `disconnected`, `going_away` or
//!   `too_large`.
//! - `http.status.<code>` (counter): a response of the local HTTP front with
//!   that status, e.g. `http.status.200` (`/_pipe/health` and
//!   `/_pipe/status` excluded).
//! - `http.bytes.in`, `http.bytes.out` (counters): request and response body
//!   bytes on the local HTTP front (the same two excluded).
//!
//! Jobs (nodes with a state directory):
//!
//! - `jobs.accepted.tick`, `jobs.refused.tick` (counters): a job accepted
//!   (202), or refused because its peer's queue was full (503).
//! - `jobs.delivery.tick` (counter): a delivery to the peer started (a
//!   redelivery counts again).
//! - `jobs.ended.<state>.tick` (counter): a job of this node ended
//!   `succeeded`, `failed`, `expired` or `cancelled`.
//! - `jobs.queued` (gauge): jobs waiting in all peers' queues, sent twice a
//!   second.
//! - `jobs.commit.timing` (ms): mean time of the store's commits (fsync
//!   included) over the last half second.
//! - `jobs.notify.sent.tick`, `jobs.notify.failed.tick`,
//!   `jobs.notify.gave_up.tick` (counters): a notify hook's call answered
//!   2xx; failed, to be retried; failed with no attempt left.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cadence::{Counted, Gauged, QueuingMetricSink, StatsdClient, Timed, UdpMetricSink};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// An event sent to the peer.
pub const SEND_TICK: &str = "message.send.tick";
/// Send to reply, for requests that got a reply.
pub const SEND_TIMING: &str = "message.send.timing";
/// An event received from the peer.
pub const RECEIVE_TICK: &str = "message.receive.tick";
/// An event the access policy refused.
pub const DENIED_TICK: &str = "message.receive.denied.tick";
/// An event refused because every handler slot and wait place of its
/// connection was taken (answered 503).
pub const BUSY_TICK: &str = "message.receive.busy.tick";
/// Time a handler took, all handlers.
pub const HANDLE_TIMING: &str = "message.receive.handle.timing";
/// The per-handler name of events for a handler this node does not have.
pub const UNKNOWN_HANDLER: &str = "_unknown";
/// A connection attempt (client) or an accepted TCP connection (server).
pub const CONNECT_NEW_TICK: &str = "client.connect.new.tick";
/// A pipe connection established.
pub const CONNECT_CONNECTED_TICK: &str = "client.connect.connected.tick";
/// An established connection ended.
pub const CONNECT_BROKEN_TICK: &str = "client.connect.broken.tick";
/// A connection the server closed at once: too many handshakes in progress
/// from its address or in all.
pub const CONNECT_REFUSED_TICK: &str = "client.connect.refused.tick";
/// A peer shut out because its certificate is revoked: refused at the
/// handshake (server) or its established connection closed (both).
pub const CONNECT_REVOKED_TICK: &str = "client.connect.revoked.tick";
/// A failed connection attempt (client).
pub const CONNECT_FAIL_TICK: &str = "client.connect.fail.tick";
/// Round trip of a `Ping`.
pub const HEARTBEAT_TIMING: &str = "client.connect.heartbeat.timing";
/// From losing the connection to being connected again (client).
pub const RECONNECT_TIMING: &str = "client.reconnect.timing";
/// Connected peers.
pub const PEERS_GAUGE: &str = "connections.peers";
/// Requests in flight, both directions.
pub const IN_FLIGHT_GAUGE: &str = "requests.in_flight";
/// Request body bytes on the local HTTP front.
pub const HTTP_BYTES_IN: &str = "http.bytes.in";
/// Response body bytes on the local HTTP front.
pub const HTTP_BYTES_OUT: &str = "http.bytes.out";
/// A job accepted (on disk, answered 202).
pub const JOBS_ACCEPTED_TICK: &str = "jobs.accepted.tick";
/// A job refused because its peer's queue was full.
pub const JOBS_REFUSED_TICK: &str = "jobs.refused.tick";
/// A delivery of a job to its peer started.
pub const JOBS_DELIVERY_TICK: &str = "jobs.delivery.tick";
/// Jobs waiting in the queues of all peers.
pub const JOBS_QUEUED: &str = "jobs.queued";
/// Mean time of the job store's commits (fsync included) since the last.
pub const JOBS_COMMIT_TIMING: &str = "jobs.commit.timing";
/// A notify hook answered 2xx.
pub const JOBS_NOTIFY_SENT_TICK: &str = "jobs.notify.sent.tick";
/// A notify hook's call failed and will be retried.
pub const JOBS_NOTIFY_FAILED_TICK: &str = "jobs.notify.failed.tick";
/// A notify hook's last allowed call failed: no more are made.
pub const JOBS_NOTIFY_GAVE_UP_TICK: &str = "jobs.notify.gave_up.tick";
/// A request for a client another node holds, sent through the cluster.
pub const CLUSTER_FORWARD_TICK: &str = "cluster.forward.tick";
/// From forwarding a request to its reply (those that got one).
pub const CLUSTER_FORWARD_TIMING: &str = "cluster.forward.timing";

/// Metrics waiting for the sender thread; past this they are dropped, so a
/// stalled statsd costs memory no larger than this many short strings.
const QUEUE_CAPACITY: usize = 64 * 1024;
/// How often the gauges without a natural moment to send are reported.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Only every this many-th failure to send is logged (at debug), so a dead
/// statsd never floods the logs.
const ERROR_LOG_EVERY: u64 = 1024;

/// Where metrics go: a statsd server over UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsdSettings {
    /// statsd host name or address (the original's `RP_STATSD_HOST`).
    pub host: String,
    /// statsd UDP port (the original's `RP_STATSD_PORT`).
    pub port: u16,
    /// Prefix of every metric name, e.g. `restpipe.server`; empty for none.
    pub prefix: String,
}

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The statsd host name did not resolve.
    #[error("statsd host {host:?} (port {port}) does not resolve: {source}")]
    Resolve {
        /// The host as configured.
        host: String,
        /// The port as configured.
        port: u16,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// The statsd host name resolved to no address at all.
    #[error("statsd host {host:?} resolves to no address")]
    NoAddress {
        /// The host as configured.
        host: String,
    },
    /// The local UDP socket could not be opened.
    #[error("could not open a UDP socket for statsd: {0}")]
    Socket(#[source] std::io::Error),
}

/// A cheap, cloneable handle for sending metrics; a no-op when disabled.
#[derive(Clone, Default)]
pub struct Metrics {
    client: Option<Arc<StatsdClient>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl Metrics {
    /// Metrics that send nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Metrics for `settings`, or disabled ones for `None`.
    pub fn from_settings(settings: Option<&StatsdSettings>) -> Result<Self, MetricsError> {
        settings.map_or_else(|| Ok(Self::disabled()), Self::new)
    }

    /// Metrics sent to the statsd server of `settings`. The host is resolved
    /// once, here (its IPv4 address preferred): one that does not resolve is
    /// an error, so a typo stops the node at start instead of silently
    /// losing every metric.
    pub fn new(settings: &StatsdSettings) -> Result<Self, MetricsError> {
        let addresses: Vec<SocketAddr> = (settings.host.as_str(), settings.port)
            .to_socket_addrs()
            .map_err(|source| MetricsError::Resolve {
                host: settings.host.clone(),
                port: settings.port,
                source,
            })?
            .collect();
        // IPv4 first, as the original did: `localhost` often resolves to
        // `::1` first, while statsd daemons commonly listen on IPv4 only.
        let target = addresses
            .iter()
            .find(|address| address.is_ipv4())
            .or_else(|| addresses.first())
            .copied()
            .ok_or_else(|| MetricsError::NoAddress {
                host: settings.host.clone(),
            })?;
        let local = match target {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let socket = UdpSocket::bind(local).map_err(MetricsError::Socket)?;
        // A full socket buffer drops the datagram instead of stalling the
        // sender thread (and the queue behind it).
        socket.set_nonblocking(true).map_err(MetricsError::Socket)?;
        // `target` is already an address: this resolves nothing.
        let udp = UdpMetricSink::from(target, socket)
            .map_err(|error| MetricsError::Socket(std::io::Error::other(error.to_string())))?;
        let failures = Arc::new(AtomicU64::new(0));
        let sink_failures = failures.clone();
        let sink = QueuingMetricSink::builder()
            .with_capacity(QUEUE_CAPACITY)
            .with_error_handler(move |error| {
                log_failure(&sink_failures, &error);
            })
            .build(udp);
        let client = StatsdClient::builder(&settings.prefix, sink)
            .with_error_handler(move |error| log_failure(&failures, &error))
            .build();
        info!(statsd = %target, prefix = %settings.prefix, "sending metrics");
        Ok(Self {
            client: Some(Arc::new(client)),
        })
    }

    /// Whether metrics are sent anywhere.
    pub fn is_enabled(&self) -> bool {
        self.client.is_some()
    }

    /// Adds `n` to counter `name`.
    pub fn count(&self, name: &str, n: u64) {
        if let Some(client) = &self.client {
            client.count_with_tags(name, n).send();
        }
    }

    /// Adds one to counter `name`.
    pub fn incr(&self, name: &str) {
        self.count(name, 1);
    }

    /// Records a duration (sent in milliseconds) under `name`.
    pub fn timing(&self, name: &str, duration: Duration) {
        if let Some(client) = &self.client {
            client.time_with_tags(name, duration).send();
        }
    }

    /// Sets gauge `name` to `value`.
    pub fn gauge(&self, name: &str, value: u64) {
        if let Some(client) = &self.client {
            client.gauge_with_tags(name, value).send();
        }
    }

    /// An event was handled by `handler` (`None`: no such handler) in `took`.
    pub fn handled(&self, handler: Option<&str>, took: Duration) {
        if !self.is_enabled() {
            return;
        }
        let handler = handler.map_or_else(|| UNKNOWN_HANDLER.to_owned(), metric_safe);
        self.timing(HANDLE_TIMING, took);
        self.incr(&format!("message.received.handle.{handler}.tick"));
        self.timing(&format!("message.received.handle.{handler}.timing"), took);
    }

    /// A request to the peer got no reply, for reason `kind`.
    pub fn send_failed(&self, kind: &str) {
        if self.is_enabled() {
            self.incr(&format!("message.send.error.{kind}.tick"));
        }
    }

    /// The local HTTP front received a request body of `body_bytes`.
    pub fn http_request(&self, body_bytes: u64) {
        if body_bytes > 0 {
            self.count(HTTP_BYTES_IN, body_bytes);
        }
    }

    /// The local HTTP front answered with `status` and `body_bytes` of body.
    pub fn http_response(&self, status: u16, body_bytes: u64) {
        if !self.is_enabled() {
            return;
        }
        self.incr(&format!("http.status.{status}"));
        if body_bytes > 0 {
            self.count(HTTP_BYTES_OUT, body_bytes);
        }
    }
}

/// `name` with everything statsd could misread (`:`, `|`, `@`, newlines,
/// spaces…) turned into `_`.
fn metric_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn log_failure(failures: &AtomicU64, error: &dyn std::fmt::Display) {
    let seen = failures.fetch_add(1, Ordering::Relaxed);
    if seen.is_multiple_of(ERROR_LOG_EVERY) {
        debug!(failures = seen + 1, "metric not sent: {error}");
    }
}

/// Sends the gauges that change with every request (`requests.in_flight`,
/// as `in_flight` counts it) every [`REPORT_INTERVAL`] until `shutdown`, so
/// the request path itself never sends them. Returns at once when metrics
/// are disabled.
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
        metrics.gauge(IN_FLIGHT_GAUGE, in_flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statsd() -> (std::net::UdpSocket, StatsdSettings) {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let settings = StatsdSettings {
            host: "127.0.0.1".into(),
            port: server.local_addr().unwrap().port(),
            prefix: "rp.unit".into(),
        };
        (server, settings)
    }

    fn next_line(server: &std::net::UdpSocket) -> String {
        let mut buf = [0u8; 1500];
        let n = server.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn each_metric_is_sent_at_once_with_the_prefix() {
        let (server, settings) = statsd();
        let metrics = Metrics::new(&settings).unwrap();
        metrics.incr(SEND_TICK);
        assert_eq!(next_line(&server), "rp.unit.message.send.tick:1|c");
        metrics.timing(SEND_TIMING, Duration::from_millis(42));
        assert_eq!(next_line(&server), "rp.unit.message.send.timing:42|ms");
        metrics.gauge(PEERS_GAUGE, 3);
        assert_eq!(next_line(&server), "rp.unit.connections.peers:3|g");
    }

    #[test]
    fn handler_names_stay_within_what_statsd_reads() {
        let (server, settings) = statsd();
        let metrics = Metrics::new(&settings).unwrap();
        metrics.handled(Some("get_a:b|c\nd"), Duration::from_millis(1));
        let lines = [next_line(&server), next_line(&server), next_line(&server)];
        assert_eq!(lines[0], "rp.unit.message.receive.handle.timing:1|ms");
        assert_eq!(
            lines[1],
            "rp.unit.message.received.handle.get_a_b_c_d.tick:1|c"
        );
        metrics.handled(None, Duration::ZERO);
        let lines = [next_line(&server), next_line(&server), next_line(&server)];
        assert_eq!(
            lines[1],
            "rp.unit.message.received.handle._unknown.tick:1|c"
        );
    }

    #[test]
    fn an_unresolvable_host_is_a_clear_error() {
        let error = Metrics::new(&StatsdSettings {
            host: "no-such-host.invalid".into(),
            port: 8125,
            prefix: String::new(),
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("\"no-such-host.invalid\"") && message.contains("does not resolve"),
            "{message}"
        );
    }

    #[test]
    fn disabled_metrics_do_nothing() {
        let metrics = Metrics::from_settings(None).unwrap();
        assert!(!metrics.is_enabled());
        metrics.incr(SEND_TICK);
        metrics.handled(None, Duration::ZERO);
        metrics.http_response(200, 10);
    }
}
