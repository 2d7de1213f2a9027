//! The local caller's upload as a streamed body, read from hyper's
//! `Incoming` in place by whichever task reads the body (the link's sender,
//! as the peer grants window), and checked as it goes against the size
//! limit and the request's deadline. No task of its own and nothing read
//! ahead: each piece goes from hyper straight to the link.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyDataStream, BodyExt as _};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::wire::body::{BodyError, BodyStream};

/// Reads `incoming` as a body of `length` bytes (when declared): more than
/// `limit` bytes ends it with [`BodyError::TooLarge`] and fires
/// `too_large`; waiting for a piece past `deadline` ends it with
/// [`BodyError::Aborted`].
pub(super) fn upload(
    incoming: Incoming,
    length: Option<u64>,
    limit: usize,
    deadline: Instant,
    too_large: oneshot::Sender<()>,
) -> BodyStream {
    let upload = Upload {
        data: incoming.into_data_stream(),
        limit,
        total: 0,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        too_large: Some(too_large),
    };
    BodyStream::from_stream(upload, length)
}

struct Upload {
    /// The upload's data pieces (trailers skipped).
    data: BodyDataStream<Incoming>,
    limit: usize,
    /// Bytes read so far.
    total: usize,
    /// Registers a timer only once a piece has to be waited for.
    deadline: Pin<Box<Sleep>>,
    too_large: Option<oneshot::Sender<()>>,
}

impl futures_util::Stream for Upload {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let piece = match this.data.poll_next_unpin(cx) {
            Poll::Ready(piece) => piece,
            // A piece that is there counts even past the deadline; only
            // waiting for one does not.
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                return Poll::Ready(Some(Err(BodyError::Aborted(
                    "the upload did not arrive within the request's deadline".to_owned(),
                ))));
            }
        };
        let data = match piece {
            None => return Poll::Ready(None),
            Some(Ok(data)) => data,
            Some(Err(error)) => {
                return Poll::Ready(Some(Err(BodyError::Aborted(format!(
                    "reading the upload failed: {error}"
                )))));
            }
        };
        this.total += data.len();
        if this.total > this.limit {
            if let Some(too_large) = this.too_large.take() {
                let _ = too_large.send(());
            }
            return Poll::Ready(Some(Err(BodyError::TooLarge {
                limit: this.limit as u64,
            })));
        }
        Poll::Ready(Some(Ok(data)))
    }
}
