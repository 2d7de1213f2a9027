//! The server nodes a client node dials, and the order it tries them in.
//!
//! A client node may know several server nodes (`--server` repeated), and
//! a host name that resolves to several addresses counts as that many
//! servers. The reconnect actor (`client`) walks them in *rounds*:
//!
//! - The configured servers are shuffled once, at start, into a
//!   [`Rotation`]: each client node starts at a random server, so the
//!   clients of a cluster spread over its nodes.
//! - A round tries every configured server once, in rotation order, each
//!   attempt straight after the one before: a server that is down costs one
//!   refused (or timed-out) attempt, never a backoff delay. A name is
//!   resolved afresh when its turn comes, and each of its addresses is tried
//!   in turn, in a random order.
//! - The backoff delay comes between rounds: after a round in which every
//!   attempt failed, and after an established connection is lost. The round
//!   after a loss starts at the server after the lost one, which comes
//!   last. A refusal that every server would give (our identity is held by
//!   another connection, our certificate is revoked) ends a round at once;
//!   one about this server (full, its certificate revoked) does not. The delay right after a loss is what spreads a dead server's
//!   clients over the others (and a restarted server's clients over time);
//!   after a stable connection, or a server saying it is shutting down, it
//!   is short (under `reconnect_min`), and it grows only while connections
//!   keep ending soon after they were made.
//!
//! With one server this is exactly the single-server loop it replaced:
//! attempt, backoff, attempt.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use rand::seq::SliceRandom as _;

use super::proxy::Proxies;

/// One server node to dial: `HOST:PORT` as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// Its pipe port.
    pub port: u16,
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where the client node connects: one server node, or several to fail
/// over between, and whether through an HTTP proxy.
///
/// The list cannot be empty, so it is written as its first server (`host`
/// and `port`, which is all a one-server configuration has) and the
/// [`others`](Self::others). The first has no privilege at run time: the
/// client starts at a random one of all of them.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    /// Host name or IP address of the first server node configured.
    pub host: String,
    /// Its pipe port.
    pub port: u16,
    /// Name every server's certificate must carry (default: the host
    /// dialled).
    pub server_name: Option<String>,
    /// The other server nodes configured, in order (`--server` repeated).
    pub others: Vec<ServerAddress>,
    /// The HTTP proxy the servers are reached through, if any (`--proxy`,
    /// `HTTPS_PROXY`; `NO_PROXY` exempts servers from it).
    pub proxy: Proxies,
    /// The local address every connection leaves from (to a server, or to
    /// the proxy), if not the one the kernel's routes pick
    /// (`--source-address`): on a multi-homed host, which interface the
    /// pipe uses. Only servers (or proxies) of its family are dialled.
    pub source_address: Option<IpAddr>,
}

impl ServerTarget {
    /// The one server node at `host:port`, its certificate verified against
    /// `host`.
    pub fn single(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            server_name: None,
            others: Vec::new(),
            proxy: Proxies::direct(),
            source_address: None,
        }
    }

    /// Every server node configured, in order: the first, then the others.
    pub fn servers(&self) -> Vec<ServerAddress> {
        let first = ServerAddress {
            host: self.host.clone(),
            port: self.port,
        };
        std::iter::once(first)
            .chain(self.others.iter().cloned())
            .collect()
    }
}

/// The servers, comma-separated, as the environment would list them.
impl fmt::Display for ServerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<String> = self.servers().iter().map(ToString::to_string).collect();
        f.write_str(&servers.join(","))
    }
}

/// The order a client node tries its servers in, walked round by round
/// (see the module doc). A round ends when every server was tried, or
/// early when an attempt connects or a refusal says another server would
/// refuse us too; the next starts where it left off.
#[derive(Debug)]
pub(super) struct Rotation {
    servers: Vec<ServerAddress>,
    /// Index of the server to try next.
    next: usize,
    /// Servers left to try in this round.
    left: usize,
}

impl Rotation {
    /// `servers` in a random order.
    pub(super) fn shuffled(mut servers: Vec<ServerAddress>) -> Self {
        servers.shuffle(&mut rand::rng());
        Self::in_order(servers)
    }

    /// `servers` in the order given, the first round about to start.
    fn in_order(servers: Vec<ServerAddress>) -> Self {
        let left = servers.len();
        Self {
            servers,
            next: 0,
            left,
        }
    }

    /// The next server of this round, or `None` once the round has tried
    /// them all (or was ended).
    pub(super) fn next_in_round(&mut self) -> Option<ServerAddress> {
        if self.left == 0 || self.servers.is_empty() {
            return None;
        }
        self.left -= 1;
        let server = self.servers[self.next].clone();
        self.next = (self.next + 1) % self.servers.len();
        Some(server)
    }

    /// Starts a round of every server, at the one after the last tried: so
    /// after a loss, the lost server comes last.
    pub(super) fn new_round(&mut self) {
        self.left = self.servers.len();
    }
}

/// The addresses `server` resolves to now, each once, in a random order:
/// each counts as a server of its own. An IP address resolves to itself
/// without a lookup.
pub(super) async fn resolve(server: &ServerAddress) -> std::io::Result<Vec<SocketAddr>> {
    let found = tokio::net::lookup_host((server.host.as_str(), server.port)).await?;
    let addresses = candidates(found);
    if addresses.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} resolves to no address", server.host),
        ));
    }
    Ok(addresses)
}

/// `found` without repeats, shuffled.
fn candidates(found: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for address in found {
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    addresses.shuffle(&mut rand::rng());
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str) -> ServerAddress {
        ServerAddress {
            host: host.to_owned(),
            port: 1234,
        }
    }

    /// The hosts of the rest of the current round.
    fn round(rotation: &mut Rotation) -> Vec<String> {
        std::iter::from_fn(|| rotation.next_in_round())
            .map(|server| server.host)
            .collect()
    }

    #[test]
    fn a_round_tries_every_server_once_then_backs_off() {
        let mut rotation = Rotation::in_order(vec![server("a"), server("b"), server("c")]);
        assert_eq!(round(&mut rotation), ["a", "b", "c"]);
        assert_eq!(rotation.next_in_round(), None, "the round is over");
        rotation.new_round();
        assert_eq!(round(&mut rotation), ["a", "b", "c"]);
    }

    #[test]
    fn after_a_loss_the_next_round_starts_past_the_lost_server() {
        let mut rotation = Rotation::in_order(vec![server("a"), server("b"), server("c")]);
        // a fails, b connects; then b's connection is lost.
        assert_eq!(rotation.next_in_round(), Some(server("a")));
        assert_eq!(rotation.next_in_round(), Some(server("b")));
        rotation.new_round();
        assert_eq!(round(&mut rotation), ["c", "a", "b"]);
    }

    #[test]
    fn a_round_cut_short_resumes_at_the_next_server() {
        // a refuses us in a way any server would (standing by): the round
        // ends there, and the next, after the backoff, starts at b.
        let mut rotation = Rotation::in_order(vec![server("a"), server("b")]);
        assert_eq!(rotation.next_in_round(), Some(server("a")));
        rotation.new_round();
        assert_eq!(round(&mut rotation), ["b", "a"]);
    }

    #[test]
    fn one_server_is_tried_once_per_round() {
        let mut rotation = Rotation::shuffled(vec![server("a")]);
        for _ in 0..3 {
            assert_eq!(round(&mut rotation), ["a"]);
            rotation.new_round();
        }
        assert_eq!(Rotation::in_order(Vec::new()).next_in_round(), None);
    }

    #[test]
    fn clients_start_at_a_random_server() {
        let servers = vec![server("a"), server("b"), server("c")];
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut rotation = Rotation::shuffled(servers.clone());
            let mut hosts = round(&mut rotation);
            firsts.insert(hosts[0].clone());
            hosts.sort();
            assert_eq!(hosts, ["a", "b", "c"], "each server once per round");
        }
        assert_eq!(firsts.len(), 3, "every server is first for some client");
    }

    #[test]
    fn every_address_of_a_name_is_a_candidate_once() {
        let address = |text: &str| text.parse::<SocketAddr>().unwrap();
        let found = [
            address("10.0.0.1:1234"),
            address("[fd00::1]:1234"),
            address("10.0.0.1:1234"),
            address("10.0.0.2:1234"),
        ];
        let mut addresses = candidates(found);
        addresses.sort();
        assert_eq!(
            addresses,
            [
                address("10.0.0.1:1234"),
                address("10.0.0.2:1234"),
                address("[fd00::1]:1234")
            ]
        );
    }

    #[tokio::test]
    async fn an_ip_address_resolves_to_itself() {
        let addresses = resolve(&server("127.0.0.1")).await.unwrap();
        assert_eq!(addresses, ["127.0.0.1:1234".parse().unwrap()]);
        let v6 = resolve(&server("::1")).await.unwrap();
        assert_eq!(v6, ["[::1]:1234".parse().unwrap()]);
    }

    #[test]
    fn targets_list_their_servers_the_first_first() {
        let target = ServerTarget {
            others: vec![server("b"), server("::1")],
            ..ServerTarget::single("a", 1)
        };
        assert_eq!(target.to_string(), "a:1,b:1234,[::1]:1234");
        assert_eq!(
            ServerTarget::single("a", 1).servers(),
            [ServerAddress {
                host: "a".to_owned(),
                port: 1
            }]
        );
    }
}
