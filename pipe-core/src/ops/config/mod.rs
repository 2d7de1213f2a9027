//! Configuration of both nodes, parsed once into validated types.
//!
//! Every option has up to four layers, merged by figment, and the first one
//! present wins: command-line flag > environment variable > TOML file
//! (`--config`) > default (which a launch profile may change). The original
//! project's environment names keep working. Unknown keys in the file are an
//! error that names the key and the file; a bad value names where it came
//! from.
//!
//! The pieces, in the order a value meets them:
//!
//! - `keys`: the one table of keys, their types and environment names, from
//!   which the raw serde structs (`deny_unknown_fields`) are declared;
//! - `layers`: figment providers for the defaults (`defaults`), the file,
//!   each environment variable and the flags (`args`, serialized); the
//!   original's split address variables are the one hand-written layer
//!   (`legacy`);
//! - `value`: how a value of any layer is parsed (`parse`);
//! - `validate`: the one pass from the raw structs to [`ServerConfig`] and
//!   [`ClientConfig`] (with `cluster`, and `proxy`, which also reads the
//!   conventional proxy variables).
//!
//! The environment is passed in as a lookup function, so resolution is a
//! pure function of (flags, environment, file) and tests need not touch the
//! process environment. That is also why the flags do not use clap's `env`
//! attribute: clap reads the process environment when the command is built,
//! so a test's parse would see the developer's `DEBUG`; a value clap took
//! from the environment would be reported as `--flag` (or, for a switch,
//! silently read as on) instead of `NAME="value"`; and one shared flag has a
//! different variable on each node (`RP_SERVER_HTTP`, `RP_CLIENT_HTTP`).
//! Instead `help` writes each flag's `[env: ...]` and `[default: ...]` into
//! `--help` from the same table and defaults.

mod args;
mod cluster;
mod defaults;
mod error;
mod help;
mod keys;
mod layer;
mod layers;
mod legacy;
mod parse;
mod proxy;
mod validate;
mod value;

use std::net::SocketAddr;

use crate::front::{HttpAddr, SocketOptions};
use crate::link::CertFiles;
use crate::node::BackoffSettings;
use crate::node::NodeSettings;
use crate::node::ServerTarget;
use crate::wire::Side;

pub use args::{ClientArgs, CommonArgs, SecretArg, ServerArgs, SetIdentityArgs};
pub use defaults::{
    DEFAULT_BIND_INTERFACE, DEFAULT_CERT_DIR, DEFAULT_PIPE_PORT, DEFAULT_STATSD_HOST,
    DEFAULT_STATSD_PORT, DEFAULT_TARGET_HOST, default_http,
};
pub use error::ConfigError;
pub use parse::{parse_host_port, parse_seconds};

use keys::{RawClient, RawServer};
use layers::Layers;

/// How the environment is read: a variable's value, if set.
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A launch profile, after the original's gunicorn dev and prod scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Unix socket in /tmp (mode 0666, the one profile allowed a directory
    /// others can write), debug logs in human format.
    Dev,
    /// Unix socket in /run/restpipe (mode 0660, for the web server's group;
    /// never in a directory others can write), JSON
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
    /// A listener of its own for the Prometheus metrics, if any.
    pub metrics_listen: Option<HttpAddr>,
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
    /// The server nodes to dial, and the name their certificates carry.
    pub target: ServerTarget,
    /// Reconnect backoff.
    pub backoff: BackoffSettings,
    /// The rest.
    pub common: CommonConfig,
}

impl ServerConfig {
    /// Resolves a server node's configuration from its flags, an environment
    /// lookup, and the file named by `--config`.
    pub fn resolve(
        args: &ServerArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let layers =
            Layers::gather::<RawServer, _>(args, args.common.config.as_deref(), env, Side::Server)?;
        let origins = layers.provenance();
        let (common, own) = origins.extract::<RawServer>()?.split();
        validate::server(common, own, &origins)
    }
}

impl ClientConfig {
    /// Resolves a client node's configuration from its flags, an environment
    /// lookup, and the file named by `--config`.
    pub fn resolve(
        args: &ClientArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let layers =
            Layers::gather::<RawClient, _>(args, args.common.config.as_deref(), env, Side::Client)?;
        let origins = layers.provenance();
        let (common, own) = origins.extract::<RawClient>()?.split();
        validate::client(common, own, &origins, env)
    }
}

/// The process environment, for [`ServerConfig::resolve`] and
/// [`ClientConfig::resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
