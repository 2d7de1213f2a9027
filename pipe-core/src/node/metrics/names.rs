//! The one table of metrics: each metric a node keeps, its statsd name (the
//! original RestPipe's, where it had one) and the Prometheus metric it also
//! feeds. A metric is written down once, here, and both sides read it, so
//! neither can have a metric the other lacks.
//!
//! Metrics whose name carries a value (a handler, a status, a job state, a
//! reason) are not in the table: each has its own method on
//! [`Metrics`](super::Metrics), which feeds the statsd name and a labelled
//! Prometheus metric together.

/// Bucket bounds, in seconds, of request and round-trip times: from half a
/// millisecond (a request on loopback) to five minutes (past the default
/// deadline of 30 s, short of the longest a caller may ask for).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Bucket bounds, in seconds, of the time a client node takes to connect
/// again: from a quick retry to half an hour (the backoff is capped at 30 s
/// by default, but a server may stay away much longer).
pub const RECONNECT_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// How a metric appears to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exposed {
    /// The name after `restpipe_`; a counter's `_total` is added when the
    /// metrics are written.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// A label fixed to this metric, for those that share one name.
    pub label: Option<(&'static str, &'static str)>,
    /// A timing's histogram bucket bounds (seconds); `None` for a timing
    /// that is already a mean, exposed as a gauge in seconds.
    pub buckets: Option<&'static [f64]>,
}

impl Exposed {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            label: None,
            buckets: None,
        }
    }

    const fn label(self, key: &'static str, value: &'static str) -> Self {
        Self {
            label: Some((key, value)),
            ..self
        }
    }

    const fn histogram(self, buckets: &'static [f64]) -> Self {
        Self {
            buckets: Some(buckets),
            ..self
        }
    }
}

/// Declares a kind of metric from its table: the enum of its metrics, every
/// one in order (`ALL`), and each one's statsd name and Prometheus side.
macro_rules! metric_table {
    (
        $(#[$meta:meta])*
        pub enum $kind:ident {
            $( $(#[$doc:meta])* $metric:ident = $statsd:literal => $exposed:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $kind {
            $( $(#[$doc])* $metric, )*
        }

        impl $kind {
            /// Every one, in the table's order: `ALL[m as usize] == m`.
            pub const ALL: &'static [Self] = &[ $( Self::$metric, )* ];

            /// Its statsd name (sent after the configured prefix).
            pub const fn statsd_name(self) -> &'static str {
                match self {
                    $( Self::$metric => $statsd, )*
                }
            }

            /// The Prometheus metric it also feeds.
            pub const fn exposed(self) -> Exposed {
                match self {
                    $( Self::$metric => $exposed, )*
                }
            }
        }
    };
}

metric_table! {
    /// A counter: statsd `|c`, a Prometheus counter.
    pub enum Counter {
        /// An event sent to the peer, counted on the node whose local
        /// caller made the request.
        EventSent = "message.send.tick" =>
            Exposed::new("events_sent", "Events sent to the peer, for this node's local callers"),
        /// An event received from the peer.
        EventReceived = "message.receive.tick" =>
            Exposed::new("events_received", "Events received from the peer"),
        /// An event the access policy refused.
        EventDenied = "message.receive.denied.tick" =>
            Exposed::new("events_denied", "Events from the peer that the access policy refused (403)"),
        /// An event refused because every handler slot and wait place of
        /// its connection was taken (answered 503).
        EventBusy = "message.receive.busy.tick" =>
            Exposed::new("events_busy", "Events from the peer refused because every handler slot of their connection was taken (503)"),
        /// A connection attempt (client) or an accepted TCP connection
        /// (server).
        ConnectAttempt = "client.connect.new.tick" =>
            Exposed::new("connect_attempts", "Connection attempts (client node) or TCP connections accepted (server node)"),
        /// A pipe connection established, after TLS and `Hello`.
        Connected = "client.connect.connected.tick" =>
            Exposed::new("connections_established", "Pipe connections established, after TLS and Hello"),
        /// An established connection ended.
        ConnectionBroken = "client.connect.broken.tick" =>
            Exposed::new("connections_broken", "Established pipe connections that ended, for whatever reason"),
        /// A connection the server closed at once: too many handshakes in
        /// progress from its address or in all.
        ConnectionRefused = "client.connect.refused.tick" =>
            Exposed::new("connections_refused", "TCP connections closed at once because too many handshakes were in progress (server node)"),
        /// A peer shut out because its certificate is revoked: refused at
        /// the handshake (server) or its established connection closed
        /// (both).
        PeerRevoked = "client.connect.revoked.tick" =>
            Exposed::new("peers_revoked", "Peers shut out because their certificate is on the revocation list"),
        /// A failed connection attempt (client).
        ConnectFailed = "client.connect.fail.tick" =>
            Exposed::new("connect_failures", "Failed connection attempts (client node)"),
        /// Request body bytes on the local HTTP front.
        HttpBytesIn = "http.bytes.in" =>
            Exposed::new("http_request_body_bytes", "Request body bytes of piped requests on the local HTTP front"),
        /// Response body bytes on the local HTTP front.
        HttpBytesOut = "http.bytes.out" =>
            Exposed::new("http_response_body_bytes", "Response body bytes of piped requests on the local HTTP front"),
        /// A job accepted (on disk, answered 202).
        JobAccepted = "jobs.accepted.tick" =>
            Exposed::new("jobs_accepted", "Jobs accepted (202, on disk)"),
        /// A job refused because its peer's queue was full.
        JobRefused = "jobs.refused.tick" =>
            Exposed::new("jobs_refused", "Jobs refused because their peer's queue was full (503)"),
        /// A delivery of a job to its peer started (a redelivery counts
        /// again).
        JobDelivery = "jobs.delivery.tick" =>
            Exposed::new("job_deliveries", "Deliveries of jobs to their peer started, redeliveries included"),
        /// A notify hook answered 2xx.
        NotifySent = "jobs.notify.sent.tick" =>
            Exposed::new("job_notifications", "Calls of jobs' notify hooks, by outcome")
                .label("outcome", "sent"),
        /// A notify hook's call failed and will be retried.
        NotifyFailed = "jobs.notify.failed.tick" =>
            Exposed::new("job_notifications", "Calls of jobs' notify hooks, by outcome")
                .label("outcome", "failed"),
        /// A notify hook's last allowed call failed: no more are made.
        NotifyGaveUp = "jobs.notify.gave_up.tick" =>
            Exposed::new("job_notifications", "Calls of jobs' notify hooks, by outcome")
                .label("outcome", "gave_up"),
        /// A request for a client another node holds, sent through the
        /// cluster.
        ClusterForward = "cluster.forward.tick" =>
            Exposed::new("cluster_forwards", "Requests for a client another node of the cluster holds, sent through the backplane"),
    }
}

metric_table! {
    /// A duration: statsd `|ms`, a Prometheus histogram in seconds (or a
    /// gauge, for a duration that is already a mean).
    pub enum Timing {
        /// Round trip of a `Ping` answered by its `Pong`.
        Heartbeat = "client.connect.heartbeat.timing" =>
            Exposed::new("heartbeat_round_trip_seconds", "Round trips of heartbeats (Ping to Pong), sent on idle connections")
                .histogram(LATENCY_BUCKETS),
        /// From losing the connection to being connected again (client).
        Reconnect = "client.reconnect.timing" =>
            Exposed::new("reconnect_seconds", "From losing the connection to being connected again (client node)")
                .histogram(RECONNECT_BUCKETS),
        /// Mean time of the job store's commits (fsync included) since the
        /// last report.
        JobCommit = "jobs.commit.timing" =>
            Exposed::new("job_commit_mean_seconds", "Mean time of the job store's commits, fsync included, over the last half second"),
        /// From forwarding a request through the cluster to its reply
        /// (those that got one).
        ClusterForward = "cluster.forward.timing" =>
            Exposed::new("cluster_forward_seconds", "From forwarding a request through the cluster to its reply")
                .histogram(LATENCY_BUCKETS),
    }
}

metric_table! {
    /// A level: statsd `|g`, a Prometheus gauge. Prometheus reads each one
    /// afresh when it scrapes, from where statsd's value comes from.
    pub enum Gauge {
        /// Connected peers, sent on every connect and disconnect.
        Peers = "connections.peers" =>
            Exposed::new("peers_connected", "Connected peers"),
        /// Requests in flight, ours waiting for the peer plus the peer's
        /// that our handlers work on; sent every second.
        InFlight = "requests.in_flight" =>
            Exposed::new("requests_in_flight", "Requests in flight, both ways: this node's waiting for the peer and the peer's being handled"),
        /// Jobs waiting in the queues of all peers, sent twice a second.
        JobsQueued = "jobs.queued" =>
            Exposed::new("jobs_queued", "Jobs waiting in all peers' queues"),
    }
}

/// An event sent to the peer got its reply: the time from sending it (all
/// handlers together; Prometheus has it per handler).
pub const SEND_TIMING: &str = "message.send.timing";
/// Time a handler took, all handlers together (statsd also has it per
/// handler, as Prometheus does).
pub const HANDLE_TIMING: &str = "message.receive.handle.timing";
/// The handler name under which events for a handler this node does not
/// have are counted, so a peer cannot create metric names at will.
pub const UNKNOWN_HANDLER: &str = "_unknown";
/// The handler label of request times past [`MAX_HANDLER_LABELS`] names.
pub const OTHER_HANDLER: &str = "_other";
/// Distinct handler labels Prometheus keeps per direction; past them the
/// rest count together as [`OTHER_HANDLER`]. Local callers can name any
/// handler of the peer (a typo, an id in the path), and a handler source
/// may answer many names: this bounds what they cost.
pub const MAX_HANDLER_LABELS: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_in_its_place_once() {
        let mut statsd = std::collections::HashSet::new();
        let mut exposed = std::collections::HashSet::new();
        for (index, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, index);
            assert!(statsd.insert(counter.statsd_name()), "{counter:?}");
            let Exposed { name, label, .. } = counter.exposed();
            assert!(exposed.insert((name, label)), "{counter:?}");
        }
        for (index, timing) in Timing::ALL.iter().enumerate() {
            assert_eq!(*timing as usize, index);
            assert!(statsd.insert(timing.statsd_name()), "{timing:?}");
            assert!(timing.exposed().name.ends_with("_seconds"), "{timing:?}");
            assert!(exposed.insert((timing.exposed().name, None)), "{timing:?}");
        }
        for (index, gauge) in Gauge::ALL.iter().enumerate() {
            assert_eq!(*gauge as usize, index);
            assert!(statsd.insert(gauge.statsd_name()), "{gauge:?}");
            assert!(exposed.insert((gauge.exposed().name, None)), "{gauge:?}");
        }
    }

    #[test]
    fn metrics_sharing_a_name_share_its_help() {
        for a in Counter::ALL {
            for b in Counter::ALL {
                if a.exposed().name == b.exposed().name {
                    assert_eq!(a.exposed().help, b.exposed().help);
                    assert_eq!(
                        a.exposed().label.map(|l| l.0),
                        b.exposed().label.map(|l| l.0)
                    );
                }
            }
        }
    }

    #[test]
    fn buckets_rise() {
        for buckets in [LATENCY_BUCKETS, RECONNECT_BUCKETS] {
            assert!(buckets.windows(2).all(|pair| pair[0] < pair[1]));
        }
    }
}
