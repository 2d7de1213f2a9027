//! Serving the clients this node holds to the rest of the cluster: a
//! subscription per held client, in the `holders` queue group of its
//! subject, for as long as the connection is held. Each forwarded request
//! is sent over the local connection as if a local caller had made it, so
//! the client's own policy applies as for any request of this node; the
//! requesting node's id travels in the `Rp-Origin` header and is logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::Either;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use super::mailbox::Mailbox;
use super::stream::{self, Credit, Grant, Incoming, WINDOW_BYTES, decode, encode, window};
use super::subjects::HOLDERS;
use super::{Cluster, HOLDER_HEADER, ORIGIN_HEADER};
use crate::link::{PeerHandle, RequestError};
use crate::wire::proto::{self, frame::Body};
use crate::wire::{
    Event, JSON, JobProgress, JobTag, RETURN_HANDLER_FAILED, ReceivedEvent, Reply, check_event,
    printable, reply_frame,
};

/// Forwarded requests a node serves at once; past it, 503.
pub const MAX_FORWARDED_IN: usize = 4096;
/// Time given past a forwarded request's own deadline before its exchange
/// is dropped (the reply may still be on its way).
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);
/// How long a forwarded request without a body may take before its
/// exchange is opened (the requester learns the holder's node and mailbox,
/// so it can watch the node and cancel); a quicker reply is the whole
/// answer, one message.
const OPEN_AFTER: Duration = Duration::from_millis(20);
/// How often a forwarded request checks that its requester is alive.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// A client held by this node, reachable from the cluster while this lives.
#[derive(Debug)]
pub struct Held {
    _stop: DropGuard,
}

impl Cluster {
    /// Makes client `name`, connected here through `handle`, reachable from
    /// every node of the cluster until the returned value is dropped, and
    /// tells the other nodes that this node holds it now (an older holder
    /// lets its connection go).
    pub fn hold(self: &Arc<Self>, name: &str, handle: PeerHandle) -> Held {
        let stop = CancellationToken::new();
        tokio::spawn(
            self.clone()
                .serve_held(name.to_owned(), handle, stop.clone()),
        );
        Held {
            _stop: stop.drop_guard(),
        }
    }

    /// Answers forwarded requests for `name` until `stop` or the
    /// connection closes.
    async fn serve_held(
        self: Arc<Self>,
        name: String,
        handle: PeerHandle,
        stop: CancellationToken,
    ) {
        let subject = self.subjects.client(&name);
        let mut requests = match self.nats.queue_subscribe(subject, HOLDERS.to_owned()).await {
            Ok(requests) => requests,
            Err(error) => {
                warn!(client = %name, "cannot offer the client to the cluster: {error}");
                return;
            }
        };
        self.announce(&name, &handle).await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = handle.closed() => break,
                message = requests.next() => match message {
                    Some(message) => {
                        tokio::spawn(self.clone().serve_one(handle.clone(), message));
                    }
                    None => break,
                },
            }
        }
        let _ = requests.unsubscribe().await;
        self.announce_release(&name, &handle).await;
    }

    /// Serves one forwarded request over `handle`.
    async fn serve_one(self: Arc<Self>, handle: PeerHandle, message: async_nats::Message) {
        let Some(reply_to) = message.reply.as_ref().map(ToString::to_string) else {
            return;
        };
        let origin = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(ORIGIN_HEADER))
            .map(|origin| printable(origin.as_str()))
            .unwrap_or_default();
        let Ok(place) = self.forwards_in.clone().try_acquire_owned() else {
            let busy = format!(
                "node {} is serving {MAX_FORWARDED_IN} forwarded requests already",
                self.node_id()
            );
            self.refuse(&reply_to, 503, &busy).await;
            return;
        };
        let frame = match decode(&message.payload) {
            Ok(Body::Event(frame)) => frame,
            Ok(_) => {
                return self
                    .refuse(&reply_to, 400, "a forwarded request must be an event")
                    .await;
            }
            Err(why) => return self.refuse(&reply_to, 400, &why).await,
        };
        if let Err(error) = check_event(&frame) {
            return self.refuse(&reply_to, 400, &error.to_string()).await;
        }
        debug!(client = handle.name(), %origin, "forwarded request");
        let received = ReceivedEvent::from(frame);
        let served = Served {
            cluster: self.clone(),
            handle,
            reply_to,
            origin,
            opened: AtomicBool::new(false),
            _place: place,
        };
        served.run(received).await;
    }

    /// Answers a request that will not be served with `status` and `why`:
    /// a reply without a body, the whole answer.
    async fn refuse(&self, reply_to: &str, status: u16, why: &str) {
        let (reply, _) = reply_frame(0, failure(status, why));
        let _ = stream::publish(&self.nats, reply_to, encode(Body::Reply(reply))).await;
    }
}

/// A forwarded request being served.
struct Served {
    cluster: Arc<Cluster>,
    handle: PeerHandle,
    /// The requesting node's inbox for this request.
    reply_to: String,
    /// The requesting node, whose heartbeats must go on.
    origin: String,
    /// Whether the requester was told where this exchange's mailbox is.
    opened: AtomicBool,
    _place: OwnedSemaphorePermit,
}

impl Served {
    /// Sends the event over the local connection, feeding its body from
    /// the requester and streaming the reply's back, until done, cancelled
    /// or past the deadline.
    async fn run(self, received: ReceivedEvent) {
        let nats = &self.cluster.nats;
        let mut mailbox = self.cluster.mailboxes.open();
        let mut event = received.event;
        let Some((mut incoming, mut grants)) = self
            .body(&mut event, received.body_follows, received.body_length)
            .await
        else {
            return;
        };
        // A body to receive needs its first window at once; without one,
        // the exchange opens only for a reply that takes a while.
        if incoming.is_some() && !self.open(&mailbox, WINDOW_BYTES).await {
            return;
        }
        let open_by = Instant::now() + OPEN_AFTER;
        let deadline = Instant::now() + received.timeout + DEADLINE_MARGIN;
        let credit = Arc::new(Credit::default());
        credit.apply(&proto::Window {
            of_reply: true,
            bytes: WINDOW_BYTES,
            ..Default::default()
        });
        let (progress, mut watch) = JobProgress::channel();
        let request = self.request(event, received.timeout, received.job, progress);
        tokio::pin!(request);
        let mut replied = false;
        let mut sending: Option<AbortOnDropHandle<Result<(), String>>> = None;
        let mut liveness = tokio::time::interval(LIVENESS_CHECK);
        loop {
            tokio::select! {
                reply = &mut request, if !replied => {
                    replied = true;
                    let reply = reply.unwrap_or_else(|error| failed(&error));
                    match self.reply(reply, &credit, &mailbox).await {
                        Some(task) => sending = Some(task),
                        None => break,
                    }
                }
                _ = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => break,
                message = mailbox.next() => {
                    let Some(message) = message else { break };
                    if self.heard(&message.payload, incoming.as_mut(), &credit) {
                        break;
                    }
                }
                grant = next(&mut grants) => {
                    if let Some(incoming) = incoming.as_mut()
                        && let Grant::Bytes(bytes) = grant
                    {
                        incoming.granted(bytes);
                    }
                    let _ = stream::publish(nats, &self.reply_to, window(false, grant)).await;
                }
                () = tokio::time::sleep_until(open_by), if !self.is_open() => {
                    if !self.open(&mailbox, 0).await { break }
                }
                Ok(()) = watch.changed() => {
                    let percent = u32::from(*watch.borrow_and_update());
                    let progress = encode(Body::Progress(proto::Progress { request_id: 0, percent }));
                    if !self.open(&mailbox, 0).await { break }
                    let _ = stream::publish(nats, &self.reply_to, progress).await;
                }
                () = tokio::time::sleep_until(deadline) => break,
                _ = liveness.tick() => if !self.origin_lives() { break },
            }
        }
        if let Some(incoming) = incoming.as_mut() {
            incoming.abort("the forwarded request ended");
        }
    }

    /// The request body, if one follows: a stream for `event`, fed from the
    /// requester within the node's budget for forwarded bodies. `None` if
    /// the budget is spent (the requester was told so).
    async fn body(
        &self,
        event: &mut Event,
        follows: bool,
        length: Option<u64>,
    ) -> Option<(Option<Incoming>, Option<mpsc::UnboundedReceiver<Grant>>)> {
        if !follows {
            return Some((None, None));
        }
        match Incoming::new(length, &self.cluster.body_memory) {
            Ok((incoming, body, grants)) => {
                event.stream = Some(body);
                Some((Some(incoming), Some(grants)))
            }
            Err(over) => {
                let why = format!(
                    "node {} holds all the forwarded bodies it may: {over}",
                    self.cluster.node_id()
                );
                self.cluster.refuse(&self.reply_to, 503, &why).await;
                None
            }
        }
    }

    /// Whether the requester was told where this exchange's mailbox is.
    fn is_open(&self) -> bool {
        self.opened.load(Ordering::Relaxed)
    }

    /// Opens the exchange, unless it is open: tells the requester which
    /// node took the request, where to send the rest (`mailbox`), and how
    /// much of its body it may send now (`grant`); `false` if that could
    /// not be sent.
    async fn open(&self, mailbox: &Mailbox, grant: u64) -> bool {
        if self.is_open() {
            return true;
        }
        let first = window(false, Grant::Bytes(grant));
        self.opening(mailbox, first).await
    }

    /// Sends `payload` as the exchange's first message, opening it.
    async fn opening(&self, mailbox: &Mailbox, payload: bytes::Bytes) -> bool {
        self.opened.store(true, Ordering::Relaxed);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HOLDER_HEADER, self.cluster.node_id());
        self.cluster
            .nats
            .publish_with_reply_and_headers(
                self.reply_to.clone(),
                mailbox.address().to_owned(),
                headers,
                payload,
            )
            .await
            .is_ok()
    }

    /// The request over the local connection: a durable job's when the
    /// event carries a job's tag (its progress reported to `progress`).
    fn request(
        &self,
        event: Event,
        timeout: Duration,
        job: Option<JobTag>,
        progress: JobProgress,
    ) -> impl Future<Output = Result<Reply, RequestError>> + '_ {
        match job {
            Some(tag) => Either::Left(self.handle.request_job(event, timeout, tag, progress)),
            None => Either::Right(self.handle.request(event, timeout)),
        }
    }

    /// Whether the requesting node is still heard from: a request whose
    /// requester died is dropped (which cancels it on the local
    /// connection) instead of running to its deadline.
    fn origin_lives(&self) -> bool {
        let lives = !self.cluster.members.is_gone(&self.origin);
        if !lives {
            debug!(client = self.handle.name(), origin = %self.origin, "the requesting node went away: dropping its request");
        }
        lives
    }

    /// Sends `reply` to the requester; its body, if it streams, goes on in
    /// the returned task.
    async fn reply(
        &self,
        reply: Reply,
        credit: &Arc<Credit>,
        mailbox: &Mailbox,
    ) -> Option<AbortOnDropHandle<Result<(), String>>> {
        let (mut frame, body) = reply_frame(0, reply);
        let body = stream::stream_if_large(
            &mut frame.body,
            &mut frame.body_follows,
            &mut frame.body_length,
            body,
        );
        let nats = self.cluster.nats.clone();
        let payload = encode(Body::Reply(frame));
        match self.is_open() {
            true => stream::publish(&nats, &self.reply_to, payload).await.ok()?,
            false => self.opening(mailbox, payload).await.then_some(())?,
        }
        let body = body?;
        let (to, credit) = (self.reply_to.clone(), credit.clone());
        Some(AbortOnDropHandle::new(tokio::spawn(async move {
            stream::send_body(&nats, &to, true, body, &credit).await
        })))
    }

    /// Takes one message from the requester; `true` when it cancelled.
    fn heard(&self, payload: &[u8], incoming: Option<&mut Incoming>, credit: &Credit) -> bool {
        match decode(payload) {
            Ok(Body::Chunk(chunk)) if !chunk.of_reply => {
                if let Some(incoming) = incoming {
                    incoming.chunk(chunk);
                }
                false
            }
            Ok(Body::Window(window)) if window.of_reply => {
                credit.apply(&window);
                false
            }
            Ok(Body::Cancel(cancel)) => {
                debug!(client = self.handle.name(), reason = %printable(&cancel.reason), "forwarded request cancelled");
                true
            }
            _ => false,
        }
    }
}

/// The next grant of the request body's reader, if one streams.
async fn next(grants: &mut Option<mpsc::UnboundedReceiver<Grant>>) -> Grant {
    match grants {
        Some(receiver) => match receiver.recv().await {
            Some(grant) => grant,
            None => {
                *grants = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// The reply for a request the local connection could not carry, as the
/// front answers a local caller.
fn failed(error: &RequestError) -> Reply {
    let status = match error {
        RequestError::Disconnected { .. } => 502,
        RequestError::TimedOut { .. } => 504,
        RequestError::GoingAway { .. } => 503,
        RequestError::TooLarge { .. } => 413,
    };
    failure(status, &error.to_string())
}

/// A failure reply: `status`, and the front's error body.
fn failure(status: u16, why: &str) -> Reply {
    Reply::bytes(JSON, json!({ "error": why }).to_string())
        .with_return_code(RETURN_HANDLER_FAILED)
        .with_http_status(status)
}
