//! The upstream's answer as the reply's streamed body, read from hyper's
//! `Incoming` in place by whichever task reads the reply (the link's
//! sender, as the peer grants window). No task of its own and nothing read
//! ahead; the upstream's connection place is held until the body ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyDataStream, BodyExt as _};
use hyper::body::{Body, Incoming};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::wire::body::{BodyError, BodyStream};
use crate::wire::cause_chain;

/// Reads `body` from `upstream` as a reply's body: it ends with an error if
/// the upstream fails mid-body, stays silent for `idle` while the body's
/// reader waits for it, or the caller gives up (`cancelled`). `place` is
/// released when the body ends or is dropped.
pub(super) fn download(
    body: Incoming,
    cancelled: CancellationToken,
    idle: Duration,
    upstream: String,
    place: OwnedSemaphorePermit,
) -> BodyStream {
    let length = body.size_hint().exact();
    let download = Download {
        data: body.into_data_stream(),
        cancelled: Box::pin(cancelled.cancelled_owned()),
        idle,
        silence: Box::pin(tokio::time::sleep(idle)),
        waiting: false,
        upstream,
        place: Some(place),
    };
    BodyStream::from_stream(download, length)
}

struct Download {
    /// The answer's data pieces (trailers skipped).
    data: BodyDataStream<Incoming>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    idle: Duration,
    /// Runs out `idle` after the reader began waiting for the next piece.
    silence: Pin<Box<Sleep>>,
    /// Whether the reader is waiting for a piece (and `silence` runs): the
    /// time the reader takes between pieces is not the upstream's silence.
    waiting: bool,
    upstream: String,
    place: Option<OwnedSemaphorePermit>,
}

impl Download {
    /// The end of the body: with `item`, and the upstream's place released.
    fn end(
        &mut self,
        item: Option<Result<Bytes, BodyError>>,
    ) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.place = None;
        Poll::Ready(item)
    }
}

impl futures_util::Stream for Download {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.place.is_none() {
            return Poll::Ready(None); // ended already
        }
        if this.cancelled.as_mut().poll(cx).is_ready() {
            let gave_up = "the caller gave up before the upstream's answer ended";
            return this.end(Some(Err(BodyError::Aborted(gave_up.to_owned()))));
        }
        loop {
            let piece = match this.data.poll_next_unpin(cx) {
                Poll::Ready(piece) => piece,
                Poll::Pending => {
                    if !this.waiting {
                        this.waiting = true;
                        let until = Instant::now() + this.idle;
                        this.silence.as_mut().reset(until);
                    }
                    if this.silence.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let silent = format!(
                        "upstream {} sent nothing for {:?}",
                        this.upstream, this.idle
                    );
                    return this.end(Some(Err(BodyError::Aborted(silent))));
                }
            };
            this.waiting = false;
            return match piece {
                None => this.end(None),
                Some(Err(error)) => {
                    let failed = format!(
                        "upstream {} failed mid-body: {}",
                        this.upstream,
                        cause_chain(&error)
                    );
                    this.end(Some(Err(BodyError::Aborted(failed))))
                }
                Some(Ok(data)) if data.is_empty() => continue,
                Some(Ok(data)) => Poll::Ready(Some(Ok(data))),
            };
        }
    }
}
