//! Local API tokens on a real `pipe-server` as an operator runs it: tokens
//! made with `pipe-server token new --append`, the file given with
//! `--api-tokens`, changes put in force with a real SIGHUP (what `systemctl
//! reload` sends), a broken file refused at reload (the tokens in force
//! stay) and at start (the node does not start), and no secret in the log.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use restpipe_tests::files::path_arg;
use restpipe_tests::process::{self, stderr, stdout};
use restpipe_tests::{ANSWER_LIMIT, InstalledServer, NodeProcess, Response, bearer, send};

const PIPE_SERVER: &str = env!("CARGO_BIN_EXE_pipe-server");
/// How long the server may take to log what a SIGHUP did.
const LOG_LIMIT: Duration = Duration::from_secs(5);

/// `pipe-server token new NAME --handlers '*' --clients CLIENTS --append
/// FILE`: the new token's secret.
fn token_new(file: &Path, name: &str, clients: &str) -> String {
    let output = process::run_within(
        PIPE_SERVER,
        &[
            "token",
            "new",
            name,
            "--handlers",
            "get_*",
            "--clients",
            clients,
            "--append",
            path_arg(file),
        ],
        Duration::from_secs(10),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("shown this once"),
        "{}",
        stderr(&output)
    );
    stdout(&output).trim().to_owned()
}

/// `GET url` with `secret` as the bearer, answered within [`ANSWER_LIMIT`].
async fn get_as(url: &str, secret: &str) -> Response {
    let auth = bearer(secret);
    let headers = [("authorization", auth.as_str())];
    let request = send("GET", url, &headers, "");
    tokio::time::timeout(ANSWER_LIMIT, request).await.unwrap()
}

/// Sends SIGHUP and waits until the log holds `needle` `times` times.
async fn reload(server: &mut NodeProcess, needle: &str, times: usize) -> String {
    server.signal("HUP").unwrap();
    server
        .wait_for_log(LOG_LIMIT, needle, |log| {
            log.matches(needle).count() >= times
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_added_tokens_in_force_and_removed_ones_out() {
    let mut installed = InstalledServer::new(PIPE_SERVER);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let first = token_new(&file, "first", "fault-*");
    installed.add_args(["--api-tokens", path_arg(&file)]);
    let mut server = installed.start().await;
    let _client = installed.start_client(Duration::from_millis(300)).await;
    let time = installed.url("/client/fault-client/time");
    let status = installed.url("/_pipe/status");

    assert_eq!(get_as(&time, &first).await.status, 200);
    let refused = send("GET", &time, &[], "").await;
    assert_eq!(refused.status, 401);

    // A token added to the file is refused until the reload, then taken.
    let second = token_new(&file, "second", "*");
    assert_eq!(get_as(&status, &second).await.status, 401);
    reload(&mut server, "API tokens reloaded", 1).await;
    assert_eq!(get_as(&status, &second).await.status, 200);
    assert_eq!(get_as(&time, &second).await.status, 200);

    // A token taken out of the file is refused after the reload.
    let text = std::fs::read_to_string(&file).unwrap();
    let kept: Vec<&str> = text
        .split("[[token]]")
        .filter(|entry| !entry.trim().is_empty() && !entry.contains("name = \"first\""))
        .collect();
    std::fs::write(&file, format!("[[token]]{}", kept.join("[[token]]"))).unwrap();
    reload(&mut server, "API tokens reloaded", 2).await;
    assert_eq!(get_as(&time, &first).await.status, 401);
    assert_eq!(get_as(&time, &second).await.status, 200);

    // A broken file is refused and the tokens in force stay.
    std::fs::write(&file, "[[token]]\nname = \"half\"\n").unwrap();
    let log = reload(&mut server, "API token reload refused", 1).await;
    assert!(log.contains("missing field"), "{log}");
    assert_eq!(get_as(&time, &second).await.status, 200);

    // The log names tokens, never their secrets.
    let log = server
        .wait_for_log(LOG_LIMIT, "the log", |_| true)
        .await
        .unwrap();
    assert!(log.contains("API tokens in force"), "{log}");
    for secret in [&first, &second] {
        assert!(!log.contains(secret.as_str()), "a secret in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_command_sends_the_token_in_rp_api_token() {
    let mut installed = InstalledServer::new(PIPE_SERVER);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let secret = token_new(&file, "ops", "*");
    installed.add_args(["--api-tokens", path_arg(&file)]);
    installed.add_args(["--state-dir", path_arg(&dir.path().join("state"))]);
    let _server = installed.start().await;
    let jobs = |token: Option<&str>| {
        let mut command = tokio::process::Command::new(PIPE_SERVER);
        command
            .args(["jobs", "--http", &installed.http_addr().to_string(), "list"])
            .env_remove("RP_API_TOKEN");
        if let Some(token) = token {
            command.env("RP_API_TOKEN", token);
        }
        async move { command.output().await.unwrap() }
    };
    let refused = jobs(None).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));
    let listed = jobs(Some(&secret)).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("\"jobs\""), "{}", stdout(&listed));
}

#[test]
fn a_bad_token_file_is_refused_at_start_with_the_reason() {
    let installed = InstalledServer::new(PIPE_SERVER);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(
        &file,
        "[[token]]\nname = \"web\"\nsha256 = \"not-a-digest\"\nhandlers = [\"*\"]\nclients = [\"*\"]\n",
    )
    .unwrap();
    let cert_dir = installed.cert_dir();
    let serve = |tokens: &Path| {
        process::run_within(
            PIPE_SERVER,
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--cert-dir",
                path_arg(&cert_dir),
                "--statsd-host",
                "",
                "--api-tokens",
                path_arg(tokens),
            ],
            Duration::from_secs(20),
        )
    };
    let output = serve(&file);
    assert!(!output.status.success(), "it started");
    let expected = format!(
        "API token file {}: token \"web\": sha256 must be 64 hexadecimal digits",
        file.display()
    );
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
    let output = serve(&dir.path().join("missing.toml"));
    assert!(!output.status.success(), "it started");
    assert!(
        stderr(&output).contains("cannot read API token file"),
        "{}",
        stderr(&output)
    );
}
