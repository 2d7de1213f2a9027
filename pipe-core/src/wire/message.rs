//! The messages of the pipe as the rest of restpipe sees them: events,
//! replies, failures and the handler name, independent of their protobuf
//! encoding (see [`super::convert`] for the mapping).

use bytes::Bytes;
use serde::Serialize;

use super::body::BodyStream;

/// Return code of a successful event.
pub const RETURN_OK: u32 = 0;
/// Return code of an event whose handler failed (raised, in the original).
pub const RETURN_HANDLER_FAILED: u32 = 251;
/// Return code of an event the receiving node's access policy refused.
pub const RETURN_ACCESS_DENIED: u32 = 253;
/// Return code of an event no handler was registered for.
pub const RETURN_NO_HANDLER: u32 = 255;

/// MIME type of JSON bodies.
pub const JSON: &str = "application/json";

/// Which end of the pipe a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The central node that client nodes connect to.
    Server,
    /// A node that keeps one outbound connection to the server.
    Client,
}

impl Side {
    /// `"server"` or `"client"`, as the examples' JSON keys use it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

/// Whether a MIME type is JSON: `application/json`, `application/x+json`,
/// with or without parameters.
pub fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == JSON || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// What a handler answers.
#[derive(Debug)]
pub struct Reply {
    /// `0` for success, or the handler's own code.
    pub return_code: u32,
    /// MIME type of `body`.
    pub content_type: String,
    /// The reply body (when `stream` is `None`).
    pub body: Bytes,
    /// A body produced as it goes, of any size, streamed to the caller.
    pub stream: Option<BodyStream>,
    /// Extra HTTP headers for the caller (e.g. a forward's `ETag`).
    pub headers: http::HeaderMap,
    /// The HTTP status the caller gets; `None` derives it from the return
    /// code (0 → 200, 251 → 500, 253 → 403, 255 → 404, others → 200).
    pub http_status: Option<u16>,
}

impl Reply {
    /// A JSON reply with return code 0.
    pub fn json(value: &impl Serialize) -> Self {
        // Serializing a `Serialize` value into a Vec fails only for maps with
        // non-string keys; say so in the body rather than panic.
        let body = serde_json::to_vec(value).unwrap_or_else(|e| {
            format!(r#"{{"error":"reply could not be serialized: {e}"}}"#).into_bytes()
        });
        Self {
            return_code: RETURN_OK,
            content_type: JSON.to_owned(),
            body: body.into(),
            stream: None,
            headers: http::HeaderMap::new(),
            http_status: None,
        }
    }

    /// A reply of any type with return code 0.
    pub fn bytes(content_type: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            return_code: RETURN_OK,
            content_type: content_type.into(),
            body: body.into(),
            stream: None,
            headers: http::HeaderMap::new(),
            http_status: None,
        }
    }

    /// A reply whose body is streamed as `stream` produces it: for bodies of
    /// any size. Feed it through the [`crate::wire::body::BodySink`] of
    /// [`crate::wire::body::channel`].
    pub fn stream(content_type: impl Into<String>, stream: BodyStream) -> Self {
        Self {
            return_code: RETURN_OK,
            content_type: content_type.into(),
            body: Bytes::new(),
            stream: Some(stream),
            headers: http::HeaderMap::new(),
            http_status: None,
        }
    }

    /// The HTTP status the caller gets: the explicit one, or the one its
    /// return code means (0 → 200, 251 → 500, 253 → 403, 255 → 404, a
    /// handler's own code → 200).
    pub fn status_code(&self) -> u16 {
        if let Some(status) = self.http_status.filter(|s| (100..=999).contains(s)) {
            return status;
        }
        match self.return_code {
            RETURN_NO_HANDLER => 404,
            RETURN_HANDLER_FAILED => 500,
            RETURN_ACCESS_DENIED => 403,
            _ => 200,
        }
    }

    /// The same reply with an explicit HTTP status for the caller.
    pub fn with_http_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// The same reply with the handler's own return code.
    pub fn with_return_code(mut self, code: u32) -> Self {
        self.return_code = code;
        self
    }
}

/// A handler's failure; travels as return code 251 with
/// `{"exception": {"message", "traceback", "class"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandlerError {
    /// Kind of failure, e.g. `ValueError` or a Rust type name.
    pub class: String,
    /// Human-readable message.
    pub message: String,
    /// Where it came from: a backtrace, a cause chain, or stderr.
    pub traceback: String,
}

impl HandlerError {
    /// A failure of kind `class` with a message and no traceback.
    pub fn new(class: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class: class.into(),
            message: message.into(),
            traceback: String::new(),
        }
    }

    /// The reply this failure travels as: return code 251 and the
    /// exception JSON.
    pub fn into_reply(self) -> Reply {
        Reply::bytes(JSON, self.to_body()).with_return_code(RETURN_HANDLER_FAILED)
    }

    /// The JSON body this failure travels as.
    pub fn to_body(&self) -> Bytes {
        serde_json::to_vec(&serde_json::json!({ "exception": self }))
            .unwrap_or_default()
            .into()
    }
}

impl HandlerError {
    /// A failure from any error: its message, class `Error`, and its chain
    /// of causes as the traceback.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut traceback = Vec::new();
        let mut cause = error.source();
        while let Some(inner) = cause {
            traceback.push(format!("caused by: {inner}"));
            cause = inner.source();
        }
        Self {
            class: "Error".to_owned(),
            message: error.to_string(),
            traceback: traceback.join("\n"),
        }
    }
}

/// `?` on any error in a handler makes it a 251 failure.
impl<E: std::error::Error + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::from_error(&error)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

/// Which handler an event is for: its verb and noun, and the name derived
/// from them (`get` + `time/utc` → `get_time_utc`), computed once where the
/// event is decoded and handed to the policy and every handler source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HandlerName {
    verb: String,
    noun: String,
    name: String,
}

impl HandlerName {
    /// The handler for `verb` (lower-case) and `noun` (a `/` path).
    pub fn new(verb: impl Into<String>, noun: impl Into<String>) -> Self {
        let (verb, noun) = (verb.into(), noun.into());
        let name = handler_name(&verb, &noun);
        Self { verb, noun, name }
    }

    /// The verb, lower-case: `get`, `post`...
    pub fn verb(&self) -> &str {
        &self.verb
    }

    /// The noun path, e.g. `time/utc`.
    pub fn noun(&self) -> &str {
        &self.noun
    }

    /// The flattened name, e.g. `get_time_utc`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The verb and noun, given back.
    pub fn into_parts(self) -> (String, String) {
        (self.verb, self.noun)
    }
}

impl std::fmt::Display for HandlerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Handler name for a verb and noun path: verb, `_`, noun with `/` turned
/// into `_`.
pub fn handler_name(verb: &str, noun: &str) -> String {
    let mut name = String::with_capacity(verb.len() + 1 + noun.len());
    name.push_str(verb);
    name.push('_');
    name.extend(noun.chars().map(|c| if c == '/' { '_' } else { c }));
    name
}

/// Headers that describe one HTTP connection (RFC 9110 7.6.1 and the
/// proxy ones), never carried across the pipe or to an upstream.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether the (lower-case) header `name` is hop-by-hop.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// An event to send to the peer, or one received from it.
#[derive(Debug)]
pub struct Event {
    /// Which handler it is for: verb, noun and the name derived from them.
    pub handler: HandlerName,
    /// Decoded arguments.
    pub args: Vec<String>,
    /// Raw query string.
    pub query: String,
    /// MIME type of `body`.
    pub content_type: String,
    /// End-to-end headers for the handler.
    pub headers: http::HeaderMap,
    /// The body, when it is small enough to travel in one frame.
    pub body: Bytes,
    /// A body of any size, streamed in chunks (instead of `body`).
    pub stream: Option<BodyStream>,
}

/// An error and its causes, `outer: inner: innermost`: hyper's errors say
/// little without their sources.
pub(crate) fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_types() {
        assert!(is_json_type("application/json"));
        assert!(is_json_type("Application/JSON; charset=utf-8"));
        assert!(is_json_type("application/problem+json"));
        assert!(!is_json_type("text/plain"));
        assert!(!is_json_type(""));
    }

    #[test]
    fn handler_errors_travel_as_exception_json() {
        let error = anyhow::anyhow!("inner").context("outer");
        let error = HandlerError::from_error(error.as_ref());
        let body: serde_json::Value = serde_json::from_slice(&error.to_body()).unwrap();
        assert_eq!(body["exception"]["message"], "outer");
        assert_eq!(body["exception"]["class"], "Error");
        assert_eq!(body["exception"]["traceback"], "caused by: inner");
    }

    #[test]
    fn handler_names_follow_verb_and_noun() {
        assert_eq!(handler_name("get", "time"), "get_time");
        assert_eq!(handler_name("get", "time/utc"), "get_time_utc");
        assert_eq!(handler_name("post", "files/report"), "post_files_report");
    }
}
