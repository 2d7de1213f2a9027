//! 256 MiB up and 256 MiB down through a forward across the cluster
//! (caller → node s2 → NATS → node s1 → client), byte for byte, in bounded
//! memory: the process's peak RSS (VmHWM) covers both server nodes, the
//! client and the test's own HTTP client. Its own test binary, so no other
//! test's memory counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use http_body_util::BodyExt as _;
use restpipe_tests::bulk::{
    SIZE, bulk_handlers, download, expected_hash, peak_rss, pieces, post_streamed,
};
use restpipe_tests::cluster::ClusterSettings;
use restpipe_tests::nodes::start_server_with;
use restpipe_tests::{
    Nats, NodeSettings, Pki, Registry, Side, connect_client_with, fast_settings, init_logging,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_six_mebibytes_each_way_across_the_backplane_in_bounded_memory() {
    init_logging();
    let pki = Pki::new();
    let nats = Nats::start(&pki, 1).await;
    let node = |node_id: &str| NodeSettings {
        max_body_bytes: 1 << 30,
        cluster: Some(ClusterSettings {
            urls: nats.urls(),
            name: "large".to_owned(),
            node_id: node_id.to_owned(),
            tls: Some(nats.tls()),
        }),
        ..fast_settings()
    };
    let s1 = start_server_with(pki.server(), Registry::new(), node("s1")).await;
    let s2 = start_server_with(pki.server(), Registry::new(), node("s2")).await;
    let client_settings = NodeSettings {
        max_body_bytes: 1 << 30,
        ..fast_settings()
    };
    let _client = connect_client_with(
        &pki,
        &s1,
        "bulk",
        bulk_handlers(Side::Client),
        client_settings,
    )
    .await;
    let expected = tokio::task::spawn_blocking(expected_hash).await.unwrap();
    let before = peak_rss();

    let started = Instant::now();
    let response = post_streamed(&s2.url("/client/bulk/sink"), 0..pieces()).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let up = started.elapsed();
    assert_eq!(answer["size"], SIZE, "{answer}");
    assert_eq!(
        answer["hash"],
        expected.to_string(),
        "upload changed in transit"
    );

    let started = Instant::now();
    let (status, size, hash) = download(&s2.url("/client/bulk/source")).await;
    let down = started.elapsed();
    assert_eq!((status, size), (200, SIZE));
    assert_eq!(hash, expected, "download changed in transit");

    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "256 MiB up in {up:?}, down in {down:?} across the backplane; peak RSS grew {} MiB",
        grown >> 20
    );
    assert!(
        grown < 128 << 20,
        "peak memory grew by {} MiB for 512 MiB moved",
        grown >> 20
    );
}
