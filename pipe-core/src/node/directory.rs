//! The peer directory: the one seam for "which connection serves peer X".
//!
//! Everything that needs a peer's connection asks a [`PeerDirectory`]: look
//! up by name, wait for one, hold one, list them. Holding a peer returns a
//! [`Session`] whose drop lets go of it, updates the gauges and emits the
//! connection event; a newer connection for the same name closes the older
//! one inside the directory. [`LocalPeers`] is the one-node directory; a
//! cluster implements the same trait over its backplane.
//!
//! A server node keys its clients by certificate identity; a client node
//! keeps its one server under [`SERVER_KEY`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::{DashMap, DashSet};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tracing::info;

use super::events::{ConnectionEvent, EventSink};
use super::metrics::{Counter, Gauge, Metrics};
use crate::link::PeerHandle;
use crate::wire::proto::go_away;

/// The key under which a client node keeps its connection to the server.
pub const SERVER_KEY: &str = "server";

/// The outcome of waiting for a peer.
#[derive(Debug)]
pub enum Lookup {
    /// A live connection to the peer.
    Connected(PeerHandle),
    /// The peer was connected at some point, but is not now.
    Disconnected,
    /// No peer of that name has connected since this node started.
    Unknown,
}

/// A boxed future of a [`Lookup`].
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Lookup> + Send + 'a>>;

/// Which connection serves peer X: the seam between the nodes' pipe tasks
/// and everything that needs a peer.
pub trait PeerDirectory: Send + Sync + fmt::Debug + 'static {
    /// The connection for `name` that takes new requests, if any (one that
    /// is going away is skipped, so callers wait for its successor).
    fn get(&self, name: &str) -> Option<PeerHandle>;

    /// The connection for `name`, waiting up to `wait` for one to appear.
    fn wait_for<'a>(&'a self, name: &'a str, wait: Duration) -> LookupFuture<'a>;

    /// Makes `handle` the connection for `name` until the returned session
    /// is dropped; a connection it replaces is closed.
    fn hold(&self, name: &str, handle: PeerHandle) -> Session;

    /// All live connections, sorted by name.
    fn list(&self) -> Vec<(String, PeerHandle)>;

    /// Number of connections held (including any that just ended and are
    /// about to be let go).
    fn len(&self) -> usize;

    /// Whether no peer is connected.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests in flight over all connections, both directions.
    fn in_flight(&self) -> usize {
        self.list()
            .iter()
            .map(|(_, peer)| peer.in_flight_out() + peer.in_flight_in())
            .sum()
    }
}

/// What a session does when dropped: lets go of its peer.
type Release = Box<dyn FnOnce(&PeerHandle) + Send + Sync>;

/// A peer held in a directory. Dropping it lets go of the peer (unless a
/// newer connection replaced it already), updates the gauges and emits
/// `connection_removed`.
#[must_use = "dropping the session unregisters the peer at once"]
pub struct Session {
    handle: PeerHandle,
    release: Option<Release>,
}

impl Session {
    /// A session for `handle` that calls `release` when dropped.
    pub fn new(
        handle: PeerHandle,
        release: impl FnOnce(&PeerHandle) + Send + Sync + 'static,
    ) -> Self {
        Self {
            handle,
            release: Some(Box::new(release)),
        }
    }

    /// The connection held.
    pub fn handle(&self) -> &PeerHandle {
        &self.handle
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("handle", &self.handle)
            .finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(&self.handle);
        }
    }
}

/// The directory of one node: live connections by name, newest wins.
#[derive(Debug, Clone)]
pub struct LocalPeers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    live: DashMap<String, PeerHandle>,
    /// `live.len()`, kept apart so admission checks are O(1) under a storm.
    count: AtomicUsize,
    seen: DashSet<String>,
    changed: Notify,
    metrics: Metrics,
    events: EventSink,
}

impl LocalPeers {
    /// An empty directory reporting to `metrics` and `events`.
    pub fn new(metrics: Metrics, events: EventSink) -> Self {
        Self {
            inner: Arc::new(Inner {
                live: DashMap::new(),
                count: AtomicUsize::new(0),
                seen: DashSet::new(),
                changed: Notify::new(),
                metrics,
                events,
            }),
        }
    }
}

impl Inner {
    fn get(&self, name: &str) -> Option<PeerHandle> {
        self.live
            .get(name)
            .map(|entry| entry.value().clone())
            .filter(PeerHandle::is_accepting)
    }

    /// Forgets `handle` under `name`, unless a newer connection replaced it.
    fn release(&self, name: &str, handle: &PeerHandle) {
        let removed = self.live.remove_if(name, |_, current| {
            current.connection_id() == handle.connection_id()
        });
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        self.changed.notify_waiters();
        self.metrics.incr(Counter::ConnectionBroken);
        self.metrics
            .gauge(Gauge::Peers, self.count.load(Ordering::Acquire) as u64);
        self.events.emit(ConnectionEvent::ConnectionRemoved {
            peer: handle.name().to_owned(),
            connection_id: handle.connection_id(),
            reason: handle.close_reason(),
        });
    }
}

impl PeerDirectory for LocalPeers {
    fn get(&self, name: &str) -> Option<PeerHandle> {
        self.inner.get(name)
    }

    fn wait_for<'a>(&'a self, name: &'a str, wait: Duration) -> LookupFuture<'a> {
        Box::pin(async move {
            let inner = &self.inner;
            // The common case, without touching the notifier's lock.
            if let Some(handle) = inner.get(name) {
                return Lookup::Connected(handle);
            }
            let deadline = Instant::now() + wait;
            loop {
                // Register interest before looking, so an insert between the
                // look and the wait is not missed.
                let notified = inner.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(handle) = inner.get(name) {
                    return Lookup::Connected(handle);
                }
                tokio::select! {
                    _ = notified => {}
                    _ = sleep_until(deadline) => break,
                }
            }
            match inner.get(name) {
                Some(handle) => Lookup::Connected(handle),
                None if inner.seen.contains(name) => Lookup::Disconnected,
                None => Lookup::Unknown,
            }
        })
    }

    fn hold(&self, name: &str, handle: PeerHandle) -> Session {
        let inner = &self.inner;
        inner.seen.insert(name.to_owned());
        let replaced = inner.live.insert(name.to_owned(), handle.clone());
        if replaced.is_none() {
            inner.count.fetch_add(1, Ordering::AcqRel);
        }
        inner.changed.notify_waiters();
        if let Some(replaced) = replaced {
            info!(peer = %name, old = replaced.connection_id(), new = handle.connection_id(), "newer connection replaces the old one");
            replaced.close(
                go_away::Reason::Replaced,
                "a newer connection with the same identity replaced this one",
            );
        }
        inner.metrics.incr(Counter::Connected);
        inner
            .metrics
            .gauge(Gauge::Peers, inner.count.load(Ordering::Acquire) as u64);
        inner.events.emit(ConnectionEvent::ConnectionAdded {
            peer: handle.name().to_owned(),
            remote_addr: handle
                .peer()
                .remote_addr
                .map(|a| a.to_string())
                .unwrap_or_default(),
            connection_id: handle.connection_id(),
        });
        let owner = self.inner.clone();
        let name = name.to_owned();
        Session::new(handle, move |handle| owner.release(&name, handle))
    }

    fn list(&self) -> Vec<(String, PeerHandle)> {
        let mut peers: Vec<_> = self
            .inner
            .live
            .iter()
            .filter(|entry| !entry.value().is_closed())
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect();
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        peers
    }

    fn len(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }
}

/// Tells every peer in `peers` to go away, waits (at most `grace`) for
/// requests in flight to finish, then closes what is left and waits for it
/// to be closed. The one drain of both node kinds.
pub(crate) async fn drain(peers: &[PeerHandle], grace: Duration, message: &str) {
    for peer in peers {
        peer.go_away(go_away::Reason::Shutdown, message);
    }
    let all_drained = futures_util::future::join_all(peers.iter().map(PeerHandle::drained));
    if tokio::time::timeout(grace, all_drained).await.is_err() {
        tracing::warn!(
            ?grace,
            "requests still in flight after the drain grace; closing anyway"
        );
    }
    for peer in peers {
        peer.close(go_away::Reason::Shutdown, message);
    }
    for peer in peers {
        peer.closed().await;
    }
}
