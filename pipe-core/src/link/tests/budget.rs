//! What a peer's bodies may hold of our memory (issue 11, items 4 and 5):
//! inline bodies and unread windows count against the connection's budget,
//! a body past it is refused without ending the connection, and an event
//! that cannot run is refused before any of its body is admitted.

use super::*;
use crate::wire::proto::Window;

/// A raw event `get_<noun>` carrying `inline` bytes of body.
fn event_with_body(request_id: u64, noun: &str, inline: usize) -> Body {
    let Body::Event(mut event) = raw_event(request_id, noun, false) else {
        unreachable!()
    };
    event.body = Bytes::from(vec![b'b'; inline]);
    Body::Event(event)
}

/// The next reply, skipping heartbeats and windows; panics after 5 s.
async fn next_reply(raw: &mut Framed<DuplexStream, FrameCodec>) -> proto::Reply {
    let frame = tokio::time::timeout(Duration::from_secs(5), next_frame(raw))
        .await
        .ok()
        .flatten();
    match frame {
        Some(Body::Reply(reply)) => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// Waits until the link's budget for this peer holds `bytes`.
async fn until_held(handle: &PeerHandle, bytes: usize) {
    for _ in 0..500 {
        if handle.connection.bodies.used() == bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "budget holds {} bytes, expected {bytes}",
        handle.connection.bodies.used()
    );
}

fn small_budget(bytes: usize) -> ConnectionSettings {
    ConnectionSettings {
        max_body_memory_per_peer: bytes,
        ..ConnectionSettings::default()
    }
}

#[tokio::test]
async fn inline_bodies_past_the_peers_budget_are_refused_and_the_link_goes_on() {
    let server = TestInbound::default();
    let (handle, mut raw) = raw_client(&server, small_budget(10_000)).await;
    // Held while its handler runs.
    raw.send(event_with_body(1, "wait", 6_000)).await.unwrap();
    until_held(&handle, 6_000).await;
    // Does not fit now: come back later.
    raw.send(event_with_body(2, "echo", 6_000)).await.unwrap();
    let reply = next_reply(&mut raw).await;
    assert_eq!((reply.request_id, reply.http_status), (2, 503));
    assert!(
        String::from_utf8_lossy(&reply.body).contains("memory for bodies"),
        "{:?}",
        reply.body
    );
    // Can never fit: too large.
    raw.send(event_with_body(3, "echo", 20_000)).await.unwrap();
    let reply = next_reply(&mut raw).await;
    assert_eq!((reply.request_id, reply.http_status), (3, 413));
    // Once the first is over, its bytes are given back.
    raw.send(Body::Cancel(proto::Cancel {
        request_id: 1,
        reason: String::new(),
    }))
    .await
    .unwrap();
    until_held(&handle, 0).await;
    raw.send(event_with_body(4, "echo", 6_000)).await.unwrap();
    let reply = next_reply(&mut raw).await;
    assert_eq!((reply.request_id, &reply.body[..]), (4, &b"x"[..]));
    assert!(!handle.is_closed());
    until_held(&handle, 0).await;
}

#[tokio::test]
async fn an_unread_streamed_body_past_the_budget_is_stopped_and_given_back() {
    let server = TestInbound::default();
    let budget = 512 * 1024;
    let (handle, mut raw) = raw_client(&server, small_budget(budget)).await;
    // `get_wait` never reads its body: the window fills our memory.
    raw.send(raw_event(1, "wait", true)).await.unwrap();
    let piece = Bytes::from(vec![b'c'; 128 * 1024]);
    // Within the peer's 2 MiB window, past our 512 KiB budget.
    for _ in 0..8 {
        raw.send(Body::Chunk(Chunk {
            request_id: 1,
            of_reply: false,
            data: piece.clone(),
            last: false,
            error: String::new(),
        }))
        .await
        .unwrap();
    }
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match raw.next().await {
                Some(Ok(Body::Window(Window {
                    request_id: 1,
                    of_reply: false,
                    stop: true,
                    ..
                }))) => return true,
                Some(Ok(_)) => continue,
                _ => return false,
            }
        }
    })
    .await;
    assert_eq!(stopped, Ok(true), "the peer was never told to stop");
    // What arrived stays counted, unread, until its handler lets go of the
    // body; nothing past the budget was taken. The connection carries on.
    until_held(&handle, 4 * 128 * 1024).await;
    assert!(handle.connection.bodies.used() <= budget);
    raw.send(Body::Cancel(proto::Cancel {
        request_id: 1,
        reason: String::new(),
    }))
    .await
    .unwrap();
    until_held(&handle, 0).await;
    raw.send(raw_event(2, "echo", false)).await.unwrap();
    assert_eq!(next_reply(&mut raw).await.request_id, 2);
    assert!(!handle.is_closed());
}

#[tokio::test]
async fn an_event_that_cannot_run_is_refused_before_a_slot_or_its_body() {
    let server = TestInbound::default();
    let settings = ConnectionSettings {
        max_concurrent_handlers: 1,
        ..ConnectionSettings::default()
    };
    let (handle, mut raw) = raw_client(&server, settings).await;
    // The only handler slot is taken.
    raw.send(raw_event(1, "wait", false)).await.unwrap();
    while handle.in_flight_in() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    raw.send(raw_event(2, "denied", true)).await.unwrap();
    let reply = next_reply(&mut raw).await;
    assert_eq!((reply.request_id, &reply.body[..]), (2, &b"denied"[..]));
    assert_eq!(server.seen.answered.load(AtomicOrdering::SeqCst), 1);
    // Its body is not taken: no table entry for it.
    assert!(handle.connection.receiving.is_empty());
    assert!(!handle.is_closed());
}
