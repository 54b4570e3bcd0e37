//! `EventLogState`: the deterministic state machine of the event log — per-topic logs with
//! offsets and the dedup table. It is computed only from ordered batches and the time stamped
//! into each batch, so every replica that applies the same batches holds the same state.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::event::codec::{get_str16, put_str16};
use crate::event::{Event, StoredEvent};
use crate::rt::{Disk, SimDisk};
use crate::store::{StoreConfig, StoreError, StoreMeta, TopicSet};

use super::consumers::ConsumerTable;
use super::dedup::{DedupConfig, DedupRun, DedupWindow};
use super::handled_keys::HandledKeys;
use crate::consumers::{ConsumerError, ConsumerPosition, OffsetCommit};
use crate::service::{Appended, FetchReply, ServiceError};

#[path = "retention.rs"]
pub mod retention;
use retention::{OutOfRange, TopicFull, TopicSettings};

/// Default bound on the record bytes one fetch reads.
pub const DEFAULT_READ_MAX_BYTES: usize = 1 << 20;

/// A topic set on a fresh in-memory disk.
fn memory_store() -> TopicSet {
    // Opening an empty in-memory disk reads nothing and cannot fail.
    TopicSet::open(Arc::new(SimDisk::new()), memory_store_config(), None)
        .expect("an empty in-memory topic set opens")
}

/// Segment sizes of in-memory topic sets.
fn memory_store_config() -> StoreConfig {
    StoreConfig { segment_bytes: 8 << 20, ..StoreConfig::default() }
}

/// What the state keeps in memory about a topic besides its files: O(1) per topic.
#[derive(Debug, Clone)]
struct TopicInfo {
    name: Arc<str>,
    /// Sum of [`retention::event_bytes`] over the retained events (from the first offset).
    bytes: u64,
}

/// Per-topic logs (in a [`TopicSet`] on the member's disk) plus the dedup window.
#[derive(Debug)]
pub struct EventLogState {
    store: TopicSet,
    topics: BTreeMap<String, TopicInfo>,
    /// Most record bytes one fetch reads (at least one event is returned).
    read_max_bytes: usize,
    /// Most topics; a publish that would create one more is refused (see [`Self::set_max_topics`]).
    max_topics: usize,
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

/// A read that could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    #[error("reading the topic files failed: {0}")]
    Store(#[from] StoreError),
}

/// How long a client is told to wait before asking another member for a range this one holds corrupt.
const CORRUPT_RETRY_MS: u32 = 100;

impl From<ReadError> for ServiceError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::OutOfRange(e) => ServiceError::OutOfRange(e.to_string()),
            // Bad bytes in this member's files (bit rot): never served; another member may
            // hold the range intact, so the client is told to ask elsewhere.
            ReadError::Store(e @ StoreError::Corrupt { .. }) => ServiceError::Unavailable {
                retry_after_ms: CORRUPT_RETRY_MS,
                reason: format!("this member cannot serve that range, ask another: {e}"),
            },
            ReadError::Store(e) => ServiceError::Internal(e.to_string()),
        }
    }
}

/// A publish that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Refused by a full `discard = "new"` topic (the same on every replica; state unchanged).
    #[error(transparent)]
    Full(#[from] TopicFull),
    /// The topic files could not be written: fatal for the member (the store is poisoned).
    #[error("writing the topic files failed: {0}")]
    Store(#[from] StoreError),
}

impl From<ApplyError> for ServiceError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Full(e) => ServiceError::OutOfRange(e.to_string()),
            ApplyError::Store(e) => ServiceError::Internal(e.to_string()),
        }
    }
}

/// The event pipeline's replicated checkpoint: per topic the offset below which every event was
/// fully handled, and the idempotency keys whose transactional effects happened (the newest
/// `MAX_HANDLED_KEYS`). A new leader's pipeline resumes from here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessingProgress {
    pub positions: BTreeMap<String, u64>,
    handled: HandledKeys,
}

/// Handled idempotency keys remembered in the replicated checkpoint.
pub const MAX_HANDLED_KEYS: usize = 200_000;

impl ProcessingProgress {
    /// True if the key's transactional effect is recorded as done.
    pub fn is_handled(&self, key: (u64, u64)) -> bool {
        self.handled.contains(&key)
    }

    /// The remembered handled keys (a new leader's pipeline starts from a copy).
    pub fn handled(&self) -> &HandledKeys {
        &self.handled
    }

    /// The remembered handled keys, oldest first.
    pub fn handled_keys(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.handled.iter()
    }

    fn apply(&mut self, positions: &[(String, u64)], keys: &[(u64, u64)]) {
        for (topic, next) in positions {
            let p = self.positions.entry(topic.clone()).or_default();
            *p = (*p).max(*next);
        }
        // A whole entry's keys first, then the bound: a key of this entry that was the oldest
        // stays remembered (every replica and every format before this one applied it so).
        for &k in keys {
            self.handled.insert(k);
        }
        self.handled.forget_beyond_bound();
    }
}

impl EventLogState {
    /// An empty log whose topic files live on a fresh in-memory disk (a [`LocalNode`](super::LocalNode),
    /// tests, fuzzing): the same code path as a member's files, without durability.
    pub fn new(dedup: DedupConfig) -> Self {
        Self::with_store(dedup, memory_store())
    }

    /// An empty log over `store` (its topics must be empty: a fresh set).
    pub fn with_store(dedup: DedupConfig, store: TopicSet) -> Self {
        EventLogState {
            store,
            topics: BTreeMap::new(),
            read_max_bytes: DEFAULT_READ_MAX_BYTES,
            max_topics: usize::MAX,
            dedup: DedupWindow::new(dedup),
            last_stamp_ms: 0,
            batches_applied: 0,
            events_stored: 0,
            progress: ProcessingProgress::default(),
            consumers: ConsumerTable::default(),
            settings: TopicSettings::default(),
        }
    }

    /// Bounds the record bytes one fetch reads (at least one event is always returned).
    pub fn set_read_max_bytes(&mut self, max: usize) {
        self.read_max_bytes = max.max(1);
    }

    /// The bound [`Self::set_read_max_bytes`] set.
    pub fn read_max_bytes(&self) -> usize {
        self.read_max_bytes
    }

    /// Bounds the number of topics (`cluster.max_topics`): each holds a file descriptor for its
    /// active segment, so the server's descriptor budget counts them. The leader refuses a
    /// publish that would create a topic beyond it before proposing it
    /// ([`Self::check_new_topics`]); topics that exist take events as before.
    pub fn set_max_topics(&mut self, max: usize) {
        self.max_topics = max;
    }

    /// The bound [`Self::set_max_topics`] set.
    pub fn max_topics(&self) -> usize {
        self.max_topics
    }

    /// Takes this member's own limits (from its config, not replicated: the read bound and
    /// the topic bound) from the state it replaces, as an installed snapshot does.
    pub fn keep_local_limits(&mut self, replaced: &EventLogState) {
        self.read_max_bytes = replaced.read_max_bytes;
        self.max_topics = replaced.max_topics;
    }

    /// Applies one ordered batch stamped at `stamped_ms`: each event is either found in the
    /// dedup window (its original offset is returned) or appended to its topic's files (written,
    /// not fsynced: the Raft log is the durability point).
    pub fn apply_batch(&mut self, events: Vec<Event>, stamped_ms: u64) -> Result<Vec<Appended>, StoreError> {
        self.apply_batch_keeping(events, stamped_ms, None)
    }

    /// [`Self::apply_batch`], pushing the newly stored events (not duplicates) to `fresh`.
    ///
    /// All or nothing when the process is out of file descriptors: where each event goes is
    /// decided first without changing anything, then every file is opened and written
    /// ([`TopicSet::append_all`]), and only then is the batch recorded here. A store error that
    /// [`StoreError::is_fd_exhaustion`] left this state exactly as it was, and the same batch may
    /// be applied again once descriptors free (the driver does: `node/cluster/apply.rs`).
    fn apply_batch_keeping(
        &mut self,
        events: Vec<Event>,
        stamped_ms: u64,
        fresh: Option<&mut Vec<StoredEvent>>,
    ) -> Result<Vec<Appended>, StoreError> {
        let now = stamped_ms.max(self.last_stamp_ms);
        let (out, adds) = self.plan_batch(&events, now);
        let appends: Vec<(&str, Vec<(u64, &Event)>)> =
            adds.iter().map(|(t, idx)| (&**t, idx.iter().map(|&i| (now, &events[i])).collect())).collect();
        self.store.append_all(&appends)?;
        drop(appends);
        self.record_batch(&events, &out, now);
        if let Some(fresh) = fresh {
            // `out` has one answer per event, in order.
            let stored = events.into_iter().zip(&out).filter(|(_, a)| !a.duplicate);
            fresh.extend(stored.map(|(event, a)| StoredEvent { offset: a.offset, timestamp_ms: now, event }));
        }
        Ok(out)
    }

    /// Where each event of a batch stamped `now` goes, changing nothing: per event its answer
    /// (a duplicate gets its original offset, from the dedup window or earlier in the batch),
    /// and per topic the indexes of the events to store, in order.
    fn plan_batch(&self, events: &[Event], now: u64) -> (Vec<Appended>, BTreeMap<Arc<str>, Vec<usize>>) {
        let mut out = Vec::with_capacity(events.len());
        let mut adds: BTreeMap<Arc<str>, Vec<usize>> = BTreeMap::new();
        let mut in_batch: BTreeMap<(u64, u64), (Arc<str>, u64)> = BTreeMap::new();
        for (i, event) in events.iter().enumerate() {
            let key = event.idempotency_key();
            let hit = key.and_then(|(producer, seq)| {
                in_batch
                    .get(&(producer, seq))
                    .cloned()
                    .or_else(|| self.dedup.lookup_at(producer, seq, now).map(|h| (h.topic, h.offset)))
            });
            if let Some((topic, offset)) = hit {
                out.push(Appended { topic, offset, duplicate: true });
                continue;
            }
            let topic = match (adds.get_key_value(event.topic.as_str()), self.topics.get(&event.topic)) {
                (Some((t, _)), _) => t.clone(),
                (None, Some(info)) => info.name.clone(),
                (None, None) => Arc::from(event.topic.as_str()),
            };
            let pending = adds.entry(topic.clone()).or_default();
            let offset = self.end_offset(&topic) + pending.len() as u64;
            pending.push(i);
            if let Some(k) = key {
                in_batch.insert(k, (topic.clone(), offset));
            }
            out.push(Appended { topic, offset, duplicate: false });
        }
        (out, adds)
    }

    /// Records a batch whose events [`Self::plan_batch`] placed and the store holds: replicated
    /// time, dedup keys, sizes and counters.
    fn record_batch(&mut self, events: &[Event], out: &[Appended], now: u64) {
        self.last_stamp_ms = now;
        self.dedup.expire(now);
        self.batches_applied += 1;
        for (event, a) in events.iter().zip(out).filter(|(_, a)| !a.duplicate) {
            // Looked up first: the topic's name is copied once, when the topic is new.
            let bytes = retention::event_bytes(event);
            match self.topics.get_mut(&event.topic) {
                Some(info) => info.bytes += bytes,
                None => {
                    drop(self.topics.insert(event.topic.clone(), TopicInfo { name: a.topic.clone(), bytes }))
                }
            }
            self.events_stored += 1;
            if let Some((producer, seq)) = event.idempotency_key() {
                self.dedup.record(producer, seq, a.topic.clone(), a.offset, now);
            }
        }
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
    pub fn fetch(&self, topic: &str, offset: u64, max: usize) -> Result<FetchReply, StoreError> {
        let Some(log) = self.store.get(topic) else {
            return Ok(FetchReply { events: Vec::new(), next_offset: offset, end_offset: 0 });
        };
        // Below the first retained offset reads from there ([`Self::read`] refuses it instead).
        let (first, end) = (log.first_offset(), log.end_offset());
        let start = offset.clamp(first, end);
        let events = if max == 0 { Vec::new() } else { log.read(start, max, self.read_max_bytes)? };
        let stop = start + events.len() as u64;
        // A consumer ahead of the end keeps its position and waits for the topic to catch up.
        Ok(FetchReply { next_offset: stop.max(offset), end_offset: end, events })
    }

    /// Names of all topics, sorted.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// How many topics there are.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// True if `topic` exists (it has stored events, retained or not).
    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// The retained events of `topic` from `offset` (at least its first offset), read from the
    /// files a page at a time.
    pub fn events_from(
        &self,
        topic: &str,
        offset: u64,
    ) -> impl Iterator<Item = Result<StoredEvent, StoreError>> + '_ {
        self.store.get(topic).into_iter().flat_map(move |t| t.iter_from(offset.max(t.first_offset())))
    }

    /// The whole retained log of one topic, read from the files (O(topic): for checkers, tests
    /// and tools). A read error is logged and ends the list early — a checker comparing it then
    /// sees the data as missing.
    pub fn topic_log(&self, topic: &str) -> Vec<StoredEvent> {
        let mut out = Vec::new();
        for e in self.events_from(topic, 0) {
            match e {
                Ok(e) => out.push(e),
                Err(err) => {
                    tracing::error!(topic, error = %err, "cannot read a topic log");
                    break;
                }
            }
        }
        out
    }

    /// Events retained in `topic` (end offset minus first offset).
    pub fn event_count(&self, topic: &str) -> u64 {
        self.end_offset(topic) - self.first_offset(topic)
    }

    /// The topic files.
    pub fn store(&self) -> &TopicSet {
        &self.store
    }

    /// The topic files, to write into (a snapshot install pulling records).
    pub fn store_mut(&mut self) -> &mut TopicSet {
        &mut self.store
    }

    /// Makes everything appended to the topic files durable (before a snapshot is recorded).
    pub fn sync_topics(&mut self) -> Result<(), StoreError> {
        self.store.sync_all()
    }

    /// Deletes topic segments wholly below the first retained offsets: call once a snapshot
    /// recording those offsets is durable.
    pub fn delete_trimmed_topics(&mut self) -> Result<(), StoreError> {
        self.store.delete_trimmed()
    }

    /// A copy of this state whose topic files are copied to a fresh in-memory disk (O(data): for
    /// checkers and tests that keep a state after its member moved on).
    pub fn try_clone(&self) -> Result<Self, StoreError> {
        Ok(EventLogState {
            store: self.store.copy_to_memory()?,
            topics: self.topics.clone(),
            read_max_bytes: self.read_max_bytes,
            max_topics: self.max_topics,
            dedup: self.dedup.clone(),
            last_stamp_ms: self.last_stamp_ms,
            batches_applied: self.batches_applied,
            events_stored: self.events_stored,
            progress: self.progress.clone(),
            consumers: self.consumers.clone(),
            settings: self.settings.clone(),
        })
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
        for name in self.topics.keys() {
            h.write(name.as_bytes());
            for s in self.topic_log(name) {
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
/// Format 5: topic data lives in files and the snapshot holds their metadata; the dedup window
/// and the pipeline's handled keys are written as runs of keys. Format 4 (still read) wrote the
/// handled keys key by key (3.2 MB of a 3.5 MB snapshot at 200 K keys) and had a files flag;
/// format 3 wrote the dedup window key by key; format 2 held every event.
pub const SNAPSHOT_VERSION: u8 = 5;
/// The previous format, still read (see [`SNAPSHOT_VERSION`]).
const SNAPSHOT_VERSION_4: u8 = 4;

/// Decodes `snap` onto a copy of `s`'s topic files (a snapshot does not carry them).
#[cfg(test)]
pub(crate) fn decode_on_copy(
    s: &EventLogState,
    dedup: DedupConfig,
    snap: Bytes,
) -> Result<EventLogState, SnapshotDecodeError> {
    let disk = s.store().copy_files_to_memory().expect("an in-memory copy");
    EventLogState::decode_snapshot_on(dedup, snap, Arc::new(disk))
}

/// A state snapshot that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad event-log snapshot: {0}")]
pub struct SnapshotDecodeError(pub String);

impl EventLogState {
    /// Serialises the state for a Raft snapshot: counters, the topic files' metadata, the dedup
    /// window, checkpoint, consumers and retention. Reads no topic file (a follower that lacks
    /// the files pulls them by catch-up streaming).
    pub fn encode_snapshot(&self) -> Bytes {
        self.encode_snapshot_as(SNAPSHOT_VERSION)
    }

    /// A snapshot in `format` (5, or 4 for tests of reading old data directories).
    fn encode_snapshot_as(&self, format: u8) -> Bytes {
        let meta = self.store.metadata();
        let mut out = BytesMut::with_capacity(256);
        out.put_slice(SNAPSHOT_MAGIC);
        out.put_u8(format);
        out.put_u64(self.last_stamp_ms);
        out.put_u64(self.batches_applied);
        out.put_u64(self.events_stored);
        meta.encode(&mut out);
        if format == SNAPSHOT_VERSION_4 {
            // Format 4's files flag: no topic files inline.
            out.put_u8(0);
        }
        self.encode_tail(&mut out, format);
        out.freeze()
    }

    /// A format-4 snapshot (what the previous build wrote), for tests of reading it.
    #[cfg(test)]
    pub(crate) fn encode_snapshot_v4(&self) -> Bytes {
        self.encode_snapshot_as(SNAPSHOT_VERSION_4)
    }

    /// The part of a snapshot after the topic files: dedup, checkpoint, consumers, retention.
    fn encode_tail(&self, out: &mut BytesMut, format: u8) {
        // O(runs): the window keeps its keys as runs (no work per key in the driver's round).
        out.put_u64(self.dedup.run_count() as u64);
        for r in self.dedup.runs() {
            out.put_u64(r.producer);
            out.put_u64(r.first_seq);
            out.put_u64(r.first_offset);
            out.put_u64(r.stamped_ms);
            out.put_u32(r.len as u32);
            put_str16(out, r.topic);
        }
        out.put_u32(self.progress.positions.len() as u32);
        for (topic, next) in &self.progress.positions {
            put_str16(out, topic);
            out.put_u64(*next);
        }
        if format == SNAPSHOT_VERSION_4 {
            out.put_u64(self.progress.handled.len() as u64);
            for (p, q) in self.progress.handled.iter() {
                out.put_u64(p);
                out.put_u64(q);
            }
        } else {
            let runs = handled_runs(self.progress.handled.iter());
            out.put_u64(runs.len() as u64);
            for (producer, first_seq, len) in runs {
                out.put_u64(producer);
                out.put_u64(first_seq);
                out.put_u32(len);
            }
        }
        self.consumers.encode(out);
        retention::encode_block(self, out);
    }

    /// A digest of everything a snapshot records except where the files physically lie (segment
    /// boundaries, which depend on when each replica took its snapshots): counters, per topic its
    /// first and end offsets, and the rest. Equal on replicas that hold the same state.
    pub fn snapshot_digest(&self) -> u64 {
        let mut out = BytesMut::new();
        out.put_u64(self.last_stamp_ms);
        out.put_u64(self.batches_applied);
        out.put_u64(self.events_stored);
        for name in self.topics.keys() {
            put_str16(&mut out, name);
            out.put_u64(self.first_offset(name));
            out.put_u64(self.end_offset(name));
        }
        self.encode_tail(&mut out, SNAPSHOT_VERSION);
        let mut h = Fnv64::default();
        h.write(&out);
        h.finish()
    }

    /// Rebuilds a state from [`encode_snapshot`](Self::encode_snapshot)'s bytes, opening its
    /// topic files on `disk` at the snapshot's metadata (for tests and fuzzing). Never panics.
    pub fn decode_snapshot_on(
        dedup: DedupConfig,
        b: Bytes,
        disk: Arc<dyn Disk>,
    ) -> Result<Self, SnapshotDecodeError> {
        Self::decode_snapshot_with(dedup, b, |meta| TopicSet::open(disk, memory_store_config(), Some(meta)))
    }

    /// Rebuilds a state from a snapshot; `open` brings the topic files to the snapshot's
    /// metadata and opens them. Never panics.
    pub fn decode_snapshot_with(
        dedup: DedupConfig,
        mut b: Bytes,
        open: impl FnOnce(&StoreMeta) -> Result<TopicSet, StoreError>,
    ) -> Result<Self, SnapshotDecodeError> {
        let need = |b: &Bytes, n: usize, what: &str| {
            if b.remaining() < n { Err(SnapshotDecodeError(format!("truncated at {what}"))) } else { Ok(()) }
        };
        need(&b, 5, "header")?;
        if &b[..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotDecodeError("wrong magic".into()));
        }
        b.advance(4);
        let v = b.get_u8();
        if v != SNAPSHOT_VERSION && v != SNAPSHOT_VERSION_4 {
            return Err(SnapshotDecodeError(format!(
                "snapshot format {v} is not this build's format {SNAPSHOT_VERSION}{}",
                match v {
                    2 => {
                        " (format 2 kept every event in the snapshot; this build keeps topic data in \
                         files): move the old data directory away and start empty, or run the old build"
                    }
                    3 => {
                        " (format 3 wrote the dedup window key by key; this build writes runs): move \
                         the old data directory away and start empty, or run the old build"
                    }
                    _ => "",
                }
            )));
        }
        need(&b, 24, "counters")?;
        let (last_stamp_ms, batches_applied, events_stored) = (b.get_u64(), b.get_u64(), b.get_u64());
        let meta = StoreMeta::decode(&mut b).map_err(|e| SnapshotDecodeError(e.to_string()))?;
        if v == SNAPSHOT_VERSION_4 {
            decode_files_flag(&mut b)?;
        }
        let store = open(&meta).map_err(|e| SnapshotDecodeError(format!("topic files: {e}")))?;
        tracing::debug!(topics = meta.topics.len(), "restart: topic files opened at the snapshot");
        let mut st = EventLogState::with_store(dedup, store);
        (st.last_stamp_ms, st.batches_applied, st.events_stored) =
            (last_stamp_ms, batches_applied, events_stored);
        for t in &meta.topics {
            st.topics.insert(t.name.clone(), TopicInfo { name: Arc::from(t.name.as_str()), bytes: 0 });
        }
        st.decode_rest(&mut b, v)?;
        tracing::debug!(events = st.events_stored, "restart: dedup window, consumers and checkpoint decoded");
        // Against the metadata, not the files: an install may still be pulling them.
        if meta.topics.iter().map(|t| t.end).sum::<u64>() != st.events_stored {
            return Err(SnapshotDecodeError("event counter does not match the logs".into()));
        }
        Ok(st)
    }

    /// The dedup window: runs of keys (see [`DedupWindow::runs`]), oldest first, each restored
    /// whole (no work per key: a restart or install with 400 K remembered keys restores a few
    /// thousand runs).
    fn decode_dedup(&mut self, b: &mut Bytes) -> Result<(), SnapshotDecodeError> {
        let err = |what: &str| SnapshotDecodeError(what.to_string());
        if b.remaining() < 8 {
            return Err(err("truncated at dedup run count"));
        }
        let nruns = b.get_u64();
        for _ in 0..nruns {
            if b.remaining() < 36 {
                return Err(err("truncated at dedup run"));
            }
            let (producer, first_seq, first_offset, stamped_ms) =
                (b.get_u64(), b.get_u64(), b.get_u64(), b.get_u64());
            let len = u64::from(b.get_u32());
            let topic = get_str(b)?;
            let name = self
                .topics
                .get(&topic)
                .map(|t| t.name.clone())
                .ok_or_else(|| err("dedup key of unknown topic"))?;
            if stamped_ms > self.last_stamp_ms {
                return Err(err("dedup entry out of order"));
            }
            if crate::planted!(DedupNotInSnapshot) {
                continue;
            }
            let run = DedupRun { producer, first_seq, first_offset, stamped_ms, len, topic: &name };
            self.dedup.restore_run(&run).map_err(|e| err(&e.to_string()))?;
        }
        Ok(())
    }

    /// The part of a snapshot after the topic files: dedup, checkpoint, consumers, retention.
    fn decode_rest(&mut self, b: &mut Bytes, format: u8) -> Result<(), SnapshotDecodeError> {
        let need = |b: &Bytes, n: usize, what: &str| {
            if b.remaining() < n { Err(SnapshotDecodeError(format!("truncated at {what}"))) } else { Ok(()) }
        };
        self.decode_dedup(b)?;
        need(b, 4, "checkpoint positions")?;
        let npos = b.get_u32();
        let mut positions = Vec::new();
        for _ in 0..npos {
            let topic = get_str(b)?;
            need(b, 8, "checkpoint position")?;
            positions.push((topic, b.get_u64()));
        }
        let keys = if format == SNAPSHOT_VERSION_4 { decode_handled_v4(b)? } else { decode_handled_runs(b)? };
        self.progress.apply(&positions, &keys);
        self.consumers = ConsumerTable::decode(b).map_err(SnapshotDecodeError)?;
        retention::decode_block(self, b)?;
        if b.has_remaining() {
            return Err(SnapshotDecodeError(format!("{} trailing bytes", b.remaining())));
        }
        Ok(())
    }
}

/// Consecutive handled keys of one producer with consecutive sequences, as (producer, first
/// sequence, length), oldest first: a pipelined producer's keys make few runs.
fn handled_runs(order: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64, u32)> {
    let mut runs: Vec<(u64, u64, u32)> = Vec::new();
    for (producer, seq) in order {
        if let Some((p, first, len)) = runs.last_mut()
            && *p == producer
            && first.checked_add(u64::from(*len)) == Some(seq)
            && *len < u32::MAX
        {
            *len += 1;
            continue;
        }
        runs.push((producer, seq, 1));
    }
    runs
}

/// Format 5's handled keys: runs, of which only the newest [`MAX_HANDLED_KEYS`] keys are
/// expanded (the rest would be forgotten as they are recorded), so a run's length cannot make
/// decoding allocate more than that bound.
fn decode_handled_runs(b: &mut Bytes) -> Result<Vec<(u64, u64)>, SnapshotDecodeError> {
    let err = |what: &str| SnapshotDecodeError(what.to_string());
    if b.remaining() < 8 {
        return Err(err("truncated at handled-key runs"));
    }
    let nruns = b.get_u64();
    if nruns.saturating_mul(20) > b.remaining() as u64 {
        return Err(err("handled-key run count larger than the snapshot"));
    }
    let mut runs = Vec::with_capacity(nruns as usize);
    for _ in 0..nruns {
        let (producer, first, len) = (b.get_u64(), b.get_u64(), u64::from(b.get_u32()));
        if len == 0 || first.checked_add(len - 1).is_none() {
            return Err(err("handled-key run out of range"));
        }
        runs.push((producer, first, len));
    }
    let total = runs.iter().fold(0u64, |t, r| t.saturating_add(r.2));
    let mut skip = total.saturating_sub(MAX_HANDLED_KEYS as u64);
    let mut keys = Vec::with_capacity((total - skip) as usize);
    for (producer, first, len) in runs {
        let from = skip.min(len);
        skip -= from;
        keys.extend((from..len).map(|i| (producer, first + i)));
    }
    Ok(keys)
}

/// Format 4's handled keys, key by key.
fn decode_handled_v4(b: &mut Bytes) -> Result<Vec<(u64, u64)>, SnapshotDecodeError> {
    if b.remaining() < 8 {
        return Err(SnapshotDecodeError("truncated at handled keys".into()));
    }
    let nkeys = b.get_u64();
    if nkeys.saturating_mul(16) > b.remaining() as u64 {
        return Err(SnapshotDecodeError("handled-key count larger than the snapshot".into()));
    }
    Ok((0..nkeys).map(|_| (b.get_u64(), b.get_u64())).collect())
}

/// Format 4's files flag. Snapshots that carried their topic files (flag 1, sent to a member
/// that lacked them before catch-up streaming) are refused: no build writes them any more.
fn decode_files_flag(b: &mut Bytes) -> Result<(), SnapshotDecodeError> {
    let bad = |what: &str| SnapshotDecodeError(format!("topic files: {what}"));
    if !b.has_remaining() {
        return Err(bad("truncated flag"));
    }
    match b.get_u8() {
        0 => Ok(()),
        1 => Err(bad(
            "this snapshot carries its topic files inline, which this build no longer reads (members \
             now pull them by catch-up streaming): install it from a leader running this build",
        )),
        f => Err(bad(&format!("unknown flag {f}"))),
    }
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

    impl EventLogState {
        fn fetch_ok(&self, topic: &str, offset: u64, max: usize) -> FetchReply {
            self.fetch(topic, offset, max).unwrap()
        }
    }

    fn ev(topic: &str, producer: u64, seq: u64) -> Event {
        let mut e = Event::new(topic, Priority::Medium, format!("{producer}:{seq}"));
        e.producer_id = producer;
        e.sequence = seq;
        e
    }

    /// Issue 15: a read over a rotted topic record answers `unavailable` naming the file (the
    /// client asks another member), never the bytes; the store counts it.
    #[test]
    fn a_read_over_a_rotted_record_is_unavailable_and_names_the_file() {
        let d = crate::rt::SimDisk::new();
        let cfg = StoreConfig {
            segment_bytes: 4096,
            index_interval_bytes: 64,
            read_cache_bytes: 0,
            verify_on_open: true,
        };
        let store = TopicSet::open(std::sync::Arc::new(d.clone()), cfg, None).unwrap();
        let mut s = EventLogState::with_store(DedupConfig::default(), store);
        s.apply_batch((0..10).map(|i| ev("a", 1, i)).collect(), 10).unwrap();
        s.sync_topics().unwrap();
        let file = crate::rt::Disk::list(&d, "topic-").unwrap().pop().unwrap();
        d.corrupt(&file, 200).unwrap();
        let err = ServiceError::from(s.read("a", 0, 100).unwrap_err());
        let ServiceError::Unavailable { reason, .. } = &err else { panic!("{err:?}") };
        assert!(reason.contains(&file) && reason.contains("corrupt"), "{reason}");
        assert_eq!(s.store().corrupt_found(), 1);
    }

    #[test]
    fn offsets_are_dense_per_topic() {
        let mut s = EventLogState::new(DedupConfig::default());
        let r = s.apply_batch(vec![ev("a", 1, 1), ev("b", 1, 2), ev("a", 1, 3)], 10).unwrap();
        assert_eq!(
            r.iter().map(|a| (&*a.topic, a.offset)).collect::<Vec<_>>(),
            vec![("a", 0), ("b", 0), ("a", 1)]
        );
        assert_eq!(s.fetch_ok("a", 0, 10).events.len(), 2);
        assert_eq!(s.fetch_ok("a", 1, 10).events[0].event.sequence, 3);
    }

    #[test]
    fn a_retry_gets_its_original_offset_and_no_second_copy() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![ev("a", 1, 1), ev("a", 1, 2)], 10).unwrap();
        let r = s.apply_batch(vec![ev("a", 1, 2), ev("a", 1, 3)], 20).unwrap();
        assert_eq!(r[0], Appended { topic: "a".into(), offset: 1, duplicate: true });
        assert_eq!(r[1], Appended { topic: "a".into(), offset: 2, duplicate: false });
        assert_eq!(s.topic_log("a").len(), 3);
    }

    #[test]
    fn duplicates_inside_one_batch_are_caught() {
        let mut s = EventLogState::new(DedupConfig::default());
        let r = s.apply_batch(vec![ev("a", 1, 1), ev("a", 1, 1)], 10).unwrap();
        assert!(!r[0].duplicate && r[1].duplicate);
        assert_eq!(s.topic_log("a").len(), 1);
    }

    #[test]
    fn a_batch_whose_files_cannot_be_opened_changes_nothing_and_applies_whole_later() {
        use crate::rt::DiskFault;
        let d = SimDisk::new();
        let on =
            |disk: &SimDisk| TopicSet::open(Arc::new(disk.clone()), memory_store_config(), None).unwrap();
        let mut s = EventLogState::with_store(DedupConfig::default(), on(&d));
        let mut twin = EventLogState::with_store(DedupConfig::default(), on(&SimDisk::new()));
        for st in [&mut s, &mut twin] {
            st.apply_batch(vec![ev("a", 1, 1)], 10).unwrap();
        }
        // "a" has its file; the new topic "b" needs one. A duplicate inside the batch and one of
        // an earlier batch, so the dedup window would show a half-applied batch.
        let batch = vec![ev("a", 1, 2), ev("b", 1, 3), ev("a", 1, 2), ev("a", 1, 1), ev("b", 2, 1)];
        let seen = |st: &EventLogState| {
            (st.digest(), st.encode_snapshot(), st.events_stored(), st.batches_applied(), st.dedup_len())
        };
        let before = seen(&s);
        d.inject(DiskFault::TooManyOpenFiles(u32::MAX));
        let err = s.apply_batch(batch.clone(), 20).unwrap_err();
        assert!(err.is_fd_exhaustion(), "{err}");
        assert_eq!(seen(&s), before, "nothing of the batch applied");
        assert_eq!(crate::rt::Disk::list(&d, "").unwrap().len(), 1, "no file left behind");
        // Descriptors free: the same batch applies as if it had never failed.
        d.clear_faults();
        let got = s.apply_batch(batch.clone(), 20).unwrap();
        assert_eq!(got, twin.apply_batch(batch, 20).unwrap());
        assert_eq!(seen(&s), seen(&twin));
        assert_eq!(s.topic_log("a").len(), 2);
    }

    #[test]
    fn anonymous_events_are_never_deduplicated() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![Event::new("a", Priority::Low, "x"), Event::new("a", Priority::Low, "x")], 1)
            .unwrap();
        assert_eq!(s.topic_log("a").len(), 2);
    }

    #[test]
    fn replicated_time_never_goes_backwards() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![ev("a", 1, 1)], 1000).unwrap();
        s.apply_batch(vec![ev("a", 1, 2)], 400).unwrap(); // leader clock stepped back
        let log = s.topic_log("a");
        assert_eq!(log[1].timestamp_ms, 1000);
    }

    #[test]
    fn expiry_follows_stamped_time() {
        let cfg = DedupConfig { window_ms: 100, ..DedupConfig::default() };
        let mut s = EventLogState::new(cfg);
        s.apply_batch(vec![ev("a", 1, 1)], 1000).unwrap();
        assert!(s.apply_batch(vec![ev("a", 1, 1)], 1100).unwrap()[0].duplicate);
        // Past the window the key is forgotten: a very late retry is stored again (documented).
        assert!(!s.apply_batch(vec![ev("a", 1, 1)], 1201).unwrap()[0].duplicate);
    }

    #[test]
    fn fetch_bounds() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch((0..5).map(|i| ev("a", 1, i)).collect(), 1).unwrap();
        let f = s.fetch_ok("a", 3, 10);
        assert_eq!((f.events.len(), f.next_offset, f.end_offset), (2, 5, 5));
        let f = s.fetch_ok("a", 9, 10);
        assert_eq!((f.events.len(), f.next_offset, f.end_offset), (0, 9, 5));
        let f = s.fetch_ok("nope", 2, 10);
        assert_eq!((f.events.len(), f.next_offset, f.end_offset), (0, 2, 0));
        assert_eq!(s.fetch_ok("a", 0, 2).events.len(), 2);
    }

    #[test]
    fn snapshot_round_trips_logs_and_dedup() {
        let cfg = DedupConfig { window_ms: 1000, max_keys_per_producer: 100, max_keys: 1000 };
        let mut s = EventLogState::new(cfg);
        s.apply_batch(vec![ev("a", 1, 1), ev("b", 1, 2), ev("a", 0, 0)], 100).unwrap();
        s.apply_batch(vec![ev("a", 2, 1)], 90).unwrap();
        s.apply_checkpoint(&[("a".into(), 2)], &[(1, 1), (2, 1)]);
        let snap = s.encode_snapshot();
        let mut r = decode_on_copy(&s, cfg, snap.clone()).unwrap();
        assert_eq!(r.digest(), s.digest());
        assert_eq!(r.events_stored(), 4);
        assert_eq!(r.batches_applied(), 2);
        assert_eq!(r.dedup_len(), s.dedup_len());
        assert_eq!(r.processing(), s.processing());
        assert!(r.processing().is_handled((2, 1)) && r.processing().positions["a"] == 2);
        // The restored window still catches a retry, and time stays monotonic.
        let a = r.apply_batch(vec![ev("b", 1, 2)], 50).unwrap();
        assert_eq!((a[0].offset, a[0].duplicate), (0, true));
        assert_eq!(s.apply_batch(vec![ev("b", 1, 2)], 50).unwrap(), a);
        assert_eq!(r.digest(), s.digest());
        // Corrupt or truncated snapshots are errors, never panics.
        for cut in 0..snap.len() {
            assert!(decode_on_copy(&s, cfg, snap.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad = snap.to_vec();
        bad[0] ^= 1;
        assert!(decode_on_copy(&s, cfg, Bytes::from(bad)).is_err());
    }

    /// A pipelined producer's window is written as runs: 10,000 remembered keys cost a few
    /// hundred bytes of snapshot (key by key they cost ~450 KB, rewritten at every snapshot),
    /// and the restored window still answers every retry with its original offset.
    #[test]
    fn a_pipelined_producers_dedup_window_is_small_in_a_snapshot_and_restored_whole() {
        let apply_all = |s: &mut EventLogState, stamp_base: u64| {
            for b in 0..100 {
                s.apply_batch((0..100).map(|i| ev("a", 7, b * 100 + i)).collect(), stamp_base + b / 10)
                    .unwrap();
            }
        };
        let cfg = DedupConfig::default();
        let mut s = EventLogState::new(cfg);
        apply_all(&mut s, 10);
        let mut one_key = EventLogState::new(DedupConfig { max_keys: 1, ..cfg });
        apply_all(&mut one_key, 10);
        let snap = s.encode_snapshot();
        let window_bytes = snap.len() - one_key.encode_snapshot().len();
        assert!(window_bytes < 2_000, "10,000 keys in 10 runs took {window_bytes} bytes");
        let mut r = decode_on_copy(&s, cfg, snap.clone()).unwrap();
        assert_eq!((r.dedup_len(), r.digest()), (10_000, s.digest()));
        let again = r.apply_batch((0..10_000).map(|i| ev("a", 7, i)).collect(), 30).unwrap();
        assert!(again.iter().enumerate().all(|(i, a)| a.duplicate && a.offset == i as u64));
        // A member with a smaller per-producer cap keeps the highest keys, as if it had applied them.
        let small = DedupConfig { max_keys_per_producer: 50, ..cfg };
        let r = decode_on_copy(&s, small, snap).unwrap();
        let mut direct = EventLogState::new(small);
        apply_all(&mut direct, 10);
        assert_eq!((r.dedup_len(), r.digest()), (50, direct.digest()));
    }

    /// Format 4 let a snapshot carry its topic files (flag 1); no build writes that any more, and
    /// reading one is refused with a message saying so, not misread.
    #[test]
    fn a_snapshot_carrying_its_files_is_refused_with_a_clear_error() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![ev("a", 1, 1)], 10).unwrap();
        let mut meta = BytesMut::new();
        s.store().metadata().encode(&mut meta);
        let mut snap = s.encode_snapshot_v4().to_vec();
        let flag = 5 + 24 + meta.len();
        assert_eq!(snap[flag], 0, "the files flag follows the metadata");
        snap[flag] = 1;
        let e = decode_on_copy(&s, DedupConfig::default(), Bytes::from(snap)).err().map(|e| e.0);
        assert!(e.as_deref().is_some_and(|e| e.contains("carries its topic files inline")), "{e:?}");
    }

    /// A state with the pipeline's full 200 K handled keys (four pipelined producers).
    fn with_handled_keys() -> EventLogState {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![ev("a", 1, 1), ev("a", 2, 1)], 10).unwrap();
        // Each producer's keys arrive 50 at a time (an entry's worth), the producers interleaved.
        for round in 0..1_000u64 {
            for producer in 1..=4 {
                let keys: Vec<(u64, u64)> = (0..50).map(|i| (producer, round * 50 + i)).collect();
                s.apply_checkpoint(&[("a".into(), 2)], &keys);
            }
        }
        // Older keys than the newest 200,000 are forgotten as they are recorded.
        s.apply_checkpoint(&[], &[(9, 1)]);
        assert_eq!(s.processing().handled_keys().count(), MAX_HANDLED_KEYS);
        s
    }

    /// The pipeline's handled keys go into a snapshot as runs (format 5): 200,000 keys of four
    /// interleaved pipelined producers cost 20 B per run, not 16 B per key (3.2 MB in format 4,
    /// rewritten at every snapshot), and come back in the same order.
    #[test]
    fn handled_keys_are_small_in_a_snapshot_and_restored_in_order() {
        let s = with_handled_keys();
        let snap = s.encode_snapshot();
        assert!(snap.len() < 100_000, "{} bytes", snap.len());
        let v4 = s.encode_snapshot_v4();
        assert!(v4.len() > 3_200_000, "{} bytes", v4.len());
        for bytes in [snap, v4] {
            let r = decode_on_copy(&s, DedupConfig::default(), bytes).unwrap();
            assert_eq!(r.processing(), s.processing());
            assert!(r.processing().handled_keys().eq(s.processing().handled_keys()));
            assert_eq!(r.snapshot_digest(), s.snapshot_digest());
        }
    }

    /// A pipelined producer's handled keys make one run; a run claiming more keys than the bound
    /// expands only the newest `MAX_HANDLED_KEYS` (no allocation a snapshot's bytes choose), and
    /// a run past the sequence space is refused.
    #[test]
    fn handled_key_runs_are_bounded_when_decoded() {
        let order: std::collections::VecDeque<_> =
            (5..105).map(|q| (7, q)).chain([(8, 1), (7, 105)]).collect();
        assert_eq!(handled_runs(order.iter().copied()), vec![(7, 5, 100), (8, 1, 1), (7, 105, 1)]);
        let run = |p: u64, q: u64, len: u32| {
            let mut b = BytesMut::new();
            b.put_u64(1);
            b.put_u64(p);
            b.put_u64(q);
            b.put_u32(len);
            b.freeze()
        };
        let keys = decode_handled_runs(&mut run(3, 0, u32::MAX)).unwrap();
        assert_eq!(keys.len(), MAX_HANDLED_KEYS);
        assert_eq!(keys.last(), Some(&(3, u64::from(u32::MAX) - 1)));
        assert!(decode_handled_runs(&mut run(3, u64::MAX, 2)).is_err());
        assert!(decode_handled_runs(&mut run(3, 1, 0)).is_err());
        assert_eq!(decode_handled_runs(&mut run(3, u64::MAX, 1)).unwrap(), vec![(3, u64::MAX)]);
    }

    /// Found by the `state_decode` fuzz target: dedup entries whose stamps go back (each within
    /// the snapshot's last stamp) reached the window's "time went backwards" assertion.
    #[test]
    fn dedup_stamps_going_back_in_a_snapshot_are_refused() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![ev("a", 1, 1)], 0x1111).unwrap();
        s.apply_batch(vec![ev("a", 1, 2)], 0x2222).unwrap();
        let mut bad = s.encode_snapshot().to_vec();
        let second = 0x2222u64.to_be_bytes();
        let at = bad.windows(8).rposition(|w| w == second).expect("the second dedup stamp");
        bad[at..at + 8].copy_from_slice(&0x1000u64.to_be_bytes());
        let e = decode_on_copy(&s, DedupConfig::default(), Bytes::from(bad)).err();
        assert_eq!(e.map(|e| e.0), Some("dedup entry out of order".to_string()));
    }

    /// A client may use the last sequence number; the window's run holding it used to be refused
    /// when the snapshot was read back ("dedup run out of range": `seq + len` overflowed), so a
    /// member that had taken such a snapshot could not restart.
    #[test]
    fn the_last_sequence_number_survives_a_snapshot() {
        let mut s = EventLogState::new(DedupConfig::default());
        s.apply_batch(vec![ev("a", 1, u64::MAX - 1), ev("a", 1, u64::MAX)], 10).unwrap();
        let r = decode_on_copy(&s, DedupConfig::default(), s.encode_snapshot()).unwrap();
        assert_eq!(r.dedup_len(), 2);
        assert_eq!(r.snapshot_digest(), s.snapshot_digest());
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
        s.apply_batch(vec![ev("a", 1, 1), ev("a", 1, 2), ev("a", 1, 3)], 10).unwrap();
        assert_eq!(s.commit_offset(&commit("w", 2, false)), Ok(2));
        assert_eq!(s.commit_offset(&commit("w", 1, false)), Ok(2), "never moves back");
        assert_eq!(s.commit_offset(&commit("r", 3, false)), Ok(3));
        let snap = s.encode_snapshot();
        let r = decode_on_copy(&s, DedupConfig::default(), snap.clone()).unwrap();
        assert_eq!(r.consumers(None), s.consumers(None));
        let w = &r.consumers(Some("w"))[0];
        assert_eq!((w.committed, w.end_offset, w.lag()), (2, 3, 1));
        for cut in 0..snap.len() {
            assert!(decode_on_copy(&s, DedupConfig::default(), snap.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn digest_changes_with_content() {
        let mut a = EventLogState::new(DedupConfig::default());
        let mut b = EventLogState::new(DedupConfig::default());
        a.apply_batch(vec![ev("a", 1, 1)], 1).unwrap();
        b.apply_batch(vec![ev("a", 1, 1)], 1).unwrap();
        assert_eq!(a.digest(), b.digest());
        b.apply_batch(vec![ev("a", 1, 2)], 1).unwrap();
        assert_ne!(a.digest(), b.digest());
    }
}
