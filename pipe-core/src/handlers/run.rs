//! Running one event: resolve its handler (the policy first), collect or
//! stream its body, parse JSON, call the handler with a panic caught, and
//! turn every failure into the reply the caller gets.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::registry::{Handler, Request};
use super::sources::{Handlers, Resolution};
use crate::wire::body::{BodyError, BodyStream};
use crate::wire::{
    Event, HandlerError, HandlerName, Held, JobProgress, MemoryBudget, OverBudget,
    RETURN_ACCESS_DENIED, RETURN_NO_HANDLER, Reply, is_json_type,
};

/// How an event's run ended, for the node's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The named handler ran (or its body could not be read).
    Handled {
        /// The name its runs are counted under: the handler's name
        /// (`get_time`), or one name for a handler of many (a forward).
        handler: String,
    },
    /// No source has a handler of that name.
    Missing,
    /// The access policy refused the peer this handler.
    Denied,
}

/// One event to run, from `peer`.
#[derive(Debug)]
pub struct Job {
    /// Identity of the node that sent the event.
    pub peer: String,
    /// The sender's id for this request.
    pub request_id: u64,
    /// The event.
    pub event: Box<Event>,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Cancelled when the caller gives up.
    pub cancelled: CancellationToken,
    /// Where a body collected whole (or parsed) is held while the handler
    /// runs: the peer connection's budget, inside the node's.
    pub bodies: Arc<MemoryBudget>,
    /// A durable job whose earlier run here was interrupted.
    pub redelivered: bool,
    /// Where its handler reports progress (a durable job's run).
    pub progress: JobProgress,
}

/// A parsed JSON value may take this many times its text in memory
/// (`[0,0,...]`: two bytes of text, a 32-byte value each); it is held in the
/// body budget at that estimate while the handler runs.
const JSON_EXPANSION: usize = 16;

impl Handlers {
    /// Runs `job` to its reply. Whole bodies are collected up to
    /// `max_body_bytes` for handlers that do not stream.
    pub async fn run(&self, job: Job, max_body_bytes: usize) -> (Reply, Outcome) {
        let Job {
            peer,
            request_id,
            event,
            deadline,
            cancelled,
            bodies,
            redelivered,
            progress,
        } = job;
        let name = &event.handler;
        let handler = match self.screen(&peer, name) {
            Ok(handler) => handler,
            Err(refused) => return *refused,
        };
        let handled = Outcome::Handled {
            handler: handler.metric_name(name.as_str()),
        };
        let body = body_for(
            handler.streams_body(),
            event.body,
            event.stream,
            max_body_bytes,
            &bodies,
        )
        .await;
        let (body, stream, held) = match body {
            Ok(body) => body,
            Err(error) => {
                warn!(%peer, handler = %name, "{error}");
                return (body_refusal(&error), handled);
            }
        };
        let json = match parse_json(&event.content_type, &body, &held) {
            Ok(json) => json,
            Err(over) => {
                warn!(%peer, handler = %name, "not parsing a JSON body: {over}");
                return (body_refusal(&BodyError::OverBudget(over)), handled);
            }
        };
        let (verb, noun) = event.handler.into_parts();
        progress.begin();
        let request = Request {
            peer,
            request_id,
            verb,
            noun,
            args: event.args,
            query: event.query,
            content_type: event.content_type,
            headers: event.headers,
            body,
            stream,
            deadline,
            cancelled,
            json,
            redelivered,
            progress,
        };
        let peer = request.peer.clone();
        let called = call_caught(handler.as_ref(), request).await;
        drop(held);
        match called {
            Ok(reply) => (reply, handled),
            Err(failure) => {
                if let Outcome::Handled { handler } = &handled {
                    warn!(%peer, %handler, "handler failed: {failure}");
                }
                (failure.into_reply(), handled)
            }
        }
    }
}

impl Handlers {
    /// The handler `peer` gets for `name`, or the reply that refuses it (no
    /// such handler, or the access policy) and its outcome: decided before
    /// any of the event's body is taken.
    pub fn screen(
        &self,
        peer: &str,
        name: &HandlerName,
    ) -> Result<Arc<dyn Handler>, Box<(Reply, Outcome)>> {
        match self.resolve(peer, name) {
            Resolution::Found(handler) => Ok(handler),
            Resolution::Missing => {
                debug!(%peer, handler = %name, "no such handler");
                let body = serde_json::json!({
                    "error": format!("no handler named {:?} on this node", name.as_str()),
                });
                let reply = Reply::json(&body).with_return_code(RETURN_NO_HANDLER);
                Err(Box::new((reply, Outcome::Missing)))
            }
            Resolution::Denied(message) => {
                warn!(%peer, handler = %name, "refused by the access policy");
                let reply = Reply::json(&serde_json::json!({ "error": message }))
                    .with_return_code(RETURN_ACCESS_DENIED);
                Err(Box::new((reply, Outcome::Denied)))
            }
        }
    }
}

/// Calls `handler` in this task (no extra spawn on the hot path), with a
/// panic caught and turned into a failure instead of taking the connection
/// down.
async fn call_caught(handler: &dyn Handler, request: Request) -> Result<Reply, HandlerError> {
    let outcome = std::panic::AssertUnwindSafe(handler.call(request))
        .catch_unwind()
        .await;
    match outcome {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".to_owned());
            Err(HandlerError::new("panic", message))
        }
    }
}

/// The body as the handler takes it: whole (collected up to `limit`, held
/// in `budget`) or as a stream. A refusal is the reply: 413 for a body
/// larger than the limit or than the budget could ever hold, 503 while the
/// budget is full.
async fn body_for(
    streams: bool,
    inline: Bytes,
    stream: Option<BodyStream>,
    limit: usize,
    budget: &Arc<MemoryBudget>,
) -> Result<(Bytes, Option<BodyStream>, Held), BodyError> {
    let nothing = budget.hold_nothing();
    Ok(match (streams, stream) {
        (true, Some(stream)) => (Bytes::new(), Some(stream), nothing),
        (true, None) => (Bytes::new(), Some(BodyStream::from_bytes(inline)), nothing),
        // Inline bodies are held by the link until the reply is sent.
        (false, None) => (inline, None, nothing),
        (false, Some(stream)) => match stream.collect_within(limit, budget).await {
            Ok((body, held)) => (body, None, held),
            Err(error) => return Err(error),
        },
    })
}

/// The reply for a body that could not be taken whole.
fn body_refusal(error: &BodyError) -> Reply {
    let status = match error {
        BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::OverBudget(over) if over.never_fits() => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::OverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
        BodyError::Aborted(_) => {
            return HandlerError::new("BodyError", error.to_string()).into_reply();
        }
    };
    HandlerError::new("BodyError", error.to_string())
        .into_reply()
        .with_http_status(status.as_u16())
}

/// The body parsed, when it is declared JSON; the parsed value is held in
/// the body budget (at [`JSON_EXPANSION`] times the text) while it lives.
fn parse_json(
    content_type: &str,
    body: &Bytes,
    held: &Held,
) -> Result<Option<serde_json::Value>, OverBudget> {
    if !is_json_type(content_type) || body.is_empty() {
        return Ok(None);
    }
    held.grow(body.len().saturating_mul(JSON_EXPANSION))?;
    Ok(serde_json::from_slice(body).ok())
}
