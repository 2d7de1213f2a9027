//! Many client nodes in one process: each a real `pipe_core::node::Node`
//! with its own identity, kept connected by pipe-core's own reconnect loop
//! (the test kit's `spawn_frontless_client_to` over `pipe_core::client::run`,
//! with the default backoff), but without the local HTTP front a full
//! client node would add, which the server never sees.
//!
//! The fleet runs on a runtime of its own, so its work never shares a
//! scheduler with the benchmark's probes.
//!
//! Each client connects from one of [`SOURCE_ADDRESSES`] loopback
//! addresses (pipe-core's `source_address` option), 127.0.0.2 onward, by
//! its index: toward one server port a source address has only the
//! ephemeral port range (28,232 ports by default), which 100,000 clients
//! from one address would exhaust.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use restpipe_tests::{
    BackoffSettings, CertFiles, Metrics, Node, NodeOptions, NodeSettings, Proxies, Registry, Role,
    SERVER_NAME, Side, spawn_frontless_client_to,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identities::{ClientIdentity, Identities};
use crate::plan::Plan;

/// Loopback addresses the simulated clients connect from, 127.0.0.2 and
/// the next ones: 100,000 clients leave each fewer than 3,200 connections,
/// far inside its ephemeral ports even with old connections lingering.
pub const SOURCE_ADDRESSES: usize = 32;

/// The loopback address the client of `index` connects from.
pub fn source_address(index: usize) -> IpAddr {
    let offset = u8::try_from(index % SOURCE_ADDRESSES).unwrap_or(0);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + offset))
}

/// Time the fleet's runtime gets to wind down at the end of a scenario.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

/// What a scenario of one server node and a fleet of clients starts from:
/// the server's identity files, the clients' identities, where node logs
/// go, and the runtime the fleet runs on (its own, so its work never shares
/// a scheduler with the benchmark's probes).
pub struct FleetSetup {
    /// The server node's identity files.
    pub server_files: CertFiles,
    /// The simulated clients' identities.
    pub clients: Vec<ClientIdentity>,
    /// Where node logs go.
    pub dir: PathBuf,
    /// The runtime to start fleets on.
    pub runtime: tokio::runtime::Runtime,
}

impl FleetSetup {
    /// Writes the server's identity, issues `count` client identities and
    /// builds the fleet's runtime, a worker per core.
    pub fn prepare(plan: &Plan, identities: &mut Identities, count: usize) -> anyhow::Result<Self> {
        Ok(Self {
            server_files: identities.write_files(SERVER_NAME, Role::Server)?,
            dir: identities.dir().to_owned(),
            clients: identities.clients(count)?.to_vec(),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(plan.cores)
                .thread_name("fleet")
                .enable_all()
                .build()?,
        })
    }

    /// Ends the fleet's runtime, bounded.
    pub fn shutdown(self) {
        self.runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    }
}

/// Longest wait for the fleet's tasks to end once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Client nodes connected (or connecting) to a server (or to one of several).
pub struct Fleet {
    nodes: Vec<Arc<Node>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Fleet {
    /// Starts one client node per identity on `runtime`, all dialling at
    /// once (the storm a server restart also causes), each knowing every
    /// server of `servers` (one at least; a client shuffles them, so a
    /// fleet spreads over several). The identities are the clients of
    /// index `first` onward, which picks their [`source_address`]. All
    /// report to `metrics` (one shared sink, so counting costs one socket).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        identities: &[ClientIdentity],
        first: usize,
        servers: &[SocketAddr],
        metrics: &Metrics,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let registry = Registry::with_examples(Side::Client);
        let nodes = identities
            .iter()
            .enumerate()
            .map(|(offset, identity)| {
                let options = NodeOptions {
                    handlers: registry.clone(),
                    settings: NodeSettings::default(),
                    server_name: SERVER_NAME.to_owned(),
                    backoff: BackoffSettings::default(),
                    proxy: Proxies::direct(),
                    source_address: Some(source_address(first + offset)),
                    shutdown: shutdown.clone(),
                };
                spawn_frontless_client_to(
                    runtime,
                    &tasks,
                    servers,
                    identity.name.clone(),
                    identity.tls.clone(),
                    metrics,
                    options,
                )
            })
            .collect();
        tasks.close();
        Self {
            nodes,
            shutdown,
            tasks,
        }
    }

    /// How many of the fleet's nodes are connected to a server now.
    pub fn connected(&self) -> usize {
        self.nodes
            .iter()
            .filter(|node| !node.peers().is_empty())
            .count()
    }

    /// Stops every node (they drain and close their connections) and waits,
    /// bounded, for them to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if tokio::time::timeout(STOP_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            eprintln!("   some simulated clients had not stopped after {STOP_TIMEOUT:?}");
        }
    }
}
