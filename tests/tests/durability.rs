//! The pipe stays up by itself and no request ever hangs: dropped and frozen
//! links, deadlines, cancellation, replacement, draining shutdown, restarts.
//! Real nodes over real TLS; every wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use restpipe_tests::{
    IssueRequest, NodeSettings, Pipe, Pki, Proxy, Registry, Reply, Request, Role, Side,
    connect_client, connect_client_with, eventually, example_server, example_server_at,
    fast_settings, get, heartbeat_settings, http_client, send, start_client, start_server,
    wait_for_client, wait_for_server,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT: &str = "client-1";

/// Sets a flag when dropped: shows a handler's future was stopped.
struct Stopped(Arc<AtomicBool>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `get_hang`: runs until cancelled; records that it started and stopped.
fn hanging_handler(started: Arc<AtomicUsize>, stopped: Arc<AtomicBool>) -> Registry {
    let mut handlers = Registry::with_examples(Side::Server);
    handlers.register("get_hang", move |request: Request| {
        let started = started.clone();
        let guard = Stopped(stopped.clone());
        async move {
            let _guard = guard;
            started.fetch_add(1, Ordering::SeqCst);
            request.cancelled.cancelled().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Reply::bytes("", ""))
        }
    });
    handlers.register("get_sleep", |request: Request| async move {
        let millis = request.args[0].parse().unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok(Reply::json(&json!({ "slept_ms": millis })))
    });
    handlers.register("get_deadline", |request: Request| async move {
        let left = request
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        Ok(Reply::json(&json!({ "left_ms": left.as_millis() as u64 })))
    });
    handlers
}

#[tokio::test]
async fn deadline_gives_504_and_cancels_the_far_handler() {
    let (started, stopped) = (Arc::default(), Arc::new(AtomicBool::new(false)));
    let Pipe {
        server: _server,
        client,
        ..
    } = Pipe::start(
        hanging_handler(started, stopped.clone()),
        fast_settings(),
        CLIENT,
        Registry::new(),
    )
    .await;

    let begun = Instant::now();
    let reply = send(
        "GET",
        &client.url("/server/hang"),
        &[("x-pipe-timeout", "0.3")],
        "",
    )
    .await;
    let took = begun.elapsed();
    assert_eq!(reply.status, 504);
    assert!(reply.json()["error"].as_str().unwrap().contains("no reply"));
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );
    eventually(Duration::from_secs(2), "far handler cancelled", || {
        stopped.load(Ordering::SeqCst)
    })
    .await;
    // The pipe is fine afterwards.
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
}

#[tokio::test]
async fn the_deadline_travels_with_the_event() {
    let Pipe {
        server: _server,
        client,
        ..
    } = Pipe::start(
        hanging_handler(Arc::default(), Arc::default()),
        fast_settings(),
        CLIENT,
        Registry::new(),
    )
    .await;
    let reply = send(
        "GET",
        &client.url("/server/deadline"),
        &[("x-pipe-timeout", "2.5")],
        "",
    )
    .await;
    let left = reply.json()["left_ms"].as_u64().unwrap();
    assert!((2000..=2500).contains(&left), "{left} ms left of 2.5 s");
    let reply = get(&client.url("/server/deadline")).await;
    let left = reply.json()["left_ms"].as_u64().unwrap();
    assert!(
        (29_000..=30_000).contains(&left),
        "{left} ms left of the 30 s default"
    );
}

#[tokio::test]
async fn caller_hanging_up_cancels_the_far_handler() {
    let started = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let Pipe { server, client, .. } = Pipe::start(
        hanging_handler(started.clone(), stopped.clone()),
        fast_settings(),
        CLIENT,
        Registry::new(),
    )
    .await;

    let mut caller = tokio::net::TcpStream::connect(client.http).await.unwrap();
    caller
        .write_all(b"GET /server/hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "handler started", || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(!stopped.load(Ordering::SeqCst));
    drop(caller);
    eventually(
        Duration::from_secs(5),
        "far handler cancelled after the caller left",
        || stopped.load(Ordering::SeqCst),
    )
    .await;
    let status = get(&server.url("/_pipe/status")).await.json();
    assert_eq!(status["in_flight"]["inbound"], 0);
}

#[tokio::test]
async fn requests_in_flight_fail_fast_with_502_when_the_link_drops() {
    let pki = Pki::new();
    let server = start_server(
        &pki,
        hanging_handler(Arc::default(), Arc::default()),
        fast_settings(),
    )
    .await;
    let proxy = Proxy::start(server.pipe_addr()).await;
    let client = start_client(
        pki.client(CLIENT),
        proxy.addr,
        Registry::new(),
        fast_settings(),
    )
    .await;
    wait_for_server(&client).await;

    let url = client.url("/server/sleep//5000");
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let begun = Instant::now();
    proxy.cut();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 502);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("closed before the reply")
    );
    assert!(
        begun.elapsed() < Duration::from_secs(1),
        "{:?}",
        begun.elapsed()
    );
    // ...and the client reconnects by itself.
    wait_for_server(&client).await;
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
}

#[tokio::test]
async fn a_frozen_link_is_found_by_heartbeats_on_both_sides_and_healed() {
    let pki = Pki::new();
    let server = example_server(&pki, heartbeat_settings()).await;
    let proxy = Proxy::start(server.pipe_addr()).await;
    let client = start_client(
        pki.client(CLIENT),
        proxy.addr,
        Registry::with_examples(Side::Client),
        heartbeat_settings(),
    )
    .await;
    wait_for_client(&server, CLIENT).await;
    wait_for_server(&client).await;

    proxy.freeze();
    let frozen_at = Instant::now();
    let (server_node, client_node) = (server.running.node().clone(), client.running.node().clone());
    eventually(
        Duration::from_secs(3),
        "server drops the frozen client",
        || server_node.peers().get(CLIENT).is_none(),
    )
    .await;
    eventually(
        Duration::from_secs(3),
        "client drops the frozen server",
        || client_node.peers().is_empty(),
    )
    .await;
    let found = frozen_at.elapsed();
    assert!(
        found < Duration::from_millis(1500),
        "half-open link found after {found:?}"
    );

    let status = get(&client.url("/_pipe/status")).await.json();
    assert_eq!(status["link"]["connected"], false);
    assert!(
        status["link"]["last_error"]
            .as_str()
            .unwrap()
            .contains("heartbeat")
    );
    let begun = Instant::now();
    let reply = get(&server.url(&format!("/client/{CLIENT}/time"))).await;
    assert_eq!(reply.status, 503);
    assert!(begun.elapsed() < Duration::from_secs(2));

    proxy.thaw();
    wait_for_client(&server, CLIENT).await;
    assert_eq!(
        get(&server.url(&format!("/client/{CLIENT}/time")))
            .await
            .status,
        200
    );
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
}

#[tokio::test]
async fn idle_links_stay_up_on_heartbeats_alone() {
    let pki = Pki::new();
    let server = example_server(&pki, heartbeat_settings()).await;
    let client =
        connect_client_with(&pki, &server, CLIENT, Registry::new(), heartbeat_settings()).await;
    let connection = server.connection_id(CLIENT);
    // Four times the dead-peer deadline with no traffic but pings.
    tokio::time::sleep(Duration::from_millis(2400)).await;
    let still = server.connection_id(CLIENT);
    assert_eq!(connection, still, "an idle but healthy link was dropped");
    drop(client);
}

#[tokio::test]
async fn newest_wins_and_the_replaced_client_stands_by_without_flapping() {
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let whoami = |marker: &'static str| {
        let mut handlers = Registry::new();
        handlers.register("get_whoami", move |_request: Request| async move {
            Ok(Reply::json(&json!({ "process": marker })))
        });
        handlers
    };
    let identity = pki.issue(IssueRequest::new(CLIENT, Role::Client));
    let older = start_client(
        pki.identity(&identity),
        server.pipe_addr(),
        whoami("older"),
        fast_settings(),
    )
    .await;
    wait_for_server(&older).await;
    let newer = start_client(
        pki.identity(&identity),
        server.pipe_addr(),
        whoami("newer"),
        fast_settings(),
    )
    .await;
    wait_for_server(&newer).await;

    let url = server.url(&format!("/client/{CLIENT}/whoami"));
    eventually(Duration::from_secs(3), "the older one stands by", || {
        older.running.node().link().standby
    })
    .await;
    let holder = server.connection_id(CLIENT);
    // Several of the older one's backoff cycles: the pipe stays with the newer.
    for _ in 0..20 {
        let reply = get(&url).await;
        assert_eq!(reply.json(), json!({ "process": "newer" }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.connection_id(CLIENT), holder);
    let status = get(&older.url("/_pipe/status")).await.json();
    assert_eq!(status["link"]["connected"], false);
    assert!(
        status["link"]["last_error"]
            .as_str()
            .unwrap()
            .contains("held by a newer connection")
    );

    // When the newer one goes, the one standing by takes over.
    newer.stop().await;
    eventually(Duration::from_secs(5), "the standby takes over", || {
        server
            .running
            .node()
            .peers()
            .get(CLIENT)
            .is_some_and(|peer| peer.connection_id() != holder)
    })
    .await;
    let reply = get(&url).await;
    assert_eq!(reply.json(), json!({ "process": "older" }));
}

#[tokio::test]
async fn graceful_shutdown_lets_requests_in_flight_finish_and_refuses_new_ones() {
    let Pipe { server, client, .. } = Pipe::start(
        hanging_handler(Arc::default(), Arc::default()),
        fast_settings(),
        CLIENT,
        Registry::new(),
    )
    .await;

    let url = client.url("/server/sleep//600");
    let in_flight = tokio::spawn(async move { get(&url).await });
    eventually(Duration::from_secs(2), "request reached the server", || {
        server
            .running
            .node()
            .peers()
            .get(CLIENT)
            .is_some_and(|p| p.in_flight_in() == 1)
    })
    .await;
    let node = server.running.node().clone();
    let server_http = server.url("/_pipe/health");
    let stopping = tokio::spawn(server.stop());
    eventually(Duration::from_secs(2), "server is draining", || {
        node.is_stopping()
    })
    .await;

    // New requests from the client side are refused while it drains
    // (after the short wait for a replacement connection).
    let refused = get(&client.url("/server/time")).await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);

    // The request in flight completes.
    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status, 200);
    assert_eq!(finished.json(), json!({ "slept_ms": 600 }));
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
    // The server's local front is gone.
    assert!(
        http_client()
            .get(server_http.parse().unwrap())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_restarted_server_gets_its_clients_back_and_waiting_requests_succeed() {
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let addr = server.pipe_addr();
    let client = connect_client(&pki, &server, CLIENT, Registry::new()).await;
    server.stop().await;

    // Down: answered 503 within the wait window, not hung.
    let begun = Instant::now();
    let reply = get(&client.url("/server/time")).await;
    assert_eq!(reply.status, 503);
    assert!(begun.elapsed() < Duration::from_secs(2));

    // A request made while it is down waits for the restart and succeeds.
    let patient = NodeSettings {
        peer_wait: Duration::from_secs(5),
        ..fast_settings()
    };
    let waiting_client = start_client(pki.client("client-2"), addr, Registry::new(), patient).await;
    let url = waiting_client.url("/server/time");
    let waiting = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = example_server_at(addr, &pki, fast_settings()).await;
    assert_eq!(waiting.await.unwrap().status, 200);
    wait_for_client(&server, CLIENT).await;
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
}

#[tokio::test]
async fn two_hundred_clients_all_come_back_after_a_server_restart() {
    const N: usize = 200;
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let addr = server.pipe_addr();
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        clients.push(
            start_client(
                pki.client(&format!("node-{i}")),
                addr,
                Registry::new(),
                fast_settings(),
            )
            .await,
        );
    }
    let node = server.running.node().clone();
    eventually(Duration::from_secs(20), "all clients connected", || {
        node.peers().len() == N
    })
    .await;
    server.stop().await;

    let restarted = Instant::now();
    let server = example_server_at(addr, &pki, fast_settings()).await;
    let node = server.running.node().clone();
    eventually(
        Duration::from_secs(20),
        "all clients back after the restart",
        || node.peers().len() == N,
    )
    .await;
    tracing::info!(took = ?restarted.elapsed(), "{N} clients back");
    for i in [0, N / 2, N - 1] {
        let reply = get(&server.url(&format!("/client/node-{i}/time"))).await;
        assert_eq!(
            reply.status, 404,
            "client node-{i} has no get_time, so 255 → 404"
        );
        assert_eq!(reply.code(), Some(255));
    }
    for client in &clients {
        assert_eq!(client.running.node().peers().len(), 1);
    }
}

#[tokio::test]
async fn past_the_connection_cap_clients_are_refused_with_a_reason() {
    let pki = Pki::new();
    let settings = NodeSettings {
        max_connections: 1,
        ..fast_settings()
    };
    let server = example_server(&pki, settings).await;
    let first = connect_client(&pki, &server, "first", Registry::new()).await;
    let second = start_client(
        pki.client("second"),
        server.pipe_addr(),
        Registry::new(),
        fast_settings(),
    )
    .await;
    let node = second.running.node().clone();
    eventually(Duration::from_secs(5), "second refused", || {
        node.link()
            .last_error
            .is_some_and(|e| e.contains("cap of 1"))
    })
    .await;
    assert!(server.running.node().peers().get("second").is_none());
    assert_eq!(get(&first.url("/server/time")).await.status, 200);
    // When room frees up, the refused client gets in.
    first.stop().await;
    wait_for_client(&server, "second").await;
}

#[tokio::test]
async fn connection_events_run_the_hook_command() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.log");
    let hook = format!("echo \"$RP_EVENT $RP_PEER\" >> {}", log.display());
    let pki = Pki::new();
    let server = example_server(
        &pki,
        NodeSettings {
            on_event: Some(hook.clone()),
            ..fast_settings()
        },
    )
    .await;
    let client = connect_client_with(
        &pki,
        &server,
        CLIENT,
        Registry::new(),
        NodeSettings {
            on_event: Some(hook),
            ..fast_settings()
        },
    )
    .await;
    client.stop().await;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let expected = [
        "connect_success localhost".to_owned(),
        "connection_added localhost".to_owned(),
        format!("connection_added {CLIENT}"),
        format!("connection_removed {CLIENT}"),
    ];
    eventually(Duration::from_secs(5), "every expected hook ran", || {
        let lines = read();
        expected.iter().all(|e| lines.lines().any(|l| l == e))
    })
    .await;
}

#[tokio::test]
async fn garbage_on_the_local_front_does_not_hurt_the_node() {
    let Pipe {
        server: _server,
        client,
        ..
    } = Pipe::start(
        Registry::with_examples(Side::Server),
        fast_settings(),
        CLIENT,
        Registry::new(),
    )
    .await;
    let mut junk = tokio::net::TcpStream::connect(client.http).await.unwrap();
    junk.write_all(b"\x00\xff NOT HTTP AT ALL\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400") || answer.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let reply = send("GET", &client.url("/server/time"), &[], Bytes::new()).await;
    assert_eq!(reply.status, 200);
}
