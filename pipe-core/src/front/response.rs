//! The responses the local front builds itself: JSON errors and documents,
//! and the body type every response has.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use crate::wire::body::BodyError;

/// Header carrying the far handler's return code on every piped response.
pub const RETURN_CODE_HEADER: &str = "x-event-return-code";
/// [`RETURN_CODE_HEADER`] as a header name made once, at compile time: a
/// `&str` name is parsed again on every insert.
pub(super) const RETURN_CODE_NAME: http::HeaderName =
    http::HeaderName::from_static(RETURN_CODE_HEADER);

/// The body of every local HTTP response: whole, or streamed from the peer.
pub type ResponseBody = BoxBody<Bytes, BodyError>;

pub(super) fn full(bytes: Bytes) -> ResponseBody {
    BoxBody::new(Full::new(bytes).map_err(|never| match never {}))
}

/// A body streamed from `file`, 64 KiB at a time.
pub(super) fn file_body(file: std::fs::File) -> ResponseBody {
    use futures_util::TryStreamExt;
    let reader =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 64 * 1024);
    let frames = reader
        .map_ok(hyper::body::Frame::data)
        .map_err(|error| BodyError::Aborted(format!("cannot read the result file: {error}")));
    BoxBody::new(http_body_util::StreamBody::new(frames))
}

/// A JSON error response: `{"error": message}`.
pub(super) fn error_response(
    status: StatusCode,
    message: impl fmt::Display,
) -> Response<ResponseBody> {
    json_response(status, &json!({ "error": message.to_string() }))
}

pub(super) fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::wire::JSON),
    );
    response
}

/// 405 with the `Allow` header: this path takes only `allowed`.
pub(super) fn method_not_allowed(allowed: &'static str) -> Response<ResponseBody> {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("use {allowed} here"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}
