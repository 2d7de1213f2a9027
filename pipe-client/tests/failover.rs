//! `pipe-client serve --server A --server B` as an operator runs it: the
//! real binary, given two server nodes (in this process), fails over to the
//! other when the one it is connected to stops, and its status and log say
//! which server it is connected to.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use restpipe_tests::files::path_arg;
use restpipe_tests::process::free_ports;
use restpipe_tests::{
    IssueRequest, NodeProcess, Pki, Role, SERVER_NAME, TestNode, eventually, example_server,
    fast_settings, get, get_within, wait_for_client,
};

/// The client node's name.
const CLIENT: &str = "branch";
/// Bound on the client process starting, connecting, and failing over.
const LIMIT: Duration = Duration::from_secs(10);

/// Sends `/server/time` to the client's front at `http` until it answers
/// 200, or fails after [`LIMIT`].
async fn time_ok(http: SocketAddr) {
    let started = Instant::now();
    loop {
        let answer = get_within(&format!("http://{http}/server/time"), LIMIT).await;
        if answer.status == 200 {
            return;
        }
        assert!(started.elapsed() < LIMIT, "last answer: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that requests from the client process at `http` go through
/// `server`, and that its status and log name `server`.
async fn served_by(server: &TestNode, http: SocketAddr, client: &mut NodeProcess) {
    wait_for_client(server, CLIENT).await;
    time_ok(http).await;
    let status = get(&format!("http://{http}/_pipe/status")).await.json();
    let dialled = server.pipe_addr().to_string();
    assert_eq!(status["link"]["server"], dialled.as_str(), "{status}");
    let named = format!("server={dialled}");
    client
        .wait_for_log(LIMIT, "a log line naming the server", |log| {
            log.lines()
                .any(|line| line.contains("connected to a server node") && line.contains(&named))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_given_two_servers_fails_over_when_its_server_stops() {
    let pki = Pki::new();
    let a = example_server(&pki, fast_settings()).await;
    let b = example_server(&pki, fast_settings()).await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let issued = pki.issue(IssueRequest::new(CLIENT, Role::Client));
    pki.install(&certs, Role::Client, &issued).unwrap();
    let (http, _) = free_ports().unwrap();

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pipe-client"));
    command
        .env_clear()
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    command
        .args(["serve", "--server", &a.pipe_addr().to_string()])
        .args(["--server", &b.pipe_addr().to_string()])
        .args(["--server-name", SERVER_NAME])
        .args(["--http", &http.to_string()])
        .args(["--cert-dir", path_arg(&certs)])
        .args(["--reconnect-min", "0.05", "--reconnect-max", "0.3"]);
    let mut client = NodeProcess::spawn(command, &dir.path().join("client.log")).unwrap();
    client
        .wait_healthy(http, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eventually(LIMIT, "one of the servers holds the client", || {
        a.has_peer(CLIENT) || b.has_peer(CLIENT)
    })
    .await;
    let status = get(&format!("http://{http}/_pipe/status")).await.json();
    let listed = [a.pipe_addr().to_string(), b.pipe_addr().to_string()];
    assert_eq!(status["link"]["servers"][0], listed[0].as_str(), "{status}");
    assert_eq!(status["link"]["servers"][1], listed[1].as_str(), "{status}");

    // It started at a random one of the two; that one stops.
    let (holder, other) = if a.has_peer(CLIENT) { (a, b) } else { (b, a) };
    served_by(&holder, http, &mut client).await;
    holder.stop().await;
    served_by(&other, http, &mut client).await;
    let back = get(&other.url(&format!("/client/{CLIENT}/time"))).await;
    assert_eq!(back.status, 200, "{back:?}");
}
