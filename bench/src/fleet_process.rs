//! Simulated clients in child processes: this binary re-executed as
//! `restpipe-bench fleet-for-bench`, each child a [`Fleet`] of up to
//! [`MAX_PER_PROCESS`] client nodes. One process holds a socket per client,
//! and a common hard limit of 20,000 open files (which a process without
//! `CAP_SYS_RESOURCE` cannot raise) is below the cluster scenario's 30,000
//! clients; split over children, the fleet has no such ceiling.
//!
//! A child loads the benchmark's CA, issues its share of the client
//! identities (named as [`crate::identities::client_name`] names them),
//! prints `ready`, and dials only when it reads `go` on its standard input,
//! so that every child dials at once and the issuing is not timed. It stops
//! its clients (they drain) when its standard input closes, on SIGTERM, or
//! after a bounded lifetime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::{Metrics, Pki, StatsdSettings};
use tokio::io::AsyncBufReadExt as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::fleet::Fleet;
use crate::identities;
use crate::procfs;

/// Clients one child holds at most: half a 20,000 open-file limit, the
/// rest for the reconnects' sockets in flight.
pub const MAX_PER_PROCESS: usize = 10_000;
/// Time a child gets to issue its identities and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Time a child gets to stop its clients.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// A child ends itself after this long, whatever happens to its parent.
const LIFETIME: Duration = Duration::from_secs(3600);

/// Arguments of `fleet-for-bench`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The CA's certificate (PEM).
    #[arg(long)]
    ca_cert: PathBuf,
    /// The CA's key (PEM).
    #[arg(long)]
    ca_key: PathBuf,
    /// Index of the first client (its name is `bench-client-<index>`).
    #[arg(long)]
    first: usize,
    /// Clients to run.
    #[arg(long)]
    count: usize,
    /// A server node's pipe address; every client knows all of them.
    #[arg(long = "server", required = true)]
    servers: Vec<SocketAddr>,
    /// Loopback port of a statsd listener the clients report to.
    #[arg(long)]
    statsd: Option<u16>,
}

/// Client fleets running in child processes.
pub struct FleetProcesses {
    processes: Vec<restpipe_tests::NodeProcess>,
}

impl FleetProcesses {
    /// Starts children holding clients `0..count` together (at most
    /// [`MAX_PER_PROCESS`] each), every client knowing `servers`, and
    /// waits until all are ready to dial. `authority` is the CA's
    /// certificate and key; logs go to `dir`, named after `label`.
    pub async fn start(
        authority: &(PathBuf, PathBuf),
        count: usize,
        servers: &[SocketAddr],
        statsd: Option<SocketAddr>,
        dir: &Path,
        label: &str,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the benchmark binary")?;
        let mut processes = Vec::new();
        for (index, first) in (0..count).step_by(MAX_PER_PROCESS).enumerate() {
            let mut command = std::process::Command::new(&exe);
            command
                .arg("fleet-for-bench")
                .arg("--ca-cert")
                .arg(&authority.0)
                .arg("--ca-key")
                .arg(&authority.1)
                .arg("--first")
                .arg(first.to_string())
                .arg("--count")
                .arg(MAX_PER_PROCESS.min(count - first).to_string());
            for server in servers {
                command.arg("--server").arg(server.to_string());
            }
            if let Some(statsd) = statsd {
                command.arg("--statsd").arg(statsd.port().to_string());
            }
            let log = dir.join(format!("fleet-{label}-{index}.log"));
            processes.push(restpipe_tests::NodeProcess::spawn(command, &log)?);
        }
        for process in &mut processes {
            process.wait_for_line("ready", READY_TIMEOUT).await?;
        }
        Ok(Self { processes })
    }

    /// Resident memory of all the children together now.
    pub fn rss(&self) -> anyhow::Result<u64> {
        self.processes
            .iter()
            .map(|process| procfs::rss(process.pid()))
            .sum()
    }

    /// Tells every child to dial: all clients at once.
    pub async fn dial(&mut self) -> anyhow::Result<()> {
        for process in &mut self.processes {
            process.send_line("go").await?;
        }
        Ok(())
    }

    /// Stops every child: its clients drain and close their connections.
    pub async fn stop(self) -> anyhow::Result<()> {
        for process in self.processes {
            process.stop(STOP_TIMEOUT).await?;
        }
        Ok(())
    }
}

/// Runs `fleet-for-bench`: the child side.
pub fn serve(args: FleetArgs) -> anyhow::Result<()> {
    crate::init_logging("error");
    procfs::raise_open_file_limit()?;
    let pki = Pki::load(&args.ca_cert, &args.ca_key)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let clients =
        identities::issue_in_parallel(&pki, args.first..args.first + args.count, threads)?;
    let metrics = match args.statsd {
        Some(port) => Metrics::new(&StatsdSettings {
            host: "127.0.0.1".to_owned(),
            port,
            prefix: String::new(),
        })?,
        None => Metrics::disabled(),
    };
    // The same runtime a client fleet has in the benchmark process: a
    // worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("fleet")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        println!("ready");
        use std::io::Write as _;
        std::io::stdout().flush()?;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let go = tokio::select! {
            line = lines.next_line() => matches!(line, Ok(Some(line)) if line.trim() == "go"),
            _ = terminate.recv() => false,
            _ = tokio::time::sleep(LIFETIME) => false,
        };
        if !go {
            return Ok(());
        }
        let fleet = Fleet::start(
            &tokio::runtime::Handle::current(),
            &clients,
            args.first,
            &args.servers,
            &metrics,
        );
        let parent_gone = async { while let Ok(Some(_)) = lines.next_line().await {} };
        tokio::select! {
            () = parent_gone => {}
            _ = terminate.recv() => {}
            _ = tokio::time::sleep(LIFETIME) => {}
        }
        fleet.stop().await;
        anyhow::Ok(())
    })
}
