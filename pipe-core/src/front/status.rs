//! `/_pipe/health` and `/_pipe/status`: what a node says about itself.

use std::time::SystemTime;

use serde_json::json;

use crate::node::Node;
use crate::node::jobs::JobStore;
use crate::wire::Side;

/// Where a node answers that it is up: open even with API tokens.
pub(super) const HEALTH_PATH: &str = "/_pipe/health";
/// Where a node describes itself.
pub(super) const STATUS_PATH: &str = "/_pipe/status";
/// Where a node lists the peers it can reach.
pub(super) const PEERS_PATH: &str = "/_pipe/peers";

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(super) fn health(node: &Node) -> serde_json::Value {
    json!({
        "status": "ok",
        "node": node.name(),
        "side": node.side().as_str(),
        "connected_peers": node.peers().len(),
    })
}

/// Jobs by state and each peer's queue, or the store's error.
fn jobs_status(store: &JobStore) -> serde_json::Value {
    let by_state = store.counts().map(|counts| {
        counts
            .into_iter()
            .map(|(state, count)| (state.as_str().to_owned(), json!(count)))
            .collect::<serde_json::Map<_, _>>()
    });
    let queues = store.queues().map(|queues| {
        queues
            .into_iter()
            .map(|(peer, queued)| (peer, json!(queued)))
            .collect::<serde_json::Map<_, _>>()
    });
    match (by_state, queues) {
        (Ok(by_state), Ok(queues)) => json!({
            "by_state": by_state,
            "queued_by_peer": queues,
            // Durable commits (one fsync each) since the node started.
            "commits": store.commits(),
        }),
        (Err(error), _) | (_, Err(error)) => json!({ "error": error.to_string() }),
    }
}

/// `GET /_pipe/peers`: every peer this node can reach, and which node
/// holds it: the whole cluster's clients on a node of a cluster.
pub(super) async fn peers(node: &Node) -> serde_json::Value {
    let Some(cluster) = node.cluster() else {
        let peers: Vec<_> = node
            .peers()
            .list()
            .iter()
            .map(|(key, handle)| {
                json!({
                    "name": key,
                    "node": node.name(),
                    "connected_since": rfc3339(handle.connected_at()),
                })
            })
            .collect();
        return json!({ "peers": peers });
    };
    match cluster.peers().await {
        Ok(peers) => {
            let peers: Vec<_> = peers
                .into_iter()
                .map(|peer| {
                    let since = SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_millis(peer.connected_since_ms);
                    json!({
                        "name": peer.name,
                        "node": peer.node,
                        "connected_since": rfc3339(since),
                    })
                })
                .collect();
            json!({ "peers": peers })
        }
        Err(error) => json!({ "peers": [], "error": error }),
    }
}

/// The node's recent errors, newest first.
fn recent_errors(node: &Node) -> serde_json::Value {
    node.recent_errors()
        .list()
        .into_iter()
        .map(|error| {
            json!({
                "at": rfc3339(error.at),
                "source": error.source,
                "message": error.message,
            })
        })
        .collect()
}

pub(super) async fn status(node: &Node) -> serde_json::Value {
    let peers = node.peers().list();
    let (mut outbound, mut inbound) = (0, 0);
    let peers_json: Vec<_> = peers
        .iter()
        .map(|(key, handle)| {
            outbound += handle.in_flight_out();
            inbound += handle.in_flight_in();
            json!({
                "key": key,
                "name": handle.name(),
                "remote_addr": handle.peer().remote_addr.map(|a| a.to_string()),
                "connection_id": handle.connection_id(),
                "connected_since": rfc3339(handle.connected_at()),
                "in_flight_out": handle.in_flight_out(),
                "in_flight_in": handle.in_flight_in(),
            })
        })
        .collect();
    let uptime = SystemTime::now()
        .duration_since(node.started_at())
        .unwrap_or_default();
    let mut status = json!({
        "node": node.name(),
        "side": node.side().as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(node.started_at()),
        "uptime_seconds": uptime.as_secs_f64(),
        "connected_peers": peers.len(),
        "peers": peers_json,
        "in_flight": { "outbound": outbound, "inbound": inbound },
        "handlers": node.handlers().names(),
        "access_policy": node.handlers().policy().is_some(),
    });
    status["recent_errors"] = recent_errors(node);
    if let Some(jobs) = node.jobs() {
        status["jobs"] = jobs_status(jobs.store());
    }
    if let Some(cluster) = node.cluster() {
        let mut cluster_status = cluster.status();
        cluster_status["clients"] = self::peers(node).await["peers"].clone();
        status["cluster"] = cluster_status;
    }
    if node.side() == Side::Client {
        let link = node.link();
        status["link"] = json!({
            "connected": !peers.is_empty(),
            "server": link.server,
            "server_address": link.server_address.map(|address| address.to_string()),
            "proxy": link.proxy,
            "servers": link.servers,
            "reconnect_attempts": link.reconnect_attempts,
            "last_error": link.last_error,
            "last_error_server": link.last_error_server,
            "last_error_at": link.last_error_at.map(rfc3339),
        });
    }
    status
}
