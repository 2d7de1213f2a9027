//! The upstream URI a forward builds for arbitrary nouns, arguments and
//! queries never leaves its configured base: the scheme and authority are
//! the route's, the path is the base, `/`, the noun segments after the
//! prefix and one segment per argument, and no piece of it is `.` or `..`,
//! even to an upstream that percent-decodes the path once (`%2F` → `/`,
//! `%5C` → `\`) before resolving dots. The query never changes the path.
//! Which forward answers is checked against a model of the documented rule
//! (whole noun segments, longest prefix). Refusals are errors, never panics,
//! and only for an argument with a dot piece or a query a URI cannot hold.
//!
//! Input: `noun \0 query \0 arg \0 arg ...` (lossy UTF-8).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use pipe_core::Forwards;
use pipe_core::fuzzing::forward_uri;

/// The configured forwards: prefix, authority, base path.
const ROUTES: &[(&str, &str, &str)] = &[
    ("files", "127.0.0.1:8080", "/base"),
    ("files/private", "127.0.0.1:8081", ""),
    ("a_b/c", "[::1]:8082", "/x/y"),
    ("docs", "localhost:8083", "/d"),
];

fn forwards() -> &'static Forwards {
    static FORWARDS: OnceLock<Forwards> = OnceLock::new();
    FORWARDS.get_or_init(|| {
        let specs: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(prefix, authority, base)| {
                (format!("{prefix}/"), format!("http://{authority}{base}/"))
            })
            .collect();
        Forwards::new(&specs).expect("the forwards are valid")
    })
}

/// A noun segment as the router and the forwards accept them.
fn is_noun_segment(segment: &str) -> bool {
    !matches!(segment, "" | "." | "..")
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.~".contains(&b))
}

/// The route that should answer `noun`: whole segments, longest prefix.
fn expected_route(noun: &str) -> Option<(&'static str, &'static str, &'static str)> {
    if !noun.split('/').all(is_noun_segment) {
        return None;
    }
    ROUTES
        .iter()
        .filter(|(prefix, _, _)| {
            noun == *prefix
                || noun
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with('/'))
        })
        .max_by_key(|(prefix, _, _)| prefix.len())
        .copied()
}

fn has_dot_piece(text: &str) -> bool {
    text.split(['/', '\\'])
        .any(|piece| piece == "." || piece == "..")
}

fn check(noun: &str, args: &[String], query: &str) {
    let outcome = forward_uri(forwards(), noun, args, query);
    let Some((prefix, authority, base)) = expected_route(noun) else {
        assert!(outcome.is_none(), "{noun:?} reached a forward");
        return;
    };
    let Some(outcome) = outcome else {
        panic!("{noun:?} reached no forward, expected {prefix}");
    };
    let uri = match outcome {
        Ok(uri) => uri,
        Err(message) => {
            let bad_query = http::uri::PathAndQuery::try_from(format!("/?{query}")).is_err();
            assert!(
                args.iter().any(|arg| has_dot_piece(arg)) || bad_query,
                "refused {noun:?} {args:?} {query:?}: {message}"
            );
            return;
        }
    };
    assert_eq!(uri.scheme_str(), Some("http"), "{uri}");
    assert_eq!(
        uri.authority().map(|a| a.as_str()),
        Some(authority),
        "{uri}"
    );
    let path = uri.path();
    let rest = path
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_else(|| panic!("{uri} is not under {base}/"));
    // No dot piece, as sent or decoded once.
    let decoded = percent_decode_str(rest).decode_utf8_lossy();
    assert!(!has_dot_piece(rest), "{uri} climbs out of {base}/");
    assert!(
        !has_dot_piece(&decoded),
        "{uri} climbs out of {base}/ once decoded"
    );
    // Segment by segment: the noun after the prefix, then one per argument.
    let remainder = noun[prefix.len()..].trim_start_matches('/');
    let mut expected: Vec<String> = Vec::new();
    if !remainder.is_empty() {
        expected.extend(remainder.split('/').map(str::to_owned));
    }
    expected.extend(args.iter().cloned());
    if expected.is_empty() {
        expected.push(String::new());
    }
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    assert_eq!(segments, expected, "{uri}");
    // The query is carried, and never changes the path.
    let carried = uri.query().unwrap_or("");
    assert!(query.starts_with(carried), "{uri}: query {query:?}");
    if let Some(Ok(without)) = forward_uri(forwards(), noun, args, "") {
        assert_eq!(without.path(), path, "the query changed the path");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let noun = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let args: Vec<String> = parts.map(str::to_owned).collect();
    check(noun, &args, query);
});
