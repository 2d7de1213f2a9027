//! The original project's split address variables: the one hand-written
//! part of the layering. Instead of one `HOST:PORT` value, the original read
//! a host (or interface) variable and a port variable
//! (`RP_SERVER_BIND_INTERFACE` or `BIND_IP` with `RP_SERVER_BIND_PORT` or
//! `BIND_PORT`; `RP_CLIENT_TARGET_HOSTNAME` with `RP_CLIENT_TARGET_PORT`).
//! A part that is set replaces that part of the address from the file (or
//! the default), and the result is the environment's value for the key, so
//! a flag still wins over it.

use std::net::{IpAddr, SocketAddr};

use super::Lookup;
use super::error::ConfigError;
use super::keys::{Env, keys};
use super::layer::{Layer, Provenance};
use super::parse::parse_parsed;
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
        Side::Client => {
            let Parsed(below) = below.extract_key::<Parsed<HostPort>>(key)?;
            let host = part(host, |host| Ok(host.to_owned()))?.unwrap_or(below.host);
            let port = part(port, parse_parsed::<u16>)?.unwrap_or(below.port);
            HostPort { host, port }.to_text()
        }
    };
    Ok(Some(Layer::variable(key, &names.join(" and "), text)))
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
