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

    mod properties {
        //! The set against a model: an ordered log of the remembered ids.

        use std::collections::{BTreeMap, HashMap};

        use proptest::prelude::*;

        use super::super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Remember(u64),
            /// `count` ids in a row from `first`: enough of them overflow
            /// the set.
            RememberRun {
                first: u64,
                count: u64,
            },
            Forget(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            // Ids from a small range, so they repeat and are forgotten.
            let id = 0u64..6000;
            prop_oneof![
                3 => id.clone().prop_map(Op::Remember),
                1 => (id.clone(), 1u64..3000).prop_map(|(first, count)| Op::RememberRun { first, count }),
                3 => id.prop_map(Op::Forget),
            ]
        }

        /// The ids remembered, by when they were first remembered.
        #[derive(Default)]
        struct Model {
            by_age: BTreeMap<u64, u64>,
            age_of: HashMap<u64, u64>,
            clock: u64,
        }

        impl Model {
            fn remember(&mut self, id: u64) {
                if self.age_of.contains_key(&id) {
                    return;
                }
                self.clock += 1;
                self.by_age.insert(self.clock, id);
                self.age_of.insert(id, self.clock);
                if self.by_age.len() > REMEMBERED_CANCELS {
                    let (_, oldest) = self.by_age.pop_first().unwrap();
                    self.age_of.remove(&oldest);
                }
            }

            fn forget(&mut self, id: u64) -> bool {
                let Some(age) = self.age_of.remove(&id) else {
                    return false;
                };
                self.by_age.remove(&age);
                true
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn bounded_and_remembers_the_most_recent(ops in prop::collection::vec(op(), 1..60)) {
                let (mut ids, mut model) = (CancelledIds::default(), Model::default());
                for op in ops {
                    match op {
                        Op::Remember(id) => {
                            ids.remember(id);
                            model.remember(id);
                        }
                        Op::RememberRun { first, count } => {
                            for id in first..first + count {
                                ids.remember(id);
                                model.remember(id);
                            }
                        }
                        Op::Forget(id) => prop_assert_eq!(ids.forget(id), model.forget(id)),
                    }
                    prop_assert!(ids.ids.len() <= REMEMBERED_CANCELS);
                    prop_assert_eq!(ids.order.len(), ids.ids.len());
                }
                let remembered: Vec<u64> = ids.order.iter().copied().collect();
                let expected: Vec<u64> = model.by_age.values().copied().collect();
                prop_assert_eq!(remembered, expected);
            }
        }
    }
}
