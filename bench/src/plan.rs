//! How big and how long each scenario runs: the full figures, or `--quick`
//! ones that only prove the benchmark still works (CI).

use std::time::Duration;

/// Files a process needs besides its connections (listeners, logs, the
/// runtime's own descriptors, probes).
pub const SPARE_FILES: u64 = 256;

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Brief run for CI.
    pub quick: bool,
    /// Cores of this machine.
    pub cores: usize,
    /// Load before measuring starts: connections warm, caches filled.
    pub warmup: Duration,
    /// Measured load per configuration.
    pub load: Duration,
    /// Concurrencies of the request scenario.
    pub concurrencies: Vec<usize>,
    /// Client counts of the connections scenario, as the targets want them;
    /// a count above [`Self::max_held`] cannot run here (the scenario
    /// says so, and runs the largest that fits instead).
    pub client_counts: Vec<usize>,
    /// Files a process may open here (the hard limit, to which every
    /// process of the benchmark raises its own).
    pub open_files: u64,
    /// Clients held while measuring heartbeat CPU.
    pub heartbeat_clients: usize,
    /// Window over which heartbeat CPU is measured.
    pub heartbeat_window: Duration,
    /// Body size of the large-body scenario.
    pub large_bytes: u64,
    /// Longest wait for a fleet of clients to (re)connect before the
    /// figure is reported as not reached.
    pub connect_bound: Duration,
    /// Longest wait for one large transfer.
    pub transfer_bound: Duration,
    /// Jobs queued for an offline client, then delivered when it connects.
    pub jobs_backlog: u64,
    /// Jobs queued to watch a node's memory while its queue grows.
    pub jobs_queued: u64,
    /// Longest a batch of jobs may take to be accepted, or delivered.
    pub jobs_bound: Duration,
    /// Page writes of each kind, each with its `fdatasync`, timed as the
    /// jobs' baseline.
    pub disk_samples: usize,
    /// Clients spread over the cluster scenario's three server nodes (held
    /// by child processes, so not limited by this process's open files).
    pub cluster_clients: usize,
}

impl Plan {
    /// The plan for a full or a quick run, the heartbeat's clients limited
    /// by the open-file limit (each client holds a socket in this process,
    /// and the server one in its own).
    pub fn new(quick: bool, open_files: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut plan = if quick {
            Self {
                quick,
                cores,
                warmup: Duration::from_millis(250),
                load: Duration::from_secs(1),
                concurrencies: vec![1, 64],
                client_counts: vec![100],
                open_files,
                heartbeat_clients: 100,
                heartbeat_window: Duration::from_secs(5),
                large_bytes: 8 << 20,
                connect_bound: Duration::from_secs(60),
                transfer_bound: Duration::from_secs(60),
                jobs_backlog: 300,
                jobs_queued: 4_000,
                jobs_bound: Duration::from_secs(10),
                disk_samples: 50,
                cluster_clients: 150,
            }
        } else {
            Self {
                quick,
                cores,
                warmup: Duration::from_secs(2),
                load: Duration::from_secs(10),
                concurrencies: vec![1, 64],
                client_counts: vec![1_000, 10_000, 100_000],
                open_files,
                heartbeat_clients: 10_000,
                heartbeat_window: Duration::from_secs(10),
                large_bytes: 256 << 20,
                connect_bound: Duration::from_secs(180),
                transfer_bound: Duration::from_secs(600),
                jobs_backlog: 100_000,
                jobs_queued: 1_000_000,
                jobs_bound: Duration::from_secs(600),
                disk_samples: 500,
                cluster_clients: 30_000,
            }
        };
        plan.heartbeat_clients = plan.heartbeat_clients.min(plan.max_held());
        plan
    }

    /// Connections one process can hold here: a socket each, within the
    /// open-file limit.
    pub fn max_held(&self) -> usize {
        usize::try_from(self.open_files.saturating_sub(SPARE_FILES))
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// `quick` or `full`, for the report.
    pub fn mode(&self) -> &'static str {
        if self.quick { "quick" } else { "full" }
    }
}
