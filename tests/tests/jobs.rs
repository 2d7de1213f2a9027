//! Asynchronous jobs end to end (`Prefer: respond-async`): accepted on disk
//! with 202 and a `Location`, queued for a client that is not connected,
//! delivered when it connects, polled for the very response the synchronous
//! call gives; idempotency keys, cancel, expiry, listing; and a submitting
//! node that restarts on its state directory still delivers what it took.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use restpipe_tests::{
    NodeSettings, Pki, Registry, Reply, Request, Response, Side, TestNode, connect_client,
    connect_client_with, fast_settings, get, send, start_server, wire,
};
use serde_json::json;

const ASYNC: (&str, &str) = ("Prefer", "respond-async");

/// A client's handlers: `post_count` counts its runs and answers the body's
/// length with return code 7 and a header of its own.
fn counting(runs: &Arc<AtomicUsize>) -> Registry {
    let mut registry = Registry::with_examples(Side::Client);
    let runs = runs.clone();
    registry.register("post_count", move |request: Request| {
        let runs = runs.clone();
        async move {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            let mut reply = Reply::json(&json!({ "length": request.body.len(), "run": run }))
                .with_return_code(7);
            reply
                .headers
                .insert("x-counted", http::HeaderValue::from_static("yes"));
            Ok(reply)
        }
    });
    registry
}

fn with_state(dir: &Path) -> NodeSettings {
    NodeSettings {
        state_dir: Some(dir.to_owned()),
        ..fast_settings()
    }
}

fn location(response: &Response) -> String {
    response.headers[http::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn submit(server: &TestNode, path: &str, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![ASYNC];
    headers.extend_from_slice(extra);
    send("POST", &server.url(path), &headers, "twelve bytes").await
}

#[tokio::test]
async fn a_job_for_a_client_not_yet_connected_is_delivered_when_it_connects() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;

    let accepted = submit(&server, "/client/late/count", &[]).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let job = accepted.json();
    assert_eq!(job["state"], "queued");
    assert_eq!(job["peer"], "late");
    assert_eq!(job["handler"], "post_count");
    let at = location(&accepted);
    assert_eq!(at, format!("/_pipe/jobs/{}", job["id"].as_str().unwrap()));
    let waiting = get(&server.url(&at)).await;
    assert_eq!(
        (waiting.status, &waiting.json()["state"]),
        (202, &json!("queued"))
    );
    let status = get(&server.url("/_pipe/status")).await.json();
    assert_eq!(status["jobs"]["by_state"]["queued"], 1);
    assert_eq!(status["jobs"]["queued_by_peer"]["late"], 1);
    assert!(status["jobs"]["commits"].as_u64() >= Some(1), "{status}");

    let runs = Arc::new(AtomicUsize::new(0));
    let _client = connect_client(&pki, &server, "late", counting(&runs)).await;
    let done = get(&server.url(&format!("{at}?wait=10"))).await;
    // The very response the synchronous call gives, and the job's state.
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.json(), json!({ "length": 12, "run": 1 }));
    assert_eq!(done.code(), Some(7));
    assert_eq!(done.headers["x-counted"], "yes");
    assert_eq!(done.headers["x-pipe-job-state"], "succeeded");
    let status = get(&server.url(&format!("{at}/status"))).await.json();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["http_status"], 200);
    assert_eq!(status["return_code"], 7);
    assert_eq!(status["attempts"], 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let status = get(&server.url("/_pipe/status")).await.json();
    assert_eq!(status["jobs"]["by_state"]["queued"], 0);
    assert_eq!(status["jobs"]["by_state"]["succeeded"], 1);
    assert_eq!(status["jobs"]["queued_by_peer"], json!({}));
}

#[tokio::test]
async fn keys_cancels_expiry_listing_and_unknown_ids() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;

    // The same key is the same job.
    let first = submit(&server, "/client/away/count", &[("Idempotency-Key", "k-1")]).await;
    let again = submit(&server, "/client/away/count", &[("Idempotency-Key", "k-1")]).await;
    assert_eq!(first.status, 202);
    assert_eq!(first.json()["id"], again.json()["id"]);

    // Cancel a queued job: gone for good.
    let at = location(&first);
    let cancelled = send("DELETE", &server.url(&at), &[], "").await;
    assert_eq!(
        (cancelled.status, &cancelled.json()["state"]),
        (200, &json!("cancelled"))
    );
    assert_eq!(get(&server.url(&at)).await.status, 410);
    assert_eq!(send("DELETE", &server.url(&at), &[], "").await.status, 409);

    // Expiry: not delivered in time.
    let brief = submit(&server, "/client/away/count", &[("X-Pipe-Expires", "0.2")]).await;
    let brief_at = location(&brief);
    let url = server.url(&brief_at);
    let mut status = 0;
    for _ in 0..100 {
        status = get(&url).await.status;
        if status == 410 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 410, "the job never expired");
    let expired = get(&server.url(&format!("{brief_at}/status"))).await.json();
    assert_eq!(expired["state"], "expired");

    // Listing, newest first, by state.
    let listed = get(&server.url("/_pipe/jobs?state=cancelled")).await.json();
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![first.json()["id"].as_str().unwrap()]);
    assert_eq!(
        get(&server.url("/_pipe/jobs?state=nonsense")).await.status,
        400
    );

    // Unknown ids and bad headers.
    assert_eq!(get(&server.url("/_pipe/jobs/0123abcd")).await.status, 404);
    let bad = submit(
        &server,
        "/client/away/count",
        &[("X-Pipe-Notify", "ftp://x")],
    )
    .await;
    assert_eq!(bad.status, 400);
    let bad = submit(&server, "/client/away/count", &[("X-Pipe-Expires", "soon")]).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn what_a_node_accepted_is_delivered_after_it_restarts() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;
    let accepted = submit(&server, "/client/later/count", &[]).await;
    assert_eq!(accepted.status, 202);
    let at = location(&accepted);
    server.stop().await;

    // A new server node on the same state directory.
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let _client = connect_client(&pki, &server, "later", counting(&runs)).await;
    let done = get(&server.url(&format!("{at}?wait=10"))).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.json()["length"], 12);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_node_without_a_state_directory_says_it_takes_no_jobs() {
    let pki = Pki::new();
    let server = start_server(&pki, Registry::new(), fast_settings()).await;
    let refused = submit(&server, "/client/any/count", &[]).await;
    assert_eq!(refused.status, 501);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("--state-dir"),
        "{:?}",
        refused.body
    );
}

#[tokio::test]
async fn a_job_whose_connection_drops_during_its_run_runs_once() {
    let pki = Pki::new();
    let (sent, kept) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = start_server(&pki, Registry::new(), with_state(sent.path())).await;
    // The receiving client keeps jobs too: a repeat is answered from what it
    // kept. Its handler takes a while, so the connection drops mid-run.
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = counting(&runs);
    let slow_runs = runs.clone();
    registry.register("post_slow", move |request: Request| {
        let runs = slow_runs.clone();
        async move {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(Reply::json(
                &json!({ "run": run, "redelivered": request.redelivered }),
            ))
        }
    });
    let _client =
        connect_client_with(&pki, &server, "twice", registry, with_state(kept.path())).await;
    let accepted = submit(&server, "/client/twice/slow", &[]).await;
    let at = location(&accepted);
    for _ in 0..100 {
        if runs.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the job never ran");
    // The server drops the connection while the handler runs.
    let connection = server.running.node().peers().get("twice").unwrap();
    connection.close(wire::go_away::Reason::Shutdown, "a test cuts the link");

    let done = get(&server.url(&format!("{at}?wait=10"))).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.json(), json!({ "run": 1, "redelivered": false }));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran twice");
    let status = get(&server.url(&format!("{at}/status"))).await.json();
    assert_eq!(status["attempts"], 2, "delivered again after the drop");
}

#[tokio::test]
async fn a_client_node_submits_jobs_to_its_server_too() {
    let pki = Pki::new();
    let runs = Arc::new(AtomicUsize::new(0));
    // The server answers `post_count` here, as a client does above.
    let server_state = tempfile::tempdir().unwrap();
    let server = start_server(&pki, counting(&runs), with_state(server_state.path())).await;
    let client_state = tempfile::tempdir().unwrap();
    let client = connect_client_with(
        &pki,
        &server,
        "branch",
        Registry::new(),
        with_state(client_state.path()),
    )
    .await;
    let accepted = send(
        "POST",
        &client.url("/server/count"),
        &[ASYNC],
        "from the branch",
    )
    .await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    assert_eq!(accepted.json()["peer"], "server");
    let done = get(&client.url(&format!("{}?wait=10", location(&accepted)))).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.json()["length"], 15);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
