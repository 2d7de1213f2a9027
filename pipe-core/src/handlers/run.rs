//! Running one event: resolve its handler (the policy first), collect or
//! stream its body, parse JSON, call the handler with a panic caught, and
//! turn every failure into the reply the caller gets.

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::registry::{Handler, Request};
use super::sources::{Handlers, Resolution};
use crate::wire::body::BodyStream;
use crate::wire::{
    Event, HandlerError, RETURN_ACCESS_DENIED, RETURN_NO_HANDLER, Reply, is_json_type,
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
    pub event: Event,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Cancelled when the caller gives up.
    pub cancelled: CancellationToken,
}

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
        } = job;
        let name = &event.handler;
        let handler = match self.resolve(&peer, name) {
            Resolution::Found(handler) => handler,
            Resolution::Missing => {
                debug!(%peer, handler = %name, "no such handler");
                let body = serde_json::json!({
                    "error": format!("no handler named {:?} on this node", name.as_str()),
                });
                let reply = Reply::json(&body).with_return_code(RETURN_NO_HANDLER);
                return (reply, Outcome::Missing);
            }
            Resolution::Denied(message) => {
                warn!(%peer, handler = %name, "refused by the access policy");
                let reply = Reply::json(&serde_json::json!({ "error": message }))
                    .with_return_code(RETURN_ACCESS_DENIED);
                return (reply, Outcome::Denied);
            }
        };
        let handled = Outcome::Handled {
            handler: handler.metric_name(name.as_str()),
        };
        let (body, stream) = match body_for(
            handler.streams_body(),
            event.body,
            event.stream,
            max_body_bytes,
        )
        .await
        {
            Ok(body) => body,
            Err(failure) => {
                warn!(%peer, handler = %name, "{failure}");
                return (failure.into_reply(), handled);
            }
        };
        let json = if is_json_type(&event.content_type) && !body.is_empty() {
            serde_json::from_slice(&body).ok()
        } else {
            None
        };
        let (verb, noun) = event.handler.into_parts();
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
        };
        let peer = request.peer.clone();
        match call_caught(handler.as_ref(), request).await {
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

/// The body as the handler takes it: whole (collected up to `limit`) or as
/// a stream.
async fn body_for(
    streams: bool,
    inline: Bytes,
    stream: Option<BodyStream>,
    limit: usize,
) -> Result<(Bytes, Option<BodyStream>), HandlerError> {
    Ok(match (streams, stream) {
        (true, Some(stream)) => (Bytes::new(), Some(stream)),
        (true, None) => (Bytes::new(), Some(BodyStream::from_bytes(inline))),
        (false, None) => (inline, None),
        (false, Some(stream)) => match stream.collect(limit).await {
            Ok(body) => (body, None),
            Err(error) => return Err(HandlerError::new("BodyError", error.to_string())),
        },
    })
}
