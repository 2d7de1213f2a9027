//! Serving the local front: one HTTP/1 connection task per caller, the
//! top-level routing of a request, and the drain on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::access::TokenGate;
use super::jobs::{self, JOBS_PATH};
use super::limits::{Refusals, WriteStall};
use super::listener::{HttpListener, Peer, accept, listener_cleanup};
use super::metrics::{METRICS_PATH, metrics_response};
use super::openapi::{OPENAPI_PATH, openapi_response};
use super::page::{PAGE_PATHS, page_response};
use super::piped::respond_piped;
use super::response::{ResponseBody, json_response, method_not_allowed};
use super::status::{HEALTH_PATH, PEERS_PATH, STATUS_PATH, health, peers, status};
use crate::node::Node;

/// `X-Forwarded-For`, made once (a `&str` name is parsed on every lookup).
const FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// Who made a local request, for logs: the connection's peer, or the first
/// `X-Forwarded-For` address when the peer is a trusted proxy.
fn caller_of(headers: &http::HeaderMap, peer: &Peer) -> String {
    let forwarded = peer
        .trusted
        .then(|| headers.get(FORWARDED_FOR))
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
/// `grace`. At most `max_http_connections` (of the node's settings) are
/// open at once; each is cut off when its caller leaves a response unread
/// for `http_write_stall`. With `tokens`, callers need an API token (see
/// `access` for which paths need what).
pub async fn serve(
    listener: HttpListener,
    node: Arc<Node>,
    tokens: Option<Arc<TokenGate>>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new());
    // Slow-loris guard: headers must arrive promptly.
    builder.header_read_timeout(Duration::from_secs(30));
    let settings = node.settings();
    let open = Arc::new(Semaphore::new(settings.max_http_connections));
    let stall = settings.http_write_stall;
    let refusals = Refusals::new();
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
        let Ok(slot) = open.clone().try_acquire_owned() else {
            debug!(caller = %peer.addr, "local HTTP connection refused: too many open");
            refusals.refuse(io.into_inner());
            continue;
        };
        let io = TokioIo::new(WriteStall::new(io.into_inner(), stall));
        let node = node.clone();
        let tokens = tokens.clone();
        let service = service_fn(move |request| {
            let node = node.clone();
            let tokens = tokens.clone();
            let caller = caller_of(request.headers(), &peer);
            async move {
                let response = respond(&node, tokens.as_deref(), request, &caller).await;
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder.serve_connection(io, service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                debug!("local HTTP connection ended: {error}");
            }
            drop(slot);
        });
    }
    node.begin_stopping();
    drop(listener_cleanup(&listener));
    tokio::select! {
        _ = graceful.shutdown() => debug!("local HTTP front drained"),
        _ = tokio::time::sleep(grace) => warn!(?grace, "local HTTP requests still running after the grace period; closing"),
    }
}

/// The node's own paths that each answer one document: `GET` (or `HEAD`)
/// only. The jobs under [`JOBS_PATH`] check their methods themselves.
pub(super) const NODE_PATHS: &[&str] = &[
    HEALTH_PATH,
    OPENAPI_PATH,
    STATUS_PATH,
    PEERS_PATH,
    METRICS_PATH,
];

/// Answers one local request. Health and the OpenAPI description come
/// before the API-token check: a monitor must see the node is up without a
/// token, and a description of the API is not a secret.
async fn respond(
    node: &Node,
    tokens: Option<&TokenGate>,
    request: Request<Incoming>,
    caller: &str,
) -> Response<ResponseBody> {
    let path = request.uri().path();
    let document = NODE_PATHS.contains(&path) || PAGE_PATHS.contains(&path);
    if document && !matches!(*request.method(), Method::GET | Method::HEAD) {
        return method_not_allowed("GET, HEAD");
    }
    match path {
        HEALTH_PATH => return json_response(StatusCode::OK, &health(node)),
        OPENAPI_PATH => return openapi_response(node.side()),
        // The status page is the same HTML on every node and holds no
        // data: a browser opening it sends no token, and what it shows
        // comes from `/_pipe/status`, which needs one (the page asks).
        path if PAGE_PATHS.contains(&path) => return page_response(),
        _ => {}
    }
    // Past these, a front with tokens lets in only a caller with one.
    let token = match tokens.map(|gate| gate.admit(request.headers(), caller)) {
        None => None,
        Some(Ok(token)) => Some(token),
        Some(Err(refused)) => {
            node.metrics().http_response(refused.status().as_u16(), 0);
            return *refused;
        }
    };
    let token = token.as_deref();
    match path {
        STATUS_PATH => {
            let mut status = status(node).await;
            status["api_tokens"] = tokens.is_some().into();
            return json_response(StatusCode::OK, &status);
        }
        PEERS_PATH => return json_response(StatusCode::OK, &peers(node).await),
        METRICS_PATH => return metrics_response(node),
        path if path
            .strip_prefix(JOBS_PATH)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')) =>
        {
            return jobs::respond(node, request, token, caller).await;
        }
        _ => {}
    }
    // A cheap copy (shared bytes) for the recent errors: the request moves on.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let response = respond_piped(node, request, caller, token).await;
    let body_bytes = hyper::body::Body::size_hint(response.body()).lower();
    node.metrics()
        .http_response(response.status().as_u16(), body_bytes);
    if let Some(failure) = send_failure(response.status()) {
        // The path only: a query string may carry what is not for the page.
        node.recent_errors().record(
            "piped",
            format_args!(
                "{method} {} from {caller}: {} ({failure})",
                uri.path(),
                response.status()
            ),
        );
    }
    response
}

/// What a status means when a piped request could not be sent or answered
/// in time: the failures the status page lists. Others (4xx, a handler's
/// own 500) are the caller's or the handler's business.
fn send_failure(status: StatusCode) -> Option<&'static str> {
    match status {
        StatusCode::BAD_GATEWAY => Some("the connection to the peer dropped"),
        StatusCode::SERVICE_UNAVAILABLE => {
            Some("no connection to the peer, or it is busy or going away")
        }
        StatusCode::GATEWAY_TIMEOUT => Some("the deadline passed"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::front::openapi;
    use crate::wire::Side;
    use http::HeaderValue;

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

    /// The paths `respond` (server.rs) routes by name, and where the
    /// document describes each. A route added there without being listed
    /// here fails `every_routed_path_is_described`.
    const ROUTED: &[(&str, &str)] = &[
        ("HEALTH_PATH", "/_pipe/health"),
        ("OPENAPI_PATH", OPENAPI_PATH),
        ("STATUS_PATH", "/_pipe/status"),
        ("PEERS_PATH", "/_pipe/peers"),
        ("METRICS_PATH", METRICS_PATH),
        ("JOBS_PATH", JOBS_PATH),
    ];

    #[test]
    fn every_routed_path_is_described() {
        let source = include_str!("server.rs");
        let code = source.split("#[cfg(test)]").next().unwrap_or(source);
        assert!(
            !code.contains("\"/_pipe/"),
            "server.rs routes by path constants only, which this test can check"
        );
        let named: BTreeSet<&str> = code
            .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .filter(|word| word.ends_with("_PATH") && word.len() > "_PATH".len())
            .collect();
        let listed: BTreeSet<&str> = ROUTED.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            named, listed,
            "server.rs routes these paths: describe each in openapi.json and list it in ROUTED"
        );
        for path in NODE_PATHS {
            assert!(ROUTED.iter().any(|(_, routed)| routed == path), "{path}");
        }
        let page = PAGE_PATHS[0];
        for side in [Side::Client, Side::Server] {
            let document = openapi::document(side).unwrap_or_else(|error| panic!("{error}"));
            let described: BTreeSet<String> = document["paths"]
                .as_object()
                .map(|paths| paths.keys().cloned().collect())
                .unwrap_or_default();
            for (name, path) in ROUTED {
                assert!(described.contains(*path), "{name} ({path}) is described");
            }
            assert!(
                described.contains(page),
                "the status page ({page}) is described"
            );
            for sub in ["/{id}", "/{id}/status", "/purge"] {
                let path = format!("{JOBS_PATH}{sub}");
                assert!(described.contains(&path), "{path} is described");
            }
        }
    }
}
