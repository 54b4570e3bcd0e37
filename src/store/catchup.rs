//! Catch-up by streaming records: a member that installed a snapshot (which records only topic
//! metadata, [`StoreMeta`]) pulls the records it lacks from another member, topic by topic, in
//! chunks of whole checked records ([`RawChunk`]), never a whole segment or log in memory.
//!
//! # Protocol
//!
//! Like JetStream's stream catch-up (the follower asks for `first..last` of the snapshot, the
//! source streams what it has and says when messages are gone), but pull-based and one chunk at
//! a time: the planner ([`CatchUp`]) names the next range to ask for
//! ([`CatchUp::next_request`]); the driver sends it as a [`Body::RecordsRequest`] to any member;
//! that member answers with [`serve_records`]; the driver hands the answer back
//! ([`CatchUp::on_records`]). A lost, duplicated or reordered answer is harmless: an answer that
//! is not the next range wanted is refused ([`StoreError::is_refusal`]), and the driver asks again
//! (after a timeout, or from another member when one answers `NotAvailable`). When the source's
//! retention removed the offset asked for, it answers `FirstOffset` and the planner restarts that
//! topic there (the follower will trim the same way when it replays the log after the snapshot).
//!
//! # Durability and resuming
//!
//! Chunks are appended without fsync ([`TopicStore::append_raw`]); sealed segments are fsynced by
//! the normal segment roll. After a crash, [`TopicSet::open_partial`] opens whatever the disk
//! holds and plans only the rest. Before the caller declares the install complete (and records
//! the snapshot as installed), it must call [`TopicSet::sync_all`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::set::{TOPIC_FILE_PREFIX, file_id, prefix};
use super::{StoreConfig, StoreError, StoreMeta, TopicSet, TopicStore};
use crate::raft::message::{Body, Message, RecordsResult};
use crate::rt::Disk;

pub use crate::raft::message::MAX_RECORDS_BYTES;

/// Whole framed records of one topic for offsets `from..next`, as a member stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChunk {
    pub topic: String,
    pub from: u64,
    pub next: u64,
    pub bytes: Bytes,
}

/// What is still wanted of one topic: offsets `next..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    next: u64,
    end: u64,
}

/// Plans the pull of the records a [`TopicSet`] lacks to match a target [`StoreMeta`].
#[derive(Debug)]
pub struct CatchUp {
    wants: BTreeMap<String, Want>,
    bytes: u64,
    chunks: u64,
    restarts: u64,
}

impl CatchUp {
    /// Makes `set` a prefix of `target` (topics the target lacks removed, missing ones created
    /// with the target's ids, data beyond the target's end truncated, each topic trimmed to the
    /// target's first offset or emptied to start there when it cannot be extended to it) and
    /// plans pulling the rest. A local log that starts later than the target but within it is
    /// kept: only an earlier catch-up restarted at a source's newer first offset makes one.
    pub fn new(set: &mut TopicSet, target: &StoreMeta) -> Result<Self, StoreError> {
        check_target(target)?;
        let mut stale: Vec<String> = Vec::new();
        for (name, (id, _)) in &set.topics {
            if !target.topics.iter().any(|t| &t.name == name && t.id == *id) {
                stale.push(name.clone());
            }
        }
        for name in stale {
            let (_, mut store) = set.topics.remove(&name).expect("listed above");
            store.reset_to(0)?;
        }
        let mut wants = BTreeMap::new();
        for t in &target.topics {
            if !set.topics.contains_key(&t.name) {
                let store = TopicStore::open(set.disk.clone(), &prefix(t.id), set.cfg, 0)?;
                set.topics.insert(t.name.clone(), (t.id, store));
            }
            let store = &mut set.topics.get_mut(&t.name).expect("inserted above").1;
            fit(store, t.first, t.end)?;
            if store.end_offset() < t.end {
                wants.insert(t.name.clone(), Want { next: store.end_offset(), end: t.end });
            }
        }
        set.next_id = target.next_id;
        Ok(CatchUp { wants, bytes: 0, chunks: 0, restarts: 0 })
    }

    /// The next range to ask for: `(topic, offset, up_to)`, with `max_bytes` (capped at
    /// [`MAX_RECORDS_BYTES`]) as a ready [`Body::RecordsRequest`]; `None` when done. The same
    /// until an answer moves it on, so a lost answer is simply asked for again.
    pub fn next_request(&self, req_id: u64, max_bytes: u32) -> Option<Body> {
        let (topic, w) = self.wants.iter().next()?;
        let max_bytes = max_bytes.clamp(1, MAX_RECORDS_BYTES);
        Some(Body::RecordsRequest { req_id, topic: topic.clone(), offset: w.next, up_to: w.end, max_bytes })
    }

    /// Appends a chunk if it is exactly the next range wanted of its topic (else refused, nothing
    /// written): starts where the topic's pull stands, ends within the target, records check out.
    pub fn on_chunk(&mut self, set: &mut TopicSet, chunk: RawChunk) -> Result<(), StoreError> {
        let refuse = |reason: String| StoreError::Refused { prefix: chunk.topic.clone(), reason };
        let Some(&want) = self.wants.get(&chunk.topic) else {
            return Err(refuse("no records of this topic are wanted".into()));
        };
        if chunk.from != want.next || chunk.next <= chunk.from || chunk.next > want.end {
            return Err(refuse(format!(
                "chunk of offsets {}..{} does not start the wanted {}..{}",
                chunk.from, chunk.next, want.next, want.end
            )));
        }
        let got = super::check_records(&chunk.bytes, chunk.from).map_err(&refuse)?;
        if got != chunk.next {
            return Err(refuse(format!("chunk says it ends at {} but its records end at {got}", chunk.next)));
        }
        let store = set.get_mut(&chunk.topic).ok_or_else(|| refuse("topic missing locally".into()))?;
        let end = store.append_raw(chunk.from, &chunk.bytes)?;
        self.bytes += chunk.bytes.len() as u64;
        self.chunks += 1;
        self.advance(&chunk.topic, end);
        Ok(())
    }

    /// The source no longer retains the offset wanted of `topic`: its log now starts at `first`.
    /// The local log of that topic restarts empty there (clamped to the target's end).
    pub fn on_first_offset(&mut self, set: &mut TopicSet, topic: &str, first: u64) -> Result<(), StoreError> {
        let Some(&want) = self.wants.get(topic) else {
            return Err(StoreError::Refused { prefix: topic.into(), reason: "not wanted".into() });
        };
        if first <= want.next {
            return Err(StoreError::Refused {
                prefix: topic.into(),
                reason: format!("first offset {first} is not past the wanted {}", want.next),
            });
        }
        let first = first.min(want.end);
        let store = set.get_mut(topic).ok_or_else(|| StoreError::Refused {
            prefix: topic.into(),
            reason: "topic missing locally".into(),
        })?;
        store.reset_to(first)?;
        self.restarts += 1;
        self.advance(topic, first);
        Ok(())
    }

    /// Hands over an answer to a [`Body::RecordsRequest`]: a chunk ([`Self::on_chunk`]), a newer
    /// first offset ([`Self::on_first_offset`]); `NotAvailable` changes nothing and is refused
    /// (ask another member).
    pub fn on_records(&mut self, set: &mut TopicSet, result: RecordsResult) -> Result<(), StoreError> {
        match result {
            RecordsResult::Chunk { topic, from, next, bytes } => {
                self.on_chunk(set, RawChunk { topic, from, next, bytes })
            }
            RecordsResult::FirstOffset { topic, first } => self.on_first_offset(set, &topic, first),
            RecordsResult::NotAvailable { topic } => {
                Err(StoreError::Refused { prefix: topic, reason: "the member has no such records".into() })
            }
        }
    }

    fn advance(&mut self, topic: &str, next: u64) {
        let w = self.wants.get_mut(topic).expect("checked by the caller");
        w.next = next;
        if w.next >= w.end {
            self.wants.remove(topic);
        }
    }

    /// Every wanted record is appended (call [`TopicSet::sync_all`] before relying on it).
    pub fn is_done(&self) -> bool {
        self.wants.is_empty()
    }

    /// Bytes of records appended so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Chunks appended so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Topics restarted at a source's newer first offset so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
}

/// A target (from a peer's snapshot) that no honest member records: a topic whose first offset
/// is past its end, an id not below `next_id`, two topics with one name or one id.
fn check_target(target: &StoreMeta) -> Result<(), StoreError> {
    let (mut names, mut ids) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for t in &target.topics {
        let unique = names.insert(t.name.as_str()) && ids.insert(t.id);
        if t.first > t.end || t.id >= target.next_id || !unique {
            return Err(StoreError::Config(format!("catch-up target topic {:?} is inconsistent", t.name)));
        }
    }
    Ok(())
}

/// Brings one local log within `first..end`: cut beyond `end`, trimmed to `first`, or emptied to
/// start at `first` when it does not reach it (or lies wholly past `end`).
fn fit(store: &mut TopicStore, first: u64, end: u64) -> Result<(), StoreError> {
    if store.end_offset() < first || store.first_offset() > end {
        return store.reset_to(first);
    }
    store.truncate_to(end)?;
    store.trim_before(first)
}

impl TopicSet {
    /// Opens an install of `target` that may have been interrupted (a crash, a partition): every
    /// topic's files are opened as they are (a torn unsynced tail cut), other topics' files
    /// removed, and a [`CatchUp`] plans only what is still missing — what is on disk is never
    /// pulled again. Call [`TopicSet::sync_all`] before declaring the install complete.
    pub fn open_partial(
        disk: Arc<dyn Disk>,
        cfg: StoreConfig,
        target: &StoreMeta,
    ) -> Result<(TopicSet, CatchUp), StoreError> {
        check_target(target)?;
        let mut topics = BTreeMap::new();
        for t in &target.topics {
            let p = prefix(t.id);
            // Sealed segments were fsynced by their roll: only the newest may hold a torn tail.
            let newest =
                disk.list(&p)?.iter().filter_map(|n| super::segment::parse_segment_name(&p, n)).max();
            let store = TopicStore::open(disk.clone(), &p, cfg, newest.unwrap_or(0))?;
            if cfg.verify_on_open {
                store.verify_retained()?;
            }
            topics.insert(t.name.clone(), (t.id, store));
        }
        let mut removed = false;
        for name in disk.list(TOPIC_FILE_PREFIX)? {
            if file_id(&name).is_some_and(|id| !target.topics.iter().any(|t| t.id == id)) {
                disk.remove(&name)?;
                removed = true;
            }
        }
        if removed {
            disk.sync_dir()?;
        }
        let mut set = TopicSet { disk, cfg, topics, next_id: target.next_id };
        let plan = CatchUp::new(&mut set, target)?;
        Ok((set, plan))
    }
}

/// A member's answer to a [`Body::RecordsRequest`] from its topic logs (`None` for any other
/// message): at most `max_bytes` of records (one at least) from the offset asked, before
/// `up_to`; `FirstOffset` below its first retained offset; `NotAvailable` when it has none
/// there (or cannot read them: logged). Reads at most one chunk.
pub fn serve_records(set: &TopicSet, req: &Message) -> Option<Message> {
    let Body::RecordsRequest { req_id, topic, offset, up_to, max_bytes } = &req.body else {
        return None;
    };
    let max = (*max_bytes).clamp(1, MAX_RECORDS_BYTES);
    let topic = topic.clone();
    let result = match set.get(&topic).map(|s| s.read_raw_to(*offset, *up_to, max as usize)) {
        Some(Ok((next, bytes))) if next > *offset => {
            RecordsResult::Chunk { topic, from: *offset, next, bytes }
        }
        Some(Err(StoreError::OutOfRange { first, .. })) => RecordsResult::FirstOffset { topic, first },
        Some(Err(e)) => {
            tracing::warn!(topic = %topic, offset, error = %e, "cannot serve records");
            RecordsResult::NotAvailable { topic }
        }
        Some(Ok(_)) | None => RecordsResult::NotAvailable { topic },
    };
    let body = Body::Records { req_id: *req_id, result };
    Some(Message { from: req.to, to: req.from, term: req.term, body })
}
