//! Node-wide bounds, the way a caller meets them through real nodes: what a
//! server holds of its peers' bodies in memory (per peer and for the node),
//! and how many handlers it runs at once for all its peers together.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use restpipe_tests::{
    NodeSettings, Pki, Registry, Reply, Request, Side, TestNode, connect_client, fast_settings,
    get, send, start_server,
};
use serde_json::json;
use tokio::sync::Semaphore;

/// Gates of the holding handlers: each adds a permit to `started` once it
/// runs (its body taken whole), then waits for one in `release`.
#[derive(Clone)]
struct Gates {
    started: Arc<Semaphore>,
    release: Arc<Semaphore>,
}

impl Gates {
    fn new() -> Self {
        Self {
            started: Arc::new(Semaphore::new(0)),
            release: Arc::new(Semaphore::new(0)),
        }
    }

    async fn until_started(&self) {
        let started = self.started.acquire();
        tokio::time::timeout(Duration::from_secs(5), started)
            .await
            .expect("the holding handler never started")
            .unwrap()
            .forget();
    }
}

/// Handlers that take their bodies whole: `post_store` answers the length
/// at once; `post_hold` and `get_hold` keep running (and `post_hold` keeps
/// its body) until the test releases them.
fn holding_handlers(gates: &Gates) -> Registry {
    let mut registry = Registry::with_examples(Side::Server);
    registry.register("post_store", |request: Request| async move {
        Ok(Reply::json(&json!({ "length": request.body.len() })))
    });
    for name in ["post_hold", "get_hold"] {
        let gates = gates.clone();
        registry.register(name, move |request: Request| {
            let gates = gates.clone();
            async move {
                gates.started.add_permits(1);
                gates.release.acquire().await.unwrap().forget();
                Ok(Reply::json(&json!({ "length": request.body.len() })))
            }
        });
    }
    registry
}

const KIB: usize = 1024;

async fn post(client: &TestNode, noun: &str, bytes: usize) -> (u16, String) {
    let response = send(
        "POST",
        &client.url(&format!("/server/{noun}")),
        &[],
        vec![b'x'; bytes],
    )
    .await;
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

#[tokio::test]
async fn bodies_past_the_memory_budget_get_413_or_503_and_others_are_served() {
    let pki = Pki::new();
    let gates = Gates::new();
    let mut settings = fast_settings();
    settings.connection.max_body_memory_per_peer = 1024 * KIB;
    settings.max_body_memory = 1536 * KIB;
    let server = start_server(&pki, holding_handlers(&gates), settings).await;
    let first = connect_client(&pki, &server, "first", Registry::new()).await;
    let second = connect_client(&pki, &server, "second", Registry::new()).await;

    // Fits: served.
    let (status, body) = post(&first, "store", 512 * KIB).await;
    assert_eq!((status, body.as_str()), (200, r#"{"length":524288}"#));
    // Larger than a peer's share could ever be: 413.
    let (status, body) = post(&first, "store", 2048 * KIB).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("memory for bodies"), "{body}");

    // 800 KiB held by a running handler of the first peer...
    let held = tokio::spawn({
        let url = first.url("/server/hold");
        async move { send("POST", &url, &[], vec![b'x'; 800 * KIB]).await }
    });
    gates.until_started().await;
    // ...leaves it too little for 400 KiB more: 503, come back later.
    let (status, body) = post(&first, "store", 400 * KIB).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("this peer's memory for bodies"), "{body}");
    // The other peer has its own share, but the node's 1.5 MiB is shared.
    let (status, body) = post(&second, "store", 800 * KIB).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the node's memory for bodies"), "{body}");
    let (status, _) = post(&second, "store", 600 * KIB).await;
    assert_eq!(status, 200);

    // Once the holder is done, its bytes are given back.
    gates.release.add_permits(1);
    assert_eq!(held.await.unwrap().status, 200);
    let (status, _) = post(&first, "store", 900 * KIB).await;
    assert_eq!(status, 200);
    let (status, _) = post(&second, "store", 900 * KIB).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_node_runs_at_most_max_running_handlers_for_all_peers_together() {
    let pki = Pki::new();
    let gates = Gates::new();
    let settings = NodeSettings {
        max_running_handlers: 1,
        ..fast_settings()
    };
    let server = start_server(&pki, holding_handlers(&gates), settings).await;
    let first = connect_client(&pki, &server, "first", Registry::new()).await;
    let second = connect_client(&pki, &server, "second", Registry::new()).await;

    let holding = tokio::spawn({
        let url = first.url("/server/hold");
        async move { get(&url).await }
    });
    gates.until_started().await;
    // The other peer's event waits for the node's one slot, past its deadline.
    let waited = send(
        "GET",
        &second.url("/server/time"),
        &[("X-Pipe-Timeout", "0.5")],
        Vec::new(),
    )
    .await;
    assert_eq!(waited.status, 504);
    gates.release.add_permits(1);
    assert_eq!(holding.await.unwrap().status, 200);
    assert_eq!(get(&second.url("/server/time")).await.status, 200);
}
