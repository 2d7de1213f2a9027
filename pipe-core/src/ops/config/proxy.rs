//! The HTTP proxy a client node's pipe goes through.
//!
//! The `proxy` key (flag `--proxy`, `RP_PROXY`, file) wins, as any key
//! does. Without it, the conventional environment that curl and most tools
//! read decides: `HTTPS_PROXY` (or `https_proxy`), else `ALL_PROXY` (or
//! `all_proxy`); `HTTP_PROXY` is not read, since the pipe is no plain-HTTP
//! traffic. `proxy = "direct"` ignores them all. `NO_PROXY` (or
//! `no_proxy`) exempts the servers it names from the proxy, wherever the
//! proxy came from, as with curl. Empty variables count as unset.
//!
//! An unusable proxy URL stops the node with a message that names its
//! source but never its user or password.

use super::Lookup;
use super::error::ConfigError;
use super::layer::Provenance;
use super::value::ProxyChoice;
use crate::node::{Proxies, ProxyUrl, hide_credentials};

/// The conventional variables naming a proxy for HTTPS destinations, in the
/// order they are read.
pub(super) const PROXY_VARIABLES: [&str; 4] =
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

/// The conventional variables naming destinations to reach directly.
pub(super) const NO_PROXY_VARIABLES: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// The proxy of a client node: `choice` (the `proxy` key, if set), else
/// the conventional variables of `env`.
pub(super) fn proxies(
    choice: Option<ProxyChoice>,
    origins: &Provenance<'_>,
    env: Lookup<'_>,
) -> Result<Proxies, ConfigError> {
    let no_proxy = first_set(env, &NO_PROXY_VARIABLES)
        .map(|(_, list)| list)
        .unwrap_or_default();
    match choice {
        Some(ProxyChoice::Direct) => Ok(Proxies::direct()),
        Some(ProxyChoice::Through(proxy)) => {
            Ok(Proxies::through(proxy, &no_proxy, origins.origin("proxy")))
        }
        None => match first_set(env, &PROXY_VARIABLES) {
            None => Ok(Proxies::direct()),
            Some((name, value)) => {
                let proxy = value.parse::<ProxyUrl>().map_err(|error| {
                    ConfigError::bad_value(
                        format!("{name}={:?}", hide_credentials(&value)),
                        error.to_string(),
                    )
                })?;
                Ok(Proxies::through(proxy, &no_proxy, name))
            }
        },
    }
}

/// The first of `names` set to something other than blanks, and its value.
fn first_set(env: Lookup<'_>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| {
        env(name)
            .filter(|value| !value.trim().is_empty())
            .map(|value| (*name, value))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use crate::ops::config::{ClientArgs, ClientConfig, ConfigError};

    /// Flags as typed after `serve`.
    type Flags<'a> = &'a [&'a str];
    /// Environment variables, name and value.
    type Vars<'a> = &'a [(&'a str, &'a str)];

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: ClientArgs,
    }

    /// A client's configuration from `flags` (after `serve`) and the
    /// environment `vars`.
    fn resolve(flags: Flags<'_>, vars: Vars<'_>) -> Result<ClientConfig, ConfigError> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let command =
            Command::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))
                .unwrap_or_else(|error| panic!("{error}"));
        ClientConfig::resolve(&command.args, &|name| env.get(name).cloned())
    }

    /// The proxy the server `host` is reached through, credentials hidden.
    fn proxy_for(config: &ClientConfig, host: &str) -> Option<String> {
        config
            .target
            .proxy
            .for_server(host, 1234)
            .map(ToString::to_string)
    }

    #[test]
    fn without_a_proxy_servers_are_dialled_directly() {
        let config = resolve(&[], &[]).unwrap();
        assert_eq!(proxy_for(&config, "pipe.example.com"), None);
        // A proxy for plain HTTP is not one for the pipe.
        let config = resolve(&[], &[("HTTP_PROXY", "http://proxy:3128")]).unwrap();
        assert_eq!(proxy_for(&config, "pipe.example.com"), None);
    }

    #[test]
    fn the_flag_wins_over_rp_proxy_which_wins_over_the_conventional_variables() {
        let vars = [
            ("RP_PROXY", "http://rp:1"),
            ("HTTPS_PROXY", "http://https:2"),
            ("ALL_PROXY", "http://all:3"),
        ];
        let flagged = resolve(&["--proxy", "http://flag:4"], &vars).unwrap();
        assert_eq!(
            proxy_for(&flagged, "pipe.example.com").as_deref(),
            Some("http://flag:4")
        );
        let from_env = resolve(&[], &vars).unwrap();
        assert_eq!(
            proxy_for(&from_env, "pipe.example.com").as_deref(),
            Some("http://rp:1")
        );
        let conventional = resolve(&[], &vars[1..]).unwrap();
        assert_eq!(
            proxy_for(&conventional, "pipe.example.com").as_deref(),
            Some("http://https:2")
        );
        let lower = resolve(&[], &[("https_proxy", "http://lower:5"), ("ALL_PROXY", "")]).unwrap();
        assert_eq!(
            proxy_for(&lower, "pipe.example.com").as_deref(),
            Some("http://lower:5")
        );
        let all = resolve(&[], &[("HTTPS_PROXY", " "), ("all_proxy", "http://all:3")]).unwrap();
        assert_eq!(
            proxy_for(&all, "pipe.example.com").as_deref(),
            Some("http://all:3")
        );
        assert_eq!(
            format!("{:?}", all.target.proxy),
            "Proxies(http://all:3 (from all_proxy))"
        );
    }

    #[test]
    fn direct_ignores_the_conventional_variables() {
        let vars = [("HTTPS_PROXY", "http://https:2")];
        for flags in [&["--proxy", "direct"][..], &["--proxy", "DIRECT"][..]] {
            let config = resolve(flags, &vars).unwrap();
            assert_eq!(proxy_for(&config, "pipe.example.com"), None);
        }
        let config = resolve(&[], &[("RP_PROXY", "direct"), vars[0]]).unwrap();
        assert_eq!(proxy_for(&config, "pipe.example.com"), None);
    }

    #[test]
    fn no_proxy_exempts_servers_from_any_proxy() {
        for flags in [&["--proxy", "http://flag:4"][..], &[][..]] {
            let vars = [
                ("HTTPS_PROXY", "http://https:2"),
                ("no_proxy", "example.com,10.0.0.0/8"),
            ];
            let config = resolve(flags, &vars).unwrap();
            assert_eq!(proxy_for(&config, "pipe.example.com"), None);
            assert_eq!(proxy_for(&config, "10.1.2.3"), None);
            assert!(proxy_for(&config, "pipe.example.org").is_some());
        }
    }

    #[test]
    fn an_unusable_proxy_names_its_source_but_never_the_password() {
        // (flags, environment, what the error starts with)
        let cases: [(Flags, Vars, &str); 4] = [
            (
                &["--proxy", "https://alice:s3cret@proxy:3128"],
                &[],
                "--proxy: https:// proxies",
            ),
            (
                &[],
                &[("RP_PROXY", "http://alice:s3cret@proxy")],
                "RP_PROXY=\"http://***@proxy\": the proxy URL names no port",
            ),
            (
                &[],
                &[("HTTPS_PROXY", "socks5://alice:s3cret@proxy:1080")],
                "HTTPS_PROXY=\"socks5://***@proxy:1080\": socks5:// proxies are not supported",
            ),
            (
                &[],
                &[("ALL_PROXY", "http://alice:s3 cret@proxy:3128")],
                "ALL_PROXY=\"http://***@proxy:3128\": not a proxy URL",
            ),
        ];
        for (flags, vars, expected) in cases {
            let error = resolve(flags, vars).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
            assert!(
                !error.contains("s3cret") && !error.contains("alice"),
                "{error}"
            );
        }
    }

    #[test]
    fn credentials_never_show_in_the_configuration() {
        let config = resolve(&["--proxy", "http://alice:s3cret@proxy:3128"], &[]).unwrap();
        assert_eq!(
            proxy_for(&config, "pipe.example.com").as_deref(),
            Some("http://***@proxy:3128")
        );
        let shown = format!("{config:?}");
        assert!(shown.contains("http://***@proxy:3128"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice"),
            "{shown}"
        );
        let args = Command::try_parse_from(["serve", "--proxy", "http://alice:s3cret@p:1"])
            .unwrap()
            .args;
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice"),
            "{shown}"
        );
    }
}
