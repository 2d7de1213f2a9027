//! Talking to a node's local HTTP front the way an app does: plain HTTP/1.1
//! requests, and the whole response read into a [`Response`] a test can look
//! at.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// No request to a node that is up may take longer than this to be answered,
/// whatever the answer (a status page, a 503 after the peer wait...).
pub const ANSWER_LIMIT: Duration = Duration::from_secs(2);

/// The HTTP client of the tests: plain HTTP, keep-alive, request bodies in
/// one piece.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A response as a test looks at it.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Every response header.
    pub headers: ::http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// From sending the request to the end of the body.
    pub took: Duration,
}

impl Response {
    /// The body as JSON; panics (failing the test) if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `X-Event-Return-Code`, if present.
    pub fn code(&self) -> Option<u32> {
        self.headers.get("x-event-return-code").map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|code| code.parse().ok())
                .unwrap_or_else(|| panic!("X-Event-Return-Code is not a number: {value:?}"))
        })
    }

    /// The `Content-Type`, or `""` without one.
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map(|value| {
                value
                    .to_str()
                    .unwrap_or_else(|_| panic!("Content-Type is not text: {value:?}"))
            })
            .unwrap_or("")
    }
}

/// A fresh client; clone it to share its connection pool.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole response.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    send_with(&http_client(), method, url, headers, body).await
}

/// [`send`] on `client`'s connections.
pub async fn send_with(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    let mut request = ::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(body.into()))
        .unwrap_or_else(|e| panic!("{method} {url}: not a valid request: {e}"));
    exchange(client, request)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `GET url`.
pub async fn get(url: &str) -> Response {
    send("GET", url, &[], Bytes::new()).await
}

/// One GET on a fresh connection; an error for a connection failure or no
/// whole answer within `limit`.
pub async fn try_get(url: &str, limit: Duration) -> Result<Response, String> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let request = ::http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::time::timeout(limit, exchange(&client, request))
        .await
        .map_err(|_| format!("GET {url}: no answer within {limit:?}"))?
}

/// A GET that must be answered, and within `limit`; panics (failing the
/// test) otherwise.
pub async fn get_within(url: &str, limit: Duration) -> Response {
    try_get(url, limit).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `request` and reads the whole response.
async fn exchange(
    client: &HttpClient,
    request: ::http::Request<Full<Bytes>>,
) -> Result<Response, String> {
    let what = format!("{} {}", request.method(), request.uri());
    let began = Instant::now();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{what}: body: {e}"))?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body,
        took: began.elapsed(),
    })
}
