//! Durable jobs while they run: a Rust handler reports progress on its
//! request, an executable writes lines on descriptor 3, and the job's
//! caller sees the latest figure (and the state `running`) in `GET
//! /_pipe/jobs/<id>`; a finished job shows 100. Cancelling a running job
//! stops its handler on the far node.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use restpipe_tests::{
    NodeSettings, Pki, Registry, Reply, Request, Response, TestNode, connect_client_with,
    fast_settings, get, send, start_server,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

fn with_state(dir: &Path) -> NodeSettings {
    NodeSettings {
        state_dir: Some(dir.to_owned()),
        ..fast_settings()
    }
}

async fn submit(server: &TestNode, path: &str) -> String {
    let accepted = send(
        "POST",
        &server.url(path),
        &[("Prefer", "respond-async")],
        "",
    )
    .await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    location(&accepted)
}

fn location(response: &Response) -> String {
    response.headers[http::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Polls the job at `at` until its state is `state` with `progress`.
async fn until_progress(server: &TestNode, at: &str, state: &str, progress: u64) -> Value {
    let started = Instant::now();
    loop {
        let status = get(&server.url(&format!("{at}/status"))).await.json();
        if status["state"] == state && status["progress"] == progress {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never {state} at {progress}%: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rust_handler_reports_progress_on_its_request() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;
    let (reported, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let mut registry = Registry::new();
    let (told, go) = (reported.clone(), release.clone());
    registry.register("post_convert", move |request: Request| {
        let (told, go) = (told.clone(), go.clone());
        async move {
            request.progress.report(10);
            request.progress.report(40);
            told.notify_one();
            go.notified().await;
            Ok(Reply::json(&json!({ "converted": true })))
        }
    });
    let _client = connect_client_with(&pki, &server, "worker", registry, fast_settings()).await;

    let at = submit(&server, "/client/worker/convert").await;
    reported.notified().await;
    // While the handler waits, the caller sees where it is.
    let status = until_progress(&server, &at, "running", 40).await;
    assert_eq!(status["handler"], "post_convert");
    let waiting = get(&server.url(&at)).await;
    assert_eq!(
        (waiting.status, &waiting.json()["progress"]),
        (202, &json!(40))
    );

    release.notify_one();
    let done = get(&server.url(&format!("{at}?wait=10"))).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.json(), json!({ "converted": true }));
    until_progress(&server, &at, "succeeded", 100).await;
}

#[tokio::test]
async fn an_executable_reports_progress_on_descriptor_3() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;
    let handlers = tempfile::tempdir().unwrap();
    // `set -e`: a write to descriptor 3 must never fail, job or not. A line
    // that is no figure is ignored; the job waits for a file to appear.
    let script = handlers.path().join("post_render");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -e\necho 'half done' >&3\necho \"${RP_PROGRESS_FD}5%\" >&3\n\
         while [ ! -e release ]; do sleep 0.02; done\necho '{\"rendered\": true}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = NodeSettings {
        handler_dir: Some(handlers.path().to_owned()),
        ..fast_settings()
    };
    let _client = connect_client_with(&pki, &server, "renderer", Registry::new(), settings).await;

    let at = submit(&server, "/client/renderer/render").await;
    // RP_PROGRESS_FD is 3, so the script reports "35%".
    until_progress(&server, &at, "running", 35).await;
    std::fs::write(handlers.path().join("release"), "").unwrap();
    let done = get(&server.url(&format!("{at}?wait=10"))).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.json(), json!({ "rendered": true }));

    // Called synchronously, the same script writes to /dev/null.
    let direct = send("POST", &server.url("/client/renderer/render"), &[], "").await;
    assert_eq!(direct.status, 200, "{:?}", direct.body);
    assert_eq!(direct.json(), json!({ "rendered": true }));
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_far_handler() {
    let pki = Pki::new();
    let (sent, kept) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = start_server(&pki, Registry::new(), with_state(sent.path())).await;
    let stopped = Arc::new(Notify::new());
    let mut registry = Registry::new();
    let told = stopped.clone();
    registry.register("post_hold", move |request: Request| {
        let told = told.clone();
        async move {
            request.progress.report(5);
            request.cancelled.cancelled().await;
            told.notify_one();
            Ok(Reply::json(&json!({ "held": "until cancelled" })))
        }
    });
    // The client keeps jobs too: its runs outlive a dropped connection,
    // but not the caller's cancel.
    let _client =
        connect_client_with(&pki, &server, "holder", registry, with_state(kept.path())).await;
    let at = submit(&server, "/client/holder/hold").await;
    until_progress(&server, &at, "running", 5).await;

    let cancelled = send("DELETE", &server.url(&at), &[], "").await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.json()["state"], "cancelled");
    tokio::time::timeout(Duration::from_secs(5), stopped.notified())
        .await
        .expect("the far handler was not stopped");
    let gone = get(&server.url(&at)).await;
    assert_eq!(gone.status, 410);
}

#[tokio::test]
async fn an_at_most_once_job_cut_mid_run_ends_failed_instead_of_running_again() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut registry = Registry::new();
    let counted = runs.clone();
    registry.register("post_charge", move |_request: Request| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Reply::json(&json!({ "charged": true })))
        }
    });
    // The client keeps no jobs: a second delivery would run again.
    let _client = connect_client_with(&pki, &server, "till", registry, fast_settings()).await;
    let accepted = send(
        "POST",
        &server.url("/client/till/charge"),
        &[
            ("Prefer", "respond-async"),
            ("X-Pipe-Delivery", "at-most-once"),
        ],
        "",
    )
    .await;
    let at = location(&accepted);
    let started = Instant::now();
    while runs.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connection = server.running.node().peers().get("till").unwrap();
    connection.close(
        restpipe_tests::wire::go_away::Reason::Shutdown,
        "a test cuts the link",
    );

    let ended = get(&server.url(&format!("{at}?wait=10"))).await;
    let status = ended.json();
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains("interrupted"),
        "{status}"
    );
    // Long enough for a redelivery to have run, had there been one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "ran twice"
    );
}
