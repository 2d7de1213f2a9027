//! One forwarded request: the event as an HTTP request to the upstream,
//! and the upstream's answer, streamed back as the reply.

use std::sync::Arc;

use http::Method;
use http::header::{self, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::download::download;
use super::request_body::UpstreamBody;
use super::route::Route;
use crate::handlers::places::{busy, take_place};
use crate::handlers::registry::{Handler, HandlerFuture, Request};
use crate::wire::{HandlerError, Reply, cause_chain, is_hop_by_hop};

/// Header telling the upstream which node sent the event.
pub const PEER_HEADER: &str = "x-restpipe-peer";

/// Request headers never passed to an upstream besides hop-by-hop ones:
/// they are set by the forward itself, or could make the upstream read the body
/// differently from how it is sent.
const NOT_FORWARDED: &[&str] = &[
    "expect",
    "host",
    "content-length",
    "content-type",
    PEER_HEADER,
];

/// The body type of requests to upstreams.
pub(super) type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// The handler of one forward.
pub(super) struct Forward {
    /// The prefix and its upstream.
    pub(super) route: Arc<Route>,
    /// The client shared by all forwards, with its pool of connections.
    pub(super) client: UpstreamClient,
    /// Places for requests to upstreams in progress, shared by all
    /// forwards: one is held until the upstream's body has been read.
    pub(super) places: Arc<Semaphore>,
}

impl Handler for Forward {
    fn call(&self, request: Request) -> HandlerFuture {
        let (route, client, places) =
            (self.route.clone(), self.client.clone(), self.places.clone());
        Box::pin(async move {
            let Some(place) = take_place(&places, &request).await else {
                return Ok(busy(format!(
                    "every upstream connection place on this node is taken; {} was not asked in time",
                    route.url()
                )));
            };
            forward(route, client, request, place).await
        })
    }

    fn streams_body(&self) -> bool {
        true
    }

    fn metric_name(&self, _name: &str) -> String {
        format!("forward_{}", self.route.prefix.trim_end_matches('/'))
    }
}

/// Sends `request` to the route's upstream and turns its answer into the
/// reply.
async fn forward(
    route: Arc<Route>,
    client: UpstreamClient,
    mut request: Request,
    place: OwnedSemaphorePermit,
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
        if !is_hop_by_hop(name.as_str()) && !NOT_FORWARDED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request.content_type)
        && !value.is_empty()
    {
        headers.insert(header::CONTENT_TYPE, value);
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
    let stream = download(body, request.cancelled.clone(), budget, upstream, place);
    let mut reply = Reply::stream(content_type, stream).with_http_status(parts.status.as_u16());
    reply.headers = headers;
    Ok(reply)
}
