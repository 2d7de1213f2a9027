//! Cutting off peers whose certificate is revoked after they connected.
//!
//! rustls refuses a revoked certificate at the handshake; a connection
//! established before the list named its peer is closed here. The node
//! keeps the list in force in a watch channel that a reload replaces, and
//! the task that serves each connection, which knows its peer's
//! certificate, checks it against every new list: the check runs where the
//! connection is owned, and no table of certificates is kept beside the
//! peer directory.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::warn;

use super::metrics::{Counter, Metrics};
use crate::link::{CertificateId, PeerHandle, RevocationList};
use crate::wire::proto::go_away;

/// The revocation list a node enforces, replaced on reload, and what
/// closing a connection for it reports to.
#[derive(Debug)]
pub(super) struct RevocationWatch {
    current: watch::Sender<Arc<RevocationList>>,
    node_name: String,
    metrics: Metrics,
}

impl RevocationWatch {
    /// No list yet, for node `node_name` reporting to `metrics`.
    pub(super) fn new(node_name: &str, metrics: Metrics) -> Self {
        Self {
            current: watch::Sender::new(Arc::new(RevocationList::empty())),
            node_name: node_name.to_owned(),
            metrics,
        }
    }

    /// Puts `list` in force: connections whose peer it names are closed.
    pub(super) fn replace(&self, list: Arc<RevocationList>) {
        self.current.send_replace(list);
    }

    /// The list in force.
    pub(super) fn current(&self) -> Arc<RevocationList> {
        self.current.borrow().clone()
    }

    /// Resolves when `handle`'s connection has ended. If the revocation
    /// list names the peer's `certificate`, the list in force now or one a
    /// reload puts in force later, the connection is first closed with
    /// `GoAway` (`Revoked`).
    ///
    /// Checked once on entry, so a connection whose handshake passed under
    /// the list before a reload is caught too.
    pub(super) async fn closed_or_revoked(
        &self,
        handle: &PeerHandle,
        certificate: Option<&CertificateId>,
    ) {
        let Some(certificate) = certificate else {
            return handle.closed().await;
        };
        let mut lists = self.current.subscribe();
        loop {
            let revoked = lists.borrow_and_update().revokes(certificate);
            if revoked {
                self.cut_off(handle, certificate);
                break;
            }
            tokio::select! {
                _ = handle.closed() => return,
                changed = lists.changed() => {
                    if changed.is_err() {
                        // The node is gone; no list will come any more.
                        break;
                    }
                }
            }
        }
        handle.closed().await;
    }

    /// Closes a connection whose peer's certificate is revoked, saying so
    /// to the peer and in the log.
    fn cut_off(&self, handle: &PeerHandle, certificate: &CertificateId) {
        let serial = certificate.serial_hex();
        warn!(
            peer = handle.name(),
            connection = handle.connection_id(),
            %serial,
            "closing the connection: the peer's certificate is revoked"
        );
        self.metrics.incr(Counter::PeerRevoked);
        handle.close(
            go_away::Reason::Revoked,
            format!(
                "certificate revoked: the certificate of {} (serial {serial}) is on {}'s revocation list",
                handle.name(),
                self.node_name
            ),
        );
    }
}
