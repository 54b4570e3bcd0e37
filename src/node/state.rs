//! `EventLogState`: the deterministic state machine of the event log — per-topic logs with
//! offsets and the dedup table. It is computed only from ordered batches and the time stamped
//! into each batch, so every replica that applies the same batches holds the same state.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::event::codec::{decode_events, encode_events, get_str16, put_str16};
use crate::event::{Event, StoredEvent};

use super::consumers::ConsumerTable;
use super::dedup::{DedupConfig, DedupWindow};
use crate::consumers::{ConsumerError, ConsumerPosition, OffsetCommit};
use crate::service::{Appended, FetchReply};

#[path = "retention.rs"]
pub mod retention;
use retention::TopicSettings;

#[derive(Debug, Clone, Default)]
struct TopicLog {
    name: Arc<str>,
    events: Vec<StoredEvent>,
    /// Offset of `events[0]`: everything below was removed by retention.
    first: u64,
    /// Sum of [`retention::event_bytes`] over `events`.
    bytes: u64,
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
    /// How far the leader's event pipeline has got, as recorded in the log (see [`Self::apply_checkpoint`]).
    progress: ProcessingProgress,
    /// Named consumers' committed positions (`node/consumers.rs`).
    consumers: ConsumerTable,
    /// Replicated per-topic retention settings.
    settings: TopicSettings,
}

/// The event pipeline's replicated checkpoint: per topic the offset below which every event was
/// fully handled, and the idempotency keys whose transactional effects happened (the newest
/// `MAX_HANDLED_KEYS`). A new leader's pipeline resumes from here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessingProgress {
    pub positions: BTreeMap<String, u64>,
    handled: std::collections::BTreeSet<(u64, u64)>,
    order: std::collections::VecDeque<(u64, u64)>,
}

/// Handled idempotency keys remembered in the replicated checkpoint.
pub const MAX_HANDLED_KEYS: usize = 200_000;

impl ProcessingProgress {
    /// True if the key's transactional effect is recorded as done.
    pub fn is_handled(&self, key: (u64, u64)) -> bool {
        self.handled.contains(&key)
    }

    /// The remembered handled keys, oldest first.
    pub fn handled_keys(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.order.iter().copied()
    }

    fn apply(&mut self, positions: &[(String, u64)], keys: &[(u64, u64)]) {
        for (topic, next) in positions {
            let p = self.positions.entry(topic.clone()).or_default();
            *p = (*p).max(*next);
        }
        for &k in keys {
            if self.handled.insert(k) {
                self.order.push_back(k);
            }
        }
        while self.order.len() > MAX_HANDLED_KEYS {
            if let Some(k) = self.order.pop_front() {
                self.handled.remove(&k);
            }
        }
    }
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
            progress: ProcessingProgress::default(),
            consumers: ConsumerTable::default(),
            settings: TopicSettings::default(),
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
                .or_insert_with(|| TopicLog { name: Arc::from(event.topic.as_str()), ..TopicLog::default() });
            let offset = log.first + log.events.len() as u64;
            let topic = log.name.clone();
            log.bytes += retention::event_bytes(&event);
            log.events.push(StoredEvent { offset, timestamp_ms: now, event });
            self.events_stored += 1;
            if let Some((producer, seq)) = key {
                self.dedup.record(producer, seq, topic.clone(), offset, now);
            }
            out.push(Appended { topic, offset, duplicate: false });
        }
        out
    }

    /// Forgets dedup keys by a time that is not the replicated one (only the bug zoo's
    /// `DedupExpiryLocalClock` calls this: expiry must follow replicated time).
    pub fn expire_dedup_at(&mut self, now_ms: u64) {
        self.dedup.expire(now_ms);
    }

    /// Records the pipeline's checkpoint (positions never move back; keys are added).
    pub fn apply_checkpoint(&mut self, positions: &[(String, u64)], keys: &[(u64, u64)]) {
        self.progress.apply(positions, keys);
    }

    /// Records a named consumer's position (see [`ConsumerTable::commit`]); the topic's end is
    /// this replica's, which every replica shares at this point of the log.
    pub fn commit_offset(&mut self, c: &OffsetCommit) -> Result<u64, ConsumerError> {
        let end = self.end_offset(&c.topic);
        self.consumers.commit(c, end)
    }

    /// Named consumers (all, or those called `name`) with their topic's end offset.
    pub fn consumers(&self, name: Option<&str>) -> Vec<ConsumerPosition> {
        self.consumers.list(name, |t| self.end_offset(t))
    }

    /// The pipeline's replicated checkpoint.
    pub fn processing(&self) -> &ProcessingProgress {
        &self.progress
    }

    /// Up to `max` events of `topic` from `offset` (an unknown topic reads as empty).
    pub fn fetch(&self, topic: &str, offset: u64, max: usize) -> FetchReply {
        let Some(log) = self.topics.get(topic) else {
            return FetchReply { events: Vec::new(), next_offset: offset, end_offset: 0 };
        };
        // Below the first retained offset reads from there ([`Self::read`] refuses it instead).
        let end = log.first + log.events.len() as u64;
        let start = (offset.clamp(log.first, end) - log.first) as usize;
        let stop = start.saturating_add(max).min(log.events.len());
        let events = log.events[start..stop].to_vec();
        // A consumer ahead of the end keeps its position and waits for the topic to catch up.
        FetchReply { next_offset: (log.first + stop as u64).max(offset), end_offset: end, events }
    }

    /// Names of all topics, sorted.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// The retained log of one topic (from its first offset).
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

    /// The dedup window's limits.
    pub fn dedup_config(&self) -> DedupConfig {
        self.dedup.config()
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

const SNAPSHOT_MAGIC: &[u8; 4] = b"ESCS";
const SNAPSHOT_VERSION: u8 = 2;

/// A state snapshot that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad event-log snapshot: {0}")]
pub struct SnapshotDecodeError(pub String);

impl EventLogState {
    /// Serialises the whole state (topic logs, dedup window, counters) for a Raft snapshot.
    pub fn encode_snapshot(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.events_stored as usize * 48);
        out.put_slice(SNAPSHOT_MAGIC);
        out.put_u8(SNAPSHOT_VERSION);
        out.put_u64(self.last_stamp_ms);
        out.put_u64(self.batches_applied);
        out.put_u64(self.events_stored);
        out.put_u32(self.topics.len() as u32);
        for (name, log) in &self.topics {
            put_str16(&mut out, name);
            out.put_u64(log.events.len() as u64);
            for s in &log.events {
                out.put_u64(s.timestamp_ms);
            }
            let mut block = BytesMut::new();
            let events: Vec<Event> = log.events.iter().map(|s| s.event.clone()).collect();
            encode_events(&mut block, &events);
            out.put_u64(block.len() as u64);
            out.put_slice(&block);
        }
        let live: Vec<_> = self.dedup.live_entries().collect();
        out.put_u64(live.len() as u64);
        for (producer, seq, topic, offset, stamped) in live {
            out.put_u64(producer);
            out.put_u64(seq);
            out.put_u64(offset);
            out.put_u64(stamped);
            put_str16(&mut out, topic);
        }
        out.put_u32(self.progress.positions.len() as u32);
        for (topic, next) in &self.progress.positions {
            put_str16(&mut out, topic);
            out.put_u64(*next);
        }
        out.put_u64(self.progress.order.len() as u64);
        for (p, q) in &self.progress.order {
            out.put_u64(*p);
            out.put_u64(*q);
        }
        self.consumers.encode(&mut out);
        retention::encode_block(self, &mut out);
        out.freeze()
    }

    /// Rebuilds a state from [`encode_snapshot`](Self::encode_snapshot)'s bytes. Never panics.
    pub fn decode_snapshot(dedup: DedupConfig, mut b: Bytes) -> Result<Self, SnapshotDecodeError> {
        let err = |what: &str| SnapshotDecodeError(what.to_string());
        let need = |b: &Bytes, n: usize, what: &str| {
            if b.remaining() < n { Err(SnapshotDecodeError(format!("truncated at {what}"))) } else { Ok(()) }
        };
        need(&b, 5 + 24 + 4, "header")?;
        if &b[..4] != SNAPSHOT_MAGIC {
            return Err(err("wrong magic"));
        }
        b.advance(4);
        let v = b.get_u8();
        if v != SNAPSHOT_VERSION {
            return Err(SnapshotDecodeError(format!("unsupported version {v}")));
        }
        let mut st = EventLogState::new(dedup);
        st.last_stamp_ms = b.get_u64();
        st.batches_applied = b.get_u64();
        st.events_stored = b.get_u64();
        let ntopics = b.get_u32();
        for _ in 0..ntopics {
            let name = get_str(&mut b)?;
            need(&b, 8, "event count")?;
            let n = b.get_u64();
            if n.saturating_mul(8) > b.remaining() as u64 {
                return Err(err("event count larger than the snapshot"));
            }
            let stamps: Vec<u64> = (0..n).map(|_| b.get_u64()).collect();
            need(&b, 8, "events block")?;
            let len = b.get_u64();
            if len > b.remaining() as u64 {
                return Err(err("events block larger than the snapshot"));
            }
            let events =
                decode_events(b.split_to(len as usize)).map_err(|e| SnapshotDecodeError(e.to_string()))?;
            if events.len() as u64 != n {
                return Err(err("timestamp and event counts differ"));
            }
            let log = snapshot_topic_log(&name, events, stamps);
            st.topics.insert(name, log);
        }
        need(&b, 8, "dedup count")?;
        let nkeys = b.get_u64();
        for _ in 0..nkeys {
            need(&b, 32, "dedup entry")?;
            let (producer, seq, offset, stamped) = (b.get_u64(), b.get_u64(), b.get_u64(), b.get_u64());
            let topic = get_str(&mut b)?;
            let name = st
                .topics
                .get(&topic)
                .map(|t| t.name.clone())
                .ok_or_else(|| err("dedup key of unknown topic"))?;
            if stamped > st.last_stamp_ms || !st.dedup.can_record(producer, seq, stamped) {
                return Err(err("dedup entry out of order"));
            }
            if crate::planted!(DedupNotInSnapshot) {
                continue;
            }
            st.dedup.record(producer, seq, name, offset, stamped);
        }
        need(&b, 4, "checkpoint positions")?;
        let npos = b.get_u32();
        let mut positions = Vec::new();
        for _ in 0..npos {
            let topic = get_str(&mut b)?;
            need(&b, 8, "checkpoint position")?;
            positions.push((topic, b.get_u64()));
        }
        need(&b, 8, "handled keys")?;
        let nkeys = b.get_u64();
        if nkeys.saturating_mul(16) > b.remaining() as u64 {
            return Err(err("handled-key count larger than the snapshot"));
        }
        let keys: Vec<(u64, u64)> = (0..nkeys).map(|_| (b.get_u64(), b.get_u64())).collect();
        st.progress.apply(&positions, &keys);
        st.consumers = ConsumerTable::decode(&mut b).map_err(SnapshotDecodeError)?;
        retention::decode_block(&mut st, &mut b)?;
        if b.has_remaining() {
            return Err(SnapshotDecodeError(format!("{} trailing bytes", b.remaining())));
        }
        Ok(st)
    }
}

/// A topic's log rebuilt from a snapshot: its events at offsets 0.. with their stamps.
fn snapshot_topic_log(name: &str, events: Vec<Event>, stamps: Vec<u64>) -> TopicLog {
    let events: Vec<StoredEvent> = events
        .into_iter()
        .zip(stamps)
        .enumerate()
        .map(|(i, (event, timestamp_ms))| StoredEvent { offset: i as u64, timestamp_ms, event })
        .collect();
    let bytes = events.iter().map(|s| retention::event_bytes(&s.event)).sum();
    TopicLog { name: Arc::from(name), events, first: 0, bytes }
}

fn get_str(b: &mut Bytes) -> Result<String, SnapshotDecodeError> {
    get_str16(b, "string").map_err(|e| SnapshotDecodeError(e.to_string()))
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
    fn snapshot_round_trips_logs_and_dedup() {
        let cfg = DedupConfig { window_ms: 1000, max_keys_per_producer: 100, max_keys: 1000 };
        let mut s = EventLogState::new(cfg);
        s.apply_batch(vec![ev("a", 1, 1), ev("b", 1, 2), ev("a", 0, 0)], 100);
        s.apply_batch(vec![ev("a", 2, 1)], 90);
        s.apply_checkpoint(&[("a".into(), 2)], &[(1, 1), (2, 1)]);
        let snap = s.encode_snapshot();
        let mut r = EventLogState::decode_snapshot(cfg, snap.clone()).unwrap();
        assert_eq!(r.digest(), s.digest());
        assert_eq!(r.events_stored(), 4);
        assert_eq!(r.batches_applied(), 2);
        assert_eq!(r.dedup_len(), s.dedup_len());
        assert_eq!(r.processing(), s.processing());
        assert!(r.processing().is_handled((2, 1)) && r.processing().positions["a"] == 2);
        // The restored window still catches a retry, and time stays monotonic.
        let a = r.apply_batch(vec![ev("b", 1, 2)], 50);
        assert_eq!((a[0].offset, a[0].duplicate), (0, true));
        assert_eq!(s.apply_batch(vec![ev("b", 1, 2)], 50), a);
        assert_eq!(r.digest(), s.digest());
        // Corrupt or truncated snapshots are errors, never panics.
        for cut in 0..snap.len() {
            assert!(EventLogState::decode_snapshot(cfg, snap.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad = snap.to_vec();
        bad[0] ^= 1;
        assert!(EventLogState::decode_snapshot(cfg, Bytes::from(bad)).is_err());
    }

    /// Found by the `state_decode` fuzz target: dedup entries whose stamps go back (each within
    /// the snapshot's last stamp) reached the window's "time went backwards" assertion.
    #[test]
    fn dedup_stamps_going_back_in_a_snapshot_are_refused() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![ev("a", 1, 1)], 0x1111);
        s.apply_batch(vec![ev("a", 1, 2)], 0x2222);
        let mut bad = s.encode_snapshot().to_vec();
        let second = 0x2222u64.to_be_bytes();
        let at = bad.windows(8).rposition(|w| w == second).expect("the second dedup stamp");
        bad[at..at + 8].copy_from_slice(&0x1000u64.to_be_bytes());
        let e = EventLogState::decode_snapshot(DedupConfig::default(), Bytes::from(bad)).err();
        assert_eq!(e.map(|e| e.0), Some("dedup entry out of order".to_string()));
    }

    #[test]
    fn consumer_positions_survive_a_snapshot_and_follow_the_topic_end() {
        let commit =
            |name: &str, offset, reset| OffsetCommit { name: name.into(), topic: "a".into(), offset, reset };
        let mut s = EventLogState::new(DedupConfig::default());
        assert!(matches!(
            s.commit_offset(&commit("w", 1, false)),
            Err(ConsumerError::PastEnd { end: 0, .. })
        ));
        s.apply_batch(vec![ev("a", 1, 1), ev("a", 1, 2), ev("a", 1, 3)], 10);
        assert_eq!(s.commit_offset(&commit("w", 2, false)), Ok(2));
        assert_eq!(s.commit_offset(&commit("w", 1, false)), Ok(2), "never moves back");
        assert_eq!(s.commit_offset(&commit("r", 3, false)), Ok(3));
        let snap = s.encode_snapshot();
        let r = EventLogState::decode_snapshot(DedupConfig::default(), snap.clone()).unwrap();
        assert_eq!(r.consumers(None), s.consumers(None));
        let w = &r.consumers(Some("w"))[0];
        assert_eq!((w.committed, w.end_offset, w.lag()), (2, 3, 1));
        for cut in 0..snap.len() {
            assert!(
                EventLogState::decode_snapshot(DedupConfig::default(), snap.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
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
