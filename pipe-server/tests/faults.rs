//! Process-level faults of a real `pipe-server`: killed hard with SIGKILL,
//! frozen with SIGSTOP, restarted in place on the same ports, while a client
//! node (in this test process) keeps its link. Every wait is bounded and no
//! server process outlives its test.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use restpipe_tests::{
    ANSWER_LIMIT, InstalledServer, NodeProcess, Response, TestNode, get_within, try_get,
};

/// How long a request waits for a missing server before 503.
const PEER_WAIT: Duration = Duration::from_millis(300);

/// The installed server, started, and a client node connected to it whose
/// requests wait `peer_wait` for a missing server.
async fn connected(peer_wait: Duration) -> (InstalledServer, NodeProcess, TestNode) {
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let server = installed.start().await;
    let client = installed.start_client(peer_wait).await;
    client
        .link_until(Duration::from_secs(10), "connected", |l| {
            l["connected"] == true
        })
        .await;
    client.time_ok_within(Duration::from_secs(5)).await;
    (installed, server, client)
}

/// A GET to a node that must answer, and within [`ANSWER_LIMIT`].
async fn get(url: &str) -> Response {
    get_within(url, ANSWER_LIMIT).await
}

/// SIGKILL, then reap, so its ports are free on return.
async fn kill_hard(server: &mut NodeProcess) {
    let status = server.kill().await.unwrap();
    assert!(!status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_hard_and_restarted_on_the_same_port() {
    let (mut installed, mut server, client) = connected(PEER_WAIT).await;

    kill_hard(&mut server).await;
    let killed = Instant::now();
    // Until the client has seen the connection end a request may still be
    // sent on it (502); after that, 503 after the short peer wait.
    loop {
        let answer = get(&client.url("/server/time")).await;
        if answer.status == 503 {
            let error = answer.json()["error"].as_str().unwrap().to_owned();
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

    let _server = installed.start().await;
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
    let (_installed, server, client) = connected(PEER_WAIT).await;

    server.signal("STOP").unwrap();
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

    server.signal("CONT").unwrap();
    client.time_ok_within(Duration::from_secs(5)).await;
    let link = client.link().await;
    assert_eq!(link["connected"], true, "{link}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_restarting_server_succeeds() {
    let (mut installed, mut server, client) = connected(Duration::from_secs(5)).await;

    kill_hard(&mut server).await;
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

    let _server = installed.start().await;
    // ...and is answered by the restarted one, inside its peer wait.
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.json()["time_from_server"].as_f64().unwrap() > 1.0e9);
    assert!(answer.took < Duration::from_secs(5), "{answer:?}");
}
