//! One holder per client name, cluster-wide. A node that takes a client's
//! connection announces it (`rp.<c>.held.<name>`); a node holding an older
//! connection of that name lets it go with `GoAway` (Replaced), as a single
//! node does when the same client connects twice. The newer connection is
//! the one that connected later (ties go to the greater node id).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Cluster;
use crate::link::PeerHandle;
use crate::node::PeerDirectory;
use crate::wire::proto::go_away;

/// Clients of other nodes remembered as held there, at most: past it a
/// queued job for one that is not remembered waits for the periodic look
/// instead of going at once.
const MAX_HOLDERS_KNOWN: usize = 100_000;
/// How often the clients of the other nodes are listed afresh.
const RELEARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// "Node `node` holds client `name` since `since_ms`", or, `released`, "let
/// go of the connection it held since then".
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    name: String,
    node: String,
    since_ms: u64,
    /// Absent from the announcements of nodes that never send releases.
    #[serde(default)]
    released: bool,
}

/// Another node's claim to hold a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KnownHolder {
    pub(super) node: String,
    /// When that node's connection of the client began (ms since the epoch).
    pub(super) since_ms: u64,
}

/// When `handle` connected, in milliseconds since the epoch.
pub(super) fn since_ms(handle: &PeerHandle) -> u64 {
    handle
        .connected_at()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Cluster {
    /// Tells the other nodes that this node holds `name` through `handle`.
    pub(super) async fn announce(&self, name: &str, handle: &PeerHandle) {
        self.publish_announcement(name, handle, false).await;
    }

    /// Tells the other nodes that this node no longer holds `name` through
    /// `handle`, so that none refuses the client as held here.
    pub(super) async fn announce_release(&self, name: &str, handle: &PeerHandle) {
        self.publish_announcement(name, handle, true).await;
    }

    async fn publish_announcement(&self, name: &str, handle: &PeerHandle, released: bool) {
        let announcement = Announcement {
            name: name.to_owned(),
            node: self.node_id().to_owned(),
            since_ms: since_ms(handle),
            released,
        };
        let payload = serde_json::to_vec(&announcement).unwrap_or_default();
        if let Err(error) = self
            .nats
            .publish(self.subjects.held(name), payload.into())
            .await
        {
            warn!(client = %name, "cannot announce the client to the cluster: {error}");
        }
    }

    /// Learns which clients the other nodes hold from a listing, soon after
    /// joining and then every [`RELEARN_EVERY`]: announcements made before
    /// this node joined (or while its backplane was down) are not heard.
    pub(super) async fn learn_holders(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(RELEARN_EVERY);
        // The first listing waits for the first heartbeats.
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(super::HEARTBEAT) => {}
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let asked_at_ms = now_ms();
            let Ok(listed) = self.peers().await else {
                continue;
            };
            self.relearn(listed, asked_at_ms);
            self.announced.notify_waiters();
        }
    }

    /// Takes the other nodes' clients from a listing asked for at
    /// `asked_at_ms`: a claim the listing does not show is forgotten (its
    /// node let the client go without being heard, or is gone), unless it
    /// was announced after the listing was asked for.
    fn relearn(&self, listed: Vec<super::ClusterPeer>, asked_at_ms: u64) {
        let listed: std::collections::HashMap<String, KnownHolder> = listed
            .into_iter()
            .filter(|peer| peer.node != self.node_id())
            .map(|peer| {
                let known = KnownHolder {
                    node: peer.node,
                    since_ms: peer.connected_since_ms,
                };
                (peer.name, known)
            })
            .collect();
        self.holders.retain(|name, known| {
            known.since_ms >= asked_at_ms
                || listed
                    .get(name)
                    .is_some_and(|shown| shown.node == known.node)
        });
        for (name, known) in listed {
            if self.holders.len() < MAX_HOLDERS_KNOWN || self.holders.contains_key(&name) {
                self.holders.entry(name).or_insert(known);
            }
        }
    }

    /// Lets go of the connections in `peers` that a newer connection on
    /// another node replaced, until `stop`.
    pub(super) async fn watch_takeovers(
        self: Arc<Self>,
        peers: Arc<dyn PeerDirectory>,
        stop: CancellationToken,
    ) {
        let mut announcements = match self.nats.subscribe(self.subjects.all_held()).await {
            Ok(announcements) => announcements,
            Err(error) => {
                warn!("cannot watch the cluster's holders: {error}");
                return;
            }
        };
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                message = announcements.next() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            let Ok(announcement) = serde_json::from_slice::<Announcement>(&message.payload) else {
                continue;
            };
            if announcement.node == self.node_id() {
                if !announcement.released {
                    self.holders.remove(&announcement.name);
                }
                continue;
            }
            if announcement.released {
                // Only that connection's claim: a newer one of the same node
                // may have announced itself already.
                self.holders.remove_if(&announcement.name, |_, known| {
                    known.node == announcement.node && known.since_ms <= announcement.since_ms
                });
                continue;
            }
            if self.holders.len() < MAX_HOLDERS_KNOWN
                || self.holders.contains_key(&announcement.name)
            {
                self.holders.insert(
                    announcement.name.clone(),
                    KnownHolder {
                        node: announcement.node.clone(),
                        since_ms: announcement.since_ms,
                    },
                );
            }
            self.announced.notify_waiters();
            let Some(local) = peers.get(&announcement.name) else {
                continue;
            };
            let ours = (since_ms(&local), self.node_id());
            if ours < (announcement.since_ms, announcement.node.as_str()) {
                info!(client = %announcement.name, node = %announcement.node, "the client connected to another node: letting this connection go");
                local.close(
                    go_away::Reason::Replaced,
                    format!(
                        "a newer connection with the same identity reached node {}",
                        announcement.node
                    ),
                );
            }
        }
    }
}

/// Now, in milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
