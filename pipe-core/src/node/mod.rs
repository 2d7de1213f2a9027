//! A running node: its shared state ([`Node`]), the peer directory (the
//! one seam for "which connection serves peer X"), the server's accept loop
//! and the client's reconnect actor with the servers it fails over
//! between (directly or through an HTTP proxy), backoff, connection events, metrics,
//! recent errors for people, and closing connections whose peer's certificate was revoked. Builds on the link and handler layers.

mod admission;
mod backoff;
mod client;
pub mod cluster;
mod dial;
mod directory;
mod events;
mod inbound;
pub mod jobs;
pub mod metrics;
#[allow(clippy::module_inception)]
mod node;
mod proxy;
mod recent_errors;
mod revocation;
mod server;
mod servers;
mod tunnel;

pub use admission::{MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE};
pub use backoff::{
    Backoff, BackoffSettings, DEFAULT_MAX_DELAY, DEFAULT_MIN_DELAY, DEFAULT_STABLE_AFTER,
};
pub use client::{ConnectError, DEFAULT_CONNECT_TIMEOUT, run as run_client};
pub use directory::{LocalPeers, Lookup, LookupFuture, PeerDirectory, SERVER_KEY, Session};
pub use events::{ConnectionEvent, EventSink};
pub use metrics::{Metrics, MetricsError, StatsdSettings};
pub use node::{
    DEFAULT_DRAIN_GRACE, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_JOB_EXPIRY, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUEUED_JOBS, DEFAULT_MAX_RUNNING_HANDLERS,
    DEFAULT_PEER_WAIT, DEFAULT_REQUEST_TIMEOUT, FRAME_OVERHEAD_BYTES, LinkState, Node,
    NodeSettings,
};
pub(crate) use proxy::hide_credentials;
pub use proxy::{Proxies, ProxyUrl, ProxyUrlError};
pub use recent_errors::{MAX_ERROR_CHARS, MAX_RECENT_ERRORS, RecentError, RecentErrors};
pub use server::run as run_server;
pub use servers::{ServerAddress, ServerTarget};
pub use tunnel::{MAX_ANSWER_HEAD, ProxyError, ProxyStatus};
