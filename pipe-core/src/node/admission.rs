//! What a server node lets in before a client is known, and how many it
//! holds: bounds on handshakes in progress (node-wide and per source
//! address), and an exact count of connections against `max_connections`.
//!
//! A TCP accept costs a task and a TLS handshake that may take up to the
//! handshake deadline; without a bound, anyone who can reach the pipe port
//! can hold thousands of them. Past a bound the connection is closed at
//! once. The connection count is reserved while the peer's `Hello` is
//! judged, so concurrent handshakes cannot all pass the cap.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// Handshakes (TCP accepted, TLS and `Hello` not finished) a server node
/// runs at once: far more than a reconnect storm needs in flight (a
/// handshake takes about a millisecond of CPU), few enough to bound memory.
pub const MAX_HANDSHAKES: usize = 1024;
/// Handshakes from one source address at once. Many clients may share one
/// address (NAT), so this is generous; it stops one host from taking every
/// handshake slot of the node.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 256;

/// The server's admission state, shared by its connection tasks.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    handshaking: AtomicUsize,
    per_source: DashMap<IpAddr, usize>,
    /// Connections admitted (reserved at `Hello`) and not yet ended.
    held: AtomicUsize,
}

/// A handshake in progress; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Handshake {
    admission: Arc<Admission>,
    source: IpAddr,
}

/// A place under `max_connections`, held for the life of one connection.
#[derive(Debug)]
pub(crate) struct Place {
    admission: Arc<Admission>,
}

impl Admission {
    /// A place for a handshake from `source`, or `None` when the node or
    /// that source is at its bound.
    pub(crate) fn start_handshake(self: &Arc<Self>, source: IpAddr) -> Option<Handshake> {
        if !increment_below(&self.handshaking, MAX_HANDSHAKES) {
            return None;
        }
        let admitted = match self.per_source.entry(source) {
            Entry::Occupied(mut entry) if *entry.get() < MAX_HANDSHAKES_PER_SOURCE => {
                *entry.get_mut() += 1;
                true
            }
            Entry::Occupied(_) => false,
            Entry::Vacant(entry) => {
                entry.insert(1);
                true
            }
        };
        if !admitted {
            self.handshaking.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Handshake {
            admission: self.clone(),
            source,
        })
    }

    /// A place for one more connection under `cap`, or `None` at the cap.
    pub(crate) fn reserve(self: &Arc<Self>, cap: usize) -> Option<Place> {
        increment_below(&self.held, cap).then(|| Place {
            admission: self.clone(),
        })
    }
}

/// Adds one to `counter` unless it is already at `bound`.
fn increment_below(counter: &AtomicUsize, bound: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < bound).then_some(n + 1)
        })
        .is_ok()
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.admission.handshaking.fetch_sub(1, Ordering::AcqRel);
        if let Entry::Occupied(mut entry) = self.admission.per_source.entry(self.source) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.admission.held.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_bounded_per_source_and_freed_on_drop() {
        let admission = Arc::new(Admission::default());
        let busy: IpAddr = [127, 0, 0, 2].into();
        let held: Vec<_> = (0..MAX_HANDSHAKES_PER_SOURCE)
            .map(|_| admission.start_handshake(busy).expect("under the bound"))
            .collect();
        assert!(admission.start_handshake(busy).is_none());
        // Another source is not affected.
        let other = admission.start_handshake([127, 0, 0, 1].into());
        assert!(other.is_some());
        drop(held);
        drop(other);
        assert!(
            admission.per_source.is_empty(),
            "no entry outlives its handshakes"
        );
        assert_eq!(admission.handshaking.load(Ordering::Acquire), 0);
        assert!(admission.start_handshake(busy).is_some());
    }

    #[test]
    fn places_are_exact_under_the_cap() {
        let admission = Arc::new(Admission::default());
        let first = admission.reserve(2).unwrap();
        let second = admission.reserve(2).unwrap();
        assert!(admission.reserve(2).is_none());
        assert_eq!(admission.held.load(Ordering::Acquire), 2);
        drop(first);
        assert!(admission.reserve(2).is_some());
        drop(second);
    }
}
