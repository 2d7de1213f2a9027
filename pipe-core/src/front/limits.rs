//! Bounds on what a local caller can hold: a cap on open connections (past
//! it, a short 503 and close) and a write-stall limit on each connection (a
//! caller that stops reading a response is cut off, which drops the reply
//! stream and with it the far handler, its upstream and its admission slot).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

/// What a caller past the connection cap reads before the close.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
connection: close\r\n\
content-length: 68\r\n\
\r\n\
{\"error\":\"too many local HTTP connections are open; try again soon\"}";

/// Longest the 503 for a connection past the cap may take to write.
const REFUSAL_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// Most refusals being written at once; past it (a flood of connections)
/// a connection is closed without a word, so refusing costs bounded tasks
/// and descriptors too.
const REFUSALS_AT_ONCE: usize = 64;

/// Turns away connections past the cap.
pub(super) struct Refusals(Arc<Semaphore>);

impl Refusals {
    /// Nothing being refused yet.
    pub(super) fn new() -> Self {
        Self(Arc::new(Semaphore::new(REFUSALS_AT_ONCE)))
    }

    /// Answers `io` with 503 and closes it, in the background and within
    /// [`REFUSAL_WRITE_LIMIT`]; just closes it when [`REFUSALS_AT_ONCE`]
    /// are already being written.
    pub(super) fn refuse<T: AsyncWrite + Unpin + Send + 'static>(&self, mut io: T) {
        let Ok(slot) = self.0.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_WRITE_LIMIT, async {
                io.write_all(REFUSAL).await?;
                io.shutdown().await
            })
            .await;
            drop(slot);
        });
    }
}

/// A connection whose writes fail with `TimedOut` once the caller has taken
/// nothing for `limit`.
pub(super) struct WriteStall<T> {
    inner: T,
    limit: Duration,
    /// Running while a write (or flush) waits on the caller.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteStall<T> {
    /// Wraps `inner`, allowing writes to wait on the caller for `limit`.
    pub(super) fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Notes the outcome of a write: progress resets the clock; waiting
    /// runs it, and an expired clock is the error.
    fn watch<R>(
        &mut self,
        polled: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the caller took none of the response for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(polled, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn the_refusal_is_one_whole_response() {
        let text = std::str::from_utf8(REFUSAL).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).expect("JSON");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_stops_reading_is_cut_off_after_the_limit() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut guarded = WriteStall::new(near, Duration::from_secs(5));
        let chunk = vec![7u8; 512];
        // The caller reads for a while: writes go on however long it takes.
        for _ in 0..20 {
            guarded.write_all(&chunk).await.expect("the caller reads");
            tokio::time::sleep(Duration::from_secs(4)).await;
            let mut taken = vec![0u8; 512];
            far.read_exact(&mut taken).await.expect("taken");
        }
        // Then it stops: the buffer fills and the write fails at the limit.
        let started = tokio::time::Instant::now();
        let error = guarded
            .write_all(&vec![7u8; 4096])
            .await
            .expect_err("cut off");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
