//! Prometheus metrics end to end: real nodes over real TLS serve
//! `/_pipe/metrics` (and, on a listener of its own, `/metrics`), scraped
//! over HTTP and read by the Prometheus project's own text parser; their
//! counts match the requests made, and match what the same nodes sent a
//! real statsd, metric by metric.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use restpipe_tests::metrics::{Counter, OTHER_HANDLER, UNKNOWN_HANDLER};
use restpipe_tests::{
    HttpAddr, HttpListener, LOOPBACK, Pki, Registry, Reply, Request, Scrape, Side, Statsd,
    TestNode, connect_client_with, eventually, fast_settings, get, scrape, send, start_server,
};

const CLIENT: &str = "metered";
/// How long a level may take to settle (a cancelled handler to end).
const SETTLE: Duration = Duration::from_secs(10);

/// The examples plus a handler that outlives any short deadline.
fn handlers(side: Side) -> Registry {
    let mut registry = Registry::with_examples(side);
    registry.register("get_slow", |_request: Request| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Reply::bytes("text/plain", "late"))
    });
    registry
}

fn metrics_url(node: &TestNode) -> String {
    node.url("/_pipe/metrics")
}

/// A server node and a client node connected, each reporting to its own
/// statsd.
async fn metered_pipe(server_statsd: &Statsd, client_statsd: &Statsd) -> (TestNode, TestNode) {
    let pki = Pki::new();
    let server = start_server(&pki, handlers(Side::Server), server_statsd.settings()).await;
    let client = connect_client_with(
        &pki,
        &server,
        CLIENT,
        handlers(Side::Client),
        client_statsd.settings(),
    )
    .await;
    (server, client)
}

/// Requests both ways, each counted below: 7 from the client (5 handled,
/// 1 for a handler the server lacks, 1 past its deadline) and 3 from the
/// server (2 handled, 1 for a handler the client lacks, with a body).
async fn make_requests(server: &TestNode, client: &TestNode) -> usize {
    for _ in 0..3 {
        assert_eq!(get(&client.url("/server/time")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&client.url("/server/cat//a/b")).await.status, 200);
    }
    assert_eq!(get(&client.url("/server/nothing")).await.status, 404);
    let late = send(
        "GET",
        &client.url("/server/slow"),
        &[("x-pipe-timeout", "0.2")],
        "",
    )
    .await;
    assert_eq!(late.status, 504);
    for _ in 0..2 {
        let time = get(&server.url(&format!("/client/{CLIENT}/time"))).await;
        assert_eq!(time.status, 200);
    }
    let body = r#"{"a": 1}"#;
    let unknown = send(
        "POST",
        &server.url(&format!("/client/{CLIENT}/no/such/thing")),
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(unknown.status, 404);
    body.len()
}

/// A scrape once no request is in flight any more (the deadline's cancel
/// has reached the slow handler).
async fn settled(node: &TestNode) -> Scrape {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let scraped = scrape(&metrics_url(node)).await;
        if scraped.value("restpipe_requests_in_flight", &[]) == 0.0 {
            return scraped;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "requests still in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request_count(scraped: &Scrape, direction: &str, handler: &str) -> f64 {
    let labels = [("direction", direction), ("handler", handler)];
    let count = scraped.value("restpipe_request_duration_seconds_count", &labels);
    // The histogram's buckets are cumulative: the last holds every one.
    let labels = [
        ("direction", direction),
        ("handler", handler),
        ("le", "+Inf"),
    ];
    assert_eq!(
        scraped.value("restpipe_request_duration_seconds_bucket", &labels),
        count
    );
    count
}

#[tokio::test]
async fn scraped_metrics_count_the_requests_made() {
    let server_statsd = Statsd::start().await;
    let client_statsd = Statsd::start().await;
    let (server, client) = metered_pipe(&server_statsd, &client_statsd).await;
    let body_bytes = make_requests(&server, &client).await;
    let on_client = settled(&client).await;
    let on_server = settled(&server).await;

    for (name, kind) in [
        ("restpipe_events_sent", "counter"),
        ("restpipe_request_duration_seconds", "histogram"),
        ("restpipe_peers_connected", "gauge"),
        ("restpipe_heartbeat_round_trip_seconds", "histogram"),
    ] {
        let family = on_client
            .family(name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(family.kind, kind, "{name}");
        assert!(!family.help.is_empty(), "{name}");
    }

    // The client's half: what its callers sent, what the server sent it.
    let counter = |scraped: &Scrape, name: &str| scraped.value(name, &[]);
    assert_eq!(counter(&on_client, "restpipe_events_sent_total"), 7.0);
    assert_eq!(request_count(&on_client, "sent", "get_time"), 3.0);
    assert_eq!(request_count(&on_client, "sent", "get_cat"), 2.0);
    assert_eq!(request_count(&on_client, "sent", "get_nothing"), 1.0);
    assert_eq!(
        on_client.sum(
            "restpipe_request_duration_seconds_count",
            &[("direction", "sent")]
        ),
        6.0,
        "the request past its deadline has no time"
    );
    assert_eq!(
        on_client.value("restpipe_send_errors_total", &[("kind", "timeout")]),
        1.0
    );
    for (code, count) in [("200", 5.0), ("404", 1.0), ("504", 1.0)] {
        let labels = [("code", code)];
        assert_eq!(
            on_client.value("restpipe_http_responses_total", &labels),
            count,
            "{code}"
        );
    }
    assert_eq!(counter(&on_client, "restpipe_events_received_total"), 3.0);
    assert_eq!(request_count(&on_client, "received", "get_time"), 2.0);
    assert_eq!(request_count(&on_client, "received", UNKNOWN_HANDLER), 1.0);
    assert_eq!(counter(&on_client, "restpipe_peers_connected"), 1.0);
    assert_eq!(counter(&on_client, "restpipe_connect_attempts_total"), 1.0);
    assert_eq!(
        counter(&on_client, "restpipe_connections_established_total"),
        1.0
    );

    // The server's half.
    assert_eq!(counter(&on_server, "restpipe_events_received_total"), 7.0);
    assert_eq!(request_count(&on_server, "received", "get_time"), 3.0);
    assert_eq!(request_count(&on_server, "received", "get_cat"), 2.0);
    assert_eq!(request_count(&on_server, "received", UNKNOWN_HANDLER), 1.0);
    assert_eq!(
        on_server.sum(
            "restpipe_request_duration_seconds_count",
            &[("direction", "received")]
        ),
        6.0,
        "the handler cancelled at its deadline did not finish"
    );
    assert_eq!(counter(&on_server, "restpipe_events_sent_total"), 3.0);
    assert_eq!(request_count(&on_server, "sent", "get_time"), 2.0);
    assert_eq!(request_count(&on_server, "sent", "post_no_such_thing"), 1.0);
    assert_eq!(
        counter(&on_server, "restpipe_http_request_body_bytes_total"),
        body_bytes as f64
    );
    assert!(on_server.get("restpipe_requests_in_flight", &[]) == Some(0.0));
    // No handler label comes from a peer: the client's unknown name is not
    // on the server's side of the exchange, nor the server's on the client.
    for (scraped, foreign) in [
        (&on_server, "get_nothing"),
        (&on_client, "post_no_such_thing"),
    ] {
        assert_eq!(
            scraped.get(
                "restpipe_request_duration_seconds_count",
                &[("direction", "received"), ("handler", foreign)]
            ),
            None
        );
    }
    for scraped in [&on_client, &on_server] {
        let others = scraped.sum(
            "restpipe_request_duration_seconds_count",
            &[("handler", OTHER_HANDLER)],
        );
        assert_eq!(others, 0.0, "far fewer handlers than the bound");
    }

    client.stop().await;
    server.stop().await;
}

/// What a scrape's counters say in statsd's names and values: each
/// Prometheus counter the statsd counter it goes with (by the table of
/// `pipe_core::metrics`), the per-handler counts, and the request times'
/// counts.
fn as_statsd(scraped: &Scrape) -> (BTreeMap<String, u64>, BTreeMap<&'static str, u64>) {
    let whole = |value: f64| {
        assert!(value >= 0.0 && value.fract() == 0.0, "{value}");
        value as u64
    };
    let mut counters = BTreeMap::new();
    for counter in Counter::ALL {
        let exposed = counter.exposed();
        let name = format!("restpipe_{}_total", exposed.name);
        let labels: Vec<(&str, &str)> = exposed.label.into_iter().collect();
        counters.insert(
            counter.statsd_name().to_owned(),
            whole(scraped.value(&name, &labels)),
        );
    }
    let per_label = [
        (
            "restpipe_send_errors_total",
            "kind",
            "message.send.error.",
            ".tick",
        ),
        ("restpipe_jobs_ended_total", "state", "jobs.ended.", ".tick"),
        ("restpipe_http_responses_total", "code", "http.status.", ""),
    ];
    for (name, label, before, after) in per_label {
        for sample in scraped.samples().filter(|sample| sample.name == name) {
            let value = &sample.labels[label];
            counters.insert(format!("{before}{value}{after}"), whole(sample.value));
        }
    }
    for sample in scraped
        .samples()
        .filter(|sample| sample.name == "restpipe_request_duration_seconds_count")
        .filter(|sample| sample.labels["direction"] == "received")
    {
        let handler = &sample.labels["handler"];
        counters.insert(
            format!("message.received.handle.{handler}.tick"),
            whole(sample.value),
        );
    }
    let count = |direction| {
        whole(scraped.sum(
            "restpipe_request_duration_seconds_count",
            &[("direction", direction)],
        ))
    };
    let timings = BTreeMap::from([
        ("message.send.timing", count("sent")),
        ("message.receive.handle.timing", count("received")),
    ]);
    // statsd sends a counter only when it counts: leave out the zeros.
    counters.retain(|_, value| *value > 0);
    (counters, timings)
}

/// statsd's counters and the counts of the two request timings.
fn statsd_view(statsd: &Statsd) -> (BTreeMap<String, u64>, BTreeMap<&'static str, u64>) {
    let timings = ["message.send.timing", "message.receive.handle.timing"]
        .into_iter()
        .map(|name| (name, statsd.timings_now(name).len() as u64))
        .collect();
    (statsd.counters(), timings)
}

#[tokio::test]
async fn statsd_and_prometheus_count_the_same_requests() {
    let server_statsd = Statsd::start().await;
    let client_statsd = Statsd::start().await;
    let (server, client) = metered_pipe(&server_statsd, &client_statsd).await;
    make_requests(&server, &client).await;
    for (node, statsd) in [(&client, &client_statsd), (&server, &server_statsd)] {
        let scraped = settled(node).await;
        let expected = as_statsd(&scraped);
        assert!(expected.0.len() > 8, "{expected:#?}");
        // statsd's datagrams may still be on their way: wait for them,
        // then compare (a difference is then a real one).
        let arrived =
            restpipe_tests::wait::until(SETTLE, "statsd", || statsd_view(statsd) == expected).await;
        assert!(
            arrived.is_ok(),
            "statsd and Prometheus disagree on {:?}:\nstatsd {:#?}\nPrometheus {:#?}",
            node.running.node().side(),
            statsd_view(statsd),
            expected
        );
    }
    client.stop().await;
    server.stop().await;
}

/// A metrics listener on a free loopback port, and its address.
async fn metrics_listener() -> (HttpListener, String) {
    let listener = HttpListener::bind(&HttpAddr::Tcp(LOOPBACK)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("http://{addr}"))
}

#[tokio::test]
async fn a_metrics_listener_serves_the_metrics_and_nothing_else_and_jobs_show_by_state() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let settings = restpipe_tests::NodeSettings {
        state_dir: Some(state.path().to_owned()),
        ..fast_settings()
    };
    let server = start_server(&pki, handlers(Side::Server), settings).await;
    let (listener, metrics) = metrics_listener().await;
    server.running.serve_metrics(listener);

    // Two jobs for a client that is not connected wait in its queue.
    for _ in 0..2 {
        let url = server.url(&format!("/client/{CLIENT}/time"));
        let accepted = send("GET", &url, &[("Prefer", "respond-async")], "").await;
        assert_eq!(accepted.status, 202);
    }
    let scraped = scrape(&format!("{metrics}/metrics")).await;
    assert_eq!(scraped.value("restpipe_jobs_accepted_total", &[]), 2.0);
    assert_eq!(scraped.value("restpipe_jobs_queued", &[]), 2.0);
    assert_eq!(scraped.value("restpipe_jobs", &[("state", "queued")]), 2.0);
    assert_eq!(
        scraped.value("restpipe_jobs", &[("state", "succeeded")]),
        0.0
    );
    assert_eq!(scraped.family("restpipe_jobs").unwrap().kind, "gauge");
    // The same metrics at the front's path; nothing else on this listener.
    let same = scrape(&format!("{metrics}/_pipe/metrics")).await;
    assert_eq!(same.value("restpipe_jobs_queued", &[]), 2.0);
    for path in ["/_pipe/status", "/_pipe/health", "/client/x/time", "/"] {
        let answer = get(&format!("{metrics}{path}")).await;
        assert_eq!(answer.status, 404, "{path}");
    }

    // The client connects: both are delivered and succeed.
    let _client = connect_client_with(
        &pki,
        &server,
        CLIENT,
        handlers(Side::Client),
        fast_settings(),
    )
    .await;
    let ended = |scraped: &Scrape| {
        scraped.get("restpipe_jobs_ended_total", &[("state", "succeeded")]) == Some(2.0)
    };
    let mut scraped = scrape(&format!("{metrics}/metrics")).await;
    let deadline = std::time::Instant::now() + SETTLE;
    while !ended(&scraped) {
        assert!(std::time::Instant::now() < deadline, "{scraped:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        scraped = scrape(&format!("{metrics}/metrics")).await;
    }
    assert_eq!(
        scraped.value("restpipe_jobs", &[("state", "succeeded")]),
        2.0
    );
    assert_eq!(scraped.value("restpipe_jobs", &[("state", "queued")]), 0.0);
    assert_eq!(scraped.value("restpipe_jobs_queued", &[]), 0.0);
    assert_eq!(scraped.value("restpipe_job_deliveries_total", &[]), 2.0);
    assert_eq!(scraped.value("restpipe_peers_connected", &[]), 1.0);

    // The listener goes with the node.
    server.running.shutdown_token().cancel();
    eventually(SETTLE, "the metrics listener closes", || {
        std::net::TcpStream::connect(metrics.trim_start_matches("http://")).is_err()
    })
    .await;
}
