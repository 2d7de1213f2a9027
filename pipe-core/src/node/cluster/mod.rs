//! Several server nodes on a NATS backplane. A server node started with
//! `--cluster nats://…` joins the cluster: every client it holds becomes
//! reachable from every other node of the cluster, and it reaches theirs.
//! restpipe implements no clustering of its own: NATS carries the traffic,
//! its queue groups pick the holder, its "no responders" says that nobody
//! holds a client.
//!
//! - `holder`: a held client's subscription, serving requests forwarded by
//!   other nodes over the local connection.
//! - `forward`: sending a request for a client held elsewhere, and getting
//!   its reply (both bodies streamed).
//! - `mailbox`: the node's one inbox subscription, handing each exchange
//!   its messages.
//! - `stream`: bodies across the backplane, in the pipe's `Chunk` frames
//!   under `Window` credit.
//! - `takeover`: one holder per client name, cluster-wide: the newest
//!   connection wins.
//! - `members`: the nodes of the cluster (heartbeats) and the clients each
//!   holds.
//! - `subjects`: the subjects, under `rp.<cluster name>.`.
//! - `connect`: the NATS connection (mutual TLS).

mod connect;
mod forward;
mod holder;
mod mailbox;
mod members;
mod stream;
mod subjects;
mod takeover;

use std::path::PathBuf;
use std::sync::Arc;

pub use connect::ClusterError;
pub use forward::ForwardError;
pub use holder::{Held, MAX_FORWARDED_IN};
pub use members::{ClusterPeer, GONE_AFTER, HEARTBEAT, NodeSeen};
pub use stream::FORWARDED_BODY_MEMORY;
pub use subjects::is_cluster_name;

use members::Members;
use subjects::Subjects;

/// Default cluster name: the subjects' namespace.
pub const DEFAULT_CLUSTER_NAME: &str = "restpipe";
/// A NATS header on forwarded requests: the node that took the request
/// from its caller.
pub const ORIGIN_HEADER: &str = "Rp-Origin";
/// A NATS header on a holder's first answer: the node holding the client,
/// whose heartbeats the requester watches while it waits.
pub const HOLDER_HEADER: &str = "Rp-Holder";

/// How a server node joins its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// NATS servers (`nats://HOST:PORT` or `tls://HOST:PORT`); the client
    /// learns the rest of a NATS cluster from them.
    pub urls: Vec<String>,
    /// The cluster's name: its subjects live under `rp.<name>.`.
    pub name: String,
    /// This node's id in the cluster, unique among its nodes.
    pub node_id: String,
    /// Mutual TLS to NATS, if set.
    pub tls: Option<NatsTls>,
}

/// Mutual TLS to NATS: the CA that signed the NATS servers' certificates,
/// and this node's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTls {
    /// The NATS servers' CA (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM), presented to NATS.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// A node's membership of its cluster.
#[derive(Debug)]
pub struct Cluster {
    nats: async_nats::Client,
    /// Where the messages of forwarded exchanges arrive, both ways.
    mailboxes: Arc<mailbox::Mailboxes>,
    subjects: Subjects,
    settings: ClusterSettings,
    members: Arc<Members>,
    /// Clients other nodes announced they hold: where a queued job may go,
    /// and why a client standing by is refused. Forgotten when the holder
    /// announces it let the client go, when a listing no longer shows it,
    /// or when a job finds nobody holding it.
    holders: dashmap::DashMap<String, takeover::KnownHolder>,
    /// Woken when another node announces a client.
    announced: tokio::sync::Notify,
    /// Places for forwarded requests served at once.
    forwards_in: Arc<tokio::sync::Semaphore>,
    /// What forwarded bodies may hold of memory, both ways together.
    body_memory: Arc<crate::wire::MemoryBudget>,
}

impl Cluster {
    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Whether the NATS connection is up now.
    pub fn is_connected(&self) -> bool {
        matches!(
            self.nats.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    /// Whether another node said it holds client `name` (and no job found
    /// otherwise since).
    pub fn held_elsewhere(&self, name: &str) -> bool {
        self.holders.contains_key(name)
    }

    /// The node that said it holds client `name`, if another did.
    pub fn holder_of(&self, name: &str) -> Option<String> {
        self.holders.get(name).map(|known| known.node.clone())
    }

    /// Resolves when another node next announces that it holds a client.
    pub fn announced(&self) -> tokio::sync::futures::Notified<'_> {
        self.announced.notified()
    }

    /// What `/_pipe/status` shows of the cluster.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.settings.name,
            "node_id": self.settings.node_id,
            "backplane": if self.is_connected() { "connected" } else { "disconnected" },
            "nodes": self.members.nodes(),
        })
    }
}
