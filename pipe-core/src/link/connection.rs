//! The state one connection's tasks share: who the peer is, the queues to
//! the writer, the tables of requests and bodies in flight, and how the
//! connection ended. Only the link's own files touch it; callers hold a
//! [`super::PeerHandle`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use dashmap::DashMap;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::error::RequestError;
use super::hello::PeerInfo;
use super::inbound::Inbound;
use crate::wire::body::{BodyError, BodySink, WINDOW_BYTES};
use crate::wire::proto::{GoAway, Window, frame::Body, go_away};
use crate::wire::{HandlerError, Held, JobProgress, MemoryBudget, Reply, failure_frame};

/// Which body: (request id as the event's sender chose it, is it the reply's).
pub(super) type BodyKey = (u64, bool);

/// A streamed body we are receiving.
pub(super) struct ReceivingBody {
    pub(super) sink: BodySink,
    /// Bytes received so far.
    pub(super) received: u64,
    /// Bytes the reader has handed back as window (updated by the reader's
    /// task), so `received - granted` is what the peer has in flight.
    pub(super) granted: Arc<AtomicU64>,
    /// What of it is held, unread, in the connection's body budget: grown
    /// by the reader as chunks arrive, shrunk as the body's reader reads.
    pub(super) held: Arc<Held>,
}

impl ReceivingBody {
    /// Counts `size` more bytes from the peer; an `Err` (the bytes the peer
    /// has in flight) means it sent past its window.
    pub(super) fn count(&mut self, size: u64) -> Result<(), u64> {
        self.received += size;
        let in_flight = self.received - self.granted.load(Ordering::Acquire);
        if in_flight > WINDOW_BYTES {
            return Err(in_flight);
        }
        Ok(())
    }
}

/// What the writer task is asked to do.
#[derive(Debug)]
pub(super) enum WriterCommand {
    /// Boxed: channels allocate slots up front, and an unboxed `Body` would
    /// make every idle connection's queues several KiB each.
    Frame(Box<Body>),
    /// Send `GoAway` (if any), flush, close TLS and end the connection.
    Close(Option<GoAway>),
}

/// The hasher of the tables keyed by request ids, touched by every
/// request: a fast one (see the workspace's `foldhash`). The ids are ours,
/// or the peer's in `running`, which admission bounds, so ids chosen to
/// collide could not build a long chain.
pub(super) type IdHasher = foldhash::fast::RandomState;

/// Where a caller waiting for the peer's reply is told of it.
pub(super) type ReplyWaiter = oneshot::Sender<Result<Reply, RequestError>>;

/// One live connection's shared state.
pub(super) struct Connection {
    pub(super) peer: PeerInfo,
    pub(super) id: u64,
    pub(super) connected_at: SystemTime,
    /// Events, replies and the final close, in order, to the writer.
    pub(super) frames_tx: mpsc::Sender<WriterCommand>,
    /// Small frames that must never wait behind data or be dropped: pings,
    /// pongs, window grants, cancels, refusals. Bounded: when it is full the
    /// peer has stopped reading, and the connection closes.
    pub(super) control_tx: mpsc::Sender<Box<Body>>,
    /// Chunks of streamed bodies: written only when nothing else waits, so
    /// small requests overtake bulk data.
    pub(super) bulk_tx: mpsc::Sender<Box<Body>>,
    /// Streamed bodies arriving from the peer.
    pub(super) receiving: DashMap<BodyKey, ReceivingBody>,
    /// Streamed bodies we are sending: the peer's grants, as permits of one
    /// byte each. Closing the semaphore stops the sender.
    pub(super) sending: DashMap<BodyKey, Arc<Semaphore>>,
    /// Our requests awaiting the peer's reply, by our request id.
    pub(super) pending: DashMap<u64, ReplyWaiter, IdHasher>,
    /// Where the progress of our durable jobs awaiting a reply goes.
    pub(super) job_progress: DashMap<u64, JobProgress, IdHasher>,
    pub(super) next_request_id: AtomicU64,
    /// The peer's requests our handlers are working on, by the peer's id.
    pub(super) running: DashMap<u64, CancellationToken, IdHasher>,
    /// Events admitted (running or waiting for a handler slot): an event
    /// that finds none left is refused rather than queued.
    pub(super) admission: Arc<Semaphore>,
    /// Handler slots: events admitted run once they hold one.
    pub(super) slots: Arc<Semaphore>,
    /// Handlers that may run at once for this connection.
    pub(super) max_handlers: usize,
    /// Where the peer's events go, and what the link reports.
    pub(super) inbound: Arc<dyn Inbound>,
    /// This peer's budget for the bodies held on its behalf, inside the
    /// node's.
    pub(super) bodies: Arc<MemoryBudget>,
    /// Cancelled when the connection has ended, for whatever reason.
    pub(super) closed: CancellationToken,
    /// The peer sent `GoAway`: it takes no new events.
    pub(super) peer_going_away: AtomicBool,
    /// We sent `GoAway`: we take no new events and send none.
    pub(super) draining: AtomicBool,
    pub(super) peer_go_away_reason: Mutex<Option<go_away::Reason>>,
    pub(super) close_reason: Mutex<Option<String>>,
    /// Largest frame we may send: the smaller of our limit and the peer's.
    pub(super) max_frame_bytes: usize,
}

impl Connection {
    /// Remembers why the connection ends; the first reason given wins.
    pub(super) fn record_close(&self, reason: impl Into<String>) {
        let mut slot = self.close_reason.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(|| reason.into());
    }

    /// Why the connection ended, or "connection closed" while it is open.
    pub(super) fn close_reason(&self) -> String {
        self.close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "connection closed".to_owned())
    }

    /// The error of a request that the connection's end left unanswered.
    pub(super) fn disconnected(&self) -> RequestError {
        RequestError::Disconnected {
            peer: self.peer.name.clone(),
            reason: self.close_reason(),
        }
    }

    /// Queues a control frame; never waits, never drops. A full queue means
    /// the peer accepts nothing (the reader stops reading well before it
    /// fills): the connection closes rather than grow.
    pub(super) fn send_control(&self, body: Body) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.control_tx.try_send(Box::new(body)) {
            let queued = self.control_tx.max_capacity();
            warn!(peer = %self.peer.name, connection = self.id, "closing connection: {queued} control frames queued, the peer is not reading");
            self.record_close(format!(
                "peer is not reading: {queued} control frames queued"
            ));
            self.closed.cancel();
        }
    }

    /// Tells the peer to stop sending the body under `key`.
    pub(super) fn stop_peer_body(&self, (request_id, of_reply): BodyKey) {
        self.send_control(Body::Window(Window {
            request_id,
            of_reply,
            bytes: 0,
            stop: true,
        }));
    }

    /// Stops sending the body under `key`, if we are.
    pub(super) fn stop_sending(&self, key: BodyKey) {
        if let Some((_, credit)) = self.sending.remove(&key) {
            credit.close();
        }
    }

    /// Ends the body arriving under `key` with `error`, if one is.
    pub(super) fn abort_receiving(&self, key: BodyKey, error: BodyError) {
        if let Some((_, body)) = self.receiving.remove(&key) {
            body.sink.abort(error);
        }
    }

    /// Tells the peer it broke the protocol, then closes.
    pub(super) fn protocol_error(&self, message: String) {
        let go_away = GoAway {
            reason: go_away::Reason::ProtocolError as i32,
            message,
        };
        let _ = self.frames_tx.try_send(WriterCommand::Close(Some(go_away)));
    }

    /// Answers the peer's event `request_id` at once with `refusal` (503,
    /// code 251), and stops the body that may follow it.
    pub(super) fn refuse_event(&self, request_id: u64, body_follows: bool, refusal: HandlerError) {
        let status = http::StatusCode::SERVICE_UNAVAILABLE;
        self.refuse_event_with(request_id, body_follows, refusal, status);
    }

    /// [`Self::refuse_event`] with the HTTP status the caller gets.
    pub(super) fn refuse_event_with(
        &self,
        request_id: u64,
        body_follows: bool,
        refusal: HandlerError,
        status: http::StatusCode,
    ) {
        self.send_control(Body::Reply(failure_frame(
            request_id,
            &refusal,
            Some(status),
        )));
        if body_follows {
            // Its chunks find no receiver and are dropped; this stops the rest.
            self.stop_peer_body((request_id, false));
        }
    }
}
