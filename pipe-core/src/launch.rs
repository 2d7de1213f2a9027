//! Starting and stopping whole nodes: what the binaries, the demo and the
//! end-to-end tests call. Each entry point takes listeners that are already
//! bound, so callers (and tests on `127.0.0.1:0`) choose the addresses.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::BackoffSettings;
use crate::client::ServerTarget;
use crate::handler::{Registry, Side};
use crate::http::{self, HttpAddr, HttpListener};
use crate::metrics::{Metrics, MetricsError};
use crate::node::{Node, NodeSettings};
use crate::tls::{TlsError, TlsIdentity};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The TLS identity is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Metrics are configured but cannot be sent (e.g. the statsd host does
    /// not resolve).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// A node whose tasks are running.
#[derive(Debug)]
pub struct RunningNode {
    node: Arc<Node>,
    http_addr: HttpAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RunningNode {
    /// The node's shared state (peers, handlers, settings).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where the local HTTP front listens.
    pub fn http_addr(&self) -> &HttpAddr {
        &self.http_addr
    }

    /// Cancelling this token stops the node.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves once the node has been told to stop and all its tasks ended.
    pub async fn wait(&self) {
        self.shutdown.cancelled().await;
        self.tasks.wait().await;
    }

    /// Stops the node: no new local requests, peers told to go away, requests
    /// in progress given the drain grace period.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
    }
}

/// Starts a server node: client nodes connect to `pipe`, local apps to `http`.
pub fn start_server(
    pipe: TcpListener,
    http: HttpListener,
    identity: &TlsIdentity,
    handlers: Registry,
    settings: NodeSettings,
    shutdown: CancellationToken,
) -> Result<RunningNode, LaunchError> {
    let tls = identity.server_config()?;
    let metrics = Metrics::from_settings(settings.statsd.as_ref())?;
    let node = Node::new(Side::Server, identity.name()?, handlers, settings, metrics);
    let http_addr = http.local_addr().map_err(|source| TlsError::Read {
        path: "local HTTP listener".into(),
        source,
    })?;
    http::log_listening(&http_addr);
    let tasks = TaskTracker::new();
    tasks.spawn(crate::server::run(
        pipe,
        tls,
        node.clone(),
        shutdown.clone(),
    ));
    spawn_http(&tasks, http, &node, &shutdown);
    tasks.close();
    Ok(RunningNode {
        node,
        http_addr,
        shutdown,
        tasks,
    })
}

/// Starts a client node that keeps a connection to `target`.
pub fn start_client(
    target: ServerTarget,
    http: HttpListener,
    identity: &TlsIdentity,
    handlers: Registry,
    settings: NodeSettings,
    backoff: BackoffSettings,
    shutdown: CancellationToken,
) -> Result<RunningNode, LaunchError> {
    let tls = identity.client_config()?;
    let metrics = Metrics::from_settings(settings.statsd.as_ref())?;
    let node = Node::new(Side::Client, identity.name()?, handlers, settings, metrics);
    let http_addr = http.local_addr().map_err(|source| TlsError::Read {
        path: "local HTTP listener".into(),
        source,
    })?;
    http::log_listening(&http_addr);
    let tasks = TaskTracker::new();
    tasks.spawn(crate::client::run(
        target,
        tls,
        node.clone(),
        backoff,
        shutdown.clone(),
    ));
    spawn_http(&tasks, http, &node, &shutdown);
    tasks.close();
    Ok(RunningNode {
        node,
        http_addr,
        shutdown,
        tasks,
    })
}

fn spawn_http(
    tasks: &TaskTracker,
    http: HttpListener,
    node: &Arc<Node>,
    shutdown: &CancellationToken,
) {
    let grace = node.settings().drain_grace;
    tasks.spawn(http::serve(http, node.clone(), shutdown.clone(), grace));
    tasks.spawn(crate::metrics::report(node.clone(), shutdown.clone()));
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
            _ = terminate => tracing::info!("SIGTERM: shutting down"),
        }
        trigger.cancel();
    });
    token
}
