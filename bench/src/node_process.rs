//! Nodes in child processes: this same binary re-executed as
//! `restpipe-bench node-for-bench`, a real server or client node started
//! like the shipped binaries start theirs (the test kit's `launch_server` /
//! `launch_client` over `pipe_core::launch`), so that its `/proc/<pid>`
//! figures (memory, peak memory, CPU) are the node's alone. The test kit's
//! [`restpipe_tests::NodeProcess`] runs it.
//!
//! A server node given `--cluster` and the NATS TLS files joins that
//! cluster, as `pipe-server serve --cluster` does.
//!
//! The child prints one `ready pipe=ADDR http=ADDR` line once it listens,
//! and stops when its standard input closes (the benchmark ended or died),
//! on SIGTERM, when it is killed, or after a bounded lifetime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use restpipe_tests::cluster::{ClusterSettings, NatsTls};
use restpipe_tests::{
    BackoffSettings, CertFiles, HandlerError, NodeOptions, NodeSettings, Registry, Reply, Request,
    Side, TlsIdentity, body, launch_client, launch_server, loopback_front,
};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::procfs;

/// A command to run node processes under, e.g. `heaptrack` or
/// `valgrind --tool=massif` (profiling only: `/proc` figures are then the
/// wrapper's).
pub const WRAPPER_VAR: &str = "RESTPIPE_BENCH_NODE_WRAPPER";
/// Time a child gets to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a child gets to stop after it is told to.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// A child ends itself after this long, whatever happens to its parent.
const DEFAULT_LIFETIME_SECS: u64 = 3600;
/// Largest body `get_source` agrees to produce.
const MAX_SOURCE_BYTES: u64 = 4 << 30;
/// Size of the pieces `get_source` produces: the pipe's own chunk size.
const SOURCE_CHUNK_BYTES: usize = body::CHUNK_BYTES;

/// Which node a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeSide {
    /// A server node.
    Server,
    /// A client node.
    Client,
}

/// The identity a benchmark child runs with: `--cert`, `--key`, `--ca`.
#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    /// The certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
}

impl IdentityArgs {
    /// Loads the identity the files hold.
    pub fn load(self) -> anyhow::Result<TlsIdentity> {
        Ok(TlsIdentity::load(&CertFiles {
            key: self.key,
            cert: self.cert,
            ca: self.ca,
            crl: None,
        })?)
    }

    /// Gives a child `files` as these arguments.
    pub fn add(command: &mut std::process::Command, files: &CertFiles) {
        command
            .arg("--cert")
            .arg(&files.cert)
            .arg("--key")
            .arg(&files.key)
            .arg("--ca")
            .arg(&files.ca);
    }
}

/// Arguments of `node-for-bench`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Server or client node.
    #[arg(long, value_enum)]
    side: NodeSide,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Server: where client nodes connect.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Client: the server node's pipe address.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Seconds after which the node stops by itself.
    #[arg(long, default_value_t = DEFAULT_LIFETIME_SECS)]
    lifetime: u64,
    /// Keep jobs in a store in this directory (`--state-dir` of the
    /// shipped binaries): `Prefer: respond-async` works.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Jobs one peer's queue holds (`max_queued_jobs`).
    #[arg(long, default_value_t = pipe_core::DEFAULT_MAX_QUEUED_JOBS)]
    max_queued_jobs: u64,
    /// Server: most client connections at once (`max_connections`).
    #[arg(long, default_value_t = pipe_core::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Server: join a cluster on these NATS servers (`--cluster` of the
    /// shipped binaries); the `--nats-*` files are then required.
    #[arg(long = "cluster", value_name = "URL")]
    cluster_urls: Vec<String>,
    /// The cluster's name.
    #[arg(long, default_value = pipe_core::cluster::DEFAULT_CLUSTER_NAME)]
    cluster_name: String,
    /// This node's id in the cluster.
    #[arg(long, default_value = "s1")]
    node_id: String,
    /// The NATS servers' CA (PEM).
    #[arg(long)]
    nats_ca: Option<PathBuf>,
    /// The certificate this node presents to NATS (PEM).
    #[arg(long)]
    nats_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    nats_key: Option<PathBuf>,
}

impl NodeArgs {
    /// The cluster to join, if `--cluster` was given.
    fn cluster(&self) -> anyhow::Result<Option<ClusterSettings>> {
        if self.cluster_urls.is_empty() {
            return Ok(None);
        }
        let file = |path: &Option<PathBuf>, flag: &str| {
            path.clone()
                .with_context(|| format!("--cluster needs {flag}"))
        };
        Ok(Some(ClusterSettings {
            urls: self.cluster_urls.clone(),
            name: self.cluster_name.clone(),
            node_id: self.node_id.clone(),
            tls: Some(NatsTls {
                ca: file(&self.nats_ca, "--nats-ca")?,
                cert: file(&self.nats_cert, "--nats-cert")?,
                key: file(&self.nats_key, "--nats-key")?,
            }),
        }))
    }
}

/// Where a child should run its node.
#[derive(Debug, Clone, Copy)]
pub enum Placement {
    /// A server node whose pipe listens on `listen` (port 0: any).
    Server {
        /// The pipe address to bind.
        listen: SocketAddr,
    },
    /// A client node dialling the server at `server`.
    Client {
        /// The server's pipe address.
        server: SocketAddr,
    },
}

/// A node running in a child process.
#[derive(Debug)]
pub struct NodeProcess {
    process: restpipe_tests::NodeProcess,
    /// The node's local HTTP front.
    pub http: SocketAddr,
    /// The server's pipe address (server nodes).
    pub pipe: Option<SocketAddr>,
}

impl NodeProcess {
    /// Starts a node with identity `files`, its logs (warnings and up) in
    /// `log`, and waits until it listens.
    pub async fn start(
        files: &CertFiles,
        placement: Placement,
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(files, placement, Extras::default(), log).await
    }

    /// [`Self::start`] with `workers` runtime worker threads
    /// (`TOKIO_WORKER_THREADS`, which the shipped binaries honour too)
    /// instead of one per core: for nodes sharing a machine's cores.
    pub async fn start_with_workers(
        files: &CertFiles,
        placement: Placement,
        workers: usize,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let extras = Extras {
            workers: Some(workers),
            ..Extras::default()
        };
        Self::start_with(files, placement, extras, log).await
    }

    /// [`Self::start`] with a job store in `state_dir` (`--state-dir`),
    /// whose queues hold at most `max_queued_jobs` jobs per peer.
    pub async fn start_keeping_jobs(
        files: &CertFiles,
        placement: Placement,
        state_dir: &Path,
        max_queued_jobs: u64,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let jobs = JobsArgs {
            state_dir,
            max_queued_jobs,
        };
        let extras = Extras {
            jobs: Some(jobs),
            ..Extras::default()
        };
        Self::start_with(files, placement, extras, log).await
    }

    /// Starts a server node whose pipe listens on `listen` (port 0: any)
    /// and that joins the cluster `cluster` describes (its NATS TLS files
    /// are required); returns it and its pipe address.
    pub async fn start_in_cluster(
        files: &CertFiles,
        listen: SocketAddr,
        cluster: &ClusterSettings,
        log: &Path,
    ) -> anyhow::Result<(Self, SocketAddr)> {
        let extras = Extras {
            cluster: Some(cluster),
            ..Extras::default()
        };
        Self::start_server_with(files, listen, extras, log).await
    }

    async fn start_with(
        files: &CertFiles,
        placement: Placement,
        extras: Extras<'_>,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let mut command = child_command("node-for-bench")?;
        IdentityArgs::add(&mut command, files);
        if let Some(jobs) = extras.jobs {
            command
                .arg("--state-dir")
                .arg(jobs.state_dir)
                .arg("--max-queued-jobs")
                .arg(jobs.max_queued_jobs.to_string());
        }
        if let Some(cluster) = extras.cluster {
            add_cluster_args(&mut command, cluster)?;
        }
        if let Some(workers) = extras.workers {
            command.env("TOKIO_WORKER_THREADS", workers.to_string());
        }
        if let Some(max_connections) = extras.max_connections {
            command
                .arg("--max-connections")
                .arg(max_connections.to_string());
        }
        match placement {
            Placement::Server { listen } => {
                command.args(["--side", "server", "--listen", &listen.to_string()]);
            }
            Placement::Client { server } => {
                command.args(["--side", "client", "--server", &server.to_string()]);
            }
        }
        let mut process = restpipe_tests::NodeProcess::spawn(command, log)?;
        // A wrapper may print first; the node's own line starts with `ready`.
        let line = process.wait_for_line("ready ", START_TIMEOUT).await?;
        let (pipe, http) =
            parse_ready(&line).with_context(|| format!("not a ready line: {line:?}"))?;
        Ok(Self {
            process,
            http,
            pipe,
        })
    }

    /// Starts a server node whose pipe listens on `listen` (port 0: any);
    /// returns it and its pipe address.
    pub async fn start_server(
        files: &CertFiles,
        listen: SocketAddr,
        log: &Path,
    ) -> anyhow::Result<(Self, SocketAddr)> {
        Self::start_server_with(files, listen, Extras::default(), log).await
    }

    /// A server node whose pipe listens on `listen`, with `extras`; returns
    /// it and its pipe address.
    async fn start_server_with(
        files: &CertFiles,
        listen: SocketAddr,
        extras: Extras<'_>,
        log: &Path,
    ) -> anyhow::Result<(Self, SocketAddr)> {
        let server = Self::start_with(files, Placement::Server { listen }, extras, log).await?;
        let pipe = server
            .pipe
            .context("the server node reported no pipe address")?;
        Ok((server, pipe))
    }

    /// [`Self::start_server`] for a server that must hold `clients`
    /// connections: its cap (`max_connections`) raised to that where the
    /// default is lower, everything else default.
    pub async fn start_server_holding(
        files: &CertFiles,
        listen: SocketAddr,
        clients: usize,
        log: &Path,
    ) -> anyhow::Result<(Self, SocketAddr)> {
        let extras = Extras {
            max_connections: (clients > pipe_core::DEFAULT_MAX_CONNECTIONS).then_some(clients),
            ..Extras::default()
        };
        Self::start_server_with(files, listen, extras, log).await
    }

    /// The node's resident memory now.
    pub fn rss(&self) -> anyhow::Result<u64> {
        procfs::rss(self.process.pid())
    }

    /// The node's peak resident memory since start or [`Self::reset_peak`].
    pub fn peak(&self) -> anyhow::Result<u64> {
        procfs::peak(self.process.pid())
    }

    /// Starts a new peak-memory measurement from the current memory.
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        procfs::reset_peak(self.process.pid())
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// CPU time the node has used.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        procfs::cpu_time(self.process.pid())
    }

    /// Kills the node at once (SIGKILL): a crash, not a drain.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        tokio::time::timeout(STOP_TIMEOUT, self.process.kill())
            .await
            .context("the killed node process did not end")??;
        Ok(())
    }

    /// Stops the node the way an operator would: it drains, then exits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.process.stop(STOP_TIMEOUT).await?;
        Ok(())
    }
}

/// This benchmark binary running `subcommand`, under [`WRAPPER_VAR`]'s
/// command if one is set.
pub fn child_command(subcommand: &str) -> anyhow::Result<std::process::Command> {
    let exe = std::env::current_exe().context("finding the benchmark binary")?;
    let mut command = match std::env::var(WRAPPER_VAR) {
        Ok(wrapper) if !wrapper.trim().is_empty() => {
            let mut words = wrapper.split_whitespace();
            let mut command = std::process::Command::new(words.next().unwrap_or_default());
            command.args(words).arg(exe);
            command
        }
        _ => std::process::Command::new(exe),
    };
    command.arg(subcommand);
    Ok(command)
}

/// What a child runs besides a plain node.
#[derive(Debug, Clone, Copy, Default)]
struct Extras<'a> {
    /// A job store.
    jobs: Option<JobsArgs<'a>>,
    /// A cluster to join.
    cluster: Option<&'a ClusterSettings>,
    /// A cap on connections other than the default.
    max_connections: Option<usize>,
    /// Runtime worker threads other than one per core.
    workers: Option<usize>,
}

/// The job store a child keeps.
#[derive(Debug, Clone, Copy)]
struct JobsArgs<'a> {
    state_dir: &'a Path,
    max_queued_jobs: u64,
}

/// `--cluster URL…`, its name, the node's id and NATS TLS files.
fn add_cluster_args(
    command: &mut std::process::Command,
    cluster: &ClusterSettings,
) -> anyhow::Result<()> {
    let tls = cluster
        .tls
        .as_ref()
        .context("the benchmark's cluster nodes use mutual TLS to NATS")?;
    for url in &cluster.urls {
        command.arg("--cluster").arg(url);
    }
    command
        .arg("--cluster-name")
        .arg(&cluster.name)
        .arg("--node-id")
        .arg(&cluster.node_id)
        .arg("--nats-ca")
        .arg(&tls.ca)
        .arg("--nats-cert")
        .arg(&tls.cert)
        .arg("--nats-key")
        .arg(&tls.key);
    Ok(())
}

/// `(pipe, http)` from `ready pipe=ADDR http=ADDR` (`pipe=-` on clients).
pub fn parse_ready(line: &str) -> Option<(Option<SocketAddr>, SocketAddr)> {
    let mut words = line.split_whitespace();
    (words.next()? == "ready").then_some(())?;
    let pipe = words.next()?.strip_prefix("pipe=")?;
    let http = words.next()?.strip_prefix("http=")?.parse().ok()?;
    let pipe = if pipe == "-" {
        None
    } else {
        Some(pipe.parse().ok()?)
    };
    Some((pipe, http))
}

/// The server node's handlers: the examples, plus the two the large-body
/// scenario drives. Both stream, so neither holds a body: what the nodes'
/// peak memory shows is the pipe's own buffering.
pub fn server_handlers() -> Registry {
    let mut handlers = Registry::with_examples(Side::Server);
    // Reads the upload as it arrives and answers its length, so the
    // transfer is checked end to end.
    handlers.register_streaming("post_sink", |mut request: Request| async move {
        let mut received = request.body.len() as u64;
        if let Some(mut stream) = request.stream.take() {
            while let Some(piece) = stream.chunk().await {
                let piece = piece.map_err(|e| HandlerError::new("BodyError", e.to_string()))?;
                received += piece.len() as u64;
            }
        }
        Ok(Reply::json(&serde_json::json!({ "bytes": received })))
    });
    // Answers `?bytes=N` zero bytes, produced as the caller reads them:
    // slices of one shared chunk, so producing costs no memory, handed out
    // by a stream the link polls in place (no producer task).
    handlers.register("get_source", |request: Request| async move {
        let total = request
            .query_pairs()
            .into_iter()
            .find(|(key, _)| key == "bytes")
            .and_then(|(_, value)| value.parse::<u64>().ok())
            .unwrap_or(0)
            .min(MAX_SOURCE_BYTES);
        let chunk = Bytes::from(vec![0u8; SOURCE_CHUNK_BYTES]);
        let pieces = (0..total).step_by(SOURCE_CHUNK_BYTES).map(move |start| {
            Ok(chunk.slice(..(total - start).min(SOURCE_CHUNK_BYTES as u64) as usize))
        });
        let stream = body::BodyStream::from_stream(futures_util::stream::iter(pieces), Some(total));
        Ok(Reply::stream("application/octet-stream", stream))
    });
    handlers
}

/// The client node's handlers: the examples, plus `post_work`, which the
/// jobs scenario submits: it answers the length of the body it got, so a
/// job's result shows its body arrived.
pub fn client_handlers() -> Registry {
    let mut handlers = Registry::with_examples(Side::Client);
    handlers.register("post_work", |request: Request| async move {
        Ok(Reply::json(
            &serde_json::json!({ "bytes": request.body.len() }),
        ))
    });
    handlers
}

/// Runs `node-for-bench`: the child side.
pub fn serve(args: NodeArgs) -> anyhow::Result<()> {
    crate::init_logging("warn");
    procfs::raise_open_file_limit()?;
    // The same runtime the shipped binaries use: one worker per core.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve_node(args))
}

async fn serve_node(args: NodeArgs) -> anyhow::Result<()> {
    let cluster = args.cluster()?;
    let identity = args.identity.load()?;
    // Listening before the ready line, so a SIGTERM right after it drains.
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let (front, http_addr) = loopback_front().await?;
    let settings = NodeSettings {
        cluster,
        state_dir: args.state_dir,
        max_queued_jobs: args.max_queued_jobs,
        max_connections: args.max_connections,
        ..NodeSettings::default()
    };
    let options = |handlers| NodeOptions {
        handlers,
        settings: settings.clone(),
        backoff: BackoffSettings::default(),
        ..NodeOptions::default()
    };
    let (node, pipe) = match args.side {
        NodeSide::Server => {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("binding the pipe listener on {}", args.listen))?;
            let pipe = listener.local_addr()?;
            let node =
                launch_server(listener, front, &identity, options(server_handlers())).await?;
            (node, pipe.to_string())
        }
        NodeSide::Client => {
            let server = args.server.context("a client node needs --server")?;
            let node = launch_client(server, front, &identity, options(client_handlers()))?;
            (node, "-".to_owned())
        }
    };
    println!("ready pipe={pipe} http={http_addr}");
    use std::io::Write as _;
    std::io::stdout().flush()?;

    tokio::select! {
        _ = stdin_closed() => {}
        _ = terminate.recv() => {}
        _ = tokio::time::sleep(Duration::from_secs(args.lifetime)) => {
            tracing::warn!("node-for-bench: lifetime over, stopping");
        }
    }
    node.shutdown_token().cancel();
    let _ = tokio::time::timeout(STOP_TIMEOUT, node.wait()).await;
    Ok(())
}

/// Returns once standard input closes: the benchmark that started this
/// child ended, or died.
pub async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0u8; 64];
    while matches!(stdin.read(&mut buffer).await, Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_are_parsed() {
        let (pipe, http) = parse_ready("ready pipe=127.0.0.1:5 http=127.0.0.1:6").unwrap();
        assert_eq!(pipe, Some("127.0.0.1:5".parse().unwrap()));
        assert_eq!(http, "127.0.0.1:6".parse().unwrap());
        let (pipe, _) = parse_ready("ready pipe=- http=127.0.0.1:6").unwrap();
        assert_eq!(pipe, None);
        assert!(parse_ready("listening").is_none());
    }
}
