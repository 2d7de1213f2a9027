//! The metrics on a real UDP socket (statsd) and in the registry's text
//! (Prometheus): each call feeds both, and what peers and callers name stays
//! bounded.

use super::*;

/// A statsd server on a real UDP socket, handing out the metrics it
/// received one line at a time, whichever datagram each came in.
struct Statsd {
    socket: std::net::UdpSocket,
    lines: std::collections::VecDeque<String>,
    datagrams: Vec<usize>,
}

impl Statsd {
    fn next_line(&mut self) -> String {
        while self.lines.is_empty() {
            let mut buf = [0u8; 65_536];
            let n = self.socket.recv(&mut buf).unwrap();
            self.datagrams.push(n);
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.lines.extend(text.lines().map(str::to_owned));
        }
        self.lines.pop_front().unwrap()
    }
}

fn statsd() -> (Statsd, StatsdSettings) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let settings = StatsdSettings {
        host: "127.0.0.1".into(),
        port: socket.local_addr().unwrap().port(),
        prefix: "rp.unit".into(),
    };
    let server = Statsd {
        socket,
        lines: std::collections::VecDeque::new(),
        datagrams: Vec::new(),
    };
    (server, settings)
}

/// The sample lines of the exposition (no `#` lines).
fn samples(metrics: &Metrics) -> Vec<String> {
    metrics
        .scrape(&Levels::default())
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn has(metrics: &Metrics, sample: &str) -> bool {
    samples(metrics).iter().any(|line| line == sample)
}

#[test]
fn a_lone_metric_is_sent_without_waiting_for_more() {
    let (mut server, settings) = statsd();
    let metrics = Metrics::new(&settings).unwrap();
    metrics.incr(Counter::EventSent);
    assert_eq!(server.next_line(), "rp.unit.message.send.tick:1|c");
    metrics.replied("get_time", Duration::from_millis(42));
    assert_eq!(server.next_line(), "rp.unit.message.send.timing:42|ms");
    metrics.gauge(Gauge::Peers, 3);
    assert_eq!(server.next_line(), "rp.unit.connections.peers:3|g");
    metrics.timing(Timing::Heartbeat, Duration::from_millis(7));
    assert_eq!(
        server.next_line(),
        "rp.unit.client.connect.heartbeat.timing:7|ms"
    );
}

#[test]
fn metrics_are_packed_into_datagrams_that_fit_a_frame() {
    let (mut server, settings) = statsd();
    let metrics = Metrics::new(&settings).unwrap();
    let sent = 1000_u64;
    for n in 0..sent {
        metrics.count(Counter::HttpBytesIn, n + 1);
    }
    for n in 0..sent {
        assert_eq!(
            server.next_line(),
            format!("rp.unit.http.bytes.in:{}|c", n + 1)
        );
    }
    let datagrams = &server.datagrams;
    assert!(
        u64::try_from(datagrams.len()).unwrap() * 10 < sent,
        "{} datagrams for {sent} metrics",
        datagrams.len()
    );
    assert!(
        datagrams
            .iter()
            .all(|&size| size <= statsd::DATAGRAM_CAPACITY),
        "{datagrams:?}"
    );
}

#[test]
fn each_call_feeds_statsd_and_prometheus_alike() {
    let (mut server, settings) = statsd();
    let metrics = Metrics::new(&settings).unwrap();
    metrics.incr(Counter::EventSent);
    metrics.incr(Counter::EventSent);
    metrics.incr(Counter::NotifyGaveUp);
    metrics.send_failed("timeout");
    metrics.job_ended("cancelled");
    metrics.http_response(504, 10);
    metrics.timing(Timing::JobCommit, Duration::from_millis(250));
    let sent: Vec<String> = (0..8).map(|_| server.next_line()).collect();
    assert_eq!(
        sent,
        [
            "rp.unit.message.send.tick:1|c",
            "rp.unit.message.send.tick:1|c",
            "rp.unit.jobs.notify.gave_up.tick:1|c",
            "rp.unit.message.send.error.timeout.tick:1|c",
            "rp.unit.jobs.ended.cancelled.tick:1|c",
            "rp.unit.http.status.504:1|c",
            "rp.unit.http.bytes.out:10|c",
            "rp.unit.jobs.commit.timing:250|ms",
        ]
    );
    for sample in [
        "restpipe_events_sent_total 2",
        "restpipe_job_notifications_total{outcome=\"gave_up\"} 1",
        "restpipe_send_errors_total{kind=\"timeout\"} 1",
        "restpipe_jobs_ended_total{state=\"cancelled\"} 1",
        "restpipe_http_responses_total{code=\"504\"} 1",
        "restpipe_http_response_body_bytes_total 10",
        "restpipe_job_commit_mean_seconds 0.25",
    ] {
        assert!(has(&metrics, sample), "{sample}: {:#?}", samples(&metrics));
    }
}

#[test]
fn every_metric_of_the_table_is_exposed_before_it_happens() {
    let metrics = Metrics::disabled();
    let text = metrics.scrape(&Levels::default()).unwrap();
    for counter in Counter::ALL {
        let exposed = counter.exposed();
        let sample = match exposed.label {
            None => format!("restpipe_{}_total 0", exposed.name),
            Some((key, value)) => format!("restpipe_{}_total{{{key}=\"{value}\"}} 0", exposed.name),
        };
        assert!(text.lines().any(|line| line == sample), "{sample}");
    }
    for timing in Timing::ALL {
        let name = format!("restpipe_{}", timing.exposed().name);
        let kind = match timing.exposed().buckets {
            Some(_) => "histogram",
            None => "gauge",
        };
        assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
    }
    for gauge in Gauge::ALL {
        let sample = format!("restpipe_{} 0", gauge.exposed().name);
        assert!(text.lines().any(|line| line == sample), "{sample}");
    }
}

#[test]
fn request_times_are_kept_per_direction_and_handler() {
    let metrics = Metrics::disabled();
    metrics.replied("get_time", Duration::from_millis(3));
    metrics.replied("get_time", Duration::from_millis(2));
    metrics.handled(Some("get_cat"), Duration::from_millis(1));
    metrics.handled(None, Duration::ZERO);
    for sample in [
        "restpipe_request_duration_seconds_count{direction=\"sent\",handler=\"get_time\"} 2",
        "restpipe_request_duration_seconds_bucket{direction=\"sent\",handler=\"get_time\",le=\"0.005\"} 2",
        "restpipe_request_duration_seconds_count{direction=\"received\",handler=\"get_cat\"} 1",
        "restpipe_request_duration_seconds_count{direction=\"received\",handler=\"_unknown\"} 1",
    ] {
        assert!(has(&metrics, sample), "{sample}: {:#?}", samples(&metrics));
    }
}

#[test]
fn handler_names_stay_within_what_statsd_reads() {
    let (mut server, settings) = statsd();
    let metrics = Metrics::new(&settings).unwrap();
    metrics.handled(Some("get_a:b|c\nd"), Duration::from_millis(1));
    let lines = [server.next_line(), server.next_line(), server.next_line()];
    assert_eq!(lines[0], "rp.unit.message.receive.handle.timing:1|ms");
    assert_eq!(
        lines[1],
        "rp.unit.message.received.handle.get_a_b_c_d.tick:1|c"
    );
    metrics.handled(None, Duration::ZERO);
    let lines = [server.next_line(), server.next_line(), server.next_line()];
    assert_eq!(
        lines[1],
        "rp.unit.message.received.handle._unknown.tick:1|c"
    );
    // Prometheus sees the same name statsd does.
    assert!(has(
        &metrics,
        "restpipe_request_duration_seconds_count{direction=\"received\",handler=\"get_a_b_c_d\"} 1"
    ));
}

#[test]
fn handler_labels_are_bounded() {
    let metrics = Metrics::disabled();
    for n in 0..MAX_HANDLER_LABELS + 50 {
        metrics.replied(&format!("get_item_{n}"), Duration::from_millis(1));
    }
    metrics.replied("get_item_0", Duration::from_millis(1));
    let counts: Vec<String> = samples(&metrics)
        .into_iter()
        .filter(|line| line.starts_with("restpipe_request_duration_seconds_count"))
        .collect();
    assert_eq!(counts.len(), MAX_HANDLER_LABELS + 1, "{counts:#?}");
    assert!(
        counts.contains(
            &"restpipe_request_duration_seconds_count{direction=\"sent\",handler=\"_other\"} 50"
                .to_owned()
        )
    );
    assert!(
        counts.contains(
            &"restpipe_request_duration_seconds_count{direction=\"sent\",handler=\"get_item_0\"} 2"
                .to_owned()
        )
    );
}

#[test]
fn levels_are_read_at_scrape_time() {
    let metrics = Metrics::disabled();
    let levels = Levels {
        peers: 2,
        in_flight: 5,
        jobs: Some(JobLevels {
            queued: 3,
            by_state: vec![("queued", 3), ("succeeded", 7)],
        }),
    };
    let text = metrics.scrape(&levels).unwrap();
    for sample in [
        "restpipe_peers_connected 2",
        "restpipe_requests_in_flight 5",
        "restpipe_jobs_queued 3",
        "restpipe_jobs{state=\"queued\"} 3",
        "restpipe_jobs{state=\"succeeded\"} 7",
    ] {
        assert!(text.lines().any(|line| line == sample), "{sample}: {text}");
    }
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
fn without_statsd_prometheus_still_counts() {
    let metrics = Metrics::from_settings(None).unwrap();
    assert!(!metrics.is_enabled());
    metrics.incr(Counter::EventSent);
    metrics.handled(None, Duration::ZERO);
    metrics.http_response(200, 10);
    assert!(has(&metrics, "restpipe_events_sent_total 1"));
    assert!(has(
        &metrics,
        "restpipe_http_responses_total{code=\"200\"} 1"
    ));
}
