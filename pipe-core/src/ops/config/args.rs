//! The flags of `serve` and `set-identity`, as clap parses them. Every
//! option is optional here: a flag not given falls through to the
//! environment, the file and the default. Flags are serialized (those not
//! given left out) as the top layer; `--help` gains each flag's environment
//! variable and default from the key table (see `help`).

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use super::error::ConfigError;
use super::help;
use super::parse::parse_seconds;
use super::value::as_text;
use super::{ClientConfig, LogFormat, Profile, ServerConfig};
use crate::front::HttpAddr;
use crate::link::CertFiles;
use crate::wire::Side;

/// Flags both nodes share.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct CommonArgs {
    /// TOML file with any of the options below (keys as in the README's
    /// configuration table). Flags and environment variables win over it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Local HTTP front: IP:PORT or unix:/path.
    #[arg(long, value_name = "ADDR|unix:PATH")]
    #[serde(serialize_with = "as_text")]
    pub http: Option<HttpAddr>,
    /// Directory with the node's key, certificate and CA (their file names:
    /// see --config).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Certificate revocation list of the CA (PEM, from `certs-tool
    /// revoke`): peers whose certificate it names are refused, and
    /// connected ones closed when a reload brings it.
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// Also reload the identity (and --crl) when its files change (SIGHUP
    /// always reloads).
    #[arg(long)]
    #[serde(skip_serializing_if = "is_off")]
    pub watch_certs: bool,
    /// Access policy (TOML) of which peers may call which handlers; once
    /// given, everything it does not allow is refused with 403.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// API token file (TOML; `token new` makes entries): once given, every
    /// local request but /_pipe/health and /_pipe/openapi.json needs
    /// `Authorization: Bearer <token>` (401 without a valid one, 403 outside its handlers and
    /// clients). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub api_tokens: Option<PathBuf>,
    /// Directory of the job store (asynchronous jobs, `Prefer:
    /// respond-async`); without one the node takes no jobs. Default in the
    /// prod profile: /var/lib/restpipe/state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How long a job's delivery is attempted, in seconds, unless its caller
    /// says (`X-Pipe-Expires`); then it ends `expired`.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub job_expiry: Option<Duration>,
    /// How long ended jobs and their results are kept, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub job_retention: Option<Duration>,
    /// Jobs one peer's queue holds; past it a submission gets 503.
    #[arg(long, value_name = "N")]
    pub max_queued_jobs: Option<usize>,
    /// Directory of executable handlers, named like handlers (`get_time`,
    /// `post_upload`): body on stdin, args as argv, reply on stdout.
    #[arg(long, value_name = "DIR")]
    pub handler_dir: Option<PathBuf>,
    /// Forward a noun prefix to a local HTTP upstream, PREFIX=URL, e.g.
    /// `files/=http://127.0.0.1:8080/`; repeatable (comma-separated in the
    /// environment).
    #[arg(long = "forward", value_name = "PREFIX=URL")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<String>,
    /// Launch profile: dev (unix socket in /tmp, debug logs) or prod (unix
    /// socket in /run/restpipe for the web server's group, JSON logs).
    #[arg(long, value_enum)]
    #[serde(serialize_with = "as_text")]
    pub profile: Option<Profile>,
    /// Debug logging (DEBUG=1). RUST_LOG, when set, overrides the filter.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_off")]
    pub debug: bool,
    /// Log format.
    #[arg(long, value_enum)]
    #[serde(serialize_with = "as_text")]
    pub log_format: Option<LogFormat>,
    /// Default end-to-end deadline of a request, in seconds; callers may
    /// override it per request with `X-Pipe-Timeout`.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub request_timeout: Option<Duration>,
    /// How long a request waits for a missing peer before 503 (404 for a
    /// client name never seen), in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub peer_wait: Option<Duration>,
    /// Send a heartbeat after this many seconds without hearing the peer.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub ping_interval: Option<Duration>,
    /// Drop a peer silent for this many seconds (finds half-open
    /// connections).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub dead_after: Option<Duration>,
    /// Largest frame on the pipe, in bytes; a peer sending more is
    /// disconnected.
    #[arg(long, value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Largest local request body, in bytes (413 beyond); larger bodies than
    /// a frame stream in bounded memory.
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Handlers running at once per connection.
    #[arg(long, value_name = "N")]
    pub max_concurrent_handlers: Option<usize>,
    /// Handlers running at once for all peers together; past it, events
    /// wait for a slot within their deadline.
    #[arg(long, value_name = "N")]
    pub max_running_handlers: Option<usize>,
    /// Executable handlers running at once; past it, events wait for a
    /// place within their deadline, then 503.
    #[arg(long, value_name = "N")]
    pub max_exec_processes: Option<usize>,
    /// Requests to forwards' upstreams in progress at once (so connections
    /// to them, busy or pooled); past it, requests wait for a place within
    /// their deadline, then 503.
    #[arg(long, value_name = "N")]
    pub max_upstream_connections: Option<usize>,
    /// Bytes of peers' bodies held in memory at once, all peers together
    /// (inline bodies, unread streamed windows, bodies collected whole for
    /// handlers that do not stream); past it, 503.
    #[arg(long, value_name = "BYTES")]
    pub max_body_memory: Option<usize>,
    /// Bytes of one peer's bodies held in memory at once; past it, 503, or
    /// 413 for a body larger than this.
    #[arg(long, value_name = "BYTES")]
    pub max_body_memory_per_peer: Option<usize>,
    /// Longest deadline granted to a peer's event, in seconds, whatever the
    /// peer asks for.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub max_request_timeout: Option<Duration>,
    /// Most local HTTP connections open at once; past it a caller gets 503
    /// and its connection is closed.
    #[arg(long, value_name = "N")]
    pub max_http_connections: Option<usize>,
    /// Seconds a local caller may leave a response unread (a streamed reply
    /// it stopped reading) before its connection is closed, freeing the far
    /// handler.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub http_write_stall: Option<Duration>,
    /// On shutdown, seconds given to requests in progress.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub drain_grace: Option<Duration>,
    /// Command run through `sh -c` on each connection event, with RP_EVENT,
    /// RP_NODE, RP_PEER, RP_REASON... in its environment.
    #[arg(long, value_name = "COMMAND")]
    pub on_event: Option<String>,
    /// statsd host; empty turns statsd off (Prometheus keeps the metrics).
    #[arg(long, value_name = "HOST")]
    pub statsd_host: Option<String>,
    /// statsd port; empty turns statsd off.
    #[arg(long, value_name = "PORT")]
    pub statsd_port: Option<String>,
    /// Prefix of every metric name.
    #[arg(long, value_name = "PREFIX")]
    pub statsd_prefix: Option<String>,
    /// Also serve the Prometheus metrics (GET /metrics) on a listener of
    /// their own, IP:PORT or unix:/path, which serves nothing else; the
    /// local front always has them at /_pipe/metrics.
    #[arg(long, value_name = "ADDR|unix:PATH")]
    #[serde(serialize_with = "as_text")]
    pub metrics_listen: Option<HttpAddr>,
    /// Permissions of a unix-socket front, octal.
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// Group to give a unix-socket front, e.g. www-data for nginx.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Proxies whose X-Forwarded-For is believed in logs, comma-separated
    /// IPs; callers on a unix socket always are.
    #[arg(long, value_name = "IPS")]
    pub trusted_proxies: Option<String>,
}

/// Flags of `pipe-server serve`.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
#[command(mut_args = help::notes(Some(Side::Server), &common_flags()))]
pub struct ServerArgs {
    /// Address client nodes connect to, IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    #[serde(serialize_with = "as_text")]
    pub listen: Option<SocketAddr>,
    /// Most client connections held at once; past it, new ones are refused
    /// with a reason and retry with backoff.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Join a cluster of server nodes whose backplane is this NATS
    /// deployment, `nats://HOST:PORT` or `tls://HOST:PORT` (repeatable, or
    /// a comma-separated list): every node then reaches every client.
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<String>,
    /// The cluster's name: its NATS subjects live under `rp.<NAME>.`
    /// (default `restpipe`).
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// This node's id in the cluster, unique among its nodes (default: the
    /// host name).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// CA of the NATS servers' certificates (PEM), for mutual TLS to NATS.
    #[arg(long, value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// This node's certificate (PEM) presented to NATS.
    #[arg(long, value_name = "FILE")]
    pub nats_cert: Option<PathBuf>,
    /// The key (PEM) of `--nats-cert`.
    #[arg(long, value_name = "FILE")]
    pub nats_key: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// Flags of `pipe-client serve`.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
#[command(mut_args = help::notes(Some(Side::Client), &common_flags()))]
pub struct ClientArgs {
    /// A server node, HOST:PORT. Repeat the flag (or separate with commas)
    /// for several: the client starts at a random one and, when an attempt
    /// fails or the connection is lost, moves on to the next.
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server: Vec<String>,
    /// Name every server's certificate must carry, when it differs from
    /// HOST.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// HTTP proxy to reach the servers through,
    /// http://[USER:PASSWORD@]HOST:PORT: the pipe opens with CONNECT and its
    /// TLS runs end to end through the proxy. Without it, HTTPS_PROXY (then
    /// ALL_PROXY) is used; `direct` ignores them. NO_PROXY exempts servers
    /// either way.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<SecretArg>,
    /// Local IP address to connect from (to the servers, or to the proxy),
    /// on a host with several: the socket is bound to it before it
    /// connects. Only servers of its family (IPv4 or IPv6) are dialled.
    #[arg(long, value_name = "ADDR")]
    #[serde(serialize_with = "as_text")]
    pub source_address: Option<IpAddr>,
    /// First reconnect delay envelope, in seconds; each delay is drawn
    /// uniformly below its envelope (full jitter).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub reconnect_min: Option<Duration>,
    /// Largest reconnect delay envelope, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub reconnect_max: Option<Duration>,
    /// A connection lasting this many seconds resets the backoff.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    #[serde(serialize_with = "as_text")]
    pub reconnect_stable_after: Option<Duration>,
    #[command(flatten)]
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// A flag's value that may hold a password (`--proxy`): taken as given,
/// for the configuration to parse with messages that hide it (clap's own
/// would quote it), and never shown by `Debug`.
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct SecretArg(String);

impl SecretArg {
    /// `text`, as if given on the command line.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

impl FromStr for SecretArg {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretArg(..)")
    }
}

/// Arguments of `set-identity` (both nodes).
#[derive(Debug, Clone, clap::Args)]
#[command(mut_args = help::notes(None, &common_flags()))]
pub struct SetIdentityArgs {
    /// The node's private key (PEM).
    pub key: PathBuf,
    /// The node's certificate (PEM), from `certs-tool issue --server` for a
    /// server node or `--client` for a client node.
    pub crt: PathBuf,
    /// The CA certificate that signed both nodes' certificates (PEM).
    pub ca: PathBuf,
    /// Where to install the three files.
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

/// The flags of [`CommonArgs`], for `--help` to tell which keys have none.
fn common_flags() -> clap::Command {
    <CommonArgs as clap::Args>::augment_args(clap::Command::new("common"))
}

/// A switch not given: no value, so the lower layers decide.
fn is_off(on: &bool) -> bool {
    !on
}
