//! The reader: the one task that reads a connection. It decodes frames,
//! handles each kind in its own step (`on_event`, `on_reply`, `on_chunk`,
//! `on_window`, `on_cancel`, `on_ping`, `on_pong`, `on_go_away`), keeps the
//! heartbeat, and when the connection ends, fails what still waits on it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use super::answer::{send_progress, start_answer};
use super::cancelled::CancelledIds;
use super::connection::{BodyKey, Connection};
use super::hello::CLOSE_TIMEOUT;
use super::inbound::{Delivery, LinkNotice};
use super::settings::{ConnectionSettings, DEFAULT_MAX_REQUEST_TIMEOUT, WAITING_PER_SLOT};
use super::{CONTROL_QUEUE, READ_BUFFER};
use crate::wire::body::BodyError;
use crate::wire::proto::{self, Cancel, Chunk, GoAway, Ping, Pong, Window, frame::Body, go_away};
use crate::wire::{
    FrameCodec, FrameError, HandlerError, Held, JobProgress, ReceivedEvent, ReceivedReply,
    check_event, check_reply, printable, reply_frame,
};

/// A broken rule of the protocol: the connection ends with this message.
type Violation = String;

/// How a spell of reading ended.
enum Step {
    /// Go on reading.
    Continue,
    /// The connection is over, for this reason; `told_peer` when a `GoAway`
    /// explaining it is queued for the peer.
    End { reason: String, told_peer: bool },
}

/// The reading side of one connection, with its heartbeat state.
pub(super) struct Reader<R> {
    frames: FramedRead<R, FrameCodec>,
    connection: Arc<Connection>,
    settings: ConnectionSettings,
    last_heard: Instant,
    last_ping: Instant,
    ping_nonce: u64,
    /// The latest ping still waiting for its pong, and when it was sent.
    ping_outstanding: Option<(u64, Instant)>,
    idle_reported: bool,
    /// The read buffer is a small one, sized to the frames of a quiet
    /// connection, not [`READ_BUFFER`] (see `fit_read_buffer`).
    read_buffer_small: bool,
    /// Ids the peer cancelled before we saw their events.
    cancelled_early: CancelledIds,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(super) fn new(
        frames: FramedRead<R, FrameCodec>,
        connection: Arc<Connection>,
        settings: ConnectionSettings,
    ) -> Self {
        let now = Instant::now();
        Self {
            frames,
            connection,
            settings,
            last_heard: now,
            last_ping: now,
            ping_nonce: 0,
            ping_outstanding: None,
            idle_reported: false,
            // The link starts with a small buffer (see `establish`).
            read_buffer_small: true,
            cancelled_early: CancelledIds::default(),
        }
    }

    /// Reads until the connection ends, then cleans up after it.
    pub(super) async fn run(mut self) {
        let (reason, told_peer) = loop {
            match self.step().await {
                Step::Continue => {}
                Step::End { reason, told_peer } => break (reason, told_peer),
            }
        };
        self.finish(reason, told_peer).await;
    }

    /// Waits for the next frame, the heartbeat timer, or the close.
    async fn step(&mut self) -> Step {
        let ping_at = self.last_heard.max(self.last_ping) + self.settings.ping_interval;
        let dead_at = self.last_heard + self.settings.dead_after;
        let connection = self.connection.clone();
        tokio::select! {
            biased;
            _ = connection.closed.cancelled() => Step::End {
                reason: connection.close_reason(),
                told_peer: false,
            },
            next = Self::next_frame(&mut self.frames, &connection) => match next {
                Some(Ok(body)) => self.on_frame(body),
                Some(Err(error)) => self.on_read_error(error),
                None => Step::End {
                    reason: "peer closed the connection".to_owned(),
                    told_peer: false,
                },
            },
            _ = sleep_until(ping_at.min(dead_at)) => self.on_heartbeat_timer(dead_at),
        }
    }

    /// The next frame, read only while the control queue has room for what
    /// handling it may queue (a pong, a refusal): a peer that sends but does
    /// not read is read no further, and the write deadline ends it.
    async fn next_frame(
        frames: &mut FramedRead<R, FrameCodec>,
        connection: &Connection,
    ) -> Option<Result<Body, FrameError>> {
        if let Ok(room) = connection.control_tx.reserve_many(CONTROL_QUEUE / 2).await {
            drop(room);
        }
        frames.next().await
    }

    fn on_read_error(&self, error: FrameError) -> Step {
        let connection = &self.connection;
        warn!(peer = %connection.peer.name, connection = connection.id, "closing connection: {error}");
        let told_peer = matches!(
            error,
            FrameError::TooLarge { .. }
                | FrameError::Malformed(_)
                | FrameError::Empty
                | FrameError::OverLimit(_)
        );
        if told_peer {
            connection.protocol_error(error.to_string());
        }
        Step::End {
            reason: format!("protocol error: {error}"),
            told_peer,
        }
    }

    /// Sizes the read buffer to the traffic. A connection starts with a
    /// small one: most connections idle, and the frames of an idle one
    /// (pings, pongs) are read into a buffer of their size. The first frame
    /// of real traffic brings the full [`READ_BUFFER`], so reads under load
    /// stay large; a heartbeat frame (one side heard nothing for a ping
    /// interval: the connection is quiet again) gives it back when it holds
    /// no part of a frame.
    fn fit_read_buffer(&mut self, heartbeat: bool) {
        let buffer = self.frames.read_buffer_mut();
        fit_read_buffer(buffer, &mut self.read_buffer_small, heartbeat);
    }

    /// Sends a `Ping` when the connection has been quiet, or declares the
    /// peer dead when it has been silent past the deadline.
    fn on_heartbeat_timer(&mut self, dead_at: Instant) -> Step {
        let now = Instant::now();
        let connection = &self.connection;
        if now >= dead_at {
            warn!(peer = %connection.peer.name, connection = connection.id, silent_for = ?now - self.last_heard, "peer is silent past the heartbeat deadline; dropping it");
            return Step::End {
                reason: format!(
                    "no frame from peer for {:?} (heartbeat deadline)",
                    self.settings.dead_after
                ),
                told_peer: false,
            };
        }
        if !self.idle_reported {
            self.idle_reported = true;
            let inbound = &connection.inbound;
            inbound.notice(&connection.peer, connection.id, LinkNotice::Idle);
        }
        self.ping_nonce += 1;
        self.last_ping = now;
        self.ping_outstanding = Some((self.ping_nonce, now));
        connection.send_control(Body::Ping(Ping {
            nonce: self.ping_nonce,
        }));
        Step::Continue
    }

    /// Handles one frame from the peer.
    fn on_frame(&mut self, body: Body) -> Step {
        self.last_heard = Instant::now();
        // Pongs answer our own pings; only real traffic ends an idle spell.
        let heartbeat = matches!(body, Body::Pong(_) | Body::Ping(_));
        if !heartbeat {
            self.idle_reported = false;
        }
        self.fit_read_buffer(heartbeat);
        let handled = match body {
            Body::Event(event) => self.on_event(event),
            Body::Reply(reply) => self.on_reply(reply),
            Body::Chunk(chunk) => self.on_chunk(chunk),
            Body::Window(window) => self.on_window(window),
            Body::Progress(progress) => self.on_progress(progress),
            Body::Cancel(cancel) => {
                self.on_cancel(cancel);
                Ok(())
            }
            Body::Ping(ping) => {
                self.on_ping(ping);
                Ok(())
            }
            Body::Pong(pong) => {
                self.on_pong(pong);
                Ok(())
            }
            Body::GoAway(go_away) => {
                self.on_go_away(go_away);
                Ok(())
            }
            Body::Hello(_) => Err("unexpected second Hello".to_owned()),
        };
        match handled {
            Ok(()) => Step::Continue,
            Err(violation) => {
                let connection = &self.connection;
                warn!(peer = %connection.peer.name, connection = connection.id, "closing connection: {violation}");
                connection.protocol_error(violation.clone());
                Step::End {
                    reason: format!("protocol error: {violation}"),
                    told_peer: true,
                }
            }
        }
    }

    /// The peer's event: admitted (or refused at once) and answered, here
    /// if its handler answers at once, else in a task of its own, which
    /// waits for a handler slot. An id already running, or
    /// over the limits, is a protocol error; an id the peer already
    /// cancelled (its `Cancel` overtook it) is dropped unanswered.
    fn on_event(&mut self, frame: proto::Event) -> Result<(), Violation> {
        let connection = self.connection.clone();
        let inbound = &connection.inbound;
        inbound.notice(&connection.peer, connection.id, LinkNotice::EventReceived);
        check_event(&frame).map_err(|e| format!("event {}: {e}", frame.request_id))?;
        let id = frame.request_id;
        if connection.running.contains_key(&id) {
            return Err(format!("duplicate request id {id}: already running"));
        }
        if self.cancelled_early.forget(id) {
            debug!(peer = %connection.peer.name, request_id = id, "event arrived after its cancel; dropped");
            if frame.body_follows {
                connection.stop_peer_body((id, false));
            }
            return Ok(());
        }
        let received = ReceivedEvent::from(frame);
        let request_id = received.request_id;
        let Some(admitted) = admit(&connection, &received) else {
            return Ok(());
        };
        let cancelled = connection.closed.child_token();
        connection.running.insert(request_id, cancelled.clone());
        let mut event = received.event;
        // Registered now, before the reader takes the next frame, which may
        // be this body's first chunk.
        event.stream = received
            .body_follows
            .then(|| connection.receive_body((request_id, false), received.body_length));
        let progress = match &received.job {
            Some(_) => {
                let (progress, watch) = JobProgress::channel();
                let forward = send_progress(connection.clone(), request_id, watch);
                tokio::spawn(forward);
                progress
            }
            None => JobProgress::none(),
        };
        let delivery = Delivery {
            request_id,
            event: Box::new(event),
            deadline: self.deadline(received.timeout),
            cancelled,
            connection_closed: connection.closed.clone(),
            bodies: connection.bodies.clone(),
            job: received.job,
            progress,
        };
        start_answer(connection.clone(), delivery, admitted);
        Ok(())
    }

    /// When an event the peer gives `timeout` ends: never later than our
    /// own maximum, whatever the peer asked for.
    fn deadline(&self, timeout: std::time::Duration) -> Instant {
        let now = Instant::now();
        let granted = timeout.min(self.settings.max_request_timeout);
        now.checked_add(granted)
            .or_else(|| now.checked_add(DEFAULT_MAX_REQUEST_TIMEOUT))
            .unwrap_or(now)
    }

    /// How far the peer's run of one of our durable jobs got, handed to the
    /// job's waiter; one nobody waits for any more is dropped.
    fn on_progress(&self, frame: proto::Progress) -> Result<(), Violation> {
        let percent = u8::try_from(frame.percent)
            .ok()
            .filter(|percent| *percent <= 100)
            .ok_or_else(|| {
                format!(
                    "progress {} of request {} is over 100",
                    frame.percent, frame.request_id
                )
            })?;
        if let Some(progress) = self.connection.job_progress.get(&frame.request_id) {
            progress.report(percent);
        }
        Ok(())
    }

    /// The peer's reply to one of our requests, handed to its waiter.
    fn on_reply(&self, frame: proto::Reply) -> Result<(), Violation> {
        let connection = &self.connection;
        check_reply(&frame).map_err(|e| format!("reply {}: {e}", frame.request_id))?;
        let received = ReceivedReply::from(frame);
        let request_id = received.request_id;
        let Some((_, waiter)) = connection.pending.remove(&request_id) else {
            // The caller gave up (deadline or disconnect) before it came.
            debug!(peer = %connection.peer.name, request_id, "late reply dropped");
            if received.body_follows {
                connection.stop_peer_body((request_id, true));
            }
            return Ok(());
        };
        let mut reply = received.reply;
        reply.stream = received
            .body_follows
            .then(|| connection.receive_body((request_id, true), received.body_length));
        let _ = waiter.send(Ok(reply));
        Ok(())
    }

    /// The peer gave up on one of its requests.
    /// A cancel for an id we do not know may have overtaken its event (or
    /// come after our reply): the id is remembered, boundedly, so the event
    /// is dropped if it still comes.
    fn on_cancel(&mut self, cancel: Cancel) {
        let connection = &self.connection;
        let id = cancel.request_id;
        if let Some(token) = connection.running.get(&id) {
            debug!(peer = %connection.peer.name, request_id = id, reason = %printable(&cancel.reason), "peer cancelled a request");
            token.cancel();
        } else {
            self.cancelled_early.remember(id);
        }
        connection.stop_sending((id, true));
        connection.abort_receiving(
            (id, false),
            BodyError::Aborted("the caller cancelled the request".to_owned()),
        );
    }

    /// The peer grants more window for a body we send, or stops it.
    fn on_window(&self, window: Window) -> Result<(), Violation> {
        let connection = &self.connection;
        let key = (window.request_id, window.of_reply);
        if window.stop {
            connection.stop_sending(key);
        } else if let Some(credit) = connection.sending.get(&key) {
            let grant = usize::try_from(window.bytes).unwrap_or(usize::MAX);
            // A grant that would overflow the semaphore is a broken peer.
            if grant > tokio::sync::Semaphore::MAX_PERMITS - credit.available_permits() {
                return Err(format!("window grant of {grant} bytes is absurd"));
            }
            credit.add_permits(grant);
        }
        Ok(())
    }

    /// A piece of a body the peer streams to us.
    fn on_chunk(&self, chunk: Chunk) -> Result<(), Violation> {
        let connection = &self.connection;
        let key = (chunk.request_id, chunk.of_reply);
        let size = chunk.data.len() as u64;
        let mut reader_gone = false;
        if let Some(mut body) = connection.receiving.get_mut(&key) {
            if let Err(in_flight) = body.count(size) {
                return Err(format!(
                    "peer sent {in_flight} bytes of one body beyond its {}-byte window",
                    crate::wire::body::WINDOW_BYTES
                ));
            }
            if let Err(over) = body.held.grow(chunk.data.len()) {
                // Within its window, but more than this node holds for the
                // peer now: this body ends here, the connection goes on.
                drop(body);
                warn!(peer = %connection.peer.name, request_id = chunk.request_id, "{over}");
                connection.abort_receiving(key, BodyError::OverBudget(over));
                connection.stop_peer_body(key);
                return Ok(());
            }
            if size > 0 {
                reader_gone = body.sink.push(chunk.data).is_err();
            }
        }
        // Else: a body whose reader already left, or that was cancelled;
        // chunks still in flight are dropped.
        if (chunk.last || reader_gone)
            && let Some((_, body)) = connection.receiving.remove(&key)
            && !chunk.error.is_empty()
        {
            body.sink.abort(BodyError::Aborted(printable(&chunk.error)));
        }
        // Else dropping the sink ends the body normally.
        Ok(())
    }

    fn on_ping(&self, ping: Ping) {
        self.connection
            .send_control(Body::Pong(Pong { nonce: ping.nonce }));
    }

    fn on_pong(&mut self, pong: Pong) {
        let answered = self
            .ping_outstanding
            .take_if(|(nonce, _)| *nonce == pong.nonce);
        if let Some((_, sent)) = answered {
            let connection = &self.connection;
            let rtt = LinkNotice::Heartbeat(self.last_heard - sent);
            connection
                .inbound
                .notice(&connection.peer, connection.id, rtt);
        }
    }

    /// The peer takes no new events; requests in flight carry on.
    fn on_go_away(&self, go_away: GoAway) {
        let connection = &self.connection;
        let reason = go_away::Reason::try_from(go_away.reason).unwrap_or_default();
        let message = printable(&go_away.message);
        info!(peer = %connection.peer.name, ?reason, %message, "peer is going away");
        connection.peer_going_away.store(true, Ordering::Release);
        *connection
            .peer_go_away_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(reason);
        connection.record_close(format!("peer went away: {message}"));
    }

    /// The connection is over: everyone still waiting learns at once, bodies
    /// in transit end, and the writer gets a bounded moment to deliver a
    /// `GoAway` already queued.
    async fn finish(self, reason: String, told_peer: bool) {
        let connection = &self.connection;
        connection.record_close(reason.clone());
        // Their futures map this to 502.
        connection.pending.clear();
        let keys: Vec<BodyKey> = connection.receiving.iter().map(|e| *e.key()).collect();
        for key in keys {
            let error = BodyError::Aborted(format!("connection lost: {reason}"));
            connection.abort_receiving(key, error);
        }
        let keys: Vec<BodyKey> = connection.sending.iter().map(|e| *e.key()).collect();
        for key in keys {
            connection.stop_sending(key);
        }
        if told_peer {
            // The writer ends the connection itself once the GoAway is out.
            let _ = timeout(CLOSE_TIMEOUT, connection.closed.cancelled()).await;
        }
        connection.closed.cancel();
        debug!(peer = %connection.peer.name, connection = connection.id, "reader finished");
    }
}

/// Lets the peer's event in, or refuses it at once and says why: the node
/// is draining, what sits above cannot run it (no such handler, the policy),
/// every place for this peer's events is taken, or its inline body does not
/// fit the peer's memory budget. What it returns is held until the reply is
/// sent: its place, and its inline body in the budget.
fn admit(
    connection: &Connection,
    received: &ReceivedEvent,
) -> Option<(OwnedSemaphorePermit, Held)> {
    let inbound = &connection.inbound;
    let request_id = received.request_id;
    if connection.draining.load(Ordering::Acquire) {
        // The peer sent this before our GoAway reached it.
        let refusal = HandlerError::new(
            "GoingAway",
            "this node is shutting down and takes no new events",
        );
        connection.refuse_event(request_id, received.body_follows, refusal);
        return None;
    }
    if let Some(reply) = inbound.screen(&connection.peer, &received.event) {
        // Refused by what sits above (no such handler, the policy)
        // before any slot is taken or any body admitted.
        let (frame, _) = reply_frame(request_id, reply);
        connection.send_control(Body::Reply(frame));
        if received.body_follows {
            connection.stop_peer_body((request_id, false));
        }
        return None;
    }
    let Ok(admitted) = connection.admission.clone().try_acquire_owned() else {
        inbound.notice(&connection.peer, connection.id, LinkNotice::Busy);
        let handler = &received.event.handler;
        warn!(peer = %connection.peer.name, %handler, "refusing an event: every handler slot is taken and the wait queue is full");
        let refusal = HandlerError::new(
            "Busy",
            format!(
                "this node is at capacity for this peer: {} handlers running and {} more events waiting; try again later",
                connection.max_handlers,
                connection.max_handlers.saturating_mul(WAITING_PER_SLOT),
            ),
        );
        connection.refuse_event(request_id, received.body_follows, refusal);
        return None;
    };
    // The inline body is held until the reply is sent.
    match connection.bodies.hold(received.event.body.len()) {
        Ok(inline) => Some((admitted, inline)),
        Err(over) => {
            warn!(peer = %connection.peer.name, request_id, "refusing an event: {over}");
            let status = if over.never_fits() {
                http::StatusCode::PAYLOAD_TOO_LARGE
            } else {
                http::StatusCode::SERVICE_UNAVAILABLE
            };
            let refusal = HandlerError::new("OverBudget", over.to_string());
            connection.refuse_event_with(request_id, received.body_follows, refusal, status);
            None
        }
    }
}

/// The body of `Reader::fit_read_buffer`, on the buffer and its flag.
fn fit_read_buffer(buffer: &mut BytesMut, small: &mut bool, heartbeat: bool) {
    if heartbeat {
        if !*small && buffer.is_empty() {
            *buffer = BytesMut::new();
            *small = true;
        }
    } else if *small {
        let mut full = BytesMut::with_capacity(READ_BUFFER.max(buffer.len()));
        full.extend_from_slice(buffer);
        *buffer = full;
        *small = false;
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{READ_BUFFER, fit_read_buffer};

    #[test]
    fn a_heartbeat_gives_back_an_empty_read_buffer_and_traffic_brings_it_again() {
        let mut buffer = BytesMut::with_capacity(READ_BUFFER);
        let mut small = false;
        fit_read_buffer(&mut buffer, &mut small, true);
        assert!(small);
        assert_eq!(buffer.capacity(), 0);

        // Real traffic: the full buffer again, with what was already read.
        buffer.extend_from_slice(b"part");
        fit_read_buffer(&mut buffer, &mut small, false);
        assert!(!small);
        assert!(buffer.capacity() >= READ_BUFFER);
        assert_eq!(&buffer[..], b"part");

        // More traffic keeps it as it is.
        let capacity = buffer.capacity();
        fit_read_buffer(&mut buffer, &mut small, false);
        assert_eq!(buffer.capacity(), capacity);
    }

    #[test]
    fn a_heartbeat_never_drops_part_of_a_frame() {
        let mut buffer = BytesMut::with_capacity(READ_BUFFER);
        buffer.extend_from_slice(b"half a frame");
        let mut small = false;
        fit_read_buffer(&mut buffer, &mut small, true);
        assert!(!small);
        assert_eq!(&buffer[..], b"half a frame");
        assert!(buffer.capacity() >= READ_BUFFER);
    }
}
