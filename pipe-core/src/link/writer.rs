//! The writer: the only code that writes to a connection's socket. Fed by
//! three queues (control frames first, then events and replies, then body
//! chunks only when nothing else waits), it batches whatever is queued into
//! one flush, and ends the connection on `Close` or a failed write.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, warn};

use super::WRITE_BUFFER;
use super::connection::{Connection, WriterCommand};
use super::error::RequestError;
use super::hello::CLOSE_TIMEOUT;
use super::progress::WriteClock;
use super::sink::FrameSink;
use crate::wire::proto::{GoAway, frame::Body};
use crate::wire::{FrameError, HandlerError, failure_frame};

/// Frames taken from the queue before one flush.
const MAX_BATCH_FRAMES: usize = 256;
/// Body bytes taken from the queue before one flush: enough to fill TLS
/// records, little enough that a control frame behind them waits briefly.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The queues the writer drains.
pub(super) struct WriterQueues {
    pub(super) frames: mpsc::Receiver<WriterCommand>,
    pub(super) control: mpsc::Receiver<Box<Body>>,
    pub(super) bulk: mpsc::Receiver<Box<Body>>,
}

/// How long the peer may accept nothing while we have bytes for it.
pub(super) struct WriteDeadline {
    pub(super) clock: Arc<WriteClock>,
    pub(super) dead_after: Duration,
}

/// Writes until the connection ends.
pub(super) async fn run<W>(
    mut sink: FrameSink<W>,
    mut queues: WriterQueues,
    deadline: WriteDeadline,
    connection: Arc<Connection>,
) where
    W: AsyncWrite + Unpin,
{
    // Writes in a row that carried a single frame.
    let mut lone_writes = u32::MAX;
    loop {
        let first = tokio::select! {
            biased;
            _ = connection.closed.cancelled() => break,
            Some(body) = queues.control.recv() => WriterCommand::Frame(body),
            next = queues.frames.recv() => match next {
                Some(next) => next,
                None => break,
            },
            // Only when nothing above is waiting: bulk data yields.
            Some(body) = queues.bulk.recv() => WriterCommand::Frame(body),
        };
        // Under load (one of the last few writes carried several frames,
        // more are already queued, or other requests of ours await their
        // replies, so their callers are about to send again), let the tasks
        // that are ready run first: a yielded task resumes after the
        // runtime has polled for I/O, so they queue more frames, which then
        // share this write (BENCH.md). The requests in flight matter: woken
        // straight after each caller, the writer would otherwise find one
        // frame each time and never leave lone writes. A lone request does
        // not wait: yielding would only wake an idle worker.
        if lone_writes < 4 || !queues.frames.is_empty() || connection.pending.len() > 1 {
            tokio::task::yield_now().await;
        }
        let batch = fill_batch(first, &mut queues);
        let quiet = batch.iter().all(is_heartbeat);
        lone_writes = if batch.len() > 1 {
            0
        } else {
            lone_writes.saturating_add(1)
        };
        let mut close: Option<Option<GoAway>> = None;
        // Writing starts the clock: an idle spell is not a stall.
        deadline.clock.mark();
        let written = tokio::select! {
            _ = connection.closed.cancelled() => break,
            written = write_batch(&mut sink, batch, &connection, &mut close) => written,
            _ = deadline.clock.stalled(deadline.dead_after) => {
                let dead_after = deadline.dead_after;
                warn!(peer = %connection.peer.name, connection = connection.id, "closing connection: the peer accepted nothing for {dead_after:?}");
                connection.record_close(format!(
                    "peer accepted nothing for {dead_after:?} (write deadline)"
                ));
                break;
            }
        };
        if let Err(error) = written {
            connection.record_close(format!("write failed: {error}"));
            debug!(peer = %connection.peer.name, "write failed: {error}");
            break;
        }
        if quiet {
            // A large reply or body leaves the write buffer at its largest
            // frame's size; an idle connection holds `WRITE_BUFFER` bytes,
            // whatever it carried before.
            sink.shrink_buffer(WRITE_BUFFER);
        }
        if let Some(go_away) = close {
            let _ = timeout(CLOSE_TIMEOUT, async {
                if let Some(go_away) = go_away {
                    let _ = sink.send(Body::GoAway(go_away)).await;
                }
                let _ = sink.get_mut().shutdown().await;
            })
            .await;
            break;
        }
    }
    connection.closed.cancel();
    debug!(peer = %connection.peer.name, connection = connection.id, "writer finished");
}

/// Whether `command` is a heartbeat frame: sent only when one side heard
/// nothing for a ping interval.
fn is_heartbeat(command: &WriterCommand) -> bool {
    matches!(command, WriterCommand::Frame(body) if matches!(**body, Body::Ping(_) | Body::Pong(_)))
}

/// Takes what is already queued after `first`, control frames first, so
/// that under load many frames share one TLS record and one syscall.
fn fill_batch(first: WriterCommand, queues: &mut WriterQueues) -> Vec<WriterCommand> {
    let mut bytes = payload_len(&first);
    let mut commands = vec![first];
    while let Ok(body) = queues.control.try_recv() {
        commands.push(WriterCommand::Frame(body));
    }
    let mut frames_drained = false;
    while commands.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
        match queues.frames.try_recv() {
            Ok(next) => {
                bytes += payload_len(&next);
                commands.push(next);
            }
            Err(_) => {
                frames_drained = true;
                break;
            }
        }
    }
    // Chunks only once the queue is empty: an event or reply is always
    // written before the chunks of its body, which follow it.
    while frames_drained && commands.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
        match queues.bulk.try_recv() {
            Ok(body) => {
                bytes += body_len(&body);
                commands.push(WriterCommand::Frame(body));
            }
            Err(_) => break,
        }
    }
    commands
}

/// Writes one batch and flushes it; a `Close` in it stops the batch there
/// and is handed back through `close`.
async fn write_batch<W>(
    sink: &mut FrameSink<W>,
    batch: Vec<WriterCommand>,
    connection: &Connection,
    close: &mut Option<Option<GoAway>>,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
{
    for command in batch {
        match command {
            WriterCommand::Frame(body) => feed_frame(sink, *body, connection)?,
            WriterCommand::Close(go_away) => {
                *close = Some(go_away);
                break;
            }
        }
    }
    sink.flush().await
}

/// Rough payload size of a queued frame, for batching.
fn payload_len(command: &WriterCommand) -> usize {
    let WriterCommand::Frame(body) = command else {
        return 0;
    };
    body_len(body)
}

/// Body bytes a frame carries, for batching.
fn body_len(body: &Body) -> usize {
    match body {
        Body::Chunk(chunk) => chunk.data.len(),
        Body::Event(event) => event.body.len(),
        Body::Reply(reply) => reply.body.len(),
        _ => 0,
    }
}

/// Buffers one frame. A frame over the limit is answered in kind, never
/// sent: an event fails its caller, a reply becomes a 251.
fn feed_frame<W>(
    sink: &mut FrameSink<W>,
    body: Body,
    connection: &Connection,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
{
    let (request_id, is_reply) = match &body {
        Body::Event(event) => (event.request_id, false),
        Body::Reply(reply) => (reply.request_id, true),
        _ => return sink.feed(body),
    };
    match sink.feed(body) {
        Err(FrameError::TooLarge { announced, limit }) => {
            if is_reply {
                let failure = HandlerError::new(
                    "ReplyTooLarge",
                    format!("reply of {announced} bytes exceeds the frame limit of {limit} bytes"),
                );
                warn!(peer = %connection.peer.name, request_id, "{failure}");
                sink.feed(Body::Reply(failure_frame(request_id, &failure, None)))
            } else {
                if let Some((_, waiter)) = connection.pending.remove(&request_id) {
                    let _ = waiter.send(Err(RequestError::TooLarge {
                        what: "bytes",
                        size: announced,
                        limit,
                    }));
                }
                Ok(())
            }
        }
        other => other,
    }
}
