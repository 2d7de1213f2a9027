//! A client node told which local address to connect from
//! (`pipe-client serve --source-address 127.0.0.2`), as the operator of a
//! host with several addresses uses it: real nodes over real mutual TLS on
//! loopback, the server seeing the connection come from that address,
//! directly and through an HTTP proxy (a real tinyproxy, skipped where it
//! is not installed).
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use restpipe_tests::tinyproxy::{self, ProxyOptions, Tinyproxy};
use restpipe_tests::{
    NodeOptions, Pki, Proxies, Registry, Side, TestNode, example_server, fast_settings, get,
    start_client_to, wait_for_client,
};

/// The client node's name.
const CLIENT: &str = "multi-homed";
/// The loopback address the client connects from: not 127.0.0.1, the one
/// the kernel would pick.
const SOURCE: &str = "127.0.0.2";
/// Bound on the client answering through the pipe.
const QUICK: Duration = Duration::from_secs(10);

/// Client node options with the example handlers, connecting from
/// [`SOURCE`] through `proxy`.
fn from_source(proxy: Proxies) -> NodeOptions {
    NodeOptions {
        handlers: Registry::with_examples(Side::Client),
        source_address: Some(SOURCE.parse().unwrap()),
        proxy,
        ..NodeOptions::default()
    }
}

/// The address the server's status shows `CLIENT` connected from.
async fn remote_of_client(server: &TestNode) -> SocketAddr {
    let peers = server.status().await["peers"].clone();
    let peer = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|peer| peer["name"] == CLIENT)
        .unwrap_or_else(|| panic!("{CLIENT} not among the server's peers: {peers}"));
    peer["remote_addr"].as_str().unwrap().parse().unwrap()
}

/// Requests go through the pipe both ways.
async fn piped_both_ways(server: &TestNode, client: &TestNode) {
    client.time_ok_within(QUICK).await;
    let back = get(&server.url(&format!("/client/{CLIENT}/time"))).await;
    assert_eq!(back.status, 200, "{back:?}");
}

#[tokio::test]
async fn the_server_sees_the_client_connect_from_its_source_address() {
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let pipe = server.pipe.unwrap();
    let client = start_client_to(pki.client(CLIENT), &[pipe], from_source(Proxies::direct())).await;
    wait_for_client(&server, CLIENT).await;
    piped_both_ways(&server, &client).await;
    let from = remote_of_client(&server).await;
    assert_eq!(from.ip(), SOURCE.parse::<IpAddr>().unwrap());
}

#[tokio::test]
async fn through_a_proxy_the_connection_to_the_proxy_leaves_from_the_source_address() {
    let Some(binary) = tinyproxy::installed() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let pipe = server.pipe.unwrap();
    let proxy = Tinyproxy::start(
        &binary,
        &dir.path().join("tinyproxy"),
        ProxyOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let through = Proxies::through(proxy.url().parse().unwrap(), "", "the test");
    let client = start_client_to(pki.client(CLIENT), &[pipe], from_source(through)).await;
    wait_for_client(&server, CLIENT).await;
    piped_both_ways(&server, &client).await;
    assert!(proxy.connects_to(&pipe.to_string()) >= 1, "{}", proxy.log());
    // tinyproxy logs each connection it accepts with the peer's address.
    let log = proxy.log();
    assert!(
        log.lines()
            .any(|line| line.contains("Connect") && line.contains(SOURCE)),
        "the proxy logged no connection from {SOURCE}:\n{log}"
    );
}
