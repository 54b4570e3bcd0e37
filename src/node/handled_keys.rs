//! The pipeline's handled idempotency keys: the newest [`MAX_HANDLED_KEYS`] distinct keys in the
//! order they were first handled. The replicated checkpoint keeps one (every replica applies the
//! same keys in the same order) and the leader's running pipeline keeps one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::state::MAX_HANDLED_KEYS;

/// Bitmap words (64 sequences each) all producers' windows may hold together: 512 KiB.
const WINDOW_WORD_BUDGET: u64 = 1 << 16;

/// A bounded set of `(producer, sequence)` keys that remembers insertion order.
///
/// A producer's sequences mostly come in order, so each producer's keys are bits in a sliding
/// window of sequences: a lookup, an insert and forgetting the oldest touch words next to the
/// ones touched just before, where a hash set (SipHash before) took a cache miss on each, about
/// 10 % of a member's samples at 30 K events/s. A key the windows cannot take within
/// [`WINDOW_WORD_BUDGET`] (a sequence far from the producer's others) goes to a hash set, so
/// the memory stays bounded whatever the keys; a key is in exactly one of the two. Both are
/// B-trees, not hash tables: the keys come from clients, and a fixed-seed hasher would let a
/// client choose colliding keys (HashDoS); with the few producers of a window the producers'
/// tree is one node.
#[derive(Debug, Clone, Default)]
pub struct HandledKeys {
    order: VecDeque<(u64, u64)>,
    windows: BTreeMap<u64, Window>,
    window_words: u64,
    scattered: BTreeSet<(u64, u64)>,
}

/// One producer's remembered sequences `base..base + 64 * bits.len()`, a bit each; never empty
/// (a window with no key left is dropped), its first and last words never zero.
#[derive(Debug, Clone)]
struct Window {
    base: u64,
    bits: VecDeque<u64>,
    held: usize,
}

impl Window {
    /// The word and bit of `seq`, if inside the window.
    fn slot(&self, seq: u64) -> Option<(usize, u64)> {
        let word = usize::try_from(seq.checked_sub(self.base)? / 64).ok()?;
        (word < self.bits.len()).then_some((word, 1 << (seq % 64)))
    }

    fn contains(&self, seq: u64) -> bool {
        self.slot(seq).is_some_and(|(w, bit)| self.bits[w] & bit != 0)
    }

    /// Words to add so that the window covers `seq`, and whether in front.
    fn growth(&self, seq: u64) -> (u64, bool) {
        let word_base = seq - seq % 64;
        if word_base < self.base {
            ((self.base - word_base) / 64, true)
        } else {
            (((word_base - self.base) / 64 + 1).saturating_sub(self.bits.len() as u64), false)
        }
    }

    /// Drops zero words at both ends; returns how many.
    fn trim(&mut self) -> u64 {
        let mut dropped = 0;
        while self.bits.front() == Some(&0) {
            self.bits.pop_front();
            self.base += 64;
            dropped += 1;
        }
        while self.bits.back() == Some(&0) {
            self.bits.pop_back();
            dropped += 1;
        }
        dropped
    }
}

impl PartialEq for HandledKeys {
    /// The sets follow from the order, so the order alone decides.
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Eq for HandledKeys {}

impl HandledKeys {
    /// Remembers `key` as the newest; false if it is remembered already (its place unchanged).
    /// Does not forget: call [`forget_beyond_bound`](Self::forget_beyond_bound).
    pub fn insert(&mut self, key: (u64, u64)) -> bool {
        if self.contains(&key) {
            return false;
        }
        if !self.set_window_bit(key) {
            self.scattered.insert(key);
        }
        self.order.push_back(key);
        true
    }

    /// Sets `key`'s bit in its producer's window, growing or opening the window within the
    /// budget; false if the budget does not allow it.
    fn set_window_bit(&mut self, (producer, seq): (u64, u64)) -> bool {
        let budget_left = WINDOW_WORD_BUDGET - self.window_words;
        let Some(w) = self.windows.get_mut(&producer) else {
            if budget_left == 0 {
                return false;
            }
            let bits = VecDeque::from([1u64 << (seq % 64)]);
            self.windows.insert(producer, Window { base: seq - seq % 64, bits, held: 1 });
            self.window_words += 1;
            return true;
        };
        let (grow, in_front) = w.growth(seq);
        if grow > budget_left {
            return false;
        }
        for _ in 0..grow {
            if in_front {
                w.bits.push_front(0);
                w.base -= 64;
            } else {
                w.bits.push_back(0);
            }
        }
        self.window_words += grow;
        match w.slot(seq) {
            Some((word, bit)) => {
                w.bits[word] |= bit;
                w.held += 1;
                true
            }
            None => {
                debug_assert!(false, "the window was grown to cover {seq}");
                false
            }
        }
    }

    /// Forgets the oldest keys until at most [`MAX_HANDLED_KEYS`] remain.
    pub fn forget_beyond_bound(&mut self) {
        while self.order.len() > MAX_HANDLED_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.forget(old);
            }
        }
    }

    fn forget(&mut self, (producer, seq): (u64, u64)) {
        let in_window = self.windows.get_mut(&producer).and_then(|w| {
            let (word, bit) = w.slot(seq).filter(|&(word, bit)| w.bits[word] & bit != 0)?;
            w.bits[word] &= !bit;
            w.held -= 1;
            Some(w.held)
        });
        match in_window {
            Some(0) => {
                if let Some(w) = self.windows.remove(&producer) {
                    self.window_words -= w.bits.len() as u64;
                }
            }
            Some(_) => {
                if let Some(w) = self.windows.get_mut(&producer) {
                    self.window_words -= w.trim();
                }
            }
            None => {
                let removed = self.scattered.remove(&(producer, seq));
                debug_assert!(removed, "a remembered key is in its window or in the scattered set");
            }
        }
    }

    /// True if `key` is remembered.
    pub fn contains(&self, key: &(u64, u64)) -> bool {
        self.windows.get(&key.0).is_some_and(|w| w.contains(key.1))
            || (!self.scattered.is_empty() && self.scattered.contains(key))
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
    /// producer 9's low sequences repeat the oldest keys of the prefill; producers 4..8 scatter
    /// their sequences (far apart: beyond the windows' budget, into the hash set).
    fn batches() -> impl Strategy<Value = Vec<Vec<(u64, u64)>>> {
        let key = prop_oneof![
            8 => (0u64..4, 0u64..20_000),
            2 => (Just(9u64), 0u64..3_000),
            1 => (4u64..6, any::<u64>()),
            1 => (6u64..8, 0u64..(WINDOW_WORD_BUDGET * 64 * 2)),
        ];
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
                check_windows(&h);
            }
            prop_assert!(h.iter().eq(m.order.iter().copied()));
            for k in &m.order {
                prop_assert!(h.contains(k));
            }
        }
    }

    /// The windows' words are counted, within the budget, each window trimmed and holding as
    /// many keys as it has bits; every key is in a window or in the scattered set.
    fn check_windows(h: &HandledKeys) {
        let words: u64 = h.windows.values().map(|w| w.bits.len() as u64).sum();
        assert_eq!(words, h.window_words);
        assert!(words <= WINDOW_WORD_BUDGET);
        for w in h.windows.values() {
            assert!(w.bits.front() != Some(&0) && w.bits.back() != Some(&0) && !w.bits.is_empty());
            assert_eq!(w.bits.iter().map(|b| b.count_ones() as usize).sum::<usize>(), w.held);
        }
        let held: usize = h.windows.values().map(|w| w.held).sum();
        assert_eq!(held + h.scattered.len(), h.order.len());
    }

    /// Sequences too far apart for the budget go to the scattered set; forgetting every key
    /// gives all the windows' words back.
    #[test]
    fn scattered_sequences_stay_within_the_budget_and_are_given_back() {
        let mut h = HandledKeys::default();
        let keys: Vec<(u64, u64)> =
            (0..1000u64).flat_map(|i| [(1, i * 1_000_003), (2, u64::MAX - i), (3 + i, i)]).collect();
        for &k in &keys {
            assert!(h.insert(k));
        }
        check_windows(&h);
        assert!(!h.scattered.is_empty() && h.window_words <= WINDOW_WORD_BUDGET);
        assert!(keys.iter().all(|k| h.contains(k)) && !h.contains(&(1, 1)) && !h.contains(&(2, 0)));
        for k in keys {
            h.forget(k);
        }
        assert!(h.windows.is_empty() && h.scattered.is_empty() && h.window_words == 0);
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
