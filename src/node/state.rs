//! `EventLogState`: the deterministic state machine of the event log — per-topic logs with
//! offsets and the dedup table. It is computed only from ordered batches and the time stamped
//! into each batch, so every replica that applies the same batches holds the same state.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::event::{Event, StoredEvent};

use super::dedup::{DedupConfig, DedupWindow};

/// Where one published event ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub topic: Arc<str>,
    pub offset: u64,
    /// True if an earlier publish with the same idempotency key stored it (at `offset`).
    pub duplicate: bool,
}

/// A slice of a topic log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchReply {
    pub events: Vec<StoredEvent>,
    /// Offset to fetch next.
    pub next_offset: u64,
    /// One past the last stored offset of the topic.
    pub end_offset: u64,
}

#[derive(Debug, Clone, Default)]
struct TopicLog {
    name: Arc<str>,
    events: Vec<StoredEvent>,
}

/// Per-topic logs plus the dedup window.
#[derive(Debug, Clone)]
pub struct EventLogState {
    topics: BTreeMap<String, TopicLog>,
    dedup: DedupWindow,
    /// Replicated time never goes backwards: a batch stamped earlier than its predecessor (a
    /// leader whose wall clock stepped back) is treated as stamped at the predecessor's time.
    last_stamp_ms: u64,
    batches_applied: u64,
    events_stored: u64,
}

impl EventLogState {
    /// An empty log.
    pub fn new(dedup: DedupConfig) -> Self {
        EventLogState {
            topics: BTreeMap::new(),
            dedup: DedupWindow::new(dedup),
            last_stamp_ms: 0,
            batches_applied: 0,
            events_stored: 0,
        }
    }

    /// Applies one ordered batch stamped at `stamped_ms`: each event is either found in the
    /// dedup window (its original offset is returned) or appended to its topic.
    pub fn apply_batch(&mut self, events: Vec<Event>, stamped_ms: u64) -> Vec<Appended> {
        let now = stamped_ms.max(self.last_stamp_ms);
        self.last_stamp_ms = now;
        self.dedup.expire(now);
        self.batches_applied += 1;
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let key = event.idempotency_key();
            if let Some((producer, seq)) = key
                && let Some(hit) = self.dedup.lookup(producer, seq)
            {
                out.push(Appended { topic: hit.topic, offset: hit.offset, duplicate: true });
                continue;
            }
            let log = self
                .topics
                .entry(event.topic.clone())
                .or_insert_with(|| TopicLog { name: Arc::from(event.topic.as_str()), events: Vec::new() });
            let offset = log.events.len() as u64;
            let topic = log.name.clone();
            log.events.push(StoredEvent { offset, timestamp_ms: now, event });
            self.events_stored += 1;
            if let Some((producer, seq)) = key {
                self.dedup.record(producer, seq, topic.clone(), offset, now);
            }
            out.push(Appended { topic, offset, duplicate: false });
        }
        out
    }

    /// Up to `max` events of `topic` from `offset` (an unknown topic reads as empty).
    pub fn fetch(&self, topic: &str, offset: u64, max: usize) -> FetchReply {
        let Some(log) = self.topics.get(topic) else {
            return FetchReply { events: Vec::new(), next_offset: offset, end_offset: 0 };
        };
        let end = log.events.len() as u64;
        let start = offset.min(end) as usize;
        let stop = start.saturating_add(max).min(log.events.len());
        let events = log.events[start..stop].to_vec();
        // A consumer ahead of the end keeps its position and waits for the topic to catch up.
        FetchReply { next_offset: (stop as u64).max(offset), end_offset: end, events }
    }

    /// Names of all topics, sorted.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// The whole log of one topic.
    pub fn topic_log(&self, topic: &str) -> &[StoredEvent] {
        self.topics.get(topic).map_or(&[], |t| &t.events)
    }

    /// Events stored so far (duplicates excluded).
    pub fn events_stored(&self) -> u64 {
        self.events_stored
    }

    /// Batches applied so far.
    pub fn batches_applied(&self) -> u64 {
        self.batches_applied
    }

    /// Idempotency keys currently remembered.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// A digest of every stored event (topic, offset, time, key, payload) — equal on replicas that
    /// hold the same log; used by determinism and convergence checks.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv64::default();
        for (name, log) in &self.topics {
            h.write(name.as_bytes());
            for s in &log.events {
                h.write_u64(s.offset);
                h.write_u64(s.timestamp_ms);
                h.write_u64(s.event.producer_id);
                h.write_u64(s.event.sequence);
                h.write(&[s.event.priority.as_u8()]);
                h.write(&s.event.payload);
            }
        }
        h.finish()
    }
}

/// FNV-1a, 64-bit: a small stable hash for digests (std's hasher is not stable across releases).
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Mixes bytes in.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Length separator so ("ab","c") and ("a","bc") differ.
        self.0 ^= bytes.len() as u64;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    /// Mixes a u64 in.
    pub fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    /// The digest so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;

    fn ev(topic: &str, producer: u64, seq: u64) -> Event {
        let mut e = Event::new(topic, Priority::Medium, format!("{producer}:{seq}"));
        e.producer_id = producer;
        e.sequence = seq;
        e
    }

    #[test]
    fn offsets_are_dense_per_topic() {
        let mut s = EventLogState::new(DedupConfig::default());
        let r = s.apply_batch(vec![ev("a", 1, 1), ev("b", 1, 2), ev("a", 1, 3)], 10);
        assert_eq!(
            r.iter().map(|a| (&*a.topic, a.offset)).collect::<Vec<_>>(),
            vec![("a", 0), ("b", 0), ("a", 1)]
        );
        assert_eq!(s.fetch("a", 0, 10).events.len(), 2);
        assert_eq!(s.fetch("a", 1, 10).events[0].event.sequence, 3);
    }

    #[test]
    fn a_retry_gets_its_original_offset_and_no_second_copy() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![ev("a", 1, 1), ev("a", 1, 2)], 10);
        let r = s.apply_batch(vec![ev("a", 1, 2), ev("a", 1, 3)], 20);
        assert_eq!(r[0], Appended { topic: "a".into(), offset: 1, duplicate: true });
        assert_eq!(r[1], Appended { topic: "a".into(), offset: 2, duplicate: false });
        assert_eq!(s.topic_log("a").len(), 3);
    }

    #[test]
    fn duplicates_inside_one_batch_are_caught() {
        let mut s = EventLogState::new(DedupConfig::default());
        let r = s.apply_batch(vec![ev("a", 1, 1), ev("a", 1, 1)], 10);
        assert!(!r[0].duplicate && r[1].duplicate);
        assert_eq!(s.topic_log("a").len(), 1);
    }

    #[test]
    fn anonymous_events_are_never_deduplicated() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![Event::new("a", Priority::Low, "x"), Event::new("a", Priority::Low, "x")], 1);
        assert_eq!(s.topic_log("a").len(), 2);
    }

    #[test]
    fn replicated_time_never_goes_backwards() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![ev("a", 1, 1)], 1000);
        s.apply_batch(vec![ev("a", 1, 2)], 400); // leader clock stepped back
        let log = s.topic_log("a");
        assert_eq!(log[1].timestamp_ms, 1000);
    }

    #[test]
    fn expiry_follows_stamped_time() {
        let cfg = DedupConfig { window_ms: 100, ..DedupConfig::default() };
        let mut s = EventLogState::new(cfg);
        s.apply_batch(vec![ev("a", 1, 1)], 1000);
        assert!(s.apply_batch(vec![ev("a", 1, 1)], 1100)[0].duplicate);
        // Past the window the key is forgotten: a very late retry is stored again (documented).
        assert!(!s.apply_batch(vec![ev("a", 1, 1)], 1201)[0].duplicate);
    }

    #[test]
    fn fetch_bounds() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch((0..5).map(|i| ev("a", 1, i)).collect(), 1);
        let f = s.fetch("a", 3, 10);
        assert_eq!((f.events.len(), f.next_offset, f.end_offset), (2, 5, 5));
        let f = s.fetch("a", 9, 10);
        assert_eq!((f.events.len(), f.next_offset, f.end_offset), (0, 9, 5));
        let f = s.fetch("nope", 2, 10);
        assert_eq!((f.events.len(), f.next_offset, f.end_offset), (0, 2, 0));
        assert_eq!(s.fetch("a", 0, 2).events.len(), 2);
    }

    #[test]
    fn digest_changes_with_content() {
        let mut a = EventLogState::new(DedupConfig::default());
        let mut b = EventLogState::new(DedupConfig::default());
        a.apply_batch(vec![ev("a", 1, 1)], 1);
        b.apply_batch(vec![ev("a", 1, 1)], 1);
        assert_eq!(a.digest(), b.digest());
        b.apply_batch(vec![ev("a", 1, 2)], 1);
        assert_ne!(a.digest(), b.digest());
    }
}
