//! Durable jobs on a real `pipe-client` process killed with SIGKILL while
//! its executable handler runs: started again on its state directory, it
//! runs the job again flagged as a redelivery (`RP_REDELIVERY=1`), and the
//! job ends once, with that run's result. The submitting server node runs in
//! this process.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use restpipe_tests::files::{lines, path_arg};
use restpipe_tests::process::free_ports;
use restpipe_tests::{
    IssueRequest, NodeProcess, NodeSettings, Pki, Registry, Role, SERVER_NAME, eventually,
    fast_settings, get_within, send, start_server, wait_for_client,
};

/// The client node's name.
const CLIENT: &str = "branch";
/// Bound on the client process becoming healthy, and on the handler
/// starting.
const START_LIMIT: Duration = Duration::from_secs(10);
/// Bound on the job ending once the client is back.
const DELIVERY: Duration = Duration::from_secs(15);

/// A `pipe-client` installation in a temporary directory, as an operator
/// sets one up: its identity in a cert dir, a handler directory, a state
/// directory, and a port for its front, kept across restarts. Prints the
/// log of every start if the test fails.
struct InstalledClient {
    dir: tempfile::TempDir,
    server: SocketAddr,
    http: SocketAddr,
    logs: Vec<PathBuf>,
}

impl InstalledClient {
    /// Installs the identity of [`CLIENT`] from `pki`, for a client of the
    /// server node whose pipe is at `server`.
    fn new(pki: &Pki, server: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let issued = pki.issue(IssueRequest::new(CLIENT, Role::Client));
        pki.install(&dir.path().join("certs"), Role::Client, &issued)
            .unwrap();
        std::fs::create_dir(dir.path().join("handlers")).unwrap();
        std::fs::set_permissions(
            dir.path().join("handlers"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let (http, _) = free_ports().unwrap();
        Self {
            dir,
            server,
            http,
            logs: Vec::new(),
        }
    }

    /// Writes the executable handler `name` with the text `script`.
    fn add_handler(&self, name: &str, script: &str) {
        let path = self.dir.path().join("handlers").join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A file of the test's own beside the installation.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `pipe-client serve` with nothing from the test's environment,
    /// and waits (bounded) until its front answers.
    async fn start(&mut self) -> NodeProcess {
        let root = self.dir.path();
        let log = root.join(format!("client-{}.log", self.logs.len() + 1));
        self.logs.push(log.clone());
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pipe-client"));
        command.env_clear().env("NO_COLOR", "1");
        command.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        );
        command
            .args(["serve", "--server", &self.server.to_string()])
            .args(["--server-name", SERVER_NAME])
            .args(["--http", &self.http.to_string()])
            .args(["--cert-dir", path_arg(&root.join("certs"))])
            .args(["--handler-dir", path_arg(&root.join("handlers"))])
            .args(["--state-dir", path_arg(&root.join("state"))])
            .args(["--reconnect-min", "0.05", "--reconnect-max", "0.3"]);
        let mut client = NodeProcess::spawn(command, &log).unwrap();
        client
            .wait_healthy(self.http, START_LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        client
    }
}

impl Drop for InstalledClient {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (start, log) in self.logs.iter().enumerate() {
            eprintln!(
                "---- pipe-client start {} ----\n{}",
                start + 1,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// Whether process `pid` runs (exists and has not exited).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_mid_run_runs_the_job_again_as_a_redelivery_and_it_ends_once() {
    let pki = Pki::new();
    let sent = tempfile::tempdir().unwrap();
    let settings = NodeSettings {
        state_dir: Some(sent.path().to_owned()),
        ..fast_settings()
    };
    let server = start_server(&pki, Registry::new(), settings).await;

    let mut installed = InstalledClient::new(&pki, server.pipe_addr());
    let (effects, release) = (installed.file("effects"), installed.file("release"));
    // A run's start and end are lines in a file, the side effects the test
    // counts; between them it waits for the test's go-ahead.
    installed.add_handler(
        "post_work",
        &format!(
            r#"#!/bin/sh
echo "start $RP_REDELIVERY $$" >> '{effects}'
while [ ! -e '{release}' ]; do sleep 0.02; done
echo "done $RP_REDELIVERY" >> '{effects}'
echo "{{\"redelivery\": $RP_REDELIVERY}}"
"#,
            effects = effects.display(),
            release = release.display(),
        ),
    );
    let mut client = installed.start().await;
    wait_for_client(&server, CLIENT).await;

    let accepted = send(
        "POST",
        &server.url(&format!("/client/{CLIENT}/work")),
        &[("Prefer", "respond-async"), ("X-Pipe-Timeout", "20")],
        "",
    )
    .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let at = accepted.headers["location"].to_str().unwrap().to_owned();
    eventually(START_LIMIT, "the handler started", || {
        lines(&effects).len() == 1
    })
    .await;

    // The receiving node dies mid-run.
    let status = client.kill().await.unwrap();
    assert!(!status.success(), "{status}");
    // Its executable is a process group of its own: it outlives the node,
    // still running (waiting for the go-ahead).
    let first = lines(&effects)[0].clone();
    assert!(first.starts_with("start 0 "), "{first}");
    let orphan = first.rsplit(' ').next().unwrap().to_owned();
    assert!(running(&orphan), "the first run outlives its node");
    let waiting = get_within(&server.url(&format!("{at}/status")), DELIVERY).await;
    let state = waiting.json()["state"].as_str().unwrap().to_owned();
    assert!(["queued", "delivered"].contains(&state.as_str()), "{state}");

    // Started again, the node first kills what its last life left running,
    // so the interrupted run never overlaps the redelivered one: given the
    // go-ahead, only the second run goes on. The job ends once.
    let _client = installed.start().await;
    assert!(
        !running(&orphan),
        "the first run is gone once the node is up"
    );
    std::fs::write(&release, "").unwrap();
    let done = get_within(&server.url(&format!("{at}?wait=10")), DELIVERY).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert_eq!(done.headers["x-pipe-job-state"], "succeeded");
    assert_eq!(done.json()["redelivery"], 1, "{done:?}");
    // A first run left alive would see the go-ahead within 20 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let runs = lines(&effects);
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(runs[1].starts_with("start 1 "), "{runs:?}");
    assert_eq!(runs[2], "done 1", "{runs:?}");
    let status = get_within(&server.url(&format!("{at}/status")), DELIVERY).await;
    assert_eq!(status.json()["attempts"], 2, "{status:?}");
    let listed = get_within(&server.url("/_pipe/jobs"), DELIVERY).await;
    assert_eq!(listed.json()["jobs"].as_array().unwrap().len(), 1);
}
