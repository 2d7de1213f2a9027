//! The write deadline: a peer that accepts no byte for `dead_after` while we
//! have something to write is dead, however much it sends us. The socket's
//! write half is wrapped in [`Progress`], which stamps a shared
//! [`WriteClock`] whenever bytes go out; the writer races each batch against
//! [`WriteClock::stalled`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::{Instant, sleep_until};

/// When bytes last went out on a connection.
#[derive(Debug)]
pub(super) struct WriteClock {
    base: Instant,
    /// Milliseconds after `base` of the last progress.
    last_ms: AtomicU64,
}

impl WriteClock {
    pub(super) fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records progress now (or the start of a write, which counts as such:
    /// an idle connection has nothing to be late with).
    pub(super) fn mark(&self) {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Release);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }

    /// Resolves once nothing went out for `dead_after`.
    pub(super) async fn stalled(&self, dead_after: Duration) {
        loop {
            let dead_at = self.last() + dead_after;
            if Instant::now() >= dead_at {
                return;
            }
            sleep_until(dead_at).await;
        }
    }
}

/// A writer that stamps its [`WriteClock`] whenever it makes progress.
#[derive(Debug)]
pub(super) struct Progress<W> {
    inner: W,
    clock: Arc<WriteClock>,
}

impl<W> Progress<W> {
    pub(super) fn new(inner: W, clock: Arc<WriteClock>) -> Self {
        Self { inner, clock }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Progress<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.mark();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.mark();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
