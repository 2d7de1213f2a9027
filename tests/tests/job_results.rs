//! Large job results live as files beside the store and stream out on a
//! poll; small ones stay in the store. Both go with the job's retention.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use restpipe_tests::{
    NodeSettings, Pki, Registry, Reply, Request, connect_client_with, fast_settings, get, send,
    start_server,
};

const BIG: usize = 3 * 1024 * 1024 + 7;

fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| (i * 31 % 251) as u8).collect()
}

fn results_in(state: &Path) -> Vec<String> {
    match std::fs::read_dir(state.join("results")) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn a_large_result_is_a_file_that_streams_out_and_goes_with_the_job() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let settings = NodeSettings {
        state_dir: Some(state.path().to_owned()),
        job_retention: Duration::from_secs(2),
        ..fast_settings()
    };
    let server = start_server(&pki, Registry::new(), settings).await;
    let mut registry = Registry::new();
    registry.register("get_big", |_request: Request| async {
        Ok(Reply::bytes("application/x-report", big_body()))
    });
    registry.register("get_small", |_request: Request| async {
        Ok(Reply::bytes("text/plain", "small"))
    });
    let _client = connect_client_with(&pki, &server, "reporter", registry, fast_settings()).await;

    let submit = |noun: &str| {
        let url = server.url(&format!("/client/reporter/{noun}"));
        async move {
            let accepted = send("GET", &url, &[("Prefer", "respond-async")], "").await;
            assert_eq!(accepted.status, 202, "{:?}", accepted.body);
            accepted.json()["id"].as_str().unwrap().to_owned()
        }
    };
    let (big, small) = (submit("big").await, submit("small").await);
    let done = get(&server.url(&format!("/_pipe/jobs/{big}?wait=10"))).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.headers["content-type"], "application/x-report");
    assert_eq!(done.headers["content-length"], BIG.to_string().as_str());
    assert!(done.body == big_body(), "the body differs");
    let small_done = get(&server.url(&format!("/_pipe/jobs/{small}?wait=10"))).await;
    assert_eq!(
        (small_done.status, &small_done.body[..]),
        (200, &b"small"[..])
    );
    // Only the large one has a file, whole and of its length.
    assert_eq!(results_in(state.path()), vec![big.clone()]);
    let file = state.path().join("results").join(&big);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), BIG as u64);

    // Past the retention, the job and its file are gone.
    let started = Instant::now();
    while !results_in(state.path()).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the file outlived its job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&server.url(&format!("/_pipe/jobs/{big}"))).await.status,
        404
    );
}

#[tokio::test]
async fn a_node_running_a_peers_job_keeps_a_large_result_as_a_file_too() {
    let pki = Pki::new();
    let (sent, kept) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_state = |dir: &Path| NodeSettings {
        state_dir: Some(dir.to_owned()),
        job_retention: Duration::from_secs(2),
        ..fast_settings()
    };
    let server = start_server(&pki, Registry::new(), with_state(sent.path())).await;
    let mut registry = Registry::new();
    registry.register("get_big", |_request: Request| async {
        Ok(Reply::bytes("application/x-report", big_body()))
    });
    let _client =
        connect_client_with(&pki, &server, "keeper", registry, with_state(kept.path())).await;

    let url = server.url("/client/keeper/big");
    let accepted = send("GET", &url, &[("Prefer", "respond-async")], "").await;
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    let done = get(&server.url(&format!("/_pipe/jobs/{id}?wait=10"))).await;
    assert_eq!(done.status, 200);
    assert!(done.body == big_body(), "the body differs");
    // The receiving node kept the result as a file, named by sender and id.
    let received = kept.path().join("received").join(format!("localhost-{id}"));
    assert_eq!(std::fs::metadata(&received).unwrap().len(), BIG as u64);

    let started = Instant::now();
    while received.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the kept result outlived its retention"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_repeat_of_a_job_with_a_large_result_is_answered_from_its_file() {
    let pki = Pki::new();
    let (sent, kept) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_state = |dir: &Path| NodeSettings {
        state_dir: Some(dir.to_owned()),
        ..fast_settings()
    };
    let server = start_server(&pki, Registry::new(), with_state(sent.path())).await;
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    let mut registry = Registry::new();
    registry.register("get_slowbig", move |_request: Request| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(Reply::bytes("application/x-report", big_body()))
        }
    });
    let _client = connect_client_with(
        &pki,
        &server,
        "slowkeeper",
        registry,
        with_state(kept.path()),
    )
    .await;
    let url = server.url("/client/slowkeeper/slowbig");
    let accepted = send("GET", &url, &[("Prefer", "respond-async")], "").await;
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    while runs.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The link drops mid-run: the run goes on, its result is kept (a file),
    // and the redelivery is answered from it.
    let connection = server.running.node().peers().get("slowkeeper").unwrap();
    connection.close(
        restpipe_tests::wire::go_away::Reason::Shutdown,
        "a test cuts the link",
    );
    let done = get(&server.url(&format!("/_pipe/jobs/{id}?wait=10"))).await;
    assert_eq!(done.status, 200, "{:?}", done.headers);
    assert!(done.body == big_body(), "the body differs");
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "ran twice"
    );
    let status = get(&server.url(&format!("/_pipe/jobs/{id}/status")))
        .await
        .json();
    assert_eq!(
        status["attempts"], 2,
        "delivered again after the drop: {status}"
    );
}
