//! Process-level faults of a real `pipe-server`: killed hard with SIGKILL,
//! frozen with SIGSTOP, restarted in place on the same ports, while a client
//! node (in this test process) keeps its link. Every wait is bounded and no
//! server process outlives its test.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_hard_and_restarted_on_the_same_port() {
    let mut fixture = Fixture::new();
    let mut server = fixture.start_server().await;
    let client = fixture.start_client(PEER_WAIT).await;
    client
        .link_until(Duration::from_secs(10), "connected", |l| {
            l["connected"] == true
        })
        .await;
    client.time_ok_within(Duration::from_secs(5)).await;

    server.kill_hard();
    let killed = Instant::now();
    // Until the client has seen the connection end a request may still be
    // sent on it (502); after that, 503 after the short peer wait.
    loop {
        let answer = get(&client.url("/server/time")).await;
        if answer.status == 503 {
            let error = answer.body["error"].as_str().unwrap();
            assert!(error.contains("no connection to the server"), "{error}");
            break;
        }
        assert_eq!(answer.status, 502, "server is dead: {answer:?}");
        assert!(killed.elapsed() < Duration::from_secs(2), "no 503 yet");
    }
    for _ in 0..3 {
        let answer = get(&client.url("/server/time")).await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.took < Duration::from_secs(1), "{answer:?}");
    }
    // It keeps trying, and says why it fails.
    let link = client
        .link_until(Duration::from_secs(5), "failed reconnect attempts", |l| {
            l["reconnect_attempts"].as_u64().unwrap() >= 2
        })
        .await;
    assert_eq!(link["connected"], false, "{link}");
    let error = link["last_error"].as_str().unwrap();
    assert!(error.contains("TCP connect"), "{error}");

    let _server = fixture.start_server().await;
    let restarted = Instant::now();
    client.time_ok_within(Duration::from_secs(5)).await;
    tracing::info!(took = ?restarted.elapsed(), "client back after the restart");
    let link = client.link().await;
    assert_eq!(link["connected"], true, "{link}");
    assert_eq!(link["reconnect_attempts"], 0, "reset on success: {link}");
    assert!(link["last_error"].is_string(), "history kept: {link}");
    assert!(link["last_error_at"].is_string(), "history kept: {link}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_frozen_with_sigstop_is_dropped_within_the_heartbeat_deadline() {
    let mut fixture = Fixture::new();
    let server = fixture.start_server().await;
    let client = fixture.start_client(PEER_WAIT).await;
    client
        .link_until(Duration::from_secs(10), "connected", |l| {
            l["connected"] == true
        })
        .await;
    client.time_ok_within(Duration::from_secs(5)).await;

    server.signal("STOP");
    let frozen = Instant::now();
    let link = client
        .link_until(
            Duration::from_secs(3),
            "frozen server dropped for its silence",
            |l| {
                l["connected"] == false
                    && l["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("heartbeat"))
            },
        )
        .await;
    let noticed = frozen.elapsed();
    tracing::info!(?noticed, %link, "frozen server dropped");
    // dead_after is 0.8 s: found within the deadline plus one ping interval
    // and scheduling slack, not after TCP's minutes.
    assert!(noticed < Duration::from_secs(2), "took {noticed:?}");
    for _ in 0..3 {
        let answer = get(&client.url("/server/time")).await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.took < Duration::from_secs(1), "{answer:?}");
    }

    server.signal("CONT");
    client.time_ok_within(Duration::from_secs(5)).await;
    let link = client.link().await;
    assert_eq!(link["connected"], true, "{link}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_restarting_server_succeeds() {
    let mut fixture = Fixture::new();
    let mut server = fixture.start_server().await;
    let client = fixture.start_client(Duration::from_secs(5)).await;
    client
        .link_until(Duration::from_secs(10), "connected", |l| {
            l["connected"] == true
        })
        .await;
    client.time_ok_within(Duration::from_secs(5)).await;

    server.kill_hard();
    client
        .link_until(Duration::from_secs(2), "disconnected", |l| {
            l["connected"] == false
        })
        .await;
    let url = client.url("/server/time");
    let waiting = tokio::spawn(async move { try_get(&url, Duration::from_secs(8)).await });
    // It waits for the server instead of failing at once...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "{:?}", waiting.await);

    let _server = fixture.start_server().await;
    // ...and is answered by the restarted one, inside its peer wait.
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body["time_from_server"].as_f64().unwrap() > 1.0e9);
    assert!(answer.took < Duration::from_secs(5), "{answer:?}");
}
