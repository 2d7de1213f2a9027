//! A client node that knows several server nodes, the way an operator meets
//! it (`pipe-client serve --server A:1234 --server B:1234`): real nodes over
//! real mutual TLS on loopback, the client starting at a random server,
//! skipping those that are down and failing over when its server goes.

use std::net::SocketAddr;
use std::time::Duration;

use restpipe_tests::{
    BackoffSettings, LOOPBACK, NodeOptions, Pki, Proxy, Registry, Side, TestNode, eventually,
    example_server, example_server_at, fast_settings, get, heartbeat_settings, start_client_to,
    wait_for_client, wait_for_server,
};
use serde_json::json;
use tokio::net::TcpSocket;

/// The client node's name.
const CLIENT: &str = "branch";
/// Bound on a client reaching a server that is up, or failing over to one:
/// far shorter than the slow backoff below would allow.
const QUICK: Duration = Duration::from_secs(5);

/// A loopback port that refuses connections (a server node that is down),
/// held so nothing else takes it while the test runs; dropping the socket
/// frees it.
fn closed_port() -> (TcpSocket, SocketAddr) {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket.bind(LOOPBACK).expect("binding a loopback port");
    let addr = socket.local_addr().expect("the bound port's address");
    (socket, addr)
}

/// Backoff whose delays between rounds are drawn from up to 20 s, then up
/// to 60 s: a client that waited one before trying the next server would
/// not be connected within [`QUICK`], most of the time.
fn slow_backoff() -> BackoffSettings {
    BackoffSettings {
        min_delay: Duration::from_secs(20),
        max_delay: Duration::from_secs(60),
        stable_after: Duration::from_secs(60),
    }
}

/// Options of a client node with the example handlers.
fn client_options() -> NodeOptions {
    NodeOptions {
        handlers: Registry::with_examples(Side::Client),
        ..NodeOptions::default()
    }
}

/// Waits (bounded) until `server` holds the client, then checks that
/// requests go through it both ways and that the client's status names the
/// server it dialled, `dialled`.
async fn served_by(server: &TestNode, client: &TestNode, dialled: SocketAddr) {
    wait_for_client(server, CLIENT).await;
    client.time_ok_within(QUICK).await;
    let back = get(&server.url(&format!("/client/{CLIENT}/time"))).await;
    assert_eq!(back.status, 200, "{back:?}");
    let link = client.link().await;
    assert_eq!(link["connected"], true, "{link}");
    assert_eq!(link["server"], dialled.to_string(), "{link}");
    assert_eq!(link["server_address"], dialled.to_string(), "{link}");
}

#[tokio::test]
async fn a_client_skips_servers_that_are_down_without_waiting_for_its_backoff() {
    let pki = Pki::new();
    let live = example_server(&pki, fast_settings()).await;
    // Three servers down, listed first, and the live one: each client
    // starts at a random one of the four, so nearly always some client
    // must pass the ones that are down. Moving on after a refused attempt
    // takes no backoff delay: every client is connected within QUICK.
    let down: Vec<(TcpSocket, SocketAddr)> = (0..3).map(|_| closed_port()).collect();
    let mut servers: Vec<SocketAddr> = down.iter().map(|(_, addr)| *addr).collect();
    servers.push(live.pipe_addr());
    let mut clients = Vec::new();
    for n in 0..6 {
        let options = NodeOptions {
            backoff: slow_backoff(),
            ..NodeOptions::default()
        };
        let name = format!("{CLIENT}-{n}");
        let client = start_client_to(pki.client(&name), &servers, options).await;
        clients.push((name, client));
    }
    let listed: Vec<String> = servers.iter().map(ToString::to_string).collect();
    for (name, client) in &clients {
        eventually(QUICK, &format!("{name} connected"), || {
            client.is_connected()
        })
        .await;
        client.time_ok_within(QUICK).await;
        let link = client.link().await;
        assert_eq!(link["servers"], json!(listed), "{link}");
        assert_eq!(link["server"], live.pipe_addr().to_string(), "{link}");
        // A client that tried a server that is down says which.
        if let Some(failed) = link["last_error_server"].as_str() {
            assert!(listed[..3].iter().any(|down| down == failed), "{link}");
            let error = link["last_error"].as_str().unwrap_or_default();
            assert!(
                error.contains(&format!("TCP connect to {failed}")),
                "{link}"
            );
        }
    }
}

#[tokio::test]
async fn a_client_fails_over_when_its_server_stops() {
    let pki = Pki::new();
    let a = example_server(&pki, fast_settings()).await;
    let b = example_server(&pki, fast_settings()).await;
    let client = start_client_to(
        pki.client(CLIENT),
        &[a.pipe_addr(), b.pipe_addr()],
        client_options(),
    )
    .await;
    wait_for_server(&client).await;
    // It started at a random one of the two; that one is stopped.
    let (holder, other) = if a.has_peer(CLIENT) { (a, b) } else { (b, a) };
    served_by(&holder, &client, holder.pipe_addr()).await;
    assert!(!other.has_peer(CLIENT));

    holder.stop().await;
    served_by(&other, &client, other.pipe_addr()).await;
}

#[tokio::test]
async fn a_client_whose_link_goes_silent_moves_on_to_the_next_server() {
    let pki = Pki::new();
    let a = example_server(&pki, fast_settings()).await;
    let through = Proxy::start(a.pipe_addr()).await;
    // The second server is down while the client starts, so the client
    // connects through the proxy to the first...
    let (reserved, b_addr) = closed_port();
    let options = NodeOptions {
        settings: heartbeat_settings(),
        ..client_options()
    };
    let client = start_client_to(pki.client(CLIENT), &[through.addr, b_addr], options).await;
    served_by(&a, &client, through.addr).await;
    // ...then comes up, and the link to the first goes silent (a network
    // eating packets): the client finds it dead by its heartbeat and the
    // next round starts at the next server, not the lost one (whose
    // handshake through the frozen link would hang for 10 s).
    drop(reserved);
    let b = example_server_at(b_addr, &pki, fast_settings()).await;
    through.freeze();
    eventually(QUICK, "the second server holds the client", || {
        b.has_peer(CLIENT)
    })
    .await;
    served_by(&b, &client, b_addr).await;
    let link = client.link().await;
    assert_eq!(
        link["last_error_server"],
        through.addr.to_string(),
        "{link}"
    );
}
