//! Ids the peer cancelled before their events reached us. A `Cancel` may
//! overtake its `Event` (control frames are written first); the receiver
//! remembers such ids, boundedly, and drops the event if it still comes, so
//! a request whose caller already gave up never runs.

use std::collections::{HashSet, VecDeque};

/// Cancelled ids remembered at most: far more than can be in flight between
/// a cancel and its event (the sender's frames queue holds 1024), small
/// enough to cost little (a few tens of KiB at most).
pub(super) const REMEMBERED_CANCELS: usize = 4096;

/// A bounded set of ids; the oldest is forgotten first.
#[derive(Debug, Default)]
pub(super) struct CancelledIds {
    order: VecDeque<u64>,
    ids: HashSet<u64>,
}

impl CancelledIds {
    /// Remembers `id`, forgetting the oldest past [`REMEMBERED_CANCELS`].
    pub(super) fn remember(&mut self, id: u64) {
        if !self.ids.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED_CANCELS
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
    }

    /// Whether `id` was cancelled; forgets it either way.
    pub(super) fn forget(&mut self, id: u64) -> bool {
        if !self.ids.remove(&id) {
            return false;
        }
        self.order.retain(|&other| other != id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_stays_bounded_and_forgets_the_oldest() {
        let mut ids = CancelledIds::default();
        for id in 0..(REMEMBERED_CANCELS as u64 + 10) {
            ids.remember(id);
        }
        assert_eq!(ids.ids.len(), REMEMBERED_CANCELS);
        assert!(!ids.forget(0));
        assert!(ids.forget(REMEMBERED_CANCELS as u64 + 9));
        assert!(!ids.forget(REMEMBERED_CANCELS as u64 + 9));
    }
}
