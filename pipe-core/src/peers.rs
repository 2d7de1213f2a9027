//! The peer directory: which connection serves peer X.
//!
//! Everything that needs a connection asks here, by key, so that a later
//! multi-server deployment can answer "held by another node" behind the same
//! small interface. A server node keys its clients by certificate identity; a
//! client node keeps its one server under [`SERVER_KEY`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::{DashMap, DashSet};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use crate::connection::PeerHandle;

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

/// Live connections by key, newest wins.
#[derive(Debug, Default)]
pub struct Peers {
    live: DashMap<String, PeerHandle>,
    /// `live.len()`, kept apart so admission checks are O(1) under a storm.
    count: AtomicUsize,
    seen: DashSet<String>,
    changed: Notify,
}

impl Peers {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `handle` the connection for `key`; returns the one it replaced,
    /// which the caller should close.
    pub fn insert(&self, key: &str, handle: PeerHandle) -> Option<PeerHandle> {
        self.seen.insert(key.to_owned());
        let replaced = self.live.insert(key.to_owned(), handle);
        if replaced.is_none() {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
        self.changed.notify_waiters();
        replaced
    }

    /// Forgets `handle` under `key`, unless a newer connection already
    /// replaced it.
    pub fn remove(&self, key: &str, handle: &PeerHandle) {
        let removed = self.live.remove_if(key, |_, current| {
            current.connection_id() == handle.connection_id()
        });
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        self.changed.notify_waiters();
    }

    /// The connection for `key` that takes new requests, if any (one that
    /// is going away is skipped, so callers wait for its successor).
    pub fn get(&self, key: &str) -> Option<PeerHandle> {
        self.live
            .get(key)
            .map(|entry| entry.value().clone())
            .filter(PeerHandle::is_accepting)
    }

    /// The connection for `key`, waiting up to `wait` for one to appear.
    pub async fn wait_for(&self, key: &str, wait: Duration) -> Lookup {
        // The common case, without touching the notifier's lock.
        if let Some(handle) = self.get(key) {
            return Lookup::Connected(handle);
        }
        let deadline = Instant::now() + wait;
        loop {
            // Register interest before looking, so an insert between the
            // look and the wait is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(handle) = self.get(key) {
                return Lookup::Connected(handle);
            }
            tokio::select! {
                _ = notified => {}
                _ = sleep_until(deadline) => break,
            }
        }
        match self.get(key) {
            Some(handle) => Lookup::Connected(handle),
            None if self.seen.contains(key) => Lookup::Disconnected,
            None => Lookup::Unknown,
        }
    }

    /// All live connections, sorted by key.
    pub fn list(&self) -> Vec<(String, PeerHandle)> {
        let mut peers: Vec<_> = self
            .live
            .iter()
            .filter(|entry| !entry.value().is_closed())
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect();
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        peers
    }

    /// Number of connections held (including any that just ended and are
    /// about to be removed).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
