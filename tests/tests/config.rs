//! Configuration as an operator meets it: flags, environment (including the
//! original project's names), TOML files from `tests/fixtures/config`, their
//! precedence, and the errors a user sees.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pipe_core::config::{
    ClientArgs, ClientConfig, ConfigError, LogFormat, Profile, ServerArgs, ServerConfig,
};
use restpipe_tests::{CertFiles, HttpAddr};

#[derive(Parser)]
struct ServerCli {
    #[command(flatten)]
    args: ServerArgs,
}

#[derive(Parser)]
struct ClientCli {
    #[command(flatten)]
    args: ClientArgs,
}

fn fixture(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fixtures", "config", name]
        .iter()
        .collect();
    path.display().to_string()
}

/// A command line's flags.
type Flags<'a> = &'a [&'a str];
/// Environment variables: (name, value).
type Environment<'a> = &'a [(&'a str, &'a str)];

/// `flags` as `program`'s command line.
fn parse<Cli: Parser>(program: &str, flags: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once(program).chain(flags.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `env` as the whole environment.
fn environment(env: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| env.get(name).cloned()
}

fn server(flags: &[&str], env: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
    let cli: ServerCli = parse("pipe-server", flags);
    ServerConfig::resolve(&cli.args, &environment(env))
}

fn client(flags: &[&str], env: &[(&str, &str)]) -> Result<ClientConfig, ConfigError> {
    let cli: ClientCli = parse("pipe-client", flags);
    ClientConfig::resolve(&cli.args, &environment(env))
}

/// Identity files at these paths.
fn cert_files(key: &str, cert: &str, ca: &str) -> CertFiles {
    CertFiles {
        key: key.into(),
        cert: cert.into(),
        ca: ca.into(),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn defaults_are_the_originals() {
    let config = server(&[], &[]).unwrap();
    assert_eq!(config.listen, addr("0.0.0.0:1234"));
    assert_eq!(config.common.http, HttpAddr::Tcp(addr("127.0.0.1:8080")));
    assert_eq!(
        config.common.cert_files,
        cert_files(
            "/var/lib/restpipe/restpipe.server.key.pem",
            "/var/lib/restpipe/restpipe.server.crt.pem",
            "/var/lib/restpipe/ca.crt.pem"
        )
    );
    let statsd = config.common.node.statsd.unwrap();
    assert_eq!(
        (statsd.host.as_str(), statsd.port, statsd.prefix.as_str()),
        ("localhost", 8125, "")
    );
    assert_eq!(config.common.node.request_timeout, Duration::from_secs(30));
    assert_eq!(config.common.node.peer_wait, Duration::from_secs(5));
    assert_eq!(
        config.common.node.connection.ping_interval,
        Duration::from_secs(5)
    );
    assert_eq!(
        config.common.node.connection.dead_after,
        Duration::from_secs(15)
    );
    assert!(!config.common.logging.debug);
    assert_eq!(config.common.logging.format, LogFormat::Human);

    let config = client(&[], &[]).unwrap();
    assert_eq!(
        (config.target.host.as_str(), config.target.port),
        ("localhost", 1234)
    );
    assert_eq!(config.common.http, HttpAddr::Tcp(addr("127.0.0.1:8081")));
    assert_eq!(
        config.common.cert_files.key,
        PathBuf::from("/var/lib/restpipe/restpipe.client.key.pem")
    );
    assert_eq!(config.backoff.min_delay, Duration::from_millis(500));
    assert_eq!(config.backoff.max_delay, Duration::from_secs(30));
}

#[test]
fn a_file_sets_every_option() {
    let config = server(&["--config", &fixture("server.toml")], &[]).unwrap();
    assert_eq!(config.listen, addr("127.0.0.1:4321"));
    assert_eq!(
        config.common.http,
        HttpAddr::Unix("/tmp/restpipe-fixture.sock".into())
    );
    assert_eq!(
        config.common.cert_files.ca,
        PathBuf::from("/etc/restpipe/ca.crt.pem")
    );
    let node = &config.common.node;
    assert_eq!(node.request_timeout, Duration::from_millis(12_500));
    assert_eq!(node.peer_wait, Duration::from_secs(2));
    assert_eq!(node.connection.ping_interval, Duration::from_secs(3));
    assert_eq!(node.connection.dead_after, Duration::from_secs(9));
    assert_eq!(node.connection.max_frame_bytes, 1_048_576);
    assert_eq!(
        node.max_body_bytes,
        1 << 30,
        "bodies stream: the limit no longer follows the frame size"
    );
    assert_eq!(node.connection.max_concurrent_handlers, 64);
    assert_eq!(node.drain_grace, Duration::from_secs(4));
    assert_eq!(node.max_connections, 500);
    assert_eq!(node.on_event.as_deref(), Some("logger restpipe-event"));
    let statsd = node.statsd.clone().unwrap();
    assert_eq!(
        (statsd.host.as_str(), statsd.port, statsd.prefix.as_str()),
        ("stats.internal", 9125, "rp.server")
    );
    assert_eq!(config.common.socket.mode, 0o640);
    assert_eq!(config.common.socket.group.as_deref(), Some("www-data"));
    assert_eq!(
        config.common.socket.trusted_proxies,
        vec![
            "10.1.2.3".parse::<IpAddr>().unwrap(),
            "127.0.0.1".parse().unwrap()
        ]
    );

    let config = client(&["--config", &fixture("client.toml")], &[]).unwrap();
    assert_eq!(
        (config.target.host.as_str(), config.target.port),
        ("rpserver.example.com", 4321)
    );
    assert_eq!(
        config.target.server_name.as_deref(),
        Some("rpserver.example.com")
    );
    assert_eq!(config.backoff.min_delay, Duration::from_millis(250));
    assert_eq!(config.backoff.max_delay, Duration::from_secs(10));
    assert_eq!(config.backoff.stable_after, Duration::from_secs(60));
    // The prod profile from the file picks its socket and JSON logs.
    assert_eq!(config.common.profile, Some(Profile::Prod));
    assert_eq!(
        config.common.http,
        HttpAddr::Unix("/tmp/rpclient.sock".into())
    );
    assert_eq!(config.common.logging.format, LogFormat::Json);
    assert_eq!(config.common.socket.mode, 0o660);
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let file = fixture("server.toml");
    let all = server(
        &["--config", &file, "--request-timeout", "1"],
        &[("RP_REQUEST_TIMEOUT", "2")],
    )
    .unwrap();
    assert_eq!(all.common.node.request_timeout, Duration::from_secs(1));
    let env_and_file = server(&["--config", &file], &[("RP_REQUEST_TIMEOUT", "2")]).unwrap();
    assert_eq!(
        env_and_file.common.node.request_timeout,
        Duration::from_secs(2)
    );
    let file_only = server(&["--config", &file], &[]).unwrap();
    assert_eq!(
        file_only.common.node.request_timeout,
        Duration::from_millis(12_500)
    );
    let none = server(&[], &[]).unwrap();
    assert_eq!(none.common.node.request_timeout, Duration::from_secs(30));

    // The same for the listen address, which the original split in two.
    let flag = server(
        &["--config", &file, "--listen", "127.0.0.2:7"],
        &[("RP_SERVER_BIND_PORT", "9")],
    )
    .unwrap();
    assert_eq!(flag.listen, addr("127.0.0.2:7"));
    let env = server(&["--config", &file], &[("RP_SERVER_BIND_PORT", "9")]).unwrap();
    assert_eq!(
        env.listen,
        addr("127.0.0.1:9"),
        "port from the environment, interface from the file"
    );

    // An empty environment variable counts as unset.
    let empty = server(&["--config", &file], &[("RP_REQUEST_TIMEOUT", "")]).unwrap();
    assert_eq!(
        empty.common.node.request_timeout,
        Duration::from_millis(12_500)
    );
}

#[test]
fn every_original_environment_name_works() {
    let config = server(
        &[],
        &[
            ("RP_SERVER_BIND_INTERFACE", "127.0.0.3"),
            ("RP_SERVER_BIND_PORT", "5555"),
            ("RP_SERVER_CERT_PATH", "/srv/certs"),
            ("RP_SERVER_KEY_FILENAME", "s.key"),
            ("RP_SERVER_CRT_FILENAME", "s.crt"),
            ("RP_CA_CRT_FILENAME", "my-ca.pem"),
            ("RP_STATSD_HOST", "stats"),
            ("RP_STATSD_PORT", "8126"),
            ("DEBUG", "1"),
        ],
    )
    .unwrap();
    assert_eq!(config.listen, addr("127.0.0.3:5555"));
    assert_eq!(
        config.common.cert_files,
        cert_files(
            "/srv/certs/s.key",
            "/srv/certs/s.crt",
            "/srv/certs/my-ca.pem"
        )
    );
    let statsd = config.common.node.statsd.unwrap();
    assert_eq!((statsd.host.as_str(), statsd.port), ("stats", 8126));
    assert!(config.common.logging.debug);

    // BIND_IP / BIND_PORT, the gunicorn-era names, when the RP_ ones are unset.
    let config = server(&[], &[("BIND_IP", "127.0.0.4"), ("BIND_PORT", "6666")]).unwrap();
    assert_eq!(config.listen, addr("127.0.0.4:6666"));
    // ...and the RP_ names win over them.
    let config = server(
        &[],
        &[("BIND_PORT", "6666"), ("RP_SERVER_BIND_PORT", "7777")],
    )
    .unwrap();
    assert_eq!(config.listen.port(), 7777);

    let config = client(
        &[],
        &[
            ("RP_CLIENT_TARGET_HOSTNAME", "rpserver.example.com"),
            ("RP_CLIENT_TARGET_PORT", "4444"),
            ("RP_CLIENT_CERT_PATH", "/srv/client"),
            ("RP_CLIENT_KEY_FILENAME", "c.key"),
            ("RP_CLIENT_CRT_FILENAME", "c.crt"),
        ],
    )
    .unwrap();
    assert_eq!(
        (config.target.host.as_str(), config.target.port),
        ("rpserver.example.com", 4444)
    );
    assert_eq!(
        config.common.cert_files,
        cert_files(
            "/srv/client/c.key",
            "/srv/client/c.crt",
            "/srv/client/ca.crt.pem"
        )
    );
}

#[test]
fn statsd_is_disabled_by_an_empty_host_or_port_at_any_layer() {
    let file = fixture("statsd-off.toml");
    let cases: [(Flags, Environment); 4] = [
        (&[], &[("RP_STATSD_HOST", "")]),
        (&[], &[("RP_STATSD_PORT", "")]),
        (&["--statsd-host", ""], &[]),
        (&["--config", &file], &[]),
    ];
    for (flags, env) in cases {
        assert!(server(flags, env).unwrap().common.node.statsd.is_none());
    }
    // A flag turns it back on over an empty variable.
    let on = server(&["--statsd-host", "stats"], &[("RP_STATSD_HOST", "")]).unwrap();
    assert_eq!(on.common.node.statsd.unwrap().host, "stats");
}

#[test]
fn profiles_set_socket_logs_and_permissions() {
    let dev = server(&["--profile", "dev"], &[]).unwrap();
    assert_eq!(dev.common.http, HttpAddr::Unix("/tmp/rpserver.sock".into()));
    assert!(dev.common.logging.debug);
    assert_eq!(dev.common.logging.format, LogFormat::Human);
    assert_eq!(dev.common.socket.mode, 0o666);
    let prod = client(&[], &[("RP_PROFILE", "prod")]).unwrap();
    assert_eq!(
        prod.common.http,
        HttpAddr::Unix("/tmp/rpclient.sock".into())
    );
    assert!(!prod.common.logging.debug);
    assert_eq!(prod.common.logging.format, LogFormat::Json);
    assert_eq!(prod.common.socket.mode, 0o660);
    // An explicit --http still wins over the profile's socket.
    let both = server(&["--profile", "prod", "--http", "127.0.0.1:9"], &[]).unwrap();
    assert_eq!(both.common.http, HttpAddr::Tcp(addr("127.0.0.1:9")));
}

#[test]
fn an_unknown_key_names_the_key_and_the_file() {
    let file = fixture("unknown-key.toml");
    let error = server(&["--config", &file], &[]).unwrap_err().to_string();
    assert!(error.contains("unknown key `request_timeuot`"), "{error}");
    assert!(error.contains("unknown-key.toml"), "{error}");
    assert!(
        error.contains("request_timeout"),
        "the known keys are listed: {error}"
    );

    // A client-only key is unknown to a server node.
    let file = fixture("client-key-in-server.toml");
    let error = server(&["--config", &file], &[]).unwrap_err().to_string();
    assert!(error.contains("unknown key `server`"), "{error}");
    assert!(client(&["--config", &file], &[]).is_ok());
}

/// Which node's configuration a case resolves.
#[derive(Debug, Clone, Copy)]
enum Node {
    Server,
    Client,
}

impl Node {
    /// The error resolving `flags` and `env` gives; panics if it succeeds.
    fn error(self, flags: &[&str], env: &[(&str, &str)]) -> String {
        match self {
            Self::Server => server(flags, env).map(|_| ()),
            Self::Client => client(flags, env).map(|_| ()),
        }
        .expect_err("the configuration is refused")
        .to_string()
    }
}

#[test]
fn bad_values_say_where_they_came_from() {
    let bad_value = fixture("bad-value.toml");
    let syntax = fixture("syntax.toml");
    // (node, flags, environment, how the message starts, what it says)
    let cases: [(Node, Flags, Environment, &str, &[&str]); 9] = [
        (
            Node::Server,
            &["--config", &bad_value],
            &[],
            "",
            &[
                "bad-value.toml: request_timeout = \"soon\"",
                "not a positive number of seconds",
            ],
        ),
        (
            Node::Server,
            &[],
            &[("RP_SERVER_BIND_PORT", "http")],
            "RP_SERVER_BIND_PORT=\"http\"",
            &[],
        ),
        (
            Node::Client,
            &[],
            &[("RP_CLIENT_TARGET_PORT", "99999")],
            "RP_CLIENT_TARGET_PORT=\"99999\"",
            &[],
        ),
        (
            Node::Server,
            &[],
            &[("DEBUG", "perhaps")],
            "",
            &["DEBUG=\"perhaps\""],
        ),
        (
            Node::Server,
            &[],
            &[("RP_PING_INTERVAL", "20")],
            "",
            &["must be longer than ping_interval"],
        ),
        (
            Node::Server,
            &["--max-frame-bytes", "1000"],
            &[],
            "",
            &["max_frame_bytes: 1000 is outside 327680"],
        ),
        (
            Node::Client,
            &["--server", "no-port"],
            &[],
            "",
            &["HOST:PORT"],
        ),
        (
            Node::Server,
            &["--config", &syntax],
            &[],
            "",
            &["syntax.toml is not valid TOML", "line 1"],
        ),
        (
            Node::Server,
            &["--config", "/nonexistent/restpipe.toml"],
            &[],
            "",
            &["cannot read config file /nonexistent/restpipe.toml"],
        ),
    ];
    for (node, flags, env, prefix, needles) in cases {
        let error = node.error(flags, env);
        assert!(error.starts_with(prefix), "{error}");
        for needle in needles {
            assert!(error.contains(needle), "{error}");
        }
    }
}
