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
use http_body_util::{BodyExt, BodyStream as HttpBodyStream};
use restpipe_tests::bulk::{SIZE, bulk_handlers, expected_hash, peak_rss, pieces, post_streamed};
use restpipe_tests::{
    NodeSettings, Pipe, Pki, Registry, Side, connect_client_with, eventually, fast_settings, get,
    http_client, send_with, start_server,
};

const CLIENT: &str = "bulk-client";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_six_mebibytes_each_way_in_bounded_memory() {
    let pki = Pki::new();
    let settings = NodeSettings {
        max_body_bytes: 1 << 30,
        ..fast_settings()
    };
    let server = start_server(&pki, bulk_handlers(Side::Server), settings.clone()).await;
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
    let Pipe { server, client, .. } = Pipe::start(
        bulk_handlers(Side::Server),
        fast_settings(),
        CLIENT,
        Registry::new(),
    )
    .await;
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
    let server = start_server(&pki, bulk_handlers(Side::Server), fast_settings()).await;
    let client = connect_client_with(&pki, &server, CLIENT, Registry::new(), limited).await;
    let response = post_streamed(&client.url("/server/sink"), 0..8).await;
    assert_eq!(response.status(), 413);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("exceeds the limit of 1048576 bytes"));
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
}
