//! The local HTTP front: where apps on a node's host make plain HTTP requests
//! that the node pipes to its peer, plus `/_pipe/health` and `/_pipe/status`.
//!
//! It listens on TCP (`127.0.0.1:PORT`) or a unix socket (`unix:/path`, what
//! nginx proxies to). On shutdown it stops accepting and lets requests in
//! progress finish within a bounded grace period.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;

use crate::body::{BodyError, INLINE_LIMIT};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::{TcpListener, UnixListener};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connection::{Outbound, RequestError};
use crate::handler::{
    RETURN_ACCESS_DENIED, RETURN_HANDLER_FAILED, RETURN_NO_HANDLER, Reply, Side, is_json_type,
};
use crate::metrics::{SEND_TICK, SEND_TIMING};
use crate::node::Node;
use crate::peers::{Lookup, SERVER_KEY};
use crate::router::{self, ALLOWED_METHODS, PipedPath, Verb};

/// Header carrying the far handler's return code on every piped response.
pub const RETURN_CODE_HEADER: &str = "x-event-return-code";
/// Request header overriding the deadline, in seconds (`2.5`).
pub const TIMEOUT_HEADER: &str = "x-pipe-timeout";
/// Longest deadline a caller may ask for: a day; longer is a mistake.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Default time given to requests in progress when the node shuts down.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Where the local HTTP front listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAddr {
    /// A TCP address such as `127.0.0.1:8080`.
    Tcp(SocketAddr),
    /// A unix socket path, written `unix:/path`.
    Unix(PathBuf),
}

impl FromStr for HttpAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/tmp/rpclient.sock".to_owned());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(Self::Tcp)
            .map_err(|_| format!("{s:?} is neither IP:PORT nor unix:/path"))
    }
}

impl fmt::Display for HttpAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// How a unix-socket front is exposed, and whose `X-Forwarded-For` to
/// believe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Permission bits of the socket file (e.g. `0o660`).
    pub mode: u32,
    /// Group to give the socket file (name or number), e.g. `www-data`.
    pub group: Option<String>,
    /// TCP callers whose `X-Forwarded-For` names the real caller in logs.
    /// Callers on a unix socket (nginx) are always believed.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            mode: 0o660,
            group: None,
            trusted_proxies: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
            ],
        }
    }
}

/// A bound local HTTP listener.
#[derive(Debug)]
pub struct HttpListener {
    socket: Socket,
    trusted_proxies: Vec<IpAddr>,
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    /// Removed again on shutdown.
    Unix(UnixListener, PathBuf),
}

impl HttpListener {
    /// Binds `addr` with default [`SocketOptions`].
    pub async fn bind(addr: &HttpAddr) -> std::io::Result<Self> {
        Self::bind_with(addr, &SocketOptions::default()).await
    }

    /// Binds `addr`. A stale unix socket left by a dead process is replaced;
    /// one a live process still serves is an error. A unix socket gets the
    /// mode and group of `options`.
    pub async fn bind_with(addr: &HttpAddr, options: &SocketOptions) -> std::io::Result<Self> {
        let socket = match addr {
            HttpAddr::Tcp(addr) => Socket::Tcp(TcpListener::bind(addr).await?),
            HttpAddr::Unix(path) => {
                if path.exists() {
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            format!("{} is served by a running process", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(options.mode))?;
                if let Some(group) = &options.group {
                    std::os::unix::fs::chown(path, None, Some(group_id(group)?))?;
                }
                Socket::Unix(listener, path.clone())
            }
        };
        Ok(Self {
            socket,
            trusted_proxies: options.trusted_proxies.clone(),
        })
    }

    /// The address actually bound (with the real port for `:0`).
    pub fn local_addr(&self) -> std::io::Result<HttpAddr> {
        Ok(match &self.socket {
            Socket::Tcp(listener) => HttpAddr::Tcp(listener.local_addr()?),
            Socket::Unix(_, path) => HttpAddr::Unix(path.clone()),
        })
    }
}

/// The numeric id of a group given by name (looked up in `/etc/group`) or
/// number.
fn group_id(group: &str) -> std::io::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?;
            if name == group {
                gid.parse().ok()
            } else {
                None
            }
        })
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no group named {group:?} in /etc/group"),
            )
        })
}

/// The other end of a local HTTP connection.
#[derive(Debug, Clone)]
struct Peer {
    addr: String,
    /// A trusted proxy (or a unix-socket caller): its forwarded-for counts.
    trusted: bool,
}

/// Who made a local request, for logs: the connection's peer, or the first
/// `X-Forwarded-For` address when the peer is a trusted proxy.
fn caller_of(headers: &http::HeaderMap, peer: &Peer) -> String {
    let forwarded = peer
        .trusted
        .then(|| headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match forwarded {
        Some(original) => format!("{original} via {}", peer.addr),
        None => peer.addr.clone(),
    }
}

/// Serves the local HTTP front until `shutdown`, then drains for at most
/// `grace`.
pub async fn serve(
    listener: HttpListener,
    node: Arc<Node>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new());
    // Slow-loris guard: headers must arrive promptly.
    builder.header_read_timeout(Duration::from_secs(30));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        let (io, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!("local HTTP accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = node.clone();
        let service = service_fn(move |request| {
            let node = node.clone();
            let caller = caller_of(request.headers(), &peer);
            async move { Ok::<_, Infallible>(respond(&node, request, &caller).await) }
        });
        let connection = builder.serve_connection(io, service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                debug!("local HTTP connection ended: {error}");
            }
        });
    }
    node.begin_stopping();
    drop(listener_cleanup(&listener));
    tokio::select! {
        _ = graceful.shutdown() => debug!("local HTTP front drained"),
        _ = tokio::time::sleep(grace) => warn!(?grace, "local HTTP requests still running after the grace period; closing"),
    }
}

fn listener_cleanup(listener: &HttpListener) -> std::io::Result<()> {
    match &listener.socket {
        Socket::Tcp(_) => Ok(()),
        Socket::Unix(_, path) => std::fs::remove_file(path),
    }
}

type BoxedIo = TokioIo<Box<dyn IoStream>>;

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

async fn accept(listener: &HttpListener) -> std::io::Result<(BoxedIo, Peer)> {
    Ok(match &listener.socket {
        Socket::Tcp(tcp) => {
            let (stream, addr) = tcp.accept().await?;
            let _ = stream.set_nodelay(true);
            let peer = Peer {
                addr: addr.to_string(),
                trusted: listener.trusted_proxies.contains(&addr.ip()),
            };
            (TokioIo::new(Box::new(stream) as Box<dyn IoStream>), peer)
        }
        Socket::Unix(unix, _) => {
            let (stream, _) = unix.accept().await?;
            let peer = Peer {
                addr: "unix".to_owned(),
                trusted: true,
            };
            (TokioIo::new(Box::new(stream) as Box<dyn IoStream>), peer)
        }
    })
}

/// The body of every local HTTP response: whole, or streamed from the peer.
pub type ResponseBody = BoxBody<Bytes, BodyError>;

fn full(bytes: Bytes) -> ResponseBody {
    BoxBody::new(Full::new(bytes).map_err(|never| match never {}))
}

/// A JSON error response: `{"error": message}`.
fn error_response(status: StatusCode, message: impl fmt::Display) -> Response<ResponseBody> {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::handler::JSON),
    );
    response
}

async fn respond(node: &Node, request: Request<Incoming>, caller: &str) -> Response<ResponseBody> {
    let path = request.uri().path();
    match path {
        "/_pipe/health" => return json_response(StatusCode::OK, &health(node)),
        "/_pipe/status" => return json_response(StatusCode::OK, &status(node)),
        _ => {}
    }
    let response = respond_piped(node, request, caller).await;
    let body_bytes = hyper::body::Body::size_hint(response.body()).lower();
    node.metrics()
        .http_response(response.status().as_u16(), body_bytes);
    response
}

/// Answers a request for a piped path (or explains why it is not one).
async fn respond_piped(
    node: &Node,
    request: Request<Incoming>,
    caller: &str,
) -> Response<ResponseBody> {
    let path = request.uri().path();
    let route = match node.side() {
        Side::Client => router::parse_server_path(path)
            .map(|parsed| parsed.map(|piped| (SERVER_KEY.to_owned(), piped))),
        Side::Server => router::parse_client_path(path),
    };
    let Some(route) = route else {
        let expected = match node.side() {
            Side::Client => "/server/<noun>[//args]",
            Side::Server => "/client/<name>/<noun>[//args]",
        };
        return error_response(
            StatusCode::NOT_FOUND,
            format!("no such path {path:?}: this node pipes {expected}"),
        );
    };
    let (key, piped) = match route {
        Ok(route) => route,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, error),
    };
    let Some(verb) = Verb::from_method(request.method()) else {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {} is not piped; use one of {ALLOWED_METHODS}",
                request.method()
            ),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        return response;
    };
    let started = Instant::now();
    let handler = router::handler_name(verb.as_wire(), &piped.noun);
    let peer = key.clone();
    let response = pipe(node, request, key, piped, verb).await;
    debug!(
        caller,
        %peer,
        verb = %verb.as_wire(),
        %handler,
        status = response.status().as_u16(),
        return_code = response.headers().get(RETURN_CODE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-"),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "piped request"
    );
    response
}

async fn pipe(
    node: &Node,
    request: Request<Incoming>,
    key: String,
    piped: PipedPath,
    verb: Verb,
) -> Response<ResponseBody> {
    let settings = node.settings();
    if node.is_stopping() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is shutting down and takes no new requests",
        );
    }
    let timeout = match request_timeout(&request, settings.request_timeout) {
        Ok(timeout) => timeout,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let deadline = Instant::now() + timeout;
    let content_type = match request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str())
    {
        None => String::new(),
        Some(Ok(value)) => value.to_owned(),
        Some(Err(_)) => {
            return error_response(StatusCode::BAD_REQUEST, "Content-Type is not visible ASCII");
        }
    };
    let query = request.uri().query().unwrap_or("").to_owned();
    let headers = end_to_end(request.headers());

    let limit = settings.max_body_bytes;
    // hyper knows the body's size: 0 without a body, the declared length,
    // or unknown for a chunked upload.
    let declared = hyper::body::Body::size_hint(request.body()).exact();
    if declared.is_some_and(|len| len > limit as u64) {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body of {} bytes exceeds the limit of {limit} bytes",
                declared.unwrap_or(0)
            ),
        );
    }
    // Small bodies of known length travel whole in the event (and JSON is
    // checked); anything else streams, checked against the limit as it goes.
    let (body, stream, too_large) = match declared {
        Some(length) if length <= INLINE_LIMIT as u64 => {
            let body = match Limited::new(request.into_body(), limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                    return error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("body exceeds the limit of {limit} bytes"),
                    );
                }
                Err(error) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        format!("could not read the body: {error}"),
                    );
                }
            };
            if is_json_type(&content_type) && !body.is_empty() {
                if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        format!("body is declared {content_type} but is not valid JSON: {error}"),
                    );
                }
            }
            node.metrics().http_request(body.len() as u64);
            (body, None, None)
        }
        length => {
            let (sink, stream) = crate::body::channel(length);
            let (too_large_tx, too_large_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(pump_request_body(
                request.into_body(),
                sink,
                limit,
                too_large_tx,
            ));
            node.metrics().http_request(length.unwrap_or(0));
            (Bytes::new(), Some(stream), Some(too_large_rx))
        }
    };
    let outbound = Outbound {
        verb: verb.as_wire().to_owned(),
        noun: piped.noun,
        args: piped.args,
        query,
        content_type,
        headers,
        body,
        stream,
    };
    let Some(too_large) = too_large else {
        return send(node, &key, outbound, deadline, timeout).await;
    };
    // An upload of unknown length that outgrows the limit ends the request
    // with 413; dropping the request cancels the far side.
    tokio::select! {
        response = send(node, &key, outbound, deadline, timeout) => response,
        Ok(()) = too_large => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds the limit of {limit} bytes"),
        ),
    }
}

/// Finds the peer (waiting a little for it) and sends the request.
async fn send(
    node: &Node,
    key: &str,
    outbound: Outbound,
    deadline: Instant,
    timeout: Duration,
) -> Response<ResponseBody> {
    let settings = node.settings();
    let wait = settings.peer_wait.min(timeout);
    let peer = match node.peers().wait_for(key, wait).await {
        Lookup::Connected(peer) => peer,
        Lookup::Unknown if node.side() == Side::Server => {
            return error_response(
                StatusCode::NOT_FOUND,
                format!("no client named {key:?} is connected (waited {wait:?})"),
            );
        }
        Lookup::Unknown | Lookup::Disconnected => {
            let whom = match node.side() {
                Side::Server => format!("client {key:?}"),
                Side::Client => "the server".to_owned(),
            };
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no connection to {whom} (waited {wait:?})"),
            );
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    node.metrics().incr(SEND_TICK);
    let sent = Instant::now();
    match peer.request(outbound, remaining).await {
        Ok(reply) => {
            node.metrics().timing(SEND_TIMING, sent.elapsed());
            reply_response(reply)
        }
        Err(error) => {
            let (status, kind) = match error {
                RequestError::Disconnected { .. } => (StatusCode::BAD_GATEWAY, "disconnected"),
                RequestError::TimedOut { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                RequestError::GoingAway { .. } => (StatusCode::SERVICE_UNAVAILABLE, "going_away"),
                RequestError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            };
            node.metrics().send_failed(kind);
            error_response(status, error)
        }
    }
}

/// Feeds the local caller's upload into `sink` as it arrives, ending it with
/// an error if it grows past `limit` (a body of unknown length) or the
/// caller's connection fails.
async fn pump_request_body(
    mut body: Incoming,
    sink: crate::body::BodySink,
    limit: usize,
    too_large: tokio::sync::oneshot::Sender<()>,
) {
    let mut total = 0usize;
    loop {
        let frame = match body.frame().await {
            None => return,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                sink.abort(BodyError::Aborted(format!(
                    "reading the upload failed: {error}"
                )));
                return;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total += data.len();
        if total > limit {
            let _ = too_large.send(());
            sink.abort(BodyError::TooLarge {
                limit: limit as u64,
            });
            return;
        }
        if sink.send(data).await.is_err() {
            return; // nobody reads it any more
        }
    }
}

/// The deadline a request asked for with `X-Pipe-Timeout`, or the default.
fn request_timeout(request: &Request<Incoming>, default: Duration) -> Result<Duration, String> {
    let Some(value) = request.headers().get(TIMEOUT_HEADER) else {
        return Ok(default);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map(|secs| Duration::from_secs_f64(secs).min(MAX_TIMEOUT))
        .ok_or_else(|| "X-Pipe-Timeout must be a positive number of seconds, e.g. 2.5".to_owned())
}

/// Headers that describe a connection or the pipe itself, never carried
/// end to end (besides any the `Connection` header names).
const NOT_END_TO_END: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    TIMEOUT_HEADER,
    RETURN_CODE_HEADER,
];

/// The end-to-end headers of `headers`: what a handler (or an upstream
/// behind a forward) should see, and what a caller should get back.
fn end_to_end(headers: &http::HeaderMap) -> http::HeaderMap {
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut kept = http::HeaderMap::new();
    for (name, value) in headers {
        let name_str = name.as_str();
        if !NOT_END_TO_END.contains(&name_str) && !named_by_connection.iter().any(|n| n == name_str)
        {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The HTTP status for a reply: the handler's explicit one, else what its
/// return code means.
fn reply_status(reply: &Reply) -> StatusCode {
    if let Some(status) = reply.http_status.and_then(|s| StatusCode::from_u16(s).ok()) {
        return status;
    }
    match reply.return_code {
        RETURN_NO_HANDLER => StatusCode::NOT_FOUND,
        RETURN_HANDLER_FAILED => StatusCode::INTERNAL_SERVER_ERROR,
        RETURN_ACCESS_DENIED => StatusCode::FORBIDDEN,
        _ => StatusCode::OK,
    }
}

/// The HTTP response for a reply from the far handler.
fn reply_response(reply: Reply) -> Response<ResponseBody> {
    let status = reply_status(&reply);
    let extra = end_to_end(&reply.headers);
    let content_type = HeaderValue::from_str(&reply.content_type)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let body = match reply.stream {
        Some(stream) => BoxBody::new(StreamBody::new(stream.map_ok(Frame::data))),
        None => full(reply.body),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.extend(extra);
    headers.insert(RETURN_CODE_HEADER, HeaderValue::from(reply.return_code));
    headers.insert(header::CONTENT_TYPE, content_type);
    response
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn health(node: &Node) -> serde_json::Value {
    json!({
        "status": "ok",
        "node": node.name(),
        "side": node.side().as_str(),
        "connected_peers": node.peers().len(),
    })
}

fn status(node: &Node) -> serde_json::Value {
    let peers = node.peers().list();
    let (mut outbound, mut inbound) = (0, 0);
    let peers_json: Vec<_> = peers
        .iter()
        .map(|(key, handle)| {
            outbound += handle.in_flight_out();
            inbound += handle.in_flight_in();
            json!({
                "key": key,
                "name": handle.name(),
                "remote_addr": handle.peer().remote_addr.map(|a| a.to_string()),
                "connection_id": handle.connection_id(),
                "connected_since": rfc3339(handle.connected_at()),
                "in_flight_out": handle.in_flight_out(),
                "in_flight_in": handle.in_flight_in(),
            })
        })
        .collect();
    let uptime = SystemTime::now()
        .duration_since(node.started_at())
        .unwrap_or_default();
    let mut status = json!({
        "node": node.name(),
        "side": node.side().as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(node.started_at()),
        "uptime_seconds": uptime.as_secs_f64(),
        "connected_peers": peers.len(),
        "peers": peers_json,
        "in_flight": { "outbound": outbound, "inbound": inbound },
        "handlers": node.handlers().names(),
        "access_policy": node.handlers().policy().is_some(),
    });
    if node.side() == Side::Client {
        let link = node.link();
        status["link"] = json!({
            "connected": !peers.is_empty(),
            "reconnect_attempts": link.reconnect_attempts,
            "last_error": link.last_error,
            "last_error_at": link.last_error_at.map(rfc3339),
        });
    }
    status
}

/// Logs where the local front listens.
pub fn log_listening(addr: &HttpAddr) {
    info!(%addr, "local HTTP front listening");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_the_forwarded_one_only_behind_a_trusted_proxy() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.1"),
        );
        let proxy = Peer {
            addr: "127.0.0.1:5000".to_owned(),
            trusted: true,
        };
        assert_eq!(
            caller_of(&headers, &proxy),
            "203.0.113.9 via 127.0.0.1:5000"
        );
        let stranger = Peer {
            addr: "192.0.2.7:5000".to_owned(),
            trusted: false,
        };
        assert_eq!(
            caller_of(&headers, &stranger),
            "192.0.2.7:5000",
            "a spoofable header is ignored"
        );
        assert_eq!(caller_of(&http::HeaderMap::new(), &proxy), "127.0.0.1:5000");
    }

    #[test]
    fn end_to_end_headers_drop_hop_by_hop_ones() {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "rpclient.local"),
            ("x-pipe-timeout", "3"),
            ("accept", "text/csv"),
            ("if-none-match", "\"v1\""),
        ] {
            headers.append(
                http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let kept = end_to_end(&headers);
        let mut names: Vec<_> = kept.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "if-none-match"]);
    }

    #[test]
    fn http_addresses() {
        assert_eq!(
            "127.0.0.1:8080".parse::<HttpAddr>(),
            Ok(HttpAddr::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            "unix:/tmp/rpclient.sock".parse::<HttpAddr>(),
            Ok(HttpAddr::Unix("/tmp/rpclient.sock".into()))
        );
        assert!("unix:".parse::<HttpAddr>().is_err());
        assert!("localhost".parse::<HttpAddr>().is_err());
        assert_eq!(
            HttpAddr::Unix("/tmp/x.sock".into()).to_string(),
            "unix:/tmp/x.sock"
        );
    }

    #[test]
    fn reply_status_follows_return_code() {
        let ok = reply_response(Reply::bytes("text/plain", "x"));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[RETURN_CODE_HEADER], "0");
        let missing = reply_response(Reply::bytes("", "").with_return_code(RETURN_NO_HANDLER));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            missing.headers()[header::CONTENT_TYPE],
            "application/octet-stream"
        );
        let failed = reply_response(Reply::bytes("", "").with_return_code(RETURN_HANDLER_FAILED));
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let own = reply_response(Reply::bytes("", "").with_return_code(7));
        assert_eq!(own.status(), StatusCode::OK);
        assert_eq!(own.headers()[RETURN_CODE_HEADER], "7");
    }
}
