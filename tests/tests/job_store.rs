//! The job store under load, with nodes in this process: a client that has
//! never connected gets every job queued for it, in submission order, each
//! once, counted by what its handler left in a file.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use restpipe_tests::{
    NodeSettings, Pki, Registry, Reply, Request, TestNode, connect_client, fast_settings,
    http_client, send_with, start_server,
};
use serde_json::json;

const ASYNC: (&str, &str) = ("Prefer", "respond-async");
/// Jobs queued before the client first connects.
const JOBS: usize = 10_000;
/// Submissions in flight at once: each batch is answered whole before the
/// next is sent, so every job of a batch was queued before any of the next.
const BATCH: usize = 100;

fn with_state(dir: &Path) -> NodeSettings {
    NodeSettings {
        state_dir: Some(dir.to_owned()),
        ..fast_settings()
    }
}

/// A client's handlers: `post_record` appends its body (a job's number) as
/// a line to `file`, the side effect the test counts.
fn recording(file: &Path) -> Registry {
    let mut registry = Registry::new();
    let file: PathBuf = file.to_owned();
    registry.register("post_record", move |request: Request| {
        let file = file.clone();
        async move {
            let mut line = request.body.to_vec();
            line.push(b'\n');
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)?
                .write_all(&line)?;
            Ok(Reply::json(&json!({ "recorded": true })))
        }
    });
    registry
}

/// A temporary directory in memory (`/dev/shm`) where there is one: the
/// deliverer takes one job at a time, with two commits (fsyncs) each, so a
/// backlog of 10,000 drains in minutes on a disk. Durability on a real disk
/// is what the kill tests prove; this one counts order, loss and repeats.
fn memory_backed_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// The unix milliseconds an id begins with (ids sort by creation).
fn created_ms(id: &str) -> u64 {
    u64::from_str_radix(&id[..12], 16).unwrap()
}

/// Submits jobs `0..JOBS` to `server` for the client `peer`, in batches;
/// returns each job's id, by number.
async fn submit_all(server: &TestNode, peer: &str) -> Vec<String> {
    let client = http_client();
    let url = server.url(&format!("/client/{peer}/record"));
    let mut ids = Vec::with_capacity(JOBS);
    for batch in 0..JOBS / BATCH {
        let submissions: Vec<_> = (batch * BATCH..(batch + 1) * BATCH)
            .map(|number| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    send_with(&client, "POST", &url, &[ASYNC], number.to_string()).await
                })
            })
            .collect();
        for (offset, submission) in submissions.into_iter().enumerate() {
            let accepted = submission.await.unwrap();
            assert_eq!(
                accepted.status,
                202,
                "job {}: {:?}",
                batch * BATCH + offset,
                accepted.body
            );
            ids.push(accepted.json()["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_for_a_client_never_connected_arrive_in_order_each_once() {
    let pki = Pki::new();
    let state = memory_backed_dir();
    let server = start_server(&pki, Registry::new(), with_state(state.path())).await;

    let started = Instant::now();
    let ids = submit_all(&server, "late").await;
    let submitted = started.elapsed();
    eprintln!("{JOBS} jobs submitted in {submitted:?}");
    let status = server.status().await;
    assert_eq!(status["jobs"]["queued_by_peer"]["late"], JOBS, "{status}");

    let effects = tempfile::tempdir().unwrap();
    let file = effects.path().join("records");
    let _client = connect_client(&pki, &server, "late", recording(&file)).await;
    let limit = Duration::from_secs(120);
    let delivering = Instant::now();
    loop {
        let status = server.status().await;
        let jobs = &status["jobs"]["by_state"];
        if jobs["succeeded"] == JOBS {
            assert_eq!(status["jobs"]["queued_by_peer"], json!({}), "{status}");
            break;
        }
        assert!(
            delivering.elapsed() < limit,
            "not every job ended within {limit:?}: {jobs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{JOBS} jobs submitted in {submitted:?}, delivered in {:?}",
        delivering.elapsed()
    );

    let text = std::fs::read_to_string(&file).unwrap();
    let numbers: Vec<usize> = text.lines().map(|line| line.parse().unwrap()).collect();
    assert_eq!(
        numbers.len(),
        JOBS,
        "the handler ran {} times",
        numbers.len()
    );
    let mut seen = vec![false; JOBS];
    for &number in &numbers {
        assert!(!seen[number], "job {number} ran twice");
        seen[number] = true;
    }
    // Submission order: a whole batch was queued before the next was sent,
    // and within a batch the store's order is its creation order.
    for (place, pair) in numbers.windows(2).enumerate() {
        let (before, after) = (pair[0], pair[1]);
        assert!(
            before / BATCH <= after / BATCH,
            "job {after} (batch {}) ran before job {before} (batch {}), at {place}",
            after / BATCH,
            before / BATCH
        );
        assert!(
            created_ms(&ids[before]) <= created_ms(&ids[after]),
            "job {after} ({}) ran after job {before} ({}), created later",
            ids[after],
            ids[before]
        );
    }
}
