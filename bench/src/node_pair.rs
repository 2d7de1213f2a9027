//! A server node and a client node connected to it, each a child process
//! ([`NodeProcess`]): the pair the throughput and large-body scenarios
//! send their loads through.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::{CertFiles, LOOPBACK};

use crate::node_process::{NodeProcess, Placement};
use crate::probe;

/// Longest wait for the client node to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The two nodes, the client's pipe up.
pub struct NodePair {
    pub server: NodeProcess,
    pub client: NodeProcess,
}

impl NodePair {
    /// Starts the server node and the client node, logging into `dir`
    /// with `label` in the logs' names, each with `workers` runtime worker
    /// threads (`None`: one per core, the default), and waits until the
    /// pipe is up.
    pub async fn start(
        files: (&CertFiles, &CertFiles),
        workers: Option<usize>,
        dir: &Path,
        label: &str,
    ) -> anyhow::Result<Self> {
        let start = |files, placement, log: &str| {
            let log = dir.join(format!("{log}-{label}.log"));
            async move {
                match workers {
                    Some(workers) => {
                        NodeProcess::start_with_workers(files, placement, workers, &log).await
                    }
                    None => NodeProcess::start(files, placement, &log).await,
                }
            }
        };
        let server = start(files.0, Placement::Server { listen: LOOPBACK }, "server").await?;
        let pipe = server
            .pipe
            .context("the server node reported no pipe address")?;
        let client = start(files.1, Placement::Client { server: pipe }, "client").await?;
        probe::wait_for_peers(client.http, 1, CONNECT_TIMEOUT)
            .await
            .context("the client node did not connect to the server node")?;
        Ok(Self { server, client })
    }

    /// CPU the two have used.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        Ok(self.server.cpu_time()? + self.client.cpu_time()?)
    }

    /// Stops both.
    pub async fn stop(self) -> anyhow::Result<()> {
        let (server, client) = tokio::join!(self.server.stop(), self.client.stop());
        server.and(client)
    }
}
