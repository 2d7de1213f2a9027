//! The text parsers behind every option: an environment variable, a file
//! value and a flag all end up here, so each is read the same way. Each
//! message quotes the text it could not use.

use std::net::IpAddr;
use std::time::Duration;

use super::{LogFormat, Profile};

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

/// Splits a comma-separated list of servers, each `HOST:PORT` (or
/// `[v6]:PORT`); empty items are skipped, but one server at least is named.
pub(super) fn parse_host_ports(value: &str) -> Result<Vec<(String, u16)>, String> {
    let servers = value
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .map(parse_host_port)
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(format!("{value:?} names no server (HOST:PORT)"));
    }
    Ok(servers)
}

/// Splits the original's host variable, which may now list several
/// servers, comma-separated: each a host, which takes `port`, or a
/// `HOST:PORT` (`[v6]:PORT`) with a port of its own. An item with two colons
/// or more and no brackets is an IPv6 address without a port.
pub(super) fn parse_hosts(value: &str, port: u16) -> Result<Vec<(String, u16)>, String> {
    let servers = value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let has_port = if item.starts_with('[') {
                item.contains("]:")
            } else {
                item.matches(':').count() == 1
            };
            if has_port {
                parse_host_port(item)
            } else {
                let host = item.trim_start_matches('[').trim_end_matches(']');
                Ok((host.to_owned(), port))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(format!("{value:?} names no server"));
    }
    Ok(servers)
}

/// Parses anything with a `FromStr`, quoting the text in the message.
pub(super) fn parse_parsed<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e| format!("{value:?}: {e}"))
}

pub(super) fn parse_positive(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{value:?} is not a positive whole number")),
    }
}

pub(super) fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean (1/0, true/false)")),
    }
}

pub(super) fn parse_profile(value: &str) -> Result<Profile, String> {
    match value.trim() {
        "dev" => Ok(Profile::Dev),
        "prod" => Ok(Profile::Prod),
        _ => Err(format!("{value:?} is not a profile (dev or prod)")),
    }
}

pub(super) fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.trim() {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{value:?} is not a log format (human or json)")),
    }
}

pub(super) fn parse_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value.trim().trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{value:?} is not an octal permission mode such as 0660"))
}

pub(super) fn parse_ip_list(value: &str) -> Result<Vec<IpAddr>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .map(parse_parsed::<IpAddr>)
        .collect()
}

/// Splits `PREFIX=URL` of a forward.
pub(super) fn parse_forward(value: &str) -> Result<(String, String), String> {
    let (prefix, url) = value.trim().split_once('=').ok_or_else(|| {
        format!("{value:?} must be PREFIX=URL, e.g. files/=http://127.0.0.1:8080/")
    })?;
    if url.is_empty() {
        return Err(format!("{value:?} names no upstream URL"));
    }
    Ok((prefix.trim().to_owned(), url.trim().to_owned()))
}

/// A file name inside the cert dir: no path may escape it.
pub(super) fn parse_file_name(value: &str) -> Result<String, String> {
    if value.contains('/') || value == ".." || value == "." {
        return Err("must be a file name inside the cert dir, not a path".to_owned());
    }
    Ok(value.to_owned())
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

    #[test]
    fn server_lists() {
        let server = |host: &str, port| (host.to_owned(), port);
        assert_eq!(
            parse_host_ports("a:1, [::1]:2,,b:3"),
            Ok(vec![server("a", 1), server("::1", 2), server("b", 3)])
        );
        assert!(parse_host_ports("a:1,b").unwrap_err().contains("\"b\""));
        assert!(parse_host_ports(" , ").is_err());
        // The original's host variable: hosts take the port given, unless
        // they carry their own.
        assert_eq!(
            parse_hosts("a,b:2,::1,[::2],[::3]:4", 9),
            Ok(vec![
                server("a", 9),
                server("b", 2),
                server("::1", 9),
                server("::2", 9),
                server("::3", 4)
            ])
        );
        assert!(parse_hosts("a:port", 9).is_err());
        assert!(parse_hosts(",", 9).is_err());
    }
}
