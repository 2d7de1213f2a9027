//! Configuration as an operator meets it: flags, environment (including the
//! original project's names), TOML files from `tests/fixtures/config`, their
//! precedence, and the errors a user sees.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use pipe_core::config::{
    ClientArgs, ClientConfig, ConfigError, LogFormat, Profile, ServerArgs, ServerConfig,
};
use pipe_core::{HttpAddr, HttpListener};

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

/// Flags as typed after the command name.
type Flags<'a> = &'a [&'a str];
/// Environment variables, name and value.
type Vars<'a> = &'a [(&'a str, &'a str)];

fn fixture(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fixtures", "config", name]
        .iter()
        .collect();
    path.display().to_string()
}

fn server(flags: &[&str], env: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
    let cli =
        ServerCli::try_parse_from(std::iter::once("pipe-server").chain(flags.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ServerConfig::resolve(&cli.args, &|name| env.get(name).cloned())
}

fn client(flags: &[&str], env: &[(&str, &str)]) -> Result<ClientConfig, ConfigError> {
    let cli =
        ClientCli::try_parse_from(std::iter::once("pipe-client").chain(flags.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ClientConfig::resolve(&cli.args, &|name| env.get(name).cloned())
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
        config.common.cert_files.key,
        PathBuf::from("/var/lib/restpipe/restpipe.server.key.pem")
    );
    assert_eq!(
        config.common.cert_files.cert,
        PathBuf::from("/var/lib/restpipe/restpipe.server.crt.pem")
    );
    assert_eq!(
        config.common.cert_files.ca,
        PathBuf::from("/var/lib/restpipe/ca.crt.pem")
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
    assert_eq!(
        config.common.cert_files.crl,
        Some(PathBuf::from("/etc/restpipe/ca.crl.pem"))
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
    assert_eq!(
        config
            .target
            .proxy
            .for_server("rpserver.example.com", 4321)
            .map(ToString::to_string)
            .as_deref(),
        Some("http://proxy.example.com:3128")
    );
    assert_eq!(config.backoff.min_delay, Duration::from_millis(250));
    assert_eq!(config.backoff.max_delay, Duration::from_secs(10));
    assert_eq!(config.backoff.stable_after, Duration::from_secs(60));
    // The prod profile from the file picks its socket and JSON logs.
    assert_eq!(config.common.profile, Some(Profile::Prod));
    assert_eq!(
        config.common.http,
        HttpAddr::Unix("/run/restpipe/rpclient.sock".into())
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

    // The same for a path: the revocation list (no default: none).
    let crl = |config: ServerConfig| config.common.cert_files.crl;
    let env = [("RP_CRL", "/env/ca.crl.pem")];
    let flag = server(&["--config", &file, "--crl", "/flag/ca.crl.pem"], &env).unwrap();
    assert_eq!(crl(flag), Some(PathBuf::from("/flag/ca.crl.pem")));
    let from_env = server(&["--config", &file], &env).unwrap();
    assert_eq!(crl(from_env), Some(PathBuf::from("/env/ca.crl.pem")));
    let from_file = server(&["--config", &file], &[]).unwrap();
    assert_eq!(
        crl(from_file),
        Some(PathBuf::from("/etc/restpipe/ca.crl.pem"))
    );
    assert_eq!(crl(server(&[], &[]).unwrap()), None);
    let client_env = client(&[], &env).unwrap().common.cert_files.crl;
    assert_eq!(client_env, Some(PathBuf::from("/env/ca.crl.pem")));

    // And for the API token file.
    let tokens = |config: ServerConfig| config.common.node.api_tokens;
    let env = [("RP_API_TOKENS", "/env/tokens.toml")];
    let flag = server(
        &["--config", &file, "--api-tokens", "/flag/tokens.toml"],
        &env,
    )
    .unwrap();
    assert_eq!(tokens(flag), Some(PathBuf::from("/flag/tokens.toml")));
    let from_env = server(&["--config", &file], &env).unwrap();
    assert_eq!(tokens(from_env), Some(PathBuf::from("/env/tokens.toml")));
    let from_file = server(&["--config", &file], &[]).unwrap();
    assert_eq!(
        tokens(from_file),
        Some(PathBuf::from("/etc/restpipe/api-tokens.toml"))
    );
    assert_eq!(tokens(server(&[], &[]).unwrap()), None);
    let client_env = client(&[], &env).unwrap().common.node.api_tokens;
    assert_eq!(client_env, Some(PathBuf::from("/env/tokens.toml")));

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
fn the_metrics_listener_is_off_unless_a_layer_names_one() {
    let file = fixture("server.toml");
    let metrics = |config: ServerConfig| config.common.metrics_listen;
    let env = [(
        "RP_SERVER_METRICS_LISTEN",
        "unix:/run/restpipe/metrics.sock",
    )];
    let flag = server(
        &["--config", &file, "--metrics-listen", "127.0.0.1:9"],
        &env,
    )
    .unwrap();
    assert_eq!(metrics(flag), Some(HttpAddr::Tcp(addr("127.0.0.1:9"))));
    let from_env = server(&["--config", &file], &env).unwrap();
    assert_eq!(
        metrics(from_env),
        Some(HttpAddr::Unix("/run/restpipe/metrics.sock".into()))
    );
    let from_file = server(&["--config", &file], &[]).unwrap();
    assert_eq!(
        metrics(from_file),
        Some(HttpAddr::Tcp(addr("127.0.0.1:9465")))
    );
    assert_eq!(metrics(server(&[], &[]).unwrap()), None);
    // Each node has its own variable, as for the front.
    let client_env = [("RP_CLIENT_METRICS_LISTEN", "127.0.0.1:9466")];
    assert_eq!(
        client(&[], &client_env).unwrap().common.metrics_listen,
        Some(HttpAddr::Tcp(addr("127.0.0.1:9466")))
    );
    assert_eq!(client(&[], &env).unwrap().common.metrics_listen, None);

    // The front's own address serves the metrics already.
    let error = Node::Server.error(
        &[
            "--http",
            "127.0.0.1:8080",
            "--metrics-listen",
            "127.0.0.1:8080",
        ],
        &[],
    );
    assert!(
        error.contains("--metrics-listen") && error.contains("serves /_pipe/metrics already"),
        "{error}"
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
        config.common.cert_files.key,
        PathBuf::from("/srv/certs/s.key")
    );
    assert_eq!(
        config.common.cert_files.cert,
        PathBuf::from("/srv/certs/s.crt")
    );
    assert_eq!(
        config.common.cert_files.ca,
        PathBuf::from("/srv/certs/my-ca.pem")
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
        config.common.cert_files.key,
        PathBuf::from("/srv/client/c.key")
    );
    assert_eq!(
        config.common.cert_files.cert,
        PathBuf::from("/srv/client/c.crt")
    );
    assert_eq!(
        config.common.cert_files.ca,
        PathBuf::from("/srv/client/ca.crt.pem")
    );
}

#[test]
fn statsd_is_disabled_by_an_empty_host_or_port_at_any_layer() {
    let file = fixture("statsd-off.toml");
    // (flags, environment) that each turn statsd off.
    let off: [(Flags, Vars); 4] = [
        (&[], &[("RP_STATSD_HOST", "")]),
        (&[], &[("RP_STATSD_PORT", "")]),
        (&["--statsd-host", ""], &[]),
        (&["--config", &file], &[]),
    ];
    for (flags, env) in off {
        assert!(
            server(flags, env).unwrap().common.node.statsd.is_none(),
            "{flags:?} {env:?}"
        );
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
    assert!(
        dev.common.socket.shared_directory,
        "dev keeps the original's /tmp sockets"
    );
    let prod = client(&[], &[("RP_PROFILE", "prod")]).unwrap();
    assert_eq!(
        prod.common.http,
        HttpAddr::Unix("/run/restpipe/rpclient.sock".into()),
        "prod's socket is in the units' runtime directory, not shared /tmp"
    );
    assert!(!prod.common.socket.shared_directory);
    let prod = server(&["--profile", "prod"], &[]).unwrap();
    assert_eq!(
        prod.common.http,
        HttpAddr::Unix("/run/restpipe/rpserver.sock".into())
    );
    assert!(!prod.common.socket.shared_directory);
    assert!(!prod.common.logging.debug);
    assert_eq!(prod.common.logging.format, LogFormat::Json);
    assert_eq!(
        prod.common.node.state_dir.as_deref(),
        Some(std::path::Path::new("/var/lib/restpipe/state/server")),
        "prod keeps jobs where the unit lets it write"
    );
    assert_eq!(prod.common.socket.mode, 0o660);
    // An explicit --http still wins over the profile's socket.
    let both = server(&["--profile", "prod", "--http", "127.0.0.1:9"], &[]).unwrap();
    assert_eq!(both.common.http, HttpAddr::Tcp(addr("127.0.0.1:9")));
    // Without a profile a unix socket must be in a private directory too.
    let plain = server(&["--http", "unix:/tmp/x.sock"], &[]).unwrap();
    assert!(!plain.common.socket.shared_directory);
}

#[tokio::test]
async fn the_prod_profile_refuses_a_socket_directory_others_can_write() {
    // /tmp is writable by everyone (sticky or not): the prod profile, pointed
    // there, refuses to start, saying why and where to put the socket.
    let prod = server(
        &[
            "--profile",
            "prod",
            "--http",
            "unix:/tmp/restpipe-config-test.sock",
        ],
        &[],
    )
    .unwrap();
    let error = HttpListener::bind_with(&prod.common.http, &prod.common.socket)
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("writable by others"), "{message}");
    assert!(message.contains("/run/restpipe"), "{message}");
    assert!(!Path::new("/tmp/restpipe-config-test.sock").exists());
    // The dev profile's own /tmp socket is allowed.
    let dir = tempfile::tempdir().unwrap();
    let dev = server(&["--profile", "dev"], &[]).unwrap();
    assert!(dev.common.socket.shared_directory);
    let shared = HttpAddr::Unix(dir.path().join("dev.sock"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(
        HttpListener::bind_with(&shared, &dev.common.socket)
            .await
            .is_ok()
    );
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

/// Which node a table-driven case resolves.
#[derive(Debug, Clone, Copy)]
enum Node {
    Server,
    Client,
}

impl Node {
    /// The error of resolving this node, which must fail.
    fn error(self, flags: &[&str], env: &[(&str, &str)]) -> String {
        let result = match self {
            Node::Server => server(flags, env).map(drop),
            Node::Client => client(flags, env).map(drop),
        };
        match result {
            Ok(()) => panic!("{self:?} {flags:?} {env:?} resolved"),
            Err(error) => error.to_string(),
        }
    }
}

#[test]
fn bad_values_say_where_they_came_from() {
    let bad_value = fixture("bad-value.toml");
    let syntax = fixture("syntax.toml");
    // (node, flags, environment, what the error starts with, what it says)
    let cases: [(Node, Flags, Vars, &str, &[&str]); 9] = [
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
    for (node, flags, env, starts_with, says) in cases {
        let error = node.error(flags, env);
        assert!(error.starts_with(starts_with), "{error}");
        for words in says {
            assert!(error.contains(words), "{error}");
        }
    }
}

#[test]
fn a_value_hidden_by_a_higher_layer_is_never_read() {
    // A bad variable under a flag, a bad file value under a variable.
    let config = server(
        &["--listen", "127.0.0.2:7", "--request-timeout", "1"],
        &[
            ("RP_SERVER_BIND_PORT", "http"),
            ("RP_REQUEST_TIMEOUT", "soon"),
        ],
    )
    .unwrap();
    assert_eq!(config.listen, addr("127.0.0.2:7"));
    assert_eq!(config.common.node.request_timeout, Duration::from_secs(1));
    let file = fixture("bad-value.toml");
    let config = server(&["--config", &file], &[("RP_REQUEST_TIMEOUT", "2")]).unwrap();
    assert_eq!(config.common.node.request_timeout, Duration::from_secs(2));
}

#[test]
fn the_split_target_variables_replace_one_part_each() {
    let config = client(
        &[],
        &[
            ("RP_CLIENT_TARGET_HOSTNAME", "::1"),
            ("RP_CLIENT_TARGET_PORT", "4444"),
        ],
    )
    .unwrap();
    assert_eq!(
        (config.target.host.as_str(), config.target.port),
        ("::1", 4444)
    );
    // The host alone keeps the file's port.
    let config = client(
        &["--config", &fixture("client.toml")],
        &[("RP_CLIENT_TARGET_HOSTNAME", "other.example.com")],
    )
    .unwrap();
    assert_eq!(
        (config.target.host.as_str(), config.target.port),
        ("other.example.com", 4321)
    );
}

#[test]
fn each_forward_flag_is_one_forward_and_other_layers_split_on_commas() {
    let forward = |prefix: &str, url: &str| (prefix.to_owned(), url.to_owned());
    let flags = server(&["--forward", "api/=http://127.0.0.1:9000/a,b"], &[]).unwrap();
    assert_eq!(
        flags.common.node.forwards,
        [forward("api/", "http://127.0.0.1:9000/a,b")]
    );
    let env = server(
        &[],
        &[(
            "RP_FORWARDS",
            "a/=http://127.0.0.1:1/,b/=http://127.0.0.1:2/",
        )],
    )
    .unwrap();
    assert_eq!(
        env.common.node.forwards,
        [
            forward("a/", "http://127.0.0.1:1/"),
            forward("b/", "http://127.0.0.1:2/")
        ]
    );
    let file = server(&["--config", &fixture("forwards.toml")], &[]).unwrap();
    assert_eq!(
        file.common.node.forwards,
        [
            forward("a/", "http://127.0.0.1:1/"),
            forward("b/", "http://127.0.0.1:2/"),
            forward("c/", "http://127.0.0.1:3/")
        ]
    );
}

#[test]
fn the_local_front_limits_have_defaults_and_are_settings() {
    let defaults = server(&[], &[]).unwrap().common.node;
    assert_eq!(defaults.max_http_connections, 1024);
    assert_eq!(defaults.http_write_stall, Duration::from_secs(30));
    let set = client(
        &["--max-http-connections", "64"],
        &[("RP_HTTP_WRITE_STALL", "2.5")],
    )
    .unwrap()
    .common
    .node;
    assert_eq!(set.max_http_connections, 64);
    assert_eq!(set.http_write_stall, Duration::from_millis(2500));
}

/// The servers of a client node's configuration, `HOST:PORT`, in order.
fn servers(config: &ClientConfig) -> Vec<String> {
    config
        .target
        .servers()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn several_servers_from_a_repeated_flag_a_comma_list_or_a_file_list() {
    let both = ["a.example.com:1234", "b.example.com:4321"];
    let flags = client(
        &[
            "--server",
            both[0],
            "--server",
            both[1],
            "--server-name",
            "rp",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(servers(&flags), both);
    assert_eq!(
        (flags.target.host.as_str(), flags.target.port),
        ("a.example.com", 1234),
        "the first is the one a single server would be"
    );
    assert_eq!(
        flags.target.server_name.as_deref(),
        Some("rp"),
        "one name for all"
    );
    let comma_flag = client(&["--server", "a.example.com:1234,b.example.com:4321"], &[]);
    assert_eq!(servers(&comma_flag.unwrap()), both);

    // The original's host variable takes a comma-separated list, each with
    // its own port or the port variable's.
    let env = client(
        &[],
        &[(
            "RP_CLIENT_TARGET_HOSTNAME",
            "a.example.com:1234,b.example.com:4321",
        )],
    )
    .unwrap();
    assert_eq!(servers(&env), both);
    let env = client(
        &[],
        &[
            (
                "RP_CLIENT_TARGET_HOSTNAME",
                "a.example.com, b.example.com,::1",
            ),
            ("RP_CLIENT_TARGET_PORT", "4444"),
        ],
    )
    .unwrap();
    assert_eq!(
        servers(&env),
        ["a.example.com:4444", "b.example.com:4444", "[::1]:4444"]
    );

    let file = fixture("client-servers.toml");
    let from_file = client(&["--config", &file], &[]).unwrap();
    assert_eq!(servers(&from_file), both);
    assert_eq!(
        from_file.target.server_name.as_deref(),
        Some("rpserver.example.com")
    );
    // The port variable alone sets the port of every server of the file...
    let ported = client(&["--config", &file], &[("RP_CLIENT_TARGET_PORT", "5555")]).unwrap();
    assert_eq!(
        servers(&ported),
        ["a.example.com:5555", "b.example.com:5555"]
    );
    // ...and a higher layer replaces the whole list.
    let replaced = client(
        &["--config", &file, "--server", "c.example.com:1"],
        &[("RP_CLIENT_TARGET_HOSTNAME", "d.example.com")],
    )
    .unwrap();
    assert_eq!(servers(&replaced), ["c.example.com:1"]);
    let replaced = client(
        &["--config", &file],
        &[("RP_CLIENT_TARGET_HOSTNAME", "d.example.com")],
    )
    .unwrap();
    assert_eq!(
        servers(&replaced),
        ["d.example.com:1234"],
        "a host without a port takes the file's first port"
    );

    // A server named twice is dialled as one.
    let twice = client(
        &["--server", "a:1", "--server", "b:2", "--server", "a:1"],
        &[],
    )
    .unwrap();
    assert_eq!(servers(&twice), ["a:1", "b:2"]);
}

#[test]
fn a_bad_server_in_a_list_says_which_and_where() {
    let error = Node::Client.error(&["--server", "a:1", "--server", "b"], &[]);
    assert!(error.starts_with("--server"), "{error}");
    assert!(error.contains("\"b\" must be HOST:PORT"), "{error}");
    let error = Node::Client.error(&[], &[("RP_CLIENT_TARGET_HOSTNAME", "a:1,b:port")]);
    assert!(
        error.starts_with("RP_CLIENT_TARGET_HOSTNAME=\"a:1,b:port\""),
        "{error}"
    );
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("client.toml");
    std::fs::write(&empty, "server = []\n").unwrap();
    let error = Node::Client.error(&["--config", empty.to_str().unwrap()], &[]);
    assert!(error.contains("client.toml: server"), "{error}");
    assert!(error.contains("names no server"), "{error}");
}

#[test]
fn a_proxy_in_a_file_with_a_password_is_never_quoted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.toml");
    std::fs::write(&file, "proxy = \"http://alice:s3cret@proxy.corp\"\n").unwrap();
    let error = Node::Client.error(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        error.contains(
            "client.toml: proxy = \"http://***@proxy.corp\": the proxy URL names no port"
        ),
        "{error}"
    );
    assert!(
        !error.contains("s3cret") && !error.contains("alice"),
        "{error}"
    );
    // The file's proxy is below the flag, and `direct` is a choice too.
    std::fs::write(&file, "proxy = \"http://proxy.corp:3128\"\n").unwrap();
    let config = client(
        &["--config", file.to_str().unwrap(), "--proxy", "direct"],
        &[],
    )
    .unwrap();
    assert_eq!(config.target.proxy.proxy(), None);
    // The file's proxy is above the conventional variables.
    let config = client(
        &["--config", file.to_str().unwrap()],
        &[("HTTPS_PROXY", "http://other:1")],
    )
    .unwrap();
    assert_eq!(
        config
            .target
            .proxy
            .proxy()
            .map(ToString::to_string)
            .as_deref(),
        Some("http://proxy.corp:3128")
    );
}

#[test]
fn a_cluster_comes_from_repeated_flags_a_comma_list_or_a_file_list() {
    // No cluster unless asked for.
    assert_eq!(server(&[], &[]).unwrap().common.node.cluster, None);

    let tls = [
        "--nats-ca",
        "/etc/nats/ca.pem",
        "--nats-cert",
        "/etc/nats/s1.crt",
        "--nats-key",
        "/etc/nats/s1.key",
    ];
    let mut flags = vec![
        "--cluster",
        "tls://n1:4222,tls://n3:4222",
        "--cluster",
        "tls://n2:4222",
    ];
    flags.extend(["--node-id", "s1", "--cluster-name", "eu"]);
    flags.extend(tls);
    let cluster = server(&flags, &[]).unwrap().common.node.cluster.unwrap();
    assert_eq!(
        cluster.urls,
        ["tls://n1:4222", "tls://n3:4222", "tls://n2:4222"]
    );
    assert_eq!(
        (cluster.name.as_str(), cluster.node_id.as_str()),
        ("eu", "s1")
    );
    let files = cluster.tls.unwrap();
    assert_eq!(files.ca, Path::new("/etc/nats/ca.pem"));
    assert_eq!(files.key, Path::new("/etc/nats/s1.key"));

    let env = [
        ("RP_CLUSTER", "nats://n1:4222, nats://n2:4222"),
        ("RP_NODE_ID", "s2"),
    ];
    let cluster = server(&[], &env).unwrap().common.node.cluster.unwrap();
    assert_eq!(cluster.urls, ["nats://n1:4222", "nats://n2:4222"]);
    assert_eq!(
        (cluster.name.as_str(), cluster.node_id.as_str()),
        ("restpipe", "s2")
    );
    assert_eq!(cluster.tls, None);

    let file = fixture("server-cluster.toml");
    let cluster = server(&["--config", &file], &[])
        .unwrap()
        .common
        .node
        .cluster
        .unwrap();
    assert_eq!(
        cluster.urls,
        ["tls://n1:4222", "tls://n2:4222", "tls://n3:4222"]
    );
    assert_eq!(cluster.node_id, "s3");
    assert!(cluster.tls.is_some());
}

#[test]
fn cluster_settings_that_cannot_work_are_refused_with_the_reason() {
    let half_tls = server(
        &["--cluster", "nats://n1:4222", "--nats-ca", "/ca.pem"],
        &[],
    );
    let message = half_tls.unwrap_err().to_string();
    assert!(
        message.contains("--nats-ca, --nats-cert and --nats-key"),
        "{message}"
    );

    let tls_without_files = server(&["--cluster", "tls://n1:4222"], &[]);
    let message = tls_without_files.unwrap_err().to_string();
    assert!(message.contains("tls://n1:4222"), "{message}");

    let bad_id = server(&["--cluster", "nats://n1:4222", "--node-id", "s.1"], &[]);
    let message = bad_id.unwrap_err().to_string();
    assert!(message.contains("\"s.1\""), "{message}");

    let bad_name = server(
        &[],
        &[("RP_CLUSTER", "nats://n1:4222"), ("RP_CLUSTER_NAME", "a>b")],
    );
    let message = bad_name.unwrap_err().to_string();
    assert!(message.contains("RP_CLUSTER_NAME"), "{message}");
}

#[test]
fn the_source_address_comes_from_the_flag_the_environment_or_nowhere() {
    let source = |config: ClientConfig| config.target.source_address;
    assert_eq!(source(client(&[], &[]).unwrap()), None);
    let from_env = client(&[], &[("RP_SOURCE_ADDRESS", "10.0.0.7")]).unwrap();
    assert_eq!(source(from_env), Some("10.0.0.7".parse().unwrap()));
    let from_flag = client(
        &["--source-address", "fd00::7"],
        &[("RP_SOURCE_ADDRESS", "10.0.0.7")],
    )
    .unwrap();
    assert_eq!(source(from_flag), Some("fd00::7".parse().unwrap()));
    // The unspecified address is the kernel's choice, as without the option.
    let any = client(&["--source-address", "0.0.0.0"], &[]).unwrap();
    assert_eq!(source(any), None);
    // No connection leaves from a multicast or broadcast address.
    for bad in ["224.0.0.1", "255.255.255.255", "ff02::1"] {
        let error = Node::Client.error(&[], &[("RP_SOURCE_ADDRESS", bad)]);
        assert!(error.starts_with("RP_SOURCE_ADDRESS="), "{error}");
        assert!(error.contains("not an address of this host"), "{error}");
    }
    let error = Node::Client.error(&[], &[("RP_SOURCE_ADDRESS", "eth0")]);
    assert!(error.starts_with("RP_SOURCE_ADDRESS=\"eth0\""), "{error}");
}
