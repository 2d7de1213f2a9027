//! Watching a running handler: its output against the limit, the deadline
//! and the caller's cancel; a whole reply once it has finished, or, past
//! `STREAM_AFTER_BYTES`, a reply that streams while it runs.

use std::io;
use std::process::ExitStatus;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use super::exit::describe;
use super::group::ProcessGroup;
use super::output::{OCTET_STREAM, declared_type};
use super::stderr::StderrTail;
use crate::wire::body::{self, BodyError, BodySink};
use crate::wire::{HandlerError, Reply};

/// Bytes read from stdout at a time.
const READ_BYTES: usize = 64 * 1024;

/// Why a running handler was stopped before it finished.
#[derive(Debug)]
pub(super) enum Stop {
    /// The request's deadline passed.
    Deadline,
    /// The caller cancelled the request.
    Cancelled,
    /// The request body did not arrive whole.
    Body(BodyError),
    /// Output past the limit.
    TooLarge,
    /// The reply's reader went away while streaming.
    ReaderGone,
    /// Reading stdout or waiting for the process failed.
    Io(io::Error),
}

/// A handler's process while it runs.
pub(super) struct Process {
    /// The handler's name, for logs and messages.
    pub(super) name: String,
    /// The node that sent the event.
    pub(super) peer: String,
    /// The event's request id, for logs.
    pub(super) request_id: u64,
    /// The program itself.
    pub(super) child: Child,
    /// Its place among the programs running on the node, held while it
    /// runs (streaming included).
    pub(super) _place: tokio::sync::OwnedSemaphorePermit,
    /// Its process group, killed when it is done with.
    pub(super) group: ProcessGroup,
    /// Its output.
    pub(super) stdout: ChildStdout,
    /// Whether its output may still bring more.
    pub(super) stdout_open: bool,
    /// Set once the program itself has exited.
    pub(super) status: Option<ExitStatus>,
    /// Feeds the request body to its stdin, until that is done.
    pub(super) feeder: Option<AbortOnDropHandle<Result<(), BodyError>>>,
    /// The end of its stderr, for the log.
    pub(super) stderr: StderrTail,
    /// Reads its progress reports (a durable job's run), while it runs.
    pub(super) _progress: Option<AbortOnDropHandle<()>>,
    /// When the request's deadline passes.
    pub(super) deadline: Instant,
    /// Cancelled when the caller gives up.
    pub(super) cancelled: CancellationToken,
}

/// What one step of a running handler produced.
enum Event {
    Read(io::Result<usize>),
    Exited(io::Result<ExitStatus>),
    Fed(Result<Result<(), BodyError>, tokio::task::JoinError>),
    Deadline,
    Cancelled,
}

impl Process {
    /// Whether the program has exited and its output has ended.
    pub(super) fn finished(&self) -> bool {
        !self.stdout_open && self.status.is_some()
    }

    /// Waits for the next thing to happen: output (appended to `output`),
    /// the end of output, the program's exit, the end of its input, or a
    /// reason to stop it.
    pub(super) async fn step(&mut self, output: &mut BytesMut) -> Result<(), Stop> {
        output.reserve(READ_BYTES);
        let feeding = self.feeder.is_some();
        let event = tokio::select! {
            read = self.stdout.read_buf(output), if self.stdout_open => Event::Read(read),
            status = self.child.wait(), if self.status.is_none() => Event::Exited(status),
            fed = async {
                match self.feeder.as_mut() {
                    Some(feeder) => feeder.await,
                    None => std::future::pending().await,
                }
            }, if feeding => Event::Fed(fed),
            () = sleep_until(self.deadline) => Event::Deadline,
            () = self.cancelled.cancelled() => Event::Cancelled,
        };
        match event {
            Event::Read(Ok(0)) => self.stdout_open = false,
            Event::Read(Ok(_)) => {}
            Event::Read(Err(error)) | Event::Exited(Err(error)) => return Err(Stop::Io(error)),
            Event::Exited(Ok(status)) => {
                self.status = Some(status);
                // Whatever it left running would hold stdout open (and
                // outlive the request): the handler is done, so is its group.
                self.group.kill().await;
            }
            Event::Fed(Ok(Err(error))) => return Err(Stop::Body(error)),
            Event::Fed(_) => self.feeder = None,
            Event::Deadline => return Err(Stop::Deadline),
            Event::Cancelled => return Err(Stop::Cancelled),
        }
        Ok(())
    }

    /// Kills the group for `stop`, logs, and says why as a handler failure.
    pub(super) async fn stopped(mut self, stop: Stop, limit: usize) -> HandlerError {
        self.group.kill().await;
        let (class, message) = match &stop {
            Stop::Deadline => ("Timeout", "the deadline passed".to_owned()),
            Stop::Cancelled => ("Cancelled", "the caller cancelled the request".to_owned()),
            Stop::Body(error) => ("BodyError", format!("the request body failed: {error}")),
            Stop::TooLarge => (
                "OutputTooLarge",
                format!("the output exceeded the limit of {limit} bytes"),
            ),
            Stop::ReaderGone => ("Cancelled", "the reply's reader went away".to_owned()),
            Stop::Io(error) => ("IoError", format!("watching the process failed: {error}")),
        };
        let message = format!("{}: {message}; its process group was killed", self.name);
        match stop {
            Stop::Cancelled | Stop::ReaderGone => {
                info!(handler = %self.name, peer = %self.peer, request_id = self.request_id, "{message}");
            }
            _ => {
                warn!(handler = %self.name, peer = %self.peer, request_id = self.request_id, "{message}")
            }
        }
        self.log_stderr("killed").await;
        HandlerError::new(class, message)
    }

    /// Logs what the handler wrote to stderr, if anything.
    pub(super) async fn log_stderr(&mut self, outcome: &str) {
        let tail = self.stderr.finish().await;
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim_end();
        if !text.is_empty() {
            warn!(
                handler = %self.name,
                peer = %self.peer,
                request_id = self.request_id,
                outcome,
                stderr = %text,
                "handler wrote to stderr"
            );
        }
    }

    /// Switches to a streamed reply once `output` has outgrown the buffer:
    /// the rest is pumped through as it comes, in bounded memory.
    pub(super) fn stream(self, output: Bytes, limit: usize) -> Reply {
        let (content_type, first) = match declared_type(&output) {
            Some((content_type, body_start)) => (content_type, output.slice(body_start..)),
            None => (OCTET_STREAM.to_owned(), output.clone()),
        };
        let (sink, stream) = body::channel(None);
        tokio::spawn(self.pump(first, output.len(), sink, limit));
        Reply::stream(content_type, stream)
    }

    /// Sends the output to `sink` until the program finishes; a failure cuts
    /// the body off (its headers are already on their way).
    async fn pump(mut self, first: Bytes, mut total: usize, sink: BodySink, limit: usize) {
        let outcome = async {
            self.send(&sink, first).await?;
            while !self.finished() {
                let mut piece = BytesMut::new();
                self.step(&mut piece).await?;
                if !piece.is_empty() {
                    total += piece.len();
                    if total > limit {
                        return Err(Stop::TooLarge);
                    }
                    self.send(&sink, piece.freeze()).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(stop) = outcome {
            let too_large = matches!(stop, Stop::TooLarge);
            let failure = self.stopped(stop, limit).await;
            sink.abort(if too_large {
                BodyError::TooLarge {
                    limit: limit as u64,
                }
            } else {
                BodyError::Aborted(failure.message)
            });
            return;
        }
        let status = self.status.unwrap_or_default();
        let outcome = describe(status);
        self.log_stderr(&outcome).await;
        if !status.success() {
            warn!(handler = %self.name, peer = %self.peer, request_id = self.request_id, "{} {outcome} after its reply began streaming: the body is cut off", self.name);
            sink.abort(BodyError::Aborted(format!("{} {outcome}", self.name)));
        }
        // Otherwise dropping the sink ends the body normally.
    }

    /// Hands a piece to the reader, unless the deadline or a cancel comes
    /// first.
    async fn send(&self, sink: &BodySink, piece: Bytes) -> Result<(), Stop> {
        tokio::select! {
            sent = sink.send(piece) => sent.map_err(|_| Stop::ReaderGone),
            () = sleep_until(self.deadline) => Err(Stop::Deadline),
            () = self.cancelled.cancelled() => Err(Stop::Cancelled),
        }
    }
}
