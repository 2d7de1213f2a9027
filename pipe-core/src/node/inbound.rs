//! The node's side of each link: the peer's events run through the node's
//! handlers, and what the link notices becomes metrics and connection events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::events::{ConnectionEvent, EventSink};
use super::metrics::{self, Metrics};
use crate::handlers::{Handlers, Job, Outcome};
use crate::link::{Delivery, Inbound, LinkNotice, PeerInfo, ReplyFuture};
use crate::wire::{Event, Reply};

/// Answers a peer's events with the node's handlers.
#[derive(Debug)]
pub(crate) struct NodeInbound {
    handlers: Arc<Handlers>,
    metrics: Metrics,
    events: EventSink,
    /// Largest body collected whole for a handler that does not stream.
    max_body_bytes: usize,
    /// Handlers running at once for all peers together.
    running: Arc<Semaphore>,
}

impl NodeInbound {
    pub(crate) fn new(
        handlers: Arc<Handlers>,
        metrics: Metrics,
        events: EventSink,
        max_body_bytes: usize,
        max_running_handlers: usize,
    ) -> Self {
        Self {
            handlers,
            metrics,
            events,
            max_body_bytes,
            running: Arc::new(Semaphore::new(max_running_handlers)),
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
            bodies: delivery.bodies,
        };
        let (handlers, metrics) = (self.handlers.clone(), self.metrics.clone());
        let max_body_bytes = self.max_body_bytes;
        let running = self.running.clone();
        Box::pin(async move {
            // The node-wide cap; the link already holds the connection's
            // slot, and the deadline bounds the wait.
            let _running = running.acquire_owned().await;
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

    fn screen(&self, peer: &PeerInfo, event: &Event) -> Option<Reply> {
        let (reply, outcome) = *self.handlers.screen(&peer.name, &event.handler).err()?;
        match outcome {
            Outcome::Missing => self.metrics.handled(None, Duration::ZERO),
            Outcome::Denied => self.metrics.incr(metrics::DENIED_TICK),
            Outcome::Handled { .. } => {}
        }
        Some(reply)
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
