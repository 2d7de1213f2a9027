//! The OpenAPI description of the local front (`GET /_pipe/openapi.json`):
//! real nodes over real mutual TLS serve their side's description, open
//! even with API tokens, and schemathesis, driven by that description
//! against the live nodes, finds no answer it does not describe: no server
//! error it does not allow, no hung request.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use restpipe_tests::schemathesis::{self, Outcome};
use restpipe_tests::{
    NodeSettings, Pki, Registry, Side, TestNode, TokenFile, connect_client_with, fast_settings,
    get, send, start_server,
};

const CLIENT: &str = "described";

/// Settings with a job store in `state` and a short wait for a peer that
/// is not there (schemathesis names many clients that do not exist).
fn settings(state: &std::path::Path) -> NodeSettings {
    NodeSettings {
        state_dir: Some(state.to_owned()),
        peer_wait: Duration::from_millis(50),
        ..fast_settings()
    }
}

/// A server node and a client node with the example handlers and job
/// stores, connected.
async fn described_pipe(dir: &std::path::Path) -> (TestNode, TestNode) {
    let pki = Pki::new();
    let (server_state, client_state) = (dir.join("server"), dir.join("client"));
    let server = start_server(
        &pki,
        Registry::with_examples(Side::Server),
        settings(&server_state),
    )
    .await;
    let client = connect_client_with(
        &pki,
        &server,
        CLIENT,
        Registry::with_examples(Side::Client),
        settings(&client_state),
    )
    .await;
    (server, client)
}

#[tokio::test]
async fn each_node_describes_its_own_side() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = described_pipe(dir.path()).await;
    for (node, own, other) in [
        (&client, "/server/{noun}", "/client/{name}/{noun}"),
        (&server, "/client/{name}/{noun}", "/server/{noun}"),
    ] {
        let response = get(&node.url("/_pipe/openapi.json")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.content_type(), "application/json");
        let document = response.json();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.0."));
        assert!(document["paths"][own].is_object(), "{own}");
        assert!(document["paths"][other].is_null(), "{other}");
        for path in [
            "/_pipe/health",
            "/_pipe/status",
            "/_pipe/metrics",
            "/_pipe/jobs",
        ] {
            assert!(document["paths"][path].is_object(), "{path}");
        }
    }
}

#[tokio::test]
async fn the_description_is_open_on_a_front_with_api_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = TokenFile::new(dir.path().join("tokens.toml"), Side::Server);
    tokens.add("app", &["*"], &["*"]);
    let settings = NodeSettings {
        api_tokens: Some(tokens.path().to_owned()),
        ..fast_settings()
    };
    let server = start_server(&Pki::new(), Registry::with_examples(Side::Server), settings).await;
    let described = get(&server.url("/_pipe/openapi.json")).await;
    assert_eq!(described.status, 200, "no token needed");
    assert!(described.json()["paths"]["/client/{name}/{noun}"].is_object());
    assert_eq!(get(&server.url("/_pipe/status")).await.status, 401);
}

#[tokio::test]
async fn the_nodes_own_paths_take_get_and_head_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = described_pipe(dir.path()).await;
    for path in [
        "/_pipe/health",
        "/_pipe/openapi.json",
        "/_pipe/status",
        "/_pipe/peers",
        "/_pipe/metrics",
    ] {
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let refused = send(method, &client.url(path), &[], "").await;
            assert_eq!(refused.status, 405, "{method} {path}");
            assert_eq!(refused.headers["allow"], "GET, HEAD", "{method} {path}");
            assert!(refused.json()["error"].is_string(), "{method} {path}");
        }
        let head = send("HEAD", &client.url(path), &[], "").await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path}");
    }
}

/// Runs schemathesis against `node`'s front, driven by its own
/// description; fails on any failed check. Without schemathesis: fails
/// under `CI`, else skips, saying so.
async fn schemathesis_passes_against(node: &TestNode, dir: &std::path::Path) {
    let url = node.url("/_pipe/openapi.json");
    let document = get(&url).await.json();
    let config = schemathesis::config_for(&document);
    match schemathesis::run(&url, &config, dir).await {
        Outcome::Missing(why) if std::env::var_os("CI").is_some() => {
            panic!("{why}: CI needs schemathesis (pip install schemathesis; .ci/run installs it)")
        }
        Outcome::Missing(why) => {
            eprintln!("skipped: {why} (pip install schemathesis)");
        }
        Outcome::Ran { passed, output } => {
            println!("{output}");
            assert!(
                passed,
                "schemathesis against {url} found failures:\n{output}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_undescribed_on_a_client_node() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = described_pipe(dir.path()).await;
    schemathesis_passes_against(&client, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_undescribed_on_a_server_node() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _client) = described_pipe(dir.path()).await;
    schemathesis_passes_against(&server, dir.path()).await;
}
