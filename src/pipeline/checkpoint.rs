//! Where processing has got to, so a new leader resumes there: per topic the next offset not yet
//! fully handled, and the idempotency keys whose transactional effects happened. The Raft node
//! implements [`Checkpoint`] by recording these as replicated entries; [`MemCheckpoint`] keeps them
//! in memory (one node, or a test sharing it between an "old" and a "new" leader).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

/// Processed positions and handled idempotency keys.
pub trait Checkpoint: Send + Sync + std::fmt::Debug {
    /// Per topic, the offset to resume from: every event below it has been fully handled.
    fn positions(&self) -> BTreeMap<String, u64>;
    /// Records that every event of `topic` below `next_offset` has been handled (never moves back).
    fn record_position(&self, topic: &str, next_offset: u64);
    /// True if the transactional effect of this idempotency key already happened.
    fn is_handled(&self, key: (u64, u64)) -> bool;
    /// Records that the transactional effect of this key happened.
    fn mark_handled(&self, key: (u64, u64));
}

#[derive(Debug, Default)]
struct MemState {
    positions: BTreeMap<String, u64>,
    keys: BTreeSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
}

/// An in-memory checkpoint remembering at most `max_keys` idempotency keys (oldest forgotten).
#[derive(Debug)]
pub struct MemCheckpoint {
    max_keys: usize,
    state: Mutex<MemState>,
}

impl MemCheckpoint {
    pub fn new(max_keys: usize) -> Self {
        MemCheckpoint { max_keys: max_keys.max(1), state: Mutex::new(MemState::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Checkpoint for MemCheckpoint {
    fn positions(&self) -> BTreeMap<String, u64> {
        self.lock().positions.clone()
    }

    fn record_position(&self, topic: &str, next_offset: u64) {
        let mut st = self.lock();
        let p = st.positions.entry(topic.to_string()).or_insert(0);
        *p = (*p).max(next_offset);
    }

    fn is_handled(&self, key: (u64, u64)) -> bool {
        self.lock().keys.contains(&key)
    }

    fn mark_handled(&self, key: (u64, u64)) {
        let mut st = self.lock();
        if st.keys.insert(key) {
            st.order.push_back(key);
            while st.order.len() > self.max_keys {
                if let Some(old) = st.order.pop_front() {
                    st.keys.remove(&old);
                }
            }
        }
    }
}

/// Per-topic completion tracking: offsets may finish out of order (different classes), the
/// position only advances over a contiguous run of finished offsets.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    topics: BTreeMap<String, TopicProgress>,
}

#[derive(Debug, Default)]
struct TopicProgress {
    next: u64,
    done: BTreeSet<u64>,
}

impl Progress {
    /// Starts from the checkpoint's positions.
    pub fn new(positions: BTreeMap<String, u64>) -> Self {
        Progress {
            topics: positions
                .into_iter()
                .map(|(t, next)| (t, TopicProgress { next, done: BTreeSet::new() }))
                .collect(),
        }
    }

    /// False if `offset` of `topic` was already handled (below the position), so it is skipped.
    /// A topic the checkpoint does not know starts at offset 0, so batches committed in one order
    /// and submitted in another are all handled (a node enabling the pipeline on an existing log
    /// should seed the checkpoint, or the position waits for offsets never submitted).
    pub fn admit(&mut self, topic: &str, offset: u64) -> bool {
        let t = self.topics.entry(topic.to_string()).or_default();
        offset >= t.next && !t.done.contains(&offset)
    }

    /// Marks `offset` finished; returns the new position if it advanced.
    pub fn finish(&mut self, topic: &str, offset: u64) -> Option<u64> {
        let t = self.topics.get_mut(topic)?;
        if offset < t.next {
            return None;
        }
        t.done.insert(offset);
        let before = t.next;
        while t.done.remove(&t.next) {
            t.next += 1;
        }
        (t.next != before).then_some(t.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_advances_over_contiguous_finished_offsets_only() {
        let mut p = Progress::new(BTreeMap::new());
        for o in 0..4 {
            assert!(p.admit("t", o));
        }
        assert_eq!(p.finish("t", 1), None);
        assert_eq!(p.finish("t", 3), None);
        assert_eq!(p.finish("t", 0), Some(2));
        assert_eq!(p.finish("t", 2), Some(4));
        assert!(!p.admit("t", 2), "already handled");
    }

    #[test]
    fn a_new_topic_starts_at_zero_whatever_arrives_first() {
        let mut p = Progress::new(BTreeMap::new());
        // A later batch's commit completes first.
        assert!(p.admit("t", 2));
        assert_eq!(p.finish("t", 2), None);
        assert!(p.admit("t", 0));
        assert!(p.admit("t", 1));
        assert_eq!(p.finish("t", 0), Some(1));
        assert_eq!(p.finish("t", 1), Some(3));
    }

    #[test]
    fn resumes_from_checkpoint_positions() {
        let mut p = Progress::new([("t".to_string(), 10)].into_iter().collect());
        assert!(!p.admit("t", 9));
        assert!(p.admit("t", 10));
        assert_eq!(p.finish("t", 10), Some(11));
    }

    #[test]
    fn mem_checkpoint_forgets_oldest_keys_and_never_moves_back() {
        let c = MemCheckpoint::new(2);
        c.mark_handled((1, 1));
        c.mark_handled((1, 2));
        c.mark_handled((1, 3));
        assert!(!c.is_handled((1, 1)));
        assert!(c.is_handled((1, 3)));
        c.record_position("t", 5);
        c.record_position("t", 3);
        assert_eq!(c.positions()["t"], 5);
    }
}
