//! Bodies larger than one frame: streamed in chunks with per-body flow
//! control, so a gigabyte moves through the pipe in bounded memory and small
//! requests on the same connection are not stuck behind it.
//!
//! A [`BodyStream`] is the reading end of a body, whoever produces it: the
//! local HTTP caller's upload, the peer's chunks arriving over the pipe, or a
//! handler producing a large reply. A [`BodySink`] is the writing end. The
//! channel between them holds at most a receive window of data, and a
//! stream fed from the pipe hands window back to the peer as it is read. A
//! producer that is itself a stream (the caller's upload, a file) needs no
//! task and no channel: [`BodyStream::from_stream`] polls it in place, in
//! whichever task reads the body.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::budget::{Held, MemoryBudget, OverBudget};

/// Bodies up to this size travel inside their `Event` or `Reply` frame;
/// larger ones are streamed.
pub const INLINE_LIMIT: usize = 256 * 1024;
/// Data carried by one `Chunk` frame: large enough to amortise framing and
/// allocation, small enough that a small request queued behind it waits a
/// fraction of a millisecond (and small requests overtake queued chunks).
/// Each chunk is stored and forwarded whole at every hop, so smaller chunks
/// also shorten a grant's round trip (measured in BENCH.md: 128 KiB beat
/// 256 KiB on both throughput and small-request latency).
pub const CHUNK_BYTES: usize = 128 * 1024;
/// Bytes of one body a sender may have in flight before the receiver grants
/// more: the memory a streamed body can occupy at the receiver, and, over
/// the round trip of a grant, what bounds one transfer's speed. It is also
/// how much a small request can find queued ahead of it in the socket, so
/// it trades transfer speed against small-request latency during a
/// transfer (BENCH.md: 1 MiB kept p99 at ~4 ms but cost a quarter of the
/// speed; 4 MiB went past the 10 ms target; 2 MiB meets both).
pub const WINDOW_BYTES: u64 = 2 * 1024 * 1024;
/// Pieces a local body channel holds before its producer waits.
const CHANNEL_CHUNKS: usize = 32;

/// Why a body did not arrive whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body grew past the limit.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The producer stopped before the end (connection lost, upload cut,
    /// handler failed).
    #[error("body aborted: {0}")]
    Aborted(String),
    /// Holding the body would pass a memory budget of the node's.
    #[error("body refused: {0}")]
    OverBudget(#[from] OverBudget),
}

type Item = Result<Bytes, BodyError>;

/// Called with the size of each chunk the reader takes: returns window to the
/// producer (for bodies fed from the pipe).
pub(crate) type OnConsumed = Box<dyn FnMut(usize) + Send + Sync>;
/// Called once if the reader drops the stream before its end.
pub(crate) type OnAbandoned = Box<dyn FnOnce() + Send + Sync>;

/// A producer polled in place by the body's reader.
type Source = Pin<Box<dyn futures_util::Stream<Item = Item> + Send + Sync>>;

/// Where a stream's pieces come from: a bounded channel (local producers,
/// which it slows down), an unbounded one (the pipe, whose peer is held to
/// the window in bytes, however small its pieces), or a stream polled only
/// when the reader wants the next piece (which is all the slowing down it
/// needs).
enum Pieces {
    Bounded(mpsc::Receiver<Item>),
    Unbounded(mpsc::UnboundedReceiver<Item>),
    Source(Source),
}

impl Pieces {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        match self {
            Self::Bounded(rx) => rx.poll_recv(cx),
            Self::Unbounded(rx) => rx.poll_recv(cx),
            Self::Source(source) => source.as_mut().poll_next(cx),
        }
    }

    /// Whether the end is known to have come, without taking a piece (a
    /// source cannot tell without being polled).
    fn is_drained(&self) -> bool {
        match self {
            Self::Bounded(rx) => rx.is_closed() && rx.is_empty(),
            Self::Unbounded(rx) => rx.is_closed() && rx.is_empty(),
            Self::Source(_) => false,
        }
    }
}

enum Sender {
    Bounded(mpsc::Sender<Item>),
    Unbounded(mpsc::UnboundedSender<Item>),
}

/// The reading end of a streamed body.
pub struct BodyStream {
    chunks: Pieces,
    length: Option<u64>,
    finished: bool,
    on_consumed: Option<OnConsumed>,
    on_abandoned: Option<OnAbandoned>,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream")
            .field("length", &self.length)
            .field("finished", &self.finished)
            .finish()
    }
}

/// The writing end of a streamed body. Dropping it ends the body normally;
/// [`BodySink::abort`] ends it with an error.
pub struct BodySink {
    chunks: Sender,
}

impl std::fmt::Debug for BodySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodySink").finish_non_exhaustive()
    }
}

/// A sink and its stream; `length` is the total, when known.
pub fn channel(length: Option<u64>) -> (BodySink, BodyStream) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (
        BodySink {
            chunks: Sender::Bounded(tx),
        },
        BodyStream::new(Pieces::Bounded(rx), length),
    )
}

/// A channel for a body fed from the pipe: never full, because the peer may
/// not put more than the window in flight (the pipe checks that in bytes).
pub(crate) fn unbounded_channel(length: Option<u64>) -> (BodySink, BodyStream) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        BodySink {
            chunks: Sender::Unbounded(tx),
        },
        BodyStream::new(Pieces::Unbounded(rx), length),
    )
}

impl BodySink {
    /// Hands one piece to the reader, waiting while the channel is full.
    /// `Err` means the reader is gone: stop producing.
    pub async fn send(&self, data: Bytes) -> Result<(), ReaderGone> {
        match &self.chunks {
            Sender::Bounded(tx) => tx.send(Ok(data)).await.map_err(|_| ReaderGone),
            Sender::Unbounded(tx) => tx.send(Ok(data)).map_err(|_| ReaderGone),
        }
    }

    /// Hands one piece over without waiting (pipe-fed bodies only, whose
    /// channel never fills).
    pub(crate) fn push(&self, data: Bytes) -> Result<(), ReaderGone> {
        match &self.chunks {
            Sender::Unbounded(tx) => tx.send(Ok(data)).map_err(|_| ReaderGone),
            Sender::Bounded(tx) => tx.try_send(Ok(data)).map_err(|_| ReaderGone),
        }
    }

    /// Ends the body with `error` instead of a normal end.
    pub fn abort(self, error: BodyError) {
        // A full bounded channel: the reader learns from the missing end.
        let _ = match &self.chunks {
            Sender::Bounded(tx) => tx.try_send(Err(error)).map_err(|_| ()),
            Sender::Unbounded(tx) => tx.send(Err(error)).map_err(|_| ()),
        };
    }

    /// Whether the reader has gone away.
    pub fn is_closed(&self) -> bool {
        match &self.chunks {
            Sender::Bounded(tx) => tx.is_closed(),
            Sender::Unbounded(tx) => tx.is_closed(),
        }
    }
}

/// The reading end of a body is gone: stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderGone;

impl BodyStream {
    fn new(chunks: Pieces, length: Option<u64>) -> Self {
        Self {
            chunks,
            length,
            finished: false,
            on_consumed: None,
            on_abandoned: None,
        }
    }

    /// A stream of exactly `data`.
    pub fn from_bytes(data: Bytes) -> Self {
        let length = data.len() as u64;
        let (sink, stream) = unbounded_channel(Some(length));
        if !data.is_empty() {
            // Cannot fail: the reader is right here.
            let _ = sink.push(data);
        }
        stream
    }

    /// A body read straight from `source`, polled by whoever reads the
    /// body: no task, no channel, nothing read ahead of the reader. An `Err`
    /// piece ends the body with that error; `length` is the total, when
    /// known.
    pub fn from_stream<S>(source: S, length: Option<u64>) -> Self
    where
        S: futures_util::Stream<Item = Result<Bytes, BodyError>> + Send + Sync + 'static,
    {
        Self::new(Pieces::Source(Box::pin(source)), length)
    }

    /// The total length, when the producer said.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The next piece; `None` at the end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(self.chunks.poll_recv(cx));
        match &item {
            Some(Ok(data)) => {
                if let Some(on_consumed) = self.on_consumed.as_mut() {
                    on_consumed(data.len());
                }
            }
            Some(Err(_)) | None => self.finished = true,
        }
        Poll::Ready(item)
    }

    /// Reads the whole body, failing past `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, BodyError> {
        if self.length.is_some_and(|length| length > limit as u64) {
            return Err(BodyError::TooLarge {
                limit: limit as u64,
            });
        }
        let mut whole = bytes::BytesMut::new();
        while let Some(piece) = self.chunk().await {
            let piece = piece?;
            if whole.len() + piece.len() > limit {
                return Err(BodyError::TooLarge {
                    limit: limit as u64,
                });
            }
            if whole.is_empty() && self.finished_after_peek() {
                // A single piece: no copy.
                return Ok(piece);
            }
            whole.extend_from_slice(&piece);
        }
        Ok(whole.freeze())
    }

    /// Reads the whole body, failing past `limit` bytes or when holding it
    /// would pass `budget`; what it holds stays counted until the [`Held`]
    /// is dropped. A body announced larger than the budget could ever hold
    /// is refused before any of it is read. Bytes are charged as they are
    /// collected, not reserved: the pieces not yet read are already counted
    /// where they wait (a pipe-fed body's window).
    pub async fn collect_within(
        mut self,
        limit: usize,
        budget: &Arc<MemoryBudget>,
    ) -> Result<(Bytes, Held), BodyError> {
        let too_large = BodyError::TooLarge {
            limit: limit as u64,
        };
        if let Some(length) = self.length {
            if length > limit as u64 {
                return Err(too_large);
            }
            // Could never fit: say so now, not after the transfer.
            let wanted = usize::try_from(length).unwrap_or(usize::MAX);
            budget.could_ever_hold(wanted)?;
        }
        let held = budget.hold_nothing();
        let mut whole = bytes::BytesMut::new();
        while let Some(piece) = self.chunk().await {
            let piece = piece?;
            let total = whole.len() + piece.len();
            if total > limit {
                return Err(too_large);
            }
            held.grow(piece.len())?;
            if whole.is_empty() && self.finished_after_peek() {
                // A single piece: no copy.
                return Ok((piece, held));
            }
            whole.extend_from_slice(&piece);
        }
        Ok((whole.freeze(), held))
    }

    /// Whether the stream has ended, without consuming anything new.
    fn finished_after_peek(&mut self) -> bool {
        // `try_recv` would consume; an empty, closed channel is the end.
        self.chunks.is_drained()
    }

    pub(crate) fn set_on_consumed(&mut self, on_consumed: OnConsumed) {
        self.on_consumed = Some(on_consumed);
    }

    pub(crate) fn set_on_abandoned(&mut self, on_abandoned: OnAbandoned) {
        self.on_abandoned = Some(on_abandoned);
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        if !self.finished
            && let Some(on_abandoned) = self.on_abandoned.take()
        {
            on_abandoned();
        }
    }
}

impl futures_util::Stream for BodyStream {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pieces_arrive_in_order_and_the_sink_dropping_ends_the_body() {
        let (sink, stream) = channel(None);
        let producer = tokio::spawn(async move {
            for i in 0..100u8 {
                sink.send(Bytes::from(vec![i; 1000])).await.unwrap();
            }
        });
        let whole = stream.collect(1_000_000).await.unwrap();
        producer.await.unwrap();
        assert_eq!(whole.len(), 100_000);
        assert!(
            whole
                .chunks(1000)
                .enumerate()
                .all(|(i, c)| c.iter().all(|b| *b as usize == i))
        );
    }

    #[tokio::test]
    async fn collect_enforces_the_limit_and_aborts_carry_their_reason() {
        let stream = BodyStream::from_bytes(Bytes::from(vec![1; 10]));
        assert_eq!(
            stream.collect(9).await,
            Err(BodyError::TooLarge { limit: 9 })
        );
        let (sink, stream) = channel(None);
        sink.send(Bytes::from_static(b"part")).await.unwrap();
        sink.abort(BodyError::Aborted("connection lost".into()));
        assert_eq!(
            stream.collect(100).await,
            Err(BodyError::Aborted("connection lost".into()))
        );
    }

    #[tokio::test]
    async fn consumption_and_abandonment_are_reported() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let consumed = Arc::new(AtomicUsize::new(0));
        let abandoned = Arc::new(AtomicBool::new(false));
        let (sink, mut stream) = channel(None);
        let counter = consumed.clone();
        stream.set_on_consumed(Box::new(move |n| {
            counter.fetch_add(n, Ordering::SeqCst);
        }));
        let flag = abandoned.clone();
        stream.set_on_abandoned(Box::new(move || flag.store(true, Ordering::SeqCst)));
        sink.send(Bytes::from_static(b"12345")).await.unwrap();
        assert_eq!(stream.chunk().await.unwrap().unwrap().len(), 5);
        assert_eq!(consumed.load(Ordering::SeqCst), 5);
        drop(stream);
        assert!(abandoned.load(Ordering::SeqCst), "dropped before the end");
        assert!(sink.is_closed());
    }

    #[tokio::test]
    async fn a_source_is_read_in_place_one_piece_per_read_and_its_error_ends_the_body() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let produced = Arc::new(AtomicUsize::new(0));
        let counter = produced.clone();
        let pieces = (0..3u8).map(move |i| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::from(vec![i; 4]))
        });
        let mut stream = BodyStream::from_stream(futures_util::stream::iter(pieces), Some(12));
        assert_eq!(stream.length(), Some(12));
        assert_eq!(produced.load(Ordering::SeqCst), 0, "nothing read ahead");
        assert_eq!(stream.chunk().await, Some(Ok(Bytes::from(vec![0; 4]))));
        assert_eq!(produced.load(Ordering::SeqCst), 1, "one piece per read");
        assert_eq!(
            stream.collect(100).await,
            Ok(Bytes::from(vec![1, 1, 1, 1, 2, 2, 2, 2]))
        );

        let failing = futures_util::stream::iter([
            Ok(Bytes::from_static(b"part")),
            Err(BodyError::Aborted("upload cut".into())),
            Ok(Bytes::from_static(b"never read")),
        ]);
        let mut stream = BodyStream::from_stream(failing, None);
        assert_eq!(stream.chunk().await, Some(Ok(Bytes::from_static(b"part"))));
        assert_eq!(
            stream.chunk().await,
            Some(Err(BodyError::Aborted("upload cut".into())))
        );
        assert_eq!(stream.chunk().await, None, "the error was the end");
    }
}
