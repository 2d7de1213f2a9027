//! Thin wrappers over internals, for the fuzz targets only (feature
//! `fuzzing`, which only the fuzz crate enables). Nothing here is part of
//! the library's interface; each wrapper forwards to the code it names, so
//! the targets test exactly what the nodes run.

use std::time::Duration;

use crate::handlers::Forwards;
use crate::link::PeerHandle;
use crate::wire::{self, Event, LimitError, Reply, proto};

/// Longest deadline a caller may ask for with `X-Pipe-Timeout`.
pub const MAX_PIPE_TIMEOUT: Duration = crate::front::MAX_TIMEOUT;

/// Parses an `X-Pipe-Timeout` value as the front does: the deadline, or the
/// message of the 400 that refuses it.
pub fn parse_pipe_timeout(value: &[u8]) -> Result<Duration, String> {
    crate::front::parse_timeout(value)
}

/// The upstream URI the forward answering `noun` asks for, exactly as the
/// forward handler builds it; `None` when no forward answers the noun
/// (the handler source refuses it, so nothing is asked).
pub fn forward_uri(
    forwards: &Forwards,
    noun: &str,
    args: &[String],
    query: &str,
) -> Option<Result<http::Uri, String>> {
    forwards.upstream_uri(noun, args, query)
}

/// How many entries one link's tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTables {
    /// Our requests awaiting the peer's reply.
    pub pending: usize,
    /// The peer's requests our handlers are working on.
    pub running: usize,
    /// Streamed bodies arriving from the peer.
    pub receiving: usize,
    /// Streamed bodies we are sending.
    pub sending: usize,
}

/// The sizes of `handle`'s connection tables.
pub fn link_tables(handle: &PeerHandle) -> LinkTables {
    let [pending, running, receiving, sending] = handle.table_sizes();
    LinkTables {
        pending,
        running,
        receiving,
        sending,
    }
}

/// The frame a sender makes of `event` (a streamed body is dropped).
pub fn event_to_wire(request_id: u64, event: Event, timeout: Duration) -> proto::Event {
    wire::event_frame(request_id, event, timeout).0
}

/// The event a receiver makes of `frame`, and the sender's timeout.
pub fn event_from_wire(frame: proto::Event) -> (Event, Duration) {
    let received = wire::ReceivedEvent::from(frame);
    (received.event, received.timeout)
}

/// The frame a sender makes of `reply` (a streamed body is dropped).
pub fn reply_to_wire(request_id: u64, reply: Reply) -> proto::Reply {
    wire::reply_frame(request_id, reply).0
}

/// The reply a receiver makes of `frame`.
pub fn reply_from_wire(frame: proto::Reply) -> Reply {
    wire::ReceivedReply::from(frame).reply
}

/// Headers as they travel in frames.
pub fn headers_to_wire(headers: &http::HeaderMap) -> Vec<proto::Header> {
    wire::headers_to_wire(headers)
}

/// Headers as a receiver takes them from a frame.
pub fn headers_from_wire(headers: Vec<proto::Header>) -> http::HeaderMap {
    wire::headers_from_wire(headers)
}

/// The limits a receiver checks on an event before converting it.
pub fn check_event(event: &proto::Event) -> Result<(), LimitError> {
    wire::check_event(event)
}

/// The limits a receiver checks on a reply before converting it.
pub fn check_reply(reply: &proto::Reply) -> Result<(), LimitError> {
    wire::check_reply(reply)
}
