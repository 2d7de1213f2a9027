//! Where the peer's events go: the link admits each event, waits for a
//! handler slot, and hands the event up through [`Inbound`], which the node
//! implements with its handlers. The link knows nothing of handlers,
//! policies or JSON; it only bounds, times and cancels, and sends the reply
//! (`answer.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::hello::PeerInfo;
use crate::wire::{Event, JobProgress, JobTag, MemoryBudget, Reply};

/// One event from the peer, handed up once a handler slot is free.
#[derive(Debug)]
pub struct Delivery {
    /// The peer's id for this request.
    pub request_id: u64,
    /// The event, its streamed body attached if one follows. Boxed: it
    /// passes through several futures on its way to the handler, and each
    /// would copy it whole.
    pub event: Box<Event>,
    /// When the peer stops waiting.
    pub deadline: Instant,
    /// Cancelled when the peer cancels, the deadline passes or the
    /// connection ends.
    pub cancelled: CancellationToken,
    /// Cancelled when the connection ends (`cancelled` is too): a
    /// `cancelled` without it is the peer's own cancel.
    pub connection_closed: CancellationToken,
    /// The connection's budget for bodies held on the peer's behalf: a body
    /// collected whole, or parsed, is held in it while the handler runs.
    pub bodies: Arc<MemoryBudget>,
    /// The peer's durable job this event carries, if any.
    pub job: Option<JobTag>,
    /// Where the handler of a durable job reports its progress; it goes to
    /// the peer while the reply is awaited.
    pub progress: JobProgress,
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

    /// Decides, before the link admits `event` or takes any of its body,
    /// whether it can run at all: `Some(reply)` answers it at once (no such
    /// handler, refused by the access policy), and a body that follows is
    /// stopped unread. `None` lets it in.
    fn screen(&self, peer: &PeerInfo, event: &Event) -> Option<Reply> {
        let _ = (peer, event);
        None
    }

    /// Something happened on the connection `connection_id` to `peer`.
    fn notice(&self, peer: &PeerInfo, connection_id: u64, notice: LinkNotice) {
        let _ = (peer, connection_id, notice);
    }
}
