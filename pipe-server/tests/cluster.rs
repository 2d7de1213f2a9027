//! A cluster of real `pipe-server` processes on a real NATS server: the
//! node holding a client is killed with SIGKILL while a request through
//! another node waits on it. That request gets a definite answer soon (not
//! at its deadline), the client fails over to a surviving node, and every
//! node reaches it again within seconds.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use restpipe_tests::nodes::start_client_to;
use restpipe_tests::{
    InstalledServer, Nats, NodeOptions, NodeProcess, Registry, Reply, Request, SERVER_KEY, Side,
    eventually, get_within, send, try_get,
};

const CLIENT: &str = "branch";
/// Bound on anything the cluster should do in a moment.
const SOON: Duration = Duration::from_secs(15);

/// Three server nodes `s1`..`s3` of one cluster on `nats`, running.
async fn three_nodes(nats: &Nats, first: InstalledServer) -> Vec<(InstalledServer, NodeProcess)> {
    let mut installed = vec![first];
    installed.push(InstalledServer::beside(&installed[0]));
    installed.push(InstalledServer::beside(&installed[0]));
    let tls = nats.tls();
    let mut nodes = Vec::new();
    for (n, mut node) in installed.into_iter().enumerate() {
        node.add_args(["--cluster", &nats.url(0), "--cluster-name", "t"]);
        node.add_args(["--node-id", &format!("s{}", n + 1), "--peer-wait", "0.3"]);
        for (flag, path) in [
            ("--nats-ca", &tls.ca),
            ("--nats-cert", &tls.cert),
            ("--nats-key", &tls.key),
        ] {
            node.add_args([flag, path.to_str().unwrap()]);
        }
        let process = node.start().await;
        nodes.push((node, process));
    }
    nodes
}

/// The node holding the client, as `node`'s listing of the cluster says,
/// once it lists one other than `not`.
async fn holder(node: &InstalledServer, not: Option<&str>) -> String {
    let started = tokio::time::Instant::now();
    loop {
        let peers = get_within(&node.url("/_pipe/peers"), SOON).await.json();
        if let Some(held) = peers["peers"][0]["node"].as_str()
            && Some(held) != not
        {
            return held.to_owned();
        }
        assert!(started.elapsed() < SOON, "{peers}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The client's handlers: the examples, and `get_slow`, which answers
/// after a minute.
fn slow_handlers() -> Registry {
    let mut handlers = Registry::with_examples(Side::Client);
    handlers.register("get_slow", |_request: Request| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Reply::bytes("text/plain", "late"))
    });
    handlers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_fails_its_requests_soon_and_its_client_moves_to_another_node() {
    let first = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let nats = Nats::start(first.pki(), 1).await;
    let mut nodes = three_nodes(&nats, first).await;

    // The client knows s1 and s2; s3 only forwards to it.
    let handlers = slow_handlers();
    let servers = [nodes[0].0.pipe_addr(), nodes[1].0.pipe_addr()];
    let identity = nodes[0].0.pki().client(CLIENT);
    let options = NodeOptions {
        handlers,
        ..NodeOptions::default()
    };
    let _client = start_client_to(identity, &servers, options).await;
    let held_by = holder(&nodes[2].0, None).await;
    let index = if held_by == "s1" { 0 } else { 1 };
    assert!(["s1", "s2"].contains(&held_by.as_str()), "{held_by}");

    // A request through s3 waits on the holder; the holder dies.
    let slow_url = nodes[2].0.url(&format!("/client/{CLIENT}/slow"));
    let waiting = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let answer = send("GET", &slow_url, &[("X-Pipe-Timeout", "50")], "").await;
        (answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = nodes[index].1.kill().await.unwrap();
    assert!(!status.success(), "{status}");

    // A definite answer within seconds of the death, far before its deadline.
    let (answer, took) = tokio::time::timeout(SOON, waiting).await.unwrap().unwrap();
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("went away"),
        "{answer:?}"
    );
    assert!(took < Duration::from_secs(12), "{took:?}");

    // The client is on the other node, and reachable from s3 again.
    let now_held_by = holder(&nodes[2].0, Some(&held_by)).await;
    assert_ne!(now_held_by, held_by);
    let time = get_within(&nodes[2].0.url(&format!("/client/{CLIENT}/time")), SOON).await;
    assert_eq!(time.status, 200, "{time:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_requesting_node_died_is_dropped_at_its_client() {
    let first = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let nats = Nats::start(first.pki(), 1).await;
    let mut nodes = three_nodes(&nats, first).await;
    let handlers = slow_handlers();
    let identity = nodes[0].0.pki().client(CLIENT);
    let options = NodeOptions {
        handlers,
        ..NodeOptions::default()
    };
    let client = start_client_to(identity, &[nodes[0].0.pipe_addr()], options).await;
    holder(&nodes[2].0, None).await;

    // s3 forwards a slow request to the client through s1, then dies.
    let slow_url = nodes[2].0.url(&format!("/client/{CLIENT}/slow"));
    // (Its caller sees the connection cut when s3 dies.)
    let _waiting = tokio::spawn(async move { try_get(&slow_url, Duration::from_secs(40)).await });
    // s1 registers the client (and the cluster learns it) before the
    // client has finished its side of the hello: under load, tens of
    // milliseconds before. Its link is taken once it is there.
    let peers = client.running.node().peers();
    eventually(SOON, "the client holds its link to s1", || {
        peers.get(SERVER_KEY).is_some()
    })
    .await;
    let link = peers.get(SERVER_KEY).unwrap();
    eventually(SOON, "the slow handler runs", || link.in_flight_in() == 1).await;
    let status = nodes[2].1.kill().await.unwrap();
    assert!(!status.success(), "{status}");

    // s1 notices s3 is gone and drops the request, which stops the handler
    // long before its deadline.
    let started = tokio::time::Instant::now();
    eventually(SOON, "the slow handler is stopped", || {
        link.in_flight_in() == 0
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}
