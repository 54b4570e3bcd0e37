//! The pipeline's handled idempotency keys: the newest [`MAX_HANDLED_KEYS`] distinct keys in the
//! order they were first handled. The replicated checkpoint keeps one (every replica applies the
//! same keys in the same order) and the leader's running pipeline keeps one.

use std::collections::{HashSet, VecDeque};

use foldhash::fast::FixedState;

use super::state::MAX_HANDLED_KEYS;

/// A bounded set of `(producer, sequence)` keys that remembers insertion order. Membership is a
/// hash lookup with a fixed-seed fast hasher: deterministic, and an order of magnitude cheaper
/// than SipHash for two `u64`s (it ran on every event the pipeline handled).
#[derive(Debug, Clone)]
pub struct HandledKeys {
    set: HashSet<(u64, u64), FixedState>,
    order: VecDeque<(u64, u64)>,
}

impl Default for HandledKeys {
    fn default() -> Self {
        HandledKeys { set: HashSet::with_hasher(FixedState::with_seed(0)), order: VecDeque::new() }
    }
}

impl PartialEq for HandledKeys {
    /// The set follows from the order, so the order alone decides.
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Eq for HandledKeys {}

impl HandledKeys {
    /// Remembers `key` as the newest; false if it is remembered already (its place unchanged).
    /// Does not forget: call [`forget_beyond_bound`](Self::forget_beyond_bound).
    pub fn insert(&mut self, key: (u64, u64)) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        true
    }

    /// Forgets the oldest keys until at most [`MAX_HANDLED_KEYS`] remain.
    pub fn forget_beyond_bound(&mut self) {
        while self.order.len() > MAX_HANDLED_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        debug_assert_eq!(self.set.len(), self.order.len(), "every remembered key is in the set once");
    }

    /// True if `key` is remembered.
    pub fn contains(&self, key: &(u64, u64)) -> bool {
        self.set.contains(key)
    }

    /// The remembered keys, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.order.iter().copied()
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True if no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The structure this one replaced (a `BTreeSet` beside the order), as the model.
    #[derive(Default)]
    struct Model {
        set: BTreeSet<(u64, u64)>,
        order: VecDeque<(u64, u64)>,
    }

    impl Model {
        fn insert(&mut self, k: (u64, u64)) -> bool {
            let new = self.set.insert(k);
            if new {
                self.order.push_back(k);
            }
            new
        }
        fn forget(&mut self, bound: usize) {
            while self.order.len() > bound {
                let k = self.order.pop_front().expect("longer than the bound");
                self.set.remove(&k);
            }
        }
    }

    /// Keys from few producers with nearby sequences (so repeats happen), in batches of 0..2000;
    /// producer 9's low sequences repeat the oldest keys of the prefill.
    fn batches() -> impl Strategy<Value = Vec<Vec<(u64, u64)>>> {
        let key = prop_oneof![4 => (0u64..4, 0u64..20_000), 1 => (Just(9u64), 0u64..3_000)];
        proptest::collection::vec(proptest::collection::vec(key, 0..2000), 1..20)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// From a set just under the bound, inserting batches and forgetting beyond the bound
        /// after each answers every insert and every lookup as the model does, and lists the same
        /// keys in the same order.
        #[test]
        fn answers_as_the_ordered_set_model(prefill in 0usize..3000, batches in batches()) {
            let (mut h, mut m) = (HandledKeys::default(), Model::default());
            for s in 0..(MAX_HANDLED_KEYS - prefill) as u64 {
                h.insert((9, s));
                m.insert((9, s));
            }
            for batch in &batches {
                for &k in batch {
                    prop_assert_eq!(h.insert(k), m.insert(k));
                }
                h.forget_beyond_bound();
                m.forget(MAX_HANDLED_KEYS);
                for &(p, s) in batch.iter().take(50) {
                    for k in [(p, s), (p, s.wrapping_add(1)), (p + 1, s), (9, s % 3000)] {
                        prop_assert_eq!(h.contains(&k), m.set.contains(&k));
                    }
                }
                prop_assert_eq!(h.len(), m.order.len());
            }
            prop_assert!(h.iter().eq(m.order.iter().copied()));
            for k in &m.order {
                prop_assert!(h.contains(k));
            }
        }
    }

    /// Past the bound the oldest keys go first; a repeated key keeps its first place.
    #[test]
    fn the_oldest_keys_are_forgotten_first() {
        let mut h = HandledKeys::default();
        let n = MAX_HANDLED_KEYS as u64 + 3;
        for s in 0..n {
            assert!(h.insert((7, s)));
            h.forget_beyond_bound();
        }
        assert!(!h.insert((7, 5)), "remembered: not new, not moved");
        assert_eq!(h.len(), MAX_HANDLED_KEYS);
        assert!(!h.contains(&(7, 2)) && h.contains(&(7, 3)) && h.contains(&(7, n - 1)));
        assert_eq!(h.iter().next(), Some((7, 3)));
    }
}
