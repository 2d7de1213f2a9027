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
