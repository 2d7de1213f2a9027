//! The node's side of each link: the peer's events run through the node's
//! handlers, and what the link notices becomes metrics and connection events.

use std::sync::Arc;

use tokio::time::Instant;

use super::events::{ConnectionEvent, EventSink};
use super::metrics::{self, Metrics};
use crate::handlers::{Handlers, Job, Outcome};
use crate::link::{Delivery, Inbound, LinkNotice, PeerInfo, ReplyFuture};

/// Answers a peer's events with the node's handlers.
#[derive(Debug)]
pub(crate) struct NodeInbound {
    handlers: Arc<Handlers>,
    metrics: Metrics,
    events: EventSink,
    /// Largest body collected whole for a handler that does not stream.
    max_body_bytes: usize,
}

impl NodeInbound {
    pub(crate) fn new(
        handlers: Arc<Handlers>,
        metrics: Metrics,
        events: EventSink,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            handlers,
            metrics,
            events,
            max_body_bytes,
        }
    }
}

impl Inbound for NodeInbound {
    fn answer(&self, peer: &PeerInfo, delivery: Delivery) -> ReplyFuture {
        let job = Job {
            peer: peer.name.clone(),
            request_id: delivery.request_id,
            event: delivery.event,
            deadline: delivery.deadline,
            cancelled: delivery.cancelled,
        };
        let (handlers, metrics) = (self.handlers.clone(), self.metrics.clone());
        let max_body_bytes = self.max_body_bytes;
        Box::pin(async move {
            let started = Instant::now();
            let (reply, outcome) = handlers.run(job, max_body_bytes).await;
            match outcome {
                Outcome::Handled { handler } => metrics.handled(Some(&handler), started.elapsed()),
                Outcome::Missing => metrics.handled(None, started.elapsed()),
                Outcome::Denied => metrics.incr(metrics::DENIED_TICK),
            }
            reply
        })
    }

    fn notice(&self, peer: &PeerInfo, connection_id: u64, notice: LinkNotice) {
        match notice {
            LinkNotice::EventReceived => self.metrics.incr(metrics::RECEIVE_TICK),
            LinkNotice::Busy => self.metrics.incr(metrics::BUSY_TICK),
            LinkNotice::Heartbeat(rtt) => self.metrics.timing(metrics::HEARTBEAT_TIMING, rtt),
            LinkNotice::Idle => self.events.emit(ConnectionEvent::Idle {
                peer: peer.name.clone(),
                connection_id,
            }),
        }
    }
}
