//! Local API tokens (`--api-tokens`): on a shared host, only callers with a
//! token may use a node's local front, and only within its scope. Real
//! nodes over real mutual TLS, HTTP in the way an app sends it.

#![allow(clippy::unwrap_used)]

use restpipe_tests::{
    NodeSettings, Pki, Registry, Response, Side, TestNode, TokenFile, bearer, connect_client,
    connect_client_with, fast_settings, get, get_with_token, send, server_start_error,
    start_server,
};
use serde_json::json;

/// A server node with the example handlers and a job store, whose front
/// takes the tokens of `tokens`.
async fn server_with(pki: &Pki, tokens: &TokenFile, state: &std::path::Path) -> TestNode {
    let settings = NodeSettings {
        api_tokens: Some(tokens.path().to_owned()),
        state_dir: Some(state.to_owned()),
        ..fast_settings()
    };
    start_server(pki, Registry::with_examples(Side::Server), settings).await
}

/// The response's `WWW-Authenticate`, or `""`.
fn challenge(response: &Response) -> &str {
    response
        .headers
        .get("www-authenticate")
        .map_or("", |value| value.to_str().unwrap())
}

/// The response's JSON error message.
fn error(response: &Response) -> String {
    response.json()["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_server_front_lets_in_only_valid_tokens_and_each_within_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = TokenFile::new(dir.path().join("tokens.toml"), Side::Server);
    let web = tokens.add("web", &["get_*"], &["web-*"]);
    let ops = tokens.add("ops", &["*"], &["*"]);
    let pki = Pki::new();
    let server = server_with(&pki, &tokens, &dir.path().join("state")).await;
    let examples = || Registry::with_examples(Side::Client);
    let _web_1 = connect_client(&pki, &server, "web-1", examples()).await;
    let _db_1 = connect_client(&pki, &server, "db-1", examples()).await;
    let time = server.url("/client/web-1/time");

    // No token, another scheme, a wrong token: 401 with the challenge.
    let missing = get(&time).await;
    assert_eq!(missing.status, 401);
    assert_eq!(challenge(&missing), "Bearer realm=\"restpipe\"");
    assert!(
        error(&missing).contains("Authorization: Bearer"),
        "{missing:?}"
    );
    assert_eq!(missing.code(), None, "the far node was never asked");
    let basic = send("GET", &time, &[("authorization", "Basic d2ViOng=")], "").await;
    assert_eq!(basic.status, 401);
    let wrong = get_with_token(&time, &format!("{web}x")).await;
    assert_eq!(wrong.status, 401);
    assert!(
        challenge(&wrong).contains("error=\"invalid_token\""),
        "{wrong:?}"
    );
    assert!(error(&wrong).contains("not valid"), "{wrong:?}");

    // The right token: the request is piped as ever.
    let answered = get_with_token(&time, &web).await;
    assert_eq!((answered.status, answered.code()), (200, Some(0)));
    assert!(answered.json()["time_from_client"].as_f64().unwrap() > 1.0e9);
    let head = send("HEAD", &time, &[("authorization", &bearer(&web))], "").await;
    assert_eq!(head.status, 200, "HEAD is get_time");

    // Outside its scope: a handler it may not call, a client it may not
    // reach. 403, decided before anything is sent.
    let post = send(
        "POST",
        &server.url("/client/web-1/cat//x"),
        &[("authorization", &bearer(&web))],
        "",
    )
    .await;
    assert_eq!((post.status, post.code()), (403, None));
    assert_eq!(error(&post), "API token \"web\" may not call post_cat");
    assert!(challenge(&post).contains("insufficient_scope"), "{post:?}");
    let db = get_with_token(&server.url("/client/db-1/time"), &web).await;
    assert_eq!(db.status, 403);
    assert_eq!(
        error(&db),
        "API token \"web\" may not reach client \"db-1\""
    );
    let db = get_with_token(&server.url("/client/db-1/cat//hello"), &ops).await;
    assert_eq!(db.json(), json!({ "result_from_client": "hello" }));

    // Health stays open; status and peers take any valid token.
    let health = get(&server.url("/_pipe/health")).await;
    assert_eq!(
        (health.status, &health.json()["status"]),
        (200, &json!("ok"))
    );
    for page in ["/_pipe/status", "/_pipe/peers", "/_pipe/metrics"] {
        assert_eq!(get(&server.url(page)).await.status, 401, "{page}");
        assert_eq!(get_with_token(&server.url(page), &web).await.status, 200);
    }
    // The status page opens without one (a browser sends none); the
    // status it reads does not.
    for page in ["/_pipe/", "/_pipe"] {
        let html = get(&server.url(page)).await;
        assert_eq!(html.status, 200, "{page}");
        let text = String::from_utf8_lossy(&html.body);
        assert!(
            !text.contains("web-1") && !text.contains("db-1"),
            "no data in the page itself"
        );
    }
    let status = get_with_token(&server.url("/_pipe/status"), &web)
        .await
        .json();
    assert_eq!(status["api_tokens"], true);
    assert_eq!(
        status["connected_peers"], 2,
        "the status is the whole node's"
    );
    // A path that is nothing: 401 without a token, 404 with one.
    assert_eq!(get(&server.url("/nothing")).await.status, 401);
    assert_eq!(
        get_with_token(&server.url("/nothing"), &web).await.status,
        404
    );
}

/// Submits `GET path` as a job with `secret`; returns the job's location.
async fn submit(server: &TestNode, path: &str, secret: &str) -> String {
    let auth = bearer(secret);
    let accepted = send(
        "GET",
        &server.url(path),
        &[("prefer", "respond-async"), ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    accepted.headers["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn jobs_follow_the_scope_of_the_request_that_made_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = TokenFile::new(dir.path().join("tokens.toml"), Side::Server);
    let web = tokens.add("web", &["get_*"], &["web-*"]);
    let ops = tokens.add("ops", &["*"], &["*"]);
    let pki = Pki::new();
    let server = server_with(&pki, &tokens, &dir.path().join("state")).await;
    // Neither client is connected: the jobs wait in their queues.
    let web_job = submit(&server, "/client/web-1/time", &web).await;
    // Job ids sort by their creation millisecond: the second is newer.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let db_job = submit(&server, "/client/db-1/time", &ops).await;
    let out_of_scope = send(
        "GET",
        &server.url("/client/db-1/time"),
        &[
            ("prefer", "respond-async"),
            ("authorization", &bearer(&web)),
        ],
        "",
    )
    .await;
    assert_eq!(out_of_scope.status, 403, "a submission is a piped request");

    assert_eq!(get(&server.url(&web_job)).await.status, 401);
    assert_eq!(
        get_with_token(&server.url(&web_job), &web).await.status,
        202
    );
    let status = format!("{web_job}/status");
    assert_eq!(get_with_token(&server.url(&status), &web).await.status, 200);
    let refused = get_with_token(&server.url(&db_job), &web).await;
    assert_eq!(refused.status, 403);
    assert!(error(&refused).contains("may not reach client \"db-1\""));
    let cancel = send(
        "DELETE",
        &server.url(&db_job),
        &[("authorization", &bearer(&web))],
        "",
    )
    .await;
    assert_eq!(cancel.status, 403, "nor cancel it");
    assert_eq!(get_with_token(&server.url(&db_job), &ops).await.status, 202);

    let peers = |listing: Response| -> Vec<String> {
        let jobs = listing.json()["jobs"].as_array().unwrap().clone();
        jobs.iter()
            .map(|job| job["peer"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = get_with_token(&server.url("/_pipe/jobs?limit=1"), &web).await;
    assert_eq!(peers(listed), ["web-1"], "pages past jobs out of scope");
    let listed = get_with_token(&server.url("/_pipe/jobs"), &ops).await;
    assert_eq!(peers(listed), ["db-1", "web-1"]);

    let purge = |secret: String| {
        let server = &server;
        async move {
            let auth = bearer(&secret);
            send(
                "POST",
                &server.url("/_pipe/jobs/purge"),
                &[("authorization", &auth)],
                "",
            )
            .await
        }
    };
    let refused = purge(web).await;
    assert_eq!(refused.status, 403);
    assert!(
        error(&refused).contains("may not purge jobs"),
        "{refused:?}"
    );
    assert_eq!(purge(ops).await.json(), json!({ "purged": 0 }));
}

#[tokio::test]
async fn a_client_front_takes_tokens_for_handlers_and_its_server_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = TokenFile::new(dir.path().join("tokens.toml"), Side::Client);
    let app = tokens.add("app", &["get_time"], &[]);
    let pki = Pki::new();
    let server = start_server(&pki, Registry::with_examples(Side::Server), fast_settings()).await;
    let settings = NodeSettings {
        api_tokens: Some(tokens.path().to_owned()),
        ..fast_settings()
    };
    let examples = Registry::with_examples(Side::Client);
    let client = connect_client_with(&pki, &server, "branch", examples, settings).await;

    assert_eq!(get(&client.url("/server/time")).await.status, 401);
    let time = get_with_token(&client.url("/server/time"), &app).await;
    assert!(time.json()["time_from_server"].as_f64().unwrap() > 1.0e9);
    let cat = get_with_token(&client.url("/server/cat//x"), &app).await;
    assert_eq!(cat.status, 403);
    assert_eq!(error(&cat), "API token \"app\" may not call get_cat");
    assert_eq!(get(&client.url("/_pipe/health")).await.status, 200);
    // The server's front has no tokens: it answers anyone, as before.
    assert_eq!(get(&server.url("/client/branch/time")).await.status, 200);
}

#[tokio::test]
async fn a_reload_puts_the_files_tokens_in_force_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = TokenFile::new(dir.path().join("tokens.toml"), Side::Server);
    let first = tokens.add("first", &["*"], &["*"]);
    let pki = Pki::new();
    let server = server_with(&pki, &tokens, &dir.path().join("state")).await;
    let status = server.url("/_pipe/status");
    assert_eq!(get_with_token(&status, &first).await.status, 200);

    let second = tokens.add("second", &["*"], &["*"]);
    assert_eq!(
        get_with_token(&status, &second).await.status,
        401,
        "not before the reload"
    );
    assert_eq!(server.running.reload_api_tokens().unwrap(), Some(2));
    assert_eq!(get_with_token(&status, &second).await.status, 200);
    tokens.remove("first");
    assert_eq!(server.running.reload_api_tokens().unwrap(), Some(1));
    assert_eq!(get_with_token(&status, &first).await.status, 401);

    std::fs::write(tokens.path(), "[[token]]\nname = \"broken\"\n").unwrap();
    let refused = server.running.reload_api_tokens().unwrap_err();
    assert!(refused.to_string().contains("missing field"), "{refused}");
    assert_eq!(
        get_with_token(&status, &second).await.status,
        200,
        "the old tokens stay"
    );
}

#[tokio::test]
async fn a_bad_token_file_keeps_the_node_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        "[[token]]\nname = \"ci\"\nsha256 = \"abc\"\nhandlers = [\"*\"]\nclients = [\"*\"]\n",
    )
    .unwrap();
    let settings = |path: &std::path::Path| NodeSettings {
        api_tokens: Some(path.to_owned()),
        ..fast_settings()
    };
    let pki = Pki::new();
    let error = server_start_error(&pki, Registry::new(), settings(&path)).await;
    assert!(
        error.starts_with(&format!(
            "API token file {}: token \"ci\": sha256",
            path.display()
        )),
        "{error}"
    );
    let missing = dir.path().join("missing.toml");
    let error = server_start_error(&pki, Registry::new(), settings(&missing)).await;
    assert!(error.contains("cannot read API token file"), "{error}");
}
