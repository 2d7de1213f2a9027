//! Many client nodes in one process: each a real `pipe_core::Node`
//! with its own identity, kept connected by pipe-core's own reconnect loop
//! (`pipe_core::run_client`, with the default backoff), but without the
//! local HTTP front a full client node would add, which the server never
//! sees.
//!
//! The fleet runs on a runtime of its own, so its work never shares a
//! scheduler with the benchmark's probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pipe_core::BackoffSettings;
use pipe_core::Handlers;
use pipe_core::Reloadable;
use pipe_core::ServerTarget;
use pipe_core::metrics::Metrics;
use pipe_core::{Node, NodeSettings, Registry, Side};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identities::{ClientIdentity, SERVER_NAME};

/// Longest wait for the fleet's tasks to end once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Client nodes connected (or connecting) to one server.
pub struct Fleet {
    nodes: Vec<Arc<Node>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Fleet {
    /// Starts one client node per identity on `runtime`, all dialling
    /// `server` at once (the storm a server restart also causes). All report
    /// to `metrics` (one shared sink, so counting costs one socket).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        identities: &[ClientIdentity],
        server: SocketAddr,
        metrics: &Metrics,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let registry = Registry::with_examples(Side::Client);
        let target = ServerTarget {
            host: server.ip().to_string(),
            port: server.port(),
            server_name: Some(SERVER_NAME.to_owned()),
        };
        let nodes = identities
            .iter()
            .map(|identity| {
                let node = Node::new(
                    Side::Client,
                    identity.name.clone(),
                    Handlers::new(registry.clone()),
                    NodeSettings::default(),
                    metrics.clone(),
                );
                tasks.spawn_on(
                    pipe_core::run_client(
                        target.clone(),
                        Arc::new(Reloadable::new(identity.tls.clone())),
                        node.clone(),
                        BackoffSettings::default(),
                        shutdown.clone(),
                    ),
                    runtime,
                );
                node
            })
            .collect();
        tasks.close();
        Self {
            nodes,
            shutdown,
            tasks,
        }
    }

    /// How many of the fleet's nodes are connected to the server now.
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
