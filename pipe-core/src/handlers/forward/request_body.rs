//! The event's body as the body of the upstream request: streamed as it
//! arrives through the pipe, with its length when the caller gave one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::wire::body::{BodyError, BodyStream};

/// The event's body as the body of the upstream request: streamed, with
/// its exact length when the sender gave one (so the upstream gets
/// `Content-Length`, and a bodiless `GET` no body at all).
pub(super) struct UpstreamBody {
    stream: Option<BodyStream>,
    /// Bytes still to come, when known.
    remaining: Option<u64>,
}

impl UpstreamBody {
    /// The body of a request carrying `stream` (none: an empty body).
    pub(super) fn new(stream: Option<BodyStream>) -> Self {
        let remaining = stream.as_ref().map_or(Some(0), BodyStream::length);
        Self { stream, remaining }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let piece = std::task::ready!(futures_util::Stream::poll_next(Pin::new(stream), cx));
        match piece {
            Some(Ok(data)) => {
                if let Some(remaining) = this.remaining.as_mut() {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(error)) => {
                this.stream = None;
                Poll::Ready(Some(Err(error)))
            }
            None => {
                this.stream = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none() || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn request_bodies_keep_their_length() {
        let empty = UpstreamBody::new(Some(BodyStream::from_bytes(Bytes::new())));
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        let mut some = UpstreamBody::new(Some(BodyStream::from_bytes(Bytes::from_static(b"abc"))));
        assert_eq!(some.size_hint().exact(), Some(3));
        let frame = some.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), &b"abc"[..]);
        assert!(some.is_end_stream());
        let (_sink, stream) = crate::wire::body::channel(None);
        assert_eq!(UpstreamBody::new(Some(stream)).size_hint().exact(), None);
    }
}
