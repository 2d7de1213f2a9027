//! The built-in defaults: the lowest layer. A launch profile changes a few
//! of them (the front's socket, logs, socket permissions); the rest are the
//! library's own defaults, named where they are used.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::error::ConfigError;
use super::keys::{ClientOwn, RawCommon, ServerOwn};
use super::layer::{DEFAULTS, Layer};
use super::value::{HostPort, Mode, Parsed};
use super::{LogFormat, Profile};
use crate::front::{HttpAddr, SocketOptions};
use crate::node::BackoffSettings;
use crate::node::NodeSettings;
use crate::wire::Side;

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

/// The server node's local front without a profile: loopback only, so
/// nothing off the machine can send through the pipe.
const SERVER_HTTP_PORT: u16 = 8080;
/// The client node's, on the next port so both fit on one machine.
const CLIENT_HTTP_PORT: u16 = 8081;
/// In the prod profile, the server node's front is the unix socket nginx/'s
/// `rpserver.local` site proxies to, in the runtime directory systemd makes
/// for the unit (`RuntimeDirectory=restpipe`): no other local user can
/// create a path there, as anyone could in `/tmp` while the node restarts.
const PROD_SERVER_SOCKET: &str = "/run/restpipe/rpserver.sock";
/// ... and the client node's, for `rpclient.local`.
const PROD_CLIENT_SOCKET: &str = "/run/restpipe/rpclient.sock";
/// The dev profile keeps the original's `/tmp` sockets, so a development
/// machine needs no runtime directory; it alone may bind in a directory
/// others can write (`SocketOptions::shared_directory`).
const DEV_SERVER_SOCKET: &str = "/tmp/rpserver.sock";
/// ... and the client node's.
const DEV_CLIENT_SOCKET: &str = "/tmp/rpclient.sock";
/// In the dev profile anyone on the machine may call the socket, as the
/// original's dev script allowed; otherwise only the web server's group.
const DEV_SOCKET_MODE: u32 = 0o666;

/// The defaults of a node on `side` under `profile`, as the lowest layer.
pub(super) fn layer(side: Side, profile: Option<Profile>) -> Result<Layer, ConfigError> {
    let own = match side {
        Side::Server => Layer::serialized(DEFAULTS, &server())?,
        Side::Client => Layer::serialized(DEFAULTS, &client())?,
    };
    let mut layer = Layer::serialized(DEFAULTS, &common(side, profile))?;
    layer.absorb(own);
    Ok(layer)
}

/// Where the prod profile keeps a server node's job store (the units make
/// `/var/lib/restpipe/state` writable: `StateDirectory=`).
pub(super) const PROD_SERVER_STATE_DIR: &str = "/var/lib/restpipe/state/server";
/// Where the prod profile keeps a client node's job store.
pub(super) const PROD_CLIENT_STATE_DIR: &str = "/var/lib/restpipe/state/client";

/// Where a node of `side` serves its local front when nothing says
/// otherwise, by profile.
pub fn default_http(side: Side, profile: Option<Profile>) -> HttpAddr {
    match (profile, side) {
        (Some(Profile::Dev), Side::Server) => HttpAddr::Unix(PathBuf::from(DEV_SERVER_SOCKET)),
        (Some(Profile::Dev), Side::Client) => HttpAddr::Unix(PathBuf::from(DEV_CLIENT_SOCKET)),
        (Some(Profile::Prod), Side::Server) => HttpAddr::Unix(PathBuf::from(PROD_SERVER_SOCKET)),
        (Some(Profile::Prod), Side::Client) => HttpAddr::Unix(PathBuf::from(PROD_CLIENT_SOCKET)),
        (None, Side::Server) => {
            HttpAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, SERVER_HTTP_PORT)))
        }
        (None, Side::Client) => {
            HttpAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, CLIENT_HTTP_PORT)))
        }
    }
}

/// The shared keys' defaults. Keys left `None` have none: the profile, the
/// identity's file names (they follow the role), the revocation list, the
/// policy, the API token file, handler directory, forwards, event command,
/// socket group and metrics listener.
fn common(side: Side, profile: Option<Profile>) -> RawCommon {
    let http = default_http(side, profile);
    let log_format = match profile {
        Some(Profile::Prod) => LogFormat::Json,
        _ => LogFormat::Human,
    };
    let socket = SocketOptions::default();
    let socket_mode = match profile {
        Some(Profile::Dev) => DEV_SOCKET_MODE,
        _ => socket.mode,
    };
    let node = NodeSettings::default();
    RawCommon {
        http: Some(Parsed(http)),
        cert_dir: Some(Parsed(PathBuf::from(DEFAULT_CERT_DIR))),
        watch_certs: Some(Parsed(false)),
        debug: Some(Parsed(profile == Some(Profile::Dev))),
        log_format: Some(Parsed(log_format)),
        request_timeout: Some(Parsed(node.request_timeout)),
        peer_wait: Some(Parsed(node.peer_wait)),
        ping_interval: Some(Parsed(node.connection.ping_interval)),
        dead_after: Some(Parsed(node.connection.dead_after)),
        max_frame_bytes: Some(Parsed(node.connection.max_frame_bytes)),
        max_body_bytes: Some(Parsed(node.max_body_bytes)),
        max_concurrent_handlers: Some(Parsed(node.connection.max_concurrent_handlers)),
        max_running_handlers: Some(Parsed(node.max_running_handlers)),
        max_exec_processes: Some(Parsed(node.max_exec_processes)),
        max_upstream_connections: Some(Parsed(node.max_upstream_connections)),
        max_body_memory: Some(Parsed(node.max_body_memory)),
        max_body_memory_per_peer: Some(Parsed(node.connection.max_body_memory_per_peer)),
        max_request_timeout: Some(Parsed(node.connection.max_request_timeout)),
        max_http_connections: Some(Parsed(node.max_http_connections)),
        http_write_stall: Some(Parsed(node.http_write_stall)),
        drain_grace: Some(Parsed(node.drain_grace)),
        statsd_host: Some(Parsed(DEFAULT_STATSD_HOST.to_owned())),
        statsd_port: Some(Parsed(DEFAULT_STATSD_PORT.to_string())),
        statsd_prefix: Some(Parsed(String::new())),
        socket_mode: Some(Parsed(Mode(socket_mode))),
        trusted_proxies: Some(Parsed(socket.trusted_proxies)),
        state_dir: (profile == Some(Profile::Prod)).then(|| {
            Parsed(PathBuf::from(match side {
                Side::Server => PROD_SERVER_STATE_DIR,
                Side::Client => PROD_CLIENT_STATE_DIR,
            }))
        }),
        job_expiry: Some(Parsed(node.job_expiry)),
        job_retention: Some(Parsed(node.job_retention)),
        max_queued_jobs: Some(Parsed(
            usize::try_from(node.max_queued_jobs).unwrap_or(usize::MAX),
        )),
        ..RawCommon::default()
    }
}

/// A server node's own defaults.
fn server() -> ServerOwn {
    ServerOwn {
        listen: Some(Parsed(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            DEFAULT_PIPE_PORT,
        ))),
        max_connections: Some(Parsed(NodeSettings::default().max_connections)),
        ..ServerOwn::default()
    }
}

/// A client node's own defaults.
fn client() -> ClientOwn {
    let backoff = BackoffSettings::default();
    ClientOwn {
        server: Some(Parsed(vec![HostPort {
            host: DEFAULT_TARGET_HOST.to_owned(),
            port: DEFAULT_PIPE_PORT,
        }])),
        reconnect_min: Some(Parsed(backoff.min_delay)),
        reconnect_max: Some(Parsed(backoff.max_delay)),
        reconnect_stable_after: Some(Parsed(backoff.stable_after)),
        ..ClientOwn::default()
    }
}
