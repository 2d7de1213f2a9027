//! A piped request: an app's local HTTP request made into an event, sent
//! to the peer (waiting a little for it), and the reply made into the
//! HTTP response.

use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::time::Instant;
use tracing::debug;

use super::access::refuse_out_of_scope;
use super::jobs;
use super::response::{RETURN_CODE_NAME, ResponseBody, error_response, full};
use super::router::{self, ALLOWED_METHODS, PipedPath, Verb};
use super::tokens::ApiToken;
use super::upload::upload;
use crate::link::RequestError;
use crate::node::cluster::{Cluster, ForwardError};
use crate::node::metrics::{Counter, Timing};
use crate::node::{Lookup, Node, SERVER_KEY};
use crate::wire::body::{BodyStream, INLINE_LIMIT};
use crate::wire::{
    Event, HandlerName, RETURN_ACCESS_DENIED, RETURN_HANDLER_FAILED, RETURN_NO_HANDLER, Reply,
    Side, is_hop_by_hop, is_json_type,
};

pub use super::response::RETURN_CODE_HEADER;
/// Request header overriding the deadline, in seconds (`2.5`).
pub const TIMEOUT_HEADER: &str = "x-pipe-timeout";
/// [`TIMEOUT_HEADER`] as a header name made at compile time, not parsed
/// again for each request's lookup.
const TIMEOUT_NAME: http::HeaderName = http::HeaderName::from_static(TIMEOUT_HEADER);
/// Longest deadline a caller may ask for: a day; longer is a mistake.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Answers a request for a piped path (or explains why it is not one),
/// within the scope of the caller's API `token`, if the front has tokens.
pub(super) async fn respond_piped(
    node: &Node,
    request: Request<Incoming>,
    caller: &str,
    token: Option<&ApiToken>,
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
    let mut piped = piped;
    let handler = HandlerName::new(verb.as_wire(), std::mem::take(&mut piped.noun));
    let name = handler.as_str().to_owned();
    if let Some(refused) = refuse_out_of_scope(token, &name, &key, caller) {
        return refused;
    }
    let peer = key.clone();
    let response = pipe(node, request, key, piped, handler).await;
    debug!(
        caller,
        token = token.map_or("-", ApiToken::name),
        %peer,
        verb = %verb.as_wire(),
        handler = %name,
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
    handler: HandlerName,
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
    let asynchronous = if jobs::wants_async(request.headers()) {
        match jobs::job_options(node, request.headers()) {
            Ok(options) => Some(options),
            Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
        }
    } else {
        None
    };
    let headers = end_to_end(request.headers());

    let limit = settings.max_body_bytes;
    let RequestBody {
        body,
        stream,
        too_large,
    } = match request_body(node, request.into_body(), &content_type, limit, deadline).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let event = Event {
        handler,
        args: piped.args,
        query,
        content_type,
        headers,
        body,
        stream,
    };
    if let Some(options) = asynchronous {
        return jobs::submit(node, &key, event, (limit, deadline, timeout), options).await;
    }
    let Some(too_large) = too_large else {
        return send(node, &key, event, deadline, timeout).await;
    };
    // An upload of unknown length that outgrows the limit ends the request
    // with 413; dropping the request cancels the far side.
    tokio::select! {
        response = send(node, &key, event, deadline, timeout) => response,
        Ok(()) = too_large => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds the limit of {limit} bytes"),
        ),
    }
}

/// A local request's body as it travels: whole in the event, or streamed
/// (with a signal if it outgrows the limit on the way).
#[derive(Default)]
struct RequestBody {
    body: Bytes,
    stream: Option<BodyStream>,
    too_large: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Takes the local caller's body: small bodies of known length whole (and
/// JSON checked), anything else as a stream checked against `limit` as it
/// goes. Either way the body must arrive by the request's `deadline` (a
/// caller trickling it would otherwise hold the connection for ever). An
/// `Err` is the response that refuses it.
async fn request_body(
    node: &Node,
    incoming: Incoming,
    content_type: &str,
    limit: usize,
    deadline: Instant,
) -> Result<RequestBody, Response<ResponseBody>> {
    // hyper knows the body's size: 0 without a body, the declared length,
    // or unknown for a chunked upload.
    let declared = hyper::body::Body::size_hint(&incoming).exact();
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body of {} bytes exceeds the limit of {limit} bytes",
                declared.unwrap_or(0)
            ),
        ));
    }
    match declared {
        // No body (every GET): nothing to wait for, no deadline timer.
        Some(0) => Ok(RequestBody::default()),
        Some(length) if length <= INLINE_LIMIT as u64 => {
            let collecting = Limited::new(incoming, limit).collect();
            let Ok(collected) = tokio::time::timeout_at(deadline, collecting).await else {
                return Err(error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive within the request's deadline",
                ));
            };
            let body = match collected {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                    return Err(error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("body exceeds the limit of {limit} bytes"),
                    ));
                }
                Err(error) => {
                    return Err(error_response(
                        StatusCode::BAD_REQUEST,
                        format!("could not read the body: {error}"),
                    ));
                }
            };
            if is_json_type(content_type)
                && !body.is_empty()
                && let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            {
                return Err(error_response(
                    StatusCode::BAD_REQUEST,
                    format!("body is declared {content_type} but is not valid JSON: {error}"),
                ));
            }
            node.metrics().http_request(body.len() as u64);
            Ok(RequestBody {
                body,
                ..RequestBody::default()
            })
        }
        length => {
            let (too_large_tx, too_large_rx) = tokio::sync::oneshot::channel();
            let stream = upload(incoming, length, limit, deadline, too_large_tx);
            node.metrics().http_request(length.unwrap_or(0));
            Ok(RequestBody {
                body: Bytes::new(),
                stream: Some(stream),
                too_large: Some(too_large_rx),
            })
        }
    }
}

/// Finds the peer (waiting a little for it) and sends the request.
async fn send(
    node: &Node,
    key: &str,
    event: Event,
    deadline: Instant,
    timeout: Duration,
) -> Response<ResponseBody> {
    let settings = node.settings();
    let wait = settings.peer_wait.min(timeout);
    if let Some(cluster) = node.cluster()
        && node.peers().get(key).is_none()
    {
        return forward(node, cluster, key, event, deadline, wait).await;
    }
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
    let handler = event.handler.as_str().to_owned();
    node.metrics().incr(Counter::EventSent);
    let sent = Instant::now();
    match peer.request(event, remaining).await {
        Ok(reply) => {
            node.metrics().replied(&handler, sent.elapsed());
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

/// Sends the request to client `key`, which this node does not hold, through
/// the cluster: to whichever node holds it, waiting up to `wait` for one to.
async fn forward(
    node: &Node,
    cluster: &Cluster,
    key: &str,
    event: Event,
    deadline: Instant,
    wait: Duration,
) -> Response<ResponseBody> {
    let handler = event.handler.as_str().to_owned();
    node.metrics().incr(Counter::EventSent);
    node.metrics().incr(Counter::ClusterForward);
    let sent = Instant::now();
    let wait_until = (sent + wait).min(deadline);
    match cluster.forward(key, event, deadline, wait_until).await {
        Ok(reply) => {
            node.metrics().replied(&handler, sent.elapsed());
            node.metrics()
                .timing(Timing::ClusterForward, sent.elapsed());
            reply_response(reply)
        }
        Err(error) => {
            let (status, kind) = match error {
                ForwardError::NotHeld(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_connected"),
                ForwardError::Backplane(_) => (StatusCode::SERVICE_UNAVAILABLE, "backplane"),
                ForwardError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
                ForwardError::TimedOut(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                ForwardError::Broken { .. } => (StatusCode::BAD_GATEWAY, "disconnected"),
            };
            node.metrics().send_failed(kind);
            error_response(status, error)
        }
    }
}

/// The deadline a request asked for with `X-Pipe-Timeout`, or the default.
fn request_timeout(request: &Request<Incoming>, default: Duration) -> Result<Duration, String> {
    match request.headers().get(TIMEOUT_NAME) {
        None => Ok(default),
        Some(value) => parse_timeout(value.as_bytes()),
    }
}

/// Parses an `X-Pipe-Timeout` value: a positive, finite number of seconds no
/// longer than [`MAX_TIMEOUT`]. Anything else is refused with a message for
/// the caller, never clamped or converted first: `Duration::from_secs_f64`
/// panics on values it cannot hold (`1e20`), and the panic would drop the
/// caller's connection without a response.
pub(crate) fn parse_timeout(value: &[u8]) -> Result<Duration, String> {
    let max = MAX_TIMEOUT.as_secs();
    let refuse = |why: &str| {
        Err(format!(
            "X-Pipe-Timeout {why}: give a positive number of seconds up to {max}, e.g. 2.5"
        ))
    };
    let Some(secs) = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
    else {
        return refuse("is not a number");
    };
    if !secs.is_finite() {
        return refuse("is not finite");
    }
    if secs <= 0.0 {
        return refuse("is not positive");
    }
    if secs > MAX_TIMEOUT.as_secs_f64() {
        return refuse("is longer than a day");
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(timeout) => Ok(timeout),
        Err(_) => refuse("is out of range"),
    }
}

/// Headers that describe the pipe itself or the message's framing, never
/// carried end to end (besides hop-by-hop ones and any the `Connection`
/// header names).
const NOT_END_TO_END: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    TIMEOUT_HEADER,
    RETURN_CODE_HEADER,
    // What a job submission tells this node, not the handler.
    "x-pipe-notify",
    "x-pipe-expires",
    "x-pipe-delivery",
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
        if !is_hop_by_hop(name_str)
            && !NOT_END_TO_END.contains(&name_str)
            && !named_by_connection.iter().any(|n| n == name_str)
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
    headers.insert(RETURN_CODE_NAME, HeaderValue::from(reply.return_code));
    headers.insert(header::CONTENT_TYPE, content_type);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_in_range_are_taken() {
        assert_eq!(parse_timeout(b"2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_timeout(b" 3 "), Ok(Duration::from_secs(3)));
        assert_eq!(parse_timeout(b"86400"), Ok(MAX_TIMEOUT));
        assert_eq!(parse_timeout(b"1e-3"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn timeouts_out_of_range_or_unparseable_are_refused_without_panicking() {
        for (value, why) in [
            (&b"1e20"[..], "longer than a day"),
            (b"1e308", "longer than a day"),
            (b"86400.5", "longer than a day"),
            (b"18446744073709551616", "longer than a day"),
            (b"-1", "not positive"),
            (b"0", "not positive"),
            (b"-0", "not positive"),
            (b"NaN", "not finite"),
            (b"inf", "not finite"),
            (b"-infinity", "not finite"),
            (b"soon", "not a number"),
            (b"", "not a number"),
            (b"2.5s", "not a number"),
            (b"\xff", "not a number"),
        ] {
            let message = parse_timeout(value).expect_err(&format!("{value:?} is refused"));
            assert!(message.contains(why), "{value:?}: {message}");
            assert!(message.contains("86400"), "{value:?}: {message}");
        }
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
