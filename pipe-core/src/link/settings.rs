//! Tunables of one connection and their defaults.

use std::time::Duration;

use crate::wire::{DEFAULT_MAX_BODY_MEMORY_PER_PEER, DEFAULT_MAX_FRAME_BYTES};

/// Default bound on handlers running at once for one connection: enough for
/// heavy fan-out, small enough that one peer cannot exhaust the node.
pub const DEFAULT_MAX_CONCURRENT_HANDLERS: usize = 256;
/// Default idle time after which a side sends `Ping`.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Default silence after which a peer is declared dead: three missed pings.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(15);
/// Default time allowed for the `Hello` exchange after TLS.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Default longest time a handler works on one of the peer's events,
/// whatever `timeout_ms` the peer sent: the front's own maximum (24 h).
pub const DEFAULT_MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Events that may wait for a handler slot, per slot: past
/// `max_concurrent_handlers * (1 + WAITING_PER_SLOT)` events in progress on
/// one connection, a new one is refused at once (503) instead of queueing
/// without bound.
pub const WAITING_PER_SLOT: usize = 3;

/// Tunables of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Largest frame accepted or sent.
    pub max_frame_bytes: usize,
    /// Handlers running at once for this connection; up to
    /// [`WAITING_PER_SLOT`] times as many more events wait, and events past
    /// those are refused with 503.
    pub max_concurrent_handlers: usize,
    /// Silence (nothing received) after which a `Ping` is sent.
    pub ping_interval: Duration,
    /// Silence after which the peer is dropped.
    pub dead_after: Duration,
    /// Deadline for the `Hello` exchange.
    pub hello_timeout: Duration,
    /// Longest deadline granted to the peer's event: a larger `timeout_ms`
    /// (up to `u64::MAX`, "forever") is cut to this.
    pub max_request_timeout: Duration,
    /// Bytes of this peer's bodies held at once (inline bodies of events in
    /// progress, streamed windows not yet read, bodies collected whole),
    /// within the node's own budget ([`super::Endpoint::body_memory`]).
    pub max_body_memory_per_peer: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_concurrent_handlers: DEFAULT_MAX_CONCURRENT_HANDLERS,
            ping_interval: DEFAULT_PING_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            max_request_timeout: DEFAULT_MAX_REQUEST_TIMEOUT,
            max_body_memory_per_peer: DEFAULT_MAX_BODY_MEMORY_PER_PEER,
        }
    }
}
