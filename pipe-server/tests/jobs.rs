//! Durable jobs across a real crash: a `pipe-server` process accepts jobs
//! for a client that is not connected, is killed with SIGKILL right after
//! the last 202, and is started again on the same state directory; the
//! client connects and every accepted job runs and completes.
#![allow(missing_docs, clippy::unwrap_used)]

use std::process::Output;
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

/// `pipe-server jobs --http ADDR <args>`, run to its end.
async fn jobs_command(http: std::net::SocketAddr, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pipe-server"))
        .args(["jobs", "--http", &http.to_string()])
        .args(args)
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_command_lists_shows_cancels_and_purges() {
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let state = tempfile::tempdir().unwrap();
    installed.add_args(["--state-dir", state.path().to_str().unwrap()]);
    let _server = installed.start().await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let url = installed.url(&format!("/client/away/cat//job-{i}"));
        let accepted = send("GET", &url, &[("Prefer", "respond-async")], "").await;
        assert_eq!(accepted.status, 202, "{accepted:?}");
        ids.push(accepted.json()["id"].as_str().unwrap().to_owned());
    }
    let http = installed.http_addr();

    let listed = jobs_command(http, &["list"]).await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    for id in &ids {
        assert!(
            text(&listed.stdout).contains(id.as_str()),
            "{}",
            text(&listed.stdout)
        );
    }
    let shown = jobs_command(http, &["show", &ids[0]]).await;
    assert!(
        text(&shown.stdout).contains(r#""state": "queued""#),
        "{}",
        text(&shown.stdout)
    );

    let cancelled = jobs_command(http, &["cancel", &ids[0]]).await;
    assert!(cancelled.status.success(), "{}", text(&cancelled.stderr));
    assert!(text(&cancelled.stdout).contains(r#""state": "cancelled""#));
    let again = jobs_command(http, &["cancel", &ids[0]]).await;
    assert!(!again.status.success(), "a second cancel is refused");
    assert!(
        text(&again.stderr).contains("409"),
        "{}",
        text(&again.stderr)
    );
    let queued = jobs_command(http, &["list", "--state", "queued"]).await;
    let queued = text(&queued.stdout);
    assert!(
        queued.contains(ids[1].as_str()) && !queued.contains(ids[0].as_str()),
        "{queued}"
    );

    let purged = jobs_command(http, &["purge"]).await;
    assert!(purged.status.success(), "{}", text(&purged.stderr));
    assert!(
        text(&purged.stdout).contains(r#""purged": 1"#),
        "{}",
        text(&purged.stdout)
    );
    let gone = jobs_command(http, &["show", &ids[0]]).await;
    assert!(
        !gone.status.success() && text(&gone.stderr).contains("404"),
        "{}",
        text(&gone.stderr)
    );

    // A node that is not there says so.
    let nobody = jobs_command("127.0.0.1:1".parse().unwrap(), &["list"]).await;
    assert!(!nobody.status.success());
    assert!(
        text(&nobody.stderr).contains("cannot reach"),
        "{}",
        text(&nobody.stderr)
    );
}
