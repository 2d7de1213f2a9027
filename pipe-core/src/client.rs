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
use crate::connection::{self, PeerHandle, PeerInfo};
use crate::handler::Side;
use crate::node::Node;
use crate::peers::SERVER_KEY;
use crate::pki::Role;
use crate::proto::go_away;
use crate::tls;

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

/// Keeps the connection to `target` up until `shutdown`.
pub async fn run(
    target: ServerTarget,
    tls: Arc<rustls::ClientConfig>,
    node: Arc<Node>,
    backoff: BackoffSettings,
    shutdown: CancellationToken,
) {
    let connector = TlsConnector::from(tls);
    let mut backoff = Backoff::new(backoff);
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return,
            attempt = connect(&target, &connector, &node) => attempt,
        };
        match attempt {
            Ok(handle) => {
                let since = Instant::now();
                node.update_link(|link| link.reconnect_attempts = 0);
                if let Some(old) = node.peers().insert(SERVER_KEY, handle.clone()) {
                    old.close(go_away::Reason::Replaced, "client reconnected");
                }
                info!(server = %target, name = handle.name(), connection = handle.connection_id(), "connected to server");
                tokio::select! {
                    _ = handle.closed() => {}
                    _ = shutdown.cancelled() => {
                        handle.close(go_away::Reason::Shutdown, "client node is shutting down");
                        handle.closed().await;
                        node.peers().remove(SERVER_KEY, &handle);
                        return;
                    }
                }
                node.peers().remove(SERVER_KEY, &handle);
                let reason = handle.close_reason();
                warn!(server = %target, %reason, "connection to server lost");
                node.update_link(|link| {
                    link.last_error = Some(reason.clone());
                    link.last_error_at = Some(SystemTime::now());
                });
                if backoff.is_stable(since.elapsed()) {
                    backoff.reset();
                }
                // Replaced by a newer connection with our identity: another
                // process holds it. Retrying at once would flap the pipe, so
                // take the longest wait the backoff allows.
                if handle.peer_go_away() == Some(go_away::Reason::Replaced) {
                    warn!("another connection with this identity replaced ours; backing off");
                    for _ in 0..16 {
                        backoff.next_envelope();
                    }
                }
            }
            Err(error) => {
                let chain = format!("{error:#}");
                warn!(server = %target, "connection attempt failed: {chain}");
                node.update_link(|link| {
                    link.reconnect_attempts += 1;
                    link.last_error = Some(chain);
                    link.last_error_at = Some(SystemTime::now());
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
    connection::establish(
        stream,
        &node.hello(),
        peer,
        node.handlers().clone(),
        &settings.connection,
    )
    .await
    .context("pipe handshake")
}
