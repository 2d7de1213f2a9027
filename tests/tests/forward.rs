//! Forwards end to end, the original's use case: a file server on the
//! client node's host, behind its firewall, read through the pipe by callers
//! of the server node, with no handler written. The file server is a real
//! local HTTP server that records what reached it; the client node is
//! started with `--forward files/=http://<it>/base/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use restpipe_tests::{
    NodeSettings, Pki, Registry, Reply, Request, Side, TestNode, connect_client_with,
    fast_settings, get, send, start_server,
};
use serde_json::json;

const CLIENT: &str = "files-host";
/// The large download: big enough to stream through many windows.
const LARGE: usize = 32 * 1024 * 1024;
const PIECE: usize = 256 * 1024;

/// What the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A local HTTP upstream (the "firewalled file server") on `127.0.0.1:0`.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(request, recorder.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    /// The last request that reached the upstream.
    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

/// Piece `i` of the large download (every byte depends on its offset).
fn piece(i: usize) -> Bytes {
    (0..PIECE)
        .map(|j| (((i * PIECE + j) as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn hash(data: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(data);
    hasher.finish()
}

type UpstreamBody = BoxBody<Bytes, Infallible>;

/// The file server: records each request, then answers by path.
async fn answer(
    request: http::Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<http::Response<UpstreamBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let received = body.len();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    });
    let full = |status: u16, content_type: &str, body: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("etag", "\"v1\"")
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap()
    };
    Ok(match parts.uri.path() {
        "/base/report/2024" => full(200, "text/csv", "month,total\n1,42\n".to_owned()),
        "/base/upload" => full(
            201,
            "application/json",
            json!({ "received": received }).to_string(),
        ),
        "/base/a%20b/c.txt" => full(200, "text/plain", "c".to_owned()),
        "/base/large" => {
            let pieces = futures_util::stream::iter(
                (0..LARGE / PIECE).map(|i| Ok::<_, Infallible>(Frame::data(piece(i)))),
            );
            http::Response::builder()
                .header("content-type", "application/octet-stream")
                .body(StreamBody::new(pieces).boxed())
                .unwrap()
        }
        "/base/stall" => {
            // One piece, then silence with the connection open.
            let first = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(piece(0)))]);
            let pieces = futures_util::StreamExt::chain(first, futures_util::stream::pending());
            http::Response::builder()
                .header("content-type", "application/octet-stream")
                .body(StreamBody::new(pieces).boxed())
                .unwrap()
        }
        _ => full(404, "text/plain", "no such file".to_owned()),
    })
}

struct Setup {
    upstream: Upstream,
    server: TestNode,
    _client: TestNode,
}

impl Setup {
    /// A server node and a client node forwarding `files/` to a fresh
    /// upstream's `/base/` (and `down/` to a port nobody listens on), with
    /// `handlers` on the client node.
    async fn start(handlers: Registry) -> Self {
        let upstream = Upstream::start().await;
        let nobody = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let pki = Pki::new();
        let server = start_server(&pki, Registry::new(), fast_settings()).await;
        let settings = NodeSettings {
            forwards: vec![
                ("files/".into(), format!("http://{}/base/", upstream.addr)),
                ("down/".into(), format!("http://{nobody}/")),
            ],
            ..fast_settings()
        };
        let client = connect_client_with(&pki, &server, CLIENT, handlers, settings).await;
        Self {
            upstream,
            server,
            _client: client,
        }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(&format!("/client/{CLIENT}/{path}"))
    }
}

#[tokio::test]
async fn a_get_reaches_the_upstream_and_its_answer_comes_back() {
    let setup = Setup::start(Registry::new()).await;
    let response = send(
        "GET",
        &setup.url("files/report/2024?x=1"),
        &[
            ("accept", "text/csv"),
            ("if-none-match", "\"v0\""),
            ("x-restpipe-peer", "an impostor"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.code(), Some(0));
    assert_eq!(response.content_type(), "text/csv");
    assert_eq!(response.headers["etag"], "\"v1\"");
    assert_eq!(&response.body[..], b"month,total\n1,42\n");

    let seen = setup.upstream.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/base/report/2024");
    assert_eq!(seen.query.as_deref(), Some("x=1"));
    assert_eq!(seen.header("accept"), Some("text/csv"));
    assert_eq!(seen.header("if-none-match"), Some("\"v0\""));
    assert_eq!(
        seen.header("x-restpipe-peer"),
        Some("localhost"),
        "the asking node's identity, never the caller's claim"
    );
    assert_eq!(
        seen.header("host"),
        Some(setup.upstream.addr.to_string().as_str())
    );
    assert_eq!(seen.header("transfer-encoding"), None, "a GET has no body");
    assert!(seen.body.is_empty());

    // HEAD travels as GET; the caller gets the headers without the body.
    let head = send("HEAD", &setup.url("files/report/2024"), &[], Bytes::new()).await;
    assert_eq!((head.status, head.code()), (200, Some(0)));
    assert_eq!(head.headers["etag"], "\"v1\"");
    assert!(head.body.is_empty());
    assert_eq!(setup.upstream.last().method, "GET");
}

#[tokio::test]
async fn uploads_arrive_byte_for_byte_with_their_type() {
    let setup = Setup::start(Registry::new()).await;
    // Over the inline limit, so both uploads stream through the pipe.
    let document =
        json!({ "rows": (0..20_000).map(|i| format!("ligne {i} — été")).collect::<Vec<_>>() })
            .to_string();
    assert!(document.len() > 300 * 1024);
    let binary: Vec<u8> = (0..=255u8).cycle().take(300 * 1024).collect();
    for (method, body, content_type) in [
        ("POST", Bytes::from(document), "application/json"),
        ("PUT", Bytes::from(binary), "application/octet-stream"),
    ] {
        let response = send(
            method,
            &setup.url("files/upload"),
            &[("content-type", content_type)],
            body.clone(),
        )
        .await;
        assert_eq!(response.status, 201, "{method}");
        assert_eq!(response.code(), Some(0));
        assert_eq!(response.json(), json!({ "received": body.len() }));
        let seen = setup.upstream.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.path, "/base/upload");
        assert_eq!(seen.header("content-type"), Some(content_type));
        assert_eq!(
            seen.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert!(seen.body == body, "{method}: the upstream got other bytes");
    }
}

#[tokio::test]
async fn upstream_statuses_pass_through_and_args_become_path_segments() {
    let setup = Setup::start(Registry::new()).await;
    let missing = get(&setup.url("files/nothing/here")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), Some(0), "the forward ran");
    assert_eq!(&missing.body[..], b"no such file");
    assert_eq!(setup.upstream.last().path, "/base/nothing/here");

    let args = get(&setup.url("files//a%20b/c.txt")).await;
    assert_eq!((args.status, &args.body[..]), (200, &b"c"[..]));
    assert_eq!(setup.upstream.last().path, "/base/a%20b/c.txt");

    // A slash inside an argument stays inside it.
    let slash = get(&setup.url("files//a%2Fb")).await;
    assert_eq!(slash.status, 404);
    assert_eq!(setup.upstream.last().path, "/base/a%2Fb");
}

#[tokio::test]
async fn a_rust_handler_named_like_a_forwarded_noun_wins() {
    let mut handlers = Registry::with_examples(Side::Client);
    handlers.register("get_files", |_request: Request| async {
        Ok(Reply::bytes("text/plain", "from the Rust handler"))
    });
    let setup = Setup::start(handlers).await;
    let own = get(&setup.url("files")).await;
    assert_eq!(
        (own.status, &own.body[..]),
        (200, &b"from the Rust handler"[..])
    );
    assert!(setup.upstream.seen.lock().unwrap().is_empty());
    // Nouns under the prefix without a handler of their own still forward.
    let forwarded = get(&setup.url("files/report/2024")).await;
    assert_eq!(forwarded.status, 200);
    assert_eq!(forwarded.content_type(), "text/csv");
    // Other handlers are untouched.
    assert_eq!(get(&setup.url("time")).await.status, 200);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_handler_failure_naming_it() {
    let setup = Setup::start(Registry::new()).await;
    let response = get(&setup.url("down/anything")).await;
    assert_eq!(response.status, 500);
    assert_eq!(response.code(), Some(251));
    let exception = &response.json()["exception"];
    assert_eq!(exception["class"], "UpstreamError");
    let message = exception["message"].as_str().unwrap();
    assert!(
        message.contains("upstream http://127.0.0.1:") && message.contains("no answer"),
        "{message}"
    );
}

#[tokio::test]
async fn a_large_download_comes_back_byte_for_byte() {
    let setup = Setup::start(Registry::new()).await;
    let expected = tokio::task::spawn_blocking(|| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for i in 0..LARGE / PIECE {
            hasher.write(&piece(i));
        }
        hasher.finish()
    });
    let response = get(&setup.url("files/large")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.code(), Some(0));
    assert_eq!(response.content_type(), "application/octet-stream");
    assert_eq!(response.body.len(), LARGE);
    assert_eq!(hash(&response.body), expected.await.unwrap());
}

#[tokio::test]
async fn requests_to_upstreams_wait_for_one_of_max_upstream_connections_places() {
    // An upstream that takes connections and never answers, counting them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let keeper = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            while let Ok((socket, _)) = listener.accept().await {
                accepted.lock().unwrap().push(socket);
            }
        }
    });
    let pki = Pki::new();
    let server = start_server(&pki, Registry::new(), fast_settings()).await;
    let settings = NodeSettings {
        forwards: vec![("slow/".into(), format!("http://{addr}/"))],
        max_upstream_connections: 1,
        ..fast_settings()
    };
    let _client = connect_client_with(&pki, &server, CLIENT, Registry::new(), settings).await;
    let url = server.url(&format!("/client/{CLIENT}/slow/a"));
    let first = tokio::spawn({
        let url = url.clone();
        async move { send("GET", &url, &[("X-Pipe-Timeout", "10")], "").await }
    });
    restpipe_tests::eventually(std::time::Duration::from_secs(5), "upstream asked", || {
        accepted.lock().unwrap().len() == 1
    })
    .await;
    // The one place is taken: the next request waits, then is told so.
    let second = send("GET", &url, &[("X-Pipe-Timeout", "0.5")], "").await;
    assert_eq!(second.status, 503);
    let exception = &second.json()["exception"];
    assert_eq!(exception["class"], "Busy", "{exception}");
    assert_eq!(
        accepted.lock().unwrap().len(),
        1,
        "a second connection was opened"
    );
    first.abort();
    keeper.abort();
}

#[tokio::test]
async fn an_upstream_silent_mid_body_ends_the_download_and_frees_its_place() {
    let upstream = Upstream::start().await;
    let pki = Pki::new();
    let server = start_server(&pki, Registry::new(), fast_settings()).await;
    let settings = NodeSettings {
        forwards: vec![("files/".into(), format!("http://{}/base/", upstream.addr))],
        max_upstream_connections: 1,
        ..fast_settings()
    };
    let _client = connect_client_with(&pki, &server, CLIENT, Registry::new(), settings).await;
    let request = http::Request::get(server.url(&format!("/client/{CLIENT}/files/stall")))
        .header("X-Pipe-Timeout", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let started = std::time::Instant::now();
    let response = restpipe_tests::http_client()
        .request(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0;
    let ended = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await {
            Err(_) => panic!("the download still hangs after 10 s, {received} bytes in"),
            Ok(None) => break Ok(()),
            Ok(Some(Err(error))) => break Err(error),
            Ok(Some(Ok(frame))) => received += frame.into_data().map_or(0, |d| d.len()),
        }
    };
    assert!(ended.is_err(), "a cut download must not look whole");
    assert_eq!(received, PIECE, "the piece sent before the silence arrives");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    // The one upstream place is free again: the next request gets it.
    let next = send(
        "GET",
        &server.url(&format!("/client/{CLIENT}/files/report/2024")),
        &[("X-Pipe-Timeout", "2")],
        "",
    )
    .await;
    assert_eq!(next.status, 200, "{:?}", next.body);
}
