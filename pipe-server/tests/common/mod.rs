//! Shared harness of the process-level tests: a real `pipe-server` process
//! with its own cert dir and ports, and client nodes in this test process.
// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pipe_core::BackoffSettings;
use pipe_core::ConnectionSettings;
use pipe_core::ServerTarget;
use pipe_core::TlsIdentity;
use pipe_core::identity::CertFiles;
use pipe_core::launch::{self, RunningNode};
use pipe_core::pki::{CertificateAuthority, IssueRequest, Role};
use pipe_core::{HttpAddr, HttpListener};
use pipe_core::{NodeSettings, Registry, Side};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const CLIENT: &str = "fault-client";
/// No request to a node may take longer than this to be answered.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(2);
/// How long a request waits for a missing server before 503.
pub const PEER_WAIT: Duration = Duration::from_millis(300);
/// Bound on the server process becoming ready.
pub const START_LIMIT: Duration = Duration::from_secs(10);

/// A CA, the server's cert dir and the two ports the server process uses,
/// kept across restarts. Prints the server logs if the test fails.
pub struct Fixture {
    pub ca: CertificateAuthority,
    pub pipe: SocketAddr,
    pub http: SocketAddr,
    pub starts: usize,
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
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
    pub async fn start_server(&mut self) -> ServerProcess {
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
    pub async fn start_client(&self, peer_wait: Duration) -> ClientNode {
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
        self.start_client_with(identity, peer_wait).await
    }

    /// A client node with the given identity (which may come from another CA).
    pub async fn start_client_with(
        &self,
        identity: TlsIdentity,
        peer_wait: Duration,
    ) -> ClientNode {
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

pub fn cert_dir(tmp: &Path) -> PathBuf {
    tmp.join("certs")
}

/// Two free loopback ports, both bound at once so they differ, then freed.
pub fn free_ports() -> (SocketAddr, SocketAddr) {
    let a = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    (a.local_addr().unwrap(), b.local_addr().unwrap())
}

/// Logs of the in-process client node go to the test's captured output.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The server process; SIGKILLed and reaped when dropped, whatever happened.
pub struct ServerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl ServerProcess {
    pub async fn wait_ready(&mut self, http: SocketAddr) {
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
    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "{status}");
    }

    /// Sends `signal` (STOP, CONT...) with kill(1).
    pub fn signal(&self, signal: &str) {
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

pub struct ClientNode {
    pub _running: RunningNode,
    pub http: SocketAddr,
}

impl ClientNode {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The `link` part of the client's `/_pipe/status`.
    pub async fn link(&self) -> Value {
        let answer = get(&self.url("/_pipe/status")).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.body["link"].clone()
    }

    /// Waits (bounded) until the status shows a link for which `condition`
    /// holds; returns that link.
    pub async fn link_until(
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
    pub async fn time_ok_within(&self, limit: Duration) {
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
pub struct Answer {
    pub status: u16,
    /// The body as JSON (`Null` if it is not JSON).
    pub body: Value,
    pub took: Duration,
}

/// One GET on a fresh connection; an error for a connection failure or no
/// answer within `limit`.
pub async fn try_get(url: &str, limit: Duration) -> Result<Answer, String> {
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
pub async fn get(url: &str) -> Answer {
    try_get(url, ANSWER_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
