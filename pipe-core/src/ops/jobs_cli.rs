//! `pipe-server jobs` and `pipe-client jobs`: a node's durable jobs from the
//! command line, through its local HTTP front (`/_pipe/jobs`), so they work
//! on a running node without touching its store. A node with API tokens
//! is sent the one in `RP_API_TOKEN` (an environment variable, not a flag,
//! so the secret never shows in the process list).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::front::HttpAddr;
use crate::ops::config::{Profile, default_http};
use crate::wire::Side;

/// The most of an answer read.
const ANSWER_LIMIT: usize = 16 * 1024 * 1024;
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment variable holding the API token to send, if any.
pub const TOKEN_VARIABLE: &str = "RP_API_TOKEN";

/// Flags of `jobs`. A node with API tokens needs one: set `RP_API_TOKEN`.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// The node's local HTTP front, `IP:PORT` or `unix:/path` (default:
    /// `RP_SERVER_HTTP` / `RP_CLIENT_HTTP`, else where `serve` listens by
    /// default for the profile).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<HttpAddr>,
    /// The profile whose default front to use.
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// What to do.
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// What `jobs` does.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// The node's jobs, newest first.
    List {
        /// Only jobs in this state (queued, delivered, running, succeeded,
        /// failed, expired, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs for this peer.
        #[arg(long)]
        peer: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One job's state.
    Show {
        /// The job's id.
        id: String,
    },
    /// Cancels a job that has not ended (a running one is stopped).
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Forgets ended jobs now, with their results, instead of at the end of
    /// their retention.
    Purge {
        /// Only those that ended more than this many seconds ago.
        #[arg(long, default_value_t = 0.0)]
        older_than: f64,
    },
}

/// Why `jobs` failed.
#[derive(Debug, thiserror::Error)]
pub enum JobsCliError {
    /// The front could not be reached.
    #[error("cannot reach the node's local front at {addr}: {detail}")]
    Unreachable {
        /// Where.
        addr: String,
        /// Why.
        detail: String,
    },
    /// The node answered with an error.
    #[error("the node answered {status}: {body}")]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its body.
        body: String,
    },
}

/// Runs `jobs` for a node of `side`, reading the environment through `env`:
/// the node's answer, to print.
pub async fn run(
    side: Side,
    args: JobsArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, JobsCliError> {
    let variable = match side {
        Side::Server => "RP_SERVER_HTTP",
        Side::Client => "RP_CLIENT_HTTP",
    };
    let addr = args
        .http
        .or_else(|| env(variable).and_then(|value| value.parse().ok()))
        .unwrap_or_else(|| default_http(side, args.profile));
    let (method, path) = match args.command {
        JobsCommand::List { state, peer, limit } => {
            let mut query = format!("limit={limit}");
            for (key, value) in [("state", state), ("peer", peer)] {
                if let Some(value) = value {
                    let value = percent_encoding::utf8_percent_encode(
                        &value,
                        percent_encoding::NON_ALPHANUMERIC,
                    );
                    query.push_str(&format!("&{key}={value}"));
                }
            }
            (Method::GET, format!("/_pipe/jobs?{query}"))
        }
        JobsCommand::Show { id } => (
            Method::GET,
            format!("/_pipe/jobs/{}/status", path_part(&id)),
        ),
        JobsCommand::Cancel { id } => (Method::DELETE, format!("/_pipe/jobs/{}", path_part(&id))),
        JobsCommand::Purge { older_than } => (
            Method::POST,
            format!("/_pipe/jobs/purge?older_than={older_than}"),
        ),
    };
    let unreachable = |detail: String| JobsCliError::Unreachable {
        addr: addr.to_string(),
        detail,
    };
    let token = env(TOKEN_VARIABLE).filter(|token| !token.trim().is_empty());
    let calling = call(&addr, method, &path, token.as_deref());
    let (status, body) = tokio::time::timeout(CALL_TIMEOUT, calling)
        .await
        .map_err(|_| unreachable(format!("no answer within {CALL_TIMEOUT:?}")))?
        .map_err(unreachable)?;
    let text = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&body).into_owned(),
    };
    if status.is_success() {
        Ok(text)
    } else {
        Err(JobsCliError::Refused { status, body: text })
    }
}

/// An id as it may go into a path: anything but hex is refused by the node
/// anyway; this keeps the URL well-formed.
fn path_part(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One request to the front at `addr`, with `token` as its bearer.
async fn call(
    addr: &HttpAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<(StatusCode, Bytes), String> {
    let io: Box<dyn Io> = match addr {
        HttpAddr::Tcp(addr) => Box::new(
            tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?,
        ),
        HttpAddr::Unix(path) => Box::new(
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| e.to_string())?,
        ),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.trim()));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), ANSWER_LIMIT)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}
