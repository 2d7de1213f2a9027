//! Configuration of both nodes, parsed once into validated types.
//!
//! Every option has up to four layers, and the first one present wins:
//! command-line flag > environment variable > TOML file (`--config`) >
//! default (which a launch profile may change). The original project's
//! environment names keep working. Unknown keys in the file are an error that
//! names the key and the file; a bad value names where it came from.
//!
//! The environment is passed in as a lookup function, so resolution is a pure
//! function of (flags, environment, file) and tests need not touch the
//! process environment.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backoff::BackoffSettings;
use crate::body::INLINE_LIMIT;
use crate::client::ServerTarget;
use crate::connection::ConnectionSettings;
use crate::handler::Side;
use crate::http::{HttpAddr, SocketOptions};
use crate::identity::CertFiles;
use crate::metrics::StatsdSettings;
use crate::node::{FRAME_OVERHEAD_BYTES, NodeSettings};
use crate::pki::Role;

/// Where identities live unless told otherwise (the original's).
pub const DEFAULT_CERT_DIR: &str = "/var/lib/restpipe";
/// The server's pipe port unless told otherwise (the original's).
pub const DEFAULT_PIPE_PORT: u16 = 1234;
/// Where a server node listens for clients unless told otherwise.
pub const DEFAULT_BIND_INTERFACE: &str = "0.0.0.0";
/// The server a client dials unless told otherwise (the original's).
pub const DEFAULT_TARGET_HOST: &str = "localhost";
/// statsd's conventional address.
pub const DEFAULT_STATSD_HOST: &str = "localhost";
/// statsd's conventional port.
pub const DEFAULT_STATSD_PORT: u16 = 8125;

/// A launch profile, after the original's gunicorn dev and prod scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Unix socket in /tmp (mode 0666), debug logs in human format.
    Dev,
    /// Unix socket in /tmp (mode 0660, for the web server's group), JSON
    /// logs at info without colour: for systemd.
    Prod,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// Why the configuration is unusable. Each names where the value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The config file has a key this node does not know.
    #[error("config file {path}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// The keys a file for this node may hold.
        known: String,
    },
    /// A value could not be used.
    #[error("{source_name}: {message}")]
    BadValue {
        /// Where it came from: `--flag`, `ENV_VAR=...` or `file: key`.
        source_name: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Flags both nodes share. Every flag is optional here: an absent flag
/// falls through to the environment, the file and the default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// TOML file with any of the options below (keys as in the README's
    /// configuration table). Flags and environment variables win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Local HTTP front: IP:PORT or unix:/path [env: RP_SERVER_HTTP /
    /// RP_CLIENT_HTTP] [default: 127.0.0.1:8080 / 127.0.0.1:8081, or
    /// unix:/tmp/rpserver.sock / unix:/tmp/rpclient.sock with a profile].
    #[arg(long, value_name = "ADDR|unix:PATH")]
    pub http: Option<HttpAddr>,
    /// Directory with the node's key, certificate and CA [env:
    /// RP_SERVER_CERT_PATH / RP_CLIENT_CERT_PATH] [default: /var/lib/restpipe].
    /// File names: RP_SERVER_KEY_FILENAME, RP_SERVER_CRT_FILENAME,
    /// RP_CLIENT_KEY_FILENAME, RP_CLIENT_CRT_FILENAME, RP_CA_CRT_FILENAME.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Also reload the identity when its files change (SIGHUP always
    /// reloads) [env: RP_WATCH_CERTS] [default: off].
    #[arg(long)]
    pub watch_certs: bool,
    /// Access policy (TOML) of which peers may call which handlers; once
    /// given, everything it does not allow is refused with 403 [env:
    /// RP_POLICY].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Directory of executable handlers, named like handlers (`get_time`,
    /// `post_upload`): body on stdin, args as argv, reply on stdout [env:
    /// RP_HANDLER_DIR].
    #[arg(long, value_name = "DIR")]
    pub handler_dir: Option<PathBuf>,
    /// Forward a noun prefix to a local HTTP upstream, PREFIX=URL, e.g.
    /// `files/=http://127.0.0.1:8080/`; repeatable [env: RP_FORWARDS,
    /// comma-separated].
    #[arg(long = "forward", value_name = "PREFIX=URL")]
    pub forwards: Vec<String>,
    /// Launch profile: dev (unix socket, debug logs) or prod (unix socket for
    /// the web server's group, JSON logs) [env: RP_PROFILE].
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Debug logging [env: DEBUG=1] [default: off; on in the dev profile].
    /// RUST_LOG, when set, overrides the filter.
    #[arg(long)]
    pub debug: bool,
    /// Log format [env: RP_LOG_FORMAT] [default: human; json in prod].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Default end-to-end deadline of a request, in seconds; callers may
    /// override it per request with `X-Pipe-Timeout` [env:
    /// RP_REQUEST_TIMEOUT] [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub request_timeout: Option<Duration>,
    /// How long a request waits for a missing peer before 503 (404 for a
    /// client name never seen), in seconds [env: RP_PEER_WAIT] [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub peer_wait: Option<Duration>,
    /// Send a heartbeat after this many seconds without hearing the peer
    /// [env: RP_PING_INTERVAL] [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub ping_interval: Option<Duration>,
    /// Drop a peer silent for this many seconds (finds half-open
    /// connections) [env: RP_DEAD_AFTER] [default: 15].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub dead_after: Option<Duration>,
    /// Largest frame on the pipe, in bytes; a peer sending more is
    /// disconnected [env: RP_MAX_FRAME_BYTES] [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Largest local request body, in bytes (413 beyond); larger bodies than
    /// a frame stream in bounded memory [env: RP_MAX_BODY_BYTES] [default:
    /// 1073741824].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Handlers running at once per connection [env:
    /// RP_MAX_CONCURRENT_HANDLERS] [default: 256].
    #[arg(long, value_name = "N")]
    pub max_concurrent_handlers: Option<usize>,
    /// On shutdown, seconds given to requests in progress [env:
    /// RP_DRAIN_GRACE] [default: 10].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub drain_grace: Option<Duration>,
    /// Command run through `sh -c` on each connection event, with RP_EVENT,
    /// RP_NODE, RP_PEER, RP_REASON... in its environment [env: RP_ON_EVENT].
    #[arg(long, value_name = "COMMAND")]
    pub on_event: Option<String>,
    /// statsd host; empty disables metrics [env: RP_STATSD_HOST] [default:
    /// localhost].
    #[arg(long, value_name = "HOST")]
    pub statsd_host: Option<String>,
    /// statsd port; empty disables metrics [env: RP_STATSD_PORT] [default:
    /// 8125].
    #[arg(long, value_name = "PORT")]
    pub statsd_port: Option<String>,
    /// Prefix of every metric name [env: RP_STATSD_PREFIX] [default: none].
    #[arg(long, value_name = "PREFIX")]
    pub statsd_prefix: Option<String>,
    /// Permissions of a unix-socket front, octal [env: RP_SOCKET_MODE]
    /// [default: 0666 in dev, else 0660].
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// Group to give a unix-socket front, e.g. www-data for nginx [env:
    /// RP_SOCKET_GROUP].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Proxies whose X-Forwarded-For is believed in logs, comma-separated
    /// IPs; callers on a unix socket always are [env: RP_TRUSTED_PROXIES]
    /// [default: 127.0.0.1,::1].
    #[arg(long, value_name = "IPS")]
    pub trusted_proxies: Option<String>,
}

/// Flags of `pipe-server serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Address client nodes connect to, IP:PORT [env:
    /// RP_SERVER_BIND_INTERFACE or BIND_IP, and RP_SERVER_BIND_PORT or
    /// BIND_PORT] [default: 0.0.0.0:1234].
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Most client connections held at once; past it, new ones are refused
    /// with a reason and retry with backoff [env: RP_MAX_CONNECTIONS]
    /// [default: 20000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// Flags of `pipe-client serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// The server node, HOST:PORT [env: RP_CLIENT_TARGET_HOSTNAME and
    /// RP_CLIENT_TARGET_PORT] [default: localhost:1234].
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Name the server's certificate must carry, when it differs from HOST
    /// [env: RP_CLIENT_TARGET_SERVER_NAME].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// First reconnect delay envelope, in seconds; each delay is drawn
    /// uniformly below its envelope (full jitter) [env: RP_RECONNECT_MIN]
    /// [default: 0.5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub reconnect_min: Option<Duration>,
    /// Largest reconnect delay envelope, in seconds [env: RP_RECONNECT_MAX]
    /// [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub reconnect_max: Option<Duration>,
    /// A connection lasting this many seconds resets the backoff [env:
    /// RP_RECONNECT_STABLE_AFTER] [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub reconnect_stable_after: Option<Duration>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// Arguments of `set-identity` (both nodes).
#[derive(Debug, Clone, clap::Args)]
pub struct SetIdentityArgs {
    /// The node's private key (PEM).
    pub key: PathBuf,
    /// The node's certificate (PEM), from `certs-tool issue --server` for a
    /// server node or `--client` for a client node.
    pub crt: PathBuf,
    /// The CA certificate that signed both nodes' certificates (PEM).
    pub ca: PathBuf,
    /// Where to install the three files [env: RP_SERVER_CERT_PATH /
    /// RP_CLIENT_CERT_PATH] [default: /var/lib/restpipe].
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// TOML file that may name the cert dir (`cert_dir`) and file names.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl SetIdentityArgs {
    /// Where the identity goes for a node on `side`: resolved exactly as
    /// `serve` resolves it (flag, environment, file, default), so the node
    /// finds what was installed.
    pub fn destination(
        &self,
        side: Side,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CertFiles, ConfigError> {
        let common = CommonArgs {
            cert_dir: self.cert_dir.clone(),
            config: self.config.clone(),
            ..CommonArgs::default()
        };
        Ok(match side {
            Side::Server => {
                let args = ServerArgs {
                    common,
                    ..ServerArgs::default()
                };
                ServerConfig::resolve(&args, env)?.common.cert_files
            }
            Side::Client => {
                let args = ClientArgs {
                    common,
                    ..ClientArgs::default()
                };
                ClientConfig::resolve(&args, env)?.common.cert_files
            }
        })
    }
}

/// How a node logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logging {
    /// Debug level instead of info.
    pub debug: bool,
    /// Line format.
    pub format: LogFormat,
}

/// Everything both nodes resolve the same way.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// The local HTTP front.
    pub http: HttpAddr,
    /// Permissions of a unix-socket front, and whose forwarded-for to trust.
    pub socket: SocketOptions,
    /// The identity files.
    pub cert_files: CertFiles,
    /// Reload the identity when its files change, not only on SIGHUP.
    pub watch_certs: bool,
    /// The launch profile, if any.
    pub profile: Option<Profile>,
    /// Logging.
    pub logging: Logging,
    /// Limits, deadlines, events and metrics.
    pub node: NodeSettings,
}

/// A server node's whole configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where client nodes connect.
    pub listen: SocketAddr,
    /// The rest.
    pub common: CommonConfig,
}

/// A client node's whole configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server to dial.
    pub target: ServerTarget,
    /// Reconnect backoff.
    pub backoff: BackoffSettings,
    /// The rest.
    pub common: CommonConfig,
}

/// Keys a config file of either node may hold.
const COMMON_KEYS: &[&str] = &[
    "http",
    "cert_dir",
    "key_filename",
    "crt_filename",
    "ca_crt_filename",
    "watch_certs",
    "policy",
    "handler_dir",
    "forwards",
    "profile",
    "debug",
    "log_format",
    "request_timeout",
    "peer_wait",
    "ping_interval",
    "dead_after",
    "max_frame_bytes",
    "max_body_bytes",
    "max_concurrent_handlers",
    "drain_grace",
    "on_event",
    "statsd_host",
    "statsd_port",
    "statsd_prefix",
    "socket_mode",
    "socket_group",
    "trusted_proxies",
];
/// Keys only a server node's file may hold.
const SERVER_KEYS: &[&str] = &["listen", "max_connections"];
/// Keys only a client node's file may hold.
const CLIENT_KEYS: &[&str] = &[
    "server",
    "server_name",
    "reconnect_min",
    "reconnect_max",
    "reconnect_stable_after",
];

/// The TOML file layer: its values as strings, ready for the same parsers
/// the environment goes through.
#[derive(Debug, Default)]
struct FileLayer {
    path: Option<PathBuf>,
    values: std::collections::BTreeMap<String, String>,
}

impl FileLayer {
    fn load(path: Option<&Path>, side: Side) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, side)
    }

    fn parse(text: &str, path: &Path, side: Side) -> Result<Self, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string().trim().to_owned(),
                })?;
        let side_keys = match side {
            Side::Server => SERVER_KEYS,
            Side::Client => CLIENT_KEYS,
        };
        let mut values = std::collections::BTreeMap::new();
        for (key, value) in table {
            if !COMMON_KEYS.contains(&key.as_str()) && !side_keys.contains(&key.as_str()) {
                let mut known: Vec<&str> = COMMON_KEYS.iter().chain(side_keys).copied().collect();
                known.sort_unstable();
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    key,
                    known: known.join(", "),
                });
            }
            let text = match value {
                toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
                other => scalar(&other).map(|text| vec![text]),
            }
            .map(|parts| parts.join(","))
            .ok_or_else(|| ConfigError::BadValue {
                source_name: format!("config file {}: {key}", path.display()),
                message: "expected a string, number, boolean, or a list of those".to_owned(),
            })?;
            values.insert(key, text);
        }
        Ok(Self {
            path: Some(path.to_owned()),
            values,
        })
    }
}

/// A TOML scalar as the text an environment variable would hold.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The environment and file layers, and the lookup that walks them.
struct Layers<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: FileLayer,
}

impl Layers<'_> {
    /// The first environment variable of `names` that is set (empty values
    /// count as unset), then the file's `key`; parsed with `parse`.
    fn lookup<T>(
        &self,
        names: &[&str],
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        for name in names {
            if let Some(value) = (self.env)(name).filter(|v| !v.is_empty()) {
                return parse(&value)
                    .map(Some)
                    .map_err(|message| ConfigError::BadValue {
                        source_name: format!("{name}={value:?}"),
                        message,
                    });
            }
        }
        self.file_value(key, parse)
    }

    /// Like `lookup`, but an empty value is a value (statsd: "disabled").
    fn lookup_allow_empty(&self, names: &[&str], key: &str) -> Option<String> {
        names
            .iter()
            .find_map(|name| (self.env)(name))
            .or_else(|| self.file.values.get(key).cloned())
    }

    fn file_value<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.file.values.get(key) else {
            return Ok(None);
        };
        parse(value)
            .map(Some)
            .map_err(|message| ConfigError::BadValue {
                source_name: format!(
                    "config file {}: {key} = {value:?}",
                    self.file
                        .path
                        .as_deref()
                        .unwrap_or(Path::new("?"))
                        .display()
                ),
                message,
            })
    }

    /// flag > environment > file > default.
    fn pick<T>(
        &self,
        flag: Option<T>,
        names: &[&str],
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
        default: T,
    ) -> Result<T, ConfigError> {
        match flag {
            Some(value) => Ok(value),
            None => Ok(self.lookup(names, key, parse)?.unwrap_or(default)),
        }
    }
}

impl ServerConfig {
    /// Resolves a server node's configuration from its flags, an environment
    /// lookup, and the file named by `--config`.
    pub fn resolve(
        args: &ServerArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let layers = Layers {
            env,
            file: FileLayer::load(args.common.config.as_deref(), Side::Server)?,
        };
        let listen = match args.listen {
            Some(listen) => listen,
            None => {
                let from_file = layers.file_value("listen", parse_parsed::<SocketAddr>)?;
                let ip = layers
                    .lookup(
                        &["RP_SERVER_BIND_INTERFACE", "BIND_IP"],
                        "",
                        parse_parsed::<IpAddr>,
                    )?
                    .or(from_file.map(|a| a.ip()))
                    .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                let port = layers
                    .lookup(
                        &["RP_SERVER_BIND_PORT", "BIND_PORT"],
                        "",
                        parse_parsed::<u16>,
                    )?
                    .or(from_file.map(|a| a.port()))
                    .unwrap_or(DEFAULT_PIPE_PORT);
                SocketAddr::new(ip, port)
            }
        };
        let mut common = resolve_common(&args.common, &layers, Side::Server)?;
        common.node.max_connections = layers.pick(
            args.max_connections,
            &["RP_MAX_CONNECTIONS"],
            "max_connections",
            parse_positive,
            crate::node::DEFAULT_MAX_CONNECTIONS,
        )?;
        Ok(Self { listen, common })
    }
}

impl ClientConfig {
    /// Resolves a client node's configuration from its flags, an environment
    /// lookup, and the file named by `--config`.
    pub fn resolve(
        args: &ClientArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let layers = Layers {
            env,
            file: FileLayer::load(args.common.config.as_deref(), Side::Client)?,
        };
        let (host, port) = match &args.server {
            Some(server) => parse_host_port(server).map_err(|message| ConfigError::BadValue {
                source_name: format!("--server {server:?}"),
                message,
            })?,
            None => {
                let from_file = layers.file_value("server", parse_host_port)?;
                let host = layers
                    .lookup(&["RP_CLIENT_TARGET_HOSTNAME"], "", |v| Ok(v.to_owned()))?
                    .or(from_file.as_ref().map(|(h, _)| h.clone()))
                    .unwrap_or_else(|| DEFAULT_TARGET_HOST.to_owned());
                let port = layers
                    .lookup(&["RP_CLIENT_TARGET_PORT"], "", parse_parsed::<u16>)?
                    .or(from_file.map(|(_, p)| p))
                    .unwrap_or(DEFAULT_PIPE_PORT);
                (host, port)
            }
        };
        let server_name = match &args.server_name {
            Some(name) => Some(name.clone()),
            None => layers.lookup(&["RP_CLIENT_TARGET_SERVER_NAME"], "server_name", |v| {
                Ok(v.to_owned())
            })?,
        };
        let defaults = BackoffSettings::default();
        let backoff = BackoffSettings {
            min_delay: layers.pick(
                args.reconnect_min,
                &["RP_RECONNECT_MIN"],
                "reconnect_min",
                parse_seconds,
                defaults.min_delay,
            )?,
            max_delay: layers.pick(
                args.reconnect_max,
                &["RP_RECONNECT_MAX"],
                "reconnect_max",
                parse_seconds,
                defaults.max_delay,
            )?,
            stable_after: layers.pick(
                args.reconnect_stable_after,
                &["RP_RECONNECT_STABLE_AFTER"],
                "reconnect_stable_after",
                parse_seconds,
                defaults.stable_after,
            )?,
        };
        if backoff.max_delay < backoff.min_delay {
            return Err(ConfigError::BadValue {
                source_name: "reconnect_max".to_owned(),
                message: format!(
                    "{:?} is shorter than reconnect_min {:?}",
                    backoff.max_delay, backoff.min_delay
                ),
            });
        }
        Ok(Self {
            target: ServerTarget {
                host,
                port,
                server_name,
            },
            backoff,
            common: resolve_common(&args.common, &layers, Side::Client)?,
        })
    }
}

fn resolve_common(
    args: &CommonArgs,
    layers: &Layers<'_>,
    side: Side,
) -> Result<CommonConfig, ConfigError> {
    let (role, http_env, cert_env, key_env, crt_env, socket_name, tcp_default) = match side {
        Side::Server => (
            Role::Server,
            "RP_SERVER_HTTP",
            "RP_SERVER_CERT_PATH",
            "RP_SERVER_KEY_FILENAME",
            "RP_SERVER_CRT_FILENAME",
            "/tmp/rpserver.sock",
            "127.0.0.1:8080",
        ),
        Side::Client => (
            Role::Client,
            "RP_CLIENT_HTTP",
            "RP_CLIENT_CERT_PATH",
            "RP_CLIENT_KEY_FILENAME",
            "RP_CLIENT_CRT_FILENAME",
            "/tmp/rpclient.sock",
            "127.0.0.1:8081",
        ),
    };
    let profile = match args.profile {
        Some(profile) => Some(profile),
        None => layers.lookup(&["RP_PROFILE"], "profile", parse_profile)?,
    };
    let http_default = match profile {
        Some(_) => HttpAddr::Unix(PathBuf::from(socket_name)),
        None => tcp_default
            .parse()
            .map_err(|message| ConfigError::BadValue {
                source_name: "built-in default".to_owned(),
                message,
            })?,
    };
    let http = layers.pick(
        args.http.clone(),
        &[http_env],
        "http",
        |v| v.parse(),
        http_default,
    )?;

    let cert_dir = layers.pick(
        args.cert_dir.clone(),
        &[cert_env],
        "cert_dir",
        |v| Ok(PathBuf::from(v)),
        PathBuf::from(DEFAULT_CERT_DIR),
    )?;
    let mut cert_files = CertFiles::in_dir(&cert_dir, role);
    let file_name = |v: &str| -> Result<String, String> {
        if v.contains('/') || v == ".." || v == "." {
            return Err("must be a file name inside the cert dir, not a path".to_owned());
        }
        Ok(v.to_owned())
    };
    if let Some(name) = layers.lookup(&[key_env], "key_filename", file_name)? {
        cert_files.key = cert_dir.join(name);
    }
    if let Some(name) = layers.lookup(&[crt_env], "crt_filename", file_name)? {
        cert_files.cert = cert_dir.join(name);
    }
    if let Some(name) = layers.lookup(&["RP_CA_CRT_FILENAME"], "ca_crt_filename", file_name)? {
        cert_files.ca = cert_dir.join(name);
    }

    let watch_certs = args.watch_certs
        || layers
            .lookup(&["RP_WATCH_CERTS"], "watch_certs", parse_bool)?
            .unwrap_or(false);
    let debug = args.debug
        || layers
            .lookup(&["DEBUG"], "debug", parse_bool)?
            .unwrap_or(profile == Some(Profile::Dev));
    let format = layers.pick(
        args.log_format,
        &["RP_LOG_FORMAT"],
        "log_format",
        parse_log_format,
        if profile == Some(Profile::Prod) {
            LogFormat::Json
        } else {
            LogFormat::Human
        },
    )?;

    let defaults = NodeSettings::default();
    let max_frame_bytes = layers.pick(
        args.max_frame_bytes,
        &["RP_MAX_FRAME_BYTES"],
        "max_frame_bytes",
        parse_positive,
        defaults.connection.max_frame_bytes,
    )?;
    // A frame must hold the largest body that travels inline, plus headers.
    let smallest_frame = INLINE_LIMIT + FRAME_OVERHEAD_BYTES;
    if max_frame_bytes < smallest_frame || max_frame_bytes > u32::MAX as usize {
        return Err(ConfigError::BadValue {
            source_name: "max_frame_bytes".to_owned(),
            message: format!(
                "{max_frame_bytes} is outside {smallest_frame}..={}",
                u32::MAX
            ),
        });
    }
    let max_body_bytes = layers.pick(
        args.max_body_bytes,
        &["RP_MAX_BODY_BYTES"],
        "max_body_bytes",
        parse_positive,
        defaults.max_body_bytes,
    )?;
    let ping_interval = layers.pick(
        args.ping_interval,
        &["RP_PING_INTERVAL"],
        "ping_interval",
        parse_seconds,
        defaults.connection.ping_interval,
    )?;
    let dead_after = layers.pick(
        args.dead_after,
        &["RP_DEAD_AFTER"],
        "dead_after",
        parse_seconds,
        defaults.connection.dead_after,
    )?;
    if dead_after <= ping_interval {
        return Err(ConfigError::BadValue {
            source_name: "dead_after".to_owned(),
            message: format!("{dead_after:?} must be longer than ping_interval {ping_interval:?}"),
        });
    }
    let on_event = match &args.on_event {
        Some(command) => Some(command.clone()),
        None => layers.lookup(&["RP_ON_EVENT"], "on_event", |v| Ok(v.to_owned()))?,
    };

    let node = NodeSettings {
        connection: ConnectionSettings {
            max_frame_bytes,
            max_concurrent_handlers: layers.pick(
                args.max_concurrent_handlers,
                &["RP_MAX_CONCURRENT_HANDLERS"],
                "max_concurrent_handlers",
                parse_positive,
                defaults.connection.max_concurrent_handlers,
            )?,
            ping_interval,
            dead_after,
            ..defaults.connection.clone()
        },
        request_timeout: layers.pick(
            args.request_timeout,
            &["RP_REQUEST_TIMEOUT"],
            "request_timeout",
            parse_seconds,
            defaults.request_timeout,
        )?,
        peer_wait: layers.pick(
            args.peer_wait,
            &["RP_PEER_WAIT"],
            "peer_wait",
            parse_seconds,
            defaults.peer_wait,
        )?,
        max_body_bytes,
        drain_grace: layers.pick(
            args.drain_grace,
            &["RP_DRAIN_GRACE"],
            "drain_grace",
            parse_seconds,
            defaults.drain_grace,
        )?,
        on_event,
        statsd: resolve_statsd(args, layers)?,
        policy: match &args.policy {
            Some(path) => Some(path.clone()),
            None => layers.lookup(&["RP_POLICY"], "policy", |v| Ok(PathBuf::from(v)))?,
        },
        handler_dir: match &args.handler_dir {
            Some(dir) => Some(dir.clone()),
            None => layers.lookup(&["RP_HANDLER_DIR"], "handler_dir", |v| Ok(PathBuf::from(v)))?,
        },
        forwards: if args.forwards.is_empty() {
            layers
                .lookup(&["RP_FORWARDS"], "forwards", |v| {
                    v.split(',')
                        .filter(|f| !f.trim().is_empty())
                        .map(parse_forward)
                        .collect()
                })?
                .unwrap_or_default()
        } else {
            args.forwards
                .iter()
                .map(|f| parse_forward(f))
                .collect::<Result<_, _>>()
                .map_err(|message| ConfigError::BadValue {
                    source_name: "--forward".to_owned(),
                    message,
                })?
        },
        ..defaults
    };

    let socket = SocketOptions {
        mode: layers.pick(
            args.socket_mode
                .as_deref()
                .map(parse_mode)
                .transpose()
                .map_err(|message| ConfigError::BadValue {
                    source_name: "--socket-mode".to_owned(),
                    message,
                })?,
            &["RP_SOCKET_MODE"],
            "socket_mode",
            parse_mode,
            if profile == Some(Profile::Dev) {
                0o666
            } else {
                0o660
            },
        )?,
        group: match &args.socket_group {
            Some(group) => Some(group.clone()),
            None => layers.lookup(&["RP_SOCKET_GROUP"], "socket_group", |v| Ok(v.to_owned()))?,
        },
        trusted_proxies: layers.pick(
            args.trusted_proxies
                .as_deref()
                .map(parse_ip_list)
                .transpose()
                .map_err(|message| ConfigError::BadValue {
                    source_name: "--trusted-proxies".to_owned(),
                    message,
                })?,
            &["RP_TRUSTED_PROXIES"],
            "trusted_proxies",
            parse_ip_list,
            vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
            ],
        )?,
    };

    Ok(CommonConfig {
        http,
        socket,
        cert_files,
        watch_certs,
        profile,
        logging: Logging { debug, format },
        node,
    })
}

/// statsd is on by default (localhost:8125, as the original), and off when
/// the host or the port is set to empty at any layer.
fn resolve_statsd(
    args: &CommonArgs,
    layers: &Layers<'_>,
) -> Result<Option<StatsdSettings>, ConfigError> {
    let host = args
        .statsd_host
        .clone()
        .or_else(|| layers.lookup_allow_empty(&["RP_STATSD_HOST"], "statsd_host"))
        .unwrap_or_else(|| DEFAULT_STATSD_HOST.to_owned());
    let port = args
        .statsd_port
        .clone()
        .or_else(|| layers.lookup_allow_empty(&["RP_STATSD_PORT"], "statsd_port"))
        .unwrap_or_else(|| DEFAULT_STATSD_PORT.to_string());
    if host.trim().is_empty() || port.trim().is_empty() {
        return Ok(None);
    }
    let port = parse_parsed::<u16>(port.trim()).map_err(|message| ConfigError::BadValue {
        source_name: format!("statsd port {port:?}"),
        message,
    })?;
    let prefix = match &args.statsd_prefix {
        Some(prefix) => prefix.clone(),
        None => layers
            .lookup_allow_empty(&["RP_STATSD_PREFIX"], "statsd_prefix")
            .unwrap_or_default(),
    };
    Ok(Some(StatsdSettings {
        host: host.trim().to_owned(),
        port,
        prefix: prefix.trim_end_matches('.').to_owned(),
    }))
}

/// Parses a positive number of seconds such as `2.5`.
pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0 && *secs < 1.0e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{value:?} is not a positive number of seconds"))
}

fn parse_parsed<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e| format!("{value:?}: {e}"))
}

fn parse_positive(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{value:?} is not a positive whole number")),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean (1/0, true/false)")),
    }
}

fn parse_profile(value: &str) -> Result<Profile, String> {
    match value.trim() {
        "dev" => Ok(Profile::Dev),
        "prod" => Ok(Profile::Prod),
        _ => Err(format!("{value:?} is not a profile (dev or prod)")),
    }
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.trim() {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{value:?} is not a log format (human or json)")),
    }
}

fn parse_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value.trim().trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{value:?} is not an octal permission mode such as 0660"))
}

fn parse_ip_list(value: &str) -> Result<Vec<IpAddr>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .map(parse_parsed::<IpAddr>)
        .collect()
}

/// Splits `PREFIX=URL` of a forward.
fn parse_forward(value: &str) -> Result<(String, String), String> {
    let (prefix, url) = value.trim().split_once('=').ok_or_else(|| {
        format!("{value:?} must be PREFIX=URL, e.g. files/=http://127.0.0.1:8080/")
    })?;
    if url.is_empty() {
        return Err(format!("{value:?} names no upstream URL"));
    }
    Ok((prefix.trim().to_owned(), url.trim().to_owned()))
}

/// Splits `HOST:PORT` (or `[v6]:PORT`).
pub fn parse_host_port(value: &str) -> Result<(String, u16), String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("{value:?} must be HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{value:?} names no host"));
    }
    let port = port
        .parse()
        .map_err(|_| format!("{value:?}: {port:?} is not a port number"))?;
    Ok((host.to_owned(), port))
}

/// The process environment, for [`ServerConfig::resolve`] and
/// [`ClientConfig::resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers() {
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert!(parse_mode("999").is_err());
        assert_eq!(parse_bool("1"), Ok(true));
        assert!(parse_bool("maybe").is_err());
        assert_eq!(parse_host_port("[::1]:99"), Ok(("::1".into(), 99)));
        assert!(parse_host_port("host").is_err());
        assert!(parse_host_port(":1").is_err());
    }
}
