//! Topic logs on disk: per topic a sequence of segment files on the [`Disk`] seam.
//!
//! # Files
//!
//! `<prefix><base offset, 20 digits>.seg` — the records of offsets `base..` in order, each one
//! stored event in the [`crate::record`] framing (`u32 LE length`, `u32 LE CRC32C`, payload); the
//! payload is `u64 BE offset`, `u64 BE timestamp`, then the event in the domain codec
//! ([`crate::event::codec`], a one-event block). A new segment starts when the next record would
//! take the active one past `segment_bytes` (a record larger than that gets a segment of its own).
//! The prefix names the topic; the caller gives each topic its own (flat, `/`-free) prefix.
//!
//! # Memory
//!
//! Per segment: its name, lengths and a sparse index (one entry of 8 bytes per
//! `index_interval_bytes` of records, built when the segment is first read if recovery did not
//! scan it). Plus a tail cache of the newest `read_cache_bytes` of the active segment, so readers
//! that follow the head do not touch the disk. Never O(events).
//!
//! # Durability
//!
//! [`TopicStore::append`] writes without fsync: the Raft log is the durability point. Before a
//! snapshot is recorded the caller makes the data it covers durable with
//! [`TopicStore::sync_through`]; [`TopicStore::truncate_to`] and a segment roll's predecessor are
//! made durable at once. After a failed write or fsync the store is poisoned (like the WAL): every
//! later mutation fails until the node restarts and recovers from disk. Not when only an open
//! failed because the process is out of descriptors ([`StoreError::is_fd_exhaustion`]): an append
//! opens every file it will write (the active segment, each segment a roll starts) before it
//! writes anything (`append.rs`), so such a failure leaves the store exactly as it was — nothing
//! of the batch stored, no file left behind — and the caller retries the same append once
//! descriptors free. [`TopicSet::append_all`] does the same across the topics of one batch.
//!
//! # Recovery
//!
//! [`TopicStore::open`] is told the offset below which data was synced. From the segment holding
//! it on, records are scanned: anything bad at or past the synced point (a torn or lost unsynced
//! tail) is cut, with the later segments; anything bad below it is refused as
//! [`StoreError::Corrupt`] with the file and byte offset.
//!
//! A restart at a snapshot ([`TopicSet::open`] with metadata) reads nothing (issue 13): the
//! snapshot records the active segment's synced length and checksum, so that segment is cut to
//! that length unread (what was written after the snapshot is replayed from the Raft log) and
//! later segments are removed; its index and checksum resume from the record. The recorded
//! front is scanned, and its checksum checked against the record, when a read first needs an
//! offset in it. With [`StoreConfig::verify_on_open`], or when the files do not line up with
//! the record, the open scans as above.
//!
//! # Bit rot (issue 15)
//!
//! Every record carries a CRC32C over its length and payload, so a flipped bit is never served:
//! a read that meets a bad record fails with [`StoreError::Corrupt`] (file and byte), logged at
//! `error` and counted ([`TopicStore::corrupt_found`]); the node answers such a read
//! `unavailable`, and a client asks another member. With [`StoreConfig::verify_on_open`]
//! (`cluster.verify_topics_at_start`), [`TopicSet::open`] also verifies every retained segment,
//! record by record ([`TopicStore::verify_retained`]), so a member whose synced topic data
//! rotted refuses to start — the operator restores its data from a peer (in a cluster: remove,
//! wipe, add back), as for a rotted WAL. That reads every retained byte at start, so it is off
//! by default (a start stays O(segments)) and on in the simulator. Rot past the synced point is
//! cut like a torn tail: the Raft log replays those records.

//!
//! # Status (issue 13)
//!
//! Wired in: `EventLogState` (src/node/state.rs) keeps its topics in a [`TopicSet`] on the
//! member's disk (next to the WAL; an in-memory `SimDisk` for a `LocalNode`, tests and fuzzing);
//! apply appends each batch's events per topic through [`TopicSet::append`], fetches read the
//! files with the event and byte caps, retention trims call [`TopicStore::trim_before`]; a
//! topic-file write or fsync failure on apply stops the member like a WAL failure. A topic file
//! that cannot be *opened* for want of descriptors (a new topic, a segment roll) does not (issue
//! 11): the batch changed nothing (`EventLogState` plans it before it changes anything), the
//! driver stops applying before that entry and retries it with the WAL's backoff
//! (`node/cluster/apply.rs`, `persist.rs`), no restart needed.
//!
//! Snapshots (format 4) are metadata: the driver takes [`TopicSet::metadata`] with the dedup
//! window, checkpoint, consumers, retention and address book at index I, and lists the fsyncs it
//! needs ([`TopicSet::begin_sync`]); a task off the round runs them and only then saves the
//! snapshot; once saved, [`TopicSet::take_trimmed`] takes the segments it no longer needs, which
//! a task unlinks (`sync.rs`). A restart
//! opens the set at that metadata ([`TopicSet::open`] cuts back to it) and replays the WAL.
//!
//! Catch-up by streaming: a follower that needs a snapshot gets the metadata only; before it
//! saves it, it writes a marker (`catchup.target`), opens what it holds with
//! [`TopicSet::open_partial`] and pulls the records it lacks in bounded chunks
//! (`RecordsRequest`/`Records`, [`serve_records`] on the serving member), with apply held back
//! and reads answered `unavailable`; it syncs, removes the marker and resumes applying. A restart
//! that finds the marker resumes the pull without pulling again what is durable
//! (`src/node/cluster/catchup.rs`).

mod append;
mod catchup;
#[cfg(test)]
mod catchup_tests;
mod raw;
mod recovery;
mod scrub;
mod segment;
mod set;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::event::StoredEvent;
use crate::rt::{Disk, DiskError};

pub use catchup::{CatchUp, MAX_RECORDS_BYTES, RawChunk, serve_records};
pub use raw::check_records;
pub use scrub::{ScrubFinding, ScrubTarget, scrub_segment};
use segment::{SegIndex, Segment, walk};
pub use set::{MetaDecodeError, STORE_META_VERSION, StoreMeta, TOPIC_FILE_PREFIX, TopicMeta, TopicSet};
pub use sync::{TopicSync, TrimmedSegments};

/// Sizes of a topic store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// A segment is rolled once the next record would take it past this many bytes.
    pub segment_bytes: u64,
    /// One sparse-index entry per this many bytes of records.
    pub index_interval_bytes: u64,
    /// Newest bytes of the active segment kept in memory for readers (0: none).
    pub read_cache_bytes: usize,
    /// [`TopicSet::open`] reads every retained record (bit rot refused at start; O(data)).
    pub verify_on_open: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_bytes: 64 << 20,
            index_interval_bytes: 4096,
            read_cache_bytes: 1 << 20,
            verify_on_open: false,
        }
    }
}

/// Largest `segment_bytes` (positions in the index are `u32`).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;

/// What went wrong in a topic store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("topic segment {file} is corrupt at byte {offset}: {reason}")]
    Corrupt { file: String, offset: u64, reason: String },
    #[error("offset {offset} is below the first retained offset {first}")]
    OutOfRange { offset: u64, first: u64 },
    #[error(
        "topic log {prefix} ends at offset {end} but offsets below {synced} were synced: data is missing"
    )]
    Missing { prefix: String, end: u64, synced: u64 },
    #[error("bad topic store setting: {0}")]
    Config(String),
    #[error("an event of {0} bytes cannot be framed as one record")]
    TooLarge(usize),
    #[error("topic store {0} is poisoned by an earlier write or fsync failure; restart to recover from disk")]
    Poisoned(String),
    /// The process ran out of descriptors after an append had begun writing (only a disk that
    /// reopens files on its own can do this): the batch is half-written, the store poisoned.
    #[error(
        "topic store {prefix}: out of file descriptors in the middle of an append; restart to recover from disk: {source}"
    )]
    HalfWritten {
        prefix: String,
        #[source]
        source: DiskError,
    },
    /// Records from a peer (catch-up) that do not check out or are not the ones asked for;
    /// nothing was written: ask again, or another member.
    #[error("records for {prefix} refused: {reason}")]
    Refused { prefix: String, reason: String },
}

impl StoreError {
    /// True when only the records offered were refused (the store is unchanged and usable).
    pub fn is_refusal(&self) -> bool {
        matches!(self, StoreError::Refused { .. })
    }
}

impl StoreError {
    /// True if an open failed because the process is out of file descriptors: nothing was
    /// written, the store is not poisoned, and the call may be retried once some free.
    pub fn is_fd_exhaustion(&self) -> bool {
        matches!(self, StoreError::Disk(e) if e.is_fd_exhaustion())
    }
}

/// One segment as a snapshot records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    pub base: u64,
    pub end: u64,
    pub bytes: u64,
    /// CRC32C of the segment's bytes, once the segment has been read or written in this process.
    pub crc: Option<u32>,
}

/// The newest bytes of the active segment, for readers at the head.
#[derive(Debug, Default)]
struct TailCache {
    base: u64,
    /// Byte position in the segment of `bytes[0]`.
    pos: u64,
    bytes: Vec<u8>,
}

/// One topic's log on disk.
#[derive(Debug)]
pub struct TopicStore {
    disk: Arc<dyn Disk>,
    prefix: String,
    cfg: StoreConfig,
    /// By base offset; the last is the active one. Never empty once anything was appended.
    segments: BTreeMap<u64, Segment>,
    /// Logical first offset (raised by [`Self::trim_before`]).
    first: u64,
    /// Offsets below this are durable.
    synced: u64,
    /// A segment was created or removed since the directory was last synced.
    dir_dirty: bool,
    tail: TailCache,
    poisoned: bool,
    buf: Vec<u8>,
    /// Bad records met while reading (bit rot, a damaged file): each one logged and counted.
    corrupt_found: std::sync::atomic::AtomicU64,
}

impl TopicStore {
    /// How many times this store met a bad record (CRC, framing or offset) in its files.
    pub fn corrupt_found(&self) -> u64 {
        self.corrupt_found.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next offset to be appended.
    pub fn end_offset(&self) -> u64 {
        self.segments.values().next_back().map_or(self.first, |s| s.end)
    }

    /// The first offset a read may ask for.
    pub fn first_offset(&self) -> u64 {
        self.first
    }

    /// Offsets below this are durable.
    pub fn synced_offset(&self) -> u64 {
        self.synced
    }

    /// Bytes of records stored (in segments not yet deleted).
    pub fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentMeta> {
        self.segments
            .values()
            .map(|s| SegmentMeta {
                base: s.base,
                end: s.end,
                bytes: s.len,
                crc: s.index().as_ref().map(|i| i.crc),
            })
            .collect()
    }

    fn check_live(&self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned(self.prefix.clone()));
        }
        Ok(())
    }

    /// Runs a disk mutation; a failure poisons the store, unless only an open failed for want of
    /// descriptors (nothing written).
    fn mutate<T>(&mut self, op: impl FnOnce(&Self) -> Result<T, DiskError>) -> Result<T, StoreError> {
        self.check_live()?;
        op(self).map_err(|e| {
            if !e.is_fd_exhaustion() {
                self.poisoned = true;
            }
            StoreError::Disk(e)
        })
    }

    fn cache_tail(&mut self, at: u64, buf: &[u8]) {
        let cap = self.cfg.read_cache_bytes;
        let base = self.segments.values().next_back().expect("a segment").base;
        if cap == 0 {
            return;
        }
        let t = &mut self.tail;
        if t.base != base || t.pos + t.bytes.len() as u64 != at {
            *t = TailCache { base, pos: at, bytes: Vec::new() };
        }
        t.bytes.extend_from_slice(buf);
        if t.bytes.len() > cap {
            let drop = t.bytes.len() - cap / 2;
            t.bytes.drain(..drop);
            t.pos += drop as u64;
        }
    }

    /// Makes every offset below `offset` durable (fsyncs the segments holding unsynced ones, and
    /// the directory if segments were created or removed).
    pub fn sync_through(&mut self, offset: u64) -> Result<(), StoreError> {
        self.check_live()?;
        let offset = offset.min(self.end_offset());
        let dirty: Vec<(String, u64)> = self
            .segments
            .values()
            .filter(|s| s.base < offset && s.synced_len < s.len)
            .map(|s| (s.name.clone(), s.base))
            .collect();
        for (name, base) in dirty {
            self.mutate(|s| s.disk.sync(&name))?;
            let seg = self.segments.get_mut(&base).expect("listed above");
            seg.synced_len = seg.len;
        }
        if self.dir_dirty {
            self.mutate(|s| s.disk.sync_dir())?;
            self.dir_dirty = false;
        }
        self.synced = self.synced.max(offset);
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.sync_through(self.end_offset())
    }

    /// Removes every record at or after `end` (no-op if `end` is past the end), durably.
    pub fn truncate_to(&mut self, end: u64) -> Result<(), StoreError> {
        self.check_live()?;
        if end >= self.end_offset() {
            return Ok(());
        }
        if end < self.first {
            return Err(StoreError::OutOfRange { offset: end, first: self.first });
        }
        let later: Vec<u64> = self.segments.range(end..).map(|(b, _)| *b).rev().collect();
        for base in later {
            if self.segments.len() == 1 {
                break;
            }
            let seg = self.segments.remove(&base).expect("listed above");
            self.mutate(|s| s.disk.remove(&seg.name).and_then(|()| s.disk.sync_dir()))?;
        }
        let base = *self.segments.keys().next_back().expect("one segment is kept");
        let cut = self.cut_position(base, end)?;
        let name = self.segments[&base].name.clone();
        self.mutate(|s| s.disk.truncate(&name, cut.len).and_then(|()| s.disk.sync(&name)))?;
        let seg = self.segments.get_mut(&base).expect("kept");
        (seg.end, seg.len, seg.synced_len) = (cut.end, cut.len, cut.len);
        *seg.index_mut() = Some(cut.index);
        self.tail = TailCache::default();
        self.synced = self.synced.min(end);
        Ok(())
    }

    /// Where the segment at `base` must be cut to end at offset `end` (at least `base`), and its
    /// index then. Bad bytes before that point are corruption.
    fn cut_position(&self, base: u64, end: u64) -> Result<segment::Scan, StoreError> {
        let seg = &self.segments[&base];
        let target = end.max(base);
        let fetch = |pos, len| self.bytes_at(seg, pos, len);
        let mut index = SegIndex::default();
        let (mut len, mut next) = (0, base);
        let (_, stop) = walk(fetch, 0, seg.len, |pos, payload| {
            if next >= target {
                return Ok(false);
            }
            if segment::record_head(payload).map(|(o, _)| o) != Some(next) {
                return Err(format!("record at byte {pos} is not offset {next}"));
            }
            index.note(next - base, pos, payload, self.cfg.index_interval_bytes);
            index.crc = segment::extend_crc(index.crc, payload);
            len = pos + (crate::record::HEADER + payload.len()) as u64;
            next += 1;
            Ok(true)
        })?;
        if let Some(stop) = stop {
            return Err(self.corrupt(&seg.name, stop.pos, &stop.reason));
        }
        Ok(segment::Scan { end: next, len, index, stop: None })
    }

    /// Makes `offset` (at most the end) the first offset a read may ask for. Files are deleted
    /// later, by [`Self::delete_trimmed`], once a snapshot recording the new first offset is
    /// durable: until then a restart may go back to an older snapshot that still needs them.
    pub fn trim_before(&mut self, offset: u64) -> Result<(), StoreError> {
        self.check_live()?;
        let offset = offset.min(self.end_offset());
        self.first = self.first.max(offset);
        Ok(())
    }

    /// Deletes the segments whose records are all below the first offset (never the active one).
    /// Durable with the next sync.
    pub fn delete_trimmed(&mut self) -> Result<(), StoreError> {
        self.check_live()?;
        let last = self.segments.keys().next_back().copied();
        let first = self.first;
        let gone: Vec<u64> = self
            .segments
            .values()
            .filter(|s| s.end <= first && Some(s.base) != last)
            .map(|s| s.base)
            .collect();
        for base in gone {
            let seg = self.segments.remove(&base).expect("listed above");
            self.mutate(|s| s.disk.remove(&seg.name))?;
            self.dir_dirty = true;
        }
        Ok(())
    }

    /// The error for bad bytes at `offset` of `file`, logged and counted: the bytes are never served.
    fn corrupt(&self, file: &str, offset: u64, reason: &str) -> StoreError {
        self.corrupt_found.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            file,
            byte = offset,
            reason,
            "corrupt topic record: not served; restore this member's data from a peer"
        );
        StoreError::Corrupt { file: file.to_string(), offset, reason: reason.to_string() }
    }

    /// Bytes `pos..pos+len` of a segment: from the tail cache if it holds them, else the disk.
    fn bytes_at(&self, seg: &Segment, pos: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        let t = &self.tail;
        let len = len.min(usize::try_from(seg.len.saturating_sub(pos)).unwrap_or(usize::MAX));
        if t.base == seg.base && pos >= t.pos && pos + len as u64 <= t.pos + t.bytes.len() as u64 {
            let from = (pos - t.pos) as usize;
            return Ok(t.bytes[from..from + len].to_vec());
        }
        self.disk.read_range(&seg.name, pos, len)
    }

    /// Byte position to start reading `offset` in `seg`, indexing the segment first if needed.
    fn seek(&self, seg: &Segment, offset: u64) -> Result<u64, StoreError> {
        let rel = offset - seg.base;
        if seg.index().as_ref().is_none_or(|i| i.needs_fill(rel)) {
            self.index_segment(seg)?;
        }
        Ok(seg.index().as_ref().expect("built above").seek(rel))
    }

    /// Builds a segment's index if it has none (or indexes the front a restart did not read),
    /// checking every record (checksum, offsets) on the way: the segment's bytes are then known
    /// good.
    fn index_segment(&self, seg: &Segment) -> Result<(), StoreError> {
        let mut index = seg.index();
        if let Some(front) = index.as_ref().and_then(|i| i.unindexed) {
            let scanned = self.scan_front(seg, front)?;
            index.as_mut().expect("checked above").fill(scanned);
        }
        if index.is_none() {
            let fetch = |pos, len| self.bytes_at(seg, pos, len);
            let scan = segment::scan(fetch, seg.base, seg.len, self.cfg.index_interval_bytes)?;
            if let Some(stop) = scan.stop {
                return Err(self.corrupt(&seg.name, stop.pos, &stop.reason));
            }
            if scan.end != seg.end {
                let why =
                    format!("records end at offset {} but the next segment starts at {}", scan.end, seg.end);
                return Err(self.corrupt(&seg.name, scan.len, &why));
            }
            *index = Some(scan.index);
        }
        Ok(())
    }

    /// Scans the front of the active segment a restart did not read: its records must run from
    /// the segment's base to `front.rel` and end at byte `front.pos` with the checksum the
    /// snapshot recorded.
    fn scan_front(&self, seg: &Segment, front: segment::Unindexed) -> Result<SegIndex, StoreError> {
        let fetch = |pos, len| self.bytes_at(seg, pos, len);
        let scan = segment::scan(fetch, seg.base, front.pos, self.cfg.index_interval_bytes)?;
        if let Some(stop) = scan.stop {
            return Err(self.corrupt(&seg.name, stop.pos, &stop.reason));
        }
        if scan.end != seg.base + front.rel || scan.len != front.pos || scan.index.crc != front.crc {
            let why = format!(
                "records up to byte {} end at offset {} with checksum {:08x}; the snapshot recorded offset {} and {:08x}",
                scan.len,
                scan.end,
                scan.index.crc,
                seg.base + front.rel,
                front.crc
            );
            return Err(self.corrupt(&seg.name, scan.len, &why));
        }
        Ok(scan.index)
    }

    /// Reads every retained segment not yet checked in this process (a sealed segment recovery
    /// trusted by its length), record by record: bit rot in synced data is found at start-up
    /// rather than when a consumer or a catching-up peer asks for it. Segments wholly below the
    /// first offset are not read (nothing serves them; they are deleted after the next snapshot).
    pub fn verify_retained(&self) -> Result<(), StoreError> {
        self.segments.values().filter(|s| s.end > self.first).try_for_each(|s| self.index_segment(s))
    }

    /// Up to `max_events` events from `offset`, stopping once `max_bytes` of records were read
    /// (at least one event is returned if any is there). Empty at or past the end.
    pub fn read(
        &self,
        offset: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if offset < self.first {
            return Err(StoreError::OutOfRange { offset, first: self.first });
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut next = offset;
        let from = self.segments.range(..=offset).next_back().map_or(offset, |(b, _)| *b);
        for seg in self.segments.range(from..).map(|(_, s)| s) {
            if out.len() >= max_events || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            if seg.end <= next {
                continue;
            }
            self.read_segment(seg, &mut next, &mut out, &mut bytes, (max_events, max_bytes))?;
        }
        Ok(out)
    }

    /// Every event from `offset` to the end, read a page at a time (for checkers and tools that
    /// walk a whole topic; memory stays one page).
    pub fn iter_from(&self, offset: u64) -> impl Iterator<Item = Result<StoredEvent, StoreError>> + '_ {
        const PAGE: usize = 1024;
        let mut next = offset;
        let mut page = std::collections::VecDeque::new();
        let mut failed = false;
        std::iter::from_fn(move || {
            if page.is_empty() && !failed {
                match self.read(next, PAGE, usize::MAX) {
                    Ok(events) => page.extend(events),
                    Err(e) => {
                        failed = true;
                        return Some(Err(e));
                    }
                }
            }
            let e: StoredEvent = page.pop_front()?;
            next = e.offset + 1;
            Some(Ok(e))
        })
    }

    fn read_segment(
        &self,
        seg: &Segment,
        next: &mut u64,
        out: &mut Vec<StoredEvent>,
        bytes: &mut usize,
        (max_events, max_bytes): (usize, usize),
    ) -> Result<(), StoreError> {
        let from = self.seek(seg, *next)?;
        let fetch = |pos, len| self.bytes_at(seg, pos, len);
        let (_, stop) = walk(fetch, from, seg.len, |_, payload| {
            let Some((off, _)) = segment::record_head(payload) else {
                return Err("record shorter than its fixed fields".into());
            };
            if off < *next {
                return Ok(true);
            }
            if off != *next {
                return Err(format!("record of offset {off} where {} was expected", *next));
            }
            out.push(segment::decode_record(payload)?);
            *bytes += crate::record::HEADER + payload.len();
            *next += 1;
            Ok(out.len() < max_events && *bytes < max_bytes)
        })?;
        match stop {
            Some(stop) => Err(self.corrupt(&seg.name, stop.pos, &stop.reason)),
            None => Ok(()),
        }
    }
}
