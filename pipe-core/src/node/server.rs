//! The server node's pipe side: accepts client connections over mTLS and
//! files each under its certificate identity (newest wins).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::admission::{Admission, Handshake, Place};
use super::directory::drain;
use super::metrics::Counter;
use super::node::Node;
use crate::link::{self, ALPN, CertificateId, PeerHandle, PeerInfo, Reloadable, Role};
use crate::wire::Side;
use crate::wire::proto::{GoAway, Hello, go_away};

/// Accepts client nodes on `listener` until `shutdown`; then drains: every
/// client is told to go away, requests in flight get the node's drain grace
/// to finish, and the connections close.
pub async fn run(
    listener: TcpListener,
    tls: Arc<Reloadable<rustls::ServerConfig>>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let admission = Arc::new(Admission::default());
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, node = node.name(), "accepting client nodes");
    }
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: pause instead of spinning.
                    warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(handshake) = admission.start_handshake(remote.ip()) else {
            // Closed at once: no task, no TLS for a peer past the bounds.
            node.metrics().incr(Counter::ConnectionRefused);
            debug!(%remote, "connection closed: too many handshakes in progress (from this address or in all)");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // The handshake runs in the spawned task, never in this loop: a slow
        // or hostile peer stalls only itself.
        // The TLS config current at accept time: a reload affects new
        // connections only.
        let acceptor = TlsAcceptor::from(tls.current());
        let accepted = Accepted {
            tcp,
            remote,
            handshake,
            admission: admission.clone(),
        };
        tasks.spawn(serve_client(accepted, acceptor, node.clone()));
    }
    drop(listener);
    node.begin_stopping();
    let peers: Vec<PeerHandle> = node.peers().list().into_iter().map(|(_, p)| p).collect();
    let grace = node.settings().drain_grace;
    drain(&peers, grace, "server node is shutting down").await;
    tasks.close();
    tasks.wait().await;
}

/// A TCP connection let in, with its place among the handshakes.
struct Accepted {
    tcp: TcpStream,
    remote: SocketAddr,
    handshake: Handshake,
    admission: Arc<Admission>,
}

/// Whether a client that completed TLS may join, by its `Hello`; if so, its
/// place under `max_connections`, reserved now so that concurrent
/// handshakes cannot all pass the cap.
fn admit(
    node: &Node,
    name: &str,
    hello: &Hello,
    admission: &Arc<Admission>,
) -> Result<Place, GoAway> {
    let refuse = |reason: go_away::Reason, message: String| {
        Err(GoAway {
            reason: reason as i32,
            message,
        })
    };
    if node.is_stopping() {
        return refuse(
            go_away::Reason::Shutdown,
            "server node is shutting down".to_owned(),
        );
    }
    let holder = node.peers().get(name);
    if hello.standby {
        // Held here, or by another node of the cluster: either way the
        // client would take the identity back from the newer connection.
        let held = if holder.is_some() {
            Some(String::new())
        } else {
            let cluster = node.cluster();
            cluster.and_then(|cluster| {
                cluster
                    .holder_of(name)
                    .map(|other| format!(" on node {other}"))
            })
        };
        if let Some(where_held) = held {
            return refuse(
                go_away::Reason::IdentityInUse,
                format!("identity {name:?} is held by a newer connection{where_held}; standing by"),
            );
        }
    }
    let cap = node.settings().max_connections;
    // A newer connection for a held name replaces the old one, which
    // closes: it may pass the cap for that moment.
    let bound = if holder.is_some() { usize::MAX } else { cap };
    match admission.reserve(bound) {
        Some(place) => Ok(place),
        None => refuse(
            go_away::Reason::Overloaded,
            format!("server is at its cap of {cap} connections"),
        ),
    }
}

async fn serve_client(accepted: Accepted, acceptor: TlsAcceptor, node: Arc<Node>) {
    let Accepted {
        tcp,
        remote,
        handshake,
        admission,
    } = accepted;
    node.metrics().incr(Counter::ConnectAttempt);
    // The handshakes are boxed: this task lives as long as the connection,
    // and its size is that of its largest step; boxed, their state is freed
    // once they are done instead of staying part of every idle connection.
    let Some(stream) = Box::pin(accept_tls(acceptor, tcp, remote, &node)).await else {
        return;
    };
    // rustls accepts a client that offers no ALPN at all; restpipe does not:
    // a peer that did not ask for restpipe/1 speaks something else.
    if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
        let alpn = String::from_utf8_lossy(ALPN);
        refuse_client(
            &node,
            remote,
            format_args!("client refused: it did not negotiate ALPN {alpn:?}"),
        );
        return;
    }
    let certificates = stream.get_ref().1.peer_certificates();
    let name = match link::peer_identity(certificates, Role::Client) {
        Ok(name) => name,
        Err(error) => {
            refuse_client(&node, remote, format_args!("client refused: {error}"));
            return;
        }
    };
    // Kept for the life of the connection: a reload that revokes it closes it.
    let certificate = CertificateId::of_peer(certificates);
    let peer = PeerInfo {
        name: name.clone(),
        side: Side::Client,
        remote_addr: Some(remote),
    };
    let endpoint = node.endpoint();
    let mut place = None;
    let established = Box::pin(link::establish(stream, &endpoint, peer, |hello| {
        place = Some(admit(&node, &name, hello, &admission)?);
        Ok(())
    }))
    .await;
    drop(handshake);
    let handle = match established {
        Ok((handle, _hello)) => handle,
        Err(error) => {
            // The client's name stays a field of its own, for log filters.
            warn!(%remote, client = %name, "pipe handshake failed: {error}");
            node.recent_errors().record(
                "handshake",
                format_args!("{remote}: pipe handshake with {name} failed: {error}"),
            );
            return;
        }
    };
    let session = node.peers().hold(&name, handle.clone());
    // Reachable from every node of the cluster while held here.
    let held = node
        .cluster()
        .map(|cluster| cluster.hold(&name, handle.clone()));
    if let Some(jobs) = node.jobs() {
        jobs.wake(); // the client's queue goes out now
    }
    node.revocation_watch
        .closed_or_revoked(&handle, certificate.as_ref())
        .await;
    drop(held);
    drop(session);
    drop(place);
}

/// Logs a client refused (or a handshake failed) and keeps it among the
/// node's recent errors, where the status page shows it.
fn refuse_client(node: &Node, remote: SocketAddr, message: impl std::fmt::Display) {
    warn!(%remote, "{message}");
    node.recent_errors()
        .record("handshake", format_args!("{remote}: {message}"));
}

/// The TLS handshake, within the node's deadline; `None` (logged, with
/// the reason) if it failed.
async fn accept_tls(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    node: &Node,
) -> Option<TlsStream<TcpStream>> {
    let deadline = node.settings().handshake_timeout;
    match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            match revocation_in(&error) {
                Some(Revoked::Client) => {
                    node.metrics().incr(Counter::PeerRevoked);
                    refuse_client(
                        node,
                        remote,
                        "client refused: its certificate is on this node's revocation list",
                    );
                }
                Some(Revoked::Ours) => refuse_client(
                    node,
                    remote,
                    "a client refused this node's certificate as revoked (on the client's revocation list)",
                ),
                None if closed_by_peer(&error) => refuse_client(
                    node,
                    remote,
                    format_args!(
                        "TLS handshake abandoned: the caller closed the connection before it finished ({error})"
                    ),
                ),
                None => refuse_client(node, remote, format_args!("TLS handshake refused: {error}")),
            }
            None
        }
        Err(_) => {
            refuse_client(
                node,
                remote,
                format_args!("TLS handshake timed out after {deadline:?}"),
            );
            None
        }
    }
}

/// Whether a handshake failed because the caller hung up: nothing was
/// refused (a client whose own handshake deadline passed retries; a port
/// scanner does not).
fn closed_by_peer(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
    )
}

/// Whose certificate a failed TLS handshake found revoked.
enum Revoked {
    /// Ours is on the client's revocation list (it sent the alert).
    Ours,
    /// The client's is on ours.
    Client,
}

/// Whether a TLS handshake failed for a revoked certificate, and whose.
fn revocation_in(error: &std::io::Error) -> Option<Revoked> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked) => {
            Some(Revoked::Client)
        }
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked) => {
            Some(Revoked::Ours)
        }
        _ => None,
    }
}
