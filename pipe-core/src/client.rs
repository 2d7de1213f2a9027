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

use crate::backoff::{Backoff, BackoffSettings};
use crate::connection::{self, HandshakeError, PeerHandle, PeerInfo};
use crate::events::ConnectionEvent;
use crate::handler::Side;
use crate::metrics::{
    CONNECT_BROKEN_TICK, CONNECT_CONNECTED_TICK, CONNECT_FAIL_TICK, CONNECT_NEW_TICK, PEERS_GAUGE,
    RECONNECT_TIMING,
};
use crate::node::Node;
use crate::peers::SERVER_KEY;
use crate::pki::Role;
use crate::proto::go_away;
use crate::tls::{self, Reloadable};

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
            Ok(handle) => {
                if let Some(lost_at) = lost_at.take() {
                    node.metrics().timing(RECONNECT_TIMING, lost_at.elapsed());
                }
                if stay_connected(&node, handle, &mut backoff, &shutdown).await == Ended::Shutdown {
                    return;
                }
                lost_at = Some(Instant::now());
            }
            Err(error) => {
                node.metrics().incr(CONNECT_FAIL_TICK);
                let chain = format!("{error:#}");
                let refusal = error
                    .downcast_ref::<HandshakeError>()
                    .and_then(|e| match e {
                        HandshakeError::Refused { reason, .. } => Some(*reason),
                        _ => None,
                    });
                match refusal {
                    Some(go_away::Reason::IdentityInUse) => {
                        info!(server = %target, "standing by: {chain}");
                        stretch(&mut backoff);
                    }
                    Some(go_away::Reason::Overloaded) => {
                        warn!(server = %target, "server refused us: {chain}");
                        stretch(&mut backoff);
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
        }
        let delay = backoff.next_delay();
        info!(?delay, "reconnecting after backoff");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Shutdown,
    Lost,
}

/// Serves one established connection until it ends or the node stops.
async fn stay_connected(
    node: &Node,
    handle: PeerHandle,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Ended {
    let since = Instant::now();
    let mut attempts = 0;
    node.update_link(|link| {
        attempts = link.reconnect_attempts;
        link.reconnect_attempts = 0;
        link.standby = false;
    });
    if let Some(old) = node.peers().insert(SERVER_KEY, handle.clone()) {
        old.close(go_away::Reason::Replaced, "client reconnected");
    }
    node.metrics().incr(CONNECT_CONNECTED_TICK);
    node.metrics().gauge(PEERS_GAUGE, node.peers().len() as u64);
    node.events().emit(ConnectionEvent::ConnectSuccess {
        peer: handle.name().to_owned(),
        attempts,
    });
    node.events().emit(ConnectionEvent::ConnectionAdded {
        peer: handle.name().to_owned(),
        remote_addr: handle
            .peer()
            .remote_addr
            .map(|a| a.to_string())
            .unwrap_or_default(),
        connection_id: handle.connection_id(),
    });
    let ended = tokio::select! {
        _ = handle.closed() => Ended::Lost,
        _ = shutdown.cancelled() => {
            node.begin_stopping();
            handle.go_away(go_away::Reason::Shutdown, "client node is shutting down");
            let grace = node.settings().drain_grace;
            if tokio::time::timeout(grace, handle.drained()).await.is_err() {
                warn!(?grace, "requests still in flight after the drain grace; closing anyway");
            }
            handle.close(go_away::Reason::Shutdown, "client node is shutting down");
            handle.closed().await;
            Ended::Shutdown
        }
    };
    node.peers().remove(SERVER_KEY, &handle);
    node.metrics().incr(CONNECT_BROKEN_TICK);
    node.metrics().gauge(PEERS_GAUGE, node.peers().len() as u64);
    let reason = handle.close_reason();
    node.events().emit(ConnectionEvent::ConnectionRemoved {
        peer: handle.name().to_owned(),
        connection_id: handle.connection_id(),
        reason: reason.clone(),
    });
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

/// One connection attempt: TCP, TLS (server name verified), `Hello`.
async fn connect(
    target: &ServerTarget,
    connector: &TlsConnector,
    node: &Node,
) -> anyhow::Result<PeerHandle> {
    use anyhow::Context as _;
    let settings = node.settings();
    let tcp = tokio::time::timeout(
        DEFAULT_CONNECT_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .with_context(|| format!("TCP connect to {target} timed out"))?
    .with_context(|| format!("TCP connect to {target}"))?;
    let _ = tcp.set_nodelay(true);
    let remote = tcp.peer_addr().ok();
    let name = target.server_name.as_deref().unwrap_or(&target.host);
    let server_name = ServerName::try_from(name.to_owned())
        .with_context(|| format!("{name:?} is not a valid server name"))?;
    let stream = tokio::time::timeout(
        settings.handshake_timeout,
        connector.connect(server_name, tcp),
    )
    .await
    .context("TLS handshake timed out")?
    .context("TLS handshake")?;
    let server = tls::peer_identity(stream.get_ref().1.peer_certificates(), Role::Server)
        .context("server certificate")?;
    let peer = PeerInfo {
        name: server,
        side: Side::Server,
        remote_addr: remote,
    };
    let (handle, _hello) = connection::establish(stream, &node.endpoint(), peer, |_| Ok(()))
        .await
        .context("pipe handshake")?;
    Ok(handle)
}
