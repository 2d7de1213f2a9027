//! One multiplexed connection between two nodes.
//!
//! After TLS, each side sends `Hello` and reads the peer's. Then two tasks own
//! the connection: the *reader* decodes frames, answers pings, matches replies
//! against this side's pending table and spawns a task per incoming event; the
//! *writer* is the only code that writes to the socket, fed by a channel, and
//! batches whatever is queued into one flush. Callers never touch the socket:
//! [`PeerHandle::request`] queues an event and waits on a `oneshot` for its
//! reply, with a deadline; dropping that future cancels the far handler.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::body::{self, BodyError, BodySink, BodyStream, CHUNK_BYTES, WINDOW_BYTES};
use crate::dispatch::{Handlers, Resolution};
use crate::events::{ConnectionEvent, EventSink};
use crate::frame::{FrameCodec, FrameError, PROTOCOL_VERSION};
use crate::handler::{
    HandlerError, RETURN_ACCESS_DENIED, RETURN_HANDLER_FAILED, RETURN_NO_HANDLER, Reply, Request,
    Side, is_json_type,
};
use crate::metrics::{self, Metrics};
use crate::proto::{
    self, Cancel, Chunk, Event, GoAway, Hello, Ping, Pong, Window, frame::Body, go_away,
};
use crate::router::handler_name;

/// Default bound on handlers running at once for one connection: enough for
/// heavy fan-out, small enough that one peer cannot exhaust the node.
pub const DEFAULT_MAX_CONCURRENT_HANDLERS: usize = 256;
/// Default idle time after which a side sends `Ping`.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Default silence after which a peer is declared dead: three missed pings.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(15);
/// Default time allowed for the `Hello` exchange after TLS.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames queued for the writer before senders wait: deep enough to batch
/// bursts into few TLS records, shallow enough to push back on callers.
const OUTBOUND_QUEUE: usize = 1024;
/// Chunk frames queued for the writer before a body's sender waits.
const BULK_QUEUE: usize = 32;
/// Initial size of the write buffer: a ping fits; larger frames grow it,
/// and an idle connection keeps little.
const FRAMING_BUFFER: usize = 512;
/// Initial size of the read buffer. Not smaller: once decoded frames are
/// split off, the buffer regrows to this size, so it sets how much one read
/// takes from the socket under load.
const READ_BUFFER: usize = 8 * 1024;

/// Time allowed to flush a final `GoAway` and close TLS cleanly.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Events that may wait for a handler slot, per slot: past
/// `max_concurrent_handlers * (1 + WAITING_PER_SLOT)` events in progress on
/// one connection, a new one is refused at once (503) instead of queueing
/// without bound.
pub const WAITING_PER_SLOT: usize = 3;

/// Tunables of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Largest frame accepted or sent.
    pub max_frame_bytes: usize,
    /// Handlers running at once for this connection; up to
    /// [`WAITING_PER_SLOT`] times as many more events wait, and events past
    /// those are refused with 503.
    pub max_concurrent_handlers: usize,
    /// Silence (nothing received) after which a `Ping` is sent.
    pub ping_interval: Duration,
    /// Silence after which the peer is dropped.
    pub dead_after: Duration,
    /// Deadline for the `Hello` exchange.
    pub hello_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_frame_bytes: crate::frame::DEFAULT_MAX_FRAME_BYTES,
            max_concurrent_handlers: DEFAULT_MAX_CONCURRENT_HANDLERS,
            ping_interval: DEFAULT_PING_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
        }
    }
}

/// Who is on the other end, as established by TLS.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's identity (from its certificate).
    pub name: String,
    /// Which end of the pipe the peer is.
    pub side: Side,
    /// The peer's socket address, for logs.
    pub remote_addr: Option<SocketAddr>,
}

/// What this node says about itself in `Hello`.
#[derive(Debug, Clone)]
pub struct LocalHello {
    /// This node's identity.
    pub name: String,
    /// This node's side.
    pub side: Side,
    /// Client only: we were replaced by a newer connection with our identity
    /// and must not take the pipe back while it lives.
    pub standby: bool,
}

/// Everything about this node a connection needs: who we are, what we
/// answer with, our limits, and where events go.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// This node's identity and side.
    pub hello: LocalHello,
    /// The handlers incoming events reach.
    pub handlers: Arc<Handlers>,
    /// Limits and heartbeats.
    pub settings: ConnectionSettings,
    /// Where connection events go.
    pub events: EventSink,
    /// Largest body collected whole for a handler that does not stream.
    pub max_body_bytes: usize,
    /// Where metrics go.
    pub metrics: Metrics,
}

/// Why the `Hello` exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {theirs}, this node speaks {ours}")]
    VersionMismatch {
        /// The peer's version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// The peer refused us with `GoAway`.
    #[error("peer refused the connection: {message}")]
    Refused {
        /// The reason code the peer gave.
        reason: go_away::Reason,
        /// The peer's explanation.
        message: String,
    },
    /// We refused the peer (server side: cap reached, identity in use).
    #[error("refused the peer: {0}")]
    Rejected(String),
    /// The peer sent something other than `Hello` first.
    #[error("peer sent {0} before Hello")]
    Unexpected(&'static str),
    /// The peer closed the connection during the exchange.
    #[error("peer closed the connection before Hello")]
    Closed,
    /// The exchange took longer than allowed.
    #[error("no Hello from peer within {0:?}")]
    TimedOut(Duration),
    /// Reading or writing a frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Why a request through the pipe got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The connection ended before the reply came.
    #[error("the connection to {peer} closed before the reply arrived ({reason})")]
    Disconnected {
        /// The peer's identity.
        peer: String,
        /// Why the connection ended.
        reason: String,
    },
    /// The deadline passed; the far handler was told to stop.
    #[error("no reply from {peer} within {timeout:?}")]
    TimedOut {
        /// The peer's identity.
        peer: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The peer announced it is going away and takes no new requests.
    #[error("{peer} is going away and takes no new requests")]
    GoingAway {
        /// The peer's identity.
        peer: String,
    },
    /// The event does not fit in one frame.
    #[error("event of {size} bytes exceeds the frame limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// A request to send to the peer.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Lower-case verb.
    pub verb: String,
    /// Noun path, e.g. `time/utc`.
    pub noun: String,
    /// Decoded arguments.
    pub args: Vec<String>,
    /// Raw query string.
    pub query: String,
    /// MIME type of `body`.
    pub content_type: String,
    /// End-to-end headers for the handler.
    pub headers: http::HeaderMap,
    /// The body, when it is small enough to travel in one frame.
    pub body: Bytes,
    /// A body of any size, streamed in chunks (instead of `body`).
    pub stream: Option<BodyStream>,
}

/// What the writer task is asked to do.
#[derive(Debug)]
enum Outgoing {
    /// Boxed: channels allocate slots up front, and an unboxed `Body` would
    /// make every idle connection's queues several KiB each.
    Frame(Box<Body>),
    /// Send `GoAway` (if any), flush, close TLS and end the connection.
    Close(Option<GoAway>),
}

/// Identifies connections in logs and in the peer directory.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

type PendingReply = oneshot::Sender<Result<Reply, RequestError>>;

/// A streamed body we are receiving.
struct IncomingBody {
    sink: BodySink,
    /// Bytes received so far.
    received: u64,
    /// Bytes the reader has handed back as window (updated by the reader's
    /// task), so `received - granted` is what the peer has in flight.
    granted: Arc<AtomicU64>,
}

/// Which body: (request id as the event's sender chose it, is it the reply's).
type BodyKey = (u64, bool);

struct Shared {
    peer: PeerInfo,
    connection_id: u64,
    connected_at: SystemTime,
    outbound: mpsc::Sender<Outgoing>,
    /// Small frames that must never wait behind data or be dropped: pings,
    /// pongs, window grants, cancels. Few and tiny, so unbounded.
    control: mpsc::UnboundedSender<Box<Body>>,
    /// Chunks of streamed bodies: written only when nothing else waits, so
    /// small requests overtake bulk data.
    bulk: mpsc::Sender<Box<Body>>,
    /// Streamed bodies arriving from the peer.
    incoming: DashMap<BodyKey, IncomingBody>,
    /// Streamed bodies we are sending: the peer's grants, as permits of one
    /// byte each. Closing the semaphore stops the sender.
    outgoing: DashMap<BodyKey, Arc<Semaphore>>,
    max_body_bytes: usize,
    /// Our requests awaiting the peer's reply, by our request id.
    pending: DashMap<u64, PendingReply>,
    next_request_id: AtomicU64,
    /// The peer's requests our handlers are working on, by the peer's id.
    running: DashMap<u64, CancellationToken>,
    /// Events admitted (running or waiting for a handler slot): an event
    /// that finds none left is refused rather than queued.
    admission: Arc<Semaphore>,
    /// Handlers that may run at once for this connection.
    max_handlers: usize,
    /// Cancelled when the connection has ended, for whatever reason.
    closed: CancellationToken,
    /// The peer sent `GoAway`: it takes no new events.
    peer_going_away: AtomicBool,
    /// We sent `GoAway`: we take no new events and send none.
    draining: AtomicBool,
    peer_go_away_reason: Mutex<Option<go_away::Reason>>,
    close_reason: Mutex<Option<String>>,
    /// Largest frame we may send: the smaller of our limit and the peer's.
    max_frame_bytes: usize,
    metrics: Metrics,
}

impl Shared {
    fn record_close(&self, reason: impl Into<String>) {
        let mut slot = self.close_reason.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(|| reason.into());
    }

    fn close_reason(&self) -> String {
        self.close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "connection closed".to_owned())
    }

    fn disconnected(&self) -> RequestError {
        RequestError::Disconnected {
            peer: self.peer.name.clone(),
            reason: self.close_reason(),
        }
    }

    /// Queues a control frame; never waits, never drops (while the writer
    /// lives).
    fn send_control(&self, body: Body) {
        let _ = self.control.send(Box::new(body));
    }

    /// Tells the peer to stop sending the body under `key`.
    fn stop_peer_body(&self, (request_id, of_reply): BodyKey) {
        self.send_control(Body::Window(Window {
            request_id,
            of_reply,
            bytes: 0,
            stop: true,
        }));
    }

    /// Stops sending the body under `key`, if we are.
    fn stop_sending(&self, key: BodyKey) {
        if let Some((_, credit)) = self.outgoing.remove(&key) {
            credit.close();
        }
    }

    /// Ends the body arriving under `key` with `error`, if one is.
    fn abort_incoming(&self, key: BodyKey, error: BodyError) {
        if let Some((_, body)) = self.incoming.remove(&key) {
            body.sink.abort(error);
        }
    }

    /// Starts receiving a streamed body under `key`: returns the stream its
    /// reader reads, which hands window back to the peer as it goes and, if
    /// dropped before the end, tells the peer to stop sending.
    fn receive_body(self: &Arc<Self>, key: BodyKey, length: Option<u64>) -> BodyStream {
        let (sink, mut stream) = body::unbounded_channel(length);
        let granted = Arc::new(AtomicU64::new(0));
        let (request_id, of_reply) = key;
        let control = self.control.clone();
        let counter = granted.clone();
        let mut consumed_since_grant = 0u64;
        stream.set_on_consumed(Box::new(move |n| {
            consumed_since_grant += n as u64;
            if consumed_since_grant >= WINDOW_BYTES / 4 {
                counter.fetch_add(consumed_since_grant, Ordering::AcqRel);
                let _ = control.send(Box::new(Body::Window(Window {
                    request_id,
                    of_reply,
                    bytes: consumed_since_grant,
                    stop: false,
                })));
                consumed_since_grant = 0;
            }
        }));
        let shared = Arc::downgrade(self);
        stream.set_on_abandoned(Box::new(move || {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.incoming.remove(&key).is_some() && !shared.closed.is_cancelled() {
                // Our reader is gone: the peer's sender should stop now. For
                // an event's body, the handler is done with it; for a reply's,
                // the caller hung up mid-download.
                shared.stop_peer_body(key);
            }
        }));
        self.incoming.insert(
            key,
            IncomingBody {
                sink,
                received: 0,
                granted,
            },
        );
        stream
    }

    /// Sends `stream` as the body under `key`, within the peer's window.
    /// Ends when the body does, the peer cancels, or the connection closes.
    async fn send_body(self: Arc<Self>, key: BodyKey, mut stream: BodyStream) {
        let credit = Arc::new(Semaphore::new(WINDOW_BYTES as usize));
        self.outgoing.insert(key, credit.clone());
        let (request_id, of_reply) = key;
        let chunk = |data: Bytes, last: bool, error: String| {
            Box::new(Body::Chunk(Chunk {
                request_id,
                of_reply,
                data,
                last,
                error,
            }))
        };
        let end = loop {
            let piece = tokio::select! {
                _ = self.closed.cancelled() => return,
                piece = stream.chunk() => piece,
            };
            let mut data = match piece {
                None => break chunk(Bytes::new(), true, String::new()),
                Some(Err(error)) => break chunk(Bytes::new(), true, error.to_string()),
                Some(Ok(data)) => data,
            };
            while !data.is_empty() {
                let n = data.len().min(CHUNK_BYTES);
                // Waits for the peer's grant; a closed semaphore means the
                // peer cancelled or the connection ended.
                let Ok(permit) = credit.acquire_many(n as u32).await else {
                    return;
                };
                permit.forget();
                if self
                    .bulk
                    .send(chunk(data.split_to(n), false, String::new()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        };
        let _ = self.bulk.send(end).await;
        self.outgoing.remove(&key);
    }
}

/// A cheap, cloneable handle to one live connection.
#[derive(Clone)]
pub struct PeerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandle")
            .field("peer", &self.shared.peer.name)
            .field("connection_id", &self.shared.connection_id)
            .finish()
    }
}

impl PeerHandle {
    /// The peer's identity.
    pub fn name(&self) -> &str {
        &self.shared.peer.name
    }

    /// Who the peer is.
    pub fn peer(&self) -> &PeerInfo {
        &self.shared.peer
    }

    /// Unique id of this connection within the process.
    pub fn connection_id(&self) -> u64 {
        self.shared.connection_id
    }

    /// When the connection was established.
    pub fn connected_at(&self) -> SystemTime {
        self.shared.connected_at
    }

    /// Our requests waiting for the peer's reply.
    pub fn in_flight_out(&self) -> usize {
        self.shared.pending.len()
    }

    /// The peer's requests our handlers are working on.
    pub fn in_flight_in(&self) -> usize {
        self.shared.running.len()
    }

    /// Whether new requests may be sent: open, and neither side going away.
    pub fn is_accepting(&self) -> bool {
        !self.is_closed()
            && !self.shared.peer_going_away.load(Ordering::Acquire)
            && !self.shared.draining.load(Ordering::Acquire)
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves when the connection has ended.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Why the connection ended (or "connection closed" while it is open).
    pub fn close_reason(&self) -> String {
        self.shared.close_reason()
    }

    /// The reason the peer gave in `GoAway`, if it sent one.
    pub fn peer_go_away(&self) -> Option<go_away::Reason> {
        *self
            .shared
            .peer_go_away_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a graceful close: tells the peer with `GoAway` that we take no
    /// new events, and stops sending new requests ourselves. Requests in
    /// flight either way carry on; see [`PeerHandle::drained`].
    pub fn go_away(&self, reason: go_away::Reason, message: impl Into<String>) {
        if self.shared.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.send_control(Body::GoAway(GoAway {
            reason: reason as i32,
            message: message.into(),
        }));
    }

    /// Resolves when no request is in flight in either direction, or the
    /// connection has ended.
    pub async fn drained(&self) {
        while !self.is_closed() && (self.in_flight_out() > 0 || self.in_flight_in() > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Tells the peer why with `GoAway`, then closes the connection. Requests
    /// in flight on it fail at once with [`RequestError::Disconnected`].
    pub fn close(&self, reason: go_away::Reason, message: impl Into<String>) {
        let message = message.into();
        self.shared.record_close(message.clone());
        let go_away = GoAway {
            reason: reason as i32,
            message,
        };
        if self
            .shared
            .outbound
            .try_send(Outgoing::Close(Some(go_away)))
            .is_err()
        {
            // Queue full or writer gone: end without the courtesy frame.
            self.shared.closed.cancel();
        }
    }

    /// Sends one event and waits for its reply, at most `timeout`.
    ///
    /// If the deadline passes, or this future is dropped (the local HTTP
    /// caller went away), the peer is sent `Cancel` so its handler stops.
    pub async fn request(
        &self,
        outbound: Outbound,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let shared = &self.shared;
        if shared.closed.is_cancelled() {
            return Err(shared.disconnected());
        }
        if shared.peer_going_away.load(Ordering::Acquire) || shared.draining.load(Ordering::Acquire)
        {
            return Err(RequestError::GoingAway {
                peer: shared.peer.name.clone(),
            });
        }
        let deadline = Instant::now() + timeout;
        let request_id = shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        let event = Event {
            request_id,
            verb: outbound.verb,
            noun: outbound.noun,
            args: outbound.args,
            query: outbound.query,
            content_type: outbound.content_type,
            body: outbound.body,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            headers: headers_to_wire(&outbound.headers),
            body_follows: outbound.stream.is_some(),
            body_length: outbound.stream.as_ref().and_then(BodyStream::length),
        };
        // The frame adds a tag and a length prefix of at most 6 bytes.
        let size = prost::Message::encoded_len(&event) + 6;
        if size > shared.max_frame_bytes {
            return Err(RequestError::TooLarge {
                size,
                limit: shared.max_frame_bytes,
            });
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        shared.pending.insert(request_id, reply_tx);
        let mut guard = PendingGuard {
            shared,
            request_id,
            cancel_on_drop: true,
        };

        let outcome = tokio::select! {
            outcome = async {
                shared
                    .outbound
                    .send(Outgoing::Frame(Box::new(Body::Event(event))))
                    .await
                    .map_err(|_| shared.disconnected())?;
                if let Some(stream) = outbound.stream {
                    // Queued after the event, so its chunks follow it.
                    tokio::spawn(self.shared.clone().send_body((request_id, false), stream));
                }
                reply_rx.await.unwrap_or_else(|_| Err(shared.disconnected()))
            } => outcome,
            _ = shared.closed.cancelled() => Err(shared.disconnected()),
            _ = sleep_until(deadline) => Err(RequestError::TimedOut {
                peer: shared.peer.name.clone(),
                timeout,
            }),
        };
        // Only a deadline leaves a handler to stop; a reply or a dead
        // connection leaves nothing running over there.
        guard.cancel_on_drop = matches!(outcome, Err(RequestError::TimedOut { .. }));
        outcome
    }
}

/// Removes a request from the pending table however the request ends, and
/// tells the peer to stop working on it when nobody waits any more.
struct PendingGuard<'a> {
    shared: &'a Shared,
    request_id: u64,
    cancel_on_drop: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let was_pending = self.shared.pending.remove(&self.request_id).is_some();
        if self.cancel_on_drop {
            // Nobody waits any more: the upload of the request's body, if
            // any, is pointless too. (After a reply it may go on: a handler
            // may stream its reply while still reading the request.)
            self.shared.stop_sending((self.request_id, false));
        }
        if self.cancel_on_drop && was_pending && !self.shared.closed.is_cancelled() {
            self.shared.send_control(Body::Cancel(Cancel {
                request_id: self.request_id,
                reason: "the caller stopped waiting".to_owned(),
            }));
        }
    }
}

/// Exchanges `Hello` over a fresh TLS stream and starts the connection's
/// tasks. Returns the handle callers use to send requests, and the peer's
/// `Hello`.
///
/// The client speaks first. The server reads the client's `Hello`, checks the
/// version and asks `admit`; it answers with its own `Hello`, or with the
/// `GoAway` that `admit` returned (which the client reports as
/// [`HandshakeError::Refused`]).
pub async fn establish<S>(
    stream: S,
    local: &Endpoint,
    peer: PeerInfo,
    admit: impl FnOnce(&Hello) -> Result<(), GoAway>,
) -> Result<(PeerHandle, Hello), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let settings = &local.settings;
    let codec = FrameCodec::new(settings.max_frame_bytes);
    let (read_half, write_half) = tokio::io::split(stream);
    // Small buffers to start with: most connections idle, and the buffers
    // grow to the frames that actually arrive.
    let mut reader = FramedRead::with_capacity(read_half, codec.clone(), READ_BUFFER);
    let mut writer = FramedWrite::new(write_half, codec);
    *writer.write_buffer_mut() = bytes::BytesMut::with_capacity(FRAMING_BUFFER);

    let hello = Body::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        role: match local.hello.side {
            Side::Server => proto::Role::Server,
            Side::Client => proto::Role::Client,
        } as i32,
        node_name: local.hello.name.clone(),
        software: concat!("restpipe ", env!("CARGO_PKG_VERSION")).to_owned(),
        max_frame_bytes: u32::try_from(settings.max_frame_bytes).unwrap_or(u32::MAX),
        standby: local.hello.standby,
    });
    let speaks_first = local.hello.side == Side::Client;
    let exchange = async {
        if speaks_first {
            writer.send(hello.clone()).await?;
        }
        let theirs = match reader.next().await {
            Some(Ok(Body::Hello(theirs))) => theirs,
            Some(Ok(Body::GoAway(go_away))) => {
                return Err(HandshakeError::Refused {
                    reason: go_away::Reason::try_from(go_away.reason).unwrap_or_default(),
                    message: go_away.message,
                });
            }
            Some(Ok(other)) => return Err(HandshakeError::Unexpected(body_kind(&other))),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(HandshakeError::Closed),
        };
        let verdict = if theirs.protocol_version != PROTOCOL_VERSION {
            let error = HandshakeError::VersionMismatch {
                theirs: theirs.protocol_version,
                ours: PROTOCOL_VERSION,
            };
            Err((
                GoAway {
                    reason: go_away::Reason::ProtocolError as i32,
                    message: error.to_string(),
                },
                error,
            ))
        } else {
            admit(&theirs).map_err(|refusal| {
                let error = HandshakeError::Rejected(refusal.message.clone());
                (refusal, error)
            })
        };
        match verdict {
            Ok(()) => {
                if !speaks_first {
                    writer.send(hello).await?;
                }
                Ok(theirs)
            }
            Err((refusal, error)) => {
                let _ = timeout(CLOSE_TIMEOUT, async {
                    let _ = writer.send(Body::GoAway(refusal)).await;
                    let _ = writer.get_mut().shutdown().await;
                })
                .await;
                Err(error)
            }
        }
    };
    let theirs = timeout(settings.hello_timeout, exchange)
        .await
        .map_err(|_| HandshakeError::TimedOut(settings.hello_timeout))??;

    let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (bulk_tx, bulk_rx) = mpsc::channel(BULK_QUEUE);
    let shared = Arc::new(Shared {
        peer,
        connection_id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
        connected_at: SystemTime::now(),
        outbound: outbound_tx,
        control: control_tx,
        bulk: bulk_tx,
        incoming: DashMap::new(),
        outgoing: DashMap::new(),
        max_body_bytes: local.max_body_bytes,
        pending: DashMap::new(),
        next_request_id: AtomicU64::new(1),
        running: DashMap::new(),
        admission: Arc::new(Semaphore::new(
            settings
                .max_concurrent_handlers
                .saturating_mul(1 + WAITING_PER_SLOT),
        )),
        max_handlers: settings.max_concurrent_handlers,
        closed: CancellationToken::new(),
        peer_going_away: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        peer_go_away_reason: Mutex::new(None),
        close_reason: Mutex::new(None),
        // What we send must fit the peer's limit as well as ours.
        max_frame_bytes: match usize::try_from(theirs.max_frame_bytes) {
            Ok(0) | Err(_) => settings.max_frame_bytes,
            Ok(peer_limit) => settings.max_frame_bytes.min(peer_limit),
        },
        metrics: local.metrics.clone(),
    });
    let slots = Arc::new(Semaphore::new(settings.max_concurrent_handlers));
    // From here on, frames we write must also fit the peer's limit: a reply
    // that does not is replaced by a failure reply, not sent to break it.
    *writer.encoder_mut() = FrameCodec::new(shared.max_frame_bytes);
    tokio::spawn(write_loop(
        writer,
        outbound_rx,
        control_rx,
        bulk_rx,
        shared.clone(),
    ));
    tokio::spawn(read_loop(
        reader,
        shared.clone(),
        local.handlers.clone(),
        slots,
        settings.clone(),
        local.events.clone(),
    ));
    Ok((PeerHandle { shared }, theirs))
}

fn body_kind(body: &Body) -> &'static str {
    match body {
        Body::Hello(_) => "Hello",
        Body::Event(_) => "Event",
        Body::Reply(_) => "Reply",
        Body::Chunk(_) => "Chunk",
        Body::Cancel(_) => "Cancel",
        Body::Ping(_) => "Ping",
        Body::Pong(_) => "Pong",
        Body::GoAway(_) => "GoAway",
        Body::Window(_) => "Window",
    }
}

async fn read_loop<R>(
    mut frames: FramedRead<ReadHalf<R>, FrameCodec>,
    shared: Arc<Shared>,
    handlers: Arc<Handlers>,
    slots: Arc<Semaphore>,
    settings: ConnectionSettings,
    events: EventSink,
) where
    R: AsyncRead + AsyncWrite + Send + 'static,
{
    let peer = shared.peer.name.clone();
    let mut idle_reported = false;
    // Whether a GoAway explaining the close is queued for the peer.
    let mut told_peer = false;
    let mut last_heard = Instant::now();
    let mut last_ping = last_heard;
    let mut ping_nonce = 0u64;
    // The latest ping still waiting for its pong, and when it was sent.
    let mut ping_outstanding: Option<(u64, Instant)> = None;
    let reason: String = loop {
        let ping_at = last_heard.max(last_ping) + settings.ping_interval;
        let dead_at = last_heard + settings.dead_after;
        tokio::select! {
            biased;
            _ = shared.closed.cancelled() => break shared.close_reason(),
            next = frames.next() => {
                let body = match next {
                    Some(Ok(body)) => body,
                    Some(Err(error)) => {
                        warn!(%peer, connection = shared.connection_id, "closing connection: {error}");
                        if matches!(error, FrameError::TooLarge { .. } | FrameError::Malformed(_) | FrameError::Empty) {
                            protocol_error(&shared, error.to_string());
                            told_peer = true;
                        }
                        break format!("protocol error: {error}");
                    }
                    None => break "peer closed the connection".to_owned(),
                };
                last_heard = Instant::now();
                // Pongs answer our own pings; only real traffic ends an idle spell.
                if !matches!(body, Body::Pong(_) | Body::Ping(_)) {
                    idle_reported = false;
                }
                if let Body::Pong(pong) = &body {
                    let answered = ping_outstanding.take_if(|(nonce, _)| *nonce == pong.nonce);
                    if let Some((_, sent)) = answered {
                        shared.metrics.timing(metrics::HEARTBEAT_TIMING, last_heard - sent);
                    }
                }
                if let Err(violation) = dispatch(body, &shared, &handlers, &slots) {
                    warn!(%peer, connection = shared.connection_id, "closing connection: {violation}");
                    protocol_error(&shared, violation.clone());
                    told_peer = true;
                    break format!("protocol error: {violation}");
                }
            }
            _ = sleep_until(ping_at.min(dead_at)) => {
                let now = Instant::now();
                if now >= dead_at {
                    warn!(%peer, connection = shared.connection_id, silent_for = ?now - last_heard, "peer is silent past the heartbeat deadline; dropping it");
                    break format!("no frame from peer for {:?} (heartbeat deadline)", settings.dead_after);
                }
                if !idle_reported {
                    idle_reported = true;
                    events.emit(ConnectionEvent::Idle {
                        peer: peer.clone(),
                        connection_id: shared.connection_id,
                    });
                }
                ping_nonce += 1;
                last_ping = now;
                ping_outstanding = Some((ping_nonce, now));
                shared.send_control(Body::Ping(Ping { nonce: ping_nonce }));
            }
        }
    };
    shared.record_close(reason.clone());
    // Everyone still waiting learns at once; their futures map this to 502.
    shared.pending.clear();
    // Bodies in transit end now, with the reason, and free their memory.
    let keys: Vec<BodyKey> = shared.incoming.iter().map(|e| *e.key()).collect();
    for key in keys {
        shared.abort_incoming(
            key,
            BodyError::Aborted(format!("connection lost: {reason}")),
        );
    }
    let keys: Vec<BodyKey> = shared.outgoing.iter().map(|e| *e.key()).collect();
    for key in keys {
        shared.stop_sending(key);
    }
    if told_peer {
        // Give the writer a bounded moment to deliver the GoAway and close
        // TLS cleanly; it ends the connection itself when done.
        let _ = timeout(CLOSE_TIMEOUT, shared.closed.cancelled()).await;
    }
    shared.closed.cancel();
    debug!(%peer, connection = shared.connection_id, "reader finished");
}

/// Tells the peer it broke the protocol, then closes.
fn protocol_error(shared: &Shared, message: String) {
    let go_away = GoAway {
        reason: go_away::Reason::ProtocolError as i32,
        message,
    };
    let _ = shared.outbound.try_send(Outgoing::Close(Some(go_away)));
}

/// Answers the peer's `event` at once with `refusal` (503, code 251), and
/// stops the body that may follow it.
fn refuse_event(shared: &Shared, event: &Event, refusal: HandlerError) {
    shared.send_control(Body::Reply(proto::Reply {
        request_id: event.request_id,
        return_code: RETURN_HANDLER_FAILED,
        content_type: crate::handler::JSON.to_owned(),
        body: refusal.to_body(),
        http_status: u32::from(http::StatusCode::SERVICE_UNAVAILABLE.as_u16()),
        ..Default::default()
    }));
    if event.body_follows {
        // Its chunks find no receiver and are dropped; this stops the rest.
        shared.stop_peer_body((event.request_id, false));
    }
}

/// Handles one frame from the peer. An `Err` is a protocol violation.
fn dispatch(
    body: Body,
    shared: &Arc<Shared>,
    handlers: &Arc<Handlers>,
    slots: &Arc<Semaphore>,
) -> Result<(), String> {
    match body {
        Body::Event(event) => {
            shared.metrics.incr(metrics::RECEIVE_TICK);
            if shared.draining.load(Ordering::Acquire) {
                // The peer sent this before our GoAway reached it.
                refuse_event(
                    shared,
                    &event,
                    HandlerError::new(
                        "GoingAway",
                        "this node is shutting down and takes no new events",
                    ),
                );
                return Ok(());
            }
            let Ok(admitted) = shared.admission.clone().try_acquire_owned() else {
                shared.metrics.incr(metrics::BUSY_TICK);
                warn!(peer = %shared.peer.name, verb = %event.verb, noun = %event.noun, "refusing an event: every handler slot is taken and the wait queue is full");
                refuse_event(
                    shared,
                    &event,
                    HandlerError::new(
                        "Busy",
                        format!(
                            "this node is at capacity for this peer: {} handlers running and {} more events waiting; try again later",
                            shared.max_handlers,
                            shared.max_handlers.saturating_mul(WAITING_PER_SLOT),
                        ),
                    ),
                );
                return Ok(());
            };
            let cancelled = shared.closed.child_token();
            shared.running.insert(event.request_id, cancelled.clone());
            // Registered now, before the reader takes the next frame, which
            // may be this body's first chunk.
            let stream = event
                .body_follows
                .then(|| shared.receive_body((event.request_id, false), event.body_length));
            tokio::spawn(handle_event(
                event,
                stream,
                shared.clone(),
                handlers.clone(),
                slots.clone(),
                cancelled,
                admitted,
            ));
        }
        Body::Reply(reply) => {
            match shared.pending.remove(&reply.request_id) {
                Some((_, waiter)) => {
                    let stream = reply
                        .body_follows
                        .then(|| shared.receive_body((reply.request_id, true), reply.body_length));
                    let _ = waiter.send(Ok(Reply {
                        return_code: reply.return_code,
                        content_type: reply.content_type,
                        body: reply.body,
                        stream,
                        headers: headers_from_wire(reply.headers),
                        http_status: u16::try_from(reply.http_status).ok().filter(|s| *s != 0),
                    }));
                }
                // The caller gave up (deadline or disconnect) before it came.
                None => {
                    debug!(peer = %shared.peer.name, request_id = reply.request_id, "late reply dropped");
                    if reply.body_follows {
                        shared.stop_peer_body((reply.request_id, true));
                    }
                }
            }
        }
        Body::Cancel(cancel) => {
            let id = cancel.request_id;
            if let Some(token) = shared.running.get(&id) {
                debug!(peer = %shared.peer.name, request_id = id, reason = %cancel.reason, "peer cancelled a request");
                token.cancel();
            }
            shared.stop_sending((id, true));
            shared.abort_incoming(
                (id, false),
                BodyError::Aborted("the caller cancelled the request".to_owned()),
            );
        }
        Body::Window(window) => {
            let key = (window.request_id, window.of_reply);
            if window.stop {
                shared.stop_sending(key);
            } else if let Some(credit) = shared.outgoing.get(&key) {
                let grant = usize::try_from(window.bytes).unwrap_or(usize::MAX);
                // A grant that would overflow the semaphore is a broken peer.
                if grant > Semaphore::MAX_PERMITS - credit.available_permits() {
                    return Err(format!("window grant of {grant} bytes is absurd"));
                }
                credit.add_permits(grant);
            }
        }
        Body::Chunk(chunk) => {
            let key = (chunk.request_id, chunk.of_reply);
            let size = chunk.data.len() as u64;
            let mut reader_gone = false;
            if let Some(mut body) = shared.incoming.get_mut(&key) {
                body.received += size;
                let in_flight = body.received - body.granted.load(Ordering::Acquire);
                if in_flight > WINDOW_BYTES {
                    return Err(format!(
                        "peer sent {in_flight} bytes of one body beyond its {WINDOW_BYTES}-byte window"
                    ));
                }
                if size > 0 {
                    reader_gone = body.sink.push(chunk.data).is_err();
                }
            }
            // Else: a body whose reader already left, or that was cancelled;
            // chunks still in flight are dropped.
            if chunk.last || reader_gone {
                if let Some((_, body)) = shared.incoming.remove(&key) {
                    if !chunk.error.is_empty() {
                        body.sink.abort(BodyError::Aborted(chunk.error));
                    }
                    // Else dropping the sink ends the body normally.
                }
            }
        }
        Body::Ping(ping) => shared.send_control(Body::Pong(Pong { nonce: ping.nonce })),
        Body::Pong(_) => {}
        Body::GoAway(go_away) => {
            let reason = go_away::Reason::try_from(go_away.reason).unwrap_or_default();
            info!(peer = %shared.peer.name, ?reason, message = %go_away.message, "peer is going away");
            shared.peer_going_away.store(true, Ordering::Release);
            *shared
                .peer_go_away_reason
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(reason);
            shared.record_close(format!("peer went away: {}", go_away.message));
        }
        Body::Hello(_) => return Err("unexpected second Hello".to_owned()),
    }
    Ok(())
}

/// Runs one incoming event to completion (or cancellation) and replies.
async fn handle_event(
    event: Event,
    stream: Option<BodyStream>,
    shared: Arc<Shared>,
    handlers: Arc<Handlers>,
    slots: Arc<Semaphore>,
    cancelled: CancellationToken,
    // Held until the reply (and its body) is sent.
    _admitted: OwnedSemaphorePermit,
) {
    let request_id = event.request_id;
    let deadline = Instant::now() + Duration::from_millis(event.timeout_ms);
    let reply = tokio::select! {
        _ = cancelled.cancelled() => None,
        _ = sleep_until(deadline) => None,
        reply = async {
            let _permit: OwnedSemaphorePermit = slots.acquire_owned().await.ok()?;
            Some(run_handler(event, stream, &shared, &handlers, deadline, cancelled.clone()).await)
        } => reply,
    };
    // Once cancelled, nobody waits for the reply: sending it would be noise.
    let Some(reply) = reply.filter(|_| !cancelled.is_cancelled()) else {
        shared.running.remove(&request_id);
        return;
    };
    let frame = Body::Reply(proto::Reply {
        request_id,
        return_code: reply.return_code,
        content_type: reply.content_type,
        body: reply.body,
        headers: headers_to_wire(&reply.headers),
        body_follows: reply.stream.is_some(),
        body_length: reply.stream.as_ref().and_then(BodyStream::length),
        http_status: reply.http_status.map_or(0, u32::from),
    });
    let sent = shared
        .outbound
        .send(Outgoing::Frame(Box::new(frame)))
        .await
        .is_ok();
    if let (true, Some(stream)) = (sent, reply.stream) {
        // Still "running" while the body streams, so a Cancel stops it.
        shared.clone().send_body((request_id, true), stream).await;
    }
    shared.running.remove(&request_id);
}

async fn run_handler(
    event: Event,
    stream: Option<BodyStream>,
    shared: &Shared,
    handlers: &Handlers,
    deadline: Instant,
    cancelled: CancellationToken,
) -> Reply {
    let peer = shared.peer.name.as_str();
    let started = Instant::now();
    let name = handler_name(&event.verb, &event.noun);
    let handler = match handlers.resolve(peer, &event.verb, &event.noun) {
        Resolution::Found(handler) => handler,
        Resolution::Missing => {
            shared.metrics.handled(None, started.elapsed());
            debug!(%peer, handler = %name, "no such handler");
            return Reply::json(&serde_json::json!({
                "error": format!("no handler named {name:?} on this node"),
            }))
            .with_return_code(RETURN_NO_HANDLER);
        }
        Resolution::Denied(message) => {
            shared.metrics.incr(metrics::DENIED_TICK);
            warn!(%peer, handler = %name, "refused by the access policy");
            return Reply::json(&serde_json::json!({ "error": message }))
                .with_return_code(RETURN_ACCESS_DENIED);
        }
    };
    let (body, stream) = match (handler.streams_body(), stream) {
        (true, Some(stream)) => (Bytes::new(), Some(stream)),
        (true, None) => (Bytes::new(), Some(BodyStream::from_bytes(event.body))),
        (false, None) => (event.body, None),
        (false, Some(stream)) => match stream.collect(shared.max_body_bytes).await {
            Ok(body) => (body, None),
            Err(error) => {
                shared.metrics.handled(Some(&name), started.elapsed());
                let failure = HandlerError::new("BodyError", error.to_string());
                warn!(%peer, handler = %name, "{failure}");
                return failure.into_reply();
            }
        },
    };
    let json = if is_json_type(&event.content_type) && !body.is_empty() {
        serde_json::from_slice(&body).ok()
    } else {
        None
    };
    let request = Request {
        peer: peer.to_owned(),
        request_id: event.request_id,
        verb: event.verb,
        noun: event.noun,
        args: event.args,
        query: event.query,
        content_type: event.content_type,
        headers: headers_from_wire(event.headers),
        body,
        stream,
        deadline,
        cancelled: cancelled.clone(),
        json,
    };
    // A task of its own, so a panicking handler is a 251, not a dead reader;
    // aborted on drop, so cancellation stops it.
    // Run in this task (no extra spawn on the hot path), with a panic caught
    // and turned into a 251 instead of taking the connection down.
    let outcome = std::panic::AssertUnwindSafe(handler.call(request))
        .catch_unwind()
        .await;
    shared.metrics.handled(Some(&name), started.elapsed());
    let failure = match outcome {
        Ok(Ok(reply)) => return reply,
        Ok(Err(failure)) => failure,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".to_owned());
            HandlerError::new("panic", message)
        }
    };
    warn!(%peer, handler = %name, "handler failed: {failure}");
    failure.into_reply()
}

/// Headers as they travel in frames.
fn headers_to_wire(headers: &http::HeaderMap) -> Vec<proto::Header> {
    headers
        .iter()
        .map(|(name, value)| proto::Header {
            name: name.as_str().to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
        .collect()
}

/// Headers from a frame; any a peer sent that HTTP cannot carry are dropped.
fn headers_from_wire(headers: Vec<proto::Header>) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for header in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.name.as_bytes()),
            http::HeaderValue::from_bytes(&header.value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// Frames taken from the queue before one flush.
const MAX_BATCH_FRAMES: usize = 256;
/// Body bytes taken from the queue before one flush: enough to fill TLS
/// records, little enough that a control frame behind them waits briefly.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Rough payload size of a queued frame, for batching.
fn payload_len(outgoing: &Outgoing) -> usize {
    let Outgoing::Frame(body) = outgoing else {
        return 0;
    };
    body_len(body)
}

/// Body bytes a frame carries, for batching.
fn body_len(body: &Body) -> usize {
    match body {
        Body::Chunk(chunk) => chunk.data.len(),
        Body::Event(event) => event.body.len(),
        Body::Reply(reply) => reply.body.len(),
        _ => 0,
    }
}

async fn write_loop<W>(
    mut sink: FramedWrite<WriteHalf<W>, FrameCodec>,
    mut queue: mpsc::Receiver<Outgoing>,
    mut control: mpsc::UnboundedReceiver<Box<Body>>,
    mut bulk: mpsc::Receiver<Box<Body>>,
    shared: Arc<Shared>,
) where
    W: AsyncRead + AsyncWrite + Send + 'static,
{
    let peer = shared.peer.name.clone();
    // Writes in a row that carried a single frame.
    let mut lone_writes = u32::MAX;
    loop {
        let first = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => break,
            Some(body) = control.recv() => Outgoing::Frame(body),
            next = queue.recv() => match next {
                Some(next) => next,
                None => break,
            },
            // Only when nothing above is waiting: bulk data yields.
            Some(body) = bulk.recv() => Outgoing::Frame(body),
        };
        // Under load (one of the last few writes carried several frames, or
        // more are already queued), let the tasks that are ready run first:
        // a yielded task resumes after the runtime has polled for I/O, so
        // they queue more frames, which then share this write. This halves
        // the TLS writes per request at concurrency 64 (BENCH.md). Lone
        // requests do not wait: yielding would only wake an idle worker.
        if lone_writes < 4 || !queue.is_empty() {
            tokio::task::yield_now().await;
        }
        // Take what is already queued, control frames first, then flush
        // once: under load many frames share one TLS record and one syscall.
        let mut bytes = payload_len(&first);
        let mut batch = vec![first];
        while let Ok(body) = control.try_recv() {
            batch.push(Outgoing::Frame(body));
        }
        let mut queue_empty = false;
        while batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += payload_len(&next);
                    batch.push(next);
                }
                Err(_) => {
                    queue_empty = true;
                    break;
                }
            }
        }
        // Chunks only once the queue is empty: an event or reply is always
        // written before the chunks of its body, which follow it.
        while queue_empty && batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
            match bulk.try_recv() {
                Ok(body) => {
                    bytes += body_len(&body);
                    batch.push(Outgoing::Frame(body));
                }
                Err(_) => break,
            }
        }
        lone_writes = if batch.len() > 1 {
            0
        } else {
            lone_writes.saturating_add(1)
        };
        let mut close: Option<Option<GoAway>> = None;
        let written = tokio::select! {
            _ = shared.closed.cancelled() => break,
            written = async {
                for outgoing in batch {
                    match outgoing {
                        Outgoing::Frame(body) => feed_frame(&mut sink, *body, &shared).await?,
                        Outgoing::Close(go_away) => {
                            close = Some(go_away);
                            break;
                        }
                    }
                }
                sink.flush().await
            } => written,
        };
        if let Err(error) = written {
            shared.record_close(format!("write failed: {error}"));
            debug!(%peer, "write failed: {error}");
            break;
        }
        if let Some(go_away) = close {
            let _ = timeout(CLOSE_TIMEOUT, async {
                if let Some(go_away) = go_away {
                    let _ = sink.send(Body::GoAway(go_away)).await;
                }
                let _ = sink.get_mut().shutdown().await;
            })
            .await;
            break;
        }
    }
    shared.closed.cancel();
    debug!(%peer, connection = shared.connection_id, "writer finished");
}

/// Buffers one frame. A frame over the limit is answered in kind, never
/// sent: an event fails its caller, a reply becomes a 251.
async fn feed_frame<W>(
    sink: &mut FramedWrite<WriteHalf<W>, FrameCodec>,
    body: Body,
    shared: &Shared,
) -> Result<(), FrameError>
where
    W: AsyncRead + AsyncWrite + Send + 'static,
{
    let (request_id, is_reply) = match &body {
        Body::Event(event) => (event.request_id, false),
        Body::Reply(reply) => (reply.request_id, true),
        _ => return sink.feed(body).await,
    };
    match sink.feed(body).await {
        Err(FrameError::TooLarge { announced, limit }) => {
            if is_reply {
                let failure = HandlerError::new(
                    "ReplyTooLarge",
                    format!("reply of {announced} bytes exceeds the frame limit of {limit} bytes"),
                );
                warn!(peer = %shared.peer.name, request_id, "{failure}");
                let reply = Body::Reply(proto::Reply {
                    request_id,
                    return_code: RETURN_HANDLER_FAILED,
                    content_type: crate::handler::JSON.to_owned(),
                    body: failure.to_body(),
                    ..Default::default()
                });
                sink.feed(reply).await
            } else {
                if let Some((_, waiter)) = shared.pending.remove(&request_id) {
                    let _ = waiter.send(Err(RequestError::TooLarge {
                        size: announced,
                        limit,
                    }));
                }
                Ok(())
            }
        }
        other => other,
    }
}
