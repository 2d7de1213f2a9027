//! Memory budgets for the bodies a node holds on its peers' behalf: bodies
//! inline in events, streamed bodies' windows not yet read, and bodies
//! collected whole for handlers that do not stream.
//!
//! A budget counts bytes against a limit and may have a parent (a
//! connection's budget inside the node's), so a charge must fit both. What
//! is held is a [`Held`] guard; dropping it gives the bytes back. Counting is
//! lock-free: an atomic per level, a charge that does not fit is undone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Default bytes of bodies a node holds for all its peers together.
pub const DEFAULT_MAX_BODY_MEMORY: usize = 1 << 30;
/// Default bytes of bodies a node holds for one peer connection.
pub const DEFAULT_MAX_BODY_MEMORY_PER_PEER: usize = 256 << 20;

/// Which budget refused a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    /// The peer connection's own budget.
    Peer,
    /// The node's, shared by every connection.
    Node,
}

/// A charge that did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} memory for bodies is exhausted: {wanted} more bytes do not fit its {limit}-byte budget",
    match scope { BudgetScope::Peer => "this peer's", BudgetScope::Node => "the node's" }
)]
pub struct OverBudget {
    /// Which budget refused.
    pub scope: BudgetScope,
    /// Bytes asked for.
    pub wanted: usize,
    /// That budget's limit.
    pub limit: usize,
}

impl OverBudget {
    /// Whether the charge could never fit, however much is given back: the
    /// caller should be told its body is too large (413) rather than to
    /// come back later (503).
    pub fn never_fits(&self) -> bool {
        self.wanted > self.limit
    }
}

/// Bytes held against a limit, within an optional parent budget.
#[derive(Debug)]
pub struct MemoryBudget {
    scope: BudgetScope,
    limit: usize,
    used: AtomicUsize,
    parent: Option<Arc<MemoryBudget>>,
}

impl MemoryBudget {
    /// A node's budget of `limit` bytes.
    pub fn node(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            scope: BudgetScope::Node,
            limit,
            used: AtomicUsize::new(0),
            parent: None,
        })
    }

    /// A peer connection's budget of `limit` bytes inside this one.
    pub fn peer(self: &Arc<Self>, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            scope: BudgetScope::Peer,
            limit,
            used: AtomicUsize::new(0),
            parent: Some(self.clone()),
        })
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Holds `bytes` more, if they fit this budget and its parent.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Result<Held, OverBudget> {
        self.charge(bytes)?;
        Ok(Held {
            budget: self.clone(),
            bytes: AtomicUsize::new(bytes),
        })
    }

    /// Whether `bytes` could fit this budget and its parent were nothing
    /// else held: `Err` means never.
    pub fn could_ever_hold(&self, bytes: usize) -> Result<(), OverBudget> {
        if bytes > self.limit {
            return Err(OverBudget {
                scope: self.scope,
                wanted: bytes,
                limit: self.limit,
            });
        }
        self.parent
            .as_ref()
            .map_or(Ok(()), |parent| parent.could_ever_hold(bytes))
    }

    /// Nothing held yet; grows with [`Held::grow`].
    pub fn hold_nothing(self: &Arc<Self>) -> Held {
        Held {
            budget: self.clone(),
            bytes: AtomicUsize::new(0),
        }
    }

    fn charge(&self, bytes: usize) -> Result<(), OverBudget> {
        if bytes == 0 {
            return Ok(());
        }
        let over = OverBudget {
            scope: self.scope,
            wanted: bytes,
            limit: self.limit,
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map_err(|_| over)?;
        if let Some(parent) = &self.parent
            && let Err(over) = parent.charge(bytes)
        {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            return Err(over);
        }
        Ok(())
    }

    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(parent) = &self.parent {
            parent.release(bytes);
        }
    }
}

/// Bytes held in a budget until dropped. Shared (`&self` methods) so one
/// task may charge what another consumes, as with a streamed body's window.
#[derive(Debug)]
pub struct Held {
    budget: Arc<MemoryBudget>,
    bytes: AtomicUsize,
}

impl Held {
    /// Holds `bytes` more, if they fit.
    pub fn grow(&self, bytes: usize) -> Result<(), OverBudget> {
        self.budget.charge(bytes)?;
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Ok(())
    }

    /// Gives back up to `bytes` (never more than is held).
    pub fn shrink(&self, bytes: usize) {
        let given = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            })
            .map_or(0, |held| held.min(bytes));
        self.budget.release(given);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.release(*self.bytes.get_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_must_fit_the_peer_and_the_node() {
        let node = MemoryBudget::node(100);
        let (a, b) = (node.peer(60), node.peer(60));
        let first = a.hold(50).unwrap();
        let over = a.hold(20).unwrap_err();
        assert_eq!(over.scope, BudgetScope::Peer);
        assert!(!over.never_fits());
        let second = b.hold(40).unwrap();
        let over = b.hold(20).unwrap_err();
        assert_eq!(over.scope, BudgetScope::Node, "the node has 10 left");
        assert_eq!(b.used(), 40, "a refused charge is undone");
        assert!(a.hold(61).unwrap_err().never_fits());
        drop(first);
        assert_eq!((a.used(), node.used()), (0, 40));
        drop(second);
        assert_eq!(node.used(), 0);
    }

    #[test]
    fn held_grows_and_shrinks_and_gives_back_the_rest_when_dropped() {
        let node = MemoryBudget::node(100);
        let peer = node.peer(100);
        let held = peer.hold_nothing();
        held.grow(30).unwrap();
        held.grow(30).unwrap();
        held.shrink(10);
        assert_eq!((held.bytes(), node.used()), (50, 50));
        held.shrink(500);
        assert_eq!((held.bytes(), node.used()), (0, 0), "never below zero");
        held.grow(70).unwrap();
        assert!(held.grow(31).is_err());
        drop(held);
        assert_eq!((peer.used(), node.used()), (0, 0));
    }
}
