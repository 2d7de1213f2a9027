//! Executable handlers end to end: shell scripts in a handler directory on
//! the server node, called through the client node's HTTP front. Arguments
//! as argv, the body on stdin, the context in the environment, stdout as the
//! reply, the exit status as the return code; deadlines and cancels kill the
//! whole process group; only plain, executable, regular files ever run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use restpipe_tests::{
    NodeSettings, Pipe, Pki, Registry, Response, Side, TestNode, eventually, fast_settings, get,
    http_client, send, server_start_error,
};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const CLIENT: &str = "exec-client";

/// A server node with a handler directory holding `scripts`, and a client
/// node connected to it.
struct Bench {
    dir: tempfile::TempDir,
    server: TestNode,
    client: TestNode,
}

impl Bench {
    async fn start(settings: NodeSettings, scripts: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in scripts {
            script(dir.path(), name, body);
        }
        let settings = NodeSettings {
            handler_dir: Some(dir.path().to_owned()),
            ..settings
        };
        let Pipe { server, client, .. } = Pipe::start(
            Registry::with_examples(Side::Server),
            settings,
            CLIENT,
            Registry::with_examples(Side::Client),
        )
        .await;
        Self {
            dir,
            server,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        self.client.url(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Writes an executable `/bin/sh` script `name` into `dir`.
fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn text(response: &Response) -> &str {
    std::str::from_utf8(&response.body).unwrap()
}

/// Whether process `pid` is still running (a zombie waiting for a reaper
/// that may never come, e.g. in a container without an init, is not).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The pids a script wrote to `file` (its own, then its background child's).
async fn pids_in(file: PathBuf) -> Vec<u32> {
    let mut pids = Vec::new();
    eventually(Duration::from_secs(5), "the script wrote its pids", || {
        pids = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect();
        pids.len() == 2
    })
    .await;
    pids
}

/// Sends a request and reads the body, which may fail (a streamed reply that
/// was cut off).
async fn send_lenient(url: &str) -> (u16, Result<Bytes, String>) {
    let request = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = http_client().request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await;
    (
        status,
        body.map(|b| b.to_bytes()).map_err(|e| format!("{e:#}")),
    )
}

const SLEEPY: &str = "sleep 30 &\necho \"$$ $!\" > pids\nwait";

#[tokio::test]
async fn args_body_and_context_reach_the_program() {
    let bench = Bench::start(
        fast_settings(),
        &[
            (
                "get_argv",
                r#"printf 'Content-Type: text/plain\n\n'; echo "$#"; printf '[%s]\n' "$@""#,
            ),
            ("post_echo", "cat"),
            (
                "post_env",
                "printf 'Content-Type: text/plain\\n\\n'; env; echo \"CWD=$(pwd)\"",
            ),
            ("get_files_report", "echo report"),
        ],
    )
    .await;

    let argv = get(&bench.url("/server/argv//a%20b/c//%C3%A9t%C3%A9")).await;
    assert_eq!((argv.status, argv.code()), (200, Some(0)));
    assert_eq!(argv.content_type(), "text/plain");
    assert_eq!(text(&argv), "4\n[a b]\n[c]\n[]\n[été]\n");

    let echo = send("POST", &bench.url("/server/echo"), &[], "hello\0world").await;
    assert_eq!((echo.status, &echo.body[..]), (200, &b"hello\0world"[..]));
    assert_eq!(echo.content_type(), "application/octet-stream");
    let echo = send(
        "POST",
        &bench.url("/server/echo"),
        &[("content-type", "application/json")],
        r#"{"a": [1, 2]}"#,
    )
    .await;
    assert_eq!(echo.content_type(), "application/json");
    assert_eq!(echo.json(), json!({ "a": [1, 2] }));

    let report = get(&bench.url("/server/files/report")).await;
    assert_eq!((report.status, text(&report)), (200, "report\n"));

    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let env = send(
        "POST",
        &bench.url("/server/env?x=1&y=two%20words"),
        &[("content-type", "text/plain")],
        "body",
    )
    .await;
    assert_eq!(env.status, 200, "{}", text(&env));
    let vars: std::collections::BTreeMap<&str, &str> = text(&env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    assert_eq!(vars["RP_PEER"], CLIENT);
    assert_eq!(vars["RP_VERB"], "post");
    assert_eq!(vars["RP_NOUN"], "env");
    assert_eq!(vars["RP_HANDLER"], "post_env");
    assert_eq!(vars["RP_QUERY"], "x=1&y=two%20words");
    assert_eq!(vars["RP_CONTENT_TYPE"], "text/plain");
    assert_eq!(vars["RP_ARGS_COUNT"], "0");
    assert!(vars["RP_REQUEST_ID"].parse::<u64>().is_ok(), "{vars:?}");
    let deadline: f64 = vars["RP_DEADLINE"].parse().unwrap();
    assert!(
        deadline > before.as_secs_f64() + 25.0 && deadline < before.as_secs_f64() + 31.0,
        "deadline {deadline} is not about 30 s after {before:?}"
    );
    let timeout_ms: u64 = vars["RP_TIMEOUT_MS"].parse().unwrap();
    assert!((25_000..=30_000).contains(&timeout_ms), "{timeout_ms}");
    assert_eq!(vars["PATH"], "/usr/local/bin:/usr/bin:/bin");
    assert_eq!(vars["LANG"], "C.UTF-8");
    assert_eq!(
        Path::new(vars["CWD"]),
        bench.dir.path().canonicalize().unwrap()
    );
    // Nothing of the node's own environment leaks in.
    assert!(
        !vars.keys().any(|k| k.starts_with("CARGO") || *k == "HOME"),
        "{vars:?}"
    );
}

#[tokio::test]
async fn the_exit_status_is_the_return_code_and_stdout_the_body() {
    let bench = Bench::start(
        fast_settings(),
        &[
            ("get_json", r#"echo '{"ok": true}'"#),
            ("get_three", "echo partial; exit 3"),
            (
                "get_csv",
                r"printf 'Content-Type: text/csv\r\n\r\na,b\n1,2\n'",
            ),
            ("get_text", "echo hello"),
            ("get_noisy", "echo 'secret diagnostics' >&2; echo fine"),
            ("get_killed", "echo doomed; kill -9 $$"),
            ("get_forgetful", "sleep 30 &\necho done"),
        ],
    )
    .await;

    let ok = get(&bench.url("/server/json")).await;
    assert_eq!((ok.status, ok.code()), (200, Some(0)));
    assert_eq!(ok.content_type(), "application/json");
    assert_eq!(ok.json(), json!({ "ok": true }));

    let three = get(&bench.url("/server/three")).await;
    assert_eq!((three.status, three.code()), (200, Some(3)));
    assert_eq!(text(&three), "partial\n");

    let csv = get(&bench.url("/server/csv")).await;
    assert_eq!(csv.content_type(), "text/csv");
    assert_eq!(text(&csv), "a,b\n1,2\n");

    let plain = get(&bench.url("/server/text")).await;
    assert_eq!(plain.content_type(), "application/octet-stream");
    assert_eq!(text(&plain), "hello\n");

    // Stderr is for the operator's log, not the caller.
    let noisy = get(&bench.url("/server/noisy")).await;
    assert_eq!((noisy.status, text(&noisy)), (200, "fine\n"));

    // A background job left behind does not hold the reply open.
    let begun = Instant::now();
    let forgetful = get(&bench.url("/server/forgetful")).await;
    assert_eq!((forgetful.status, text(&forgetful)), (200, "done\n"));
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "{:?}",
        begun.elapsed()
    );

    let killed = get(&bench.url("/server/killed")).await;
    assert_eq!((killed.status, killed.code()), (500, Some(251)));
    let message = killed.json()["exception"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("killed by signal 9"), "{message}");
}

#[tokio::test]
async fn the_deadline_kills_the_whole_process_group() {
    let bench = Bench::start(fast_settings(), &[("get_sleepy", SLEEPY)]).await;
    let begun = Instant::now();
    let reply = send(
        "GET",
        &bench.url("/server/sleepy"),
        &[("x-pipe-timeout", "0.5")],
        "",
    )
    .await;
    assert_eq!(reply.status, 504);
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "{:?}",
        begun.elapsed()
    );
    let pids = pids_in(bench.path("pids")).await;
    eventually(
        Duration::from_secs(2),
        "the script and its background sleep are gone",
        || !pids.iter().any(|&pid| alive(pid)),
    )
    .await;
}

#[tokio::test]
async fn a_caller_hanging_up_kills_the_process_group() {
    let bench = Bench::start(fast_settings(), &[("get_sleepy", SLEEPY)]).await;
    let mut caller = tokio::net::TcpStream::connect(bench.client.http)
        .await
        .unwrap();
    caller
        .write_all(b"GET /server/sleepy HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let pids = pids_in(bench.path("pids")).await;
    assert!(pids.iter().all(|&pid| alive(pid)), "running: {pids:?}");
    drop(caller);
    eventually(
        Duration::from_secs(3),
        "the script and its background sleep are gone after the caller left",
        || !pids.iter().any(|&pid| alive(pid)),
    )
    .await;
}

#[tokio::test]
async fn only_plain_executable_regular_files_run() {
    let bench = Bench::start(
        fast_settings(),
        &[
            ("get_ok", "echo ok"),
            (".get_secret", "touch ran-secret; echo secret"),
            ("get_dotted.sh", "touch ran-dotted; echo dotted"),
        ],
    )
    .await;
    let dir = bench.dir.path();
    script(dir, "get_plain", "touch ran-plain; echo plain");
    std::fs::set_permissions(
        dir.join("get_plain"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink("/bin/echo", dir.join("get_link")).unwrap();
    std::os::unix::fs::symlink(dir.join("get_ok"), dir.join("get_alias")).unwrap();
    std::fs::create_dir(dir.join("get_folder")).unwrap();

    assert_eq!(text(&get(&bench.url("/server/ok")).await), "ok\n");
    for path in [
        "/server/link",
        "/server/alias",
        "/server/plain",
        "/server/folder",
        "/server/dotted.sh",
    ] {
        let reply = get(&bench.url(path)).await;
        assert_eq!((reply.status, reply.code()), (404, Some(255)), "{path}");
    }
    for path in [
        "/server/.get_secret",
        "/server/.secret",
        "/server/../get_ok",
        "/server/..%2F.get_secret",
        "/server/x/..",
    ] {
        let reply = get(&bench.url(path)).await;
        assert_ne!(reply.status, 200, "{path}: {:?}", reply.body);
    }
    for marker in ["ran-secret", "ran-dotted", "ran-plain"] {
        assert!(!bench.path(marker).exists(), "{marker}");
    }

    // The status page lists what the directory offers, after the built-ins.
    let status = get(&bench.server.url("/_pipe/status")).await.json();
    assert_eq!(
        status["handlers"],
        json!(["get_cat", "get_time", "get_ok"]),
        "{status}"
    );
}

#[tokio::test]
async fn programs_are_found_per_request_and_built_ins_come_first() {
    let bench = Bench::start(fast_settings(), &[("get_time", "echo from the directory")]).await;
    let time = get(&bench.url("/server/time")).await;
    assert!(
        time.json()["time_from_server"].as_f64().is_some(),
        "{time:?}"
    );

    let missing = get(&bench.url("/server/late")).await;
    assert_eq!((missing.status, missing.code()), (404, Some(255)));
    script(bench.dir.path(), "get_late", "echo here now");
    let late = get(&bench.url("/server/late")).await;
    assert_eq!((late.status, text(&late)), (200, "here now\n"));
    std::fs::remove_file(bench.path("get_late")).unwrap();
    assert_eq!(get(&bench.url("/server/late")).await.status, 404);
}

#[tokio::test]
async fn output_past_the_body_limit_is_refused() {
    let scripts = [
        ("get_flood", "head -c 2097152 /dev/zero"),
        ("get_fails_late", "head -c 600000 /dev/zero; exit 3"),
        ("get_big", "head -c 600000 /dev/zero"),
    ];
    // Caught while the output is still collected: a clean failure.
    let small = Bench::start(
        NodeSettings {
            max_body_bytes: 64 * 1024,
            ..fast_settings()
        },
        &scripts,
    )
    .await;
    let flood = get(&small.url("/server/flood")).await;
    assert_eq!((flood.status, flood.code()), (500, Some(251)));
    let message = flood.json()["exception"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("output exceeded the limit of 65536 bytes"),
        "{message}"
    );

    // Caught once the reply streams: the body is cut off, never whole.
    let larger = Bench::start(
        NodeSettings {
            max_body_bytes: 1024 * 1024,
            ..fast_settings()
        },
        &scripts,
    )
    .await;
    let (status, body) = send_lenient(&larger.url("/server/flood")).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "{:?}", body.map(|b| b.len()));
    // So is a streamed reply whose program then fails.
    let (_, body) = send_lenient(&larger.url("/server/fails_late")).await;
    assert!(body.is_err(), "{:?}", body.map(|b| b.len()));
    // A streamed reply whose program succeeds arrives whole.
    let big = get(&larger.url("/server/big")).await;
    assert_eq!((big.status, big.body.len()), (200, 600_000));
    assert!(big.body.iter().all(|&b| b == 0));
}

#[tokio::test]
async fn large_bodies_pass_through_a_program() {
    let bench = Bench::start(
        fast_settings(),
        &[("post_echo", "cat"), ("post_ignore", "echo ignored")],
    )
    .await;
    let body: Bytes = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<_>>()
        .into();
    let echo = send("POST", &bench.url("/server/echo"), &[], body.clone()).await;
    assert_eq!(echo.status, 200);
    assert_eq!(echo.body.len(), body.len());
    assert!(echo.body == body, "the body came back changed");

    // A program that never reads its stdin neither hangs nor fails.
    let ignore = send("POST", &bench.url("/server/ignore"), &[], body).await;
    assert_eq!((ignore.status, text(&ignore)), (200, "ignored\n"));
}

#[tokio::test]
async fn programs_wait_for_one_of_max_exec_processes_places() {
    let settings = NodeSettings {
        max_exec_processes: 1,
        ..fast_settings()
    };
    let bench = Bench::start(
        settings,
        &[("get_nap", "echo $$ >> pids; sleep 5; echo done")],
    )
    .await;
    let first = tokio::spawn({
        let url = bench.url("/server/nap");
        async move { get(&url).await }
    });
    let started = || {
        std::fs::read_to_string(bench.path("pids"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    eventually(Duration::from_secs(5), "the first program started", || {
        started() == 1
    })
    .await;
    // The one place is taken: the next event waits, then is told so.
    let second = send(
        "GET",
        &bench.url("/server/nap"),
        &[("X-Pipe-Timeout", "0.5")],
        "",
    )
    .await;
    assert_eq!(second.status, 503);
    assert_eq!(second.json()["exception"]["class"], "Busy");
    assert_eq!(started(), 1, "a second program ran");
    first.abort();
}

#[tokio::test]
async fn a_missing_handler_directory_stops_the_node_from_starting() {
    let pki = Pki::new();
    let settings = NodeSettings {
        handler_dir: Some("/nonexistent/restpipe-handlers".into()),
        ..fast_settings()
    };
    let message = server_start_error(&pki, Registry::with_examples(Side::Server), settings).await;
    assert!(
        message.contains("/nonexistent/restpipe-handlers"),
        "{message}"
    );
}
