//! Where a peer's queued jobs go: over its connection to this node, or, on
//! a node of a cluster, through the backplane to the node that holds it.
//! Either way the event carries the job's tag, so the peer runs it once
//! however often, and through whichever node, it arrives.

use std::sync::Arc;
use std::time::Duration;

use crate::link::{PeerHandle, RequestError};
use crate::node::cluster::{Cluster, ForwardError};
use crate::wire::{Event, JobProgress, JobTag, Reply};

/// The way to a peer with queued jobs.
#[derive(Debug, Clone)]
pub(super) enum Route {
    /// Its connection to this node.
    Local(PeerHandle),
    /// The node of the cluster that holds it.
    Cluster(Arc<Cluster>, String),
}

/// How sending one job went.
#[derive(Debug)]
pub(super) enum Sent {
    /// Its reply.
    Reply(Box<Reply>),
    /// The peer (or the way to it) went: the job goes back to its queue.
    PeerGone,
    /// It failed for good, with this HTTP status and reason.
    Failed(u16, String),
}

impl Route {
    /// Whether the route takes jobs now.
    pub(super) fn is_accepting(&self) -> bool {
        match self {
            Self::Local(handle) => handle.is_accepting(),
            Self::Cluster(cluster, _) => cluster.is_connected(),
        }
    }

    /// Sends `event` for job `tag` and waits up to `timeout` for its reply.
    pub(super) async fn send(
        &self,
        event: Event,
        timeout: Duration,
        tag: JobTag,
        progress: JobProgress,
    ) -> Sent {
        match self {
            Self::Local(handle) => match handle.request_job(event, timeout, tag, progress).await {
                Ok(reply) => Sent::Reply(Box::new(reply)),
                Err(RequestError::Disconnected { .. } | RequestError::GoingAway { .. }) => {
                    Sent::PeerGone
                }
                Err(error @ RequestError::TimedOut { .. }) => Sent::Failed(504, error.to_string()),
                Err(error @ RequestError::TooLarge { .. }) => Sent::Failed(413, error.to_string()),
            },
            Self::Cluster(cluster, peer) => {
                let deadline = tokio::time::Instant::now() + timeout;
                match cluster
                    .forward_job(peer, event, deadline, tag, progress)
                    .await
                {
                    Ok(reply) => Sent::Reply(Box::new(reply)),
                    Err(ForwardError::TimedOut(_)) => {
                        Sent::Failed(504, format!("no reply from {peer} within {timeout:?}"))
                    }
                    // Nobody holds it, the backplane is down, or its holder
                    // went: delivered again later (the tag makes that safe).
                    Err(_) => Sent::PeerGone,
                }
            }
        }
    }
}
