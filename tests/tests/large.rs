//! Large bodies through the pipe: 256 MiB up and 256 MiB down, byte for
//! byte (hashed on both ends), in bounded memory (the process's peak RSS,
//! VmHWM, which covers both in-process nodes and the test's own client), with
//! small requests on the same connection completing during the transfer.
//! Its own test binary, so no other test's memory counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, BodyStream as HttpBodyStream, StreamBody};
use hyper::body::{Frame, Incoming};
use restpipe_tests::{
    HandlerError, NodeSettings, Pipe, Pki, Registry, Reply, Request, Side, body,
    connect_client_with, eventually, fast_settings, get, http_client, send_with, start_server,
};
use serde_json::json;

const SIZE: u64 = 256 * 1024 * 1024;
const PIECE: usize = 256 * 1024;
const CLIENT: &str = "bulk-client";

/// Piece `i` of a deterministic body (every byte depends on its offset).
fn piece(i: u64) -> Bytes {
    let mut data = vec![0u8; PIECE];
    for (j, byte) in data.iter_mut().enumerate() {
        let offset = i * PIECE as u64 + j as u64;
        *byte = (offset.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    Bytes::from(data)
}

fn pieces() -> u64 {
    SIZE / PIECE as u64
}

fn expected_hash() -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for i in 0..pieces() {
        hasher.write(&piece(i));
    }
    hasher.finish()
}

/// This process's peak resident memory, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// POSTs pieces `range` to `url` as a streamed body of unknown length
/// (chunked).
async fn post_streamed(url: &str, range: std::ops::Range<u64>) -> http::Response<Incoming> {
    let upload = futures_util::stream::iter(range)
        .map(|i| Ok::<_, std::convert::Infallible>(Frame::data(piece(i))));
    let request = http::Request::post(url)
        .body(StreamBody::new(upload))
        .unwrap();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(request)
        .await
        .unwrap()
}

fn bulk_handlers() -> Registry {
    let mut handlers = Registry::with_examples(Side::Server);
    // Reads the upload as it arrives and answers its size and hash.
    handlers.register_streaming("post_sink", |mut request: Request| async move {
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
    });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_six_mebibytes_each_way_in_bounded_memory() {
    let pki = Pki::new();
    let settings = NodeSettings {
        max_body_bytes: 1 << 30,
        ..fast_settings()
    };
    let server = start_server(&pki, bulk_handlers(), settings.clone()).await;
    let client = connect_client_with(&pki, &server, CLIENT, Registry::new(), settings).await;
    let expected = tokio::task::spawn_blocking(expected_hash).await.unwrap();
    let before = peak_rss();

    // Small requests on the same connection, all through the transfers.
    let transferring = Arc::new(AtomicUsize::new(1));
    let prober = {
        let url = client.url("/server/time");
        let transferring = transferring.clone();
        tokio::spawn(async move {
            let http = http_client();
            let mut latencies = Vec::new();
            while transferring.load(Ordering::SeqCst) == 1 {
                let started = Instant::now();
                let reply = send_with(&http, "GET", &url, &[], Bytes::new()).await;
                assert_eq!(reply.status, 200);
                latencies.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        })
    };

    // Up: a streamed request body of unknown length (chunked).
    let started = Instant::now();
    let response = post_streamed(&client.url("/server/sink"), 0..pieces()).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let up = started.elapsed();
    assert_eq!(answer["size"], SIZE);
    assert_eq!(
        answer["hash"],
        expected.to_string(),
        "upload changed in transit"
    );

    // Down: a streamed reply body, read as it arrives.
    let started = Instant::now();
    let response = http_client()
        .get(client.url("/server/source").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut size = 0u64;
    let mut frames = HttpBodyStream::new(response.into_body());
    while let Some(frame) = frames.next().await {
        if let Ok(data) = frame.unwrap().into_data() {
            size += data.len() as u64;
            hasher.write(&data);
        }
    }
    let down = started.elapsed();
    assert_eq!(size, SIZE);
    assert_eq!(hasher.finish(), expected, "download changed in transit");

    transferring.store(0, Ordering::SeqCst);
    let latencies = prober.await.unwrap();
    let grown = peak_rss().saturating_sub(before);
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "256 MiB up in {up:?}, down in {down:?}; peak RSS grew {} MiB; {} small requests meanwhile, slowest {slowest:?}",
        grown >> 20,
        latencies.len()
    );
    assert!(
        grown < 96 << 20,
        "peak memory grew by {} MiB for 512 MiB moved",
        grown >> 20
    );
    assert!(
        latencies.len() >= 5,
        "small requests did not get through during the transfers"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a small request took {slowest:?} during the transfer"
    );
}

#[tokio::test]
async fn an_abandoned_download_frees_the_far_side_at_once() {
    let Pipe { server, client, .. } =
        Pipe::start(bulk_handlers(), fast_settings(), CLIENT, Registry::new()).await;
    let response = http_client()
        .get(
            server
                .url(&format!("/client/{CLIENT}/time"))
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    drop(response);
    let response = http_client()
        .get(client.url("/server/source").parse().unwrap())
        .await
        .unwrap();
    let mut frames = HttpBodyStream::new(response.into_body());
    let _first = frames.next().await.unwrap().unwrap();
    let peer = server.running.node().peers().get(CLIENT).unwrap();
    assert_eq!(peer.in_flight_in(), 1, "the download is in progress");
    drop(frames);
    eventually(Duration::from_secs(2), "the far side stops sending", || {
        peer.in_flight_in() == 0
    })
    .await;
    // The connection is fine.
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
}

#[tokio::test]
async fn an_upload_of_unknown_length_past_the_limit_is_413() {
    let pki = Pki::new();
    let limited = NodeSettings {
        max_body_bytes: 1 << 20,
        ..fast_settings()
    };
    let server = start_server(&pki, bulk_handlers(), fast_settings()).await;
    let client = connect_client_with(&pki, &server, CLIENT, Registry::new(), limited).await;
    let response = post_streamed(&client.url("/server/sink"), 0..8).await;
    assert_eq!(response.status(), 413);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("exceeds the limit of 1048576 bytes"));
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
}
