//! The node's side of each link: the peer's events run through the node's
//! handlers, and what the link notices becomes metrics and connection events.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::events::{ConnectionEvent, EventSink};
use super::jobs::Jobs;
use super::metrics::{Counter, Metrics, Timing};
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
    /// The node's jobs, once it has them: a peer's durable job runs once.
    jobs: Arc<OnceLock<Arc<Jobs>>>,
}

impl NodeInbound {
    pub(crate) fn new(
        handlers: Arc<Handlers>,
        metrics: Metrics,
        events: EventSink,
        max_body_bytes: usize,
        max_running_handlers: usize,
        jobs: Arc<OnceLock<Arc<Jobs>>>,
    ) -> Self {
        Self {
            handlers,
            metrics,
            events,
            max_body_bytes,
            running: Arc::new(Semaphore::new(max_running_handlers)),
            jobs,
        }
    }
}

/// Cancels `run` when `caller` is cancelled by the peer's `Cancel` (not by
/// the connection's end, which `closed` tells apart).
async fn stop_on_peer_cancel(
    caller: CancellationToken,
    closed: CancellationToken,
    run: CancellationToken,
) {
    caller.cancelled().await;
    if !closed.is_cancelled() {
        run.cancel();
    }
}

impl Inbound for NodeInbound {
    fn answer(&self, peer: &PeerInfo, delivery: Delivery) -> ReplyFuture {
        let durable = delivery.job.clone().zip(self.jobs.get().cloned());
        // A durable job's run outlives its connection (its result is kept
        // for the repeat); the peer's own cancel and the deadline still
        // stop it.
        let (cancelled, peer_cancel) = match durable {
            Some(_) => {
                let run = CancellationToken::new();
                let watch = stop_on_peer_cancel(
                    delivery.cancelled,
                    delivery.connection_closed,
                    run.clone(),
                );
                (run, Some(watch))
            }
            None => (delivery.cancelled, None),
        };
        let job = Job {
            peer: peer.name.clone(),
            request_id: delivery.request_id,
            event: delivery.event,
            deadline: delivery.deadline,
            cancelled,
            bodies: delivery.bodies,
            redelivered: false,
            progress: delivery.progress,
        };
        let (handlers, metrics) = (self.handlers.clone(), self.metrics.clone());
        let max_body_bytes = self.max_body_bytes;
        let running = self.running.clone();
        let run = move |redelivered: bool| -> Pin<Box<dyn Future<Output = Reply> + Send>> {
            Box::pin(async move {
                // The node-wide cap; the link already holds the connection's
                // slot, and the deadline bounds the wait.
                let _running = running.acquire_owned().await;
                // Watches for the peer's cancel while the run lasts.
                let _peer_cancel = peer_cancel.map(tokio::spawn).map(AbortOnDropHandle::new);
                let started = Instant::now();
                let job = Job { redelivered, ..job };
                let (reply, outcome) = handlers.run(job, max_body_bytes).await;
                match outcome {
                    Outcome::Handled { handler } => {
                        metrics.handled(Some(&handler), started.elapsed());
                    }
                    Outcome::Missing => metrics.handled(None, started.elapsed()),
                    Outcome::Denied => metrics.incr(Counter::EventDenied),
                }
                reply
            })
        };
        match durable {
            Some((tag, jobs)) => {
                Box::pin(jobs.answer_received(peer.name.clone(), tag, Box::new(run)))
            }
            None => run(false),
        }
    }

    fn screen(&self, peer: &PeerInfo, event: &Event) -> Option<Reply> {
        let (reply, outcome) = *self.handlers.screen(&peer.name, &event.handler).err()?;
        match outcome {
            Outcome::Missing => self.metrics.handled(None, Duration::ZERO),
            Outcome::Denied => self.metrics.incr(Counter::EventDenied),
            Outcome::Handled { .. } => {}
        }
        Some(reply)
    }

    fn notice(&self, peer: &PeerInfo, connection_id: u64, notice: LinkNotice) {
        match notice {
            LinkNotice::EventReceived => self.metrics.incr(Counter::EventReceived),
            LinkNotice::Busy => self.metrics.incr(Counter::EventBusy),
            LinkNotice::Heartbeat(rtt) => self.metrics.timing(Timing::Heartbeat, rtt),
            LinkNotice::Idle => self.events.emit(ConnectionEvent::Idle {
                peer: peer.name.clone(),
                connection_id,
            }),
        }
    }
}
