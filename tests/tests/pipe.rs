//! The pipe end to end, the way a user meets it: two real nodes over real
//! mutual TLS on loopback, HTTP in on one side, HTTP out on the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use restpipe_tests::{
    FRAME_OVERHEAD_BYTES, HandlerError, INLINE_LIMIT, NodeSettings, Pipe, Pki, Registry, Reply,
    Request, Side, WAITING_PER_SLOT, connect_client, connect_client_with, example_server,
    fast_settings, get, http_client, send, send_with, start_client, start_server,
};
use serde_json::json;
use tokio::sync::Notify;

/// Example handlers plus the test handlers, for a node on `side`.
fn test_handlers(side: Side) -> Registry {
    let mut registry = Registry::with_examples(side);
    let echo = |request: Request| async move {
        Ok(Reply::bytes(
            request.content_type.clone(),
            request.body.clone(),
        ))
    };
    registry.register("post_echo", echo);
    registry.register("put_echo", echo);
    registry.register("get_inspect", move |request: Request| async move {
        Ok(Reply::json(&json!({
            "side": side.as_str(),
            "peer": request.peer,
            "verb": request.verb,
            "noun": request.noun,
            "args": request.args,
            "query": request.query,
            "query_pairs": request.query_pairs(),
            "content_type": request.content_type,
            "json": request.json,
            "body_len": request.body.len(),
        })))
    });
    registry.register("post_inspect", |request: Request| async move {
        Ok(Reply::json(
            &json!({ "json": request.json, "verb": request.verb }),
        ))
    });
    registry.register("delete_inspect", |request: Request| async move {
        Ok(Reply::json(&json!({ "verb": request.verb })))
    });
    registry.register("get_time_utc", |_request: Request| async move {
        Ok(Reply::bytes("text/plain", "utc"))
    });
    registry.register("get_fail", |_request: Request| async move {
        Err::<Reply, _>(HandlerError::new("ValueError", "the handler refused"))
    });
    registry.register("get_panic", |_request: Request| async move {
        if true {
            panic!("handler exploded");
        }
        Ok(Reply::bytes("", ""))
    });
    registry.register("get_code", |request: Request| async move {
        let code = request
            .args
            .first()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok(Reply::bytes("text/plain", "custom").with_return_code(code))
    });
    registry
}

const CLIENT: &str = "client-1";

/// The example and test handlers on both nodes, `CLIENT` connected.
async fn pipe() -> Pipe {
    Pipe::start(
        test_handlers(Side::Server),
        fast_settings(),
        CLIENT,
        test_handlers(Side::Client),
    )
    .await
}

#[tokio::test]
async fn time_and_cat_both_directions() {
    let pipe = pipe().await;

    let time = get(&pipe.client.url("/server/time")).await;
    assert_eq!(time.status, 200);
    assert_eq!(time.code(), Some(0));
    assert_eq!(time.content_type(), "application/json");
    assert!(time.json()["time_from_server"].as_f64().unwrap() > 1.0e9);

    let cat = get(&pipe.client.url("/server/cat//hello%20/world")).await;
    assert_eq!(cat.status, 200);
    assert_eq!(cat.code(), Some(0));
    assert_eq!(cat.json(), json!({ "result_from_server": "hello world" }));

    let time = get(&pipe.server.url(&format!("/client/{CLIENT}/time"))).await;
    assert_eq!(time.status, 200);
    assert_eq!(time.code(), Some(0));
    assert!(time.json()["time_from_client"].as_f64().unwrap() > 1.0e9);

    let cat = get(&pipe
        .server
        .url(&format!("/client/{CLIENT}/cat//hello%20/world")))
    .await;
    assert_eq!(cat.status, 200);
    assert_eq!(cat.json(), json!({ "result_from_client": "hello world" }));

    // Nested nouns reach verb_noun_noun handlers.
    let utc = get(&pipe.client.url("/server/time/utc")).await;
    assert_eq!((utc.status, &utc.body[..]), (200, &b"utc"[..]));
}

#[tokio::test]
async fn binary_and_non_ascii_bodies_round_trip_byte_for_byte() {
    let pipe = pipe().await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let text = "naïve café — 東京 — 🚀\u{0}\r\n".repeat(100);
    for (url, body, mime) in [
        (
            pipe.client.url("/server/echo"),
            Bytes::from(binary.clone()),
            "application/octet-stream",
        ),
        (
            pipe.server.url(&format!("/client/{CLIENT}/echo")),
            Bytes::from(binary.clone()),
            "application/octet-stream",
        ),
        (
            pipe.client.url("/server/echo"),
            Bytes::from(text.clone()),
            "text/plain; charset=utf-8",
        ),
        (
            pipe.server.url(&format!("/client/{CLIENT}/echo")),
            Bytes::from(text.clone()),
            "text/plain; charset=utf-8",
        ),
    ] {
        for method in ["POST", "PUT"] {
            let reply = send(method, &url, &[("content-type", mime)], body.clone()).await;
            assert_eq!(reply.status, 200, "{method} {url}");
            assert_eq!(reply.code(), Some(0));
            assert_eq!(reply.content_type(), mime);
            assert_eq!(reply.body, body, "{method} {url}: body changed in transit");
        }
    }
}

#[tokio::test]
async fn args_query_and_json_bodies_arrive() {
    let pipe = pipe().await;
    let reply = get(&pipe
        .client
        .url("/server/inspect//%C3%A9t%C3%A9/a%2Fb//last?x=1&name=J%C3%BCrgen+B&flag"))
    .await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    assert_eq!(seen["side"], "server");
    assert_eq!(seen["peer"], CLIENT);
    assert_eq!(seen["verb"], "get");
    assert_eq!(seen["noun"], "inspect");
    assert_eq!(seen["args"], json!(["été", "a/b", "", "last"]));
    assert_eq!(seen["query"], "x=1&name=J%C3%BCrgen+B&flag");
    assert_eq!(
        seen["query_pairs"],
        json!([["x", "1"], ["name", "Jürgen B"], ["flag", ""]])
    );

    // The server sees the client's identity; the client sees the server's.
    let reply = get(&pipe.server.url(&format!("/client/{CLIENT}/inspect?q=1"))).await;
    assert_eq!(reply.json()["peer"], "localhost");
    assert_eq!(reply.json()["side"], "client");
    assert_eq!(reply.json()["query"], "q=1");

    // A JSON body arrives parsed.
    let reply = send(
        "POST",
        &pipe.client.url("/server/inspect"),
        &[("content-type", "application/json")],
        r#"{"n": [1, 2, {"k": "ü"}]}"#,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["json"], json!({ "n": [1, 2, { "k": "ü" }] }));
    assert_eq!(reply.json()["verb"], "post");

    let reply = send("DELETE", &pipe.client.url("/server/inspect"), &[], "").await;
    assert_eq!(reply.json()["verb"], "delete");
}

#[tokio::test]
async fn head_is_handled_as_get_without_a_body() {
    let pipe = pipe().await;
    let reply = send("HEAD", &pipe.client.url("/server/cat//x"), &[], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.code(), Some(0));
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn two_hundred_requests_in_flight_at_once_each_get_their_own_reply() {
    const N: usize = 200;
    let arrived = Arc::new(AtomicUsize::new(0));
    let all_arrived = Arc::new(Notify::new());
    let mut handlers = Registry::with_examples(Side::Server);
    {
        let arrived = arrived.clone();
        let all_arrived = all_arrived.clone();
        handlers.register("get_slow", move |request: Request| {
            let arrived = arrived.clone();
            let all_arrived = all_arrived.clone();
            async move {
                // Every handler waits until all N are running at once...
                let waiting = all_arrived.notified();
                if arrived.fetch_add(1, Ordering::SeqCst) + 1 == N {
                    all_arrived.notify_waiters();
                } else {
                    waiting.await;
                }
                // ...then they finish in a shuffled order.
                let jitter = rand::random::<u64>() % 50;
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                Ok(Reply::json(&json!({ "arg": request.args[0] })))
            }
        });
    }
    let Pipe {
        server: _server,
        client,
        ..
    } = Pipe::start(handlers, fast_settings(), CLIENT, Registry::new()).await;

    let http = http_client();
    let requests = (0..N).map(|i| {
        let http = http.clone();
        let url = client.url(&format!("/server/slow//{i}"));
        async move { (i, send_with(&http, "GET", &url, &[], Bytes::new()).await) }
    });
    let replies = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(requests),
    )
    .await
    .expect("200 concurrent requests did not all finish");
    for (i, reply) in replies {
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(reply.json(), json!({ "arg": i.to_string() }));
    }
    assert_eq!(arrived.load(Ordering::SeqCst), N);
}

#[tokio::test]
async fn unknown_handler_is_404_with_code_255() {
    let pipe = pipe().await;
    for url in [
        pipe.client.url("/server/nothing"),
        pipe.server.url(&format!("/client/{CLIENT}/nothing")),
    ] {
        let reply = get(&url).await;
        assert_eq!(reply.status, 404, "{url}");
        assert_eq!(reply.code(), Some(255));
        assert!(
            reply.json()["error"]
                .as_str()
                .unwrap()
                .contains("get_nothing")
        );
    }
    // The verb is part of the name: there is a get_time but no post_time.
    let reply = send("POST", &pipe.client.url("/server/time"), &[], "").await;
    assert_eq!((reply.status, reply.code()), (404, Some(255)));
}

#[tokio::test]
async fn handler_failure_is_500_with_code_251_and_the_exception() {
    let pipe = pipe().await;
    let reply = get(&pipe.client.url("/server/fail")).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.code(), Some(251));
    let exception = &reply.json()["exception"];
    assert_eq!(exception["class"], "ValueError");
    assert_eq!(exception["message"], "the handler refused");
    assert!(exception.get("traceback").is_some());

    // A panicking handler is a failure too, and the connection survives it.
    let reply = get(&pipe.server.url(&format!("/client/{CLIENT}/panic"))).await;
    assert_eq!((reply.status, reply.code()), (500, Some(251)));
    assert_eq!(reply.json()["exception"]["message"], "handler exploded");
    let after = get(&pipe.server.url(&format!("/client/{CLIENT}/time"))).await;
    assert_eq!(after.status, 200);
}

#[tokio::test]
async fn a_handlers_own_return_code_is_carried() {
    let pipe = pipe().await;
    let reply = get(&pipe.client.url("/server/code//7")).await;
    assert_eq!((reply.status, reply.code()), (200, Some(7)));
    assert_eq!(&reply.body[..], b"custom");
}

#[tokio::test]
async fn unknown_client_name_is_404() {
    let pipe = pipe().await;
    let reply = get(&pipe.server.url("/client/nobody/time")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.code(), None);
    assert!(reply.json()["error"].as_str().unwrap().contains("nobody"));
}

#[tokio::test]
async fn two_clients_are_each_reachable_by_name() {
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let mut names = Vec::new();
    let mut clients = Vec::new();
    for name in ["alpha", "beta.example"] {
        let mut handlers = Registry::new();
        handlers.register("get_whoami", move |_request: Request| async move {
            Ok(Reply::json(&json!({ "me": name })))
        });
        clients.push(connect_client(&pki, &server, name, handlers).await);
        names.push(name);
    }
    for name in names {
        let reply = get(&server.url(&format!("/client/{name}/whoami"))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), json!({ "me": name }));
    }
    let status = get(&server.url("/_pipe/status")).await.json();
    assert_eq!(status["connected_peers"], 2);
    let listed: Vec<_> = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ["alpha", "beta.example"]);
}

#[tokio::test]
async fn bad_local_input_is_400_with_a_json_message() {
    let pipe = pipe().await;
    let cases = [
        ("GET", pipe.client.url("/server/cat//bad%zz"), "", "percent"),
        ("GET", pipe.client.url("/server/cat//%ff%fe"), "", "UTF-8"),
        (
            "GET",
            pipe.server.url("/client/bad!name/time"),
            "",
            "client name",
        ),
        ("GET", pipe.client.url("/server/"), "", "names no handler"),
        ("GET", pipe.client.url("/server/a%20b"), "", "noun segment"),
        (
            "POST",
            pipe.client.url("/server/echo"),
            "{not json",
            "not valid JSON",
        ),
    ];
    for (method, url, body, expected) in cases {
        let reply = send(method, &url, &[("content-type", "application/json")], body).await;
        assert_eq!(reply.status, 400, "{method} {url}");
        let message = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(expected), "{url}: {message}");
    }
    let reply = send(
        "GET",
        &pipe.client.url("/server/time"),
        &[("x-pipe-timeout", "soon")],
        "",
    )
    .await;
    assert_eq!(reply.status, 400);

    // The node is still fine.
    assert_eq!(get(&pipe.client.url("/server/time")).await.status, 200);
}

#[tokio::test]
async fn other_methods_are_405_and_unpiped_paths_404() {
    let pipe = pipe().await;
    let reply = send("OPTIONS", &pipe.client.url("/server/time"), &[], "").await;
    assert_eq!(reply.status, 405);
    assert!(reply.headers["allow"].to_str().unwrap().contains("PATCH"));
    let reply = get(&pipe.client.url("/elsewhere")).await;
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"].as_str().unwrap().contains("/server/"));
    // Each node pipes only its own direction.
    assert_eq!(get(&pipe.server.url("/server/time")).await.status, 404);
    assert_eq!(get(&pipe.client.url("/client/x/time")).await.status, 404);
}

#[tokio::test]
async fn oversized_local_body_is_413_before_anything_is_sent() {
    let pki = Pki::new();
    let settings = NodeSettings {
        max_body_bytes: 1024,
        ..fast_settings()
    };
    let server = start_server(&pki, test_handlers(Side::Server), fast_settings()).await;
    let client =
        connect_client_with(&pki, &server, CLIENT, test_handlers(Side::Client), settings).await;
    let reply = send("POST", &client.url("/server/echo"), &[], vec![7u8; 1025]).await;
    assert_eq!(reply.status, 413);
    assert!(reply.json()["error"].as_str().unwrap().contains("1024"));
    let reply = send("POST", &client.url("/server/echo"), &[], vec![7u8; 1024]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 1024);
}

#[tokio::test]
async fn health_and_status_on_both_nodes() {
    let pipe = pipe().await;
    for (node, side) in [(&pipe.server, "server"), (&pipe.client, "client")] {
        let health = get(&node.url("/_pipe/health")).await;
        assert_eq!(health.status, 200);
        assert_eq!(health.json()["status"], "ok");
        assert_eq!(health.json()["connected_peers"], 1);
        let status = get(&node.url("/_pipe/status")).await.json();
        assert_eq!(status["side"], side);
        assert!(status["uptime_seconds"].as_f64().unwrap() >= 0.0);
        assert!(
            status["handlers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h == "get_time")
        );
        assert_eq!(status["peers"].as_array().unwrap().len(), 1);
        assert!(
            status["peers"][0]["connected_since"]
                .as_str()
                .unwrap()
                .contains('T')
        );
    }
    let client_status = get(&pipe.client.url("/_pipe/status")).await.json();
    assert_eq!(client_status["node"], CLIENT);
    assert_eq!(client_status["peers"][0]["name"], "localhost");
    assert_eq!(client_status["link"]["connected"], true);
    let _ = &pipe.pki;
}

#[tokio::test]
async fn client_node_without_a_server_answers_503_fast() {
    let pki = Pki::new();
    // A port with nothing behind it.
    let vacant = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = start_client(pki.client(CLIENT), vacant, Registry::new(), fast_settings()).await;
    let started = std::time::Instant::now();
    let reply = get(&client.url("/server/time")).await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("no connection")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let status = get(&client.url("/_pipe/status")).await.json();
    assert_eq!(status["link"]["connected"], false);
    assert!(
        status["link"]["last_error"]
            .as_str()
            .unwrap()
            .contains("TCP connect")
    );
}

#[tokio::test]
async fn events_past_the_handler_slots_and_wait_queue_are_refused_with_503_at_once() {
    const SLOTS: usize = 2;
    const ADMITTED: usize = SLOTS * (1 + WAITING_PER_SLOT);
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut handlers = Registry::with_examples(Side::Server);
    {
        let started = started.clone();
        let gate = gate.clone();
        handlers.register("get_gated", move |request: Request| {
            let started = started.clone();
            let gate = gate.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                Ok(Reply::json(&json!({ "arg": request.args[0] })))
            }
        });
    }
    let mut settings = fast_settings();
    settings.connection.max_concurrent_handlers = SLOTS;
    let Pipe { server, client, .. } =
        Pipe::start(handlers, settings, CLIENT, Registry::new()).await;

    let http = http_client();
    let admitted: Vec<_> = (0..ADMITTED)
        .map(|i| {
            let http = http.clone();
            let url = client.url(&format!("/server/gated//{i}"));
            tokio::spawn(async move { send_with(&http, "GET", &url, &[], Bytes::new()).await })
        })
        .collect();
    // All admitted: SLOTS running, the rest waiting for a slot.
    let status_url = server.url("/_pipe/status");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = get(&status_url).await.json();
        if status["in_flight"]["inbound"] == ADMITTED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all admitted: {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        started.load(Ordering::SeqCst),
        SLOTS,
        "only SLOTS handlers run"
    );

    // One more is refused at once, with the reason, instead of queueing.
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        get(&client.url("/server/gated//extra")),
    )
    .await
    .expect("a refusal must not wait for a slot");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.code(), Some(251));
    assert_eq!(refused.json()["exception"]["class"], "Busy");
    let message = refused.json()["exception"]["message"].to_string();
    assert!(message.contains("at capacity"), "{message}");

    // The admitted ones all finish once the handlers may go on.
    gate.add_permits(ADMITTED);
    for (i, request) in admitted.into_iter().enumerate() {
        let reply = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("admitted request finishes")
            .unwrap();
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(reply.json(), json!({ "arg": i.to_string() }));
    }
    // And with the queue drained, the node takes events again.
    gate.add_permits(1);
    let again = get(&client.url("/server/gated//again")).await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn an_event_larger_than_the_peers_frame_limit_is_413_here_and_the_link_stays_up() {
    // The server takes the smallest frames a node may be configured with;
    // the client keeps the 16 MiB default, and learns the server's limit
    // from its Hello.
    let mut settings = fast_settings();
    settings.connection.max_frame_bytes = INLINE_LIMIT + FRAME_OVERHEAD_BYTES;
    let Pipe {
        server: _server,
        client,
        ..
    } = Pipe::start(
        test_handlers(Side::Server),
        settings,
        CLIENT,
        Registry::new(),
    )
    .await;

    // An inline body just under the inline limit plus long end-to-end
    // headers (carried with the event): it no longer fits the server's frames.
    let body = Bytes::from(vec![b'x'; INLINE_LIMIT - 1024]);
    let pad = "y".repeat(FRAME_OVERHEAD_BYTES / 2 + 4096);
    let headers = [("x-pad-1", pad.as_str()), ("x-pad-2", pad.as_str())];
    let url = client.url("/server/echo");
    let reply = send_with(&http_client(), "POST", &url, &headers, body).await;
    assert_eq!(reply.status, 413, "{:?}", reply.json());
    assert!(reply.json()["error"].as_str().unwrap().contains("limit"));

    // Nothing reached the server to break the connection: it still serves.
    let small = send_with(
        &http_client(),
        "POST",
        &client.url("/server/echo"),
        &[],
        Bytes::from_static(b"still here"),
    )
    .await;
    assert_eq!(small.status, 200);
    assert_eq!(small.body, Bytes::from_static(b"still here"));
    let status = get(&client.url("/_pipe/status")).await.json();
    assert_eq!(status["link"]["connected"], true, "{status}");
    assert_eq!(status["link"]["reconnect_attempts"], 0, "{status}");
}

#[tokio::test]
async fn a_reply_larger_than_the_peers_frame_limit_fails_cleanly_and_the_link_stays_up() {
    // The server keeps the default frame limit; the client node takes the
    // smallest, and the server learns it from the client's Hello.
    let mut handlers = test_handlers(Side::Server);
    handlers.register("get_bulky", |_request: Request| async move {
        let mut reply = Reply::bytes("text/plain", vec![b'x'; INLINE_LIMIT - 1024]);
        let pad =
            http::HeaderValue::from_str(&"y".repeat(FRAME_OVERHEAD_BYTES / 2 + 4096)).unwrap();
        reply.headers.insert("x-pad-1", pad.clone());
        reply.headers.insert("x-pad-2", pad);
        Ok(reply)
    });
    let pki = Pki::new();
    let server = start_server(&pki, handlers, fast_settings()).await;
    let mut settings = fast_settings();
    settings.connection.max_frame_bytes = INLINE_LIMIT + FRAME_OVERHEAD_BYTES;
    let client = connect_client_with(&pki, &server, CLIENT, Registry::new(), settings).await;

    let reply = get(&client.url("/server/bulky")).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.code(), Some(251));
    assert_eq!(reply.json()["exception"]["class"], "ReplyTooLarge");

    let time = get(&client.url("/server/time")).await;
    assert_eq!(time.status, 200);
    let status = get(&client.url("/_pipe/status")).await.json();
    assert_eq!(status["link"]["reconnect_attempts"], 0, "{status}");
}
