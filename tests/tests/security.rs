//! Bad peers are refused, and only they are hurt: every test starts a real
//! server node with a well-behaved client node on it, lets a misbehaving peer
//! (wrong CA, no certificate, wrong role, oversized or garbage frames, wrong
//! protocol version, wrong server name, a duplicate identity) try its luck
//! over real TLS, and then shows the good client is still served and the bad
//! peer is nowhere in the server's status.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use restpipe_tests::wire::{
    ALPN, Event, FrameCodec, GoAway, Header, Hello, PROTOCOL_VERSION, Ping, Role as WireRole,
    frame::Body, go_away,
};
use restpipe_tests::{
    BackoffSettings, ConnectionSettings, IssueRequest, NodeOptions, NodeSettings, Pki, Registry,
    Reply, Request, Role, Side, TestNode, TlsIdentity, connect_client, eventually, example_server,
    fast_backoff, fast_settings, get, start_client, start_server_with, try_start_client,
    wait_for_client, wait_for_server,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

/// The well-behaved client node of every test.
const GOOD: &str = "good-client";
/// Upper bound for anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

type RawPipe = Framed<TlsStream<TcpStream>, FrameCodec>;

/// A server node with the example handlers and `GOOD` connected to it.
async fn server_with_good_client(pki: &Pki, settings: NodeSettings) -> (TestNode, TestNode) {
    let server = example_server(pki, settings).await;
    let good = connect_client(pki, &server, GOOD, Registry::with_examples(Side::Client)).await;
    (server, good)
}

/// The connection id under which the server holds `GOOD`.
fn good_connection(server: &TestNode) -> u64 {
    server.connection_id(GOOD)
}

/// Names of the peers the server's `/_pipe/status` lists.
async fn listed_peers(server: &TestNode) -> Vec<String> {
    let status = get(&server.url("/_pipe/status")).await;
    assert_eq!(status.status, 200);
    status.json()["peers"]
        .as_array()
        .expect("peers is a list")
        .iter()
        .map(|peer| peer["name"].as_str().expect("peer name").to_owned())
        .collect()
}

/// The good client is still served over the very connection it had before
/// the bad peer came, and the bad peer is not listed.
async fn assert_only_the_bad_peer_was_hurt(server: &TestNode, good_before: u64, bad: &str) {
    let reply = get(&server.url(&format!("/client/{GOOD}/time"))).await;
    assert_eq!(reply.status, 200, "the good client is no longer served");
    assert!(reply.json()["time_from_client"].as_f64().unwrap() > 1.0e9);
    assert_eq!(
        good_connection(server),
        good_before,
        "the good client's connection was disturbed"
    );
    let listed = listed_peers(server).await;
    assert_eq!(listed, [GOOD], "server lists {listed:?}");
    assert!(!listed.iter().any(|name| name == bad));
}

/// Waits (bounded) until the server no longer holds `name`.
async fn wait_until_gone(server: &TestNode, name: &str) {
    let what = format!("the server lets go of {name}");
    eventually(WAIT, &what, || !server.has_peer(name)).await;
}

/// Waits (bounded) until the client node has recorded a link error.
async fn wait_for_link_error(client: &TestNode) -> String {
    let node = client.running.node();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(error) = node.link().last_error {
                return error;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the client node recorded no link error")
}

/// A TLS connection to the server's pipe port, verifying it as "localhost".
async fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("TCP connect timed out")?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
}

/// A raw, properly authenticated connection as client `name`, before Hello.
async fn raw_client(pki: &Pki, server: &TestNode, name: &str) -> RawPipe {
    let config = pki.client(name).client_config().unwrap();
    let stream = tls_connect(config, server.pipe_addr())
        .await
        .expect("a properly authenticated client is accepted");
    Framed::new(stream, FrameCodec::default())
}

fn client_hello(name: &str, protocol_version: u32) -> Body {
    Body::Hello(Hello {
        protocol_version,
        role: WireRole::Client as i32,
        node_name: name.to_owned(),
        software: "security test".to_owned(),
        max_frame_bytes: 16 * 1024 * 1024,
        ..Hello::default()
    })
}

/// A raw client that has exchanged a valid Hello and is held by the server.
async fn raw_client_after_hello(pki: &Pki, server: &TestNode, name: &str) -> RawPipe {
    let mut pipe = raw_client(pki, server, name).await;
    pipe.send(client_hello(name, PROTOCOL_VERSION))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, pipe.next())
        .await
        .expect("no Hello from the server")
        .expect("server closed instead of Hello")
        .expect("server's Hello is a valid frame");
    let Body::Hello(hello) = first else {
        panic!("server sent {first:?} instead of Hello")
    };
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    assert_eq!(hello.role, WireRole::Server as i32);
    wait_for_client(server, name).await;
    pipe
}

/// Everything read until the server closed the connection.
#[derive(Debug)]
struct Ending {
    frames: Vec<Body>,
    /// The read error that ended it (e.g. a TLS alert), or `None` for EOF.
    error: Option<String>,
}

impl Ending {
    fn go_aways(&self) -> Vec<&GoAway> {
        self.frames
            .iter()
            .filter_map(|frame| match frame {
                Body::GoAway(go_away) => Some(go_away),
                _ => None,
            })
            .collect()
    }

    fn received_hello(&self) -> bool {
        self.frames
            .iter()
            .any(|frame| matches!(frame, Body::Hello(_)))
    }

    /// The server closed without serving anything but Hello, heartbeats and
    /// a protocol-error `GoAway`.
    fn assert_protocol_error_close(&self, case: &str) {
        for frame in &self.frames {
            match frame {
                Body::Hello(_) | Body::Ping(_) | Body::Pong(_) => {}
                Body::GoAway(go_away) => assert_eq!(
                    go_away.reason,
                    go_away::Reason::ProtocolError as i32,
                    "{case}: {go_away:?}"
                ),
                other => panic!("{case}: server sent {other:?} to a misbehaving peer"),
            }
        }
    }
}

/// Reads frames until the server closes the connection (EOF or an error),
/// failing the test if it is still open after [`WAIT`].
async fn read_until_closed(pipe: &mut RawPipe) -> Ending {
    let mut frames = Vec::new();
    let error = tokio::time::timeout(WAIT, async {
        loop {
            match pipe.next().await {
                Some(Ok(frame)) => frames.push(frame),
                Some(Err(error)) => return Some(error.to_string()),
                None => return None,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server did not close the connection; read {frames:?}"));
    Ending { frames, error }
}

/// A client node aimed at `server` that verifies the server certificate
/// against `server_name` (the kit's clients expect "localhost").
async fn start_client_expecting(
    identity: TlsIdentity,
    server: SocketAddr,
    server_name: &str,
    handlers: Registry,
    backoff: BackoffSettings,
) -> TestNode {
    let options = NodeOptions {
        handlers,
        server_name: server_name.to_owned(),
        backoff,
        ..NodeOptions::default()
    };
    try_start_client(server, &identity, options)
        .await
        .expect("the client node starts")
}

#[tokio::test]
async fn client_from_another_ca_is_refused_and_others_are_served() {
    let pki = Pki::new();
    let (server, _good) = server_with_good_client(&pki, fast_settings()).await;
    let before = good_connection(&server);

    // Signed by a CA the server does not trust; it trusts the server's CA, so
    // only the server can be the one saying no.
    let other = Pki::new();
    let issued = other.issue(IssueRequest::new("intruder", Role::Client));
    let identity = TlsIdentity::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        pki.ca_pem().as_bytes(),
    )
    .unwrap();
    let intruder = start_client(
        identity,
        server.pipe_addr(),
        Registry::with_examples(Side::Client),
        fast_settings(),
    )
    .await;

    let error = wait_for_link_error(&intruder).await;
    assert!(!error.is_empty());
    let status = get(&intruder.url("/_pipe/status")).await.json();
    assert_eq!(status["link"]["connected"], false, "{status}");
    assert!(
        status["link"]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{status}"
    );
    assert!(intruder.running.node().peers().is_empty());
    assert!(server.running.node().peers().get("intruder").is_none());
    // Requests from the intruder's side find no server.
    assert_eq!(get(&intruder.url("/server/time")).await.status, 503);
    assert_eq!(
        get(&server.url("/client/intruder/time")).await.status,
        404,
        "the intruder was never known to the server"
    );

    assert_only_the_bad_peer_was_hurt(&server, before, "intruder").await;
}

#[tokio::test]
async fn raw_client_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let (server, _good) = server_with_good_client(&pki, fast_settings()).await;
    let before = good_connection(&server);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];

    assert_refused(Arc::new(config), &server).await;
    assert_only_the_bad_peer_was_hurt(&server, before, "anybody").await;
}

/// The handshake fails, or the first read does: the server never sends its
/// Hello, whatever the peer says.
async fn assert_refused(config: Arc<rustls::ClientConfig>, server: &TestNode) {
    let stream = match tls_connect(config, server.pipe_addr()).await {
        Err(_) => return,
        Ok(stream) => stream,
    };
    let mut pipe = Framed::new(stream, FrameCodec::default());
    // Try to go on as if accepted; the write may or may not fail.
    let _ = pipe.send(client_hello("anybody", PROTOCOL_VERSION)).await;
    let ending = read_until_closed(&mut pipe).await;
    assert!(
        !ending.received_hello() && ending.frames.is_empty(),
        "the server spoke to a refused peer: {ending:?}"
    );
    assert!(
        ending.error.is_some(),
        "expected a TLS alert, got a clean close: {ending:?}"
    );
}

#[tokio::test]
async fn client_presenting_a_server_certificate_is_refused() {
    let pki = Pki::new();
    let (server, _good) = server_with_good_client(&pki, fast_settings()).await;
    let before = good_connection(&server);

    let issued = pki.issue(IssueRequest::new("sneaky", Role::Server));
    let config = pki.identity(&issued).client_config().unwrap();
    assert_refused(config, &server).await;
    assert!(server.running.node().peers().get("sneaky").is_none());

    // A client node with it fares no better.
    let node = start_client(
        pki.identity(&issued),
        server.pipe_addr(),
        Registry::with_examples(Side::Client),
        fast_settings(),
    )
    .await;
    wait_for_link_error(&node).await;
    assert_eq!(
        get(&node.url("/_pipe/status")).await.json()["link"]["connected"],
        false
    );

    assert_only_the_bad_peer_was_hurt(&server, before, "sneaky").await;
}

#[tokio::test]
async fn frame_header_over_the_limit_disconnects_only_that_peer() {
    const MAX_FRAME: usize = 64 * 1024 + 4096;
    let pki = Pki::new();
    let settings = NodeSettings {
        connection: ConnectionSettings {
            max_frame_bytes: MAX_FRAME,
            ..ConnectionSettings::default()
        },
        max_body_bytes: 4096,
        ..fast_settings()
    };
    let (server, _good) = server_with_good_client(&pki, settings).await;
    let before = good_connection(&server);

    let mut pipe = raw_client_after_hello(&pki, &server, "greedy").await;
    // A header announcing one byte more than allowed, and a little of the
    // "body": the server must refuse on the header alone.
    let mut wire = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&[0u8; 100]);
    pipe.get_mut().write_all(&wire).await.unwrap();
    pipe.get_mut().flush().await.unwrap();

    let ending = read_until_closed(&mut pipe).await;
    ending.assert_protocol_error_close("oversized frame");
    for go_away in ending.go_aways() {
        assert!(
            go_away.message.contains(&MAX_FRAME.to_string()),
            "GoAway should name the limit: {go_away:?}"
        );
    }
    wait_until_gone(&server, "greedy").await;
    assert_only_the_bad_peer_was_hurt(&server, before, "greedy").await;
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_only_that_connection() {
    let pki = Pki::new();
    let (server, _good) = server_with_good_client(&pki, fast_settings()).await;
    let before = good_connection(&server);

    let garbage: [(&str, Vec<u8>); 3] = [
        // An HTTP request on the pipe port: its first bytes read as a huge length.
        (
            "http",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        // A plausible length in front of bytes that are no protobuf.
        ("malformed", [&[0, 0, 0, 8][..], &[0xff; 8]].concat()),
        // A zero-length frame: a Frame without a body.
        ("empty", vec![0, 0, 0, 0]),
    ];

    // Instead of Hello: the server never files the peer.
    for (what, bytes) in &garbage {
        let mut pipe = raw_client(&pki, &server, "garbler").await;
        pipe.get_mut().write_all(bytes).await.unwrap();
        pipe.get_mut().flush().await.unwrap();
        let ending = read_until_closed(&mut pipe).await;
        ending.assert_protocol_error_close(what);
        assert!(server.running.node().peers().get("garbler").is_none());
        assert_only_the_bad_peer_was_hurt(&server, before, "garbler").await;
    }

    // After a valid Hello: the server had the peer, and drops it.
    for (what, bytes) in &garbage {
        let mut pipe = raw_client_after_hello(&pki, &server, "garbler").await;
        pipe.get_mut().write_all(bytes).await.unwrap();
        pipe.get_mut().flush().await.unwrap();
        let ending = read_until_closed(&mut pipe).await;
        ending.assert_protocol_error_close(what);
        wait_until_gone(&server, "garbler").await;
        assert_only_the_bad_peer_was_hurt(&server, before, "garbler").await;
    }

    // A second Hello is a protocol violation too.
    let mut pipe = raw_client_after_hello(&pki, &server, "garbler").await;
    pipe.send(client_hello("garbler", PROTOCOL_VERSION))
        .await
        .unwrap();
    let ending = read_until_closed(&mut pipe).await;
    ending.assert_protocol_error_close("second Hello");
    wait_until_gone(&server, "garbler").await;
    assert_only_the_bad_peer_was_hurt(&server, before, "garbler").await;
}

#[tokio::test]
async fn protocol_errors_after_hello_are_answered_with_a_go_away() {
    let pki = Pki::new();
    let (server, _good) = server_with_good_client(&pki, fast_settings()).await;
    let cases: [(&str, Vec<u8>); 3] = [
        ("oversized", u32::MAX.to_be_bytes().to_vec()),
        ("malformed", [&[0, 0, 0, 8][..], &[0xff; 8]].concat()),
        ("empty", vec![0, 0, 0, 0]),
    ];
    // Several rounds: the GoAway must come every time, not by luck.
    for round in 0..5 {
        for (what, bytes) in &cases {
            let mut pipe = raw_client_after_hello(&pki, &server, "garbler").await;
            pipe.get_mut().write_all(bytes).await.unwrap();
            pipe.get_mut().flush().await.unwrap();
            let ending = read_until_closed(&mut pipe).await;
            ending.assert_protocol_error_close(what);
            assert_eq!(
                ending.go_aways().len(),
                1,
                "round {round}, {what}: no GoAway before the close: {ending:?}"
            );
            wait_until_gone(&server, "garbler").await;
        }
    }
}

#[tokio::test]
async fn wrong_protocol_version_gets_a_go_away_naming_both_versions() {
    const THEIRS: u32 = 99;
    let pki = Pki::new();
    let (server, _good) = server_with_good_client(&pki, fast_settings()).await;
    let before = good_connection(&server);

    let mut pipe = raw_client(&pki, &server, "time-traveller").await;
    pipe.send(client_hello("time-traveller", THEIRS))
        .await
        .unwrap();
    let ending = read_until_closed(&mut pipe).await;
    ending.assert_protocol_error_close("wrong version");
    let go_aways = ending.go_aways();
    assert_eq!(go_aways.len(), 1, "{ending:?}");
    let message = &go_aways[0].message;
    let numbers: Vec<u32> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        numbers.contains(&THEIRS) && numbers.contains(&PROTOCOL_VERSION),
        "GoAway should name versions {THEIRS} and {PROTOCOL_VERSION}: {message:?}"
    );
    // The GoAway is the last frame: the connection closed after it.
    assert!(matches!(ending.frames.last(), Some(Body::GoAway(_))));
    assert!(
        server
            .running
            .node()
            .peers()
            .get("time-traveller")
            .is_none()
    );

    assert_only_the_bad_peer_was_hurt(&server, before, "time-traveller").await;
}

#[tokio::test]
async fn client_refuses_a_server_certificate_for_another_name() {
    let pki = Pki::new();
    let wrong_name = pki.identity(&pki.issue(IssueRequest::new("other.example", Role::Server)));
    let server = start_server_with(
        wrong_name,
        Registry::with_examples(Side::Server),
        fast_settings(),
    )
    .await;

    // The harness client expects "localhost".
    let misled = start_client(
        pki.client("misled"),
        server.pipe_addr(),
        Registry::with_examples(Side::Client),
        fast_settings(),
    )
    .await;
    let error = wait_for_link_error(&misled).await;
    assert!(
        error.contains("certificate") && error.contains("localhost"),
        "the link error should say the certificate does not fit the name: {error}"
    );
    let status = get(&misled.url("/_pipe/status")).await.json();
    assert_eq!(status["link"]["connected"], false, "{status}");
    assert_eq!(status["link"]["last_error"], error.as_str());
    assert!(server.running.node().peers().get("misled").is_none());

    // The same server, expected under the name it has, is fine: the refusal
    // was about the name alone.
    let good = start_client_expecting(
        pki.client(GOOD),
        server.pipe_addr(),
        "other.example",
        Registry::with_examples(Side::Client),
        fast_backoff(),
    )
    .await;
    wait_for_client(&server, GOOD).await;
    wait_for_server(&good).await;
    let before = good_connection(&server);
    assert_only_the_bad_peer_was_hurt(&server, before, "misled").await;
    assert_eq!(get(&good.url("/server/time")).await.status, 200);
    // And the misled one is still not connected.
    assert!(misled.running.node().peers().is_empty());
}

#[tokio::test]
async fn newest_connection_with_the_same_identity_wins() {
    const TWIN: &str = "twin";
    let whoami = |marker: &'static str| {
        let mut handlers = Registry::new();
        handlers.register("get_whoami", move |_request: Request| async move {
            Ok(Reply::json(&json!({ "me": marker })))
        });
        handlers
    };
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;

    // The older node retries only after a very long backoff once replaced,
    // so it cannot win the name back while the test looks.
    let patient = BackoffSettings {
        min_delay: Duration::from_secs(3600),
        max_delay: Duration::from_secs(3600),
        stable_after: Duration::from_secs(3600),
    };
    let older = start_client_expecting(
        pki.client(TWIN),
        server.pipe_addr(),
        "localhost",
        whoami("older"),
        patient,
    )
    .await;
    wait_for_client(&server, TWIN).await;
    wait_for_server(&older).await;
    let reply = get(&server.url(&format!("/client/{TWIN}/whoami"))).await;
    assert_eq!(reply.json(), json!({ "me": "older" }));
    let older_connection = server.running.node().peers().get(TWIN).unwrap();

    let newer = start_client(
        pki.client(TWIN),
        server.pipe_addr(),
        whoami("newer"),
        fast_settings(),
    )
    .await;
    wait_for_server(&newer).await;

    // The older one is told to go away and says so.
    tokio::time::timeout(WAIT, older_connection.closed())
        .await
        .expect("the replaced connection was not closed");
    let error = wait_for_link_error(&older).await;
    assert!(error.contains("replaced"), "{error}");
    let status = get(&older.url("/_pipe/status")).await.json();
    assert_eq!(status["link"]["connected"], false, "{status}");

    // One peer of that name, and it is the newer one.
    let listed = listed_peers(&server).await;
    assert_eq!(listed, [TWIN], "{listed:?}");
    let current = server.running.node().peers().get(TWIN).unwrap();
    assert_ne!(current.connection_id(), older_connection.connection_id());
    for _ in 0..5 {
        let reply = get(&server.url(&format!("/client/{TWIN}/whoami"))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), json!({ "me": "newer" }));
    }
    // The newer node's own view agrees.
    assert_eq!(
        get(&newer.url("/_pipe/status")).await.json()["link"]["connected"],
        true
    );
}

#[tokio::test]
async fn pings_from_an_authenticated_raw_peer_are_answered() {
    // The positive control of the raw-peer tests above: a raw client that
    // follows the protocol is served, so their refusals are not an artefact
    // of the raw client itself.
    let pki = Pki::new();
    let (server, _good) = server_with_good_client(&pki, fast_settings()).await;
    let mut pipe = raw_client_after_hello(&pki, &server, "polite").await;
    pipe.send(Body::Ping(Ping { nonce: 42 })).await.unwrap();
    let answer = tokio::time::timeout(WAIT, pipe.next())
        .await
        .expect("no Pong")
        .expect("server closed")
        .unwrap();
    assert!(
        matches!(answer, Body::Pong(ref pong) if pong.nonce == 42),
        "{answer:?}"
    );
    let listed = listed_peers(&server).await;
    assert_eq!(listed, [GOOD, "polite"]);
}

#[tokio::test]
async fn a_client_that_offers_no_alpn_is_refused() {
    let pki = Pki::new();
    let (server, _good) = server_with_good_client(&pki, fast_settings()).await;
    let before = good_connection(&server);

    // A valid client certificate, but no ALPN offered: rustls alone would
    // accept it.
    let mut config = (*pki.client("no-alpn").client_config().unwrap()).clone();
    config.alpn_protocols.clear();
    if let Ok(stream) = tls_connect(Arc::new(config), server.pipe_addr()).await {
        let mut pipe = Framed::new(stream, FrameCodec::default());
        let _ = pipe.send(client_hello("no-alpn", PROTOCOL_VERSION)).await;
        let ending = read_until_closed(&mut pipe).await;
        assert!(
            !ending.received_hello() && ending.frames.is_empty(),
            "the server spoke to a peer without ALPN: {ending:?}"
        );
    }
    assert!(server.running.node().peers().get("no-alpn").is_none());
    assert_only_the_bad_peer_was_hurt(&server, before, "no-alpn").await;
}

#[tokio::test]
async fn a_client_node_refuses_a_server_that_selects_no_alpn() {
    let pki = Pki::new();
    // A TLS server with a good certificate that does not speak restpipe/1.
    let mut config = (*pki.server().server_config().unwrap()).clone();
    config.alpn_protocols.clear();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let imposter = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(stream) = acceptor.accept(tcp).await {
                held.push(stream);
            }
        }
    });

    let client = start_client(
        pki.client("careful"),
        addr,
        Registry::with_examples(Side::Client),
        fast_settings(),
    )
    .await;
    let error = wait_for_link_error(&client).await;
    assert!(error.contains("ALPN"), "{error}");
    assert!(client.running.node().peers().is_empty());
    imposter.abort();
}

#[tokio::test]
async fn a_caller_that_hangs_up_mid_handshake_is_logged_as_abandoned_not_refused() {
    let pki = Pki::new();
    let (server, good) = server_with_good_client(&pki, fast_settings()).await;
    let before = good_connection(&server);

    // The start of a TLS record, then the connection closes: what a client
    // whose own handshake deadline passed does.
    let mut tcp = TcpStream::connect(server.pipe_addr()).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x80, 0x01])
        .await
        .unwrap();
    drop(tcp);

    let messages = tokio::time::timeout(WAIT, async {
        loop {
            let status = server.status().await;
            let messages: Vec<String> = status["recent_errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|error| error["message"].as_str().map(str::to_owned))
                .collect();
            if !messages.is_empty() {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server records the handshake that ended");
    assert!(
        messages
            .iter()
            .all(|m| m.contains("TLS handshake abandoned") && !m.contains("refused")),
        "a hang-up is not a refusal: {messages:?}"
    );
    assert_eq!(get(&good.url("/server/time")).await.status, 200);
    assert_only_the_bad_peer_was_hurt(&server, before, "anybody").await;
}

#[tokio::test]
async fn one_address_cannot_hold_every_handshake_place() {
    let pki = Pki::new();
    let (server, good) = server_with_good_client(&pki, fast_settings()).await;
    let before = good_connection(&server);

    // Idle TCP connections that never start TLS, from another loopback
    // address: each would hold a task and a handshake for the whole
    // handshake deadline.
    let source: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..restpipe_tests::MAX_HANDSHAKES_PER_SOURCE + 4 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(source).unwrap();
        idle.push(socket.connect(server.pipe_addr()).await.unwrap());
    }
    // The ones past the bound are closed at once; the others wait for TLS.
    let reads = idle.iter_mut().map(|stream| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::io::AsyncReadExt::read(stream, &mut byte),
        )
        .await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    });
    let closed = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count();
    assert_eq!(closed, 4, "only the connections past the bound are closed");
    // Clients from other addresses are served meanwhile.
    assert_eq!(get(&good.url("/server/time")).await.status, 200);
    assert_only_the_bad_peer_was_hurt(&server, before, "anybody").await;
}

#[tokio::test]
async fn header_and_argument_floods_close_only_that_connection() {
    let pki = Pki::new();
    let (server, good) = server_with_good_client(&pki, fast_settings()).await;
    let before = good_connection(&server);
    let event = |request_id| Event {
        request_id,
        verb: "get".into(),
        noun: "time".into(),
        timeout_ms: 10_000,
        ..Default::default()
    };
    let many_headers = Event {
        headers: (0..40_000)
            .map(|i| Header {
                name: format!("x-{i}"),
                value: Default::default(),
            })
            .collect(),
        ..event(1)
    };
    // 8 MiB of empty arguments decode to far more than 8 MiB.
    let empty_args = Event {
        args: vec![String::new(); 4 * 1024 * 1024],
        ..event(1)
    };
    for (what, flood) in [("headers", many_headers), ("arguments", empty_args)] {
        let mut pipe = raw_client_after_hello(&pki, &server, "flooder").await;
        pipe.send(Body::Event(flood)).await.unwrap();
        let ending = read_until_closed(&mut pipe).await;
        ending.assert_protocol_error_close(what);
        let go_aways = ending.go_aways();
        assert!(
            go_aways.iter().any(|g| g.message.contains(what)),
            "{what}: {go_aways:?}"
        );
        wait_until_gone(&server, "flooder").await;
    }
    assert_only_the_bad_peer_was_hurt(&server, before, "flooder").await;
    drop(good);
}

#[tokio::test]
async fn an_endless_timeout_from_a_peer_is_served_within_our_maximum() {
    let pki = Pki::new();
    let (server, _good) = server_with_good_client(&pki, fast_settings()).await;
    let mut pipe = raw_client_after_hello(&pki, &server, "patient").await;
    pipe.send(Body::Event(Event {
        request_id: 1,
        verb: "get".into(),
        noun: "time".into(),
        timeout_ms: u64::MAX,
        ..Default::default()
    }))
    .await
    .unwrap();
    let reply = tokio::time::timeout(WAIT, async {
        loop {
            match pipe.next().await {
                Some(Ok(Body::Reply(reply))) => return reply,
                Some(Ok(_)) => continue,
                other => panic!("no reply: {other:?}"),
            }
        }
    })
    .await
    .expect("a reply within the wait");
    assert_eq!(reply.request_id, 1);
    assert!(server.has_peer("patient"));
}
