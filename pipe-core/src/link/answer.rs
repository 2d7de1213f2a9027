//! Answering the peer's events: each admitted event waits for a handler
//! slot, goes up through [`super::Inbound`] within its deadline, and its reply (and
//! the reply's body) goes back.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{sleep, sleep_until};

use super::connection::{Connection, WriterCommand};
use super::inbound::Delivery;
use crate::wire::proto::{Progress, frame::Body};
use tracing::warn;

use crate::wire::{HandlerError, Held, check_reply, failure_frame, reply_frame};

/// Answers one admitted event: polled once here, in the reader, so an
/// event whose handler answers at once (most small requests) is answered
/// without a task of its own, and its reply joins the other replies to the
/// same read in one write instead of waking the writer from another worker
/// (BENCH.md: TLS writes per request). An answer that has to wait (for a
/// handler slot, a body, a handler that awaits) goes on in its own task,
/// which polls it again at once, so whatever it waits for learns that
/// task's waker.
pub(super) fn start_answer(
    connection: Arc<Connection>,
    delivery: Delivery,
    admitted: (OwnedSemaphorePermit, Held),
) {
    // Boxed: the future (the delivery and every state it goes through) is
    // large, and moving it into a task whole costs more than an allocation.
    let mut answer = Box::pin(answer_event(connection, delivery, admitted));
    let mut first_poll = Context::from_waker(Waker::noop());
    if answer.as_mut().poll(&mut first_poll).is_pending() {
        tokio::spawn(answer);
    }
}

/// Runs one admitted event to completion (or cancellation) and replies:
/// waits for a handler slot, asks [`super::Inbound`] within the deadline, sends the
/// reply and streams its body.
async fn answer_event(
    connection: Arc<Connection>,
    delivery: Delivery,
    // Held until the reply (and its body) is sent: the place among the
    // connection's events, and the inline body in its budget.
    _admitted: (OwnedSemaphorePermit, Held),
) {
    let request_id = delivery.request_id;
    let deadline = delivery.deadline;
    let cancelled = delivery.cancelled.clone();
    // The answer first: an event answered at once (most small requests)
    // then never registers the deadline's timer nor a waiter on the
    // cancellation, and a reply ready as the deadline passes still goes.
    // An answer that waits has both watched from its first poll on.
    let reply = tokio::select! {
        biased;
        reply = async {
            let _slot: OwnedSemaphorePermit = connection.slots.clone().acquire_owned().await.ok()?;
            Some(connection.inbound.answer(&connection.peer, delivery).await)
        } => reply,
        _ = cancelled.cancelled() => None,
        _ = sleep_until(deadline) => None,
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
