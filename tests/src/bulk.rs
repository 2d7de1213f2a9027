//! Large bodies for tests: a deterministic body of 256 MiB in pieces,
//! its hash, a streamed upload of it, handlers that hash an upload and
//! produce the body, and the process's peak memory to bound what moving it
//! costs.

use std::hash::Hasher as _;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyStream as HttpBodyStream, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::json;

use crate::{HandlerError, Registry, Reply, Request, Side, body, http_client};

/// The body's size.
pub const SIZE: u64 = 256 * 1024 * 1024;
/// The size of each piece.
pub const PIECE: usize = 256 * 1024;

/// Piece `i` of a deterministic body (every byte depends on its offset).
pub fn piece(i: u64) -> Bytes {
    let mut data = vec![0u8; PIECE];
    for (j, byte) in data.iter_mut().enumerate() {
        let offset = i * PIECE as u64 + j as u64;
        *byte = (offset.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    Bytes::from(data)
}

/// How many pieces the body has.
pub fn pieces() -> u64 {
    SIZE / PIECE as u64
}

/// The hash of the whole body.
pub fn expected_hash() -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for i in 0..pieces() {
        hasher.write(&piece(i));
    }
    hasher.finish()
}

/// This process's peak resident memory, in bytes.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status")
        * 1024
}

/// POSTs pieces `range` to `url` as a streamed body of unknown length
/// (chunked).
pub async fn post_streamed(url: &str, range: std::ops::Range<u64>) -> http::Response<Incoming> {
    let upload = futures_util::stream::iter(range)
        .map(|i| Ok::<_, std::convert::Infallible>(Frame::data(piece(i))));
    let request = http::Request::post(url)
        .body(StreamBody::new(upload))
        .expect("a request");
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(request)
        .await
        .expect("a response to the upload")
}

/// A streaming handler that reads the upload as it arrives and answers its
/// size and hash.
pub async fn sink(mut request: Request) -> Result<Reply, HandlerError> {
    let mut stream = request
        .stream
        .take()
        .expect("streaming handlers get a stream");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut size = 0u64;
    while let Some(piece) = stream.chunk().await {
        let piece = piece.map_err(|e| HandlerError::new("BodyError", e.to_string()))?;
        size += piece.len() as u64;
        hasher.write(&piece);
    }
    Ok(Reply::json(
        &json!({ "size": size, "hash": hasher.finish().to_string() }),
    ))
}

/// Handlers on `side`: `post_sink` answers an upload's size and hash,
/// `get_source` produces the whole body as it is read.
pub fn bulk_handlers(side: Side) -> Registry {
    let mut handlers = Registry::with_examples(side);
    handlers.register_streaming("post_sink", sink);
    // Produces the body as the caller reads it.
    handlers.register("get_source", |_request: Request| async move {
        let (sink, stream) = body::channel(Some(SIZE));
        tokio::spawn(async move {
            for i in 0..pieces() {
                if sink.send(piece(i)).await.is_err() {
                    return; // the reader went away
                }
            }
        });
        Ok(Reply::stream("application/octet-stream", stream))
    });
    handlers
}

/// GETs `url` and reads the body as it arrives: its status, size and hash.
pub async fn download(url: &str) -> (u16, u64, u64) {
    let response = http_client()
        .get(url.parse().expect("a URL"))
        .await
        .expect("a response");
    let status = response.status().as_u16();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut size = 0u64;
    let mut frames = HttpBodyStream::new(response.into_body());
    while let Some(frame) = frames.next().await {
        if let Ok(data) = frame.expect("the body arrives whole").into_data() {
            size += data.len() as u64;
            hasher.write(&data);
        }
    }
    (status, size, hasher.finish())
}
