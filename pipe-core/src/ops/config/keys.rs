//! The one table of configuration keys: each key's name (the file key, the
//! flag's id and the raw struct's field), its type, and the environment
//! variables that set it. The raw structs that figment fills are declared
//! from this table, so a key is written down once.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::value::{FileName, HostPort, Mode, Parsed, Pieces, ProxyChoice};
use super::{LogFormat, Profile};
use crate::front::HttpAddr;
use crate::wire::Side;

/// Which environment variables set a key. An empty variable counts as
/// unset, except where the key says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Env {
    /// One name, whichever node reads it.
    Named(&'static str),
    /// One name per node kind: the server's, then the client's.
    PerSide(&'static str, &'static str),
    /// Like `Named`, but an empty value is a value (statsd's "off").
    KeepsEmpty(&'static str),
    /// The original's split address: a host (or interface) variable and a
    /// port variable, each a list of names tried in order. See `legacy`
    /// (the client's host variable may list several servers).
    Split {
        /// Names of the host part.
        host: &'static [&'static str],
        /// Names of the port part.
        port: &'static [&'static str],
    },
}

impl Env {
    /// The one variable that sets the key on `side`, if one does.
    pub(super) fn name(self, side: Side) -> Option<&'static str> {
        match (self, side) {
            (Self::Named(name) | Self::KeepsEmpty(name), _) => Some(name),
            (Self::PerSide(server, _), Side::Server) => Some(server),
            (Self::PerSide(_, client), Side::Client) => Some(client),
            (Self::Split { .. }, _) => None,
        }
    }

    /// Whether an empty value counts as set.
    pub(super) fn keeps_empty(self) -> bool {
        matches!(self, Self::KeepsEmpty(_))
    }
}

/// A configuration key and its environment variables.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key {
    /// The file key, the flag's id, the raw field's name.
    pub(super) name: &'static str,
    /// The environment variables that set it.
    pub(super) env: Env,
}

/// Declares, from one table of keys: the raw structs of both node kinds
/// (every key optional, since any layer may leave it out, and read through
/// [`Parsed`]), the shared and own parts they split into, and each kind's
/// list of [`Key`]s. Fields are not repeated by hand anywhere else.
macro_rules! raw_config {
    (
        common { $($(#[$c_doc:meta])* $c_key:ident: $c_ty:ty => $c_env:expr,)* }
        server { $($(#[$s_doc:meta])* $s_key:ident: $s_ty:ty => $s_env:expr,)* }
        client { $($(#[$k_doc:meta])* $k_key:ident: $k_ty:ty => $k_env:expr,)* }
    ) => {
        /// The keys both node kinds share.
        #[derive(Debug, Clone, Default, Serialize)]
        pub(super) struct RawCommon {
            $($(#[$c_doc])* pub(super) $c_key: Option<Parsed<$c_ty>>,)*
        }

        /// A server node's own keys.
        #[derive(Debug, Clone, Default, Serialize)]
        pub(super) struct ServerOwn {
            $($(#[$s_doc])* pub(super) $s_key: Option<Parsed<$s_ty>>,)*
        }

        /// A client node's own keys.
        #[derive(Debug, Clone, Default, Serialize)]
        pub(super) struct ClientOwn {
            $($(#[$k_doc])* pub(super) $k_key: Option<Parsed<$k_ty>>,)*
        }

        /// Everything a server node reads: the schema of its file.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawServer {
            $($(#[$c_doc])* $c_key: Option<Parsed<$c_ty>>,)*
            $($(#[$s_doc])* $s_key: Option<Parsed<$s_ty>>,)*
        }

        impl RawServer {
            /// The shared keys and the server's own.
            pub(super) fn split(self) -> (RawCommon, ServerOwn) {
                (
                    RawCommon { $($c_key: self.$c_key,)* },
                    ServerOwn { $($s_key: self.$s_key,)* },
                )
            }
        }

        /// Everything a client node reads: the schema of its file.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawClient {
            $($(#[$c_doc])* $c_key: Option<Parsed<$c_ty>>,)*
            $($(#[$k_doc])* $k_key: Option<Parsed<$k_ty>>,)*
        }

        impl RawClient {
            /// The shared keys and the client's own.
            pub(super) fn split(self) -> (RawCommon, ClientOwn) {
                (
                    RawCommon { $($c_key: self.$c_key,)* },
                    ClientOwn { $($k_key: self.$k_key,)* },
                )
            }
        }

        /// The keys both node kinds share.
        pub(super) const COMMON_KEYS: &[Key] = &[
            $(Key { name: stringify!($c_key), env: $c_env },)*
        ];

        /// A server node's keys.
        pub(super) const SERVER_KEYS: &[Key] = &[
            $(Key { name: stringify!($c_key), env: $c_env },)*
            $(Key { name: stringify!($s_key), env: $s_env },)*
        ];

        /// A client node's keys.
        pub(super) const CLIENT_KEYS: &[Key] = &[
            $(Key { name: stringify!($c_key), env: $c_env },)*
            $(Key { name: stringify!($k_key), env: $k_env },)*
        ];
    };
}

raw_config! {
    common {
        /// The local HTTP front.
        http: HttpAddr => Env::PerSide("RP_SERVER_HTTP", "RP_CLIENT_HTTP"),
        /// Directory of the identity files.
        cert_dir: PathBuf => Env::PerSide("RP_SERVER_CERT_PATH", "RP_CLIENT_CERT_PATH"),
        /// The key's file name in the cert dir.
        key_filename: FileName => Env::PerSide("RP_SERVER_KEY_FILENAME", "RP_CLIENT_KEY_FILENAME"),
        /// The certificate's file name in the cert dir.
        crt_filename: FileName => Env::PerSide("RP_SERVER_CRT_FILENAME", "RP_CLIENT_CRT_FILENAME"),
        /// The CA's file name in the cert dir.
        ca_crt_filename: FileName => Env::Named("RP_CA_CRT_FILENAME"),
        /// The CA's certificate revocation list.
        crl: PathBuf => Env::Named("RP_CRL"),
        /// Reload the identity when its files change.
        watch_certs: bool => Env::Named("RP_WATCH_CERTS"),
        /// The access policy file.
        policy: PathBuf => Env::Named("RP_POLICY"),
        /// The local front's API token file.
        api_tokens: PathBuf => Env::Named("RP_API_TOKENS"),
        /// Where the job store lives.
        state_dir: PathBuf => Env::Named("RP_STATE_DIR"),
        /// How long a job's delivery is attempted.
        job_expiry: Duration => Env::Named("RP_JOB_EXPIRY"),
        /// How long ended jobs are kept.
        job_retention: Duration => Env::Named("RP_JOB_RETENTION"),
        /// Jobs one peer's queue holds.
        max_queued_jobs: usize => Env::Named("RP_MAX_QUEUED_JOBS"),
        /// Directory of executable handlers.
        handler_dir: PathBuf => Env::Named("RP_HANDLER_DIR"),
        /// Forwards, `PREFIX=URL`.
        forwards: Pieces => Env::Named("RP_FORWARDS"),
        /// The launch profile.
        profile: Profile => Env::Named("RP_PROFILE"),
        /// Debug logging.
        debug: bool => Env::Named("DEBUG"),
        /// Log format.
        log_format: LogFormat => Env::Named("RP_LOG_FORMAT"),
        /// Default deadline of a request.
        request_timeout: Duration => Env::Named("RP_REQUEST_TIMEOUT"),
        /// Wait for a missing peer.
        peer_wait: Duration => Env::Named("RP_PEER_WAIT"),
        /// Heartbeat after this much silence.
        ping_interval: Duration => Env::Named("RP_PING_INTERVAL"),
        /// Drop a peer silent this long.
        dead_after: Duration => Env::Named("RP_DEAD_AFTER"),
        /// Largest frame.
        max_frame_bytes: usize => Env::Named("RP_MAX_FRAME_BYTES"),
        /// Largest request body.
        max_body_bytes: usize => Env::Named("RP_MAX_BODY_BYTES"),
        /// Handlers at once per connection.
        max_concurrent_handlers: usize => Env::Named("RP_MAX_CONCURRENT_HANDLERS"),
        /// Handlers at once for all peers together.
        max_running_handlers: usize => Env::Named("RP_MAX_RUNNING_HANDLERS"),
        /// Executable handlers at once.
        max_exec_processes: usize => Env::Named("RP_MAX_EXEC_PROCESSES"),
        /// Requests to forwards' upstreams at once.
        max_upstream_connections: usize => Env::Named("RP_MAX_UPSTREAM_CONNECTIONS"),
        /// Bytes of peers' bodies held in memory, all peers together.
        max_body_memory: usize => Env::Named("RP_MAX_BODY_MEMORY"),
        /// Bytes of one peer's bodies held in memory.
        max_body_memory_per_peer: usize => Env::Named("RP_MAX_BODY_MEMORY_PER_PEER"),
        /// Longest deadline granted to a peer's event.
        max_request_timeout: Duration => Env::Named("RP_MAX_REQUEST_TIMEOUT"),
        /// Local HTTP connections open at once.
        max_http_connections: usize => Env::Named("RP_MAX_HTTP_CONNECTIONS"),
        /// Time a local caller may leave a response unread.
        http_write_stall: Duration => Env::Named("RP_HTTP_WRITE_STALL"),
        /// Time given to requests in flight on shutdown.
        drain_grace: Duration => Env::Named("RP_DRAIN_GRACE"),
        /// Command run on connection events.
        on_event: String => Env::Named("RP_ON_EVENT"),
        /// statsd host; empty turns statsd off.
        statsd_host: String => Env::KeepsEmpty("RP_STATSD_HOST"),
        /// statsd port; empty turns statsd off.
        statsd_port: String => Env::KeepsEmpty("RP_STATSD_PORT"),
        /// Prefix of every metric name.
        statsd_prefix: String => Env::KeepsEmpty("RP_STATSD_PREFIX"),
        /// A listener of its own for the Prometheus metrics.
        metrics_listen: HttpAddr => Env::PerSide("RP_SERVER_METRICS_LISTEN", "RP_CLIENT_METRICS_LISTEN"),
        /// Permissions of a unix-socket front.
        socket_mode: Mode => Env::Named("RP_SOCKET_MODE"),
        /// Group of a unix-socket front.
        socket_group: String => Env::Named("RP_SOCKET_GROUP"),
        /// Proxies whose `X-Forwarded-For` is believed.
        trusted_proxies: Vec<IpAddr> => Env::Named("RP_TRUSTED_PROXIES"),
    }
    server {
        /// Where client nodes connect.
        listen: SocketAddr => Env::Split {
            host: &["RP_SERVER_BIND_INTERFACE", "BIND_IP"],
            port: &["RP_SERVER_BIND_PORT", "BIND_PORT"],
        },
        /// Most client connections at once.
        max_connections: usize => Env::Named("RP_MAX_CONNECTIONS"),
        /// NATS servers of the cluster's backplane.
        cluster: Pieces => Env::Named("RP_CLUSTER"),
        /// The cluster's name (its subjects' namespace).
        cluster_name: String => Env::Named("RP_CLUSTER_NAME"),
        /// This node's id in the cluster.
        node_id: String => Env::Named("RP_NODE_ID"),
        /// The NATS servers' CA.
        nats_ca: PathBuf => Env::Named("RP_NATS_CA"),
        /// This node's certificate for NATS.
        nats_cert: PathBuf => Env::Named("RP_NATS_CERT"),
        /// Its key.
        nats_key: PathBuf => Env::Named("RP_NATS_KEY"),
    }
    client {
        /// The server nodes to dial (one at least).
        server: Vec<HostPort> => Env::Split {
            host: &["RP_CLIENT_TARGET_HOSTNAME"],
            port: &["RP_CLIENT_TARGET_PORT"],
        },
        /// Name the server's certificate must carry.
        server_name: String => Env::Named("RP_CLIENT_TARGET_SERVER_NAME"),
        /// The HTTP proxy to the servers, or `direct` (without it, the
        /// conventional `HTTPS_PROXY` / `ALL_PROXY`: see `proxy`).
        proxy: ProxyChoice => Env::Named("RP_PROXY"),
        /// The local address connections to the servers leave from.
        source_address: IpAddr => Env::Named("RP_SOURCE_ADDRESS"),
        /// First reconnect delay envelope.
        reconnect_min: Duration => Env::Named("RP_RECONNECT_MIN"),
        /// Largest reconnect delay envelope.
        reconnect_max: Duration => Env::Named("RP_RECONNECT_MAX"),
        /// Connection age that resets the backoff.
        reconnect_stable_after: Duration => Env::Named("RP_RECONNECT_STABLE_AFTER"),
    }
}

/// The keys of a node on `side`.
pub(super) fn keys(side: Side) -> &'static [Key] {
    match side {
        Side::Server => SERVER_KEYS,
        Side::Client => CLIENT_KEYS,
    }
}

#[cfg(test)]
mod tests {
    use clap::Args;

    use super::*;
    use crate::ops::config::{ClientArgs, ServerArgs};

    /// Every flag of `serve` sets the key of its name, and every key of a
    /// node's own has a flag; of the shared keys only the identity's file
    /// names have none.
    #[test]
    fn flags_and_keys_match() {
        for (side, command) in [
            (
                Side::Server,
                ServerArgs::augment_args(clap::Command::new("serve")),
            ),
            (
                Side::Client,
                ClientArgs::augment_args(clap::Command::new("serve")),
            ),
        ] {
            let flags: Vec<&str> = command
                .get_arguments()
                .map(|arg| arg.get_id().as_str())
                .filter(|id| *id != "config")
                .collect();
            let keys: Vec<&str> = keys(side).iter().map(|key| key.name).collect();
            for flag in &flags {
                assert!(keys.contains(flag), "--{flag} is no key of {side:?}");
            }
            let without_flags: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|key| !flags.contains(key))
                .collect();
            assert_eq!(
                without_flags,
                ["key_filename", "crt_filename", "ca_crt_filename"],
                "{side:?}"
            );
        }
    }
}
