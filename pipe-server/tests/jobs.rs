//! Durable jobs across a real crash: a `pipe-server` process accepts jobs
//! for a client that is not connected, is killed with SIGKILL right after
//! the last 202, and is started again on the same state directory; the
//! client connects and every accepted job runs and completes.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use restpipe_tests::{InstalledServer, get_within, send};

const JOBS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_accepted_before_a_kill_9_are_delivered_after_the_restart() {
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let state = tempfile::tempdir().unwrap();
    installed.add_args(["--state-dir", state.path().to_str().unwrap()]);
    let mut server = installed.start().await;

    let mut locations = Vec::new();
    for i in 0..JOBS {
        let url = installed.url(&format!("/client/fault-client/cat//job-{i}"));
        let accepted = send("GET", &url, &[("Prefer", "respond-async")], "").await;
        assert_eq!(accepted.status, 202, "{accepted:?}");
        locations.push(accepted.headers["location"].to_str().unwrap().to_owned());
    }
    // Accepted means on disk: nothing of it may be lost to SIGKILL.
    let status = server.kill().await.unwrap();
    assert!(!status.success(), "{status}");

    let _server = installed.start().await;
    let _client = installed.start_client(Duration::from_millis(300)).await;
    for (i, at) in locations.iter().enumerate() {
        let done = get_within(
            &installed.url(&format!("{at}?wait=10")),
            Duration::from_secs(15),
        )
        .await;
        assert_eq!(done.status, 200, "job {i}: {done:?}");
        assert_eq!(done.headers["x-pipe-job-state"], "succeeded");
        let body = String::from_utf8_lossy(&done.body).into_owned();
        assert!(body.contains(&format!("job-{i}")), "job {i}: {body}");
    }
}
