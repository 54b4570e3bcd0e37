//! Appending a batch so that running out of file descriptors leaves nothing half-done.
//!
//! An append first encodes its records and decides where segments roll, then opens every file
//! it will write — the active segment, and the segment each roll starts (created empty) — and
//! only then writes. Only opening a file fails for want of descriptors
//! ([`DiskError::TooManyOpenFiles`](crate::rt::DiskError::TooManyOpenFiles)); when one does, the files this append created are removed
//! again and the store is exactly as before, so the caller may retry the same append once
//! descriptors free. Once writing has begun, every failure poisons the store, a lack of
//! descriptors included (a disk that reopened a file on its own): a half-written batch is never
//! retried (fsyncgate). [`TopicSet::append_all`] does the same across the topics of one batch.

use super::segment::{SegIndex, Segment, encode_record, segment_name};
use super::set::{TopicSet, prefix};
use super::{StoreError, TopicStore};
use crate::event::Event;

/// A batch encoded, its files open: writing it opens nothing.
#[derive(Debug)]
pub(super) struct Prepared {
    buf: Vec<u8>,
    /// Where in `buf` a segment roll starts a new segment, and that segment's base offset.
    rolls: Vec<(usize, u64)>,
    /// Files this append created ahead (removed again if it goes no further).
    created: Vec<String>,
}

/// The byte count of the segment records are being added to, to find where it rolls.
pub(super) struct RollPlan {
    seg_len: u64,
    segment_bytes: u64,
}

impl RollPlan {
    /// A record of `len` bytes at `start` in the buffer, of offset `offset`: notes in `rolls` a
    /// new segment if the record would take the current one past `segment_bytes` (a record larger
    /// than that gets a segment of its own).
    pub(super) fn add(&mut self, start: usize, len: u64, offset: u64, rolls: &mut Vec<(usize, u64)>) {
        if self.seg_len > 0 && self.seg_len + len > self.segment_bytes {
            rolls.push((start, offset));
            self.seg_len = 0;
        }
        self.seg_len += len;
    }
}

impl TopicStore {
    /// Appends events, each with the timestamp its batch was stamped with, at offsets from
    /// [`Self::end_offset`]; returns the new end. Written, not fsynced. All or nothing when the
    /// process is out of descriptors ([`StoreError::is_fd_exhaustion`]): nothing was written.
    pub fn append<'a>(
        &mut self,
        events: impl IntoIterator<Item = (u64, &'a Event)>,
    ) -> Result<u64, StoreError> {
        let p = self.prepare(events)?;
        self.write_prepared(p)
    }

    /// Encodes `events` and opens every file writing them needs. On an error the store is as
    /// before (or poisoned, if the error was not a lack of descriptors).
    pub(super) fn prepare<'a>(
        &mut self,
        events: impl IntoIterator<Item = (u64, &'a Event)>,
    ) -> Result<Prepared, StoreError> {
        self.check_live()?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut rolls = Vec::new();
        let mut plan = self.roll_plan();
        for (offset, (stamp, event)) in (self.end_offset()..).zip(events) {
            let start = buf.len();
            if let Err(n) = encode_record(&mut buf, offset, stamp, event) {
                self.buf = buf;
                return Err(StoreError::TooLarge(n));
            }
            plan.add(start, (buf.len() - start) as u64, offset, &mut rolls);
        }
        self.prepare_encoded(buf, rolls)
    }

    /// Where segments roll as records are added after the active segment's bytes.
    pub(super) fn roll_plan(&self) -> RollPlan {
        let seg_len = self.segments.values().next_back().map_or(0, |s| s.len);
        RollPlan { seg_len, segment_bytes: self.cfg.segment_bytes }
    }

    /// Opens the files that writing the encoded records `buf` (rolling at `rolls`) needs.
    pub(super) fn prepare_encoded(
        &mut self,
        buf: Vec<u8>,
        rolls: Vec<(usize, u64)>,
    ) -> Result<Prepared, StoreError> {
        let mut p = Prepared { buf, rolls, created: Vec::new() };
        if let Err(e) = self.open_ahead(&mut p) {
            self.discard(p)?;
            return Err(e);
        }
        Ok(p)
    }

    /// Opens the files `p` writes: the active segment (created if there is none yet) unless a
    /// roll comes first, and the segment each roll starts (created empty).
    fn open_ahead(&mut self, p: &mut Prepared) -> Result<(), StoreError> {
        if p.buf.is_empty() {
            return Ok(());
        }
        let mut files = Vec::with_capacity(p.rolls.len() + 1);
        if p.rolls.first().is_none_or(|&(at, _)| at > 0) {
            match self.segments.values().next_back() {
                Some(active) => files.push((active.name.clone(), false)),
                None => files.push((segment_name(&self.prefix, self.first), true)),
            }
        }
        files.extend(p.rolls.iter().map(|&(_, base)| (segment_name(&self.prefix, base), true)));
        for (name, new) in files {
            // An empty append opens (or creates) the file and keeps it open for the writes.
            self.mutate(|s| s.disk.append(&name, &[]))?;
            if new {
                p.created.push(name);
            }
        }
        Ok(())
    }

    /// Gives up a prepared append: removes the files it created (nothing was written to them).
    pub(super) fn discard(&mut self, p: Prepared) -> Result<(), StoreError> {
        for name in p.created.iter().rev() {
            self.mutate(|s| s.disk.remove(name))?;
        }
        self.buf = p.buf;
        Ok(())
    }

    /// Writes a prepared append; returns the new end. Any failure poisons the store.
    pub(super) fn write_prepared(&mut self, p: Prepared) -> Result<u64, StoreError> {
        let result = self.write_records(&p);
        self.buf = p.buf;
        match result {
            Err(StoreError::Disk(e)) if e.is_fd_exhaustion() => {
                self.poisoned = true;
                Err(StoreError::HalfWritten { prefix: self.prefix.clone(), source: e })
            }
            Err(e) => Err(e),
            Ok(()) => Ok(self.end_offset()),
        }
    }

    fn write_records(&mut self, p: &Prepared) -> Result<(), StoreError> {
        let mut from = 0;
        for &(at, base) in &p.rolls {
            self.write_active(&p.buf[from..at])?;
            self.roll()?;
            debug_assert_eq!(self.end_offset(), base, "a roll starts the segment prepared for it");
            from = at;
        }
        self.write_active(&p.buf[from..])
    }

    /// Writes whole records to the active segment (starting the first one if there is none; its
    /// file was created by [`Self::prepare`]).
    fn write_active(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.segments.is_empty() {
            let base = self.first;
            self.segments.insert(base, Segment::new(&self.prefix, base));
            self.dir_dirty = true;
        }
        let name = self.segments.values().next_back().map(|s| s.name.clone()).expect("a segment");
        if let Err(e) = self.mutate(|s| s.disk.append(&name, buf)) {
            // Something of `buf` may be in the file: never append after it.
            self.poisoned = true;
            return Err(e);
        }
        let interval = self.cfg.index_interval_bytes;
        let seg = self.segments.values_mut().next_back().expect("a segment");
        let (start_len, rel) = (seg.len, seg.end - seg.base);
        let index = seg.index_mut().get_or_insert_with(SegIndex::default);
        let (mut off, mut n) = (0, 0);
        while let Some((len, _)) = crate::record::header_at(buf, off) {
            let payload = &buf[off + crate::record::HEADER..off + crate::record::HEADER + len as usize];
            index.note(rel + n, start_len + off as u64, payload, interval);
            off += crate::record::HEADER + len as usize;
            n += 1;
        }
        index.crc = crc32c::crc32c_append(index.crc, buf);
        seg.end += n;
        seg.len += buf.len() as u64;
        self.cache_tail(start_len, buf);
        Ok(())
    }

    /// Seals the active segment (fsynced, so sealed segments are always whole on disk; its
    /// descriptor given back, so a topic holds one for its active segment only) and starts a new
    /// one at the end offset (its file was created by [`Self::prepare`]).
    fn roll(&mut self) -> Result<(), StoreError> {
        let end = self.end_offset();
        let sealed = self.segments.values().next_back().map(|s| s.name.clone());
        self.sync_through(end)?;
        if let Some(name) = sealed {
            self.disk.close(&name);
        }
        self.segments.insert(end, Segment::new(&self.prefix, end));
        self.dir_dirty = true;
        Ok(())
    }
}

impl TopicSet {
    /// Appends events to `topic` (created on first use); returns the topic's new end offset.
    pub fn append<'a>(
        &mut self,
        topic: &str,
        events: impl IntoIterator<Item = (u64, &'a Event)>,
    ) -> Result<u64, StoreError> {
        let events: Vec<(u64, &Event)> = events.into_iter().collect();
        self.append_all(&[(topic, events)])?;
        Ok(self.get(topic).map_or(0, TopicStore::end_offset))
    }

    /// Appends to several topics (each at most once; new ones are numbered in the order given),
    /// all or nothing when the process is out of descriptors: every file is opened, and every
    /// new topic's store, before anything is written.
    pub fn append_all(&mut self, batches: &[(&str, Vec<(u64, &Event)>)]) -> Result<(), StoreError> {
        let mut fresh = Vec::new();
        let mut next_id = self.next_id;
        for (topic, _) in batches {
            debug_assert!(batches.iter().filter(|(t, _)| t == topic).count() == 1, "{topic} given twice");
            if !self.topics.contains_key(*topic) {
                let id = next_id;
                next_id =
                    id.checked_add(1).ok_or_else(|| StoreError::Config("more than 2^32 topics".into()))?;
                let store = super::TopicStore::open(self.disk.clone(), &prefix(id), self.cfg, 0)?;
                fresh.push((topic.to_string(), (id, store)));
            }
        }
        let mut prepared = Vec::with_capacity(batches.len());
        for (topic, events) in batches {
            match store_of(&mut self.topics, &mut fresh, topic).prepare(events.iter().copied()) {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    for ((topic, _), p) in batches.iter().zip(prepared) {
                        store_of(&mut self.topics, &mut fresh, topic).discard(p)?;
                    }
                    return Err(e);
                }
            }
        }
        self.topics.extend(fresh);
        self.next_id = next_id;
        for ((topic, _), p) in batches.iter().zip(prepared) {
            store_of(&mut self.topics, &mut [], topic).write_prepared(p)?;
        }
        Ok(())
    }
}

type Topics = std::collections::BTreeMap<String, (u32, TopicStore)>;

/// The store of `topic`: a known one, or one opened for this append.
fn store_of<'s>(
    topics: &'s mut Topics,
    fresh: &'s mut [(String, (u32, TopicStore))],
    topic: &str,
) -> &'s mut TopicStore {
    match topics.get_mut(topic) {
        Some((_, s)) => s,
        None => &mut fresh.iter_mut().find(|(t, _)| t == topic).expect("opened for this append").1.1,
    }
}
