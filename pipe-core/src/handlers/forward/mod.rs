//! Forwards: a noun prefix answered by a local HTTP upstream, with no
//! handler to write.
//!
//! This is the original project's example use case: a public web server
//! reads a file server that sits behind a firewall on a client node's host.
//! The client node is started with
//!
//! ```text
//! pipe-client serve --forward files/=http://127.0.0.1:8080/ ...
//! ```
//!
//! (or `RP_FORWARDS="files/=http://127.0.0.1:8080/"`, or
//! `forwards = ["files/=http://127.0.0.1:8080/"]` in the config file), and
//! the server side asks `GET /client/<name>/files/report.pdf`: the request
//! reaches the file server as `GET /report.pdf`, and the file server's
//! status, content type, headers and body come back to the caller.
//!
//! # Which events a forward answers
//!
//! A prefix is one or more noun segments (letters, digits, `_`, `-`, `.`,
//! `~`, as in any noun), written with or without a trailing `/`: `files/`
//! and `files` mean the same thing, the noun `files` and every noun under
//! it (`files/report`, `files/report/2024`), for every verb. It never
//! matches part of a segment: `files/` does not answer `filesystem`.
//! When several prefixes match, the longest wins (`files/private/` before
//! `files/`). Handlers come first: a built-in or Rust handler with the
//! event's name (`get_files`) answers instead of the forward, and a forward
//! answers before the handler directory.
//!
//! # The upstream request
//!
//! The upstream URL is `http://HOST[:PORT][/BASE/]`: plain HTTP, because the
//! upstream is local to this node (port 80 when none is given). Its path is
//! the base every forwarded path is put under. With the forward
//! `files/=http://127.0.0.1:8080/base/` on a client node (a forward on the
//! server node works the same for callers of `/server/files...`):
//!
//! | the caller asks the server node (forward on client `branch-1`) | the upstream gets |
//! |---|---|
//! | `GET /client/branch-1/files` | `GET /base/` |
//! | `GET /client/branch-1/files/report/2024?x=1` | `GET /base/report/2024?x=1` |
//! | `GET /client/branch-1/files//dir%20a/b.txt` | `GET /base/dir%20a/b.txt` |
//! | `GET /client/branch-1/files/docs//a%2Fb.txt` | `GET /base/docs/a%2Fb.txt` |
//! | `POST /client/branch-1/files/upload` + body | `POST /base/upload` + the same body |
//!
//! - **Method**: the verb, upper-cased. `HEAD` travels through the pipe as
//!   `GET`, so the upstream sees `GET` (the caller still gets no body).
//! - **Path**: the base path, `/`, then the noun segments after the prefix,
//!   then each argument (after `//`) as one more path segment. Arguments are
//!   percent-encoded again, everything but `A-Za-z0-9-._~`, so a `/` inside
//!   an argument stays `%2F` and never splits it. An argument `.` or `..` is
//!   refused (it would climb out of the base path).
//! - **Query**: appended exactly as the caller sent it.
//! - **Headers**: the caller's end-to-end headers (`Accept`,
//!   `If-None-Match`, `Authorization`, `Range`...; not hop-by-hop ones such
//!   as `Connection`), the caller's `Content-Type`, `Host` set to the
//!   upstream's authority, and `X-Restpipe-Peer` naming the node that sent
//!   the event (the identity in its certificate), so the upstream knows who
//!   asked. A caller cannot set `X-Restpipe-Peer` itself.
//! - **Body**: streamed to the upstream as it arrives through the pipe, with
//!   `Content-Length` when the caller gave one.
//!
//! # The reply
//!
//! Whatever the upstream answers, its status is the caller's status (a 404
//! stays a 404) with `X-Event-Return-Code: 0` (the forward ran); its
//! `Content-Type`, its end-to-end headers (`ETag`, `Last-Modified`...) and
//! its body, streamed, come back. When the upstream cannot be reached or
//! fails before answering, the caller gets 500 with return code 251 and an
//! `UpstreamError` naming the upstream and the cause. Waiting for the
//! upstream's answer is bounded by the request's deadline (`X-Pipe-Timeout`)
//! and stops when the caller gives up; once the body streams, an upstream
//! that stays silent for as long as the deadline allowed is cut off.
//!
//! Connections to upstreams are kept alive and reused.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::registry::{Handler, HandlerFuture, Request};
use super::sources::HandlerSource;
use crate::wire::body::{BodyError, BodySink, BodyStream};
use crate::wire::{HandlerError, HandlerName, Reply};

/// Header telling the upstream which node sent the event.
pub const PEER_HEADER: &str = "x-restpipe-peer";

/// How long an idle pooled connection to an upstream is kept: shorter than
/// the keep-alive timeouts of common servers (Node.js closes after 5 s), so
/// a request rarely picks a connection the upstream is just closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Bytes left as they are in an argument: RFC 3986's unreserved characters.
/// Everything else (`/`, `%`, `?`, `#`, space, non-ASCII...) is encoded.
const ARGUMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Request headers never passed to an upstream: they describe one hop, are
/// set by the forward itself, or could make the upstream read the body
/// differently from how it is sent.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
    "content-length",
    "content-type",
    PEER_HEADER,
];

/// The body type of requests to upstreams.
type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// The forwards a node is configured with: a [`HandlerSource`] that answers
/// events whose noun falls under a forwarded prefix by asking a local HTTP
/// upstream. See the module documentation for the exact rules.
pub struct Forwards {
    /// In the order configured; lookups pick the longest matching prefix.
    routes: Vec<(Arc<Route>, Arc<dyn Handler>)>,
}

impl std::fmt::Debug for Forwards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// One forward: a prefix and where it goes.
#[derive(Debug)]
struct Route {
    /// Noun segments without a trailing `/`, e.g. `files` or `files/private`.
    prefix: String,
    /// `host:port` of the upstream, as configured.
    authority: Authority,
    /// The upstream URL's path without its trailing `/`: `` or `/base`.
    base: String,
}

impl Route {
    /// Whether the forward answers `noun`: the prefix itself, or under it.
    fn matches(&self, noun: &str) -> bool {
        noun.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The upstream, for messages and `/_pipe/status`.
    fn url(&self) -> String {
        format!("http://{}{}/", self.authority, self.base)
    }

    /// The upstream URI for `noun` (under this prefix), `args` and `query`.
    fn upstream_uri(&self, noun: &str, args: &[String], query: &str) -> Result<Uri, String> {
        let remainder = noun
            .strip_prefix(&self.prefix)
            .unwrap_or_default()
            .trim_start_matches('/');
        let mut path = format!("{}/{remainder}", self.base);
        for (i, arg) in args.iter().enumerate() {
            if arg == "." || arg == ".." {
                return Err(format!(
                    "argument {arg:?} would leave the upstream's base path"
                ));
            }
            if i > 0 || !remainder.is_empty() {
                path.push('/');
            }
            path.extend(utf8_percent_encode(arg, ARGUMENT));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path.as_str())
            .build()
            .map_err(|error| format!("cannot build the upstream URL for {path:?}: {error}"))
    }
}

impl Forwards {
    /// Forwards for `specs`, each a prefix and an upstream URL such as
    /// `("files/", "http://127.0.0.1:8080/")`. Fails, naming the spec, on a
    /// prefix that is not noun segments, a prefix given twice, or a URL that
    /// is not `http://HOST[:PORT][/PATH]` without query, fragment or user.
    pub fn new(specs: &[(String, String)]) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: UpstreamClient = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let mut routes: Vec<(Arc<Route>, Arc<dyn Handler>)> = Vec::with_capacity(specs.len());
        for (prefix, url) in specs {
            let spec = format!("{prefix}={url}");
            let prefix =
                parse_prefix(prefix).map_err(|error| format!("forward {spec:?}: {error}"))?;
            let (authority, base) =
                parse_upstream(url).map_err(|error| format!("forward {spec:?}: {error}"))?;
            if routes.iter().any(|(route, _)| route.prefix == prefix) {
                return Err(format!(
                    "forward {spec:?}: the prefix {prefix}/ is already forwarded"
                ));
            }
            let route = Arc::new(Route {
                prefix,
                authority,
                base,
            });
            let handler = Arc::new(Forward {
                route: route.clone(),
                client: client.clone(),
            });
            routes.push((route, handler));
        }
        Ok(Self { routes })
    }
}

impl HandlerSource for Forwards {
    fn lookup(&self, name: &HandlerName) -> Option<Arc<dyn Handler>> {
        let noun = name.noun();
        // The sending node checked the noun; a peer that skipped the check
        // must not smuggle `..` or `?` into an upstream path.
        if !noun.split('/').all(is_noun_segment) {
            return None;
        }
        // Prefixes match whole segments, so the longest string is the most
        // specific prefix.
        self.routes
            .iter()
            .filter(|(route, _)| route.matches(noun))
            .max_by_key(|(route, _)| route.prefix.len())
            .map(|(_, handler)| handler.clone())
    }

    fn names(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|(route, _)| format!("* {}/... -> {}", route.prefix, route.url()))
            .collect()
    }
}

/// Whether `segment` is a valid noun segment, as the router accepts them.
fn is_noun_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'))
}

/// `files/` or `files` → `files`; `a/b/` → `a/b`.
fn parse_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Err("the prefix is empty: name a noun such as files/".to_owned());
    }
    if let Some(bad) = trimmed.split('/').find(|s| !is_noun_segment(s)) {
        return Err(format!(
            "prefix segment {bad:?} is not a noun segment (letters, digits, '_', '-', '.', '~'; not '.' or '..')"
        ));
    }
    Ok(trimmed.to_owned())
}

/// The authority and base path (without trailing `/`) of an upstream URL.
fn parse_upstream(url: &str) -> Result<(Authority, String), String> {
    let uri: Uri = url
        .parse()
        .map_err(|error| format!("{url:?} is not a URL: {error}"))?;
    match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP => {}
        Some(scheme) => {
            return Err(format!(
                "the upstream must be http:// (it is local to this node), not {scheme}://"
            ));
        }
        None => return Err(format!("{url:?} must start with http://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?} names no host"));
    };
    if authority.as_str().contains('@') {
        return Err("the upstream URL may not carry a user or password".to_owned());
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    // `Authority::port` hides a port that does not parse; look at the text.
    let port = authority
        .as_str()
        .strip_prefix(authority.host())
        .unwrap_or_default();
    if !port.is_empty() && authority.port_u16().is_none_or(|port| port == 0) {
        return Err(format!("{url:?} has an invalid port"));
    }
    if uri.query().is_some() {
        return Err("the upstream URL may not have a query".to_owned());
    }
    let base = uri.path().trim_end_matches('/').to_owned();
    Ok((authority.clone(), base))
}

/// The handler of one forward.
struct Forward {
    route: Arc<Route>,
    client: UpstreamClient,
}

impl Handler for Forward {
    fn call(&self, request: Request) -> HandlerFuture {
        Box::pin(forward(self.route.clone(), self.client.clone(), request))
    }

    fn streams_body(&self) -> bool {
        true
    }
}

/// Sends `request` to the route's upstream and turns its answer into the
/// reply.
async fn forward(
    route: Arc<Route>,
    client: UpstreamClient,
    mut request: Request,
) -> Result<Reply, HandlerError> {
    let budget = request.deadline.saturating_duration_since(Instant::now());
    let upstream = route.url();
    let refuse = |message: String| HandlerError::new("ForwardError", message);
    let method = Method::from_bytes(request.verb.to_ascii_uppercase().as_bytes())
        .map_err(|_| refuse(format!("verb {:?} is not an HTTP method", request.verb)))?;
    let uri = route
        .upstream_uri(&request.noun, &request.args, &request.query)
        .map_err(refuse)?;
    let body = UpstreamBody::new(request.stream.take());
    let mut upstream_request = http::Request::new(body);
    *upstream_request.method_mut() = method;
    *upstream_request.uri_mut() = uri;
    let headers = upstream_request.headers_mut();
    for (name, value) in &request.headers {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request.content_type) {
        if !value.is_empty() {
            headers.insert(header::CONTENT_TYPE, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request.peer) {
        headers.insert(HeaderName::from_static(PEER_HEADER), value);
    }
    if let Ok(value) = HeaderValue::from_str(route.authority.as_str()) {
        headers.insert(header::HOST, value);
    }

    let failed =
        |cause: String| HandlerError::new("UpstreamError", format!("upstream {upstream}: {cause}"));
    let response = tokio::select! {
        response = client.request(upstream_request) => {
            response.map_err(|error| failed(format!("no answer: {}", cause_chain(&error))))?
        }
        _ = tokio::time::sleep_until(request.deadline) => {
            return Err(failed(format!("no answer within the request's deadline ({budget:?})")));
        }
        _ = request.cancelled.cancelled() => {
            return Err(failed("the caller gave up before it answered".to_owned()));
        }
    };

    let (parts, body) = response.into_parts();
    let mut headers = parts.headers;
    let content_type = headers
        .remove(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
    let (sink, stream) = crate::wire::body::channel(body.size_hint().exact());
    tokio::spawn(pump_response(
        body,
        sink,
        request.cancelled.clone(),
        budget,
        upstream,
    ));
    let mut reply = Reply::stream(content_type, stream).with_http_status(parts.status.as_u16());
    reply.headers = headers;
    Ok(reply)
}

/// Feeds the upstream's response body into `sink` until it ends, the reader
/// goes away, the caller cancels, or the upstream stays silent for `idle`.
async fn pump_response(
    mut body: Incoming,
    sink: BodySink,
    cancelled: CancellationToken,
    idle: Duration,
    upstream: String,
) {
    loop {
        let frame = tokio::select! {
            _ = cancelled.cancelled() => return,
            frame = tokio::time::timeout(idle, body.frame()) => frame,
        };
        let data = match frame {
            Ok(None) => return,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue, // trailers, empty frames
            },
            Ok(Some(Err(error))) => {
                sink.abort(BodyError::Aborted(format!(
                    "upstream {upstream} failed mid-body: {}",
                    cause_chain(&error)
                )));
                return;
            }
            Err(_) => {
                sink.abort(BodyError::Aborted(format!(
                    "upstream {upstream} sent nothing for {idle:?}"
                )));
                return;
            }
        };
        let sent = tokio::select! {
            _ = cancelled.cancelled() => return,
            sent = sink.send(data) => sent,
        };
        if sent.is_err() {
            return; // nobody reads it any more
        }
    }
}

/// An error and its causes, `outer: inner: innermost`.
fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The event's body as the body of the upstream request: streamed, with
/// its exact length when the sender gave one (so the upstream gets
/// `Content-Length`, and a bodiless `GET` no body at all).
struct UpstreamBody {
    stream: Option<BodyStream>,
    /// Bytes still to come, when known.
    remaining: Option<u64>,
}

impl UpstreamBody {
    fn new(stream: Option<BodyStream>) -> Self {
        let remaining = stream.as_ref().map_or(Some(0), BodyStream::length);
        Self { stream, remaining }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let piece = std::task::ready!(futures_util::Stream::poll_next(Pin::new(stream), cx));
        match piece {
            Some(Ok(data)) => {
                if let Some(remaining) = this.remaining.as_mut() {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(error)) => {
                this.stream = None;
                Poll::Ready(Some(Err(error)))
            }
            None => {
                this.stream = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none() || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(p, u)| (p.to_string(), u.to_string()))
            .collect()
    }

    fn route(forwards: &Forwards, noun: &str) -> Option<String> {
        let handler = forwards.lookup(&HandlerName::new("get", noun))?;
        forwards
            .routes
            .iter()
            .find(|(_, h)| Arc::ptr_eq(h, &handler))
            .map(|(route, _)| route.prefix.clone())
    }

    fn uri(spec: (&str, &str), noun: &str, args: &[&str], query: &str) -> String {
        let forwards = Forwards::new(&specs(&[spec])).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        forwards.routes[0]
            .0
            .upstream_uri(noun, &args, query)
            .unwrap()
            .to_string()
    }

    #[test]
    fn prefixes_match_whole_segments_and_the_longest_wins() {
        let forwards = Forwards::new(&specs(&[
            ("files/", "http://127.0.0.1:8080/"),
            ("files/private", "http://127.0.0.1:8081/secret/"),
        ]))
        .unwrap();
        assert_eq!(route(&forwards, "files").as_deref(), Some("files"));
        assert_eq!(route(&forwards, "files/a/b").as_deref(), Some("files"));
        assert_eq!(
            route(&forwards, "files/private/x").as_deref(),
            Some("files/private")
        );
        assert_eq!(
            route(&forwards, "files/private").as_deref(),
            Some("files/private")
        );
        assert_eq!(
            route(&forwards, "files/privateer").as_deref(),
            Some("files")
        );
        assert_eq!(route(&forwards, "filesystem"), None);
        assert_eq!(route(&forwards, "time"), None);
        assert_eq!(route(&forwards, "files/../etc"), None, "not a noun");
        assert!(
            forwards
                .lookup(&HandlerName::new("post", "files"))
                .unwrap()
                .streams_body()
        );
        assert_eq!(
            forwards.names(),
            [
                "* files/... -> http://127.0.0.1:8080/",
                "* files/private/... -> http://127.0.0.1:8081/secret/"
            ]
        );
    }

    #[test]
    fn upstream_paths_follow_the_documented_rules() {
        let base = ("files/", "http://127.0.0.1:8080/base/");
        assert_eq!(
            uri(base, "files/report/2024", &[], "x=1"),
            "http://127.0.0.1:8080/base/report/2024?x=1"
        );
        assert_eq!(
            uri(base, "files", &["dir a", "b.txt"], ""),
            "http://127.0.0.1:8080/base/dir%20a/b.txt"
        );
        assert_eq!(
            uri(base, "files/docs", &["a/b.txt"], ""),
            "http://127.0.0.1:8080/base/docs/a%2Fb.txt"
        );
        assert_eq!(uri(base, "files", &[], ""), "http://127.0.0.1:8080/base/");
        assert_eq!(
            uri(base, "files", &["dir", ""], ""),
            "http://127.0.0.1:8080/base/dir/"
        );
        assert_eq!(
            uri(base, "files", &["été?#%"], "q=%20&r"),
            "http://127.0.0.1:8080/base/%C3%A9t%C3%A9%3F%23%25?q=%20&r"
        );
        let root = ("files", "http://localhost");
        assert_eq!(uri(root, "files/a", &[], ""), "http://localhost/a");
        assert_eq!(
            uri(("files", "http://[::1]:8080"), "files/a", &[], ""),
            "http://[::1]:8080/a"
        );
        assert_eq!(
            uri(("a/b/", "http://h:1/x"), "a/b/c", &["d"], ""),
            "http://h:1/x/c/d"
        );

        let forwards = Forwards::new(&specs(&[base])).unwrap();
        let route = &forwards.routes[0].0;
        assert!(route.upstream_uri("files", &["..".into()], "").is_err());
        assert!(route.upstream_uri("files", &[".".into()], "").is_err());
        assert!(
            route.upstream_uri("files", &[], "bad query").is_err(),
            "a peer's malformed query is an error, not a panic"
        );
    }

    #[test]
    fn bad_specs_are_refused_naming_the_spec() {
        for (prefix, url, expected) in [
            ("", "http://127.0.0.1:1/", "the prefix is empty"),
            ("/", "http://127.0.0.1:1/", "the prefix is empty"),
            ("fi les/", "http://127.0.0.1:1/", "\"fi les\""),
            ("a//b/", "http://127.0.0.1:1/", "segment \"\""),
            ("../", "http://127.0.0.1:1/", "\"..\""),
            ("files/", "https://127.0.0.1:1/", "must be http://"),
            ("files/", "127.0.0.1:8080", "must start with http://"),
            ("files/", "http://", "not a URL"),
            ("files/", "http://u:p@127.0.0.1:1/", "user or password"),
            ("files/", "http://127.0.0.1:1/?a=b", "query"),
            ("files/", "http://127.0.0.1:99999/", "invalid port"),
            ("files/", "http://127.0.0.1:0/", "invalid port"),
            ("files/", "http://[::1]:x/", "invalid port"),
        ] {
            let error = Forwards::new(&specs(&[(prefix, url)])).unwrap_err();
            assert!(
                error.contains(&format!("{prefix}={url}")) && error.contains(expected),
                "{prefix}={url}: {error}"
            );
        }
        let error = Forwards::new(&specs(&[
            ("files/", "http://127.0.0.1:1/"),
            ("files", "http://127.0.0.1:2/"),
        ]))
        .unwrap_err();
        assert!(error.contains("already forwarded"), "{error}");
    }

    #[tokio::test]
    async fn request_bodies_keep_their_length() {
        let empty = UpstreamBody::new(Some(BodyStream::from_bytes(Bytes::new())));
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        let mut some = UpstreamBody::new(Some(BodyStream::from_bytes(Bytes::from_static(b"abc"))));
        assert_eq!(some.size_hint().exact(), Some(3));
        let frame = some.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), &b"abc"[..]);
        assert!(some.is_end_stream());
        let (_sink, stream) = crate::wire::body::channel(None);
        assert_eq!(UpstreamBody::new(Some(stream)).size_hint().exact(), None);
    }
}
