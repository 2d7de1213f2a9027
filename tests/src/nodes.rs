//! Nodes in this process: server and client nodes started through
//! `pipe_core::launch` as the binaries start theirs, over real mutual TLS on
//! loopback ports the system picks, with settings that make failure paths
//! answer fast.
//!
//! [`launch_server`] and [`launch_client`] take listeners that already exist
//! (a unix-socket front, a pipe port being reused) and return pipe-core's own
//! error; the `start_*` functions bind `127.0.0.1:0` themselves, and the
//! ones without `try_` panic on failure, which fails the test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Reloadable;
use crate::http::{ANSWER_LIMIT, get_within};
use crate::pki::{Pki, SERVER_NAME};
use crate::wait::{POLL, eventually};
use crate::{
    BackoffSettings, Handlers, HttpAddr, HttpListener, LaunchError, Metrics, Node, NodeSettings,
    Proxies, Registry, RunningNode, ServerAddress, ServerTarget, Side, TlsIdentity, launch,
};

/// `127.0.0.1:0`: a port on loopback the system picks.
pub const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Bound on a node connecting to its peer.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// How a node in this process is started, beyond its identity and address.
#[derive(Debug)]
pub struct NodeOptions {
    /// The handlers it offers.
    pub handlers: Registry,
    /// Its settings.
    pub settings: NodeSettings,
    /// Client nodes: the name the server's certificate must carry.
    pub server_name: String,
    /// Client nodes: how fast it tries to reconnect.
    pub backoff: BackoffSettings,
    /// Client nodes: the HTTP proxy to the servers, if any.
    pub proxy: Proxies,
    /// Client nodes: the local address it connects from, if chosen.
    pub source_address: Option<IpAddr>,
    /// Cancelled to stop the node.
    pub shutdown: CancellationToken,
}

impl Default for NodeOptions {
    /// No handlers, [`fast_settings`], [`fast_backoff`], the test server's
    /// name.
    fn default() -> Self {
        Self {
            handlers: Registry::new(),
            settings: fast_settings(),
            server_name: SERVER_NAME.to_owned(),
            backoff: fast_backoff(),
            proxy: Proxies::direct(),
            source_address: None,
            shutdown: CancellationToken::new(),
        }
    }
}

impl NodeOptions {
    /// `handlers` and `settings`, and the defaults for the rest.
    pub fn new(handlers: Registry, settings: NodeSettings) -> Self {
        Self {
            handlers,
            settings,
            ..Self::default()
        }
    }
}

/// Settings with short waits, so failure paths answer fast: a request for a
/// missing peer is 503 after 0.3 s.
pub fn fast_settings() -> NodeSettings {
    NodeSettings {
        peer_wait: Duration::from_millis(300),
        ..NodeSettings::default()
    }
}

/// [`fast_settings`] with fast heartbeats: a silent peer is dropped in 0.6 s.
pub fn heartbeat_settings() -> NodeSettings {
    let mut settings = fast_settings();
    settings.connection.ping_interval = Duration::from_millis(150);
    settings.connection.dead_after = Duration::from_millis(600);
    settings
}

/// Reconnects within 0.05–0.5 s, so a test never waits long for a client.
pub fn fast_backoff() -> BackoffSettings {
    BackoffSettings {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        stable_after: Duration::from_secs(5),
    }
}

/// A local HTTP front on `127.0.0.1:<free port>`, and that address.
pub async fn loopback_front() -> anyhow::Result<(HttpListener, SocketAddr)> {
    let listener = HttpListener::bind(&HttpAddr::Tcp(LOOPBACK))
        .await
        .context("binding a local HTTP front on loopback")?;
    let HttpAddr::Tcp(addr) = listener
        .local_addr()
        .context("the local HTTP front's address")?
    else {
        anyhow::bail!("a front bound on a TCP address is not on TCP");
    };
    Ok((listener, addr))
}

/// Starts a server node on `pipe` and `front`.
pub async fn launch_server(
    pipe: tokio::net::TcpListener,
    front: HttpListener,
    identity: &TlsIdentity,
    options: NodeOptions,
) -> Result<RunningNode, LaunchError> {
    launch::start_server(
        pipe,
        front,
        identity,
        options.handlers,
        options.settings,
        options.shutdown,
    )
    .await
}

/// The server node at `server`, whose certificate must name `server_name`.
pub fn server_target(server: SocketAddr, server_name: &str) -> ServerTarget {
    servers_target(&[server], server_name)
}

/// The server nodes at `servers` (one at least), in that order, whose
/// certificates must name `server_name`.
pub fn servers_target(servers: &[SocketAddr], server_name: &str) -> ServerTarget {
    let address = |server: &SocketAddr| ServerAddress {
        host: server.ip().to_string(),
        port: server.port(),
    };
    let (first, others) = servers
        .split_first()
        .expect("a client node needs a server to dial");
    ServerTarget {
        server_name: Some(server_name.to_owned()),
        others: others.iter().map(address).collect(),
        ..ServerTarget::single(first.ip().to_string(), first.port())
    }
}

/// Starts a client node on `front` that keeps a connection to the server
/// at `server`.
pub fn launch_client(
    server: SocketAddr,
    front: HttpListener,
    identity: &TlsIdentity,
    options: NodeOptions,
) -> Result<RunningNode, LaunchError> {
    launch_client_to(&[server], front, identity, options)
}

/// Starts a client node on `front` that keeps a connection to one of the
/// server nodes at `servers`, failing over between them.
pub fn launch_client_to(
    servers: &[SocketAddr],
    front: HttpListener,
    identity: &TlsIdentity,
    options: NodeOptions,
) -> Result<RunningNode, LaunchError> {
    let target = ServerTarget {
        proxy: options.proxy,
        source_address: options.source_address,
        ..servers_target(servers, &options.server_name)
    };
    launch::start_client(
        target,
        front,
        identity,
        options.handlers,
        options.settings,
        options.backoff,
        options.shutdown,
    )
}

/// Starts a client node without a local HTTP front, on `runtime` and
/// tracked by `tasks`: the node and pipe-core's own reconnect loop dialling
/// `server` as `tls` presents it, which is all a server sees of a client, so
/// that thousands fit in one process. It reports to `metrics`. Returns the
/// node, to watch its peers.
pub fn spawn_frontless_client(
    runtime: &tokio::runtime::Handle,
    tasks: &TaskTracker,
    server: SocketAddr,
    name: String,
    tls: Arc<rustls::ClientConfig>,
    metrics: &Metrics,
    options: NodeOptions,
) -> Arc<Node> {
    spawn_frontless_client_to(runtime, tasks, &[server], name, tls, metrics, options)
}

/// [`spawn_frontless_client`] for a client that knows the server nodes at
/// `servers` (one at least) and fails over between them, as a client of a
/// cluster does.
pub fn spawn_frontless_client_to(
    runtime: &tokio::runtime::Handle,
    tasks: &TaskTracker,
    servers: &[SocketAddr],
    name: String,
    tls: Arc<rustls::ClientConfig>,
    metrics: &Metrics,
    options: NodeOptions,
) -> Arc<Node> {
    let node = Node::new(
        Side::Client,
        name,
        Handlers::new(options.handlers),
        options.settings,
        metrics.clone(),
    );
    tasks.spawn_on(
        pipe_core::run_client(
            ServerTarget {
                proxy: options.proxy,
                source_address: options.source_address,
                ..servers_target(servers, &options.server_name)
            },
            Arc::new(Reloadable::new(tls)),
            node.clone(),
            options.backoff,
            options.shutdown,
        ),
        runtime,
    );
    node
}

/// A node running in this process, and where to reach it.
#[derive(Debug)]
pub struct TestNode {
    /// The node itself: its state, its reloader, its shutdown.
    pub running: RunningNode,
    /// Its local HTTP front.
    pub http: SocketAddr,
    /// The pipe address (server nodes only).
    pub pipe: Option<SocketAddr>,
}

/// A server node with its pipe on `pipe` (port 0: any) and its front on a
/// free loopback port.
pub async fn try_start_server(
    pipe: SocketAddr,
    identity: &TlsIdentity,
    options: NodeOptions,
) -> anyhow::Result<TestNode> {
    crate::init_logging();
    let pipe = tokio::net::TcpListener::bind(pipe)
        .await
        .with_context(|| format!("binding the pipe listener on {pipe}"))?;
    let pipe_addr = pipe.local_addr()?;
    let (front, http) = loopback_front().await?;
    let running = launch_server(pipe, front, identity, options).await?;
    Ok(TestNode {
        running,
        http,
        pipe: Some(pipe_addr),
    })
}

/// A client node dialling `server`, its front on a free loopback port.
pub async fn try_start_client(
    server: SocketAddr,
    identity: &TlsIdentity,
    options: NodeOptions,
) -> anyhow::Result<TestNode> {
    try_start_client_to(&[server], identity, options).await
}

/// A client node dialling one of `servers`, its front on a free loopback
/// port.
pub async fn try_start_client_to(
    servers: &[SocketAddr],
    identity: &TlsIdentity,
    options: NodeOptions,
) -> anyhow::Result<TestNode> {
    crate::init_logging();
    let (front, http) = loopback_front().await?;
    let running = launch_client_to(servers, front, identity, options)?;
    Ok(TestNode {
        running,
        http,
        pipe: None,
    })
}

/// Tries to start a server node with `pki`'s server identity, `handlers`
/// and `settings`, which must refuse to start (a bad setting); returns why,
/// as the operator reads it.
pub async fn server_start_error(pki: &Pki, handlers: Registry, settings: NodeSettings) -> String {
    let options = NodeOptions::new(handlers, settings);
    match try_start_server(LOOPBACK, &pki.server(), options).await {
        Ok(_) => panic!("the server node started"),
        Err(error) => error.to_string(),
    }
}

/// A server node with `pki`'s server identity.
pub async fn start_server(pki: &Pki, handlers: Registry, settings: NodeSettings) -> TestNode {
    start_server_with(pki.server(), handlers, settings).await
}

/// A server node with `pki`'s server identity and the example handlers
/// (`get_time`, `get_cat`).
pub async fn example_server(pki: &Pki, settings: NodeSettings) -> TestNode {
    example_server_at(LOOPBACK, pki, settings).await
}

/// [`example_server`] with its pipe on `pipe`: a server restarted in place.
pub async fn example_server_at(pipe: SocketAddr, pki: &Pki, settings: NodeSettings) -> TestNode {
    let handlers = Registry::with_examples(Side::Server);
    start_server_at(pipe, pki.server(), handlers, settings).await
}

/// A server node with `identity`.
pub async fn start_server_with(
    identity: TlsIdentity,
    handlers: Registry,
    settings: NodeSettings,
) -> TestNode {
    start_server_at(LOOPBACK, identity, handlers, settings).await
}

/// A server node whose pipe listens on `pipe` (e.g. the port of a server
/// that was just stopped, to restart it in place).
async fn start_server_at(
    pipe: SocketAddr,
    identity: TlsIdentity,
    handlers: Registry,
    settings: NodeSettings,
) -> TestNode {
    try_start_server(pipe, &identity, NodeOptions::new(handlers, settings))
        .await
        .unwrap_or_else(|e| panic!("starting a server node: {e:#}"))
}

/// A client node with `identity` dialling `server` (it does not wait for
/// the connection).
pub async fn start_client(
    identity: TlsIdentity,
    server: SocketAddr,
    handlers: Registry,
    settings: NodeSettings,
) -> TestNode {
    try_start_client(server, &identity, NodeOptions::new(handlers, settings))
        .await
        .unwrap_or_else(|e| panic!("starting a client node: {e:#}"))
}

/// A client node with `identity` and `options` that knows the server nodes
/// at `servers` (it does not wait for a connection).
pub async fn start_client_to(
    identity: TlsIdentity,
    servers: &[SocketAddr],
    options: NodeOptions,
) -> TestNode {
    try_start_client_to(servers, &identity, options)
        .await
        .unwrap_or_else(|e| panic!("starting a client node: {e:#}"))
}

/// A server node and one client node connected to it, and the CA that
/// issued both identities.
pub struct Pipe {
    /// The CA.
    pub pki: Pki,
    /// The server node.
    pub server: TestNode,
    /// The client node.
    pub client: TestNode,
}

impl Pipe {
    /// A server node with `server_handlers` and `settings`, and a client
    /// node named `client` with `client_handlers` and [`fast_settings`],
    /// connected to it.
    pub async fn start(
        server_handlers: Registry,
        settings: NodeSettings,
        client: &str,
        client_handlers: Registry,
    ) -> Self {
        let pki = Pki::new();
        let server = start_server(&pki, server_handlers, settings).await;
        let client = connect_client(&pki, &server, client, client_handlers).await;
        Self {
            pki,
            server,
            client,
        }
    }
}

/// Starts a client node named `name` with `handlers` and [`fast_settings`],
/// and waits until it and the server have the connection.
pub async fn connect_client(
    pki: &Pki,
    server: &TestNode,
    name: &str,
    handlers: Registry,
) -> TestNode {
    connect_client_with(pki, server, name, handlers, fast_settings()).await
}

/// [`connect_client`] with `settings`.
pub async fn connect_client_with(
    pki: &Pki,
    server: &TestNode,
    name: &str,
    handlers: Registry,
    settings: NodeSettings,
) -> TestNode {
    let client = start_client(pki.client(name), server.pipe_addr(), handlers, settings).await;
    wait_for_client(server, name).await;
    wait_for_server(&client).await;
    client
}

/// Waits (bounded) until the server node lists `name` as connected.
pub async fn wait_for_client(server: &TestNode, name: &str) {
    let what = format!("client {name} connected");
    eventually(CONNECT_LIMIT, &what, || server.has_peer(name)).await;
}

/// Waits (bounded) until the client node is connected to its server.
pub async fn wait_for_server(client: &TestNode) {
    eventually(CONNECT_LIMIT, "client connected to its server", || {
        client.is_connected()
    })
    .await;
}

impl TestNode {
    /// `http://<its front><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Where client nodes connect to this server node.
    pub fn pipe_addr(&self) -> SocketAddr {
        self.pipe.expect("only server nodes have a pipe address")
    }

    /// Whether a peer named `name` is connected.
    pub fn has_peer(&self, name: &str) -> bool {
        self.running.node().peers().get(name).is_some()
    }

    /// The id of the connection this node holds for peer `name`; panics if
    /// it holds none.
    pub fn connection_id(&self, name: &str) -> u64 {
        self.running
            .node()
            .peers()
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not connected"))
            .connection_id()
    }

    /// Whether any peer is connected (for a client node: its server).
    pub fn is_connected(&self) -> bool {
        !self.running.node().peers().is_empty()
    }

    /// Stops the node: it drains, then its tasks end.
    pub async fn stop(self) {
        self.running.stop().await;
    }

    /// The node's `/_pipe/status`, which must answer 200 within
    /// [`ANSWER_LIMIT`].
    pub async fn status(&self) -> Value {
        let answer = get_within(&self.url("/_pipe/status"), ANSWER_LIMIT).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    /// The `link` part of a client node's `/_pipe/status`.
    pub async fn link(&self) -> Value {
        self.status().await["link"].clone()
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
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends `/server/time` to this client node until it answers 200 (each
    /// try within [`ANSWER_LIMIT`]), or fails after `limit`.
    pub async fn time_ok_within(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let answer = get_within(&self.url("/server/time"), ANSWER_LIMIT).await;
            if answer.status == 200 {
                assert!(
                    answer.json()["time_from_server"]
                        .as_f64()
                        .is_some_and(|time| time > 1.0e9),
                    "{answer:?}"
                );
                return;
            }
            assert!(
                started.elapsed() < limit,
                "/server/time not 200 within {limit:?}; last: {answer:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}
