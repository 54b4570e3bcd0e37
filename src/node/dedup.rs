//! `DedupWindow`: remembers where each idempotency key (producer id, sequence) was stored, so a
//! retried publish gets its original offset back instead of a second copy.
//!
//! Entries expire by *replicated* time — the timestamp the ordering node stamped into the batch —
//! never by a local clock, so every replica expires the same entries at the same point.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Where a key was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupHit {
    pub topic: Arc<str>,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    topic: Arc<str>,
    offset: u64,
    stamped_ms: u64,
    /// Which `order` item is this entry's (a key evicted and recorded again gets a new one).
    id: u64,
}

/// `len` keys of one producer, `first_seq + i` stored at `first_offset + i` of `topic`, all
/// stamped `stamped_ms` (see [`DedupWindow::live_runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupRun<'a> {
    pub producer: u64,
    pub first_seq: u64,
    pub first_offset: u64,
    pub stamped_ms: u64,
    /// At least 1, at most `u32::MAX`.
    pub len: u64,
    pub topic: &'a Arc<str>,
}

/// Stale `order` items tolerated beyond twice the live keys before the queue is compacted.
const ORDER_SLACK: usize = 1024;

/// Limits of a [`DedupWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// How long a key is remembered, in milliseconds of replicated time.
    pub window_ms: u64,
    /// Keys remembered per producer; the lowest sequences are forgotten first.
    pub max_keys_per_producer: usize,
    /// Keys remembered in total; the oldest are forgotten first.
    pub max_keys: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig { window_ms: 10 * 60 * 1000, max_keys_per_producer: 100_000, max_keys: 2_000_000 }
    }
}

/// The table of recently seen idempotency keys.
#[derive(Debug, Clone)]
pub struct DedupWindow {
    config: DedupConfig,
    producers: HashMap<u64, BTreeMap<u64, Entry>>,
    /// Insertion order for expiry: (producer, sequence, id). Items of keys evicted by a cap go
    /// stale and are skipped; the queue is compacted so it never holds more than
    /// `2 × len + ORDER_SLACK` items — its memory follows the keys remembered, not the events
    /// published in the window.
    order: VecDeque<(u64, u64, u64)>,
    len: usize,
    last_stamp_ms: u64,
    next_id: u64,
}

impl DedupWindow {
    /// An empty window.
    pub fn new(config: DedupConfig) -> Self {
        DedupWindow {
            config,
            producers: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
            last_stamp_ms: 0,
            next_id: 0,
        }
    }

    /// Where `(producer, sequence)` was stored, if it is still remembered.
    pub fn lookup(&self, producer: u64, sequence: u64) -> Option<DedupHit> {
        self.producers
            .get(&producer)
            .and_then(|m| m.get(&sequence))
            .map(|e| DedupHit { topic: e.topic.clone(), offset: e.offset })
    }

    /// [`lookup`](Self::lookup) as it will answer once [`expire`](Self::expire)d at `now_ms`
    /// (stamps never go backwards, so expiry drops exactly the keys stamped more than the window
    /// before `now_ms`).
    pub fn lookup_at(&self, producer: u64, sequence: u64, now_ms: u64) -> Option<DedupHit> {
        self.producers
            .get(&producer)
            .and_then(|m| m.get(&sequence))
            .filter(|e| e.stamped_ms.saturating_add(self.config.window_ms) >= now_ms)
            .map(|e| DedupHit { topic: e.topic.clone(), offset: e.offset })
    }

    /// True if [`record`](Self::record) may take this key: not remembered yet, and not stamped
    /// before the last one. Decoders check what they read with this before recording it.
    pub fn can_record(&self, producer: u64, sequence: u64, stamped_ms: u64) -> bool {
        stamped_ms >= self.last_stamp_ms && self.lookup(producer, sequence).is_none()
    }

    /// Remembers a newly stored key. `stamped_ms` must not go backwards (the state machine clamps).
    pub fn record(&mut self, producer: u64, sequence: u64, topic: Arc<str>, offset: u64, stamped_ms: u64) {
        debug_assert!(stamped_ms >= self.last_stamp_ms, "replicated time went backwards");
        self.last_stamp_ms = stamped_ms;
        let id = self.next_id;
        self.next_id += 1;
        let entries = self.producers.entry(producer).or_default();
        let old = entries.insert(sequence, Entry { topic, offset, stamped_ms, id });
        debug_assert!(old.is_none(), "a key is recorded once; duplicates are looked up first");
        self.len += 1;
        self.order.push_back((producer, sequence, id));
        if entries.len() > self.config.max_keys_per_producer
            && let Some((&lowest, _)) = entries.iter().next()
        {
            entries.remove(&lowest);
            self.len -= 1;
        }
        while self.len > self.config.max_keys {
            if !self.pop_oldest() {
                break;
            }
        }
        self.drop_stale_items();
    }

    /// Forgets keys stamped more than the window before `now_ms` (replicated time).
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(producer, seq, id)) = self.order.front() {
            // Items are in stamp order, so the first live one decides; stale ones just go.
            if let Some(e) = live(&self.producers, producer, seq, id)
                && e.stamped_ms.saturating_add(self.config.window_ms) >= now_ms
            {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Pops stale items at the front (a producer's lowest keys, evicted by its cap, are usually
    /// the oldest), and compacts the queue once stale items elsewhere outnumber the live keys.
    fn drop_stale_items(&mut self) {
        while let Some(&(producer, seq, id)) = self.order.front() {
            if live(&self.producers, producer, seq, id).is_some() {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.len + ORDER_SLACK {
            let producers = &self.producers;
            self.order.retain(|&(producer, seq, id)| live(producers, producer, seq, id).is_some());
            if self.order.capacity() > 4 * self.order.len() + ORDER_SLACK {
                self.order.shrink_to(2 * self.order.len() + ORDER_SLACK);
            }
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((producer, seq, id)) = self.order.pop_front() else {
            return false;
        };
        if let Some(entries) = self.producers.get_mut(&producer) {
            if entries.get(&seq).is_some_and(|e| e.id == id) {
                entries.remove(&seq);
                self.len -= 1;
            }
            if entries.is_empty() {
                self.producers.remove(&producer);
            }
        }
        true
    }

    /// Every remembered key as `(producer, sequence, topic, offset, stamped_ms)`, oldest first —
    /// recording them in this order into an empty window rebuilds this one (for snapshots).
    pub fn live_entries(&self) -> impl Iterator<Item = (u64, u64, &Arc<str>, u64, u64)> + '_ {
        self.order.iter().filter_map(|&(producer, seq, id)| {
            let e = live(&self.producers, producer, seq, id)?;
            Some((producer, seq, &e.topic, e.offset, e.stamped_ms))
        })
    }

    /// The remembered keys as runs, oldest first: consecutive keys of one producer with
    /// consecutive sequences and offsets, one topic and one stamp (a pipelined producer's
    /// batch) make one run. Recording each run's keys in this order rebuilds this window.
    pub fn live_runs(&self) -> Vec<DedupRun<'_>> {
        let mut runs: Vec<DedupRun<'_>> = Vec::new();
        for (producer, seq, topic, offset, stamped_ms) in self.live_entries() {
            if let Some(r) = runs.last_mut()
                && r.producer == producer
                && r.stamped_ms == stamped_ms
                && r.first_seq.checked_add(r.len) == Some(seq)
                && r.first_offset.checked_add(r.len) == Some(offset)
                && (Arc::ptr_eq(r.topic, topic) || r.topic == topic)
                && r.len < u64::from(u32::MAX)
            {
                r.len += 1;
                continue;
            }
            runs.push(DedupRun { producer, first_seq: seq, first_offset: offset, stamped_ms, len: 1, topic });
        }
        runs
    }

    /// The configuration.
    pub fn config(&self) -> DedupConfig {
        self.config
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The entry an `order` item stands for, if that key is still remembered under that item.
fn live(producers: &HashMap<u64, BTreeMap<u64, Entry>>, producer: u64, seq: u64, id: u64) -> Option<&Entry> {
    producers.get(&producer)?.get(&seq).filter(|e| e.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(window_ms: u64, per: usize, max: usize) -> DedupWindow {
        DedupWindow::new(DedupConfig { window_ms, max_keys_per_producer: per, max_keys: max })
    }

    #[test]
    fn remembers_where_a_key_went() {
        let mut d = w(1000, 10, 100);
        d.record(7, 1, "a".into(), 5, 0);
        assert_eq!(d.lookup(7, 1), Some(DedupHit { topic: "a".into(), offset: 5 }));
        assert_eq!(d.lookup(7, 2), None);
        assert_eq!(d.lookup(8, 1), None);
    }

    #[test]
    fn expires_by_stamped_time_only() {
        let mut d = w(1000, 10, 100);
        d.record(1, 1, "a".into(), 0, 100);
        d.record(1, 2, "a".into(), 1, 600);
        d.expire(1100);
        assert!(d.lookup(1, 1).is_some(), "exactly at the window edge it is still remembered");
        d.expire(1101);
        assert!(d.lookup(1, 1).is_none());
        assert!(d.lookup(1, 2).is_some());
        d.expire(5000);
        assert!(d.is_empty());
    }

    #[test]
    fn per_producer_cap_forgets_lowest_sequences() {
        let mut d = w(u64::MAX / 2, 2, 100);
        for s in 0..4 {
            d.record(1, s, "a".into(), s, 0);
        }
        assert_eq!(d.len(), 2);
        assert!(d.lookup(1, 0).is_none() && d.lookup(1, 1).is_none());
        assert!(d.lookup(1, 3).is_some());
        // Stale order entries of evicted keys are skipped without corrupting the count.
        d.expire(u64::MAX);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn live_entries_rebuild_the_same_window() {
        let mut d = w(1000, 2, 100);
        for s in 0..4 {
            d.record(1, s, "a".into(), s, s * 10);
        }
        d.record(2, 0, "b".into(), 0, 50);
        d.expire(1025);
        let mut r = w(1000, 2, 100);
        for (p, s, t, o, st) in d.live_entries() {
            r.record(p, s, t.clone(), o, st);
        }
        assert_eq!(r.len(), d.len());
        assert_eq!(r.len(), 2, "keys 0,1 evicted by the per-producer cap, 2 expired");
        for (p, s) in [(1, 3), (2, 0)] {
            assert_eq!(r.lookup(p, s), d.lookup(p, s));
        }
        assert_eq!(r.lookup(1, 2), None);
    }

    #[test]
    fn global_cap_forgets_oldest() {
        let mut d = w(u64::MAX / 2, 10, 3);
        for p in 1..=5 {
            d.record(p, 0, "a".into(), p, p);
        }
        assert_eq!(d.len(), 3);
        assert!(d.lookup(1, 0).is_none() && d.lookup(2, 0).is_none());
        assert!(d.lookup(5, 0).is_some());
    }

    /// A producer's keys evicted by its cap must not pile up in the expiry queue for the whole
    /// window (they did: 24 B per event published in the last 10 minutes, the server's RSS grew
    /// with every event). Producer 1's key stays live at the front, so only compaction helps.
    #[test]
    fn expiry_queue_follows_the_live_keys_not_the_published_ones() {
        let mut d = w(u64::MAX / 2, 10, 1_000_000);
        d.record(1, 0, "a".into(), 0, 0);
        for s in 0..100_000 {
            d.record(2, s, "a".into(), s + 1, 1);
        }
        assert_eq!(d.len(), 11);
        assert!(d.order.len() <= 2 * d.len() + ORDER_SLACK, "{} items for {} keys", d.order.len(), d.len());
        assert!(d.order.capacity() <= 4 * (2 * d.len() + ORDER_SLACK), "capacity {}", d.order.capacity());
        let live: Vec<_> = d.live_entries().map(|(p, s, ..)| (p, s)).collect();
        let want: Vec<_> = std::iter::once((1, 0)).chain((99_990..100_000).map(|s| (2, s))).collect();
        assert_eq!(live, want, "oldest first, each once");
    }

    /// A key evicted by the cap and recorded again is one live key, listed once, expired once.
    #[test]
    fn a_key_recorded_again_after_eviction_is_listed_once() {
        let mut d = w(1000, 1, 100);
        d.record(1, 5, "a".into(), 0, 10);
        d.record(1, 6, "a".into(), 1, 10); // evicts 5
        d.record(1, 5, "a".into(), 2, 10); // 5 is lowest again: evicted at once
        d.record(2, 1, "a".into(), 3, 10);
        d.record(2, 0, "a".into(), 4, 20); // evicts 0 itself
        assert_eq!(d.len(), 2);
        assert_eq!(d.live_entries().count(), 2);
        d.expire(1011);
        assert!(d.is_empty(), "{:?}", d.live_entries().collect::<Vec<_>>());
        assert_eq!(d.order.len(), 0);
    }

    /// A pipelined producer's keys are written as a few runs, not key by key (a snapshot wrote
    /// ~47 bytes per remembered key: 18 MB at 400 K keys, rewritten at every snapshot).
    #[test]
    fn consecutive_keys_of_a_producer_make_one_run() {
        let mut d = w(u64::MAX / 2, 100, 1000);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        for s in 0..10 {
            d.record(1, s, a.clone(), 100 + s, 5);
        }
        d.record(2, 0, a.clone(), 110, 5); // another producer breaks the run
        d.record(1, 10, a.clone(), 111, 5); // offset gap: a new run
        d.record(1, 11, a.clone(), 112, 6); // new stamp: a new run
        d.record(1, 12, b.clone(), 113, 6); // other topic: a new run
        let runs: Vec<_> = d
            .live_runs()
            .iter()
            .map(|r| (r.producer, r.first_seq, r.first_offset, r.stamped_ms, r.len))
            .collect();
        assert_eq!(
            runs,
            vec![
                (1, 0, 100, 5, 10),
                (2, 0, 110, 5, 1),
                (1, 10, 111, 5, 1),
                (1, 11, 112, 6, 1),
                (1, 12, 113, 6, 1)
            ]
        );
        assert_eq!(d.live_runs().iter().map(|r| r.len).sum::<u64>(), d.len() as u64);
    }
}
