//! The local HTTP front: where apps on a node's host make plain HTTP
//! requests that the node pipes to its peer (`piped`), plus `/_pipe/health`
//! and `/_pipe/status` (`status`), the status page for people at `/_pipe/`
//! (`page`), the metrics for Prometheus
//! (`metrics`, also on a listener of their own) and an OpenAPI description
//! of it all (`openapi`). It listens on TCP or a unix socket
//! (`listener`); on shutdown it stops accepting and lets requests in
//! progress finish within a bounded grace period (`server`). A cap on open
//! connections and a write-stall limit bound what callers can hold
//! (`limits`). With API tokens (`tokens`), only callers with a token get
//! in, and only as far as its scope (`access`).

mod access;
mod jobs;
mod limits;
mod listener;
mod metrics;
mod openapi;
mod page;
mod piped;
mod response;
pub mod router;
mod server;
mod status;
mod tokens;
mod upload;

pub use access::TokenGate;
pub use listener::{HttpAddr, HttpAddrError, HttpListener, SocketOptions, log_listening};
pub use metrics::{METRICS_PATH, serve_metrics};
#[cfg(feature = "fuzzing")]
pub(crate) use piped::{MAX_TIMEOUT, parse_timeout};
pub use piped::{RETURN_CODE_HEADER, TIMEOUT_HEADER};
pub use response::ResponseBody;
pub use server::serve;
pub use tokens::{ApiToken, ApiTokens, NewToken, TOKEN_PREFIX, TokenError};
