//! A client node behind an HTTP proxy, as an operator meets it: a real
//! tinyproxy started by each test with its own configuration, the client
//! opening its pipe with `CONNECT` through it and TLS end to end (the
//! server sees, and verifies, the client's own certificate), the proxy's
//! refusals as clear errors in the client's status and log while it keeps
//! retrying, and, on hosts of their own (network namespaces), a client
//! that reaches its server only through the proxy. Tests that need
//! tinyproxy skip, saying so, where it is not installed (CI installs it);
//! the namespaced one also where namespaces cannot be made.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use restpipe_tests::files::path_arg;
use restpipe_tests::netns::Hosts;
use restpipe_tests::process::free_ports;
use restpipe_tests::tinyproxy::{self, ProxyOptions, Tinyproxy};
use restpipe_tests::{
    IssueRequest, NodeOptions, NodeProcess, Pki, Proxies, Registry, Role, SERVER_NAME, Side,
    TestNode, example_server, example_server_at, fast_settings, get, get_within, start_client_to,
    wait_for_client,
};

/// The client node's name.
const CLIENT: &str = "branch-behind-proxy";
/// The proxy account's user and password.
const USER: &str = "branch7";
const PASSWORD: &str = "pw-Zq81x";
/// A password the proxy does not know, until it is told to.
const WRONG_PASSWORD: &str = "pw-Wr0ng9";
/// Bound on every wait: a start, a connection, an error showing.
const LIMIT: Duration = Duration::from_secs(15);

/// A tinyproxy in `dir` with `options`, or `None` where it is not
/// installed (the test skips).
async fn tinyproxy(dir: &Path, options: ProxyOptions) -> Option<Tinyproxy> {
    let binary = tinyproxy::installed()?;
    let proxy = Tinyproxy::start(&binary, &dir.join("tinyproxy"), options)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    Some(proxy)
}

/// Admits [`USER`] with `password`, and CONNECT to `port` only.
fn proxy_options(password: &str, port: u16) -> ProxyOptions {
    ProxyOptions {
        basic_auth: Some((USER.to_owned(), password.to_owned())),
        connect_ports: vec![port],
        ..ProxyOptions::default()
    }
}

/// Client node options with the example handlers, through `proxy`.
fn through(proxy: &str, no_proxy: &str) -> NodeOptions {
    NodeOptions {
        handlers: Registry::with_examples(Side::Client),
        proxy: Proxies::through(proxy.parse().unwrap(), no_proxy, "the test"),
        ..NodeOptions::default()
    }
}

/// The `link` of the client's status at `http` once `condition` holds of
/// it, or fails after [`LIMIT`] saying `what`.
async fn link_until(
    http: SocketAddr,
    what: &str,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let status = get_within(&format!("http://{http}/_pipe/status"), LIMIT).await;
        let link = status.json()["link"].clone();
        if condition(&link) {
            return link;
        }
        assert!(
            started.elapsed() < LIMIT,
            "not within {LIMIT:?}: {what}; link: {link}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `link` shows an error containing `error`, and at least three
/// failed attempts: the client keeps retrying.
fn failing_with(link: &serde_json::Value, error: &str) -> bool {
    link["connected"] == false
        && link["last_error"]
            .as_str()
            .is_some_and(|last| last.contains(error))
        && link["reconnect_attempts"].as_u64().is_some_and(|n| n >= 3)
}

/// `/server/time` at `http` answers 200 within [`LIMIT`].
async fn time_ok(http: SocketAddr) {
    let started = Instant::now();
    loop {
        let answer = get_within(&format!("http://{http}/server/time"), LIMIT).await;
        if answer.status == 200 {
            assert!(answer.json()["time_from_server"].is_number(), "{answer:?}");
            return;
        }
        assert!(started.elapsed() < LIMIT, "last answer: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `server` reaches the client's handlers through the pipe.
async fn server_reaches_client(server: &TestNode) {
    let time = get(&server.url(&format!("/client/{CLIENT}/time"))).await;
    assert_eq!(time.status, 200, "{time:?}");
    assert!(time.json()["time_from_client"].is_number(), "{time:?}");
    let cat = get(&server.url(&format!("/client/{CLIENT}/cat//hello%20/world"))).await;
    assert_eq!(
        cat.body,
        r#"{"result_from_client":"hello world"}"#.as_bytes()
    );
}

/// The client's identity installed in `dir`/certs.
fn install_client(pki: &Pki, dir: &Path) -> std::path::PathBuf {
    let certs = dir.join("certs");
    let issued = pki.issue(IssueRequest::new(CLIENT, Role::Client));
    pki.install(&certs, Role::Client, &issued).unwrap();
    certs
}

/// `pipe-client serve` for `server`, its front on `http`, its identity in
/// `certs`, reconnecting fast; the environment cleared, for the test to set.
fn client_command(
    mut command: Command,
    certs: &Path,
    server: SocketAddr,
    http: SocketAddr,
) -> Command {
    command
        .env_clear()
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    command
        .args(["serve", "--server", &server.to_string()])
        .args(["--server-name", SERVER_NAME])
        .args(["--http", &http.to_string()])
        .args(["--cert-dir", path_arg(certs)])
        .args(["--reconnect-min", "0.05", "--reconnect-max", "0.3"]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_both_ways_through_a_proxy_that_wants_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let port = server.pipe_addr().port();
    let Some(proxy) = tinyproxy(dir.path(), proxy_options(PASSWORD, port)).await else {
        return;
    };
    let client = start_client_to(
        pki.client(CLIENT),
        &[server.pipe_addr()],
        through(&proxy.url_with(USER, PASSWORD), ""),
    )
    .await;
    wait_for_client(&server, CLIENT).await;
    client.time_ok_within(LIMIT).await;
    server_reaches_client(&server).await;

    // The pipe went through the proxy, which saw a CONNECT to the server.
    assert!(
        proxy.connects_to(&server.pipe_addr().to_string()) >= 1,
        "{}",
        proxy.log()
    );
    let link = client.link().await;
    assert_eq!(
        link["proxy"],
        format!("http://***@{}", proxy.addr),
        "{link}"
    );
    assert_eq!(link["server"], server.pipe_addr().to_string(), "{link}");
    let shown = client.status().await.to_string();
    assert!(
        !shown.contains(PASSWORD) && !shown.contains(USER),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_credentials_are_a_clear_error_and_the_client_keeps_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    let port = server.pipe_addr().port();
    let Some(mut proxy) = tinyproxy(dir.path(), proxy_options(PASSWORD, port)).await else {
        return;
    };
    let certs = install_client(&pki, dir.path());

    // No credentials: tinyproxy asks for them (407).
    let (http, _) = free_ports().unwrap();
    let mut command = client_command(
        Command::new(env!("CARGO_BIN_EXE_pipe-client")),
        &certs,
        server.pipe_addr(),
        http,
    );
    command.args(["--proxy", &proxy.url()]);
    let mut client = NodeProcess::spawn(command, &dir.path().join("anonymous.log")).unwrap();
    client
        .wait_healthy(http, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let required = "the proxy requires authentication (407 Proxy Authentication Required)";
    let link = link_until(http, "a 407 error", |link| failing_with(link, required)).await;
    assert!(
        link["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("through HTTP proxy {}", proxy.url())),
        "{link}"
    );
    client.stop(LIMIT).await.unwrap();

    // The wrong password: tinyproxy answers 401 (others 407); the client
    // says its credentials were refused, stands by (its backoff at the
    // cap) and retries.
    let (http, _) = free_ports().unwrap();
    let mut command = client_command(
        Command::new(env!("CARGO_BIN_EXE_pipe-client")),
        &certs,
        server.pipe_addr(),
        http,
    );
    command.args(["--proxy", &proxy.url_with(USER, WRONG_PASSWORD)]);
    let log = dir.path().join("wrong.log");
    let mut client = NodeProcess::spawn(command, &log).unwrap();
    client
        .wait_healthy(http, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let refused = "the proxy refused this node's credentials (401 Unauthorized)";
    let link = link_until(http, "credentials refused", |link| {
        failing_with(link, refused)
    })
    .await;
    assert!(
        link["last_error"].as_str().unwrap().contains("http://***@"),
        "{link}"
    );
    client
        .wait_for_log(LIMIT, "the refusal in the log", |log| {
            log.lines()
                .any(|line| line.contains("standing by") && line.contains(refused))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    // The proxy's administrator gives the account the password the client
    // has: the client gets through on its own.
    proxy
        .restart(proxy_options(WRONG_PASSWORD, port))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    time_ok(http).await;
    wait_for_client(&server, CLIENT).await;
    server_reaches_client(&server).await;
    client.stop(LIMIT).await.unwrap();

    // The user and the passwords were never logged.
    for log in ["anonymous.log", "wrong.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        for secret in [USER, PASSWORD, WRONG_PASSWORD] {
            assert!(!text.contains(secret), "{log} shows {secret}:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_the_servers_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    // CONNECT to 443 only, as many proxies are set up.
    let options = ProxyOptions {
        connect_ports: vec![443],
        ..ProxyOptions::default()
    };
    let Some(proxy) = tinyproxy(dir.path(), options).await else {
        return;
    };
    let client = start_client_to(
        pki.client(CLIENT),
        &[server.pipe_addr()],
        through(&proxy.url(), ""),
    )
    .await;
    let forbidden = format!(
        "the proxy does not allow a tunnel to {} (403 Access violation)",
        server.pipe_addr()
    );
    client
        .link_until(LIMIT, "a 403 error", |link| failing_with(link, &forbidden))
        .await;
    assert!(!server.has_peer(CLIENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_proxy_is_an_error_unless_no_proxy_exempts_the_server() {
    let pki = Pki::new();
    let server = example_server(&pki, fast_settings()).await;
    // Nothing listens where the proxy should be.
    let (gone, _) = free_ports().unwrap();
    let proxy = format!("http://{gone}");

    let client = start_client_to(
        pki.client(CLIENT),
        &[server.pipe_addr()],
        through(&proxy, "example.com"),
    )
    .await;
    let link = client
        .link_until(LIMIT, "the proxy unreachable", |link| {
            failing_with(
                link,
                &format!("through HTTP proxy {proxy}: cannot reach the proxy"),
            )
        })
        .await;
    assert!(
        link["last_error"].as_str().unwrap().contains("refused"),
        "{link}"
    );
    client.stop().await;

    // NO_PROXY names the server: the client goes directly.
    let client = start_client_to(
        pki.client(CLIENT),
        &[server.pipe_addr()],
        through(&proxy, "localhost,127.0.0.0/8"),
    )
    .await;
    client.time_ok_within(LIMIT).await;
    assert_eq!(client.link().await["proxy"], serde_json::Value::Null);
}

/// The proxy on host 0, on both networks; the client on host 1, on the
/// first alone; the server outside, in this process. The client is given
/// its proxy the conventional way, `HTTPS_PROXY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_only_way_out_is_the_proxy_reaches_its_server() {
    let Some(binary) = tinyproxy::installed() else {
        return;
    };
    let hosts = match Hosts::create(2) {
        Ok(hosts) => hosts,
        Err(why) => {
            eprintln!("skipped: network namespaces cannot be made here ({why})");
            return;
        }
    };
    hosts.reach_outside(0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = example_server_at(
        SocketAddr::new(hosts.outside_gateway().into(), 0),
        &pki,
        fast_settings(),
    )
    .await;
    let pipe = server.pipe_addr();
    let options = ProxyOptions {
        listen: Some(SocketAddr::new(hosts.addr(0).into(), 3128)),
        connect_ports: vec![pipe.port()],
        exec_prefix: hosts.exec_prefix(0),
        ..ProxyOptions::default()
    };
    let proxy = Tinyproxy::start(&binary, &dir.path().join("tinyproxy"), options)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let certs = install_client(&pki, dir.path());

    let http = SocketAddr::new(hosts.addr(1).into(), 8080);
    let mut command = client_command(
        hosts.command(1, env!("CARGO_BIN_EXE_pipe-client")),
        &certs,
        pipe,
        http,
    );
    command.env("HTTPS_PROXY", proxy.url());
    let mut client = NodeProcess::spawn(command, &dir.path().join("client.log")).unwrap();
    client
        .wait_healthy(http, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    wait_for_client(&server, CLIENT).await;
    time_ok(http).await;
    server_reaches_client(&server).await;
    let link = link_until(http, "connected", |link| link["connected"] == true).await;
    assert_eq!(link["proxy"], proxy.url(), "{link}");
    // The server sees the connection come from the proxy's outside leg,
    // under the name in the client's certificate.
    let peers = server.status().await["peers"].clone();
    assert_eq!(peers[0]["name"], CLIENT, "{peers}");
    let from = peers[0]["remote_addr"]
        .as_str()
        .unwrap()
        .parse::<SocketAddr>()
        .unwrap();
    assert_eq!(
        from.ip(),
        std::net::IpAddr::from(hosts.outside_addr(0)),
        "{peers}"
    );
    assert!(proxy.connects_to(&pipe.to_string()) >= 1, "{}", proxy.log());

    // The direct route is closed: the same client told by NO_PROXY to go
    // directly cannot reach the server.
    let direct = SocketAddr::new(hosts.addr(1).into(), 8081);
    let mut command = client_command(
        hosts.command(1, env!("CARGO_BIN_EXE_pipe-client")),
        &certs,
        pipe,
        direct,
    );
    command
        .env("HTTPS_PROXY", proxy.url())
        .env("NO_PROXY", pipe.ip().to_string());
    let mut direct_client = NodeProcess::spawn(command, &dir.path().join("direct.log")).unwrap();
    direct_client
        .wait_healthy(direct, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let link = link_until(direct, "the direct route failing", |link| {
        failing_with(link, &format!("TCP connect to {pipe}"))
    })
    .await;
    assert_eq!(link["proxy"], serde_json::Value::Null, "{link}");
    // The first client is still the one connected, through the proxy.
    time_ok(http).await;
    direct_client.stop(LIMIT).await.unwrap();
    client.stop(LIMIT).await.unwrap();
}
