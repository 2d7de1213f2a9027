//! Durable jobs against real faults, with a real `pipe-server` process on a
//! real disk: the submitter killed with SIGKILL after the far handler ran, a
//! store another process holds, a corrupt store, and a full disk. Every
//! answer is bounded: a job store that hangs fails the test instead of
//! stalling it.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use restpipe_tests::files::{lines, path_arg};
use restpipe_tests::process::{free_ports, run_within, stderr};
use restpipe_tests::{
    InstalledServer, NodeOptions, NodeProcess, NodeSettings, Registry, Reply, Request, Response,
    Side, eventually, get_within, send, try_start_client,
};

const ASYNC: (&str, &str) = ("Prefer", "respond-async");
/// Bound on one answer of the server's front.
const ANSWER: Duration = Duration::from_secs(10);
/// Bound on a job ending once its client is connected.
const DELIVERY: Duration = Duration::from_secs(15);
/// Bound on a `pipe-server` that must refuse to start.
const REFUSAL: Duration = Duration::from_secs(10);
/// The store's file in a state directory (`pipe_core::jobs::STORE_FILE`).
const STORE_FILE: &str = "jobs.redb";
/// The client node of these tests (the one [`InstalledServer::start_client`]
/// starts too).
const CLIENT: &str = "fault-client";

/// An installed `pipe-server` keeping jobs in `state`.
fn installed_with_state(state: &Path) -> InstalledServer {
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    installed.add_args(["--state-dir", path_arg(state)]);
    installed
}

/// Sends one request to `installed`'s front, which must answer within
/// [`ANSWER`].
async fn request(
    installed: &InstalledServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Response {
    let url = installed.url(path);
    tokio::time::timeout(ANSWER, send(method, &url, headers, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no answer within {ANSWER:?}"))
}

/// Submits `GET /client/<CLIENT>/cat//<word>` (the example handler answers
/// `{"result_from_client": word}`) as a job with `body`.
async fn submit_cat(installed: &InstalledServer, word: &str, body: Vec<u8>) -> Response {
    let path = format!("/client/{CLIENT}/cat//{word}");
    request(installed, "GET", &path, &[ASYNC], body).await
}

fn location(response: &Response) -> String {
    response.headers["location"].to_str().unwrap().to_owned()
}

/// Waits (bounded) for the job at `at` to end; it must have succeeded with
/// the example `cat` handler's answer to `word`.
async fn assert_cat_done(installed: &InstalledServer, at: &str, word: &str) {
    let done = get_within(&installed.url(&format!("{at}?wait=10")), DELIVERY).await;
    assert_eq!(done.status, 200, "{at} ({word}): {done:?}");
    assert_eq!(done.headers["x-pipe-job-state"], "succeeded", "{at}");
    assert_eq!(done.json()["result_from_client"], word, "{at}");
}

/// Runs `pipe-server serve` on `state` with free ports and `installed`'s
/// cert dir; it must exit, and fail, within [`REFUSAL`]. Returns what it
/// said on stderr.
fn refused_start(installed: &InstalledServer, state: &Path) -> String {
    let (pipe, http) = free_ports().unwrap();
    let (pipe, http) = (pipe.to_string(), http.to_string());
    let output = run_within(
        env!("CARGO_BIN_EXE_pipe-server"),
        &[
            "serve",
            "--listen",
            &pipe,
            "--http",
            &http,
            "--cert-dir",
            path_arg(&installed.cert_dir()),
            "--state-dir",
            path_arg(state),
        ],
        REFUSAL,
    );
    let said = stderr(&output);
    assert!(!output.status.success(), "it started: {said}");
    assert!(!said.contains("panicked"), "{said}");
    said
}

/// A client node in this process named [`CLIENT`], dialling `installed`,
/// with its own job store in `state` and `handlers`.
async fn receiver(
    installed: &InstalledServer,
    state: &Path,
    handlers: Registry,
) -> restpipe_tests::TestNode {
    let options = NodeOptions::new(
        handlers,
        NodeSettings {
            state_dir: Some(state.to_owned()),
            ..restpipe_tests::fast_settings()
        },
    );
    try_start_client(
        installed.pipe_addr(),
        &installed.pki().client(CLIENT),
        options,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_killed_after_the_handler_ran_is_answered_from_the_kept_result() {
    let state = tempfile::tempdir().unwrap();
    let mut installed = installed_with_state(state.path());
    let mut server = installed.start().await;

    // The receiving client keeps jobs too. Its handler's side effect is a
    // line in a file; it then holds its reply until the test lets it go.
    let effects = tempfile::tempdir().unwrap();
    let file = effects.path().join("effects");
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let mut handlers = Registry::with_examples(Side::Client);
    let (side_effects, held) = (file.clone(), release.clone());
    handlers.register("post_work", move |request: Request| {
        let (file, release) = (side_effects.clone(), held.clone());
        async move {
            let mut effects = std::fs::read_to_string(&file).unwrap_or_default();
            effects.push_str(&format!("ran redelivered={}\n", request.redelivered));
            std::fs::write(&file, &effects)?;
            let _permit = release.acquire().await;
            let runs = effects.lines().count();
            Ok(Reply::json(&BTreeMap::from([("runs", runs)])))
        }
    });
    let kept = tempfile::tempdir().unwrap();
    let client = receiver(&installed, kept.path(), handlers).await;
    eventually(ANSWER, "the client connected", || client.is_connected()).await;

    let accepted = request(
        &installed,
        "POST",
        &format!("/client/{CLIENT}/work"),
        &[ASYNC],
        b"w".to_vec(),
    )
    .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let at = location(&accepted);
    eventually(ANSWER, "the handler ran", || lines(&file).len() == 1).await;

    // The submitter dies between the handler's work and its result.
    let status = server.kill().await.unwrap();
    assert!(!status.success(), "{status}");
    release.add_permits(1);

    // Started again, it delivers the job again: the client answers from
    // what it kept, without running the handler.
    let _server = installed.start().await;
    let done = get_within(&installed.url(&format!("{at}?wait=10")), DELIVERY).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert_eq!(done.headers["x-pipe-job-state"], "succeeded");
    assert_eq!(done.json()["runs"], 1, "{done:?}");
    assert_eq!(
        lines(&file),
        ["ran redelivered=false"],
        "the handler ran again"
    );
    let status = request(&installed, "GET", &format!("{at}/status"), &[], Vec::new()).await;
    assert_eq!(
        status.json()["attempts"],
        2,
        "delivered again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_state_dir_stops_and_the_first_keeps_its_jobs() {
    let state = tempfile::tempdir().unwrap();
    let mut installed = installed_with_state(state.path());
    let server = installed.start().await;
    let mut accepted = Vec::new();
    for i in 0..5 {
        let answer = submit_cat(&installed, &format!("before-{i}"), Vec::new()).await;
        assert_eq!(answer.status, 202, "{answer:?}");
        accepted.push((location(&answer), format!("before-{i}")));
    }

    let said = refused_start(&installed, state.path());
    assert!(said.contains("open in another process"), "{said}");
    assert!(said.contains(STORE_FILE), "{said}");

    // The first one carries on with its store.
    let answer = submit_cat(&installed, "after", Vec::new()).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    accepted.push((location(&answer), "after".to_owned()));
    let status = request(&installed, "GET", "/_pipe/status", &[], Vec::new()).await;
    assert_eq!(
        status.json()["jobs"]["queued_by_peer"][CLIENT],
        6,
        "{status:?}"
    );

    // Stopped and started again, it delivers all it accepted.
    let stopped = server.stop(Duration::from_secs(10)).await.unwrap();
    assert!(stopped.success(), "{stopped}");
    let _server = installed.start().await;
    let _client = installed.start_client(Duration::from_millis(300)).await;
    for (at, word) in &accepted {
        assert_cat_done(&installed, at, word).await;
    }
}

/// Where garbage goes over the store file, as a failing disk might leave
/// it.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Bytes of its header.
    Header,
    /// Every page that holds bytes of the jobs' bodies (a live one among
    /// them: the store copies pages on write and reuses freed ones).
    BodyPages,
}

/// Has a `pipe-server` accept five jobs on a new state directory and stop
/// (cleanly: a store left by a crash is checked whole when it is opened
/// again anyway), writes garbage over the store file where `damage` says,
/// and starts one again, which must refuse: returns what it said. The file must be left as
/// it was: refused, not replaced by an empty store, so what is left of the
/// jobs is there for the operator to recover.
async fn refusal_of_a_store_damaged(damage: Damage) -> String {
    let state = tempfile::tempdir().unwrap();
    let mut installed = installed_with_state(state.path());
    let server = installed.start().await;
    for i in 0..5 {
        let answer = submit_cat(&installed, &format!("job-{i}"), vec![b'j'; 8192]).await;
        assert_eq!(answer.status, 202, "{answer:?}");
    }
    let stopped = server.stop(Duration::from_secs(10)).await.unwrap();
    assert!(stopped.success(), "{stopped}");

    let file = state.path().join(STORE_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    match damage {
        Damage::Header => bytes[9..73].fill(0x5a),
        Damage::BodyPages => {
            let holds_body = |page: &[u8]| page.windows(64).any(|run| run == [b'j'; 64]);
            let mut damaged = 0;
            for page in bytes.chunks_mut(4096).filter(|page| holds_body(page)) {
                page.fill(0x5a);
                damaged += 1;
            }
            assert!(damaged > 0, "no page holds a body");
        }
    }
    std::fs::write(&file, &bytes).unwrap();

    let said = refused_start(&installed, state.path());
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "the store was changed"
    );
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_store_stops_the_server_clearly_and_is_left_as_it_was() {
    for damage in [Damage::Header, Damage::BodyPages] {
        let said = refusal_of_a_store_damaged(damage).await;
        assert!(
            said.contains("cannot open the job store"),
            "{damage:?}: {said}"
        );
        assert!(said.contains(STORE_FILE), "{damage:?}: {said}");
        assert!(said.contains("corrupted"), "{damage:?}: {said}");
    }
}

/// A tmpfs of a few MiB mounted on a temporary directory, unmounted when
/// dropped: a disk that fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount -o size=`); `None`, with a note,
    /// where mounting is not permitted (not root, no CAP_SYS_ADMIN).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Self { dir }),
            Ok(output) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs ({})",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("skipped: cannot run mount: {error}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process still holding a file there cannot keep the
        // mount alive past the test.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fails the test if `server` has panicked or exited.
async fn assert_alive(server: &mut NodeProcess) {
    server
        .wait_for_log(Duration::ZERO, "no panic", |log| !log.contains("panicked"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_jobs_clearly_and_delivers_the_accepted_ones_once_freed() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    // Room the test frees once the disk is full, as an operator deletes
    // something else on it.
    let ballast: PathBuf = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0x42; 2 * 1024 * 1024]).unwrap();
    let mut installed = installed_with_state(&disk.path().join("state"));
    let mut server = installed.start().await;

    let body = || vec![b'x'; 64 * 1024];
    let mut accepted = Vec::new();
    let refused = loop {
        assert!(accepted.len() < 100, "4 MiB took 100 jobs of 64 KiB");
        let word = format!("job-{}", accepted.len());
        let answer = submit_cat(&installed, &word, body()).await;
        if answer.status != 202 {
            break answer;
        }
        accepted.push((location(&answer), word));
    };
    assert!(accepted.len() >= 5, "only {} jobs fitted", accepted.len());
    // Refused clearly, and so is every job after it, each answered.
    for refused in [refused, submit_cat(&installed, "more", body()).await] {
        assert!(
            refused.status == 507,
            "{refused:?}: {:?}",
            String::from_utf8_lossy(&refused.body)
        );
        let error = refused.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("No space left on device"), "{error}");
    }
    assert_alive(&mut server).await;
    // Accepted jobs are all still there.
    for (at, _) in &accepted {
        let job = request(&installed, "GET", &format!("{at}/status"), &[], Vec::new()).await;
        assert_eq!(job.status, 200, "{at}: {job:?}");
        assert_eq!(job.json()["state"], "queued", "{at}");
    }

    // Space again: new jobs are taken, without a restart...
    std::fs::remove_file(&ballast).unwrap();
    let mut tries = 0;
    let after = loop {
        let answer = submit_cat(&installed, "after", body()).await;
        if answer.status == 202 {
            break answer;
        }
        tries += 1;
        assert!(
            tries < 100,
            "no job taken after space was freed: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    accepted.push((location(&after), "after".to_owned()));
    // ...and everything accepted is delivered.
    let _client = installed.start_client(Duration::from_millis(300)).await;
    for (at, word) in &accepted {
        assert_cat_done(&installed, at, word).await;
    }
    assert_alive(&mut server).await;
}
