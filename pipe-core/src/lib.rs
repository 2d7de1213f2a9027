//! restpipe's library: everything both nodes are made of, in layers whose
//! dependencies point one way, from the top of this list down:
//!
//! - `ops`: configuration, launch, logging, identity files and the CA kit;
//! - `front`: the local HTTP front and its URL router;
//! - `node`: a running node, its peer directory, the server's accept loop
//!   and the client's reconnect actor, connection events, metrics;
//! - `handlers`: running an event: the registry, handler sources in
//!   precedence order, the access policy, executables and forwards;
//! - `link`: one multiplexed connection over mutual TLS: handshake, reader,
//!   writer, flow control, pending replies;
//! - `wire`: the protobuf messages, the frame codec, streamed bodies and the
//!   domain types with their one mapping to and from the wire.
//!
//! The modules are private; what a user of the library needs is re-exported
//! here, by name. The operations layer is public as modules (`config`,
//! `launch`, ...), since the binaries drive it.

#![warn(unreachable_pub)]

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

mod front;
mod handlers;
mod link;
mod node;
mod ops;
mod wire;

pub use front::{
    ApiToken, ApiTokens, HttpAddr, HttpAddrError, HttpListener, METRICS_PATH, NewToken,
    RETURN_CODE_HEADER, ResponseBody, SocketOptions, TIMEOUT_HEADER, TOKEN_PREFIX, TokenError,
    TokenGate, log_listening, router, serve as serve_http, serve_metrics,
};
pub use handlers::{
    DEFAULT_MAX_EXEC_PROCESSES, DEFAULT_MAX_UPSTREAM_CONNECTIONS, ExecDirectory, Forwards,
    GroupLedger, HANDLER_PATH, Handler, HandlerFuture, HandlerResult, HandlerSource, Handlers, Job,
    Outcome, PEER_HEADER, Policy, PolicyError, Registry, Request, Resolution, STREAM_AFTER_BYTES,
    is_handler_name,
};
pub use link::{
    ALPN, CertFiles, CertificateError, CertificateId, ConnectionSettings, DEFAULT_DEAD_AFTER,
    DEFAULT_HELLO_TIMEOUT, DEFAULT_MAX_CONCURRENT_HANDLERS, DEFAULT_MAX_REQUEST_TIMEOUT,
    DEFAULT_PING_INTERVAL, Delivery, Endpoint, HandshakeError, Inbound, LinkNotice, LocalHello,
    MAX_NODE_NAME_LEN, PeerHandle, PeerInfo, Reloadable, ReplyFuture, RequestError,
    RevocationError, RevocationList, Role, TlsError, TlsIdentity, WAITING_PER_SLOT, establish,
    has_extended_key_usage, is_valid_node_name, node_name, peer_identity,
};
pub use node::cluster;
pub use node::jobs;
pub use node::{
    Backoff, BackoffSettings, ConnectError, ConnectionEvent, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_GRACE, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_JOB_EXPIRY, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_DELAY, DEFAULT_MAX_QUEUED_JOBS,
    DEFAULT_MAX_RUNNING_HANDLERS, DEFAULT_MIN_DELAY, DEFAULT_PEER_WAIT, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_STABLE_AFTER, EventSink, FRAME_OVERHEAD_BYTES, LinkState, LocalPeers, Lookup,
    LookupFuture, MAX_ANSWER_HEAD, MAX_ERROR_CHARS, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE,
    MAX_RECENT_ERRORS, Metrics, MetricsError, Node, NodeSettings, PeerDirectory, Proxies,
    ProxyError, ProxyStatus, ProxyUrl, ProxyUrlError, RecentError, RecentErrors, SERVER_KEY,
    ServerAddress, ServerTarget, Session, StatsdSettings, metrics, run_client, run_server,
};
pub use ops::launch::{ReloadError, SetIdentityError};
pub use ops::{config, docs_cli, identity, jobs_cli, launch, logging, pki, tokens_cli};
pub use wire::{
    BudgetScope, DEFAULT_MAX_BODY_MEMORY, DEFAULT_MAX_BODY_MEMORY_PER_PEER,
    DEFAULT_MAX_FRAME_BYTES, Event, FrameCodec, FrameError, HandlerError, HandlerName, Held, JSON,
    JobProgress, JobTag, LimitError, MAX_ARG_BYTES, MAX_ARGS, MAX_HEADER_BYTES, MAX_HEADERS,
    MAX_JOB_ID, MAX_PEER_TEXT, MemoryBudget, OverBudget, PROTOCOL_VERSION, RETURN_ACCESS_DENIED,
    RETURN_HANDLER_FAILED, RETURN_NO_HANDLER, RETURN_OK, Reply, Side, body, handler_name,
    is_hop_by_hop, is_json_type, printable, proto,
};
