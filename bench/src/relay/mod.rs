//! The design's floor: the smallest program of the pipe's shape, measured
//! beside the pipe and its baselines in the same rounds (the throughput and
//! large-body scenarios).
//!
//! A *front* process serves HTTP/1.1 with hyper as a node's front does; each
//! request becomes a frame (a 4-byte length, an 8-byte id, a kind byte and
//! the request line, [`frame`]) that a writer task sends, batched, over one
//! mutually authenticated TLS 1.3 connection to a *far* process; the far end
//! reads the frames and answers each with the `get_time` JSON in the same
//! read, in one write; the front's reader hands each answer to the waiting
//! HTTP task through a oneshot channel found by id. Large bodies go as
//! pieces of the pipe's chunk size, at most the pipe's window (2 MiB) queued
//! on either side. Those are the pipe's handoffs and nothing else: no
//! protobuf, no routing or handler lookup, no limits, deadlines,
//! cancellation, admission, metrics, logs or multiplexing of a large body
//! with other requests (the far end sends a source's pieces straight from
//! its read loop). What the pipe makes beyond this is what its features
//! cost; what this makes below the plain baselines is what the design's
//! shape costs on this machine.
//!
//! Both ends run as child processes (`restpipe-bench relay-for-bench`) on
//! the runtime the shipped binaries use, a worker per core, as each node
//! does.

mod far;
mod frame;
mod front;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::LOOPBACK;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::node_process::{IdentityArgs, START_TIMEOUT, STOP_TIMEOUT, child_command, stdin_closed};
use crate::procfs;

/// Room the readers keep free before each read.
const READ_BYTES: usize = 64 * 1024;
/// Body pieces queued on either side at most: the pipe's window (2 MiB)
/// in pieces of its chunk size.
const WINDOW_PIECES: usize =
    (restpipe_tests::body::WINDOW_BYTES / restpipe_tests::body::CHUNK_BYTES as u64) as usize;

/// Which end a `relay-for-bench` process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RelaySide {
    /// HTTP in, frames out over TLS.
    Front,
    /// TLS in, an answer for each frame.
    Far,
}

/// Arguments of `relay-for-bench`.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Which end.
    #[arg(long, value_enum)]
    side: RelaySide,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Front: the far end's address.
    #[arg(long)]
    far: Option<SocketAddr>,
}

/// Runs `relay-for-bench`: one end on a worker per core, printing
/// `ready addr=ADDR` (the front's HTTP address or the far end's TLS one)
/// once it listens, until standard input closes or SIGTERM.
pub fn serve_process(args: RelayArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let identity = args.identity.load()?;
            let listener = TcpListener::bind(LOOPBACK).await?;
            let addr = listener.local_addr()?;
            let serving = match args.side {
                RelaySide::Far => tokio::spawn(far::serve(listener, identity.server_config()?)),
                RelaySide::Front => {
                    let far_addr = args.far.context("the front needs --far")?;
                    let link = front::Link::connect(far_addr, identity.client_config()?).await?;
                    tokio::spawn(front::serve(listener, link))
                }
            };
            println!("ready addr={addr}");
            use std::io::Write as _;
            std::io::stdout().flush()?;
            let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
            tokio::select! {
                () = stdin_closed() => {}
                _ = terminate.recv() => {}
            }
            serving.abort();
            Ok(())
        })
}

/// The two ends, each a child process.
pub struct RelayPair {
    front: restpipe_tests::NodeProcess,
    far: restpipe_tests::NodeProcess,
    /// The front's HTTP address.
    pub http: SocketAddr,
}

impl RelayPair {
    /// Starts the far end with `server`'s identity and the front with
    /// `client`'s, each with `workers` runtime worker threads (`None`: one
    /// per core), logging into `dir`.
    pub async fn start(
        (server, client): (&restpipe_tests::CertFiles, &restpipe_tests::CertFiles),
        workers: Option<usize>,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let end = End { workers, dir };
        let (far, far_addr) = end.start(RelaySide::Far, server, None).await?;
        let (front, http) = end.start(RelaySide::Front, client, Some(far_addr)).await?;
        Ok(Self { front, far, http })
    }

    /// CPU the two have used.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        Ok(procfs::cpu_time(self.front.pid())? + procfs::cpu_time(self.far.pid())?)
    }

    /// Stops both.
    pub async fn stop(self) -> anyhow::Result<()> {
        let (front, far) = tokio::join!(self.front.stop(STOP_TIMEOUT), self.far.stop(STOP_TIMEOUT));
        front?;
        far?;
        Ok(())
    }
}

/// How both ends are started.
struct End<'a> {
    workers: Option<usize>,
    dir: &'a Path,
}

impl End<'_> {
    /// Starts the `side` end with identity `files`; returns it and the
    /// address it listens on.
    async fn start(
        &self,
        side: RelaySide,
        files: &restpipe_tests::CertFiles,
        far: Option<SocketAddr>,
    ) -> anyhow::Result<(restpipe_tests::NodeProcess, SocketAddr)> {
        let name = match side {
            RelaySide::Front => "front",
            RelaySide::Far => "far",
        };
        let mut command = child_command("relay-for-bench")?;
        command.args(["--side", name]);
        IdentityArgs::add(&mut command, files);
        if let Some(far) = far {
            command.arg("--far").arg(far.to_string());
        }
        let mut log = format!("relay-{name}");
        if let Some(workers) = self.workers {
            // tokio's own variable, as the nodes'.
            command.env("TOKIO_WORKER_THREADS", workers.to_string());
            log.push_str(&format!("-{workers}-workers"));
        }
        let log = self.dir.join(format!("{log}.log"));
        let mut process = restpipe_tests::NodeProcess::spawn(command, &log)?;
        let line = process.wait_for_line("ready ", START_TIMEOUT).await?;
        let addr = line
            .trim()
            .strip_prefix("ready addr=")
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("not a ready line: {line:?}"))?;
        Ok((process, addr))
    }
}
