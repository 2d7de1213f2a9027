//! The frame sink: frames encoded into a write buffer and written out in
//! order. A large payload is not copied into the buffer: it is written from
//! its own memory, between the encoded bytes around it, in one vectored
//! write (see `wire::encode`). Small frames only, the usual case, are one
//! buffer written as it is.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::wire::proto::frame::Body;
use crate::wire::{FrameCodec, FrameError};

/// Slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Writes frames to `W`.
#[derive(Debug)]
pub(super) struct FrameSink<W> {
    io: W,
    codec: FrameCodec,
    /// Encoded bytes not yet moved to `out`.
    buffer: BytesMut,
    /// What goes out before `buffer`'s bytes: encoded bytes and the payloads
    /// that follow them, in order. Empty unless a large payload was fed.
    out: VecDeque<Bytes>,
}

impl<W: AsyncWrite + Unpin> FrameSink<W> {
    /// A sink whose write buffer starts at `capacity` bytes.
    pub(super) fn new(io: W, codec: FrameCodec, capacity: usize) -> Self {
        Self {
            io,
            codec,
            buffer: BytesMut::with_capacity(capacity),
            out: VecDeque::new(),
        }
    }

    /// Encodes with `codec` from now on.
    pub(super) fn set_codec(&mut self, codec: FrameCodec) {
        self.codec = codec;
    }

    /// The writer underneath.
    pub(super) fn get_mut(&mut self) -> &mut W {
        &mut self.io
    }

    /// Queues `body`, to be written by the next flush. A frame over the
    /// limit is refused and leaves nothing behind.
    pub(super) fn feed(&mut self, body: Body) -> Result<(), FrameError> {
        if let Some(payload) = self.codec.encode_split(body, &mut self.buffer)? {
            self.out.push_back(self.buffer.split().freeze());
            self.out.push_back(payload);
        }
        Ok(())
    }

    /// Queues `body` and flushes.
    pub(super) async fn send(&mut self, body: Body) -> Result<(), FrameError> {
        self.feed(body)?;
        self.flush().await
    }

    /// Writes everything queued and flushes the writer underneath.
    pub(super) async fn flush(&mut self) -> Result<(), FrameError> {
        if !self.out.is_empty() && !self.buffer.is_empty() {
            self.out.push_back(self.buffer.split().freeze());
        }
        poll_fn(|cx| self.poll_write_all(cx)).await?;
        poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx)).await?;
        Ok(())
    }

    fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Self {
            io, buffer, out, ..
        } = self;
        while !out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slice, piece) in slices.iter_mut().zip(out.iter()) {
                *slice = IoSlice::new(piece);
                count += 1;
            }
            let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            consume(out, written);
        }
        while !buffer.is_empty() {
            let written = ready!(Pin::new(&mut *io).poll_write(cx, buffer))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            buffer.advance(written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<W> FrameSink<W> {
    /// Bytes queued and not yet written.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.buffer.len() + self.out.iter().map(Bytes::len).sum::<usize>()
    }

    /// Gives back a write buffer that traffic grew to `capacity`, when
    /// nothing is queued in it.
    pub(super) fn shrink_buffer(&mut self, capacity: usize) {
        if self.buffer.is_empty() && self.out.is_empty() && self.buffer.capacity() > capacity {
            self.buffer = BytesMut::with_capacity(capacity);
        }
    }
}

/// Drops the first `written` bytes of `out`.
fn consume(out: &mut VecDeque<Bytes>, mut written: usize) {
    while written > 0 {
        let Some(front) = out.front_mut() else {
            return;
        };
        if written < front.len() {
            front.advance(written);
            return;
        }
        written -= front.len();
        out.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::{Bytes, BytesMut};
    use tokio_util::codec::Decoder;

    use super::FrameSink;
    use crate::wire::FrameCodec;
    use crate::wire::proto::{Chunk, Ping, frame::Body};

    /// A writer that takes at most `step` bytes per write (vectored or
    /// not) and keeps them, as a slow socket would.
    struct Trickle {
        step: usize,
        got: Vec<u8>,
        writes: usize,
    }

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut left = self.step;
            for buf in bufs {
                let n = buf.len().min(left);
                self.got.extend_from_slice(&buf[..n]);
                left -= n;
            }
            self.writes += 1;
            Poll::Ready(Ok(self.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn chunk(id: u64, data: Bytes) -> Body {
        Body::Chunk(Chunk {
            request_id: id,
            data,
            ..Default::default()
        })
    }

    /// Small and large frames mixed, each large payload of its own bytes.
    fn mixed() -> Vec<Body> {
        let mut frames = Vec::new();
        for i in 0..20u64 {
            frames.push(Body::Ping(Ping { nonce: i }));
            let large = Bytes::from(vec![i as u8; 5000 + i as usize * 997]);
            frames.push(chunk(i, large));
            frames.push(chunk(100 + i, Bytes::from(vec![1; i as usize])));
        }
        frames
    }

    #[tokio::test]
    async fn frames_come_out_whole_and_in_order_whatever_each_write_takes() {
        for step in [1, 7, 4096, 1 << 20] {
            let frames = mixed();
            let trickle = Trickle {
                step,
                got: Vec::new(),
                writes: 0,
            };
            let mut sink = FrameSink::new(trickle, FrameCodec::default(), 512);
            // Fed in batches of a few, flushed after each.
            for batch in frames.chunks(5) {
                for body in batch {
                    sink.feed(body.clone()).unwrap();
                }
                sink.flush().await.unwrap();
                assert_eq!(sink.queued(), 0);
            }
            let mut wire = BytesMut::from(&sink.get_mut().got[..]);
            let mut codec = FrameCodec::default();
            let mut decoded = Vec::new();
            while let Some(body) = codec.decode(&mut wire).unwrap() {
                decoded.push(body);
            }
            assert!(wire.is_empty(), "bytes left over at step {step}");
            assert_eq!(decoded, frames, "at step {step}");
        }
    }

    #[tokio::test]
    async fn a_batch_with_large_payloads_goes_out_in_one_vectored_write() {
        let trickle = Trickle {
            step: usize::MAX / 2,
            got: Vec::new(),
            writes: 0,
        };
        let mut sink = FrameSink::new(trickle, FrameCodec::default(), 512);
        for body in mixed().into_iter().take(12) {
            sink.feed(body).unwrap();
        }
        sink.flush().await.unwrap();
        assert_eq!(sink.get_mut().writes, 1);
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_and_the_others_still_go_out() {
        let trickle = Trickle {
            step: 1 << 20,
            got: Vec::new(),
            writes: 0,
        };
        let mut sink = FrameSink::new(trickle, FrameCodec::new(8 * 1024), 512);
        sink.feed(Body::Ping(Ping { nonce: 1 })).unwrap();
        assert!(sink.feed(chunk(1, Bytes::from(vec![0; 9000]))).is_err());
        sink.feed(chunk(2, Bytes::from(vec![2; 5000]))).unwrap();
        sink.flush().await.unwrap();
        let mut wire = BytesMut::from(&sink.get_mut().got[..]);
        let mut codec = FrameCodec::new(8 * 1024);
        assert_eq!(
            codec.decode(&mut wire).unwrap(),
            Some(Body::Ping(Ping { nonce: 1 }))
        );
        assert_eq!(
            codec.decode(&mut wire).unwrap(),
            Some(chunk(2, Bytes::from(vec![2; 5000])))
        );
        assert!(wire.is_empty());
    }

    #[test]
    fn a_grown_buffer_is_given_back_only_when_nothing_is_queued() {
        let mut sink = FrameSink::new(tokio::io::sink(), FrameCodec::default(), 256 * 1024);
        sink.shrink_buffer(512);
        assert_eq!(sink.buffer.capacity(), 512);

        // Bytes not yet written stay where they are, whatever the size.
        let mut pending = BytesMut::with_capacity(256 * 1024);
        pending.extend_from_slice(b"unsent");
        sink.buffer = pending;
        sink.shrink_buffer(512);
        assert_eq!(&sink.buffer[..], b"unsent");
        assert!(sink.buffer.capacity() >= 256 * 1024 - 6);
    }
}
