//! The writer batches the frames of concurrent requests into shared
//! writes, whatever the runtime's worker count.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::*;

/// A stream that counts the writes that carried bytes.
struct Counting<S> {
    inner: S,
    writes: Arc<AtomicUsize>,
}

impl<S> Counting<S> {
    fn count(&self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.writes.fetch_add(1, AtomicOrdering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(&written);
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

/// Callers woken together while requests are in flight, after a quiet
/// spell of one request at a time, on a runtime of one worker. The writer,
/// woken straight after the first of them, used to see one frame, write it
/// alone, and go on so for each: after a spell of lone writes it did not
/// wait for the others. Under `wrk -c64` a front node on one worker made
/// 2.000 `writev`s per request, one of them the link's; now such frames
/// share writes, as they do under load on more workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn requests_woken_together_share_writes_after_a_quiet_spell() {
    const CALLERS: usize = 32;
    let server = TestInbound::default();
    let settings = ConnectionSettings::default();
    let (a, b) = tokio::io::duplex(4 * 1024 * 1024);
    let writes = Arc::new(AtomicUsize::new(0));
    let b = Counting {
        inner: b,
        writes: writes.clone(),
    };
    let mut raw = Framed::new(a, FrameCodec::new(settings.max_frame_bytes));
    raw.send(hello(PROTOCOL_VERSION)).await.unwrap();
    let server_end = endpoint(Side::Server, &server, settings);
    let (handle, _) = establish(b, &server_end, peer(Side::Client), |_| Ok(()))
        .await
        .unwrap();
    let Some(Ok(Body::Hello(_))) = raw.next().await else {
        panic!("no Hello from the server")
    };
    let timeout = Duration::from_secs(30);
    let ask = |handle: &PeerHandle| {
        let handle = handle.clone();
        async move { handle.request(echo("x", 0), timeout).await }
    };
    // A quiet spell: one request at a time, each answered.
    for _ in 0..8 {
        let request = tokio::spawn(ask(&handle));
        let Some(Body::Event(event)) = next_frame(&mut raw).await else {
            panic!("no event")
        };
        raw.send(reply_to(event.request_id)).await.unwrap();
        request.await.unwrap().unwrap();
    }
    // One request stays in flight, as under load.
    let in_flight = tokio::spawn(ask(&handle));
    let Some(Body::Event(first)) = next_frame(&mut raw).await else {
        panic!("no event")
    };
    // The callers wait for one signal, given from a task on the worker.
    let (go, ready) = tokio::sync::watch::channel(false);
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut ready = ready.clone();
            let request = ask(&handle);
            tokio::spawn(async move {
                ready.wait_for(|go| *go).await.unwrap();
                request.await
            })
        })
        .collect();
    tokio::task::yield_now().await;
    let before = writes.load(AtomicOrdering::Relaxed);
    tokio::spawn(async move { go.send(true).unwrap() })
        .await
        .unwrap();
    let mut ids = vec![first.request_id];
    while ids.len() <= CALLERS {
        let Some(Body::Event(event)) = next_frame(&mut raw).await else {
            panic!("no event")
        };
        ids.push(event.request_id);
    }
    let written = writes.load(AtomicOrdering::Relaxed) - before;
    assert!(
        written * 4 <= CALLERS,
        "{written} writes for {CALLERS} requests woken together: the writer did not batch"
    );
    for id in ids {
        raw.send(reply_to(id)).await.unwrap();
    }
    in_flight.await.unwrap().unwrap();
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
}

/// A reply with no body to request `request_id`.
fn reply_to(request_id: u64) -> Body {
    Body::Reply(proto::Reply {
        request_id,
        ..Default::default()
    })
}
