//! The client node's pipe side: keeps one connection to a server node
//! alive, reconnecting forever with backoff, failing over between the
//! server nodes it knows (the order and the rounds: see `servers`).
//!
//! This is an actor: [`run`] owns the loop and returns only when `shutdown`
//! is cancelled; the backoff sleep races that shutdown. Nothing a peer or a
//! handler does can end the loop, which is what the original got wrong.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::backoff::{Backoff, BackoffSettings};
use super::directory::{SERVER_KEY, drain};
use super::events::ConnectionEvent;
use super::metrics::{Counter, Timing};
use super::node::Node;
use super::servers::{Rotation, ServerAddress, ServerTarget, resolve};
use crate::link::{
    self, ALPN, CertificateId, HandshakeError, PeerHandle, PeerInfo, Reloadable, Role, TlsError,
};
use crate::wire::Side;
use crate::wire::proto::go_away;

/// Default deadline for the TCP connect to a server (and for resolving its
/// name).
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
    let mut rotation = Rotation::shuffled(servers);
    let mut actor = Reconnect {
        node,
        tls,
        server_name: target.server_name,
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
    /// other (every address of each) until one connects, and serves that
    /// connection until it ends.
    async fn round(&mut self, rotation: &mut Rotation) -> Ended {
        while let Some(server) = rotation.next_in_round() {
            let resolved = tokio::select! {
                _ = self.shutdown.cancelled() => return Ended::Shutdown,
                resolved = resolve_within(&server) => resolved,
            };
            let addresses = match resolved {
                Ok(addresses) => addresses,
                Err(error) => {
                    self.node.metrics().incr(Counter::ConnectAttempt);
                    self.attempt_failed(&server, &error);
                    continue;
                }
            };
            for address in addresses {
                self.node.metrics().incr(Counter::ConnectAttempt);
                // The TLS config current now: a reload affects the next attempt.
                let connector = TlsConnector::from(self.tls.current());
                let name = self.server_name.as_deref().unwrap_or(&server.host);
                let attempt = tokio::select! {
                    _ = self.shutdown.cancelled() => return Ended::Shutdown,
                    attempt = connect(address, name, &connector, &self.node) => attempt,
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
        let after = match (refusal, revocation_in(error)) {
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
        } = connected;
        if let Some(lost_at) = self.lost_at.take() {
            self.node
                .metrics()
                .timing(Timing::Reconnect, lost_at.elapsed());
        }
        let since = Instant::now();
        self.announce(server, &handle);
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

    /// Notes the new connection to `server` in the status, the log and as
    /// an event.
    fn announce(&self, server: &ServerAddress, handle: &PeerHandle) {
        let address = handle.peer().remote_addr;
        let mut attempts = 0;
        self.node.update_link(|link| {
            attempts = link.reconnect_attempts;
            link.reconnect_attempts = 0;
            link.standby = false;
            link.server = Some(server.to_string());
            link.server_address = address;
        });
        info!(%server, peer = handle.name(), "connected to a server node");
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

/// An established connection to the server, and the certificate it
/// presented (checked against the revocation lists to come).
struct Connected {
    handle: PeerHandle,
    certificate: Option<CertificateId>,
}

/// One connection attempt to `address`: TCP, TLS (the certificate verified
/// against `name`), `Hello`.
async fn connect(
    address: SocketAddr,
    name: &str,
    connector: &TlsConnector,
    node: &Node,
) -> Result<Connected, ConnectError> {
    let settings = node.settings();
    let tcp = tokio::time::timeout(DEFAULT_CONNECT_TIMEOUT, TcpStream::connect(address))
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
    })
}
