//! The link over in-memory streams (`tokio::io::duplex`): no sockets, no
//! TLS, the same code. Both sides are real links where a test needs a
//! well-behaved peer; where it needs one that misbehaves, the other side
//! writes raw frames.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

mod batching;
mod budget;
mod hostile;
mod progress;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio_util::codec::Framed;

use super::*;
use crate::wire::body::WINDOW_BYTES;
use crate::wire::proto::{self, Chunk, Ping, frame::Body, go_away};
use crate::wire::{Event, HandlerName, PROTOCOL_VERSION, Reply, Side};

/// What the test inbound saw.
#[derive(Debug, Default)]
struct Seen {
    answered: AtomicUsize,
    cancelled: AtomicUsize,
    notices: std::sync::Mutex<Vec<LinkNotice>>,
}

/// Counts a run of `get_wait` that stopped.
struct Stopped(Arc<Seen>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.cancelled.fetch_add(1, AtomicOrdering::SeqCst);
    }
}

/// Answers `get_echo` with its first argument after sleeping as many
/// milliseconds as its second; `get_wait` waits until stopped.
#[derive(Debug, Default, Clone)]
struct TestInbound {
    seen: Arc<Seen>,
}

impl Inbound for TestInbound {
    fn answer(&self, _peer: &PeerInfo, delivery: Delivery) -> ReplyFuture {
        let seen = self.seen.clone();
        Box::pin(async move {
            seen.answered.fetch_add(1, AtomicOrdering::SeqCst);
            let event = delivery.event;
            match event.handler.as_str() {
                "get_echo" => {
                    let delay: u64 = event.args[1].parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    Reply::bytes("text/plain", event.args[0].clone())
                }
                "get_wait" => {
                    // Counted however the run ends: cancelled, or dropped
                    // at the deadline.
                    let _count = Stopped(seen.clone());
                    delivery.cancelled.cancelled().await;
                    Reply::bytes("text/plain", "cancelled")
                }
                "get_deadline" => {
                    // Whole seconds left until the delivery's deadline.
                    let left = delivery.deadline - tokio::time::Instant::now();
                    Reply::bytes("text/plain", left.as_secs().to_string())
                }
                "get_headers" => {
                    // As many headers as the first argument says.
                    let count: usize = event.args[0].parse().unwrap();
                    let mut reply = Reply::bytes("text/plain", "headers");
                    for i in 0..count {
                        let name = http::HeaderName::try_from(format!("x-{i}")).unwrap();
                        reply
                            .headers
                            .append(name, http::HeaderValue::from_static("v"));
                    }
                    reply
                }
                "get_progress" => {
                    // Reports the first argument, waits the second (ms).
                    delivery.progress.report(event.args[0].parse().unwrap());
                    let delay: u64 = event.args[1].parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let watched = delivery.progress.is_watched();
                    Reply::bytes("text/plain", format!("watched {watched}"))
                }
                other => Reply::bytes("text/plain", format!("unknown {other}")),
            }
        })
    }

    /// `get_denied` is refused before admission, as a policy would.
    fn screen(&self, _peer: &PeerInfo, event: &Event) -> Option<Reply> {
        (event.handler.as_str() == "get_denied").then(|| Reply::bytes("text/plain", "denied"))
    }

    fn notice(&self, _peer: &PeerInfo, _connection_id: u64, notice: LinkNotice) {
        self.seen.notices.lock().unwrap().push(notice);
    }
}

fn endpoint(side: Side, inbound: &TestInbound, settings: ConnectionSettings) -> Endpoint {
    Endpoint {
        hello: LocalHello {
            name: format!("test-{}", side.as_str()),
            side,
            standby: false,
        },
        settings,
        inbound: Arc::new(inbound.clone()),
        body_memory: crate::wire::MemoryBudget::node(crate::wire::DEFAULT_MAX_BODY_MEMORY),
    }
}

fn peer(side: Side) -> PeerInfo {
    PeerInfo {
        name: format!("test-{}", side.as_str()),
        side,
        remote_addr: None,
    }
}

/// Two real links joined by an in-memory stream: (client's handle to the
/// server, server's handle to the client).
async fn pair(
    client: &TestInbound,
    server: &TestInbound,
    settings: ConnectionSettings,
) -> (PeerHandle, PeerHandle) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client_end = endpoint(Side::Client, client, settings.clone());
    let server_end = endpoint(Side::Server, server, settings);
    let (to_server, to_client) = tokio::join!(
        establish(a, &client_end, peer(Side::Server), |_| Ok(())),
        establish(b, &server_end, peer(Side::Client), |_| Ok(())),
    );
    (to_server.unwrap().0, to_client.unwrap().0)
}

/// A server-side link whose client is raw frames, after a good `Hello`.
async fn raw_client(
    server: &TestInbound,
    settings: ConnectionSettings,
) -> (PeerHandle, Framed<DuplexStream, FrameCodec>) {
    raw_client_over(server, settings, 4 * 1024 * 1024).await
}

/// [`raw_client`] over an in-memory pipe that holds `buffer` bytes each way
/// (small: a peer that stops reading soon stops our writes).
async fn raw_client_over(
    server: &TestInbound,
    settings: ConnectionSettings,
    buffer: usize,
) -> (PeerHandle, Framed<DuplexStream, FrameCodec>) {
    let (a, b) = tokio::io::duplex(buffer);
    let mut raw = Framed::new(a, FrameCodec::new(settings.max_frame_bytes));
    raw.send(hello(PROTOCOL_VERSION)).await.unwrap();
    let server_end = endpoint(Side::Server, server, settings);
    let (handle, _) = establish(b, &server_end, peer(Side::Client), |_| Ok(()))
        .await
        .unwrap();
    let Some(Ok(Body::Hello(_))) = raw.next().await else {
        panic!("no Hello from the server")
    };
    (handle, raw)
}

fn hello(version: u32) -> Body {
    Body::Hello(proto::Hello {
        protocol_version: version,
        role: proto::Role::Client as i32,
        node_name: "raw".into(),
        ..Default::default()
    })
}

fn echo(text: &str, delay_ms: u64) -> Event {
    Event {
        handler: HandlerName::new("get", "echo"),
        args: vec![text.to_owned(), delay_ms.to_string()],
        query: String::new(),
        content_type: String::new(),
        headers: http::HeaderMap::new(),
        body: Bytes::new(),
        stream: None,
    }
}

fn raw_event(request_id: u64, noun: &str, body_follows: bool) -> Body {
    Body::Event(proto::Event {
        request_id,
        verb: "get".into(),
        noun: noun.into(),
        args: vec!["x".into(), "0".into()],
        timeout_ms: 60_000,
        body_follows,
        ..Default::default()
    })
}

/// The next frame that is not a heartbeat.
async fn next_frame(raw: &mut Framed<DuplexStream, FrameCodec>) -> Option<Body> {
    loop {
        match raw.next().await? {
            Ok(Body::Ping(_) | Body::Pong(_) | Body::Window(_)) => continue,
            Ok(body) => return Some(body),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn replies_come_back_to_their_own_requests_in_any_order() {
    let (client, server) = (TestInbound::default(), TestInbound::default());
    let (to_server, to_client) = pair(&client, &server, ConnectionSettings::default()).await;
    let timeout = Duration::from_secs(10);
    // The slowest is sent first: replies overtake each other.
    let (slow, medium, fast) = tokio::join!(
        to_server.request(echo("slow", 300), timeout),
        to_server.request(echo("medium", 150), timeout),
        to_server.request(echo("fast", 0), timeout),
    );
    assert_eq!(slow.unwrap().body, "slow");
    assert_eq!(medium.unwrap().body, "medium");
    assert_eq!(fast.unwrap().body, "fast");
    // Both directions at once, with ids that overlap: each side matches
    // replies only against its own table.
    let (up, down) = tokio::join!(
        to_server.request(echo("up", 20), timeout),
        to_client.request(echo("down", 20), timeout),
    );
    assert_eq!(up.unwrap().body, "up");
    assert_eq!(down.unwrap().body, "down");
    assert_eq!(server.seen.answered.load(AtomicOrdering::SeqCst), 4);
    assert_eq!(client.seen.answered.load(AtomicOrdering::SeqCst), 1);
    assert_eq!(to_server.in_flight_out(), 0);
    assert_eq!(to_client.in_flight_in(), 0);
    let received = server.seen.notices.lock().unwrap().clone();
    assert_eq!(
        received
            .iter()
            .filter(|n| **n == LinkNotice::EventReceived)
            .count(),
        4
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_cancels_the_far_handler() {
    let (client, server) = (TestInbound::default(), TestInbound::default());
    let (to_server, to_client) = pair(&client, &server, ConnectionSettings::default()).await;
    let mut wait = echo("", 0);
    wait.handler = HandlerName::new("get", "wait");
    let outcome = to_server.request(wait, Duration::from_secs(2)).await;
    assert!(
        matches!(outcome, Err(RequestError::TimedOut { .. })),
        "{outcome:?}"
    );
    for _ in 0..100 {
        if server.seen.cancelled.load(AtomicOrdering::SeqCst) == 1 && to_client.in_flight_in() == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.seen.cancelled.load(AtomicOrdering::SeqCst), 1);
    assert_eq!(
        to_client.in_flight_in(),
        0,
        "the cancelled run is forgotten"
    );
    // The connection carries on.
    let reply = to_server
        .request(echo("after", 0), Duration::from_secs(2))
        .await;
    assert_eq!(reply.unwrap().body, "after");
}

#[tokio::test]
async fn a_cancel_for_an_unknown_or_finished_request_is_harmless() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    raw.send(Body::Cancel(proto::Cancel {
        request_id: 77,
        reason: "never sent".into(),
    }))
    .await
    .unwrap();
    raw.send(raw_event(1, "echo", false)).await.unwrap();
    let Some(Body::Reply(reply)) = next_frame(&mut raw).await else {
        panic!("no reply")
    };
    assert_eq!(reply.request_id, 1);
    // A cancel racing the reply it would have stopped.
    raw.send(Body::Cancel(proto::Cancel {
        request_id: 1,
        reason: "late".into(),
    }))
    .await
    .unwrap();
    raw.send(raw_event(2, "echo", false)).await.unwrap();
    let Some(Body::Reply(reply)) = next_frame(&mut raw).await else {
        panic!("no reply")
    };
    assert_eq!(reply.request_id, 2);
    assert!(!handle.is_closed());
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused_with_go_away() {
    let server = TestInbound::default();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let mut raw = Framed::new(a, FrameCodec::default());
    raw.send(hello(PROTOCOL_VERSION + 1)).await.unwrap();
    let server_end = endpoint(Side::Server, &server, ConnectionSettings::default());
    let refused = establish(b, &server_end, peer(Side::Client), |_| Ok(())).await;
    assert!(
        matches!(refused, Err(HandshakeError::VersionMismatch { theirs, .. }) if theirs == PROTOCOL_VERSION + 1)
    );
    let Some(Ok(Body::GoAway(go_away))) = raw.next().await else {
        panic!("no GoAway")
    };
    assert_eq!(go_away.reason, go_away::Reason::ProtocolError as i32);
}

#[tokio::test]
async fn an_admission_refusal_reaches_the_client_with_its_reason() {
    let (client, server) = (TestInbound::default(), TestInbound::default());
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client_end = endpoint(Side::Client, &client, ConnectionSettings::default());
    let server_end = endpoint(Side::Server, &server, ConnectionSettings::default());
    let refuse = |_: &proto::Hello| {
        Err(proto::GoAway {
            reason: go_away::Reason::Overloaded as i32,
            message: "full".into(),
        })
    };
    let (client_side, server_side) = tokio::join!(
        establish(a, &client_end, peer(Side::Server), |_| Ok(())),
        establish(b, &server_end, peer(Side::Client), refuse),
    );
    assert!(matches!(server_side, Err(HandshakeError::Rejected(ref m)) if m == "full"));
    assert!(matches!(
        client_side,
        Err(HandshakeError::Refused { reason: go_away::Reason::Overloaded, ref message }) if message == "full"
    ));
}

#[tokio::test]
async fn a_first_frame_other_than_hello_is_refused() {
    let server = TestInbound::default();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let mut raw = Framed::new(a, FrameCodec::default());
    raw.send(Body::Ping(Ping { nonce: 1 })).await.unwrap();
    let server_end = endpoint(Side::Server, &server, ConnectionSettings::default());
    let refused = establish(b, &server_end, peer(Side::Client), |_| Ok(())).await;
    assert!(matches!(refused, Err(HandshakeError::Unexpected("Ping"))));
}

#[tokio::test(start_paused = true)]
async fn no_hello_within_the_deadline_is_a_timeout() {
    let server = TestInbound::default();
    let (_a, b) = tokio::io::duplex(64 * 1024);
    let settings = ConnectionSettings {
        hello_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let server_end = endpoint(Side::Server, &server, settings);
    let refused = establish(b, &server_end, peer(Side::Client), |_| Ok(())).await;
    assert!(matches!(refused, Err(HandshakeError::TimedOut(d)) if d == Duration::from_secs(3)));
}

#[tokio::test]
async fn a_second_hello_is_a_protocol_error() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    raw.send(hello(PROTOCOL_VERSION)).await.unwrap();
    let Some(Body::GoAway(go_away)) = next_frame(&mut raw).await else {
        panic!("no GoAway")
    };
    assert_eq!(go_away.reason, go_away::Reason::ProtocolError as i32);
    assert!(
        go_away.message.contains("second Hello"),
        "{}",
        go_away.message
    );
    handle.closed().await;
    assert!(handle.close_reason().contains("protocol error"));
}

#[tokio::test]
async fn chunks_past_the_window_are_a_protocol_error() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    // `get_wait` never reads its body, so no window comes back.
    let Body::Event(mut event) = raw_event(1, "wait", true) else {
        unreachable!()
    };
    event.args.clear();
    raw.send(Body::Event(event)).await.unwrap();
    let piece = Bytes::from(vec![0u8; 256 * 1024]);
    let pieces = WINDOW_BYTES as usize / piece.len() + 1;
    for _ in 0..pieces {
        let chunk = Body::Chunk(Chunk {
            request_id: 1,
            of_reply: false,
            data: piece.clone(),
            last: false,
            error: String::new(),
        });
        if raw.send(chunk).await.is_err() {
            break;
        }
    }
    let Some(Body::GoAway(go_away)) = next_frame(&mut raw).await else {
        panic!("no GoAway")
    };
    assert!(
        go_away.message.contains("beyond its"),
        "{}",
        go_away.message
    );
    handle.closed().await;
    assert_eq!(handle.in_flight_in(), 0);
}

#[tokio::test]
async fn events_past_the_slots_and_wait_places_are_refused_at_once() {
    let server = TestInbound::default();
    let settings = ConnectionSettings {
        max_concurrent_handlers: 1,
        ..Default::default()
    };
    let (handle, mut raw) = raw_client(&server, settings).await;
    let admitted = 1 + WAITING_PER_SLOT;
    for id in 1..=admitted as u64 + 1 {
        raw.send(raw_event(id, "wait", false)).await.unwrap();
    }
    let Some(Body::Reply(reply)) = next_frame(&mut raw).await else {
        panic!("no refusal")
    };
    assert_eq!(reply.request_id, admitted as u64 + 1);
    assert_eq!(reply.http_status, 503);
    assert_eq!(handle.in_flight_in(), admitted);
    assert!(
        server
            .seen
            .notices
            .lock()
            .unwrap()
            .contains(&LinkNotice::Busy)
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_after_dead_after() {
    let server = TestInbound::default();
    let settings = ConnectionSettings {
        ping_interval: Duration::from_secs(1),
        dead_after: Duration::from_secs(3),
        ..Default::default()
    };
    // The raw client reads (so pings go out) but never answers.
    let (handle, mut raw) = raw_client(&server, settings).await;
    let pings = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(frame)) = raw.next().await {
            if matches!(frame, Body::Ping(_)) {
                pings += 1;
            }
        }
        pings
    });
    handle.closed().await;
    assert!(
        handle.close_reason().contains("heartbeat deadline"),
        "{}",
        handle.close_reason()
    );
    assert!(pings.await.unwrap() >= 1);
    assert!(
        server
            .seen
            .notices
            .lock()
            .unwrap()
            .contains(&LinkNotice::Idle)
    );
}

#[tokio::test]
async fn a_closed_connection_fails_what_waits_on_it() {
    let (client, server) = (TestInbound::default(), TestInbound::default());
    let (to_server, to_client) = pair(&client, &server, ConnectionSettings::default()).await;
    let mut wait = echo("", 0);
    wait.handler = HandlerName::new("get", "wait");
    let waiting = tokio::spawn({
        let to_server = to_server.clone();
        async move { to_server.request(wait, Duration::from_secs(30)).await }
    });
    while to_client.in_flight_in() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    to_client.close(go_away::Reason::Shutdown, "test over");
    let outcome = waiting.await.unwrap();
    assert!(
        matches!(outcome, Err(RequestError::Disconnected { .. })),
        "{outcome:?}"
    );
    to_server.closed().await;
    assert_eq!(to_server.peer_go_away(), Some(go_away::Reason::Shutdown));
}

#[tokio::test]
async fn a_reply_that_arrived_wins_over_the_close_right_behind_it() {
    // The server answers and goes away in one burst: the client's reader
    // hands the reply over, then sees the close, before the caller's task
    // runs again. The reply must win, every time (it once lost half the
    // time, at random, and a finished request got 502 at shutdown).
    for _ in 0..32 {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client_end = endpoint(
            Side::Client,
            &TestInbound::default(),
            ConnectionSettings::default(),
        );
        let mut raw = Framed::new(b, FrameCodec::default());
        let connect = establish(a, &client_end, peer(Side::Server), |_| Ok(()));
        let answer_hello = async {
            let Some(Ok(Body::Hello(_))) = raw.next().await else {
                panic!("no Hello from the client")
            };
            raw.send(Body::Hello(proto::Hello {
                protocol_version: PROTOCOL_VERSION,
                role: proto::Role::Server as i32,
                node_name: "raw".into(),
                ..Default::default()
            }))
            .await
            .unwrap();
        };
        let (connected, ()) = tokio::join!(connect, answer_hello);
        let handle = connected.unwrap().0;
        let request = tokio::spawn({
            let handle = handle.clone();
            async move { handle.request(echo("x", 0), Duration::from_secs(5)).await }
        });
        let Some(Body::Event(event)) = next_frame(&mut raw).await else {
            panic!("no event")
        };
        // Reply, GoAway and the end of the stream, all at once.
        raw.feed(Body::Reply(proto::Reply {
            request_id: event.request_id,
            content_type: "text/plain".into(),
            body: Bytes::from_static(b"answer"),
            ..Default::default()
        }))
        .await
        .unwrap();
        raw.feed(Body::GoAway(proto::GoAway {
            reason: go_away::Reason::Shutdown as i32,
            message: "bye".into(),
        }))
        .await
        .unwrap();
        raw.flush().await.unwrap();
        drop(raw);
        handle.closed().await;
        let reply = request
            .await
            .unwrap()
            .expect("the reply was lost to the close");
        assert_eq!(&reply.body[..], b"answer");
    }
}
