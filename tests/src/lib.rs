//! restpipe's test kit: the one place that makes identities, starts nodes,
//! waits for them and talks to them, shared by the end-to-end tests in
//! `tests/`, the binaries' own tests and the benchmark. Everything is real:
//! certificates from a throwaway CA, mutual TLS, HTTP on loopback ports the
//! system picks, processes killed with real signals. Nothing sleeps to wait
//! for something to start; every wait is bounded.
//!
//! | module | what |
//! |---|---|
//! | [`pki`] | a throwaway CA: identities in memory and as files |
//! | [`nodes`] | server and client nodes in this process |
//! | [`process`] | binaries run to completion, and nodes in child processes |
//! | [`installed`] | a real `pipe-server` process in its own cert dir, restarted in place |
//! | [`http`] | requests to a node's local front, and their [`Response`] |
//! | [`wait`] | bounded polling: [`eventually`] |
//! | [`tokens`] | local API token files, written and changed as an operator does |
//! | [`bulk`] | a 256 MiB body in pieces, its hash, handlers that take and make it, peak memory |
//! | [`docs`] | a binary's shell completions and man pages, checked by bash and groff |
//! | [`files`] | what a command left on disk: listings, modes |
//! | [`proxy`] | a loopback TCP proxy that can freeze or cut a link |
//! | [`nats`] | a real NATS server (or NATS cluster) with mutual TLS, for clusters of server nodes |
//! | [`netns`] | hosts of their own on one machine: network namespaces on a bridge |
//! | [`tinyproxy`] | a real HTTP proxy (tinyproxy) with its own configuration, for clients behind one |
//! | [`statsd`] | a statsd server on a loopback UDP socket that keeps every line |
//! | [`prometheus`] | a node's metrics scraped and parsed by the Prometheus project's own parser |
//! | [`browser`] | a real headless Chromium driven over WebDriver (chromedriver), for the status page |
//! | [`schemathesis`] | schemathesis run against a live node's own OpenAPI description |
//!
//! A test reads like the README:
//!
//! ```no_run
//! use restpipe_tests::{Pki, Registry, Side, connect_client, fast_settings, get, start_server};
//!
//! # async fn example() {
//! let pki = Pki::new();
//! let server = start_server(&pki, Registry::with_examples(Side::Server), fast_settings()).await;
//! let client = connect_client(&pki, &server, "client-1", Registry::new()).await;
//! let time = get(&client.url("/server/time")).await;
//! assert_eq!(time.status, 200);
//! # }
//! ```
//!
//! Helpers that tests call panic on failure (the failure of the test, with
//! a message saying what did not happen); the building blocks the
//! benchmark uses (`try_*`, [`NodeProcess`], [`Pki::write_identity`])
//! return errors instead, as `anyhow` errors: they are read by people,
//! never matched.
//!
//! The pipe-core items the kit, the tests and the benchmark use are
//! re-exported here, and the kit's own modules take them from here too: when
//! pipe-core moves them, these lines follow, and nothing else.

pub mod browser;
pub mod bulk;
pub mod docs;
pub mod files;
pub mod http;
pub mod installed;
pub mod nats;
pub mod netns;
pub mod nodes;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod schemathesis;
pub mod statsd;
pub mod tinyproxy;
pub mod tokens;
pub mod wait;

pub use browser::Browser;
pub use http::{
    ANSWER_LIMIT, HttpClient, Response, get, get_within, http_client, send, send_with, try_get,
};
pub use installed::InstalledServer;
pub use nats::Nats;
pub use nodes::{
    LOOPBACK, NodeOptions, Pipe, TestNode, connect_client, connect_client_with, example_server,
    example_server_at, fast_backoff, fast_settings, heartbeat_settings, launch_client,
    launch_client_to, launch_server, loopback_front, server_start_error, server_target,
    servers_target, spawn_frontless_client, spawn_frontless_client_to, start_client,
    start_client_to, start_server, start_server_with, try_start_client, try_start_client_to,
    try_start_server, wait_for_client, wait_for_server,
};
pub use pki::{Pki, SERVER_NAME, named_files, server_request};
pub use process::NodeProcess;
pub use prometheus::{Scrape, scrape};
pub use proxy::Proxy;
pub use statsd::Statsd;
pub use tinyproxy::{ProxyOptions, Tinyproxy};
pub use tokens::{TokenFile, bearer, get_with_token};
pub use wait::eventually;

pub use pipe_core::body::{self, INLINE_LIMIT};
pub use pipe_core::cluster;
pub use pipe_core::identity::{self, CertFiles};
pub use pipe_core::launch::{self, LaunchError, RunningNode};
pub use pipe_core::metrics::{self, Metrics, StatsdSettings};
pub use pipe_core::pki::{CertificateAuthority, IssueRequest, IssuedIdentity, Role, record_issued};
pub use pipe_core::{
    ApiTokens, BackoffSettings, CertificateId, ConnectionSettings, DEFAULT_PING_INTERVAL,
    FRAME_OVERHEAD_BYTES, HandlerError, Handlers, HttpAddr, HttpListener,
    MAX_HANDSHAKES_PER_SOURCE, NewToken, Node, NodeSettings, Proxies, ProxyUrl, Registry,
    Reloadable, Reply, Request, RevocationList, SERVER_KEY, ServerAddress, ServerTarget, Side,
    SocketOptions, TlsIdentity, WAITING_PER_SLOT, peer_identity,
};

/// The wire protocol, for tests that play a peer speaking it raw.
pub mod wire {
    pub use pipe_core::proto::*;
    pub use pipe_core::{ALPN, FrameCodec, PROTOCOL_VERSION};
}

/// Logs of nodes in this process go to the test's captured output (shown
/// when a test fails); `RUST_LOG` sets the level, `info` by default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
