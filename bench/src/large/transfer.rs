//! One transfer through the client node's front: a POST of zeros to the
//! server node's `post_sink`, or a GET from its `get_source`, counted as
//! it arrives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, SizeHint};
use tokio::time::Instant;

use super::Direction;
use crate::probe;
use crate::raw_copy::CHUNK_BYTES;

/// How a transfer ended.
pub(super) enum Transfer {
    /// Every byte arrived; how long it took.
    Done(Duration),
    /// The pipe refused or broke it: status and message.
    Failed(String),
}

/// [`transfer`] within `bound`: how long it took, or why it did not end
/// whole.
pub(super) async fn bounded_transfer(
    direction: Direction,
    addr: SocketAddr,
    bytes: u64,
    bound: Duration,
) -> Result<Duration, String> {
    match tokio::time::timeout(bound, transfer(direction, addr, bytes, bound)).await {
        Ok(Ok(Transfer::Done(elapsed))) => Ok(elapsed),
        Ok(Ok(Transfer::Failed(why))) => Err(why),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(_) => Err(format!("not finished within {bound:?}")),
    }
}

/// One transfer through the client node's front at `addr`.
async fn transfer(
    direction: Direction,
    addr: SocketAddr,
    bytes: u64,
    bound: Duration,
) -> anyhow::Result<Transfer> {
    let timeout_header = bound.as_secs().to_string();
    let host = addr.to_string();
    let started = Instant::now();
    let response = match direction {
        Direction::Post => {
            let mut sender = probe::connect::<Zeros>(addr).await?;
            let request = http::Request::post("/server/sink")
                .header(http::header::HOST, &host)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .header(http::header::CONTENT_LENGTH, bytes)
                .header("x-pipe-timeout", &timeout_header)
                .body(Zeros::new(bytes))?;
            sender.send_request(request).await?
        }
        Direction::Get => {
            let mut sender = probe::connect::<Empty<Bytes>>(addr).await?;
            let request = http::Request::get(format!("/server/source?bytes={bytes}"))
                .header(http::header::HOST, &host)
                .header("x-pipe-timeout", &timeout_header)
                .body(Empty::new())?;
            sender.send_request(request).await?
        }
    };
    let status = response.status();
    let mut body = response.into_body();
    if status != http::StatusCode::OK {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(Transfer::Failed(format!(
            "{status}: {}",
            String::from_utf8_lossy(&text)
        )));
    }
    // Count the body as it arrives; nothing is kept.
    let mut received = 0u64;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            received += data.len() as u64;
            if matches!(direction, Direction::Post) {
                kept.extend_from_slice(&data);
            }
        }
    }
    let elapsed = started.elapsed();
    let delivered = match direction {
        Direction::Get => received,
        Direction::Post => serde_json::from_slice::<serde_json::Value>(&kept)
            .ok()
            .and_then(|reply| reply["bytes"].as_u64())
            .unwrap_or(0),
    };
    if delivered != bytes {
        return Ok(Transfer::Failed(format!(
            "200 but {delivered} of {bytes} bytes arrived"
        )));
    }
    Ok(Transfer::Done(elapsed))
}

/// A request body of `left` zero bytes, handed out as slices of one shared
/// chunk: the generator itself allocates nothing per byte sent.
struct Zeros {
    left: u64,
    chunk: Bytes,
}

impl Zeros {
    fn new(bytes: u64) -> Self {
        Self {
            left: bytes,
            chunk: Bytes::from(vec![0u8; CHUNK_BYTES]),
        }
    }
}

impl hyper::body::Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let len = self.left.min(CHUNK_BYTES as u64) as usize;
        self.left -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
