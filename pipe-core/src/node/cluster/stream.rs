//! Bodies across the backplane: the pipe's own `Chunk` frames, each one
//! NATS message of at most [`CHUNK_BYTES`], sent only within the `Window`
//! credit the receiver grants as its reader takes them, so neither node
//! holds more than a window of a body, however large, and no message comes
//! near NATS's `max_payload` (1 MiB by default).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::{Notify, mpsc};

use crate::wire::body::{self, BodyError, BodySink, BodyStream};
use crate::wire::proto::{self, frame::Body};
use crate::wire::{Held, MemoryBudget, OverBudget};

/// Bytes of forwarded bodies a node holds at once, both directions
/// together: a window each, so this many windows stream at once (256);
/// past it a forwarded request with a streamed body gets 503.
pub const FORWARDED_BODY_MEMORY: usize = 256 * 1024 * 1024;
/// Largest piece of a body in one message.
pub(super) const CHUNK_BYTES: usize = 128 * 1024;
/// Bytes of a body a receiver lets its sender put in flight.
pub(super) const WINDOW_BYTES: u64 = 1024 * 1024;
/// Bodies up to this size travel inside their `Event` or `Reply` message;
/// larger ones stream.
pub(super) const INLINE_BYTES: usize = 256 * 1024;

/// One frame as a message's payload.
pub(super) fn encode(body: Body) -> Bytes {
    proto::Frame { body: Some(body) }.encode_to_vec().into()
}

/// The frame in a message's payload, checked as the pipe checks a peer's.
pub(super) fn decode(payload: &[u8]) -> Result<Body, String> {
    crate::wire::check_counts(payload).map_err(|error| error.to_string())?;
    proto::Frame::decode(payload)
        .map_err(|error| format!("undecodable frame: {error}"))?
        .body
        .ok_or_else(|| "an empty frame".to_owned())
}

/// An inline body too large for one message, made a stream; `body_follows`
/// and `body_length` say so.
pub(super) fn stream_if_large(
    body: &mut Bytes,
    body_follows: &mut bool,
    body_length: &mut Option<u64>,
    stream: Option<BodyStream>,
) -> Option<BodyStream> {
    if body.len() <= INLINE_BYTES {
        return stream;
    }
    let whole = std::mem::take(body);
    *body_follows = true;
    *body_length = Some(whole.len() as u64);
    Some(BodyStream::from_bytes(whole))
}

/// Bytes the far side lets us send, granted in `Window` frames.
#[derive(Debug, Default)]
pub(super) struct Credit {
    state: Mutex<CreditState>,
    more: Notify,
}

#[derive(Debug, Default)]
struct CreditState {
    bytes: u64,
    stopped: bool,
}

/// The far side stopped wanting the body.
#[derive(Debug)]
pub(super) struct Stopped;

impl Credit {
    /// Adds `window`'s credit, or stops, as it says.
    pub(super) fn apply(&self, window: &proto::Window) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if window.stop {
                state.stopped = true;
            }
            // Never more than a few windows: a confused peer cannot make
            // us send without bound.
            state.bytes = state
                .bytes
                .saturating_add(window.bytes)
                .min(4 * WINDOW_BYTES);
        }
        self.more.notify_waiters();
    }

    /// Waits for `bytes` of credit and takes it.
    async fn take(&self, bytes: u64) -> Result<(), Stopped> {
        loop {
            let more = self.more.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.stopped {
                    return Err(Stopped);
                }
                if state.bytes >= bytes {
                    state.bytes -= bytes;
                    return Ok(());
                }
            }
            more.await;
        }
    }
}

/// Sends `stream` to `to` as `Chunk` frames of `request_id`, each within
/// `credit`; the last one says how it ended. `Err` if NATS refused a
/// message or the far side stopped wanting it.
pub(super) async fn send_body(
    nats: &async_nats::Client,
    to: &str,
    of_reply: bool,
    mut stream: BodyStream,
    credit: &Credit,
) -> Result<(), String> {
    let chunk = |data: Bytes, last: bool, error: String| {
        encode(Body::Chunk(proto::Chunk {
            request_id: 0,
            of_reply,
            data,
            last,
            error,
        }))
    };
    loop {
        let (data, last, error) = match stream.chunk().await {
            None => (Bytes::new(), true, String::new()),
            Some(Err(error)) => (Bytes::new(), true, error.to_string()),
            Some(Ok(mut data)) => {
                while data.len() > CHUNK_BYTES {
                    let piece = data.split_to(CHUNK_BYTES);
                    credit
                        .take(piece.len() as u64)
                        .await
                        .map_err(|_| "stopped by the reader")?;
                    publish(nats, to, chunk(piece, false, String::new())).await?;
                }
                credit
                    .take(data.len() as u64)
                    .await
                    .map_err(|_| "stopped by the reader")?;
                (data, false, String::new())
            }
        };
        publish(nats, to, chunk(data, last, error)).await?;
        if last {
            return Ok(());
        }
    }
}

/// Publishes `payload` to `to`.
pub(super) async fn publish(
    nats: &async_nats::Client,
    to: &str,
    payload: Bytes,
) -> Result<(), String> {
    nats.publish(to.to_owned(), payload)
        .await
        .map_err(|error| format!("the backplane refused a message: {error}"))
}

/// What the reader of a received body tells its sender.
#[derive(Debug, Clone, Copy)]
pub(super) enum Grant {
    /// It took this many bytes: they may be sent again.
    Bytes(u64),
    /// It went away: stop sending.
    Stop,
}

/// A body arriving in `Chunk` frames, fed to a local reader. It holds a
/// window of the node's budget for forwarded bodies while it lives: what
/// its sender may put in flight unread.
#[derive(Debug)]
pub(super) struct Incoming {
    _held: Held,
    sink: Option<BodySink>,
    /// Bytes the sender may send in all: what was granted so far.
    allowed: u64,
    received: u64,
}

impl Incoming {
    /// A body of `length` (if known), its stream for the local reader, and
    /// the grants to pass on to the sender as the reader takes it; `Err`
    /// if `budget` has no window left.
    pub(super) fn new(
        length: Option<u64>,
        budget: &Arc<MemoryBudget>,
    ) -> Result<(Self, BodyStream, mpsc::UnboundedReceiver<Grant>), OverBudget> {
        let held = budget.hold(WINDOW_BYTES as usize)?;
        let (sink, mut stream) = body::unbounded_channel(length);
        let (grants, granted) = mpsc::unbounded_channel();
        let consumed = grants.clone();
        stream.set_on_consumed(Box::new(move |bytes| {
            let _ = consumed.send(Grant::Bytes(bytes as u64));
        }));
        stream.set_on_abandoned(Box::new(move || {
            let _ = grants.send(Grant::Stop);
        }));
        let incoming = Self {
            _held: held,
            sink: Some(sink),
            allowed: WINDOW_BYTES,
            received: 0,
        };
        Ok((incoming, stream, granted))
    }

    /// Counts `bytes` more granted to the sender.
    pub(super) fn granted(&mut self, bytes: u64) {
        self.allowed = self.allowed.saturating_add(bytes);
    }

    /// Takes one chunk; `true` once the body has ended (whole or not).
    pub(super) fn chunk(&mut self, chunk: proto::Chunk) -> bool {
        let Some(sink) = self.sink.as_ref() else {
            return true;
        };
        self.received += chunk.data.len() as u64;
        if self.received > self.allowed {
            self.abort("the sender went past its window");
            return true;
        }
        if !chunk.data.is_empty() && sink.push(chunk.data).is_err() {
            self.sink = None; // the reader is gone; it said so
            return true;
        }
        if chunk.last {
            match chunk.error.is_empty() {
                true => self.sink = None,
                false => self.abort(&chunk.error),
            }
            return true;
        }
        false
    }

    /// Ends the body with an error (the sender vanished, the deadline).
    pub(super) fn abort(&mut self, why: &str) {
        if let Some(sink) = self.sink.take() {
            sink.abort(BodyError::Aborted(why.to_owned()));
        }
    }
}

/// A `Window` frame granting `grant` for a body (`of_reply`).
pub(super) fn window(of_reply: bool, grant: Grant) -> Bytes {
    let (bytes, stop) = match grant {
        Grant::Bytes(bytes) => (bytes, false),
        Grant::Stop => (0, true),
    };
    encode(Body::Window(proto::Window {
        request_id: 0,
        of_reply,
        bytes,
        stop,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Arc<MemoryBudget> {
        MemoryBudget::node(FORWARDED_BODY_MEMORY)
    }

    fn chunk(data: &'static [u8], last: bool, error: &str) -> proto::Chunk {
        proto::Chunk {
            request_id: 0,
            of_reply: true,
            data: Bytes::from_static(data),
            last,
            error: error.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_received_body_reaches_its_reader_and_grants_what_it_took() {
        let (mut incoming, mut body, mut grants) = Incoming::new(Some(6), &budget()).unwrap();
        assert!(!incoming.chunk(chunk(b"abc", false, "")));
        assert!(incoming.chunk(chunk(b"def", true, "")));
        assert_eq!(body.chunk().await.unwrap().unwrap(), "abc");
        assert!(matches!(grants.recv().await, Some(Grant::Bytes(3))));
        assert_eq!(body.chunk().await.unwrap().unwrap(), "def");
        assert!(body.chunk().await.is_none(), "the body ends whole");
    }

    #[tokio::test]
    async fn a_sender_past_its_window_or_failing_cuts_the_body_with_the_reason() {
        let (mut incoming, mut body, _grants) = Incoming::new(None, &budget()).unwrap();
        incoming.allowed = 2;
        assert!(incoming.chunk(chunk(b"abc", false, "")));
        let error = body.chunk().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("past its window"), "{error}");

        let (mut incoming, mut body, _grants) = Incoming::new(None, &budget()).unwrap();
        assert!(incoming.chunk(chunk(b"", true, "the handler failed")));
        let error = body.chunk().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("the handler failed"), "{error}");
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_says_stop() {
        let (mut incoming, body, mut grants) = Incoming::new(None, &budget()).unwrap();
        assert!(!incoming.chunk(chunk(b"abc", false, "")));
        drop(body);
        assert!(matches!(grants.recv().await, Some(Grant::Stop)));
        assert!(
            incoming.chunk(chunk(b"more", false, "")),
            "nothing more is taken"
        );
    }

    #[test]
    fn each_body_holds_a_window_of_the_budget_while_it_lives() {
        let budget = MemoryBudget::node(2 * WINDOW_BYTES as usize);
        let first = Incoming::new(None, &budget).unwrap();
        let second = Incoming::new(None, &budget).unwrap();
        assert!(Incoming::new(None, &budget).is_err(), "no third window");
        drop(first);
        assert!(
            Incoming::new(None, &budget).is_ok(),
            "a window freed is taken again"
        );
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn credit_is_waited_for_taken_capped_and_stopped() {
        let credit = std::sync::Arc::new(Credit::default());
        let grant = |bytes, stop| proto::Window {
            request_id: 0,
            of_reply: false,
            bytes,
            stop,
        };
        let waiting = tokio::spawn({
            let credit = credit.clone();
            async move { credit.take(10).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no credit yet");
        credit.apply(&grant(10, false));
        assert!(waiting.await.unwrap());
        // A confused peer cannot grant without bound.
        credit.apply(&grant(u64::MAX, false));
        assert!(credit.take(4 * WINDOW_BYTES).await.is_ok());
        let starved = tokio::time::timeout(std::time::Duration::from_secs(1), credit.take(1)).await;
        assert!(starved.is_err(), "capped at four windows");
        credit.apply(&grant(0, true));
        assert!(credit.take(1).await.is_err(), "stopped");
    }

    #[test]
    fn large_inline_bodies_become_streams_and_frames_decode_checked() {
        let mut body = Bytes::from(vec![7u8; INLINE_BYTES + 1]);
        let (mut follows, mut length) = (false, None);
        let stream = stream_if_large(&mut body, &mut follows, &mut length, None);
        assert!(stream.is_some() && follows && body.is_empty());
        assert_eq!(length, Some(INLINE_BYTES as u64 + 1));
        let mut small = Bytes::from_static(b"small");
        let (mut follows, mut length) = (false, None);
        assert!(stream_if_large(&mut small, &mut follows, &mut length, None).is_none());
        assert!(!follows && small.len() == 5);

        assert!(decode(&encode(Body::Ping(proto::Ping { nonce: 1 }))).is_ok());
        assert!(decode(b"\xff\xff\xff").is_err());
        assert!(decode(&[]).is_err(), "an empty frame is refused");
    }
}
