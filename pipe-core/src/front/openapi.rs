//! `GET /_pipe/openapi.json`: an OpenAPI 3.0 description of the local
//! HTTP API. The document lives beside this file (`openapi.json`) and
//! describes both sides' piped paths; a node serves it with only its own
//! side's (`/server/{noun}` on a client node, `/client/{name}/{noun}` on a
//! server node) and its own version. It is open even on a front with API
//! tokens: a description of the API is not a secret, and a tool needs it
//! before it has a token.

use http::{Response, StatusCode};
use serde_json::Value;

use super::response::{ResponseBody, error_response, json_response};
use super::router::{CLIENT_PREFIX, SERVER_PREFIX};
use crate::wire::Side;

/// Where the description is served.
pub(super) const OPENAPI_PATH: &str = "/_pipe/openapi.json";

/// The description, both sides' piped paths included.
const DOCUMENT: &str = include_str!("openapi.json");

/// The description as a node of `side` serves it: the other side's piped
/// paths taken out, `info.version` this build's. `Err` only if the
/// document in the source does not parse, which its tests rule out.
pub(super) fn document(side: Side) -> Result<Value, serde_json::Error> {
    let mut document: Value = serde_json::from_str(DOCUMENT)?;
    let other_prefix = match side {
        Side::Client => CLIENT_PREFIX,
        Side::Server => SERVER_PREFIX,
    };
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        paths.retain(|path, _| !path.starts_with(other_prefix));
    }
    document["info"]["version"] = env!("CARGO_PKG_VERSION").into();
    document["info"]["x-restpipe-side"] = side.as_str().into();
    Ok(document)
}

/// The answer to `GET /_pipe/openapi.json` on a node of `side`.
pub(super) fn openapi_response(side: Side) -> Response<ResponseBody> {
    match document(side) {
        Ok(document) => json_response(StatusCode::OK, &document),
        Err(error) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the OpenAPI document in this build does not parse: {error}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn served(side: Side) -> Value {
        document(side).unwrap_or_else(|error| panic!("openapi.json does not parse: {error}"))
    }

    fn paths(document: &Value) -> BTreeSet<String> {
        document["paths"]
            .as_object()
            .map(|paths| paths.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every `$ref` in `value`, as written.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => found.push(target),
                        _ => refs(value, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }

    #[test]
    fn each_side_serves_an_openapi_document_of_its_own_piped_paths() {
        for (side, own, other) in [
            (Side::Client, "/server/{noun}", "/client/{name}/{noun}"),
            (Side::Server, "/client/{name}/{noun}", "/server/{noun}"),
        ] {
            let document = served(side);
            let version = document["openapi"].as_str().unwrap_or_default();
            assert!(version.starts_with("3.0."), "{side:?}: openapi {version:?}");
            assert!(document["info"]["title"].is_string());
            assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
            let paths = paths(&document);
            assert!(paths.contains(own), "{side:?} describes {own}");
            assert!(!paths.contains(other), "{side:?} leaves out {other}");
            for method in ["get", "post", "put", "patch", "delete", "head"] {
                assert!(
                    document["paths"][own][method].is_object(),
                    "{side:?}: {method} {own} is piped (router::Verb)"
                );
            }
        }
    }

    #[test]
    fn every_operation_has_an_id_and_responses_and_every_ref_resolves() {
        let document = served(Side::Server);
        let mut ids = BTreeSet::new();
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            assert!(path.starts_with('/'), "{path}");
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let id = operation["operationId"].as_str().unwrap_or_default();
                assert!(
                    ids.insert(id.to_owned()),
                    "{method} {path}: id {id:?} not unique"
                );
                let responses = operation["responses"].as_object();
                assert!(
                    responses.is_some_and(|responses| !responses.is_empty()),
                    "{method} {path} has responses"
                );
            }
        }
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.strip_prefix('#').unwrap_or("not local");
            assert!(
                document.pointer(pointer).is_some(),
                "$ref {target} resolves"
            );
        }
    }

    #[test]
    fn every_error_the_front_makes_has_the_error_body() {
        let document = served(Side::Client);
        let error = &document["components"]["schemas"]["Error"];
        assert_eq!(error["required"], serde_json::json!(["error"]));
        assert_eq!(error["properties"]["error"]["type"], "string");
        let piped = &document["paths"]["/server/{noun}"]["get"]["responses"];
        for status in ["400", "404", "408", "413", "500", "502", "503", "504"] {
            assert!(piped[status].is_object(), "GET /server/{{noun}}: {status}");
        }
    }
}
