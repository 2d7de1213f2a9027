//! The forwards' documented rules: which prefix answers a noun, the
//! upstream URL an event becomes, and the specs that are refused.

use std::sync::Arc;

use super::Forwards;
use crate::handlers::sources::HandlerSource;
use crate::wire::HandlerName;

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

#[test]
fn every_noun_under_a_forward_counts_under_one_metric_name() {
    let forwards = Forwards::new(&specs(&[("files/", "http://127.0.0.1:9/")])).unwrap();
    let metric = |noun: &str| {
        let name = HandlerName::new("get", noun);
        forwards.lookup(&name).unwrap().metric_name(name.as_str())
    };
    // A peer choosing nouns must not mint a metric name per noun.
    assert_eq!(metric("files/a"), "forward_files");
    assert_eq!(metric("files/b/c"), "forward_files");
}

#[test]
fn an_argument_cannot_climb_out_of_the_base_through_encoded_separators() {
    // Many upstreams decode `%2F` (and `%5C`) before they resolve dot
    // segments: `/base/..%2F..%2Fsecret` is `/secret` to them.
    let forwards = Forwards::new(&specs(&[("files/", "http://127.0.0.1:8080/base/")])).unwrap();
    let route = &forwards.routes[0].0;
    for arg in [
        "../secret",
        "a/../../secret",
        "..\\secret",
        "a\\..",
        "./x",
        "x/.",
    ] {
        assert!(
            route.upstream_uri("files", &[arg.into()], "").is_err(),
            "{arg:?} is refused"
        );
    }
    // Dots that are not a whole piece are ordinary characters.
    for arg in ["...", "a..b", "..a/b", ".hidden/x", "a/b", "x./.y"] {
        assert!(
            route.upstream_uri("files", &[arg.into()], "").is_ok(),
            "{arg:?} is taken"
        );
    }
}
