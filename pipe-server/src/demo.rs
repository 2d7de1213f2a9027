//! `pipe-server demo`: the quick start. A throwaway CA and identities, a
//! server node and a client node on loopback connected over real mutual TLS,
//! the example requests sent both ways and printed, one asynchronous job
//! (submitted, then fetched) on a throwaway state directory, then serving
//! until Ctrl-C.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pipe_core::BackoffSettings;
use pipe_core::ServerTarget;
use pipe_core::TlsIdentity;
use pipe_core::pki::{CertificateAuthority, IssueRequest, Role};
use pipe_core::{HttpAddr, HttpListener};
use pipe_core::{NodeSettings, Registry, Side, launch};
use tokio_util::sync::CancellationToken;

/// The demo client node's identity.
const CLIENT_NAME: &str = "demo-client";
/// How long the demo waits for its client node to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Flags of `pipe-server demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Local HTTP front of the demo server node (default: a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    server_http: HttpAddr,
    /// Local HTTP front of the demo client node (default: a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    client_http: HttpAddr,
    /// Run the example requests, print them, and exit (non-zero if any
    /// failed) instead of serving until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// Debug logging.
    #[arg(long, env = "DEBUG", value_parser = clap::builder::FalseyValueParser::new(), default_value = "false")]
    debug: bool,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    pipe_core::logging::init(pipe_core::config::Logging {
        debug: args.debug,
        format: pipe_core::config::LogFormat::Human,
    });
    let ca = CertificateAuthority::generate("restpipe demo CA")?;
    let server_identity = identity(
        &ca,
        IssueRequest {
            ips: vec!["127.0.0.1".parse()?],
            ..IssueRequest::new("localhost", Role::Server)
        },
    )?;
    let client_identity = identity(&ca, IssueRequest::new(CLIENT_NAME, Role::Client))?;

    // Jobs need a state directory: a throwaway one, removed at exit.
    let state = tempfile::Builder::new()
        .prefix("restpipe-demo-state-")
        .tempdir()
        .context("a state directory for the demo's jobs")?;
    let shutdown = if args.once {
        CancellationToken::new()
    } else {
        launch::shutdown_on_signals()
    };
    let pipe = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let pipe_addr = pipe.local_addr()?;
    let server = launch::start_server(
        pipe,
        HttpListener::bind(&args.server_http)
            .await
            .context("server HTTP front")?,
        &server_identity,
        Registry::with_examples(Side::Server),
        NodeSettings {
            state_dir: Some(state.path().to_owned()),
            ..NodeSettings::default()
        },
        shutdown.clone(),
    )
    .await?;
    let client = launch::start_client(
        ServerTarget {
            server_name: Some("localhost".to_owned()),
            ..ServerTarget::single("127.0.0.1", pipe_addr.port())
        },
        HttpListener::bind(&args.client_http)
            .await
            .context("client HTTP front")?,
        &client_identity,
        Registry::with_examples(Side::Client),
        NodeSettings::default(),
        BackoffSettings::default(),
        shutdown.clone(),
    )?;

    let connected = async {
        while server.node().peers().get(CLIENT_NAME).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(CONNECT_WAIT, connected)
        .await
        .context("the demo client node did not connect")?;

    let (HttpAddr::Tcp(server_http), HttpAddr::Tcp(client_http)) =
        (server.http_addr(), client.http_addr())
    else {
        bail!("the demo prints curl lines for TCP fronts only");
    };
    println!();
    println!(
        "restpipe demo: server node pipe on {pipe_addr}, client node {CLIENT_NAME:?} connected over mutual TLS 1.3."
    );
    println!();
    let examples = [
        (
            "client node → server",
            format!("http://{client_http}/server/time"),
        ),
        (
            "client node → server",
            format!("http://{client_http}/server/cat//hello%20/world"),
        ),
        (
            "server node → client",
            format!("http://{server_http}/client/{CLIENT_NAME}/time"),
        ),
        (
            "server node → client",
            format!("http://{server_http}/client/{CLIENT_NAME}/cat//hello%20/world"),
        ),
    ];
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut failures = 0;
    for (direction, url) in &examples {
        println!("# {direction}");
        println!("curl -i '{url}'");
        match fetch(&http, url).await {
            Ok((status, code, body)) => {
                println!("  -> {status}, X-Event-Return-Code: {code}, {body}");
                if status != 200 {
                    failures += 1;
                }
            }
            Err(error) => {
                println!("  -> failed: {error:#}");
                failures += 1;
            }
        }
    }
    println!();
    if let Err(error) = show_job(&http, &server_http.to_string()).await {
        println!("  -> failed: {error:#}");
        failures += 1;
    }
    println!();
    println!("# status of each node");
    println!("curl 'http://{server_http}/_pipe/status'");
    println!("curl 'http://{client_http}/_pipe/status'");
    println!();

    if args.once {
        shutdown.cancel();
        server.stop().await;
        client.stop().await;
        if failures > 0 {
            bail!("{failures} example request(s) failed");
        }
        return Ok(());
    }
    println!("Serving until Ctrl-C.");
    server.wait().await;
    client.wait().await;
    Ok(())
}

/// Submits one asynchronous job to the demo client and fetches its result,
/// printing the `curl` lines that do the same.
async fn show_job(
    http: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    server_http: &str,
) -> anyhow::Result<()> {
    let url = format!("http://{server_http}/client/{CLIENT_NAME}/time");
    println!("# an asynchronous job: accepted on disk at once (202), its result fetched later");
    println!("curl -i -H 'Prefer: respond-async' '{url}'");
    let request = hyper::Request::get(url.as_str())
        .header("prefer", "respond-async")
        .body(Empty::new())?;
    let response = http.request(request).await?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if status != 202 || location.is_empty() {
        bail!("the job was not accepted: {status}");
    }
    println!("  -> {status}, Location: {location}");
    let poll = format!("http://{server_http}{location}?wait=10");
    println!("curl -i '{poll}'");
    let (status, code, body) = fetch(http, &poll).await?;
    println!("  -> {status}, X-Event-Return-Code: {code}, {body}");
    if status != 200 {
        bail!("the job did not succeed: {status}");
    }
    Ok(())
}

fn identity(ca: &CertificateAuthority, request: IssueRequest) -> anyhow::Result<TlsIdentity> {
    let issued = ca.issue(&request)?;
    Ok(TlsIdentity::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )?)
}

async fn fetch(
    http: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
) -> anyhow::Result<(u16, String, String)> {
    let response = http.get(url.parse()?).await?;
    let status = response.status().as_u16();
    let code = response
        .headers()
        .get("x-event-return-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, code, String::from_utf8_lossy(&body).into_owned()))
}
