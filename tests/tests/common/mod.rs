//! Shared harness of the end-to-end tests: a throwaway CA, real nodes on
//! `127.0.0.1:0` over real mutual TLS, and a plain HTTP client, so each test
//! reads like the README: start nodes, send HTTP, look at HTTP.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pipe_core::BackoffSettings;
use pipe_core::ServerTarget;
use pipe_core::TlsIdentity;
use pipe_core::launch::{self, RunningNode};
use pipe_core::pki::{CertificateAuthority, IssueRequest, IssuedIdentity, Role};
use pipe_core::{HttpAddr, HttpListener};
use pipe_core::{NodeSettings, Registry, Side};
use tokio_util::sync::CancellationToken;

pub mod proxy;

/// A throwaway certificate authority.
pub struct Pki {
    pub ca: CertificateAuthority,
}

impl Pki {
    pub fn new() -> Self {
        Self {
            ca: CertificateAuthority::generate("restpipe test CA").unwrap(),
        }
    }

    pub fn issue(&self, request: IssueRequest) -> IssuedIdentity {
        self.ca.issue(&request).unwrap()
    }

    pub fn identity(&self, issued: &IssuedIdentity) -> TlsIdentity {
        TlsIdentity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            self.ca.cert_pem().as_bytes(),
        )
        .unwrap()
    }

    /// The server identity: `localhost` and 127.0.0.1.
    pub fn server(&self) -> TlsIdentity {
        self.identity(&self.issue(IssueRequest {
            ips: vec!["127.0.0.1".parse().unwrap()],
            ..IssueRequest::new("localhost", Role::Server)
        }))
    }

    pub fn client(&self, name: &str) -> TlsIdentity {
        self.identity(&self.issue(IssueRequest::new(name, Role::Client)))
    }
}

/// Settings with fast heartbeats: a silent peer is dropped in 0.6 s.
pub fn heartbeat_settings() -> NodeSettings {
    let mut settings = fast_settings();
    settings.connection.ping_interval = Duration::from_millis(150);
    settings.connection.dead_after = Duration::from_millis(600);
    settings
}

/// Polls `condition` every 10 ms until it holds, failing after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Settings with short waits, so failure paths answer fast.
pub fn fast_settings() -> NodeSettings {
    NodeSettings {
        peer_wait: Duration::from_millis(300),
        ..NodeSettings::default()
    }
}

pub fn fast_backoff() -> BackoffSettings {
    BackoffSettings {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        stable_after: Duration::from_secs(5),
    }
}

pub struct TestNode {
    pub running: RunningNode,
    pub http: SocketAddr,
    /// The pipe address (server nodes only).
    pub pipe: Option<SocketAddr>,
}

impl TestNode {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn pipe_addr(&self) -> SocketAddr {
        self.pipe.expect("only server nodes have a pipe address")
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

async fn local_front() -> (HttpListener, SocketAddr) {
    let listener = HttpListener::bind(&"127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let HttpAddr::Tcp(addr) = listener.local_addr().unwrap() else {
        unreachable!("bound a TCP address")
    };
    (listener, addr)
}

pub async fn start_server(pki: &Pki, handlers: Registry, settings: NodeSettings) -> TestNode {
    start_server_with(pki.server(), handlers, settings).await
}

/// Logs to the test's captured output (shown when a test fails);
/// `RUST_LOG` sets the level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

pub async fn start_server_with(
    identity: TlsIdentity,
    handlers: Registry,
    settings: NodeSettings,
) -> TestNode {
    start_server_at("127.0.0.1:0".parse().unwrap(), identity, handlers, settings).await
}

/// A server node whose pipe listens on `pipe` (e.g. the port of a server
/// that was just stopped, to restart it in place).
pub async fn start_server_at(
    pipe: SocketAddr,
    identity: TlsIdentity,
    handlers: Registry,
    settings: NodeSettings,
) -> TestNode {
    init_logging();
    let pipe = tokio::net::TcpListener::bind(pipe).await.unwrap();
    let pipe_addr = pipe.local_addr().unwrap();
    let (http, http_addr) = local_front().await;
    let running = launch::start_server(
        pipe,
        http,
        &identity,
        handlers,
        settings,
        CancellationToken::new(),
    )
    .unwrap();
    TestNode {
        running,
        http: http_addr,
        pipe: Some(pipe_addr),
    }
}

pub async fn start_client(
    identity: TlsIdentity,
    server: SocketAddr,
    handlers: Registry,
    settings: NodeSettings,
) -> TestNode {
    let (http, http_addr) = local_front().await;
    let running = launch::start_client(
        ServerTarget {
            host: server.ip().to_string(),
            port: server.port(),
            server_name: Some("localhost".to_owned()),
        },
        http,
        &identity,
        handlers,
        settings,
        fast_backoff(),
        CancellationToken::new(),
    )
    .unwrap();
    TestNode {
        running,
        http: http_addr,
        pipe: None,
    }
}

/// Starts a client node named `name` with the example handlers plus
/// `extra`, and waits until the server has it.
pub async fn connect_client(
    pki: &Pki,
    server: &TestNode,
    name: &str,
    handlers: Registry,
) -> TestNode {
    let client = start_client(
        pki.client(name),
        server.pipe_addr(),
        handlers,
        fast_settings(),
    )
    .await;
    wait_for_client(server, name).await;
    wait_for_server(&client).await;
    client
}

/// Waits (bounded) until the server node lists `name` as connected.
pub async fn wait_for_client(server: &TestNode, name: &str) {
    let peers = server.running.node().peers();
    tokio::time::timeout(Duration::from_secs(10), async {
        while peers.get(name).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("client {name} did not connect within 10 s"));
}

/// Waits (bounded) until the client node is connected to its server.
pub async fn wait_for_server(client: &TestNode) {
    let peers = client.running.node().peers();
    tokio::time::timeout(Duration::from_secs(10), async {
        while peers.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("client did not connect within 10 s");
}

pub fn examples(side: Side) -> Registry {
    Registry::with_examples(side)
}

/// A response as a test looks at it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `X-Event-Return-Code`, if present.
    pub fn code(&self) -> Option<u32> {
        self.headers
            .get("x-event-return-code")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole response.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    send_with(&http_client(), method, url, headers, body).await
}

pub async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Response {
        status,
        headers,
        body,
    }
}

pub async fn get(url: &str) -> Response {
    send("GET", url, &[], Bytes::new()).await
}
