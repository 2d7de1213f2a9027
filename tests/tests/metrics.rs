//! Metrics end to end: real nodes report to a real statsd (a UDP socket on
//! loopback), and metrics never get in the way of requests, whether statsd
//! is disabled, listening, or gone.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use restpipe_tests::{
    NodeSettings, Pki, Proxy, Registry, Reply, Request, Side, Statsd, StatsdSettings, TestNode,
    connect_client_with, fast_settings, get, heartbeat_settings, http_client, send, send_with,
    server_start_error, start_client, start_server, wait_for_client, wait_for_server,
};
use tokio::net::UdpSocket;

const CLIENT: &str = "metered";

/// The examples plus a handler that outlives any short deadline.
fn handlers(side: Side) -> Registry {
    let mut registry = Registry::with_examples(side);
    registry.register("get_slow", |_request: Request| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Reply::bytes("text/plain", "late"))
    });
    registry
}

/// A server node and a client node, each reporting to its own statsd.
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

#[tokio::test]
async fn one_request_reports_once_on_each_side() {
    let server_statsd = Statsd::start().await;
    let client_statsd = Statsd::start().await;
    let (server, client) = metered_pipe(&server_statsd, &client_statsd).await;

    let connected = [
        "rp.test.client.connect.new.tick:1|c",
        "rp.test.client.connect.connected.tick:1|c",
        "rp.test.connections.peers:1|g",
    ];
    client_statsd.wait_for(&connected).await;
    server_statsd.wait_for(&connected).await;

    // The client's app asks the server for the time.
    let response = get(&client.url("/server/time")).await;
    assert_eq!(response.status, 200);
    let bytes_out = format!("rp.test.http.bytes.out:{}|c", response.body.len());
    client_statsd
        .wait_for(&[
            "rp.test.message.send.tick:1|c",
            "rp.test.http.status.200:1|c",
            &bytes_out,
        ])
        .await;
    let round_trip = client_statsd.timings("message.send.timing").await;
    assert_eq!(round_trip.len(), 1);
    assert!(round_trip[0] < 10_000, "{round_trip:?}");
    server_statsd
        .wait_for(&[
            "rp.test.message.receive.tick:1|c",
            "rp.test.message.received.handle.get_time.tick:1|c",
        ])
        .await;
    assert_eq!(
        server_statsd
            .timings("message.receive.handle.timing")
            .await
            .len(),
        1
    );
    assert_eq!(
        server_statsd
            .timings("message.received.handle.get_time.timing")
            .await
            .len(),
        1
    );
    // Each side counts only its own half, once; GET has no request body.
    assert_eq!(client_statsd.count("rp.test.message.send.tick:1|c"), 1);
    assert!(client_statsd.matching("receive").is_empty());
    assert!(server_statsd.matching("message.send").is_empty());
    assert!(server_statsd.matching("http.").is_empty());
    assert!(client_statsd.matching("http.bytes.in").is_empty());

    // The server's app posts to a handler the client does not have: the
    // client reports it as `_unknown`, not under the name the peer chose.
    let body = r#"{"a": 1}"#;
    let response = send(
        "POST",
        &server.url(&format!("/client/{CLIENT}/no/such/thing")),
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(response.status, 404);
    server_statsd
        .wait_for(&[
            "rp.test.message.send.tick:1|c",
            "rp.test.http.status.404:1|c",
            &format!("rp.test.http.bytes.in:{}|c", body.len()),
        ])
        .await;
    client_statsd
        .wait_for(&[
            "rp.test.message.receive.tick:1|c",
            "rp.test.message.received.handle._unknown.tick:1|c",
        ])
        .await;
    assert!(client_statsd.matching("post_no_such_thing").is_empty());

    // A request that outlives its deadline is counted by kind.
    let response = send(
        "GET",
        &client.url("/server/slow"),
        &[("x-pipe-timeout", "0.2")],
        "",
    )
    .await;
    assert_eq!(response.status, 504);
    client_statsd
        .wait_for(&[
            "rp.test.message.send.error.timeout.tick:1|c",
            "rp.test.http.status.504:1|c",
        ])
        .await;
    assert_eq!(client_statsd.count("rp.test.message.send.tick:1|c"), 2);
    assert_eq!(
        client_statsd.timings("message.send.timing").await.len(),
        1,
        "a request without reply has no round-trip time"
    );

    // The in-flight gauge comes from the once-a-second reporter.
    client_statsd
        .wait_for(&["rp.test.requests.in_flight:0|g"])
        .await;

    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_reconnect_reports_the_break_and_the_time_to_recover() {
    let server_statsd = Statsd::start().await;
    let client_statsd = Statsd::start().await;
    let pki = Pki::new();
    let server = start_server(&pki, handlers(Side::Server), server_statsd.settings()).await;
    let proxy = Proxy::start(server.pipe_addr()).await;
    let client = start_client(
        pki.client(CLIENT),
        proxy.addr,
        handlers(Side::Client),
        client_statsd.settings(),
    )
    .await;
    wait_for_client(&server, CLIENT).await;
    wait_for_server(&client).await;
    let connected = "rp.test.client.connect.connected.tick:1|c";
    client_statsd.wait_for_times(connected, 1).await;
    server_statsd.wait_for_times(connected, 1).await;

    proxy.cut();

    let broken = "rp.test.client.connect.broken.tick:1|c";
    // (The server may see the new connection before noticing the old one
    // broke; then its peer count never drops to 0.)
    client_statsd
        .wait_for(&["rp.test.connections.peers:0|g"])
        .await;
    for statsd in [&client_statsd, &server_statsd] {
        statsd.wait_for(&[broken]).await;
        statsd.wait_for_times(connected, 2).await;
        statsd
            .wait_for_times("rp.test.client.connect.new.tick:1|c", 2)
            .await;
        statsd
            .wait_for_times("rp.test.connections.peers:1|g", 2)
            .await;
    }
    let recovered = client_statsd.timings("client.reconnect.timing").await;
    assert_eq!(recovered.len(), 1);
    assert!(recovered[0] < 10_000, "{recovered:?}");
    assert!(server_statsd.matching("reconnect").is_empty());
    assert_eq!(client_statsd.count(broken), 1);
    assert_eq!(server_statsd.count(broken), 1);

    // And the pipe works again.
    let response = get(&client.url("/server/time")).await;
    assert_eq!(response.status, 200);

    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_failed_attempt_is_counted() {
    let statsd = Statsd::start().await;
    // A port where no server listens.
    let vacant = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = start_client(
        Pki::new().client(CLIENT),
        vacant,
        Registry::new(),
        statsd.settings(),
    )
    .await;
    statsd
        .wait_for(&[
            "rp.test.client.connect.new.tick:1|c",
            "rp.test.client.connect.fail.tick:1|c",
        ])
        .await;
    assert!(statsd.matching("connected").is_empty());
    client.stop().await;
}

#[tokio::test]
async fn idle_connections_report_heartbeat_round_trips() {
    let server_statsd = Statsd::start().await;
    let client_statsd = Statsd::start().await;
    let pki = Pki::new();
    let with_heartbeats = |statsd: &Statsd| NodeSettings {
        connection: heartbeat_settings().connection,
        ..statsd.settings()
    };
    let server = start_server(
        &pki,
        handlers(Side::Server),
        with_heartbeats(&server_statsd),
    )
    .await;
    let client = connect_client_with(
        &pki,
        &server,
        CLIENT,
        handlers(Side::Client),
        with_heartbeats(&client_statsd),
    )
    .await;
    // Both sides ping after 150 ms of silence and time the pong.
    let rtt = client_statsd
        .timings("client.connect.heartbeat.timing")
        .await;
    assert!(rtt[0] < 600, "{rtt:?}");
    server_statsd
        .timings("client.connect.heartbeat.timing")
        .await;
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn disabled_metrics_send_nothing_and_requests_still_work() {
    // Listen where the default configuration (localhost:8125) would send.
    // The port is fixed by that default, so other nodes on this host (other
    // tests starting binaries with the default configuration) may report
    // there too: this test's nodes call a handler with a name nobody else
    // uses, and no line may mention it. If something else holds the port,
    // the "nothing arrives" half cannot be checked here; the rest still is.
    let default_statsd = match UdpSocket::bind("127.0.0.1:8125").await {
        Ok(socket) => Some(Statsd::listen(socket)),
        Err(error) => {
            eprintln!("127.0.0.1:8125 is taken ({error}); not listening there");
            None
        }
    };
    let noun = format!("quiet{}", std::process::id());
    let with_probe = |side| {
        let mut registry = handlers(side);
        registry.register(format!("get_{noun}"), |_request: Request| async move {
            Ok(Reply::bytes("text/plain", "shh"))
        });
        registry
    };
    let pki = Pki::new();
    let disabled = NodeSettings {
        statsd: None,
        ..fast_settings()
    };
    let server = start_server(&pki, with_probe(Side::Server), disabled.clone()).await;
    let client =
        connect_client_with(&pki, &server, CLIENT, with_probe(Side::Client), disabled).await;
    assert!(!server.running.node().metrics().is_enabled());
    assert!(!client.running.node().metrics().is_enabled());
    for _ in 0..10 {
        let response = get(&client.url(&format!("/server/{noun}"))).await;
        assert_eq!(response.status, 200);
        let response = get(&server.url(&format!("/client/{CLIENT}/{noun}"))).await;
        assert_eq!(response.status, 200);
    }
    if let Some(statsd) = default_statsd {
        // Were metrics sent, they would have arrived within microseconds.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(statsd.matching(&noun), Vec::<String>::new());
    }
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_statsd_that_is_gone_never_slows_requests() {
    // A port where nothing listens: every datagram draws an ICMP refusal.
    let gone = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let settings = NodeSettings {
        statsd: Some(StatsdSettings {
            host: "127.0.0.1".into(),
            port: gone,
            prefix: "rp.test".into(),
        }),
        ..fast_settings()
    };
    let pki = Pki::new();
    let server = start_server(&pki, handlers(Side::Server), settings.clone()).await;
    let client = connect_client_with(&pki, &server, CLIENT, handlers(Side::Client), settings).await;
    assert!(client.running.node().metrics().is_enabled());

    let http = http_client();
    let started = Instant::now();
    for i in 0..200 {
        let url = if i % 2 == 0 {
            client.url("/server/time")
        } else {
            server.url(&format!("/client/{CLIENT}/time"))
        };
        let response = send_with(&http, "GET", &url, &[], "").await;
        assert_eq!(response.status, 200, "request {i}");
    }
    // Loopback requests take about a millisecond each; this bound only
    // catches a metric send that waits.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "200 requests took {took:?}");
    assert_eq!(client.running.node().peers().len(), 1);
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn an_unresolvable_statsd_host_stops_the_node_at_start() {
    let pki = Pki::new();
    let settings = NodeSettings {
        statsd: Some(StatsdSettings {
            host: "statsd.invalid".into(),
            port: 8125,
            prefix: String::new(),
        }),
        ..fast_settings()
    };
    let error = server_start_error(&pki, Registry::new(), settings).await;
    assert!(
        error.contains("statsd host \"statsd.invalid\"") && error.contains("does not resolve"),
        "{error}"
    );
}

#[tokio::test]
async fn jobs_report_acceptance_queue_depth_delivery_ends_and_commit_times() {
    let statsd = Statsd::start().await;
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let settings = NodeSettings {
        state_dir: Some(state.path().to_owned()),
        ..statsd.settings()
    };
    let server = start_server(&pki, handlers(Side::Server), settings).await;
    let submit = |path: String| {
        let url = server.url(&path);
        async move { send("GET", &url, &[("Prefer", "respond-async")], "").await }
    };
    let queued = submit(format!("/client/{CLIENT}/time")).await;
    assert_eq!(queued.status, 202);
    let doomed = submit(format!("/client/{CLIENT}/time")).await;
    let doomed = format!("/_pipe/jobs/{}", doomed.json()["id"].as_str().unwrap());
    statsd.wait_for(&["rp.test.jobs.queued:2|g"]).await;
    statsd
        .wait_for_times("rp.test.jobs.accepted.tick:1|c", 2)
        .await;
    assert_eq!(
        send("DELETE", &server.url(&doomed), &[], "").await.status,
        200
    );
    statsd
        .wait_for(&["rp.test.jobs.ended.cancelled.tick:1|c"])
        .await;

    let _client = connect_client_with(
        &pki,
        &server,
        CLIENT,
        handlers(Side::Client),
        fast_settings(),
    )
    .await;
    statsd
        .wait_for(&[
            "rp.test.jobs.delivery.tick:1|c",
            "rp.test.jobs.ended.succeeded.tick:1|c",
            "rp.test.jobs.queued:0|g",
        ])
        .await;
    assert_eq!(
        statsd.count("rp.test.jobs.delivery.tick:1|c"),
        1,
        "one delivery"
    );
    // Every commit is timed; a commit takes well under a minute.
    let commits = statsd.timings("jobs.commit.timing").await;
    assert!(commits.iter().all(|ms| *ms < 60_000), "{commits:?}");
}
