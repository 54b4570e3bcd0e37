//! The key-by-key dedup window as main had it before issue 13's runs (8098630's
//! `src/node/dedup.rs`, tests left out), kept for the bench to compare against.
#![allow(dead_code)]

use eventstreamcore::node::DedupConfig;
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
