//! Where the peer's events go: the link admits each event, waits for a
//! handler slot, and hands the event up through [`Inbound`], which the node
//! implements with its handlers. The link knows nothing of handlers,
//! policies or JSON; it only bounds, times and cancels, and sends the reply.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::connection::{Connection, WriterCommand};
use super::hello::PeerInfo;
use crate::wire::proto::frame::Body;
use crate::wire::{Event, Reply, reply_frame};

/// One event from the peer, handed up once a handler slot is free.
#[derive(Debug)]
pub struct Delivery {
    /// The peer's id for this request.
    pub request_id: u64,
    /// The event, its streamed body attached if one follows.
    pub event: Event,
    /// When the peer stops waiting.
    pub deadline: Instant,
    /// Cancelled when the peer cancels, the deadline passes or the
    /// connection ends.
    pub cancelled: CancellationToken,
}

/// Something the link noticed, for metrics and connection events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkNotice {
    /// An event arrived from the peer (before admission).
    EventReceived,
    /// An event was refused at once: every handler slot and wait place of
    /// the connection was taken.
    Busy,
    /// A `Ping` of ours was answered after this round trip.
    Heartbeat(Duration),
    /// Nothing but heartbeats has crossed the connection for a ping interval.
    Idle,
}

/// A boxed future of a reply.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// What sits above a link: answers the peer's events and hears what the
/// link notices. Implemented by the node over its handlers; by tests over
/// anything.
pub trait Inbound: Send + Sync + 'static {
    /// Answers one event from `peer`. The future is dropped, unfinished, if
    /// the peer cancels or the deadline passes first.
    fn answer(&self, peer: &PeerInfo, delivery: Delivery) -> ReplyFuture;

    /// Something happened on the connection `connection_id` to `peer`.
    fn notice(&self, peer: &PeerInfo, connection_id: u64, notice: LinkNotice) {
        let _ = (peer, connection_id, notice);
    }
}

/// Runs one admitted event to completion (or cancellation) and replies:
/// waits for a handler slot, asks [`Inbound`] within the deadline, sends the
/// reply and streams its body.
pub(super) async fn answer_event(
    connection: Arc<Connection>,
    delivery: Delivery,
    // Held until the reply (and its body) is sent.
    _admitted: OwnedSemaphorePermit,
) {
    let request_id = delivery.request_id;
    let deadline = delivery.deadline;
    let cancelled = delivery.cancelled.clone();
    let reply = tokio::select! {
        _ = cancelled.cancelled() => None,
        _ = sleep_until(deadline) => None,
        reply = async {
            let _slot: OwnedSemaphorePermit = connection.slots.clone().acquire_owned().await.ok()?;
            Some(connection.inbound.answer(&connection.peer, delivery).await)
        } => reply,
    };
    // Once cancelled, nobody waits for the reply: sending it would be noise.
    let Some(reply) = reply.filter(|_| !cancelled.is_cancelled()) else {
        connection.running.remove(&request_id);
        return;
    };
    let (frame, stream) = reply_frame(request_id, reply);
    let sent = connection
        .frames_tx
        .send(WriterCommand::Frame(Box::new(Body::Reply(frame))))
        .await
        .is_ok();
    if let (true, Some(stream)) = (sent, stream) {
        // Still "running" while the body streams, so a Cancel stops it.
        connection
            .clone()
            .send_body((request_id, true), stream)
            .await;
    }
    connection.running.remove(&request_id);
}
