//! The client node's pipe side: keeps one connection to a server node
//! alive, reconnecting forever with backoff, failing over between the
//! server nodes it knows (the order and the rounds: see `servers`),
//! directly or through an HTTP proxy (`proxy`, `tunnel`).
//!
//! This is an actor: [`run`] owns the loop and returns only when `shutdown`
//! is cancelled; the backoff sleep races that shutdown. Nothing a peer or a
//! handler does can end the loop, which is what the original got wrong.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::backoff::{Backoff, BackoffSettings};
use super::dial::{dial, no_address_of_family, reachable_from};
use super::directory::{SERVER_KEY, drain};
use super::events::ConnectionEvent;
use super::metrics::{Counter, Timing};
use super::node::Node;
use super::proxy::{Proxies, ProxyUrl};
use super::servers::{Rotation, ServerAddress, ServerTarget, resolve};
use super::tunnel::{self, ProxyError};
use crate::link::{
    self, ALPN, CertificateId, HandshakeError, PeerHandle, PeerInfo, Reloadable, Role, TlsError,
};
use crate::wire::Side;
use crate::wire::proto::go_away;

/// Default deadline for the TCP connect to a server (and for resolving its
/// name), or for the tunnel to it through a proxy.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps a connection to one of `target`'s servers up until `shutdown`,
/// then drains it.
pub async fn run(
    target: ServerTarget,
    tls: Arc<Reloadable<rustls::ClientConfig>>,
    node: Arc<Node>,
    backoff: BackoffSettings,
    shutdown: CancellationToken,
) {
    let servers = target.servers();
    node.update_link(|link| link.servers = servers.iter().map(ToString::to_string).collect());
    if target.proxy.proxy().is_some() {
        info!("HTTP proxy: {}", target.proxy.describe());
    }
    let mut rotation = Rotation::shuffled(servers);
    let mut actor = Reconnect {
        node,
        tls,
        server_name: target.server_name,
        proxies: target.proxy,
        source_address: target.source_address,
        backoff: Backoff::new(backoff),
        shutdown,
        lost_at: None,
    };
    loop {
        if actor.round(&mut rotation).await == Ended::Shutdown {
            return;
        }
        let delay = actor.backoff.next_delay();
        info!(?delay, "reconnecting after backoff");
        tokio::select! {
            _ = actor.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        rotation.new_round();
    }
}

/// The reconnect actor's state.
struct Reconnect {
    node: Arc<Node>,
    tls: Arc<Reloadable<rustls::ClientConfig>>,
    /// The name every server's certificate must carry, if not its host.
    server_name: Option<String>,
    /// Which servers are reached through an HTTP proxy.
    proxies: Proxies,
    /// The local address connections leave from, if chosen.
    source_address: Option<IpAddr>,
    backoff: Backoff,
    shutdown: CancellationToken,
    /// When the last connection was lost, until the next one is up.
    lost_at: Option<Instant>,
}

/// How a round ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The node is stopping.
    Shutdown,
    /// The connection made in the round was lost, no attempt of the round
    /// connected, or a refusal cut it short: back off, then a new round.
    Retry,
}

/// What to do after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
enum AfterFailure {
    /// Try the next server of the round straight away.
    NextServer,
    /// End the round: another server would refuse us the same way.
    StandBy,
}

impl Reconnect {
    /// One round: tries the servers of `rotation`'s round one after the
    /// other (every address of each, or each through its proxy) until one
    /// connects, and serves that connection until it ends.
    async fn round(&mut self, rotation: &mut Rotation) -> Ended {
        while let Some(server) = rotation.next_in_round() {
            let routes = tokio::select! {
                _ = self.shutdown.cancelled() => return Ended::Shutdown,
                routes = routes_to(&server, &self.proxies, self.source_address) => routes,
            };
            let routes = match routes {
                Ok(routes) => routes,
                Err(error) => {
                    self.node.metrics().incr(Counter::ConnectAttempt);
                    self.attempt_failed(&server, &error);
                    continue;
                }
            };
            for route in routes {
                self.node.metrics().incr(Counter::ConnectAttempt);
                // The TLS config current now: a reload affects the next attempt.
                let connector = TlsConnector::from(self.tls.current());
                let name = self.server_name.as_deref().unwrap_or(&server.host);
                let attempt = tokio::select! {
                    _ = self.shutdown.cancelled() => return Ended::Shutdown,
                    attempt = connect(&route, &server, name, &connector, self) => attempt,
                };
                match attempt {
                    Ok(connected) => return self.stay_connected(&server, connected).await,
                    Err(error) => {
                        if self.attempt_failed(&server, &error) == AfterFailure::StandBy {
                            return Ended::Retry;
                        }
                    }
                }
            }
        }
        Ended::Retry
    }

    /// Reports a failed connection attempt to `server` (log, metrics,
    /// status, event), and stretches the backoff for refusals that retrying
    /// soon won't fix. Says whether to go on to the next server.
    fn attempt_failed(&mut self, server: &ServerAddress, error: &ConnectError) -> AfterFailure {
        self.node.metrics().incr(Counter::ConnectFailed);
        let chain = error_chain(error);
        let refusal = match error {
            ConnectError::Handshake(HandshakeError::Refused { reason, .. }) => Some(*reason),
            _ => None,
        };
        let proxy_refused_us =
            matches!(error, ConnectError::Proxy { source, .. } if source.is_authentication());
        let after = match (refusal, revocation_in(error)) {
            // The proxy refused our credentials: it would for any server,
            // and trying often could lock the proxy account.
            _ if proxy_refused_us => {
                warn!(%server, "standing by: {chain}");
                stretch(&mut self.backoff);
                AfterFailure::StandBy
            }
            // Another connection holds our identity: any server would say so.
            (Some(go_away::Reason::IdentityInUse), _) => {
                info!(%server, "standing by: {chain}");
                stretch(&mut self.backoff);
                AfterFailure::StandBy
            }
            // This server is full; another may not be.
            (Some(go_away::Reason::Overloaded), _) => {
                warn!(%server, "server refused us: {chain}");
                stretch(&mut self.backoff);
                AfterFailure::NextServer
            }
            // Our certificate is revoked: every server of the CA refuses it.
            (_, Some(Revoked::Ours)) => {
                warn!(%server, "the server refused this node's certificate as revoked; install a new identity (set-identity) and reload: {chain}");
                stretch(&mut self.backoff);
                AfterFailure::StandBy
            }
            // This server's certificate is revoked; another's may not be.
            (_, Some(Revoked::Server)) => {
                self.node.metrics().incr(Counter::PeerRevoked);
                warn!(%server, "server refused: its certificate is on this node's revocation list: {chain}");
                stretch(&mut self.backoff);
                AfterFailure::NextServer
            }
            _ => {
                warn!(%server, "connection attempt failed: {chain}");
                AfterFailure::NextServer
            }
        };
        let mut attempts = 0;
        self.node.update_link(|link| {
            link.reconnect_attempts += 1;
            attempts = link.reconnect_attempts;
            link.last_error = Some(chain.clone());
            link.last_error_server = Some(server.to_string());
            link.last_error_at = Some(SystemTime::now());
        });
        self.node.events().emit(ConnectionEvent::ConnectFail {
            target: server.to_string(),
            attempts,
            error: chain,
        });
        after
    }

    /// Serves one established connection to `server` until it ends (closed
    /// at once if the server's certificate is revoked, now or by a reload)
    /// or the node stops.
    async fn stay_connected(&mut self, server: &ServerAddress, connected: Connected) -> Ended {
        let Connected {
            handle,
            certificate,
            proxy,
        } = connected;
        if let Some(lost_at) = self.lost_at.take() {
            self.node
                .metrics()
                .timing(Timing::Reconnect, lost_at.elapsed());
        }
        let since = Instant::now();
        self.announce(server, &handle, proxy);
        let node = &self.node;
        let session = node.peers().hold(SERVER_KEY, handle.clone());
        if let Some(jobs) = node.jobs() {
            jobs.wake(); // the server's queue goes out now
        }
        let ended = tokio::select! {
            _ = node.revocation_watch.closed_or_revoked(&handle, certificate.as_ref()) => Ended::Retry,
            _ = self.shutdown.cancelled() => {
                node.begin_stopping();
                let grace = node.settings().drain_grace;
                drain(std::slice::from_ref(&handle), grace, "client node is shutting down").await;
                Ended::Shutdown
            }
        };
        drop(session);
        if ended == Ended::Shutdown {
            return ended;
        }
        self.lost_at = Some(Instant::now());
        self.after_loss(server, &handle, since.elapsed());
        ended
    }

    /// Notes the new connection to `server` (through `proxy`, if shown) in
    /// the status, the log and as an event.
    fn announce(&self, server: &ServerAddress, handle: &PeerHandle, proxy: Option<String>) {
        let address = handle.peer().remote_addr;
        let mut attempts = 0;
        self.node.update_link(|link| {
            attempts = link.reconnect_attempts;
            link.reconnect_attempts = 0;
            link.standby = false;
            link.server = Some(server.to_string());
            link.server_address = address;
            link.proxy = proxy.clone();
        });
        match &proxy {
            Some(proxy) => {
                info!(%server, peer = handle.name(), %proxy, "connected to a server node through the HTTP proxy");
            }
            None => info!(%server, peer = handle.name(), "connected to a server node"),
        }
        self.node.events().emit(ConnectionEvent::ConnectSuccess {
            peer: handle.name().to_owned(),
            target: server.to_string(),
            attempts,
        });
    }

    /// After the connection to `server` ended, having lasted `lifetime`:
    /// the status, and the backoff that its length and the server's
    /// farewell call for.
    fn after_loss(&mut self, server: &ServerAddress, handle: &PeerHandle, lifetime: Duration) {
        let reason = handle.close_reason();
        warn!(%server, peer = handle.name(), %reason, "connection to server lost");
        self.node.update_link(|link| {
            link.server = None;
            link.server_address = None;
            link.proxy = None;
            link.last_error = Some(reason.clone());
            link.last_error_server = Some(server.to_string());
            link.last_error_at = Some(SystemTime::now());
        });
        if self.backoff.is_stable(lifetime) {
            self.backoff.reset();
        }
        match handle.peer_go_away() {
            // Another process holds our identity now. Stand by: the server will
            // refuse us while that connection lives, and take us back when it
            // does not, so the pipe never flaps between the two.
            Some(go_away::Reason::Replaced) => {
                warn!("a newer connection with this identity replaced ours; standing by");
                self.node.update_link(|link| link.standby = true);
                stretch(&mut self.backoff);
            }
            // The server is restarting: come back (to the next server) as
            // soon as it is.
            Some(go_away::Reason::Shutdown) => self.backoff.reset(),
            // Our certificate is on the server's list: it will refuse us until
            // a new identity is installed and reloaded.
            Some(go_away::Reason::Revoked) => {
                warn!(
                    "the server revoked this node's certificate; install a new identity (set-identity) and reload"
                );
                stretch(&mut self.backoff);
            }
            _ => {}
        }
    }
}

/// Whose certificate a failed attempt found revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revoked {
    /// The server refused ours (TLS alert `certificate_revoked`).
    Ours,
    /// Our revocation list names the server's.
    Server,
}

/// Whether `error` is a TLS refusal for a revoked certificate, and whose.
fn revocation_in(error: &ConnectError) -> Option<Revoked> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        // An i/o error's `source` skips the error it wraps: look inside.
        let tls = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked)) => {
                return Some(Revoked::Ours);
            }
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
                return Some(Revoked::Server);
            }
            _ => cause = current.source(),
        }
    }
    None
}

/// Moves the backoff to its cap: for refusals that retrying soon won't fix.
fn stretch(backoff: &mut Backoff) {
    for _ in 0..32 {
        backoff.next_envelope();
    }
}

/// Why a connection attempt failed; each names the step.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server's name could not be resolved (in time).
    #[error("cannot resolve {server}")]
    Resolve {
        /// The server, as configured.
        server: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TCP connect did not finish in time.
    #[error("TCP connect to {target} timed out")]
    TcpTimedOut {
        /// The address dialled.
        target: String,
        /// The elapsed deadline.
        source: tokio::time::error::Elapsed,
    },
    /// The TCP connect failed.
    #[error("TCP connect to {target}")]
    Tcp {
        /// The address dialled.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// The name to verify the server against is not a valid server name.
    #[error("{name:?} is not a valid server name")]
    ServerName {
        /// The name.
        name: String,
        /// Why.
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// The TLS handshake did not finish in time.
    #[error("TLS handshake timed out")]
    TlsTimedOut(#[source] tokio::time::error::Elapsed),
    /// The TLS handshake failed.
    #[error("TLS handshake")]
    Tls(#[source] std::io::Error),
    /// The server did not select restpipe's ALPN protocol.
    #[error("the server did not negotiate ALPN restpipe/1")]
    Alpn,
    /// The server's certificate names no usable identity.
    #[error("server certificate")]
    ServerCertificate(#[source] TlsError),
    /// The `Hello` exchange failed or the server refused us.
    #[error("pipe handshake")]
    Handshake(#[source] HandshakeError),
    /// No tunnel to the server through the HTTP proxy.
    #[error("through HTTP proxy {proxy}")]
    Proxy {
        /// The proxy, its credentials hidden.
        proxy: String,
        /// Why.
        source: ProxyError,
    },
}

/// `error` and its causes on one line, `outer: inner: ...`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        cause = inner.source();
    }
    chain
}

/// The addresses `server` resolves to now (see `servers::resolve`), within
/// the connect deadline.
async fn resolve_within(server: &ServerAddress) -> Result<Vec<SocketAddr>, ConnectError> {
    let resolved = match tokio::time::timeout(DEFAULT_CONNECT_TIMEOUT, resolve(server)).await {
        Ok(resolved) => resolved,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {DEFAULT_CONNECT_TIMEOUT:?}"),
        )),
    };
    resolved.map_err(|source| ConnectError::Resolve {
        server: server.to_string(),
        source,
    })
}

/// One way to a server.
enum Route {
    /// TCP to this address of it.
    Direct(SocketAddr),
    /// A tunnel through this HTTP proxy, which resolves the server's name.
    Proxy(ProxyUrl),
}

/// The ways to `server` now: through its proxy, if `proxies` has one for
/// it (the name is the proxy's to resolve: a host behind a proxy often
/// cannot), or each address its name resolves to that can be dialled from
/// `source`.
async fn routes_to(
    server: &ServerAddress,
    proxies: &Proxies,
    source: Option<IpAddr>,
) -> Result<Vec<Route>, ConnectError> {
    if let Some(proxy) = proxies.for_server(&server.host, server.port) {
        return Ok(vec![Route::Proxy(proxy.clone())]);
    }
    let mut addresses = resolve_within(server).await?;
    addresses.retain(|address| reachable_from(address, source));
    match source {
        Some(source) if addresses.is_empty() => Err(ConnectError::Resolve {
            server: server.to_string(),
            source: no_address_of_family(&format!("server {server}"), source),
        }),
        _ => Ok(addresses.into_iter().map(Route::Direct).collect()),
    }
}

/// An established connection to the server, the certificate it presented
/// (checked against the revocation lists to come), and the proxy it goes
/// through (credentials hidden), if any.
struct Connected {
    handle: PeerHandle,
    certificate: Option<CertificateId>,
    proxy: Option<String>,
}

/// A TCP stream to `server` by `route`, from `source` if given, within the
/// connect deadline.
async fn open(
    route: &Route,
    server: &ServerAddress,
    source: Option<IpAddr>,
) -> Result<TcpStream, ConnectError> {
    let address = match route {
        Route::Direct(address) => *address,
        Route::Proxy(proxy) => {
            return tunnel::open(
                proxy,
                &server.host,
                server.port,
                source,
                DEFAULT_CONNECT_TIMEOUT,
            )
            .await
            .map_err(|source| ConnectError::Proxy {
                proxy: proxy.to_string(),
                source,
            });
        }
    };
    let tcp = tokio::time::timeout(DEFAULT_CONNECT_TIMEOUT, dial(address, source))
        .await
        .map_err(|source| ConnectError::TcpTimedOut {
            target: address.to_string(),
            source,
        })?
        .map_err(|source| ConnectError::Tcp {
            target: address.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// One connection attempt of `actor` to `server` by `route`: TCP (or a
/// tunnel), TLS (the certificate verified against `name`), `Hello`.
async fn connect(
    route: &Route,
    server: &ServerAddress,
    name: &str,
    connector: &TlsConnector,
    actor: &Reconnect,
) -> Result<Connected, ConnectError> {
    let node = &actor.node;
    let settings = node.settings();
    let tcp = open(route, server, actor.source_address).await?;
    // Through a proxy, the proxy's address: the one this socket knows.
    let remote = tcp.peer_addr().ok();
    let server_name =
        ServerName::try_from(name.to_owned()).map_err(|source| ConnectError::ServerName {
            name: name.to_owned(),
            source,
        })?;
    let stream = tokio::time::timeout(
        settings.handshake_timeout,
        connector.connect(server_name, tcp),
    )
    .await
    .map_err(ConnectError::TlsTimedOut)?
    .map_err(ConnectError::Tls)?;
    if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
        return Err(ConnectError::Alpn);
    }
    let certificates = stream.get_ref().1.peer_certificates();
    let server =
        link::peer_identity(certificates, Role::Server).map_err(ConnectError::ServerCertificate)?;
    let certificate = CertificateId::of_peer(certificates);
    let peer = PeerInfo {
        name: server,
        side: Side::Server,
        remote_addr: remote,
    };
    let (handle, _hello) = link::establish(stream, &node.endpoint(), peer, |_| Ok(()))
        .await
        .map_err(ConnectError::Handshake)?;
    Ok(Connected {
        handle,
        certificate,
        proxy: match route {
            Route::Proxy(proxy) => Some(proxy.to_string()),
            Route::Direct(_) => None,
        },
    })
}
