//! The status page (`GET /_pipe/`) as an operator meets it: opened in a
//! real headless Chromium on a server node with a client connected over
//! real TLS, it shows the client, and shows it gone once the client stops;
//! on the client node it shows the link's server. Its headers and source
//! load nothing from elsewhere.

use std::time::Duration;

use restpipe_tests::browser::{self, Browser};
use restpipe_tests::{
    NodeSettings, Pki, Registry, Side, connect_client, fast_settings, get, init_logging, send,
    start_server,
};

/// How long the page may take to show a change: it refreshes every 2 s.
const PAGE_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn the_page_shows_a_client_come_and_go_in_a_real_browser() {
    init_logging();
    if !browser::installed() {
        return;
    }
    let pki = Pki::new();
    let server = start_server(&pki, Registry::with_examples(Side::Server), fast_settings()).await;
    let client = connect_client(&pki, &server, "page-client-7", Registry::new()).await;
    let browser = Browser::start().await.expect("a headless Chromium session");
    let page = browser.client();

    page.goto(&server.url("/_pipe/"))
        .await
        .expect("the server's status page loads");
    browser
        .wait_for_texts(
            PAGE_LIMIT,
            "#node-name",
            "the page names the node",
            |names| {
                names
                    .first()
                    .is_some_and(|name| !name.is_empty() && name != "restpipe")
            },
        )
        .await;
    browser
        .wait_for_texts(
            PAGE_LIMIT,
            "#peers td.peer-name",
            "the page shows the connected client",
            |names| names.iter().any(|name| name == "page-client-7"),
        )
        .await;
    // A caller that speaks no TLS is refused, and the page lists it among
    // the node's recent errors.
    speak_no_tls_to(server.pipe_addr()).await;
    let errors = browser
        .wait_for_texts(
            PAGE_LIMIT,
            "#errors li",
            "the page shows the refused handshake",
            |errors| errors.iter().any(|e| e.contains("TLS handshake refused")),
        )
        .await;
    assert!(
        errors[0].contains("handshake: 127.0.0.1:"),
        "newest first, with the source and the caller's address: {errors:?}"
    );
    let path = browser
        .save_screenshot("status-page.png")
        .await
        .expect("a screenshot of the page");
    eprintln!("status page screenshot: {}", path.display());

    // The client node's own page shows its link and the server it reached.
    page.goto(&client.url("/_pipe/"))
        .await
        .expect("the client's status page loads");
    let link = browser
        .wait_for_texts(PAGE_LIMIT, "#link dd", "the page shows the link", |link| {
            link.first().is_some_and(|state| state == "connected")
        })
        .await;
    let server_shown = &link[1];
    assert!(
        server_shown.contains(&server.pipe_addr().port().to_string()),
        "the link's server is shown: {link:?}"
    );
    browser
        .save_screenshot("status-page-client.png")
        .await
        .expect("a screenshot of the client's page");

    // Back on the server's page, the client goes away and the page, which
    // refreshes by itself, shows it gone.
    page.goto(&server.url("/_pipe"))
        .await
        .expect("the page loads without its trailing slash too");
    browser
        .wait_for_texts(
            PAGE_LIMIT,
            "#peers td.peer-name",
            "the client is shown",
            |names| names.iter().any(|name| name == "page-client-7"),
        )
        .await;
    client.stop().await;
    browser
        .wait_for_texts(
            PAGE_LIMIT,
            "#peers td.peer-name",
            "the page shows the stopped client gone",
            |names| names.is_empty(),
        )
        .await;
    let empty = browser.texts("#peers .empty").await.expect("the peers box");
    assert_eq!(empty, ["no client connected"]);

    // A request for the client that went away fails (503), and the page
    // lists it, by its path only: the query stays out.
    let failed = get(&server.url("/client/page-client-7/time?secret=kept-out")).await;
    assert_eq!(failed.status, 503, "{failed:?}");
    let errors = browser
        .wait_for_texts(
            PAGE_LIMIT,
            "#errors li",
            "the page shows the failed send",
            |errors| {
                errors
                    .iter()
                    .any(|e| e.contains("piped: GET /client/page-client-7/time"))
            },
        )
        .await;
    assert!(errors[0].contains("503"), "newest first: {errors:?}");
    assert!(!errors.iter().any(|e| e.contains("kept-out")), "{errors:?}");

    // A node that stops answering is shown as unreachable.
    server.stop().await;
    let banner = browser
        .wait_for_texts(
            PAGE_LIMIT,
            "#banner",
            "the page says the node is unreachable",
            |banner| {
                banner
                    .first()
                    .is_some_and(|text| text.contains("unreachable"))
            },
        )
        .await;
    eprintln!("banner: {banner:?}");
    browser.close().await;
}

#[tokio::test]
async fn the_page_shows_jobs_by_state_and_queues() {
    init_logging();
    if !browser::installed() {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("a state directory");
    let settings = NodeSettings {
        state_dir: Some(state.path().to_owned()),
        ..fast_settings()
    };
    let server = start_server(&pki, Registry::new(), settings).await;
    // A job for a client that has never connected waits in its queue.
    let accepted = send(
        "POST",
        &server.url("/client/late-client/count"),
        &[("prefer", "respond-async")],
        "",
    )
    .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");

    let browser = Browser::start().await.expect("a headless Chromium session");
    browser
        .client()
        .goto(&server.url("/_pipe/"))
        .await
        .expect("the status page loads");
    let cells = browser
        .wait_for_texts(PAGE_LIMIT, "#jobs td", "the page shows the jobs", |cells| {
            cells.windows(2).any(|pair| pair == ["queued", "1"])
        })
        .await;
    assert!(
        cells.windows(2).any(|pair| pair == ["late-client", "1"]),
        "the client's queue is shown: {cells:?}"
    );
    browser
        .save_screenshot("status-page-jobs.png")
        .await
        .expect("a screenshot of the page with jobs");
    browser.close().await;
    server.stop().await;
}

/// Connects to a server node's pipe and speaks plain HTTP instead of TLS,
/// until the node hangs up.
async fn speak_no_tls_to(pipe: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(pipe)
        .await
        .expect("the pipe accepts TCP");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("the plain text goes out");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PAGE_LIMIT, tcp.read_to_end(&mut answer)).await;
}

#[tokio::test]
async fn the_page_is_self_contained_and_locked_down() {
    let pki = Pki::new();
    let server = start_server(&pki, Registry::with_examples(Side::Server), fast_settings()).await;
    for path in ["/_pipe/", "/_pipe"] {
        let answer = get(&server.url(path)).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        let header = |name: &str| {
            answer
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), "text/html; charset=utf-8");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("cache-control"), "no-store");
        let policy = header("content-security-policy");
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        let html = String::from_utf8_lossy(&answer.body);
        assert!(html.contains("/_pipe/status"), "the page reads the status");
        for attribute in ["src=", "href="] {
            for (at, _) in html.match_indices(attribute) {
                let value = html[at + attribute.len()..].trim_start_matches(['"', '\'']);
                assert!(
                    !["http:", "https:", "//"]
                        .iter()
                        .any(|external| value.starts_with(external)),
                    "an external reference in the page: {}",
                    &html[at..(at + 60).min(html.len())]
                );
            }
        }
        for tag in ["<link", "<img", "<iframe", "@import", "url("] {
            assert!(!html.contains(tag), "the page loads nothing: {tag}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn behind_api_tokens_the_page_asks_for_one_and_then_shows_the_node() {
    use fantoccini::Locator;
    init_logging();
    if !browser::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = restpipe_tests::TokenFile::new(dir.path().join("tokens.toml"), Side::Server);
    let secret = tokens.add("ops", &["*"], &["*"]);
    let settings = NodeSettings {
        api_tokens: Some(tokens.path().to_owned()),
        ..fast_settings()
    };
    let pki = Pki::new();
    let server = start_server(&pki, Registry::with_examples(Side::Server), settings).await;
    let _client = connect_client(&pki, &server, "token-client-3", Registry::new()).await;
    let browser = Browser::start().await.expect("a headless Chromium session");
    let page = browser.client();
    page.goto(&server.url("/_pipe/"))
        .await
        .expect("the page opens without a token");

    // The status answers 401: the page says so and asks for a token.
    browser
        .wait_for_texts(
            PAGE_LIMIT,
            "#token-form.shown label",
            "the page asks for a token",
            |labels| labels.iter().any(|label| label.contains("needs a token")),
        )
        .await;
    let field = page
        .find(Locator::Css("#token"))
        .await
        .expect("the token field");
    field.send_keys(&secret).await.expect("typing the token");
    page.find(Locator::Css("#token-form button"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("using the token");
    browser
        .wait_for_texts(
            PAGE_LIMIT,
            "#peers td.peer-name",
            "with the token, the page shows the client",
            |names| names.iter().any(|name| name == "token-client-3"),
        )
        .await;
    browser.close().await;
}
