//! Notify hooks: a job submitted with `X-Pipe-Notify` has its final state
//! POSTed to that URL once it ends. A hook that is down at first (no
//! listener, then a 503) is retried with backoff, each failure visible in
//! the job's state, and hit once with success.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use restpipe_tests::{
    NodeSettings, Pki, Registry, Reply, Request, TestNode, connect_client_with, fast_settings, get,
    send, start_server,
};
use serde_json::{Value, json};

fn with_state(dir: &Path) -> NodeSettings {
    NodeSettings {
        state_dir: Some(dir.to_owned()),
        ..fast_settings()
    }
}

/// What the hook received: the `X-Pipe-Job` header and the JSON body.
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// A hook on `addr` that answers 503 to its first `refusals` calls, then
/// 200; every call is recorded. Returns them and the hook's URL.
async fn start_hook(addr: SocketAddr, refusals: usize) -> (Calls, String) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}/done", listener.local_addr().unwrap());
    let calls: Calls = Arc::default();
    let recorder = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let recorder = recorder.clone();
                    async move {
                        let job = request.headers()["x-pipe-job"].to_str().unwrap().to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let mut calls = recorder.lock().unwrap();
                        calls.push((job, serde_json::from_slice(&body).unwrap()));
                        let status = if calls.len() <= refusals { 503 } else { 200 };
                        let response = hyper::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (calls, url)
}

/// Polls the job at `at` until `check` accepts its state.
async fn until_status(
    server: &TestNode,
    at: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let status = get(&server.url(&format!("{at}/status"))).await.json();
        if check(&status) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never {what}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_hook_down_at_first_is_retried_and_hit_once_with_the_final_state() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;
    let mut registry = Registry::new();
    registry.register("post_work", |_request: Request| async {
        Ok(Reply::json(&json!({ "worked": true })))
    });
    let _client = connect_client_with(&pki, &server, "worker", registry, fast_settings()).await;
    // A port with nobody listening yet: the hook is down.
    let hook_addr = {
        let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        reserved.local_addr().unwrap()
    };
    let hook_url = format!("http://{hook_addr}/done");
    let accepted = send(
        "POST",
        &server.url("/client/worker/work"),
        &[
            ("Prefer", "respond-async"),
            ("X-Pipe-Notify", hook_url.as_str()),
        ],
        "",
    )
    .await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    let at = format!("/_pipe/jobs/{id}");

    let refused = until_status(&server, &at, "a failed first call", |status| {
        status["notify"]["attempts"] == 1
    })
    .await;
    assert_eq!(refused["state"], "succeeded");
    assert_eq!(refused["notify"]["state"], "pending", "{refused}");
    let error = refused["notify"]["error"].as_str().unwrap();
    assert!(error.contains("onnect"), "the error says why: {error}");

    // The hook comes up, refuses once more with 503, then takes the call.
    let (calls, _) = start_hook(hook_addr, 1).await;
    let sent = until_status(&server, &at, "the hook's success", |status| {
        status["notify"]["state"] == "sent"
    })
    .await;
    assert_eq!(sent["notify"]["attempts"], 3, "{sent}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one 503, one success: {calls:?}");
    for (job, body) in &calls {
        assert_eq!(job, &id);
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["state"], "succeeded");
        assert_eq!(body["http_status"], 200);
    }
}

#[tokio::test]
async fn a_cancelled_job_notifies_too_and_a_hook_that_is_no_http_url_is_refused() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;
    let refused = send(
        "POST",
        &server.url("/client/nobody/work"),
        &[
            ("Prefer", "respond-async"),
            ("X-Pipe-Notify", "ftp://example.com/"),
        ],
        "",
    )
    .await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);

    let (calls, hook_url) = start_hook("127.0.0.1:0".parse().unwrap(), 0).await;
    let accepted = send(
        "POST",
        &server.url("/client/nobody/work"),
        &[
            ("Prefer", "respond-async"),
            ("X-Pipe-Notify", hook_url.as_str()),
        ],
        "",
    )
    .await;
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    let at = format!("/_pipe/jobs/{id}");
    // Queued for a client that never comes: nothing to tell yet.
    assert_eq!(
        get(&server.url(&format!("{at}/status"))).await.json()["notify"],
        Value::Null
    );
    let cancelled = send("DELETE", &server.url(&at), &[], "").await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    let sent = until_status(&server, &at, "the hook called", |status| {
        status["notify"]["state"] == "sent"
    })
    .await;
    assert_eq!(sent["notify"]["attempts"], 1);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1["state"], "cancelled");
    assert_eq!(calls[0].1["reason"], "cancelled by its caller");
}
