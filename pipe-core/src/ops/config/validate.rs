//! The one validation pass: the merged raw values into the validated types.
//! Each value was parsed when figment extracted it; what is left here are
//! the rules that span keys (a frame that holds an inline body, a dead-peer
//! timeout longer than the heartbeat, a backoff range), statsd's "empty
//! means off", how forwards are split, a client's servers each once, and
//! the address it connects from.

use std::net::IpAddr;

use super::error::ConfigError;
use super::keys::{ClientOwn, RawCommon, ServerOwn};
use super::layer::Provenance;
use super::parse::{parse_forward, parse_parsed};
use super::value::{FileName, HostPort, Parsed, Pieces};
use super::{ClientConfig, CommonConfig, Logging, Lookup, Profile, ServerConfig};
use crate::front::SocketOptions;
use crate::link::CertFiles;
use crate::link::ConnectionSettings;
use crate::link::Role;
use crate::node::BackoffSettings;
use crate::node::StatsdSettings;
use crate::node::{FRAME_OVERHEAD_BYTES, NodeSettings};
use crate::node::{ServerAddress, ServerTarget};
use crate::wire::Side;
use crate::wire::body::INLINE_LIMIT;

/// Takes the value of a key that has a built-in default, so is always set
/// once the layers are merged (an error only if the defaults lost it).
macro_rules! defaulted {
    ($raw:ident . $key:ident) => {
        $raw.$key
            .take()
            .map(|Parsed(value)| value)
            .ok_or_else(|| ConfigError::bad_value(stringify!($key), "has no built-in default"))
    };
}

/// Takes the value of a key without a default.
macro_rules! optional {
    ($raw:ident . $key:ident) => {
        $raw.$key.take().map(|Parsed(value)| value)
    };
}

/// A server node's configuration.
pub(super) fn server(
    mut common: RawCommon,
    mut own: ServerOwn,
    origins: &Provenance<'_>,
) -> Result<ServerConfig, ConfigError> {
    let listen = defaulted!(own.listen)?;
    let mut common = self::common(&mut common, Side::Server, origins)?;
    common.node.max_connections = defaulted!(own.max_connections)?;
    common.node.cluster = super::cluster::settings(&mut own, origins)?;
    Ok(ServerConfig { listen, common })
}

/// A client node's configuration; `env` for the conventional proxy
/// variables.
pub(super) fn client(
    mut common: RawCommon,
    mut own: ClientOwn,
    origins: &Provenance<'_>,
    env: Lookup<'_>,
) -> Result<ClientConfig, ConfigError> {
    let mut target = target(defaulted!(own.server)?, optional!(own.server_name), origins)?;
    target.proxy = super::proxy::proxies(optional!(own.proxy), origins, env)?;
    target.source_address = source_address(optional!(own.source_address), origins)?;
    let backoff = BackoffSettings {
        min_delay: defaulted!(own.reconnect_min)?,
        max_delay: defaulted!(own.reconnect_max)?,
        stable_after: defaulted!(own.reconnect_stable_after)?,
    };
    if backoff.max_delay < backoff.min_delay {
        return Err(ConfigError::bad_value(
            "reconnect_max",
            format!(
                "{:?} is shorter than reconnect_min {:?}",
                backoff.max_delay, backoff.min_delay
            ),
        ));
    }
    Ok(ClientConfig {
        target,
        backoff,
        common: self::common(&mut common, Side::Client, origins)?,
    })
}

/// The local address a client node connects from: one a socket can be
/// bound to, so not a multicast or broadcast address (the unspecified
/// address is the kernel's choice, as without the option).
fn source_address(
    address: Option<IpAddr>,
    origins: &Provenance<'_>,
) -> Result<Option<IpAddr>, ConfigError> {
    let broadcast = matches!(address, Some(IpAddr::V4(v4)) if v4.is_broadcast());
    match address {
        Some(address) if address.is_multicast() || broadcast => Err(ConfigError::bad_value(
            origins.source_name("source_address"),
            format!("{address} is not an address of this host a connection can leave from"),
        )),
        Some(address) if address.is_unspecified() => Ok(None),
        _ => Ok(address),
    }
}

/// The servers a client node dials, each once, in the order given.
fn target(
    servers: Vec<HostPort>,
    server_name: Option<String>,
    origins: &Provenance<'_>,
) -> Result<ServerTarget, ConfigError> {
    let mut unique: Vec<ServerAddress> = Vec::new();
    for HostPort { host, port } in servers {
        let server = ServerAddress { host, port };
        if !unique.contains(&server) {
            unique.push(server);
        }
    }
    let mut servers = unique.into_iter();
    let Some(ServerAddress { host, port }) = servers.next() else {
        return Err(ConfigError::bad_value(
            origins.source_name("server"),
            "names no server",
        ));
    };
    Ok(ServerTarget {
        others: servers.collect(),
        server_name,
        ..ServerTarget::single(host, port)
    })
}

/// What both nodes share.
fn common(
    raw: &mut RawCommon,
    side: Side,
    origins: &Provenance<'_>,
) -> Result<CommonConfig, ConfigError> {
    let profile = optional!(raw.profile);
    let http = defaulted!(raw.http)?;
    let metrics_listen = optional!(raw.metrics_listen);
    if metrics_listen.as_ref() == Some(&http) {
        return Err(ConfigError::bad_value(
            origins.source_name("metrics_listen"),
            format!("{http} is the local front's own address, which serves /_pipe/metrics already"),
        ));
    }
    let cert_files = cert_files(raw, side)?;
    let watch_certs = defaulted!(raw.watch_certs)?;
    let logging = Logging {
        debug: defaulted!(raw.debug)?,
        format: defaulted!(raw.log_format)?,
    };
    let node = node_settings(raw, origins)?;
    let socket = SocketOptions {
        mode: defaulted!(raw.socket_mode)?.0,
        group: optional!(raw.socket_group),
        trusted_proxies: defaulted!(raw.trusted_proxies)?,
        // Only the dev profile keeps its socket in /tmp (see defaults.rs).
        shared_directory: profile == Some(Profile::Dev),
    };
    Ok(CommonConfig {
        http,
        socket,
        metrics_listen,
        cert_files,
        watch_certs,
        profile,
        logging,
        node,
    })
}

/// The identity's files: the role's standard names in the cert dir, unless
/// a file name is given; and the revocation list, wherever it is.
fn cert_files(raw: &mut RawCommon, side: Side) -> Result<CertFiles, ConfigError> {
    let role = match side {
        Side::Server => Role::Server,
        Side::Client => Role::Client,
    };
    let cert_dir = defaulted!(raw.cert_dir)?;
    let mut files = CertFiles::in_dir(&cert_dir, role);
    if let Some(FileName(name)) = optional!(raw.key_filename) {
        files.key = cert_dir.join(name);
    }
    if let Some(FileName(name)) = optional!(raw.crt_filename) {
        files.cert = cert_dir.join(name);
    }
    if let Some(FileName(name)) = optional!(raw.ca_crt_filename) {
        files.ca = cert_dir.join(name);
    }
    files.crl = optional!(raw.crl);
    Ok(files)
}

/// Limits, deadlines, events and metrics.
fn node_settings(
    raw: &mut RawCommon,
    origins: &Provenance<'_>,
) -> Result<NodeSettings, ConfigError> {
    let max_frame_bytes = defaulted!(raw.max_frame_bytes)?;
    // A frame must hold the largest body that travels inline, plus headers.
    let smallest_frame = INLINE_LIMIT + FRAME_OVERHEAD_BYTES;
    if max_frame_bytes < smallest_frame || max_frame_bytes > u32::MAX as usize {
        return Err(ConfigError::bad_value(
            "max_frame_bytes",
            format!(
                "{max_frame_bytes} is outside {smallest_frame}..={}",
                u32::MAX
            ),
        ));
    }
    let ping_interval = defaulted!(raw.ping_interval)?;
    let dead_after = defaulted!(raw.dead_after)?;
    if dead_after <= ping_interval {
        return Err(ConfigError::bad_value(
            "dead_after",
            format!("{dead_after:?} must be longer than ping_interval {ping_interval:?}"),
        ));
    }
    let defaults = NodeSettings::default();
    Ok(NodeSettings {
        connection: ConnectionSettings {
            max_frame_bytes,
            max_concurrent_handlers: defaulted!(raw.max_concurrent_handlers)?,
            max_body_memory_per_peer: defaulted!(raw.max_body_memory_per_peer)?,
            max_request_timeout: defaulted!(raw.max_request_timeout)?,
            ping_interval,
            dead_after,
            ..defaults.connection.clone()
        },
        request_timeout: defaulted!(raw.request_timeout)?,
        peer_wait: defaulted!(raw.peer_wait)?,
        max_body_bytes: defaulted!(raw.max_body_bytes)?,
        max_body_memory: defaulted!(raw.max_body_memory)?,
        max_running_handlers: defaulted!(raw.max_running_handlers)?,
        max_exec_processes: defaulted!(raw.max_exec_processes)?,
        max_upstream_connections: defaulted!(raw.max_upstream_connections)?,
        // Both are positive once parsed: 0 is refused with a reason.
        max_http_connections: defaulted!(raw.max_http_connections)?,
        http_write_stall: defaulted!(raw.http_write_stall)?,
        drain_grace: defaulted!(raw.drain_grace)?,
        on_event: optional!(raw.on_event),
        statsd: statsd(raw, origins)?,
        policy: optional!(raw.policy),
        api_tokens: optional!(raw.api_tokens),
        state_dir: optional!(raw.state_dir),
        job_expiry: defaulted!(raw.job_expiry)?,
        job_retention: defaulted!(raw.job_retention)?,
        max_queued_jobs: defaulted!(raw.max_queued_jobs)? as u64,
        handler_dir: optional!(raw.handler_dir),
        forwards: forwards(optional!(raw.forwards), origins)?,
        ..defaults
    })
}

/// statsd is on by default (localhost:8125, as the original's), and off
/// when the host or the port is empty in whichever layer wins.
fn statsd(
    raw: &mut RawCommon,
    origins: &Provenance<'_>,
) -> Result<Option<StatsdSettings>, ConfigError> {
    let host = defaulted!(raw.statsd_host)?;
    let port = defaulted!(raw.statsd_port)?;
    let prefix = defaulted!(raw.statsd_prefix)?;
    if host.trim().is_empty() || port.trim().is_empty() {
        return Ok(None);
    }
    let port = parse_parsed::<u16>(port.trim())
        .map_err(|message| ConfigError::bad_value(origins.source_name("statsd_port"), message))?;
    Ok(Some(StatsdSettings {
        host: host.trim().to_owned(),
        port,
        prefix: prefix.trim_end_matches('.').to_owned(),
    }))
}

/// Forwards, `PREFIX=URL`: each `--forward` is one; an environment or file
/// value is a comma-separated list (a file's list items too), as before.
fn forwards(
    pieces: Option<Pieces>,
    origins: &Provenance<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    pieces
        .map(|pieces| pieces.items(origins.is_flag("forwards")))
        .unwrap_or_default()
        .iter()
        .map(|forward| parse_forward(forward))
        .collect::<Result<_, _>>()
        .map_err(|message| ConfigError::bad_value(origins.source_name("forwards"), message))
}
