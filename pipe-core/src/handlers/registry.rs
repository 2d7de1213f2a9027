//! Handlers: what runs on the receiving node when an event arrives.
//!
//! A handler is any `Fn(Request) -> Future<Output = Result<Reply, HandlerError>>`
//! registered under its name (`get_time`) in a [`Registry`]. A Rust user builds
//! a registry in their own binary and hands it to the node; the built-in
//! examples of the original project are in [`Registry::with_examples`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::wire::body::BodyStream;
use crate::wire::{HandlerError, JobProgress, Reply, Side, is_json_type};

/// One event as a handler sees it.
///
/// A handler registered with [`Registry::register`] gets the whole body in
/// `body` (collected up to the node's body limit) and `stream` is `None`.
/// One registered with [`Registry::register_streaming`] gets the body as it
/// arrives in `stream` (always `Some`), and `body` is empty: that is how a
/// gigabyte passes through in bounded memory.
#[derive(Debug)]
pub struct Request {
    /// Identity of the node that sent the event (from its certificate).
    pub peer: String,
    /// The sender's id for this request (unique among its requests in flight).
    pub request_id: u64,
    /// Lower-case verb: `get`, `post`, `put`, `patch`, `delete`.
    pub verb: String,
    /// Noun path, e.g. `time/utc`.
    pub noun: String,
    /// Percent-decoded arguments from after `//` in the URL.
    pub args: Vec<String>,
    /// Raw query string (without `?`), empty if none.
    pub query: String,
    /// MIME type of `body`, empty when the caller sent none.
    pub content_type: String,
    /// The caller's end-to-end HTTP headers (not hop-by-hop ones, not
    /// `Host`, `Content-Length` or `Content-Type`).
    pub headers: http::HeaderMap,
    /// The body, byte for byte as the caller sent it (whole-body handlers).
    pub body: Bytes,
    /// The body as it arrives (streaming handlers).
    pub stream: Option<BodyStream>,
    /// When the caller stops waiting; work past it is wasted.
    pub deadline: Instant,
    /// Cancelled when the caller gives up (deadline, disconnect, drop).
    pub cancelled: CancellationToken,
    /// The body parsed, when it was declared JSON.
    pub json: Option<serde_json::Value>,
    /// This event is a durable job whose earlier run on this node was
    /// interrupted (the node stopped mid-run): its work may be half done.
    pub redelivered: bool,
    /// Where a durable job's handler reports how far it got (0–100):
    /// `request.progress.report(40)`. The caller sees it in the job's
    /// state; for any other request, reports go nowhere.
    pub progress: JobProgress,
}

impl Request {
    /// Whether the content type names JSON (`application/json`, `+json`).
    pub fn is_json(&self) -> bool {
        is_json_type(&self.content_type)
    }

    /// The query string as decoded `key=value` pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_query_part(k), decode_query_part(v))
            })
            .collect()
    }
}

fn decode_query_part(part: &str) -> String {
    let spaced = part.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// What a handler returns.
pub type HandlerResult = Result<Reply, HandlerError>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

/// Something that answers events. Implemented for every suitable async closure.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event.
    fn call(&self, request: Request) -> HandlerFuture;

    /// Whether this handler reads `Request::stream` (true) or wants the
    /// whole body collected into `Request::body` first (false).
    fn streams_body(&self) -> bool {
        false
    }

    /// The name this handler's runs are counted under in metrics, for an
    /// event to `name`. A handler that answers many names (a forward of a
    /// whole prefix) returns one name for all, so a peer cannot mint metric
    /// names at will.
    fn metric_name(&self, name: &str) -> String {
        name.to_owned()
    }
}

/// A handler that reads the body as it arrives.
struct Streaming<H>(H);

impl<H: Handler> Handler for Streaming<H> {
    fn call(&self, request: Request) -> HandlerFuture {
        self.0.call(request)
    }

    fn streams_body(&self) -> bool {
        true
    }

    fn metric_name(&self, name: &str) -> String {
        self.0.metric_name(name)
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, request: Request) -> HandlerFuture {
        Box::pin(self(request))
    }
}

/// The handlers a node offers, by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The original project's examples for a node on `side`: `get_time` and
    /// `get_cat`.
    pub fn with_examples(side: Side) -> Self {
        let mut registry = Self::new();
        let time_key = format!("time_from_{}", side.as_str());
        registry.register("get_time", move |_request: Request| {
            let time_key = time_key.clone();
            async move {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                Ok(Reply::json(&serde_json::json!({ time_key: now })))
            }
        });
        let cat_key = format!("result_from_{}", side.as_str());
        registry.register("get_cat", move |request: Request| {
            let cat_key = cat_key.clone();
            async move {
                Ok(Reply::json(
                    &serde_json::json!({ cat_key: request.args.concat() }),
                ))
            }
        });
        registry
    }

    /// Registers `handler` under `name` (e.g. `get_time`), replacing any
    /// handler of that name.
    pub fn register(&mut self, name: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// Registers a handler that reads the body as it arrives, from
    /// `Request::stream`, instead of getting it whole: for bodies of any size.
    pub fn register_streaming(
        &mut self,
        name: impl Into<String>,
        handler: impl Handler,
    ) -> &mut Self {
        self.handlers
            .insert(name.into(), Arc::new(Streaming(handler)));
        self
    }

    /// The handler registered under `name`.
    pub fn lookup(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }

    /// Names of all registered handlers, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(args: &[&str]) -> Request {
        Request {
            peer: "p".into(),
            request_id: 1,
            verb: "get".into(),
            noun: "cat".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            query: "a=1&b=x%20y&c=d+e&flag".into(),
            content_type: String::new(),
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
            stream: None,
            deadline: Instant::now(),
            cancelled: CancellationToken::new(),
            json: None,
            redelivered: false,
            progress: JobProgress::none(),
        }
    }

    #[tokio::test]
    async fn examples_answer_in_the_original_shapes() {
        let registry = Registry::with_examples(Side::Server);
        let cat = registry.lookup("get_cat").unwrap();
        let reply = cat.call(request(&["hello ", "world"])).await.unwrap();
        assert_eq!(reply.body, &br#"{"result_from_server":"hello world"}"#[..]);
        let time = registry.lookup("get_time").unwrap();
        let reply = time.call(request(&[])).await.unwrap();
        let value: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert!(value["time_from_server"].as_f64().unwrap() > 1.0e9);

        let client = Registry::with_examples(Side::Client);
        let reply = client
            .lookup("get_cat")
            .unwrap()
            .call(request(&["x"]))
            .await
            .unwrap();
        assert_eq!(reply.body, &br#"{"result_from_client":"x"}"#[..]);
        assert_eq!(client.names().collect::<Vec<_>>(), ["get_cat", "get_time"]);
    }

    #[test]
    fn query_pairs_are_decoded() {
        assert_eq!(
            request(&[]).query_pairs(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "d e".into()),
                ("flag".into(), String::new())
            ]
        );
    }
}
