//! Progress of a durable job's run: reported by the receiver's handler,
//! carried back in `Progress` frames, handed to the job's waiter; a figure
//! over 100 is a protocol error, one for a request nobody waits on is
//! ignored.

use super::*;
use crate::wire::{JobProgress, JobTag};

fn progress_event(percent: u8, delay_ms: u64) -> Event {
    Event {
        handler: HandlerName::new("get", "progress"),
        args: vec![percent.to_string(), delay_ms.to_string()],
        ..echo("", 0)
    }
}

fn tag(id: &str) -> JobTag {
    JobTag {
        id: id.to_owned(),
        redelivery: false,
    }
}

#[tokio::test]
async fn a_job_handlers_progress_reaches_its_caller_before_the_reply() {
    let inbound = TestInbound::default();
    let (to_server, _to_client) = pair(&inbound, &inbound, ConnectionSettings::default()).await;
    let (progress, mut watch) = JobProgress::channel();
    let request = tokio::spawn(async move {
        to_server
            .request_job(
                progress_event(60, 300),
                Duration::from_secs(10),
                tag("job1"),
                progress,
            )
            .await
    });
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .expect("no progress within 5 s")
        .unwrap();
    // The start (0) may come first, 60 right behind it.
    if *watch.borrow_and_update() != 60 {
        watch.changed().await.unwrap();
    }
    assert_eq!(*watch.borrow_and_update(), 60);
    assert!(
        !request.is_finished(),
        "progress came with the reply, not before"
    );
    let reply = request.await.unwrap().unwrap();
    assert_eq!(reply.body, "watched true");
}

#[tokio::test]
async fn a_plain_event_has_nowhere_to_report() {
    let inbound = TestInbound::default();
    let (to_server, _to_client) = pair(&inbound, &inbound, ConnectionSettings::default()).await;
    let reply = to_server
        .request(progress_event(60, 0), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply.body, "watched false");
}

#[tokio::test]
async fn progress_over_100_is_a_protocol_error_and_an_unknown_request_is_ignored() {
    let server = TestInbound::default();
    let (_handle, mut raw) = raw_client(&server, ConnectionSettings::default()).await;
    let progress = |request_id, percent| {
        Body::Progress(proto::Progress {
            request_id,
            percent,
        })
    };
    raw.send(progress(77, 50)).await.unwrap();
    // Still connected: an event is answered.
    raw.send(raw_event(1, "echo", false)).await.unwrap();
    let Some(Body::Reply(reply)) = next_frame(&mut raw).await else {
        panic!("no reply after a stray Progress")
    };
    assert_eq!(reply.request_id, 1);
    raw.send(progress(77, 101)).await.unwrap();
    let Some(Body::GoAway(go_away)) = next_frame(&mut raw).await else {
        panic!("no GoAway")
    };
    assert_eq!(go_away.reason, go_away::Reason::ProtocolError as i32);
    assert!(go_away.message.contains("over 100"), "{}", go_away.message);
}
