//! Access control by identity: a policy file on the receiving node says which
//! peers may call which handlers; everything else is refused with 403.

#![allow(clippy::unwrap_used)]

use restpipe_tests::{
    NodeSettings, Pki, Registry, Reply, Request, Side, connect_client, connect_client_with,
    example_server, fast_settings, get, send, server_start_error, start_server,
};
use serde_json::json;

fn policy_file(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn handlers() -> Registry {
    let mut registry = Registry::with_examples(Side::Server);
    registry.register("post_upload", |_request: Request| async move {
        Ok(Reply::json(&json!({ "stored": true })))
    });
    registry.register("get_files_report", |_request: Request| async move {
        Ok(Reply::json(&json!({ "report": "ok" })))
    });
    registry
}

#[tokio::test]
async fn the_server_allows_by_rule_refuses_the_rest_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        &dir,
        r#"
[[allow]]
peers = ["branch-*"]
handlers = ["get_time", "get_files_*"]

[[allow]]
peers = ["hq"]
handlers = ["*"]
"#,
    );
    let pki = Pki::new();
    let server = start_server(
        &pki,
        handlers(),
        NodeSettings {
            policy: Some(policy),
            ..fast_settings()
        },
    )
    .await;
    let branch = connect_client(&pki, &server, "branch-7", Registry::new()).await;
    let hq = connect_client(&pki, &server, "hq", Registry::new()).await;
    let stranger = connect_client(&pki, &server, "stranger", Registry::new()).await;

    // Allowed, by name and by wildcard.
    assert_eq!(get(&branch.url("/server/time")).await.status, 200);
    assert_eq!(get(&branch.url("/server/files/report")).await.status, 200);
    // Refused: a handler outside the branch's rule.
    let refused = send("POST", &branch.url("/server/upload"), &[], "x").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.code(), Some(253));
    let message = refused.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains("\"branch-7\" may not call post_upload"),
        "{message}"
    );
    // hq may call anything.
    assert_eq!(
        send("POST", &hq.url("/server/upload"), &[], "x")
            .await
            .status,
        200
    );
    // Default deny: no rule names this client.
    let refused = get(&stranger.url("/server/time")).await;
    assert_eq!((refused.status, refused.code()), (403, Some(253)));
    // Refusal is decided before lookup: an unknown handler is refused too,
    // so a policy does not reveal which handlers exist.
    assert_eq!(get(&stranger.url("/server/nothing")).await.status, 403);

    let status = get(&server.url("/_pipe/status")).await.json();
    assert_eq!(status["access_policy"], true);
}

#[tokio::test]
async fn a_client_can_restrict_what_the_server_may_call_on_it() {
    let dir = tempfile::tempdir().unwrap();
    // The server's identity in the test harness is `localhost`.
    let policy = policy_file(
        &dir,
        "[[allow]]\npeers = [\"localhost\"]\nhandlers = [\"get_time\"]\n",
    );
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let client = connect_client_with(
        &pki,
        &server,
        "guarded",
        Registry::with_examples(Side::Client),
        NodeSettings {
            policy: Some(policy),
            ..fast_settings()
        },
    )
    .await;
    assert_eq!(get(&server.url("/client/guarded/time")).await.status, 200);
    let refused = get(&server.url("/client/guarded/cat//x")).await;
    assert_eq!((refused.status, refused.code()), (403, Some(253)));
    // The client's own requests to the server are not affected.
    assert_eq!(get(&client.url("/server/cat//x")).await.status, 200);
}

#[tokio::test]
async fn a_broken_policy_keeps_the_node_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, "[[allow]]\npeers = [\"x\"]\nhandlerz = [\"*\"]\n");
    let pki = Pki::new();
    let settings = NodeSettings {
        policy: Some(policy),
        ..fast_settings()
    };
    let error = server_start_error(&pki, Registry::new(), settings).await;
    assert!(error.contains("policy.toml"), "{error}");
    assert!(error.contains("handlerz"), "{error}");
}

#[tokio::test]
async fn a_refused_call_is_answered_at_once_even_with_every_handler_slot_taken() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        &dir,
        "[[allow]]\npeers = [\"branch\"]\nhandlers = [\"get_slow\"]\n",
    );
    let pki = Pki::new();
    let mut registry = handlers();
    registry.register("get_slow", |request: Request| async move {
        request.cancelled.cancelled().await;
        Ok(Reply::json(&json!({ "slow": true })))
    });
    let mut settings = NodeSettings {
        policy: Some(policy),
        ..fast_settings()
    };
    settings.connection.max_concurrent_handlers = 1;
    let server = start_server(&pki, registry, settings).await;
    let branch = connect_client(&pki, &server, "branch", Registry::new()).await;
    // The one slot for this peer is taken.
    let slow = tokio::spawn({
        let url = branch.url("/server/slow");
        async move { send("GET", &url, &[("X-Pipe-Timeout", "10")], "").await }
    });
    restpipe_tests::eventually(std::time::Duration::from_secs(5), "slow running", || {
        server.running.node().peers().in_flight() > 0
    })
    .await;
    // A call the policy refuses, with a body that would stream: refused at
    // once, before a slot or any of its body, not after the slow one.
    let refused = send(
        "POST",
        &branch.url("/server/upload"),
        &[("X-Pipe-Timeout", "2")],
        vec![b'x'; 4 << 20],
    )
    .await;
    assert_eq!((refused.status, refused.code()), (403, Some(253)));
    slow.abort();
}
