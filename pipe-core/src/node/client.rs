//! The client node's pipe side: keeps one connection to the server alive,
//! reconnecting forever with backoff.
//!
//! This is an actor: [`run`] owns the loop and returns only when `shutdown`
//! is cancelled; the backoff sleep races that shutdown. Nothing a peer or a
//! handler does can end the loop, which is what the original got wrong.

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
use super::metrics::{CONNECT_FAIL_TICK, CONNECT_NEW_TICK, CONNECT_REVOKED_TICK, RECONNECT_TIMING};
use super::node::Node;
use crate::link::{
    self, ALPN, CertificateId, HandshakeError, PeerHandle, PeerInfo, Reloadable, Role, TlsError,
};
use crate::wire::Side;
use crate::wire::proto::go_away;

/// Default deadline for the TCP connect to the server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the client node connects.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    /// Host name or IP address of the server node.
    pub host: String,
    /// Its pipe port.
    pub port: u16,
    /// Name to verify the server's certificate against (default: `host`).
    pub server_name: Option<String>,
}

impl std::fmt::Display for ServerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Keeps the connection to `target` up until `shutdown`, then drains it.
pub async fn run(
    target: ServerTarget,
    tls: Arc<Reloadable<rustls::ClientConfig>>,
    node: Arc<Node>,
    backoff: BackoffSettings,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(backoff);
    // When the last connection was lost, until the next one is up.
    let mut lost_at: Option<Instant> = None;
    loop {
        node.metrics().incr(CONNECT_NEW_TICK);
        // The TLS config current now: a reload affects the next attempt.
        let connector = TlsConnector::from(tls.current());
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return,
            attempt = connect(&target, &connector, &node) => attempt,
        };
        match attempt {
            Ok(connected) => {
                if let Some(lost_at) = lost_at.take() {
                    node.metrics().timing(RECONNECT_TIMING, lost_at.elapsed());
                }
                if stay_connected(&node, connected, &mut backoff, &shutdown).await
                    == Ended::Shutdown
                {
                    return;
                }
                lost_at = Some(Instant::now());
            }
            Err(error) => attempt_failed(&node, &target, &error, &mut backoff),
        }
        let delay = backoff.next_delay();
        info!(?delay, "reconnecting after backoff");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Reports a failed connection attempt (log, metrics, status, event), and
/// stretches the backoff for refusals that retrying soon won't fix.
fn attempt_failed(node: &Node, target: &ServerTarget, error: &ConnectError, backoff: &mut Backoff) {
    node.metrics().incr(CONNECT_FAIL_TICK);
    let chain = error_chain(error);
    let refusal = match error {
        ConnectError::Handshake(HandshakeError::Refused { reason, .. }) => Some(*reason),
        _ => None,
    };
    match (refusal, revocation_in(error)) {
        (Some(go_away::Reason::IdentityInUse), _) => {
            info!(server = %target, "standing by: {chain}");
            stretch(backoff);
        }
        (Some(go_away::Reason::Overloaded), _) => {
            warn!(server = %target, "server refused us: {chain}");
            stretch(backoff);
        }
        (_, Some(Revoked::Ours)) => {
            warn!(server = %target, "the server refused this node's certificate as revoked; install a new identity (set-identity) and reload: {chain}");
            stretch(backoff);
        }
        (_, Some(Revoked::Server)) => {
            node.metrics().incr(CONNECT_REVOKED_TICK);
            warn!(server = %target, "server refused: its certificate is on this node's revocation list: {chain}");
            stretch(backoff);
        }
        _ => warn!(server = %target, "connection attempt failed: {chain}"),
    }
    let mut attempts = 0;
    node.update_link(|link| {
        link.reconnect_attempts += 1;
        attempts = link.reconnect_attempts;
        link.last_error = Some(chain.clone());
        link.last_error_at = Some(SystemTime::now());
    });
    node.events().emit(ConnectionEvent::ConnectFail {
        target: target.to_string(),
        attempts,
        error: chain,
    });
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

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Shutdown,
    Lost,
}

/// Serves one established connection until it ends (closed at once if the
/// server's certificate is revoked, now or by a reload) or the node stops.
async fn stay_connected(
    node: &Node,
    connected: Connected,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Ended {
    let Connected {
        handle,
        certificate,
    } = connected;
    let since = Instant::now();
    let mut attempts = 0;
    node.update_link(|link| {
        attempts = link.reconnect_attempts;
        link.reconnect_attempts = 0;
        link.standby = false;
    });
    node.events().emit(ConnectionEvent::ConnectSuccess {
        peer: handle.name().to_owned(),
        attempts,
    });
    let session = node.peers().hold(SERVER_KEY, handle.clone());
    if let Some(jobs) = node.jobs() {
        jobs.wake(); // the server's queue goes out now
    }
    let ended = tokio::select! {
        _ = node.revocation_watch.closed_or_revoked(&handle, certificate.as_ref()) => Ended::Lost,
        _ = shutdown.cancelled() => {
            node.begin_stopping();
            let grace = node.settings().drain_grace;
            drain(std::slice::from_ref(&handle), grace, "client node is shutting down").await;
            Ended::Shutdown
        }
    };
    drop(session);
    let reason = handle.close_reason();
    if ended == Ended::Shutdown {
        return ended;
    }
    warn!(server = handle.name(), %reason, "connection to server lost");
    node.update_link(|link| {
        link.last_error = Some(reason.clone());
        link.last_error_at = Some(SystemTime::now());
    });
    if backoff.is_stable(since.elapsed()) {
        backoff.reset();
    }
    match handle.peer_go_away() {
        // Another process holds our identity now. Stand by: the server will
        // refuse us while that connection lives, and take us back when it
        // does not, so the pipe never flaps between the two.
        Some(go_away::Reason::Replaced) => {
            warn!("a newer connection with this identity replaced ours; standing by");
            node.update_link(|link| link.standby = true);
            stretch(backoff);
        }
        // The server is restarting: come back as soon as it is.
        Some(go_away::Reason::Shutdown) => backoff.reset(),
        // Our certificate is on the server's list: it will refuse us until
        // a new identity is installed and reloaded.
        Some(go_away::Reason::Revoked) => {
            warn!(
                "the server revoked this node's certificate; install a new identity (set-identity) and reload"
            );
            stretch(backoff);
        }
        _ => {}
    }
    ended
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
    /// The TCP connect did not finish in time.
    #[error("TCP connect to {target} timed out")]
    TcpTimedOut {
        /// The server dialled.
        target: String,
        /// The elapsed deadline.
        source: tokio::time::error::Elapsed,
    },
    /// The TCP connect failed.
    #[error("TCP connect to {target}")]
    Tcp {
        /// The server dialled.
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

/// An established connection to the server, and the certificate it
/// presented (checked against the revocation lists to come).
struct Connected {
    handle: PeerHandle,
    certificate: Option<CertificateId>,
}

/// One connection attempt: TCP, TLS (server name verified), `Hello`.
async fn connect(
    target: &ServerTarget,
    connector: &TlsConnector,
    node: &Node,
) -> Result<Connected, ConnectError> {
    let settings = node.settings();
    let tcp = tokio::time::timeout(
        DEFAULT_CONNECT_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|source| ConnectError::TcpTimedOut {
        target: target.to_string(),
        source,
    })?
    .map_err(|source| ConnectError::Tcp {
        target: target.to_string(),
        source,
    })?;
    let _ = tcp.set_nodelay(true);
    let remote = tcp.peer_addr().ok();
    let name = target.server_name.as_deref().unwrap_or(&target.host);
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
