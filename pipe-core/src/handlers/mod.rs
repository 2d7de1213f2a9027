//! Handlers: what runs on the receiving node when an event arrives.
//!
//! Handlers come from sources asked in precedence order (`sources`): the
//! Rust [`Registry`], forwards to local HTTP upstreams ([`Forwards`]), and
//! executables in a directory ([`ExecDirectory`]). The access [`Policy`]
//! decides first. [`Handlers::run`] takes one event to its reply. This layer
//! knows the wire's domain types and nothing of connections.

mod exec;
mod forward;
mod places;
mod policy;
mod registry;
mod run;
mod sources;

pub use exec::{
    DEFAULT_MAX_EXEC_PROCESSES, ExecDirectory, GroupLedger, HANDLER_PATH, STREAM_AFTER_BYTES,
    is_handler_name,
};
pub use forward::{DEFAULT_MAX_UPSTREAM_CONNECTIONS, Forwards, PEER_HEADER};
pub(crate) use policy::wildcard;
pub use policy::{Policy, PolicyError};
pub use registry::{Handler, HandlerFuture, HandlerResult, Registry, Request};
pub use run::{Job, Outcome};
pub use sources::{HandlerSource, Handlers, Resolution};
