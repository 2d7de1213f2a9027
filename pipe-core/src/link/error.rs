//! Why a request through the pipe got no reply.

use std::time::Duration;

/// Why a request through the pipe got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The connection ended before the reply came.
    #[error("the connection to {peer} closed before the reply arrived ({reason})")]
    Disconnected {
        /// The peer's identity.
        peer: String,
        /// Why the connection ended.
        reason: String,
    },
    /// The deadline passed; the far handler was told to stop.
    #[error("no reply from {peer} within {timeout:?}")]
    TimedOut {
        /// The peer's identity.
        peer: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The peer announced it is going away and takes no new requests.
    #[error("{peer} is going away and takes no new requests")]
    GoingAway {
        /// The peer's identity.
        peer: String,
    },
    /// The event does not fit in one frame, or carries more headers or
    /// arguments (or bytes of them) than the protocol allows.
    #[error("event of {size} {what} exceeds the limit of {limit} {what}")]
    TooLarge {
        /// What was counted: "bytes" for the frame, else which limit.
        what: &'static str,
        /// Encoded size, or the count.
        size: usize,
        /// The limit.
        limit: usize,
    },
}
