//! The nodes of the cluster and the clients each holds. Every node sends a
//! heartbeat every [`HEARTBEAT`]; a node unheard for [`GONE_AFTER`] is
//! gone. The clients are asked for when wanted (`GET /_pipe/peers`): every
//! node answers with the clients it holds, in pages, and the asker waits
//! for every live node's last page or [`ASK_WITHIN`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Cluster;
use super::takeover::since_ms;
use crate::node::PeerDirectory;

/// How often a node says it is there.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node unheard this long is gone.
pub const GONE_AFTER: Duration = Duration::from_secs(6);
/// How long a gone node is remembered.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How long a listing waits for every node's answer.
const ASK_WITHIN: Duration = Duration::from_secs(1);
/// Clients in one page of an answer (a page stays far below NATS's
/// `max_payload`).
const PAGE: usize = 2_000;

/// The nodes heard from.
#[derive(Debug, Default)]
pub(super) struct Members {
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    clients: usize,
}

/// A node of the cluster as `/_pipe/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeSeen {
    /// Its id.
    pub node: String,
    /// Clients it holds, as its last heartbeat said.
    pub clients: usize,
    /// Milliseconds since its last heartbeat.
    pub heard_ms_ago: u64,
}

/// A client of the cluster and the node that holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterPeer {
    /// The client's name.
    pub name: String,
    /// The node holding it.
    pub node: String,
    /// When it connected, milliseconds since the epoch.
    pub connected_since_ms: u64,
}

/// A node's heartbeat.
#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    node: String,
    clients: usize,
}

/// One page of a node's answer to "which clients do you hold?".
#[derive(Debug, Serialize, Deserialize)]
struct Page {
    node: String,
    peers: Vec<ClusterPeer>,
    last: bool,
}

impl Members {
    /// Notes `heartbeat`; `true` if its node was not known (or gone).
    fn saw(&self, heartbeat: Heartbeat) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Gone nodes are remembered a while (so their requests can be told
        // gone), then forgotten.
        seen.retain(|_, node| now.duration_since(node.at) < FORGET_AFTER);
        let seen_at = Seen {
            at: now,
            clients: heartbeat.clients,
        };
        seen.insert(heartbeat.node, seen_at).is_none()
    }

    /// Whether `node` was heard from, but not within [`GONE_AFTER`]: it is
    /// gone. A node never heard of is not taken for gone (its first
    /// heartbeat may still be on its way).
    pub(super) fn is_gone(&self, node: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(node)
            .is_some_and(|seen| seen.at.elapsed() >= GONE_AFTER)
    }

    /// The live nodes, sorted by id.
    pub(super) fn nodes(&self) -> Vec<NodeSeen> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut nodes: Vec<NodeSeen> = seen
            .iter()
            .filter(|(_, node)| now.duration_since(node.at) < GONE_AFTER)
            .map(|(id, node)| NodeSeen {
                node: id.clone(),
                clients: node.clients,
                heard_ms_ago: u64::try_from(now.duration_since(node.at).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }
}

impl Cluster {
    /// The cluster's background work for this node until `stop`: its
    /// heartbeat, hearing the others', answering listings, and letting go
    /// of clients that connected to another node.
    pub async fn run(self: Arc<Self>, peers: Arc<dyn PeerDirectory>, stop: CancellationToken) {
        tokio::join!(
            self.clone().heartbeat(peers.clone(), stop.clone()),
            self.clone().hear_nodes(peers.clone(), stop.clone()),
            self.clone().answer_listings(peers.clone(), stop.clone()),
            self.clone().watch_takeovers(peers, stop.clone()),
            self.clone().learn_holders(stop),
        );
    }

    async fn heartbeat(self: Arc<Self>, peers: Arc<dyn PeerDirectory>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.beat(peers.as_ref()).await;
        }
    }

    /// Says this node is there, with how many clients it holds.
    async fn beat(&self, peers: &dyn PeerDirectory) {
        let beat = Heartbeat {
            node: self.node_id().to_owned(),
            clients: peers.len(),
        };
        let payload = serde_json::to_vec(&beat).unwrap_or_default();
        // Lost while NATS is away; the next one goes when it is back.
        let _ = self
            .nats
            .publish(self.subjects.nodes(), payload.into())
            .await;
    }

    /// Hears the other nodes' heartbeats; a node heard for the first time
    /// gets ours at once, so a joining node learns of every other within a
    /// round trip, not a heartbeat period.
    async fn hear_nodes(self: Arc<Self>, peers: Arc<dyn PeerDirectory>, stop: CancellationToken) {
        let Ok(mut beats) = self.nats.subscribe(self.subjects.nodes()).await else {
            warn!("cannot hear the cluster's nodes");
            return;
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                message = beats.next() => match message {
                    Some(message) => {
                        if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&message.payload)
                            && self.members.saw(beat)
                        {
                            self.beat(peers.as_ref()).await;
                        }
                    }
                    None => return,
                },
            }
        }
    }

    async fn answer_listings(
        self: Arc<Self>,
        peers: Arc<dyn PeerDirectory>,
        stop: CancellationToken,
    ) {
        let Ok(mut asks) = self.nats.subscribe(self.subjects.peers()).await else {
            warn!("cannot answer the cluster's listings");
            return;
        };
        loop {
            let reply = tokio::select! {
                () = stop.cancelled() => return,
                message = asks.next() => match message {
                    Some(message) => message.reply,
                    None => return,
                },
            };
            let Some(reply) = reply else { continue };
            let held: Vec<ClusterPeer> = peers
                .list()
                .into_iter()
                .map(|(name, handle)| ClusterPeer {
                    name,
                    node: self.node_id().to_owned(),
                    connected_since_ms: since_ms(&handle),
                })
                .collect();
            let mut pages = held.chunks(PAGE).peekable();
            if pages.peek().is_none() {
                let _ = self.send_page(&reply, Vec::new(), true).await;
            }
            while let Some(page) = pages.next() {
                let last = pages.peek().is_none();
                let _ = self.send_page(&reply, page.to_vec(), last).await;
            }
        }
    }

    async fn send_page(
        &self,
        to: &async_nats::Subject,
        peers: Vec<ClusterPeer>,
        last: bool,
    ) -> Result<(), String> {
        let page = Page {
            node: self.node_id().to_owned(),
            peers,
            last,
        };
        let payload = serde_json::to_vec(&page).map_err(|e| e.to_string())?;
        self.nats
            .publish(to.clone(), payload.into())
            .await
            .map_err(|e| e.to_string())
    }

    /// Every client of the cluster and its holder, sorted by name; `Err`
    /// if the backplane is down. Nodes that do not answer within a second
    /// are left out.
    pub async fn peers(&self) -> Result<Vec<ClusterPeer>, String> {
        if !self.is_connected() {
            return Err("this node is not connected to the cluster's NATS".to_owned());
        }
        let inbox = self.nats.new_inbox();
        let mut pages = self
            .nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.nats
            .publish_with_reply(self.subjects.peers(), inbox, bytes::Bytes::new())
            .await
            .map_err(|e| e.to_string())?;
        let expected = self.members.nodes().len().max(1);
        let deadline = Instant::now() + ASK_WITHIN;
        let mut done = std::collections::HashSet::new();
        let mut all = Vec::new();
        while done.len() < expected {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, pages.next()).await else {
                break;
            };
            let Ok(page) = serde_json::from_slice::<Page>(&message.payload) else {
                continue;
            };
            all.extend(page.peers);
            if page.last {
                done.insert(page.node);
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}
