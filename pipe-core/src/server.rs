//! The server node's pipe side: accepts client connections over mTLS and
//! files each under its certificate identity (newest wins).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::connection::{self, PeerInfo};
use crate::handler::Side;
use crate::node::Node;
use crate::pki::Role;
use crate::proto::go_away;
use crate::tls;

/// Accepts client nodes on `listener` until `shutdown`, then tells every
/// connected client to go away and waits for the connection tasks to end.
pub async fn run(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let tasks = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, node = node.name(), "accepting client nodes");
    }
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        // The handshake runs in the spawned task, never in this loop: a slow
        // or hostile peer stalls only itself.
        tasks.spawn(serve_client(
            tcp,
            remote,
            acceptor.clone(),
            node.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    for (_, peer) in node.peers().list() {
        peer.close(go_away::Reason::Shutdown, "server node is shutting down");
    }
    tasks.close();
    tasks.wait().await;
}

async fn serve_client(
    tcp: TcpStream,
    remote: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    node: Arc<Node>,
    shutdown: CancellationToken,
) {
    let settings = node.settings();
    let stream = match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            warn!(%remote, "TLS handshake refused: {error}");
            return;
        }
        Err(_) => {
            warn!(%remote, timeout = ?settings.handshake_timeout, "TLS handshake timed out");
            return;
        }
    };
    let name = match tls::peer_identity(stream.get_ref().1.peer_certificates(), Role::Client) {
        Ok(name) => name,
        Err(error) => {
            warn!(%remote, "client refused: {error}");
            return;
        }
    };
    let peer = PeerInfo {
        name: name.clone(),
        side: Side::Client,
        remote_addr: Some(remote),
    };
    let handle = match connection::establish(
        stream,
        &node.hello(),
        peer,
        node.handlers().clone(),
        &settings.connection,
    )
    .await
    {
        Ok(handle) => handle,
        Err(error) => {
            warn!(%remote, client = %name, "pipe handshake failed: {error}");
            return;
        }
    };
    if let Some(replaced) = node.peers().insert(&name, handle.clone()) {
        info!(client = %name, old = replaced.connection_id(), new = handle.connection_id(), "newer connection replaces the old one");
        replaced.close(
            go_away::Reason::Replaced,
            "a newer connection with the same identity replaced this one",
        );
    }
    info!(client = %name, %remote, connection = handle.connection_id(), "client connected");
    tokio::select! {
        _ = handle.closed() => {}
        _ = shutdown.cancelled() => {
            handle.close(go_away::Reason::Shutdown, "server node is shutting down");
            handle.closed().await;
        }
    }
    node.peers().remove(&name, &handle);
    info!(client = %name, connection = handle.connection_id(), reason = %handle.close_reason(), "client disconnected");
}
