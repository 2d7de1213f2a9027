//! Process-level faults of a real `pipe-server`: killed hard with SIGKILL,
//! frozen with SIGSTOP, restarted in place on the same ports, while a client
//! node (in this test process) keeps its link. Every wait is bounded and no
//! server process outlives its test.
// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pipe_core::backoff::BackoffSettings;
use pipe_core::client::ServerTarget;
use pipe_core::connection::ConnectionSettings;
use pipe_core::http::{HttpAddr, HttpListener};
use pipe_core::identity::CertFiles;
use pipe_core::launch::{self, RunningNode};
use pipe_core::pki::{CertificateAuthority, IssueRequest, Role};
use pipe_core::tls::TlsIdentity;
use pipe_core::{NodeSettings, Registry, Side};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const CLIENT: &str = "fault-client";
/// No request to a node may take longer than this to be answered.
const ANSWER_LIMIT: Duration = Duration::from_secs(2);
/// How long a request waits for a missing server before 503.
const PEER_WAIT: Duration = Duration::from_millis(300);
/// Bound on the server process becoming ready.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A CA, the server's cert dir and the two ports the server process uses,
/// kept across restarts. Prints the server logs if the test fails.
struct Fixture {
    ca: CertificateAuthority,
    pipe: SocketAddr,
    http: SocketAddr,
    starts: usize,
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        init_logging();
        let tmp = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("faults test CA").unwrap();
        let issued = ca
            .issue(&IssueRequest {
                ips: vec![Ipv4Addr::LOCALHOST.into()],
                ..IssueRequest::new("localhost", Role::Server)
            })
            .unwrap();
        let files = CertFiles::in_dir(&cert_dir(tmp.path()), Role::Server);
        std::fs::create_dir_all(cert_dir(tmp.path())).unwrap();
        std::fs::write(&files.cert, &issued.cert_pem).unwrap();
        std::fs::write(&files.key, &issued.key_pem).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&files.ca, ca.cert_pem()).unwrap();
        let (pipe, http) = free_ports();
        Self {
            ca,
            pipe,
            http,
            starts: 0,
            tmp,
        }
    }

    /// Starts `pipe-server serve` on the fixture's ports and waits (bounded)
    /// until its health endpoint answers.
    async fn start_server(&mut self) -> ServerProcess {
        self.starts += 1;
        let log = self.tmp.path().join(format!("server-{}.log", self.starts));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pipe-server"));
        // Nothing from the test's environment (RP_*, DEBUG...) reaches it.
        command.env_clear().env("NO_COLOR", "1");
        command.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        );
        let child = command
            .args(["serve", "--listen", &self.pipe.to_string()])
            .args(["--http", &self.http.to_string()])
            .arg("--cert-dir")
            .arg(cert_dir(self.tmp.path()))
            .args(["--ping-interval", "0.2", "--dead-after", "0.8"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("pipe-server starts");
        let mut server = ServerProcess { child, log };
        server.wait_ready(self.http).await;
        server
    }

    /// A client node in this process, connecting to the server's pipe port.
    async fn start_client(&self, peer_wait: Duration) -> ClientNode {
        let issued = self
            .ca
            .issue(&IssueRequest::new(CLIENT, Role::Client))
            .unwrap();
        let identity = TlsIdentity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            self.ca.cert_pem().as_bytes(),
        )
        .unwrap();
        let listener = HttpListener::bind(&HttpAddr::Tcp((Ipv4Addr::LOCALHOST, 0).into()))
            .await
            .unwrap();
        let HttpAddr::Tcp(http) = listener.local_addr().unwrap() else {
            unreachable!("bound a TCP address")
        };
        let settings = NodeSettings {
            peer_wait,
            connection: ConnectionSettings {
                ping_interval: Duration::from_millis(200),
                dead_after: Duration::from_millis(800),
                ..ConnectionSettings::default()
            },
            ..NodeSettings::default()
        };
        let backoff = BackoffSettings {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            stable_after: Duration::from_secs(5),
        };
        let running = launch::start_client(
            ServerTarget {
                host: "127.0.0.1".to_owned(),
                port: self.pipe.port(),
                server_name: Some("localhost".to_owned()),
            },
            listener,
            &identity,
            Registry::with_examples(Side::Client),
            settings,
            backoff,
            CancellationToken::new(),
        )
        .unwrap();
        ClientNode {
            _running: running,
            http,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for start in 1..=self.starts {
            let log = self.tmp.path().join(format!("server-{start}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            eprintln!(
                "---- pipe-server start {start} ({}) ----\n{text}",
                log.display()
            );
        }
    }
}

fn cert_dir(tmp: &Path) -> PathBuf {
    tmp.join("certs")
}

/// Two free loopback ports, both bound at once so they differ, then freed.
fn free_ports() -> (SocketAddr, SocketAddr) {
    let a = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    (a.local_addr().unwrap(), b.local_addr().unwrap())
}

/// Logs of the in-process client node go to the test's captured output.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The server process; SIGKILLed and reaped when dropped, whatever happened.
struct ServerProcess {
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    async fn wait_ready(&mut self, http: SocketAddr) {
        let url = format!("http://{http}/_pipe/health");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "pipe-server exited during start-up ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(answer) = try_get(&url, Duration::from_secs(1)).await {
                if answer.status == 200 {
                    assert_eq!(answer.body["status"], "ok", "{:?}", answer.body);
                    return;
                }
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "pipe-server not healthy within {START_LIMIT:?}: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then reap, so its ports are free on return.
    fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "{status}");
    }

    /// Sends `signal` (STOP, CONT...) with kill(1).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct ClientNode {
    _running: RunningNode,
    http: SocketAddr,
}

impl ClientNode {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The `link` part of the client's `/_pipe/status`.
    async fn link(&self) -> Value {
        let answer = get(&self.url("/_pipe/status")).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.body["link"].clone()
    }

    /// Waits (bounded) until the status shows a link for which `condition`
    /// holds; returns that link.
    async fn link_until(
        &self,
        limit: Duration,
        what: &str,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let link = self.link().await;
            if condition(&link) {
                return link;
            }
            assert!(
                started.elapsed() < limit,
                "not within {limit:?}: {what}; link: {link}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `/server/time` until it answers 200 (each try bounded), or
    /// fails after `limit`.
    async fn time_ok_within(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let answer = get(&self.url("/server/time")).await;
            if answer.status == 200 {
                assert!(
                    answer.body["time_from_server"].as_f64().unwrap() > 1.0e9,
                    "{:?}",
                    answer.body
                );
                return;
            }
            assert!(
                started.elapsed() < limit,
                "/server/time not 200 within {limit:?}; last: {} {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The body as JSON (`Null` if it is not JSON).
    body: Value,
    took: Duration,
}

/// One GET on a fresh connection; an error for a connection failure or no
/// answer within `limit`.
async fn try_get(url: &str, limit: Duration) -> Result<Answer, String> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Empty<Bytes>>();
    let began = Instant::now();
    let exchange = async {
        let response = client
            .get(url.parse().map_err(|e| format!("{url}: {e}"))?)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {url}: body: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("GET {url}: no answer within {limit:?}"))??;
    Ok(Answer {
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        took: began.elapsed(),
    })
}

/// A GET to a node that must answer, and within [`ANSWER_LIMIT`].
async fn get(url: &str) -> Answer {
    try_get(url, ANSWER_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_hard_and_restarted_on_the_same_port() {
    let mut fixture = Fixture::new();
    let mut server = fixture.start_server().await;
    let client = fixture.start_client(PEER_WAIT).await;
    client
        .link_until(Duration::from_secs(10), "connected", |l| {
            l["connected"] == true
        })
        .await;
    client.time_ok_within(Duration::from_secs(5)).await;

    server.kill_hard();
    let killed = Instant::now();
    // Until the client has seen the connection end a request may still be
    // sent on it (502); after that, 503 after the short peer wait.
    loop {
        let answer = get(&client.url("/server/time")).await;
        if answer.status == 503 {
            let error = answer.body["error"].as_str().unwrap();
            assert!(error.contains("no connection to the server"), "{error}");
            break;
        }
        assert_eq!(answer.status, 502, "server is dead: {answer:?}");
        assert!(killed.elapsed() < Duration::from_secs(2), "no 503 yet");
    }
    for _ in 0..3 {
        let answer = get(&client.url("/server/time")).await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.took < Duration::from_secs(1), "{answer:?}");
    }
    // It keeps trying, and says why it fails.
    let link = client
        .link_until(Duration::from_secs(5), "failed reconnect attempts", |l| {
            l["reconnect_attempts"].as_u64().unwrap() >= 2
        })
        .await;
    assert_eq!(link["connected"], false, "{link}");
    let error = link["last_error"].as_str().unwrap();
    assert!(error.contains("TCP connect"), "{error}");

    let _server = fixture.start_server().await;
    let restarted = Instant::now();
    client.time_ok_within(Duration::from_secs(5)).await;
    tracing::info!(took = ?restarted.elapsed(), "client back after the restart");
    let link = client.link().await;
    assert_eq!(link["connected"], true, "{link}");
    assert_eq!(link["reconnect_attempts"], 0, "reset on success: {link}");
    assert!(link["last_error"].is_string(), "history kept: {link}");
    assert!(link["last_error_at"].is_string(), "history kept: {link}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_frozen_with_sigstop_is_dropped_within_the_heartbeat_deadline() {
    let mut fixture = Fixture::new();
    let server = fixture.start_server().await;
    let client = fixture.start_client(PEER_WAIT).await;
    client
        .link_until(Duration::from_secs(10), "connected", |l| {
            l["connected"] == true
        })
        .await;
    client.time_ok_within(Duration::from_secs(5)).await;

    server.signal("STOP");
    let frozen = Instant::now();
    let link = client
        .link_until(
            Duration::from_secs(3),
            "frozen server dropped for its silence",
            |l| {
                l["connected"] == false
                    && l["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("heartbeat"))
            },
        )
        .await;
    let noticed = frozen.elapsed();
    tracing::info!(?noticed, %link, "frozen server dropped");
    // dead_after is 0.8 s: found within the deadline plus one ping interval
    // and scheduling slack, not after TCP's minutes.
    assert!(noticed < Duration::from_secs(2), "took {noticed:?}");
    for _ in 0..3 {
        let answer = get(&client.url("/server/time")).await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.took < Duration::from_secs(1), "{answer:?}");
    }

    server.signal("CONT");
    client.time_ok_within(Duration::from_secs(5)).await;
    let link = client.link().await;
    assert_eq!(link["connected"], true, "{link}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_restarting_server_succeeds() {
    let mut fixture = Fixture::new();
    let mut server = fixture.start_server().await;
    let client = fixture.start_client(Duration::from_secs(5)).await;
    client
        .link_until(Duration::from_secs(10), "connected", |l| {
            l["connected"] == true
        })
        .await;
    client.time_ok_within(Duration::from_secs(5)).await;

    server.kill_hard();
    client
        .link_until(Duration::from_secs(2), "disconnected", |l| {
            l["connected"] == false
        })
        .await;
    let url = client.url("/server/time");
    let waiting = tokio::spawn(async move { try_get(&url, Duration::from_secs(8)).await });
    // It waits for the server instead of failing at once...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "{:?}", waiting.await);

    let _server = fixture.start_server().await;
    // ...and is answered by the restarted one, inside its peer wait.
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body["time_from_server"].as_f64().unwrap() > 1.0e9);
    assert!(answer.took < Duration::from_secs(5), "{answer:?}");
}
