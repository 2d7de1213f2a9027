//! What a running node knows: who it is, its handlers, its peers, its limits.
//! Shared (behind an `Arc`) by the local HTTP front and the pipe tasks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::cluster::Cluster;
use super::directory::{LocalPeers, PeerDirectory};
use super::events::EventSink;
use super::inbound::NodeInbound;
use super::jobs::Jobs;
use super::metrics::{Metrics, StatsdSettings};
use super::recent_errors::RecentErrors;
use super::revocation::RevocationWatch;
use crate::handlers::{DEFAULT_MAX_EXEC_PROCESSES, DEFAULT_MAX_UPSTREAM_CONNECTIONS, Handlers};
use crate::link::{ConnectionSettings, Endpoint, LocalHello, RevocationList};
use crate::wire::{DEFAULT_MAX_BODY_MEMORY, MemoryBudget, Side};

/// Default time a request may take end to end, unless its caller says
/// otherwise with `X-Pipe-Timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a request waits for its peer to (re)connect before 503:
/// long enough to ride out a reconnect, short enough that callers learn fast.
pub const DEFAULT_PEER_WAIT: Duration = Duration::from_secs(5);
/// Default deadline for a TLS handshake; a peer that stalls it is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on client connections a server node holds.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Default largest request body: bodies stream in bounded memory, so the
/// limit guards disks and patience, not the node's memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 30;
/// Default cap on handlers running at once for all peers together (each
/// connection has its own cap too, `max_concurrent_handlers`): past it,
/// events wait for a slot within their deadline.
pub const DEFAULT_MAX_RUNNING_HANDLERS: usize = 4096;
/// Default time given to requests in progress when the node shuts down.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Default cap on the local front's open HTTP connections: far more than
/// apps (or nginx's keepalive pool) need, few enough that a runaway caller
/// cannot take every file descriptor. Past it a connection gets 503 and is
/// closed.
pub(crate) const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 1024;
/// Default time the local front waits for a caller to take any more of a
/// response (a streamed reply, say) before closing its connection, which
/// frees the far handler, its upstream and its admission slot.
pub(crate) const DEFAULT_HTTP_WRITE_STALL: Duration = Duration::from_secs(30);
/// Room left in a frame for everything but the body (verb, noun, args,
/// query, type), so a body at the limit still fits one frame.
pub const FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

/// Limits and deadlines of a node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Tunables of each pipe connection.
    pub connection: ConnectionSettings,
    /// Default end-to-end deadline of a request.
    pub request_timeout: Duration,
    /// How long a request waits for a missing peer before 503.
    pub peer_wait: Duration,
    /// Largest request body accepted from a local caller (413 beyond).
    pub max_body_bytes: usize,
    /// Bytes of peers' bodies the node holds in memory at once, for all
    /// peers together (each peer's own share is
    /// `connection.max_body_memory_per_peer`): inline bodies of events in
    /// progress, streamed windows not yet read, bodies collected whole for
    /// handlers that do not stream. Past it, 503 (413 for a body that could
    /// never fit).
    pub max_body_memory: usize,
    /// Handlers running at once for all peers together.
    pub max_running_handlers: usize,
    /// Executable handlers running at once.
    pub max_exec_processes: usize,
    /// Requests to forwards' upstreams in progress at once (so connections
    /// to them, busy or pooled).
    pub max_upstream_connections: usize,
    /// Deadline for the TLS handshake of a pipe connection.
    pub handshake_timeout: Duration,
    /// Time requests in progress get to finish when the node stops.
    pub drain_grace: Duration,
    /// Server only: most client connections held at once; past it, new ones
    /// are refused with a clear reason (and retry with backoff).
    pub max_connections: usize,
    /// Most local HTTP connections open at once; past it, 503 and close.
    pub max_http_connections: usize,
    /// Longest a local caller may leave a response unread before its
    /// connection is closed.
    pub http_write_stall: Duration,
    /// Command run (through `sh -c`) on each connection event.
    pub on_event: Option<String>,
    /// Where metrics go; `None` sends none.
    pub statsd: Option<StatsdSettings>,
    /// Access policy file: which peers may call which handlers.
    pub policy: Option<std::path::PathBuf>,
    /// API token file of the local front: which local callers may use it,
    /// for which handlers and clients; `None`: anyone who reaches it.
    pub api_tokens: Option<std::path::PathBuf>,
    /// Directory of executable handlers (`get_time`, `post_upload`...).
    pub handler_dir: Option<std::path::PathBuf>,
    /// Forwards of noun prefixes to local HTTP upstreams: (`files/`,
    /// `http://127.0.0.1:8080/`).
    pub forwards: Vec<(String, String)>,
    /// Where the job store lives; `None`: no asynchronous jobs.
    pub state_dir: Option<std::path::PathBuf>,
    /// How long a job's delivery is attempted unless its caller says
    /// (`X-Pipe-Expires`).
    pub job_expiry: Duration,
    /// Jobs one peer's queue holds; past it, a submission gets 503.
    pub max_queued_jobs: u64,
    /// How long ended jobs (and their results) are kept.
    pub job_retention: Duration,
    /// Server only: the cluster to join, if any (several server nodes on
    /// a NATS backplane).
    pub cluster: Option<super::cluster::ClusterSettings>,
}

/// Default time a job's delivery is attempted.
pub const DEFAULT_JOB_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);
/// Default cap on one peer's job queue.
pub const DEFAULT_MAX_QUEUED_JOBS: u64 = 100_000;

impl Default for NodeSettings {
    fn default() -> Self {
        let connection = ConnectionSettings::default();
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_body_memory: DEFAULT_MAX_BODY_MEMORY,
            max_running_handlers: DEFAULT_MAX_RUNNING_HANDLERS,
            max_exec_processes: DEFAULT_MAX_EXEC_PROCESSES,
            max_upstream_connections: DEFAULT_MAX_UPSTREAM_CONNECTIONS,
            connection,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            peer_wait: DEFAULT_PEER_WAIT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            drain_grace: DEFAULT_DRAIN_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_http_connections: DEFAULT_MAX_HTTP_CONNECTIONS,
            http_write_stall: DEFAULT_HTTP_WRITE_STALL,
            on_event: None,
            statsd: None,
            policy: None,
            api_tokens: None,
            handler_dir: None,
            forwards: Vec::new(),
            state_dir: None,
            job_expiry: DEFAULT_JOB_EXPIRY,
            max_queued_jobs: DEFAULT_MAX_QUEUED_JOBS,
            job_retention: DEFAULT_JOB_EXPIRY,
            cluster: None,
        }
    }
}

/// What the client node's link to its server has been doing, for
/// `/_pipe/status`.
#[derive(Debug, Clone, Default)]
pub struct LinkState {
    /// The server nodes configured, `HOST:PORT`, in the order configured.
    pub servers: Vec<String>,
    /// The server connected to, as configured, while connected.
    pub server: Option<String>,
    /// The address of the server connected to, while connected.
    pub server_address: Option<SocketAddr>,
    /// The HTTP proxy the connection goes through (credentials hidden),
    /// while connected through one.
    pub proxy: Option<String>,
    /// Failed connection attempts since the last success.
    pub reconnect_attempts: u64,
    /// The last connection error, with its cause chain.
    pub last_error: Option<String>,
    /// The server (as configured) the last error was about.
    pub last_error_server: Option<String>,
    /// When the last connection attempt failed or the connection ended.
    pub last_error_at: Option<SystemTime>,
    /// We were replaced by a newer connection with our identity: stand by
    /// until the server no longer holds it.
    pub standby: bool,
}

/// A running node's shared state.
#[derive(Debug)]
pub struct Node {
    side: Side,
    name: String,
    handlers: Arc<Handlers>,
    peers: Arc<dyn PeerDirectory>,
    inbound: Arc<NodeInbound>,
    /// What the node holds of its peers' bodies, for all connections.
    body_memory: Arc<MemoryBudget>,
    settings: NodeSettings,
    events: EventSink,
    started_at: SystemTime,
    link: Mutex<LinkState>,
    stopping: CancellationToken,
    metrics: Metrics,
    /// Asynchronous jobs, when the node has a state directory.
    jobs: Arc<OnceLock<Arc<Jobs>>>,
    /// The cluster, when the node is one of several server nodes.
    cluster: OnceLock<Arc<Cluster>>,
    pub(super) revocation_watch: RevocationWatch,
    /// The last few errors, for the status page.
    recent_errors: RecentErrors,
}

impl Node {
    /// A node on `side`, known to peers as `name`, answering with `handlers`
    /// and reporting to `metrics` (built from `settings.statsd` by the
    /// caller, which can fail).
    pub fn new(
        side: Side,
        name: String,
        handlers: Handlers,
        settings: NodeSettings,
        metrics: Metrics,
    ) -> Arc<Self> {
        let events = EventSink::new(&name, settings.on_event.clone());
        let revocation_watch = RevocationWatch::new(&name, metrics.clone());
        let jobs = Arc::new(OnceLock::new());
        let handlers = Arc::new(handlers);
        let inbound = NodeInbound::new(
            handlers.clone(),
            metrics.clone(),
            events.clone(),
            settings.max_body_bytes,
            settings.max_running_handlers,
            jobs.clone(),
        );
        Arc::new(Self {
            side,
            name,
            handlers,
            peers: Arc::new(LocalPeers::new(metrics.clone(), events.clone())),
            inbound: Arc::new(inbound),
            body_memory: MemoryBudget::node(settings.max_body_memory),
            settings,
            events,
            started_at: SystemTime::now(),
            link: Mutex::new(LinkState::default()),
            stopping: CancellationToken::new(),
            metrics,
            jobs,
            cluster: OnceLock::new(),
            revocation_watch,
            recent_errors: RecentErrors::default(),
        })
    }

    /// The node's recent errors (refused handshakes, failed sends), newest
    /// first, for `/_pipe/status` and the status page.
    pub fn recent_errors(&self) -> &RecentErrors {
        &self.recent_errors
    }

    /// Which end of the pipe this node is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// This node's identity (from its certificate).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handlers this node offers its peers.
    pub fn handlers(&self) -> &Arc<Handlers> {
        &self.handlers
    }

    /// Which connection serves which peer.
    pub fn peers(&self) -> &Arc<dyn PeerDirectory> {
        &self.peers
    }

    /// Limits and deadlines.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// When the node started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Where connection events go.
    pub fn events(&self) -> &EventSink {
        &self.events
    }

    /// Where metrics go.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What a new connection needs to know about this node.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            hello: LocalHello {
                name: self.name.clone(),
                side: self.side,
                standby: self.link().standby,
            },
            settings: self.settings.connection.clone(),
            inbound: self.inbound.clone(),
            body_memory: self.body_memory.clone(),
        }
    }

    /// The node's asynchronous jobs, if it keeps any.
    pub fn jobs(&self) -> Option<&Arc<Jobs>> {
        self.jobs.get()
    }

    /// The cluster this node is part of, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Makes the node part of `cluster` (once; later calls are ignored).
    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Gives the node its jobs (once; later calls are ignored).
    pub fn attach_jobs(&self, jobs: Arc<Jobs>) {
        let _ = self.jobs.set(jobs);
    }

    /// Puts `list` in force: established connections whose peer's
    /// certificate it names are closed with `GoAway` (`Revoked`). (New
    /// connections are refused by the TLS configuration built with it.)
    pub fn enforce_revocations(&self, list: Arc<RevocationList>) {
        self.revocation_watch.replace(list);
    }

    /// The revocation list in force (empty without `--crl`).
    pub fn revocations(&self) -> Arc<RevocationList> {
        self.revocation_watch.current()
    }

    /// Marks the node as shutting down: new local requests get 503.
    pub fn begin_stopping(&self) {
        self.stopping.cancel();
    }

    /// Whether the node is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// A copy of the link state (client nodes).
    pub fn link(&self) -> LinkState {
        self.link.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Updates the link state (client nodes).
    pub fn update_link(&self, update: impl FnOnce(&mut LinkState)) {
        update(&mut self.link.lock().unwrap_or_else(|e| e.into_inner()));
    }
}
