//! Answering the peer's events: each admitted event waits for a handler
//! slot, goes up through [`super::Inbound`] within its deadline, and its reply (and
//! the reply's body) goes back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{sleep, sleep_until};

use super::connection::{Connection, WriterCommand};
use super::inbound::Delivery;
use crate::wire::proto::{Progress, frame::Body};
use tracing::warn;

use crate::wire::{HandlerError, Held, check_reply, failure_frame, reply_frame};

/// Runs one admitted event to completion (or cancellation) and replies:
/// waits for a handler slot, asks [`super::Inbound`] within the deadline, sends the
/// reply and streams its body.
pub(super) async fn answer_event(
    connection: Arc<Connection>,
    delivery: Delivery,
    // Held until the reply (and its body) is sent: the place among the
    // connection's events, and the inline body in its budget.
    _admitted: (OwnedSemaphorePermit, Held),
) {
    let request_id = delivery.request_id;
    let deadline = delivery.deadline;
    let cancelled = delivery.cancelled.clone();
    let reply = tokio::select! {
        _ = cancelled.cancelled() => None,
        _ = sleep_until(deadline) => None,
        reply = async {
            let _slot: OwnedSemaphorePermit = connection.slots.clone().acquire_owned().await.ok()?;
            Some(connection.inbound.answer(&connection.peer, delivery).await)
        } => reply,
    };
    // Once cancelled, nobody waits for the reply: sending it would be noise.
    let Some(reply) = reply.filter(|_| !cancelled.is_cancelled()) else {
        connection.running.remove(&request_id);
        return;
    };
    let (mut frame, mut stream) = reply_frame(request_id, reply);
    if let Err(over) = check_reply(&frame) {
        // Never sent to break the peer's limits: the caller gets 500 with
        // code 251, as for a reply over the frame limit.
        let failure = HandlerError::new("ReplyTooLarge", over.to_string());
        warn!(peer = %connection.peer.name, request_id, "{failure}");
        (frame, stream) = (failure_frame(request_id, &failure, None), None);
    }
    let sent = connection
        .frames_tx
        .send(WriterCommand::Frame(Box::new(Body::Reply(frame))))
        .await
        .is_ok();
    if let (true, Some(stream)) = (sent, stream) {
        // Still "running" while the body streams, so a Cancel stops it.
        connection
            .clone()
            .send_body((request_id, true), stream)
            .await;
    }
    connection.running.remove(&request_id);
}

/// At most this often a running job's progress goes to the peer.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Sends the progress reported on `watch` for the peer's job `request_id`,
/// the latest value at most every [`PROGRESS_EVERY`], until the run ends
/// (every report is dropped) or the connection does.
pub(super) async fn send_progress(
    connection: Arc<Connection>,
    request_id: u64,
    mut watch: watch::Receiver<u8>,
) {
    loop {
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            _ = connection.closed.cancelled() => return,
        }
        let percent = *watch.borrow_and_update();
        connection.send_control(Body::Progress(Progress {
            request_id,
            percent: percent.into(),
        }));
        sleep(PROGRESS_EVERY).await;
    }
}
