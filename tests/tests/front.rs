//! The local front under hostile or careless callers: bad deadlines, slow
//! bodies, too many connections, callers that stop reading. Real nodes over
//! real mutual TLS, HTTP in the way an app would send it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use restpipe_tests::{
    NodeSettings, Pipe, Pki, Registry, Reply, Request, Side, TestNode, body, connect_client_with,
    example_server, fast_settings, get, send, start_server, try_get,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const CLIENT: &str = "client-1";

/// The example handlers on both nodes, `CLIENT` connected.
async fn pipe() -> Pipe {
    Pipe::start(
        Registry::with_examples(Side::Server),
        fast_settings(),
        CLIENT,
        Registry::with_examples(Side::Client),
    )
    .await
}

#[tokio::test]
async fn a_timeout_out_of_range_is_a_400_with_a_reason_not_a_dropped_connection() {
    let pipe = pipe().await;
    let url = pipe.client.url("/server/time");
    for value in ["1e20", "1e308", "86401", "-1", "0", "NaN", "inf", "soon"] {
        let reply = send("GET", &url, &[("x-pipe-timeout", value)], "").await;
        assert_eq!(reply.status, 400, "X-Pipe-Timeout: {value}");
        let message = reply.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(message.contains("X-Pipe-Timeout"), "{value}: {message}");
    }
    let reply = send("GET", &url, &[("x-pipe-timeout", "2.5")], "").await;
    assert_eq!(reply.status, 200, "a deadline in range is taken");
    assert_eq!(get(&url).await.status, 200, "the node is still fine");
}

/// Opens a connection to `node`'s front and sends `request` on it as is.
async fn raw(node: &TestNode, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(node.http)
        .await
        .expect("the front accepts connections");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the front takes the request");
    stream
}

/// The status line's code of the response the front writes on `stream`,
/// within `limit`.
async fn status_within(stream: &mut TcpStream, limit: Duration) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let reading = async {
        while !head.ends_with(b"\r\n") {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or_else(|_| panic!("no status line within {limit:?}"));
    let line = String::from_utf8_lossy(&head).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"))
}

const GET_HEALTH: &str = "GET /_pipe/health HTTP/1.1\r\nhost: front\r\n\r\n";

#[tokio::test]
async fn a_request_body_that_does_not_arrive_by_the_deadline_is_a_408() {
    let pipe = pipe().await;
    // Ten bytes announced, three sent, then nothing: a slow-body slowloris.
    let mut stream = raw(
        &pipe.client,
        "POST /server/time HTTP/1.1\r\nhost: front\r\ncontent-length: 10\r\n\
         x-pipe-timeout: 0.5\r\n\r\nabc",
    )
    .await;
    assert_eq!(
        status_within(&mut stream, Duration::from_secs(10)).await,
        408
    );
    assert_eq!(get(&pipe.client.url("/server/time")).await.status, 200);
}

#[tokio::test]
async fn connections_past_the_cap_get_503_and_a_freed_slot_is_reused() {
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let settings = NodeSettings {
        max_http_connections: 2,
        ..fast_settings()
    };
    let examples = Registry::with_examples(Side::Client);
    let client = connect_client_with(&pki, &server, CLIENT, examples, settings).await;
    // Two callers hold their (keep-alive) connections.
    let mut first = raw(&client, GET_HEALTH).await;
    assert_eq!(
        status_within(&mut first, Duration::from_secs(10)).await,
        200
    );
    let mut second = raw(&client, GET_HEALTH).await;
    assert_eq!(
        status_within(&mut second, Duration::from_secs(10)).await,
        200
    );
    // A third is told why and closed.
    let mut third = raw(&client, "GET /server/time HTTP/1.1\r\nhost: front\r\n\r\n").await;
    assert_eq!(
        status_within(&mut third, Duration::from_secs(10)).await,
        503
    );
    // Once a caller leaves, its slot serves the next one.
    drop(first);
    let url = client.url("/server/time");
    let mut answered = false;
    for _ in 0..100 {
        if try_get(&url, Duration::from_secs(5))
            .await
            .is_ok_and(|r| r.status == 200)
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "a freed slot is never reused");
    drop(second);
}

#[tokio::test]
async fn a_caller_that_stops_reading_a_streamed_reply_frees_the_far_handler() {
    let pki = Pki::new();
    let mut handlers = Registry::with_examples(Side::Server);
    let reader_gone = Arc::new(Notify::new());
    let gone = reader_gone.clone();
    handlers.register("get_endless", move |_request: Request| {
        let gone = gone.clone();
        async move {
            let (sink, stream) = body::channel(None);
            tokio::spawn(async move {
                while sink.send(Bytes::from(vec![b'x'; 64 * 1024])).await.is_ok() {}
                gone.notify_one(); // the reader went away
            });
            Ok(Reply::stream("application/octet-stream", stream))
        }
    });
    let server = start_server(&pki, handlers, fast_settings()).await;
    let settings = NodeSettings {
        http_write_stall: Duration::from_millis(300),
        ..fast_settings()
    };
    let examples = Registry::with_examples(Side::Client);
    let client = connect_client_with(&pki, &server, CLIENT, examples, settings).await;
    // The caller asks, reads the status line, and then reads nothing more.
    let mut stream = raw(
        &client,
        "GET /server/endless HTTP/1.1\r\nhost: front\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_within(&mut stream, Duration::from_secs(10)).await,
        200
    );
    tokio::time::timeout(Duration::from_secs(20), reader_gone.notified())
        .await
        .expect("the far handler is still pinned by a caller that reads nothing");
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
    drop(stream);
}

#[tokio::test]
async fn a_streamed_upload_that_stops_arriving_is_let_go_at_the_deadline() {
    let pipe = pipe().await;
    // A chunked upload: one piece, then silence.
    let mut stream = raw(
        &pipe.client,
        "POST /server/time HTTP/1.1\r\nhost: front\r\ntransfer-encoding: chunked\r\n\
         x-pipe-timeout: 0.5\r\n\r\n5\r\nhello\r\n",
    )
    .await;
    status_within(&mut stream, Duration::from_secs(10)).await;
    // Past the deadline the front stops waiting for the rest and closes the
    // connection, instead of holding it (and its slot) for ever.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the connection is still held open for an upload that never ends")
        .ok();
}
