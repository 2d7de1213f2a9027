//! Hostile peers (issue 11): duplicate ids, endless deadlines, header and
//! argument floods, cancels ahead of their events, and a peer that stops
//! reading. Each side is a real link; the peer writes raw frames.

use super::*;

/// The next frame that is not a heartbeat, or `None` after a few seconds:
/// a link whose task died answers nothing.
async fn next_frame_soon(raw: &mut Framed<DuplexStream, FrameCodec>) -> Option<Body> {
    tokio::time::timeout(Duration::from_secs(5), next_frame(raw))
        .await
        .ok()
        .flatten()
}

/// Asserts the next frame is a protocol-error `GoAway` mentioning `words`.
async fn expect_protocol_error(raw: &mut Framed<DuplexStream, FrameCodec>, words: &str) {
    let frame = next_frame_soon(raw).await;
    let Some(Body::GoAway(go_away)) = frame else {
        panic!("expected GoAway, got {frame:?}")
    };
    assert_eq!(go_away.reason, go_away::Reason::ProtocolError as i32);
    assert!(go_away.message.contains(words), "{}", go_away.message);
}

fn headers(count: usize, value_bytes: usize) -> Vec<proto::Header> {
    (0..count)
        .map(|i| proto::Header {
            name: format!("x-{i}"),
            value: Bytes::from(vec![b'v'; value_bytes]),
        })
        .collect()
}

#[tokio::test]
async fn a_duplicate_request_id_is_a_protocol_error() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    raw.send(raw_event(1, "wait", false)).await.unwrap();
    while handle.in_flight_in() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Same id while the first still runs: never an overwrite.
    raw.send(raw_event(1, "echo", false)).await.unwrap();
    expect_protocol_error(&mut raw, "duplicate request id 1").await;
    handle.closed().await;
    assert!(handle.close_reason().contains("duplicate"));
}

#[tokio::test]
async fn an_endless_timeout_from_the_peer_is_cut_to_our_maximum() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    let Body::Event(mut event) = raw_event(1, "deadline", false) else {
        unreachable!()
    };
    event.timeout_ms = u64::MAX;
    raw.send(Body::Event(event)).await.unwrap();
    let frame = next_frame_soon(&mut raw).await;
    let Some(Body::Reply(reply)) = frame else {
        panic!("no reply: {frame:?}")
    };
    let left: u64 = std::str::from_utf8(&reply.body).unwrap().parse().unwrap();
    // The default maximum, 24 h.
    assert!(left <= 24 * 60 * 60, "{left} s");
    assert!(left > 23 * 60 * 60, "{left} s");
    assert!(!handle.is_closed());
}

#[tokio::test]
async fn a_cancel_that_overtook_its_event_stops_it_from_running() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    raw.send(Body::Cancel(proto::Cancel {
        request_id: 5,
        reason: "the caller stopped waiting".into(),
    }))
    .await
    .unwrap();
    raw.send(raw_event(5, "echo", false)).await.unwrap();
    raw.send(raw_event(6, "echo", false)).await.unwrap();
    let frame = next_frame_soon(&mut raw).await;
    let Some(Body::Reply(reply)) = frame else {
        panic!("no reply: {frame:?}")
    };
    assert_eq!(reply.request_id, 6, "the cancelled event ran");
    assert_eq!(server.seen.answered.load(AtomicOrdering::SeqCst), 1);
    assert!(!handle.is_closed());
}

#[tokio::test]
async fn too_many_headers_on_an_event_are_a_protocol_error() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    let Body::Event(mut event) = raw_event(1, "echo", false) else {
        unreachable!()
    };
    event.headers = headers(1000, 1);
    raw.send(Body::Event(event)).await.unwrap();
    expect_protocol_error(&mut raw, "headers exceed the limit").await;
    handle.closed().await;
    assert_eq!(server.seen.answered.load(AtomicOrdering::SeqCst), 0);
}

#[tokio::test]
async fn too_many_header_bytes_or_arguments_are_a_protocol_error() {
    let server = TestInbound::default();
    let (_handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    let Body::Event(mut event) = raw_event(1, "echo", false) else {
        unreachable!()
    };
    event.headers = headers(2, 40 * 1024);
    raw.send(Body::Event(event)).await.unwrap();
    expect_protocol_error(&mut raw, "bytes of headers").await;

    let (_handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    let Body::Event(mut event) = raw_event(1, "echo", false) else {
        unreachable!()
    };
    event.args.extend((0..1000).map(|i| i.to_string()));
    raw.send(Body::Event(event)).await.unwrap();
    expect_protocol_error(&mut raw, "arguments exceed").await;
    assert_eq!(server.seen.answered.load(AtomicOrdering::SeqCst), 0);
}

#[tokio::test]
async fn too_many_headers_on_a_reply_are_a_protocol_error() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    let request = tokio::spawn({
        let handle = handle.clone();
        async move { handle.request(echo("x", 0), Duration::from_secs(30)).await }
    });
    let Some(Body::Event(event)) = next_frame_soon(&mut raw).await else {
        panic!("no event")
    };
    raw.send(Body::Reply(proto::Reply {
        request_id: event.request_id,
        headers: headers(40_000, 0),
        ..Default::default()
    }))
    .await
    .unwrap();
    expect_protocol_error(&mut raw, "headers exceed the limit").await;
    let outcome = request.await.unwrap();
    assert!(
        matches!(outcome, Err(RequestError::Disconnected { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_frame_of_empty_repeated_strings_is_refused_before_decoding() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    // 4 MiB of empty arguments: 2 bytes each on the wire, 24 bytes and more
    // each once decoded.
    let Body::Event(mut event) = raw_event(1, "echo", false) else {
        unreachable!()
    };
    event.args = vec![String::new(); 2 * 1024 * 1024];
    raw.send(Body::Event(event)).await.unwrap();
    expect_protocol_error(&mut raw, "arguments exceed").await;
    handle.closed().await;
}

#[tokio::test]
async fn our_own_event_over_a_limit_fails_before_it_is_sent() {
    let (client, server) = (TestInbound::default(), TestInbound::default());
    let (to_server, _to_client) = pair(&client, &server, ConnectionSettings::default()).await;
    let mut event = echo("x", 0);
    for i in 0..300 {
        event.headers.append(
            http::HeaderName::try_from(format!("x-{i}")).unwrap(),
            http::HeaderValue::from_static("v"),
        );
    }
    let outcome = to_server.request(event, Duration::from_secs(5)).await;
    assert!(
        matches!(outcome, Err(RequestError::TooLarge { size: 300, .. })),
        "{outcome:?}"
    );
    // The connection carries on.
    let reply = to_server.request(echo("after", 0), Duration::from_secs(5));
    assert_eq!(reply.await.unwrap().body, "after");
}

#[tokio::test]
async fn our_own_reply_over_a_limit_becomes_a_failure_reply() {
    let (client, server) = (TestInbound::default(), TestInbound::default());
    let (to_server, _to_client) = pair(&client, &server, ConnectionSettings::default()).await;
    let mut event = echo("300", 0);
    event.handler = HandlerName::new("get", "headers");
    let reply = to_server.request(event, Duration::from_secs(5)).await;
    let reply = reply.unwrap();
    assert_eq!(reply.return_code, crate::wire::RETURN_HANDLER_FAILED);
    let body = String::from_utf8_lossy(&reply.body);
    assert!(body.contains("ReplyTooLarge"), "{body}");
    // Within the limit it goes through, and the connection carries on.
    let mut event = echo("200", 0);
    event.handler = HandlerName::new("get", "headers");
    let reply = to_server.request(event, Duration::from_secs(5)).await;
    assert_eq!(reply.unwrap().headers.len(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_dropped_within_dead_after() {
    let server = TestInbound::default();
    let settings = ConnectionSettings {
        ping_interval: Duration::from_secs(1),
        dead_after: Duration::from_secs(3),
        ..Default::default()
    };
    // A small pipe whose far end pings forever and never reads: the pongs
    // fill it, then nothing more can be written.
    let (handle, raw) = raw_client_over(&server, settings.clone(), 1024).await;
    let (mut write_only, _never_read) = raw.split();
    let sent = Arc::new(AtomicUsize::new(0));
    let pinger = tokio::spawn({
        let sent = sent.clone();
        async move {
            for nonce in 0.. {
                if write_only.send(Body::Ping(Ping { nonce })).await.is_err() {
                    break;
                }
                sent.fetch_add(1, AtomicOrdering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let closed = tokio::time::timeout(settings.dead_after * 2, handle.closed()).await;
    assert!(closed.is_ok(), "still open: {}", handle.close_reason());
    // Its pings stopped being read once our pongs for it piled up: what it
    // costs us is bounded by the control queue, not by how long it pings.
    let sent = sent.load(AtomicOrdering::SeqCst);
    assert!(sent < 2 * CONTROL_QUEUE, "{sent} pings read");
    assert!(
        handle.close_reason().contains("accepted nothing"),
        "{}",
        handle.close_reason()
    );
    pinger.abort();
}

#[tokio::test(start_paused = true)]
async fn close_finishes_even_if_the_peer_reads_nothing() {
    let server = TestInbound::default();
    let settings = ConnectionSettings::default();
    let (handle, raw) = raw_client_over(&server, settings.clone(), 1024).await;
    // Events the peer never reads fill the pipe; the GoAway queues behind.
    for _ in 0..20 {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut event = echo(&"x".repeat(4096), 0);
            event.handler = HandlerName::new("get", "wait");
            handle.request(event, Duration::from_secs(600)).await
        });
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    handle.close(go_away::Reason::Shutdown, "test over");
    let closed = tokio::time::timeout(Duration::from_secs(5), handle.closed()).await;
    assert!(closed.is_ok(), "close waited on the peer");
    drop(raw);
}

#[tokio::test]
async fn a_peers_go_away_reason_is_escaped_and_capped_before_anyone_shows_it() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    let hostile = format!("bye\u{1b}[2J\nforged log line{}", "x".repeat(100_000));
    raw.send(Body::GoAway(proto::GoAway {
        reason: go_away::Reason::Shutdown as i32,
        message: hostile,
    }))
    .await
    .unwrap();
    drop(raw);
    handle.closed().await;
    // The close reason reaches status, hooks and logs.
    let reason = handle.close_reason();
    assert!(
        reason.starts_with("peer went away: bye\\u{1b}[2J\\nforged"),
        "{reason}"
    );
    assert!(!reason.chars().any(char::is_control), "{reason:?}");
    assert!(
        reason.chars().count() < crate::wire::MAX_PEER_TEXT + 32,
        "{}",
        reason.len()
    );
}
