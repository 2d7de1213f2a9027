//! The original project's split address variables: the one hand-written
//! part of the layering. Instead of one `HOST:PORT` value, the original read
//! a host (or interface) variable and a port variable
//! (`RP_SERVER_BIND_INTERFACE` or `BIND_IP` with `RP_SERVER_BIND_PORT` or
//! `BIND_PORT`; `RP_CLIENT_TARGET_HOSTNAME` with `RP_CLIENT_TARGET_PORT`).
//! A part that is set replaces that part of the address from the file (or
//! the default), and the result is the environment's value for the key, so
//! a flag still wins over it.
//!
//! A client node may know several servers, so its host variable may list
//! them, comma-separated, each a host or a `HOST:PORT` with a port of its
//! own (`a.example.com,b.example.com` or `a.example.com:1234,b:4321`). A host
//! without a port takes the port variable's, or else the first port of the
//! file (or the default); the port variable alone sets the port of every
//! server of the file.

use std::net::{IpAddr, SocketAddr};

use super::Lookup;
use super::defaults::DEFAULT_PIPE_PORT;
use super::error::ConfigError;
use super::keys::{Env, keys};
use super::layer::{Layer, Provenance};
use super::parse::{parse_hosts, parse_parsed};
use super::value::{HostPort, Parsed, Setting};
use crate::wire::Side;

/// The environment's value for the split address of a node on `side`, if
/// either part is set and `flags` do not set the address; `below` holds the
/// file and the defaults. Like any layer a flag hides, the variables are
/// then not read at all.
pub(super) fn address(
    side: Side,
    env: Lookup<'_>,
    below: &Provenance<'_>,
    flags: &Layer,
) -> Result<Option<Layer>, ConfigError> {
    let Some((key, host_names, port_names)) = keys(side).iter().find_map(|key| match key.env {
        Env::Split { host, port } => Some((key.name, host, port)),
        _ => None,
    }) else {
        return Ok(None);
    };
    if flags.sets(key) {
        return Ok(None);
    }
    let host = first_set(env, host_names);
    let port = first_set(env, port_names);
    if host.is_none() && port.is_none() {
        return Ok(None);
    }
    let names: Vec<&str> = host.iter().chain(&port).map(|(name, _)| *name).collect();
    let text = match side {
        Side::Server => {
            let Parsed(below) = below.extract_key::<Parsed<SocketAddr>>(key)?;
            let ip = part(host, parse_parsed::<IpAddr>)?.unwrap_or(below.ip());
            let port = part(port, parse_parsed::<u16>)?.unwrap_or(below.port());
            SocketAddr::new(ip, port).to_text()
        }
        Side::Client => client_servers(host, port, below, key)?.to_text(),
    };
    Ok(Some(Layer::variable(key, &names.join(" and "), text)))
}

/// A client node's servers from the host and port variables, and `below`
/// (the file and the defaults) for what they leave out.
fn client_servers(
    host: Option<(&str, String)>,
    port: Option<(&str, String)>,
    below: &Provenance<'_>,
    key: &str,
) -> Result<Vec<HostPort>, ConfigError> {
    let Parsed(below) = below.extract_key::<Parsed<Vec<HostPort>>>(key)?;
    let port = part(port, parse_parsed::<u16>)?;
    let fallback = port
        .or(below.first().map(|server| server.port))
        .unwrap_or(DEFAULT_PIPE_PORT);
    let servers = match part(host, |hosts| parse_hosts(hosts, fallback))? {
        Some(hosts) => hosts
            .into_iter()
            .map(|(host, port)| HostPort { host, port })
            .collect(),
        None => below
            .into_iter()
            .map(|server| HostPort {
                port: port.unwrap_or(server.port),
                ..server
            })
            .collect(),
    };
    Ok(servers)
}

/// The first of `names` that is set; an empty value counts as unset.
fn first_set(env: Lookup<'_>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| {
        env(name)
            .filter(|value| !value.is_empty())
            .map(|v| (*name, v))
    })
}

/// One part, parsed; an error names the variable and its value.
fn part<T>(
    variable: Option<(&str, String)>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    variable
        .map(|(name, value)| {
            parse(&value)
                .map_err(|message| ConfigError::bad_value(format!("{name}={value:?}"), message))
        })
        .transpose()
}
