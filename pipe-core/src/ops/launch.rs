//! Starting and stopping whole nodes: what the binaries, the demo and the
//! end-to-end tests call. Each entry point takes listeners that are already
//! bound, so callers (and tests on `127.0.0.1:0`) choose the addresses.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::SetIdentityArgs;
use super::identity;
use crate::front::{self, HttpAddr, HttpListener, TokenError, TokenGate};
use crate::handlers::{
    ExecDirectory, Forwards, GroupLedger, Handlers, Policy, PolicyError, Registry,
};
use crate::link::{CertFiles, Reloadable, Role, TlsError, TlsIdentity};
use crate::node::cluster::Cluster;
use crate::node::jobs::{JobStore, Jobs};
use crate::node::{BackoffSettings, Metrics, MetricsError, Node, NodeSettings, ServerTarget};
use crate::wire::Side;

/// How often `--watch-certs` looks at the identity files' modification times.
const CERT_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// The local HTTP listener cannot tell its address.
    #[error("local HTTP listener: {0}")]
    Http(std::io::Error),
    /// The access policy file is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The API token file is unusable.
    #[error(transparent)]
    ApiTokens(#[from] TokenError),
    /// A handler source (forward, handler directory) is misconfigured.
    #[error("handlers: {0}")]
    Handlers(String),
    /// The job store cannot be opened: the node does not run without the
    /// durability it was configured with.
    #[error(transparent)]
    Jobs(#[from] crate::node::jobs::StoreError),
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] crate::node::cluster::ClusterError),
}

/// Why a reload of the identity files was refused (the current identity
/// stays in use).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// An identity file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The files do not form a valid identity for this node.
    #[error("the new identity is invalid: {0}")]
    Invalid(identity::IdentityError),
    /// TLS could not be set up from them.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Why `set-identity` installed nothing.
#[derive(Debug, thiserror::Error)]
pub enum SetIdentityError {
    /// The cert dir to install into could not be worked out.
    #[error(transparent)]
    Destination(#[from] super::config::ConfigError),
    /// A check failed; nothing was installed.
    #[error("identity not installed: {0}")]
    NotInstalled(identity::IdentityError),
}

/// The node's handlers: `registry` first, then what `settings` configures
/// (forwards, the handler directory, its running groups noted in `ledger`),
/// under its access policy, if any.
pub fn build_handlers(
    registry: Registry,
    settings: &NodeSettings,
    ledger: Option<Arc<GroupLedger>>,
) -> Result<Handlers, LaunchError> {
    let mut handlers = Handlers::new(registry);
    // Forwards to local HTTP upstreams come next.
    if !settings.forwards.is_empty() {
        handlers = handlers.with_source(
            Forwards::with_max_connections(&settings.forwards, settings.max_upstream_connections)
                .map_err(LaunchError::Handlers)?,
        );
    }
    // The handler directory comes last.
    if let Some(dir) = &settings.handler_dir {
        let directory = ExecDirectory::new(dir.clone(), settings.max_body_bytes)
            .map_err(LaunchError::Handlers)?
            .with_max_processes(settings.max_exec_processes);
        let directory = match ledger {
            Some(ledger) => directory.with_ledger(ledger),
            None => directory,
        };
        handlers = handlers.with_source(directory);
    }
    if let Some(path) = &settings.policy {
        handlers = handlers.with_policy(Policy::load(path)?);
    }
    Ok(handlers)
}

/// A node whose tasks are running.
#[derive(Debug)]
pub struct RunningNode {
    node: Arc<Node>,
    http_addr: HttpAddr,
    tls: NodeTls,
    api_tokens: Option<Arc<TokenGate>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The node's replaceable TLS configuration.
#[derive(Debug, Clone)]
enum NodeTls {
    Server(Arc<Reloadable<rustls::ServerConfig>>),
    Client(Arc<Reloadable<rustls::ClientConfig>>),
}

/// Swaps a node's identity for new connections; cheap to clone into a task.
#[derive(Debug, Clone)]
pub struct IdentityReloader {
    node: Arc<Node>,
    tls: NodeTls,
}

impl IdentityReloader {
    /// Makes `identity` the one new connections use. Established connections
    /// keep theirs, unless its revocation list names their peer's
    /// certificate: those are closed. On error the current identity (and
    /// list) stays.
    pub fn reload(&self, identity: &TlsIdentity) -> Result<(), TlsError> {
        let name = identity.name()?;
        match &self.tls {
            NodeTls::Server(slot) => slot.replace(identity.server_config()?),
            NodeTls::Client(slot) => slot.replace(identity.client_config()?),
        }
        log_revocations(identity);
        self.node
            .enforce_revocations(identity.revocations().clone());
        if name != self.node.name() {
            tracing::warn!(
                old = self.node.name(),
                new = %name,
                "the reloaded certificate names another identity; peers see the new name on their next connection"
            );
        }
        tracing::info!(identity = %name, "identity reloaded: new connections use it");
        Ok(())
    }

    /// Reads, validates and installs the identity in `files`: the same checks
    /// as `set-identity` (key matches, chain verifies against the CA, the
    /// certificate fits the node's role), and the revocation list, if any
    /// (readable, and signed by the CA). A broken file changes nothing.
    pub fn reload_files(&self, files: &CertFiles) -> Result<(), ReloadError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| ReloadError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let role = match self.tls {
            NodeTls::Server(_) => Role::Server,
            NodeTls::Client(_) => Role::Client,
        };
        identity::validate(
            &read(&files.key)?,
            &read(&files.cert)?,
            &read(&files.ca)?,
            role,
        )
        .map_err(ReloadError::Invalid)?;
        let identity = TlsIdentity::load(files)?;
        self.reload(&identity)?;
        Ok(())
    }
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

    /// Swaps the node's identity for new connections.
    pub fn reloader(&self) -> IdentityReloader {
        IdentityReloader {
            node: self.node.clone(),
            tls: self.tls.clone(),
        }
    }

    /// Reads the API token file again, if the node has one, and puts its
    /// tokens in force; on error the tokens in force stay. Returns how many
    /// tokens are in force (`None`: the node has no token file).
    pub fn reload_api_tokens(&self) -> Result<Option<usize>, TokenError> {
        self.api_tokens
            .as_ref()
            .map(|gate| gate.reload())
            .transpose()
    }

    /// Reloads the identity and revocation list from `files` on SIGHUP and,
    /// with `watch`, when one of the files changes; and the API token file,
    /// if any, on SIGHUP. Failures are logged; what was in force stays.
    pub fn reload_on_signal(&self, files: CertFiles, watch: bool) {
        let reloader = self.reloader();
        let api_tokens = self.api_tokens.clone();
        let shutdown = self.shutdown.clone();
        // Both taken before this returns: a SIGHUP or a file changed from
        // now on is never missed.
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!("cannot listen for SIGHUP: {error}");
                    None
                }
            };
        let mut seen = modified(&files);
        self.tasks.reopen();
        self.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(CERT_WATCH_INTERVAL);
            loop {
                let why = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    Some(()) = async { hangups.as_mut()?.recv().await } => "SIGHUP",
                    _ = ticks.tick(), if watch => {
                        let now = modified(&files);
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "the identity or revocation list files changed"
                    }
                };
                match reloader.reload_files(&files) {
                    Ok(()) => tracing::info!(trigger = why, "certificates reloaded"),
                    Err(error) => tracing::error!(
                        trigger = why,
                        "certificate reload refused, the current identity stays in use: {error:#}"
                    ),
                }
                if let Some(gate) = api_tokens.as_deref().filter(|_| why == "SIGHUP") {
                    reload_api_tokens(gate);
                }
            }
        });
        self.tasks.close();
    }

    /// Serves the node's metrics alone on `listener` (`--metrics-listen`),
    /// until the node stops.
    pub fn serve_metrics(&self, listener: HttpListener) {
        self.tasks.reopen();
        self.tasks.spawn(front::serve_metrics(
            listener,
            self.node.clone(),
            self.shutdown.clone(),
        ));
        self.tasks.close();
    }

    /// Cancelling this token stops the node.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves once the node has been told to stop and all its tasks ended
    /// (and its job store is closed).
    pub async fn wait(&self) {
        self.shutdown.cancelled().await;
        self.tasks.wait().await;
        self.close_jobs().await;
    }

    /// Stops the node: no new local requests, peers told to go away, requests
    /// in progress given the drain grace period, the job store closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
        self.close_jobs().await;
    }

    async fn close_jobs(&self) {
        if let Some(jobs) = self.node.jobs() {
            let store = jobs.store().clone();
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
    }
}

/// Starts a server node: client nodes connect to `pipe`, local apps to
/// `http`. With `settings.cluster`, it joins its cluster first (the NATS
/// connection itself comes up in the background).
pub async fn start_server(
    pipe: TcpListener,
    http: HttpListener,
    identity: &TlsIdentity,
    handlers: Registry,
    settings: NodeSettings,
    shutdown: CancellationToken,
) -> Result<RunningNode, LaunchError> {
    let tls = Arc::new(Reloadable::new(identity.server_config()?));
    let pipe_side = tls.clone();
    let cluster = match &settings.cluster {
        Some(cluster) => Some(Cluster::join(cluster.clone()).await?),
        None => None,
    };
    start(
        Side::Server,
        http,
        identity,
        handlers,
        settings,
        shutdown,
        NodeTls::Server(tls),
        move |node, shutdown| {
            if let Some(cluster) = cluster {
                node.attach_cluster(cluster.clone());
                if let Some(jobs) = node.jobs() {
                    jobs.attach_cluster(cluster.clone());
                }
                tokio::spawn(cluster.run(node.peers().clone(), shutdown.clone()));
            }
            crate::node::run_server(pipe, pipe_side, node, shutdown)
        },
    )
}

/// Starts a client node that keeps a connection to one of `target`'s
/// servers.
pub fn start_client(
    target: ServerTarget,
    http: HttpListener,
    identity: &TlsIdentity,
    handlers: Registry,
    settings: NodeSettings,
    backoff: BackoffSettings,
    shutdown: CancellationToken,
) -> Result<RunningNode, LaunchError> {
    let tls = Arc::new(Reloadable::new(identity.client_config()?));
    let pipe_side = tls.clone();
    start(
        Side::Client,
        http,
        identity,
        handlers,
        settings,
        shutdown,
        NodeTls::Client(tls),
        move |node, shutdown| crate::node::run_client(target, pipe_side, node, backoff, shutdown),
    )
}

/// What both kinds of node share: the node state, its local front, its
/// metrics reporter, and `pipe`, the side-specific task.
#[allow(clippy::too_many_arguments)]
fn start<F>(
    side: Side,
    http: HttpListener,
    identity: &TlsIdentity,
    handlers: Registry,
    settings: NodeSettings,
    shutdown: CancellationToken,
    tls: NodeTls,
    pipe: impl FnOnce(Arc<Node>, CancellationToken) -> F,
) -> Result<RunningNode, LaunchError>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let metrics = Metrics::from_settings(settings.statsd.as_ref())?;
    // The store first: its lock makes the state directory this node's
    // alone before the ledger there kills what a crash left running.
    let (jobs, ledger) = match &settings.state_dir {
        Some(dir) => {
            let store = JobStore::open(dir, settings.max_queued_jobs)?;
            let ledger = GroupLedger::open(dir).map_err(|error| {
                LaunchError::Handlers(format!(
                    "the handler groups noted in {}: {error}",
                    dir.display()
                ))
            })?;
            let jobs = Jobs::new(
                store,
                settings.max_body_bytes,
                settings.job_retention,
                metrics.clone(),
            );
            (Some(jobs), Some(Arc::new(ledger)))
        }
        None => (None, None),
    };
    let handlers = build_handlers(handlers, &settings, ledger)?;
    let api_tokens = match &settings.api_tokens {
        Some(path) => Some(Arc::new(TokenGate::load(path, side)?)),
        None => None,
    };
    if let Some(gate) = &api_tokens {
        log_api_tokens(gate, "in force");
    }
    let node = Node::new(side, identity.name()?, handlers, settings, metrics);
    log_revocations(identity);
    node.enforce_revocations(identity.revocations().clone());
    let http_addr = http.local_addr().map_err(LaunchError::Http)?;
    front::log_listening(&http_addr);
    let tasks = TaskTracker::new();
    if let Some(jobs) = jobs {
        node.attach_jobs(jobs.clone());
        tasks.spawn(jobs.run(node.peers().clone(), shutdown.clone()));
    }
    tasks.spawn(pipe(node.clone(), shutdown.clone()));
    spawn_http(&tasks, http, &node, api_tokens.clone(), &shutdown);
    tasks.close();
    Ok(RunningNode {
        node,
        http_addr,
        tls,
        api_tokens,
        shutdown,
        tasks,
    })
}

fn spawn_http(
    tasks: &TaskTracker,
    http: HttpListener,
    node: &Arc<Node>,
    api_tokens: Option<Arc<TokenGate>>,
    shutdown: &CancellationToken,
) {
    let grace = node.settings().drain_grace;
    let serving = front::serve(http, node.clone(), api_tokens, shutdown.clone(), grace);
    tasks.spawn(serving);
    let peers = node.peers().clone();
    let in_flight = move || peers.in_flight();
    tasks.spawn(crate::node::metrics::report(
        node.metrics().clone(),
        in_flight,
        shutdown.clone(),
    ));
}

/// `set-identity`: validates the key, certificate and CA for a node on
/// `side` and installs them where `serve` will look; nothing is installed if
/// a check fails. Returns what to tell the operator.
pub fn set_identity(side: Side, args: &SetIdentityArgs) -> Result<String, SetIdentityError> {
    let dest = args.destination(side, &super::config::process_env)?;
    let role = match side {
        Side::Server => Role::Server,
        Side::Client => Role::Client,
    };
    let installed = identity::install(&args.key, &args.crt, &args.ca, role, &dest)
        .map_err(SetIdentityError::NotInstalled)?;
    Ok(format!(
        "installed {} identity {:?} (valid until {}) as {}",
        side.as_str(),
        installed.name,
        installed.not_after,
        dest.cert.display()
    ))
}

/// Modification times of the identity files and the revocation list, to
/// notice a rotation or a revocation.
fn modified(files: &CertFiles) -> Vec<Option<std::time::SystemTime>> {
    files
        .paths()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

/// Says which API token file is in force (`event`: read at start, or
/// reloaded), and how many tokens it holds.
fn log_api_tokens(gate: &TokenGate, event: &str) {
    let count = gate.tokens().len();
    tracing::info!(
        file = %gate.path().display(),
        tokens = count,
        "API tokens {event}: every local request but /_pipe/health and /_pipe/openapi.json needs one"
    );
    if count == 0 {
        tracing::warn!(
            file = %gate.path().display(),
            "the API token file holds no token: every local request but /_pipe/health and /_pipe/openapi.json is refused"
        );
    }
}

/// Reads `gate`'s token file again (SIGHUP), logging what came of it.
fn reload_api_tokens(gate: &TokenGate) {
    match gate.reload() {
        Ok(_) => log_api_tokens(gate, "reloaded"),
        Err(error) => {
            tracing::error!("API token reload refused, the tokens in force stay: {error:#}")
        }
    }
}

/// Says which revocation list is in force, if any.
fn log_revocations(identity: &TlsIdentity) {
    let list = identity.revocations();
    if let Some(source) = list.source() {
        tracing::info!(
            crl = source,
            revoked = list.len(),
            "revocation list in force: peers whose certificate it names are refused"
        );
    }
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
