//! Several server nodes on a real NATS backplane (`nats-server`, mutual
//! TLS): any node reaches any client, bodies stream across in both
//! directions, the newest connection of a name wins across nodes, and a
//! lost backplane is a clear 503 that heals by itself.

use std::hash::Hasher as _;
use std::time::Duration;

use bytes::Bytes;
use pipe_core::cluster::HEARTBEAT;
use restpipe_tests::nodes::{start_client_to, start_server_with, wait_for_client};
use restpipe_tests::{
    BackoffSettings, Nats, NodeOptions, NodeSettings, Pki, Registry, Reply, Request, Side,
    StatsdSettings, TestNode, connect_client, eventually, fast_settings, get, get_within,
    init_logging, send,
};

/// Limit for anything that should take a moment.
const SOON: Duration = Duration::from_secs(10);

/// A server node of the cluster on `nats`, known as `node_id`.
async fn cluster_node(pki: &Pki, nats: &Nats, urls: Vec<String>, node_id: &str) -> TestNode {
    cluster_node_with(pki, nats, urls, node_id, None).await
}

/// [`cluster_node`] sending its metrics to `statsd`.
async fn cluster_node_with(
    pki: &Pki,
    nats: &Nats,
    urls: Vec<String>,
    node_id: &str,
    statsd: Option<StatsdSettings>,
) -> TestNode {
    let settings = NodeSettings {
        cluster: Some(pipe_core_cluster(nats, urls, node_id)),
        statsd,
        ..fast_settings()
    };
    start_server_with(
        pki.server(),
        Registry::with_examples(Side::Server),
        settings,
    )
    .await
}

fn pipe_core_cluster(
    nats: &Nats,
    urls: Vec<String>,
    node_id: &str,
) -> restpipe_tests::cluster::ClusterSettings {
    restpipe_tests::cluster::ClusterSettings {
        urls,
        name: "test".to_owned(),
        node_id: node_id.to_owned(),
        tls: Some(nats.tls()),
    }
}

/// Waits until `node` lists `count` clients of the cluster.
async fn until_listed(node: &TestNode, count: usize) -> serde_json::Value {
    let started = tokio::time::Instant::now();
    loop {
        let peers = get_within(&node.url("/_pipe/peers"), SOON).await.json();
        if peers["peers"].as_array().map_or(0, Vec::len) == count {
            return peers;
        }
        assert!(started.elapsed() < SOON, "{peers}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client's handlers: `post_sink` reads a streamed upload and answers
/// its size and hash; `get_source` streams `size` bytes back.
fn client_handlers() -> Registry {
    let mut handlers = Registry::with_examples(Side::Client);
    handlers.register_streaming("post_sink", restpipe_tests::bulk::sink);
    handlers.register("get_source", |request: Request| async move {
        let size: usize = request
            .args
            .first()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        Ok(Reply::bytes("application/octet-stream", pattern(size)))
    });
    handlers
}

/// `size` bytes of a pattern that a shifted or dropped piece would break.
fn pattern(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn hash(data: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(data);
    hasher.finish().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reaches_every_client_with_bodies_both_ways() {
    init_logging();
    let pki = Pki::new();
    let nats = Nats::start(&pki, 1).await;
    let s1 = cluster_node(&pki, &nats, nats.urls(), "s1").await;
    let s2 = cluster_node(&pki, &nats, nats.urls(), "s2").await;
    let _c1 = connect_client(&pki, &s1, "c1", client_handlers()).await;
    let _c2 = connect_client(&pki, &s2, "c2", client_handlers()).await;

    // Each node reaches the other's client, and its own.
    for (node, client, via) in [(&s2, "c1", "s2"), (&s1, "c2", "s1"), (&s1, "c1", "s1")] {
        let time = get(&node.url(&format!("/client/{client}/time"))).await;
        assert_eq!(time.status, 200, "{client} via {via}: {time:?}");
        assert!(time.json()["time_from_client"].is_number(), "{time:?}");
    }

    // Bodies far larger than one NATS message, both ways.
    let upload = pattern(5 * 1024 * 1024 + 17);
    let sunk = send("POST", &s2.url("/client/c1/sink"), &[], upload.clone()).await;
    assert_eq!(sunk.status, 200, "{sunk:?}");
    assert_eq!(sunk.json()["size"], upload.len(), "{sunk:?}");
    assert_eq!(sunk.json()["hash"], hash(&upload), "{sunk:?}");
    let size = 3 * 1024 * 1024 + 5;
    let source = get(&s1.url(&format!("/client/c2/source//{size}"))).await;
    assert_eq!(source.status, 200, "{source:?}");
    assert_eq!(source.body.len(), size);
    assert_eq!(hash(&source.body), hash(&pattern(size)));

    // A client connected nowhere: 503, saying so.
    let nobody = get(&s1.url("/client/nobody/time")).await;
    assert_eq!(nobody.status, 503, "{nobody:?}");
    assert!(
        nobody.json()["error"]
            .as_str()
            .unwrap()
            .contains("not connected to any node"),
        "{nobody:?}"
    );

    // Every node lists every client of the cluster, with its holder.
    let listed = until_listed(&s1, 2).await;
    assert_eq!(listed["peers"][0]["name"], "c1", "{listed}");
    assert_eq!(listed["peers"][0]["node"], "s1", "{listed}");
    assert_eq!(listed["peers"][1]["name"], "c2", "{listed}");
    assert_eq!(listed["peers"][1]["node"], "s2", "{listed}");
    let status = get(&s2.url("/_pipe/status")).await.json();
    assert_eq!(status["cluster"]["node_id"], "s2", "{status}");
    assert_eq!(status["cluster"]["backplane"], "connected", "{status}");
    assert_eq!(
        status["cluster"]["clients"].as_array().unwrap().len(),
        2,
        "{status}"
    );
    let started = tokio::time::Instant::now();
    loop {
        let status = get(&s1.url("/_pipe/status")).await.json();
        let nodes: Vec<&str> = status["cluster"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|node| node["node"].as_str().unwrap())
            .collect();
        if nodes == ["s1", "s2"] {
            break;
        }
        assert!(started.elapsed() < SOON, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connecting_to_another_node_replaces_its_older_connection() {
    init_logging();
    let pki = Pki::new();
    let nats = Nats::start(&pki, 1).await;
    let s1 = cluster_node(&pki, &nats, nats.urls(), "s1").await;
    let s2 = cluster_node(&pki, &nats, nats.urls(), "s2").await;
    let _old = connect_client(&pki, &s1, "c1", client_handlers()).await;
    until_listed(&s2, 1).await;

    let _new = connect_client(&pki, &s2, "c1", client_handlers()).await;
    // The older connection, on the other node, is let go.
    eventually(SOON, "s1 lets its connection of c1 go", || {
        !s1.has_peer("c1")
    })
    .await;
    let listed = until_listed(&s1, 1).await;
    assert_eq!(listed["peers"][0]["node"], "s2", "{listed}");
    let time = get(&s1.url("/client/c1/time")).await;
    assert_eq!(time.status, 200, "{time:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_client_standing_by_is_refused_by_every_node_until_the_newer_one_goes() {
    init_logging();
    let pki = Pki::new();
    let nats = Nats::start(&pki, 1).await;
    let s1 = cluster_node(&pki, &nats, nats.urls(), "s1").await;
    let s2 = cluster_node(&pki, &nats, nats.urls(), "s2").await;
    // Once replaced, the older client asks again every few milliseconds.
    let options = NodeOptions {
        handlers: client_handlers(),
        backoff: BackoffSettings {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
            stable_after: Duration::from_secs(60),
        },
        ..NodeOptions::default()
    };
    let old = start_client_to(pki.client("c1"), &[s1.pipe_addr()], options).await;
    wait_for_client(&s1, "c1").await;
    until_listed(&s2, 1).await;

    let new = connect_client(&pki, &s2, "c1", client_handlers()).await;
    eventually(SOON, "s1 lets its connection of c1 go", || {
        !s1.has_peer("c1")
    })
    .await;
    // Standing by, the older client is refused by s1 as long as s2 holds
    // the newer connection: the identity does not flap back. Watched past
    // s1's first listing of the cluster's clients (a heartbeat after it
    // joined), which must keep s2's claim; the next is a minute away.
    let watch_until = tokio::time::Instant::now() + HEARTBEAT + Duration::from_secs(1);
    while tokio::time::Instant::now() < watch_until {
        assert!(!s1.has_peer("c1"), "s1 took c1 back from s2");
        assert!(s2.has_peer("c1"), "s2 lost c1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = old.status().await;
    let refused = status["link"]["last_error"].as_str().unwrap_or_default();
    assert!(
        refused.contains("held by a newer connection on node s2"),
        "{status}"
    );

    // When the newer connection goes, s2 says so at once (no listing is
    // due), and the older client is let in again.
    new.stop().await;
    eventually(SOON, "the older client is back on s1", || s1.has_peer("c1")).await;
    let time = get(&s1.url("/client/c1/time")).await;
    assert_eq!(time.status, 200, "{time:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_backplane_a_node_serves_its_own_clients_and_heals_by_itself() {
    init_logging();
    let pki = Pki::new();
    let mut nats = Nats::start(&pki, 1).await;
    let statsd = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let metrics = StatsdSettings {
        host: "127.0.0.1".to_owned(),
        port: statsd.local_addr().unwrap().port(),
        prefix: "rp".to_owned(),
    };
    let s1 = cluster_node(&pki, &nats, nats.urls(), "s1").await;
    let s2 = cluster_node_with(&pki, &nats, nats.urls(), "s2", Some(metrics)).await;
    let _c1 = connect_client(&pki, &s1, "c1", client_handlers()).await;
    assert_eq!(get(&s2.url("/client/c1/time")).await.status, 200);

    nats.kill(0).await;
    // Its own client still answers; another node's is a quick, clear 503.
    assert_eq!(get(&s1.url("/client/c1/time")).await.status, 200);
    eventually(SOON, "s2 sees the backplane gone", || {
        !s2.running.node().cluster().unwrap().is_connected()
    })
    .await;
    let started = tokio::time::Instant::now();
    let cut = get_within(&s2.url("/client/c1/time"), SOON).await;
    assert_eq!(cut.status, 503, "{cut:?}");
    assert!(
        cut.json()["error"].as_str().unwrap().contains("backplane"),
        "{cut:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // s2 counted the forward that went and the one the backplane refused.
    let mut seen = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !(seen.contains("rp.cluster.forward.tick:1|c")
        && seen.contains("rp.message.send.error.backplane.tick:1|c"))
    {
        let received = tokio::time::timeout(SOON, statsd.recv(&mut buf)).await;
        let n = received
            .unwrap_or_else(|_| panic!("metrics so far: {seen}"))
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }

    nats.restart(0).await;
    let started = tokio::time::Instant::now();
    loop {
        let healed = get_within(&s2.url("/client/c1/time"), SOON).await;
        if healed.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{healed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_member_nats_cluster_losing_one_member_hangs_nothing() {
    init_logging();
    let pki = Pki::new();
    let mut nats = Nats::start(&pki, 3).await;
    // Each node knows one NATS member (it learns the others from it); s1's
    // is the one that dies.
    let s1 = cluster_node(&pki, &nats, vec![nats.url(1)], "s1").await;
    let s2 = cluster_node(&pki, &nats, vec![nats.url(2)], "s2").await;
    let _c1 = connect_client(&pki, &s1, "c1", client_handlers()).await;
    let _c2 = connect_client(&pki, &s2, "c2", client_handlers()).await;
    assert_eq!(get(&s2.url("/client/c1/time")).await.status, 200);
    assert_eq!(get(&s1.url("/client/c2/time")).await.status, 200);

    nats.kill(1).await;
    eventually(SOON, "s1 notices", || {
        !s1.running.node().cluster().unwrap().is_connected()
    })
    .await;
    // Every request gets an answer in bounded time, and the nodes, moved to
    // the members left, reach each other's clients again.
    let started = tokio::time::Instant::now();
    loop {
        let a = get_within(&s2.url("/client/c1/time"), SOON).await;
        let b = get_within(&s1.url("/client/c2/time"), SOON).await;
        if a.status == 200 && b.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_on_one_node_reaches_its_client_on_another() {
    init_logging();
    let pki = Pki::new();
    let nats = Nats::start(&pki, 1).await;
    let state = tempfile::tempdir().unwrap();
    let settings = NodeSettings {
        cluster: Some(pipe_core_cluster(&nats, nats.urls(), "s1")),
        state_dir: Some(state.path().to_owned()),
        ..fast_settings()
    };
    let s1 = start_server_with(
        pki.server(),
        Registry::with_examples(Side::Server),
        settings,
    )
    .await;
    let s2 = cluster_node(&pki, &nats, nats.urls(), "s2").await;

    // Accepted on s1 for a client that is connected nowhere yet.
    let accepted = send(
        "GET",
        &s1.url("/client/c1/source//300000"),
        &[("Prefer", "respond-async")],
        "",
    )
    .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let at = accepted.headers["location"].to_str().unwrap().to_owned();
    let queued = get(&s1.url(&format!("{at}/status"))).await.json();
    assert_eq!(queued["state"], "queued", "{queued}");

    // The client connects to s2: s1 hears of it and sends the job there.
    let _c1 = connect_client(&pki, &s2, "c1", client_handlers()).await;
    let done = get_within(&s1.url(&format!("{at}?wait=10")), SOON).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert_eq!(done.headers["x-pipe-job-state"], "succeeded", "{done:?}");
    assert_eq!(done.body.len(), 300_000);
    assert_eq!(hash(&done.body), hash(&pattern(300_000)));
}

/// A client handler `get_hang` that says when it starts and counts its
/// ends; it answers only after an hour.
fn hanging(
    started: tokio::sync::mpsc::UnboundedSender<()>,
    ended: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Registry {
    struct Ends(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Ends {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let mut handlers = Registry::with_examples(Side::Client);
    handlers.register("get_hang", move |_request: Request| {
        let (started, ends) = (started.clone(), Ends(ended.clone()));
        async move {
            let _ends = ends;
            let _ = started.send(());
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Reply::bytes("", ""))
        }
    });
    handlers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_on_a_forwarded_request_stops_its_handler() {
    use tokio::io::AsyncWriteExt as _;
    init_logging();
    let pki = Pki::new();
    let nats = Nats::start(&pki, 1).await;
    let s1 = cluster_node(&pki, &nats, nats.urls(), "s1").await;
    let s2 = cluster_node(&pki, &nats, nats.urls(), "s2").await;
    let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _c1 = connect_client(&pki, &s1, "c1", hanging(started, ended.clone())).await;
    until_listed(&s2, 1).await;

    // The caller of s2 hangs up the moment the handler runs: before the
    // holder has said where its exchange is (it says so only for a
    // request slower than a moment), and then once more after.
    for (hung_up, after) in [(1, Duration::ZERO), (2, Duration::ZERO), (3, SOON / 20)] {
        let mut caller = tokio::net::TcpStream::connect(s2.http).await.unwrap();
        let request = "GET /client/c1/hang HTTP/1.1\r\nHost: x\r\nX-Pipe-Timeout: 300\r\n\r\n";
        caller.write_all(request.as_bytes()).await.unwrap();
        tokio::time::timeout(SOON, starts.recv())
            .await
            .expect("the handler starts")
            .unwrap();
        tokio::time::sleep(after).await;
        drop(caller);
        eventually(SOON, "the handler is stopped after its caller left", || {
            ended.load(std::sync::atomic::Ordering::SeqCst) == hung_up
        })
        .await;
    }
}
