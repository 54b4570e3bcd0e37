//! The dead-letter queue: a bounded, durable log of events the pipeline could not handle, each with
//! its reason. Records (the [`crate::record`] framing) are appended to `dlq.log` on the [`Disk`]
//! seam and fsynced, each event in the domain codec ([`codec`]); a torn or corrupt tail is cut off
//! at open. Beyond `max_entries` new entries are not stored but counted (`dlq.overflow`, durable). A redrive request (`dlq.redrive`, written
//! by `esc dlq redrive`) is applied by the pipeline that owns the log.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::event::{Event, Header, Priority, StoredEvent, codec};
use crate::record;
use crate::rt::{Disk, DiskError};

/// The DLQ log file.
pub const DLQ_FILE: &str = "dlq.log";
/// The durable overflow count.
pub const OVERFLOW_FILE: &str = "dlq.overflow";
/// A pending redrive request.
pub const REDRIVE_FILE: &str = "dlq.redrive";

/// Why an event is in the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DlqReason {
    /// A realtime event was already past its deadline when dequeued.
    Deadline = 1,
    /// The realtime queue was full; this was its oldest event.
    RealtimeOverflow = 2,
    /// The batch class was full.
    BatchOverflow = 3,
    /// The handler said the event is invalid.
    Invalid = 4,
    /// The handler kept failing transiently through every retry.
    RetriesExhausted = 5,
    /// Submitted after the pipeline had shut down.
    Shutdown = 6,
}

impl DlqReason {
    pub const ALL: [DlqReason; 6] = [
        DlqReason::Deadline,
        DlqReason::RealtimeOverflow,
        DlqReason::BatchOverflow,
        DlqReason::Invalid,
        DlqReason::RetriesExhausted,
        DlqReason::Shutdown,
    ];

    pub fn code(self) -> &'static str {
        match self {
            DlqReason::Deadline => "deadline",
            DlqReason::RealtimeOverflow => "realtime_overflow",
            DlqReason::BatchOverflow => "batch_overflow",
            DlqReason::Invalid => "invalid",
            DlqReason::RetriesExhausted => "retries_exhausted",
            DlqReason::Shutdown => "shutdown",
        }
    }

    fn from_u8(b: u8) -> Option<Self> {
        DlqReason::ALL.into_iter().find(|r| *r as u8 == b)
    }

    pub(crate) fn idx(self) -> usize {
        self as usize - 1
    }
}

impl fmt::Display for DlqReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for DlqReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DlqReason::ALL.into_iter().find(|r| r.code() == s).ok_or_else(|| {
            let all: Vec<_> = DlqReason::ALL.iter().map(|r| r.code()).collect();
            format!("unknown DLQ reason `{s}` (one of {})", all.join(", "))
        })
    }
}

/// One dead letter: the original event, why, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqEntry {
    /// Increasing id, unique within this DLQ.
    pub id: u64,
    pub reason: DlqReason,
    /// Human-readable detail (the handler's message, the lateness, ...).
    pub detail: String,
    /// Node wall time when it was dead-lettered.
    pub at_ms: u64,
    pub event: StoredEvent,
}

/// DLQ failures.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("dead-letter queue disk: {0}")]
    Disk(#[from] DiskError),
    #[error("dead-letter redrive request is malformed: {0}")]
    BadRequest(String),
    /// A write failed and so did rewriting the log into a new file: the file's state is unknown.
    #[error(
        "dead-letter queue is poisoned by an earlier failed write or fsync; restart to recover from disk"
    )]
    Poisoned,
}

#[derive(Debug)]
struct State {
    entries: Vec<DlqEntry>,
    next_id: u64,
    overflow: u64,
    /// Entries being redriven: still stored, not handed out again.
    in_flight: std::collections::BTreeSet<u64>,
    /// Set when a write failed and the rewrite that repairs it failed too ([`Dlq::write_log`]).
    poisoned: bool,
}

/// A durable, bounded dead-letter queue. Clones share one queue.
#[derive(Debug, Clone)]
pub struct Dlq {
    disk: Arc<dyn Disk>,
    max_entries: usize,
    state: Arc<Mutex<State>>,
}

/// What [`Dlq::push`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored(u64),
    /// The DLQ was full; the entry was counted, not stored.
    Overflow,
}

impl Dlq {
    /// Opens the DLQ on `disk`, reading every intact record and cutting off a torn tail.
    pub fn open(disk: Arc<dyn Disk>, max_entries: usize) -> Result<Dlq, DlqError> {
        let bytes = match disk.read(DLQ_FILE) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let Decoded { mut entries, removed, good_len, skipped } = decode_all(&bytes);
        if !skipped.is_empty() {
            // Damage in the middle (bit rot, or a hole an older build's retried fsync left):
            // the intact records after it are kept, the damaged ranges dropped, loudly, and the
            // log is rewritten below into a new file without them.
            tracing::error!(
                file = DLQ_FILE,
                ?skipped,
                kept = entries.len(),
                "dlq: damaged records in the middle of the log skipped; later records kept"
            );
        } else if good_len < bytes.len() {
            tracing::warn!(
                file = DLQ_FILE,
                kept = good_len,
                len = bytes.len(),
                "dlq: cutting off a torn tail"
            );
            disk.truncate(DLQ_FILE, good_len as u64)?;
            disk.sync(DLQ_FILE)?;
        }
        let max_id = entries.iter().map(|e| e.id).chain(removed.iter().copied()).max();
        if !removed.is_empty() || !skipped.is_empty() {
            // Compact: drop redriven entries and their tombstones (and any damaged range).
            entries.retain(|e| !removed.contains(&e.id));
            let bytes: Vec<u8> = entries.iter().flat_map(encode).collect();
            disk.write_atomic(DLQ_FILE, &bytes)?;
        }
        let overflow = match disk.read(OVERFLOW_FILE) {
            Ok(b) => std::str::from_utf8(&b).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0),
            Err(_) => 0,
        };
        // Ids are unique among stored entries and increase; an id removed before the last
        // compaction may come back, never one still stored.
        let next_id = max_id.map_or(1, |m| m + 1);
        let state = State { entries, next_id, overflow, in_flight: Default::default(), poisoned: false };
        Ok(Dlq { disk, max_entries, state: Arc::new(Mutex::new(state)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one entry durably, or counts it as overflow if the DLQ is full.
    pub fn push(
        &self,
        reason: DlqReason,
        detail: String,
        at_ms: u64,
        event: StoredEvent,
    ) -> Result<Pushed, DlqError> {
        let mut r = self.push_many(vec![(reason, detail, at_ms, event)])?;
        Ok(r.pop().unwrap_or(Pushed::Overflow))
    }

    /// Appends entries durably with one write and one fsync; those beyond the bound are counted
    /// as overflow. On error nothing new is kept in memory either.
    pub fn push_many(
        &self,
        letters: Vec<(DlqReason, String, u64, StoredEvent)>,
    ) -> Result<Vec<Pushed>, DlqError> {
        let mut st = self.lock();
        let mut out = Vec::with_capacity(letters.len());
        let mut new = Vec::new();
        let mut bytes = Vec::new();
        let mut overflow = 0;
        for (reason, detail, at_ms, event) in letters {
            if st.entries.len() + new.len() >= self.max_entries {
                overflow += 1;
                out.push(Pushed::Overflow);
                continue;
            }
            let entry = DlqEntry { id: st.next_id + new.len() as u64, reason, detail, at_ms, event };
            bytes.extend_from_slice(&encode(&entry));
            out.push(Pushed::Stored(entry.id));
            new.push(entry);
        }
        if !new.is_empty() {
            self.write_log(&mut st, &bytes, |old| old.iter().chain(&new).flat_map(encode).collect())?;
            st.next_id += new.len() as u64;
            st.entries.extend(new);
        }
        if overflow > 0 {
            st.overflow += overflow;
            self.disk.write_atomic(OVERFLOW_FILE, st.overflow.to_string().as_bytes())?;
        }
        Ok(out)
    }

    /// Appends `bytes` to the log and fsyncs it. A failed append or fsync is never retried on the
    /// same file (fsyncgate): Linux marks the pages of a failed fsync clean, so a later fsync
    /// "succeeds" without writing them, and appending after them leaves a hole of zeros or old
    /// bytes in the middle of the log at the next power failure (truncating back and re-appending
    /// would rely on the page cache of a file whose write-back just failed). Instead the log is
    /// rewritten from memory into a new file: `whole(stored entries)` is what it must hold with
    /// this write applied, put in place by [`Disk::write_atomic`] (a fresh file fsynced, renamed
    /// over, directory fsynced), so nothing of the failed pages is relied on: they belong to the
    /// old file, which the rename unlinks. The DLQ is bounded, so the rewrite is too. If the
    /// rewrite fails as well, the DLQ is poisoned: every later write is refused with
    /// [`DlqError::Poisoned`] until a restart re-reads the file.
    fn write_log(
        &self,
        st: &mut State,
        bytes: &[u8],
        whole: impl FnOnce(&[DlqEntry]) -> Vec<u8>,
    ) -> Result<(), DlqError> {
        if st.poisoned {
            return Err(DlqError::Poisoned);
        }
        let appended = self.disk.size(DLQ_FILE).and_then(|size| {
            self.disk.append(DLQ_FILE, bytes)?;
            self.disk.sync(DLQ_FILE)?;
            if size.is_none() { self.disk.sync_dir() } else { Ok(()) }
        });
        let Err(e) = appended else { return Ok(()) };
        tracing::warn!(%e, file = DLQ_FILE, "dlq: write failed; rewriting the log into a new file");
        if let Err(again) = self.disk.write_atomic(DLQ_FILE, &whole(&st.entries)) {
            st.poisoned = true;
            tracing::error!(first = %e, %again, "dlq: the rewrite failed too; poisoned until restart");
            return Err(again.into());
        }
        Ok(())
    }

    /// True once a failed write and a failed rewrite have poisoned the DLQ (until a restart).
    pub fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<DlqEntry> {
        self.lock().entries.clone()
    }

    /// Entries stored now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True if no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries refused because the DLQ was full (durable).
    pub fn overflow(&self) -> u64 {
        self.lock().overflow
    }

    /// Removes and returns the entries that match, rewriting the log atomically.
    pub fn take(&self, filter: &RedriveFilter) -> Result<Vec<DlqEntry>, DlqError> {
        let mut st = self.lock();
        let (taken, kept): (Vec<_>, Vec<_>) = st.entries.drain(..).partition(|e| filter.matches(e));
        let bytes: Vec<u8> = kept.iter().flat_map(encode).collect();
        if let Err(e) = self.disk.write_atomic(DLQ_FILE, &bytes) {
            st.entries = kept.into_iter().chain(taken).collect();
            st.entries.sort_by_key(|e| e.id);
            return Err(e.into());
        }
        st.entries = kept;
        Ok(taken)
    }

    /// Hands out the matching entries for redrive without removing them; call
    /// [`Dlq::finish_redrive`] once each is settled again.
    pub fn begin_redrive(&self, filter: &RedriveFilter) -> Vec<DlqEntry> {
        let mut st = self.lock();
        let out: Vec<DlqEntry> = st
            .entries
            .iter()
            .filter(|e| filter.matches(e) && !st.in_flight.contains(&e.id))
            .cloned()
            .collect();
        st.in_flight.extend(out.iter().map(|e| e.id));
        out
    }

    /// Removes redriven entries durably (a tombstone record each, one fsync).
    pub fn finish_redrive(&self, ids: &[u64]) -> Result<(), DlqError> {
        let mut st = self.lock();
        let mut bytes = Vec::with_capacity(ids.len() * 17);
        for id in ids {
            bytes.extend_from_slice(&encode_tombstone(*id));
        }
        self.write_log(&mut st, &bytes, |old| {
            old.iter().filter(|e| !ids.contains(&e.id)).flat_map(encode).collect()
        })?;
        st.entries.retain(|e| !ids.contains(&e.id));
        for id in ids {
            st.in_flight.remove(id);
        }
        Ok(())
    }

    /// Asks the pipeline that owns the DLQ in `disk` to redrive the matching entries (applied at its
    /// next control tick, or at its next start). Safe while the server runs.
    pub fn request_redrive(disk: &dyn Disk, filter: &RedriveFilter) -> Result<(), DlqError> {
        disk.write_atomic(REDRIVE_FILE, filter.to_text().as_bytes())?;
        Ok(())
    }

    /// Reads and removes a pending redrive request, if any.
    pub fn take_redrive_request(&self) -> Result<Option<RedriveFilter>, DlqError> {
        let text = match self.disk.read(REDRIVE_FILE) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let filter = RedriveFilter::parse(&String::from_utf8_lossy(&text));
        self.disk.remove(REDRIVE_FILE)?;
        self.disk.sync_dir()?;
        filter.map(Some)
    }
}

/// Which entries a redrive takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveFilter {
    pub reason: Option<DlqReason>,
    /// Only entries with an id up to this one (entries added after the request stay).
    pub up_to_id: Option<u64>,
}

impl RedriveFilter {
    pub fn matches(&self, e: &DlqEntry) -> bool {
        self.reason.is_none_or(|r| r == e.reason) && self.up_to_id.is_none_or(|m| e.id <= m)
    }

    fn to_text(&self) -> String {
        format!(
            "reason={}\nup_to_id={}\n",
            self.reason.map_or("all", DlqReason::code),
            self.up_to_id.map_or("all".to_string(), |i| i.to_string())
        )
    }

    fn parse(text: &str) -> Result<Self, DlqError> {
        let mut f = RedriveFilter::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once('=').ok_or_else(|| DlqError::BadRequest(line.to_string()))?;
            match (k.trim(), v.trim()) {
                ("reason", "all") | ("up_to_id", "all") => {}
                ("reason", r) => f.reason = Some(r.parse().map_err(DlqError::BadRequest)?),
                ("up_to_id", n) => {
                    f.up_to_id = Some(n.parse().map_err(|_| DlqError::BadRequest(line.to_string()))?)
                }
                _ => return Err(DlqError::BadRequest(line.to_string())),
            }
        }
        Ok(f)
    }
}

// ---------------------------------------------------------------------------------------------
// Record codec
// ---------------------------------------------------------------------------------------------

/// Where a layout-1 body had its reason (always 1-6), a layout-2 body has this marker, so the
/// two are told apart by one byte, never by trying.
const LAYOUT_2: u8 = 0;

/// Layout 2 (big-endian, like the event codec): `u64 id`, `u8 0` (the [`LAYOUT_2`] marker),
/// `u8 event codec version`, `u8 reason`, `u64 at_ms`, `u64 offset`, `u64 timestamp_ms`,
/// `u32 length` + detail, then the event in the domain codec ([`codec::encode_events`], one
/// event). Layout 1 (before the DLQ used the domain codec) is still read: see [`decode_v1`].
fn encode(e: &DlqEntry) -> Vec<u8> {
    let mut body = BytesMut::with_capacity(64 + e.detail.len() + e.event.event.approx_size());
    body.put_u64(e.id);
    body.put_u8(LAYOUT_2);
    body.put_u8(codec::VERSION);
    body.put_u8(e.reason as u8);
    body.put_u64(e.at_ms);
    body.put_u64(e.event.offset);
    body.put_u64(e.event.timestamp_ms);
    body.put_u32(u32::try_from(e.detail.len()).expect("a detail is far below 4 GiB"));
    body.put_slice(e.detail.as_bytes());
    codec::encode_events(&mut body, std::slice::from_ref(&e.event.event));
    let mut out = Vec::with_capacity(body.len() + record::HEADER);
    record::append(&mut out, &body);
    out
}

/// Marks a redriven entry as gone: a record whose body is the marker and the id (nine bytes; an
/// entry's body is always longer).
const TOMBSTONE: u8 = 0xEE;

fn encode_tombstone(id: u64) -> Vec<u8> {
    let mut body = vec![TOMBSTONE];
    body.extend_from_slice(&id.to_le_bytes());
    let mut out = Vec::with_capacity(17);
    record::append(&mut out, &body);
    out
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes32()?.to_vec()).ok()
    }
}

fn decode_body(body: &[u8]) -> Option<DlqEntry> {
    if body.get(8) == Some(&LAYOUT_2) { decode_v2(body) } else { decode_v1(body) }
}

fn decode_v2(body: &[u8]) -> Option<DlqEntry> {
    let mut b = Bytes::copy_from_slice(body);
    let fixed = 8 + 1 + 1 + 1 + 8 + 8 + 8 + 4;
    if b.len() < fixed {
        return None;
    }
    let id = b.get_u64();
    let _marker = b.get_u8();
    if b.get_u8() != codec::VERSION {
        return None;
    }
    let reason = DlqReason::from_u8(b.get_u8())?;
    let (at_ms, offset, timestamp_ms) = (b.get_u64(), b.get_u64(), b.get_u64());
    let n = b.get_u32() as usize;
    if b.len() < n {
        return None;
    }
    let detail = String::from_utf8(b.split_to(n).to_vec()).ok()?;
    let mut events = codec::decode_events(b).ok()?;
    let event = events.pop().filter(|_| events.is_empty())?;
    Some(DlqEntry { id, reason, detail, at_ms, event: StoredEvent { offset, timestamp_ms, event } })
}

/// Layout 1, written before the DLQ used the domain codec (little-endian): `u64 id`, `u8 reason`,
/// `u64 at_ms`, `bytes32 detail`, `u64 offset`, `u64 timestamp_ms`, `bytes32 topic`,
/// `u8 priority`, `u64 producer`, `u64 sequence`, `u8 key present` [`bytes32 key`],
/// `u32 header count` (`bytes32 name`, `bytes32 value` each), `bytes32 payload`.
fn decode_v1(body: &[u8]) -> Option<DlqEntry> {
    let mut c = Cursor(body);
    let id = c.u64()?;
    let reason = DlqReason::from_u8(c.u8()?)?;
    let at_ms = c.u64()?;
    let detail = c.string()?;
    let offset = c.u64()?;
    let timestamp_ms = c.u64()?;
    let topic = c.string()?;
    let priority = Priority::from_u8(c.u8()?)?;
    let producer_id = c.u64()?;
    let sequence = c.u64()?;
    let key = match c.u8()? {
        0 => None,
        1 => Some(Bytes::copy_from_slice(c.bytes32()?)),
        _ => return None,
    };
    let n = c.u32()? as usize;
    let mut headers = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let name = c.string()?;
        let value = Bytes::copy_from_slice(c.bytes32()?);
        headers.push(Header { name, value });
    }
    let payload = Bytes::copy_from_slice(c.bytes32()?);
    if !c.0.is_empty() {
        return None;
    }
    let event = Event { topic, priority, producer_id, sequence, key, headers, payload };
    Some(DlqEntry { id, reason, detail, at_ms, event: StoredEvent { offset, timestamp_ms, event } })
}

/// The record at `pos`: its body and the offset after it. Records written before the DLQ used
/// [`record`] carry a checksum of the body alone; they are still read.
fn read_record(bytes: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    match record::read_at(bytes, pos) {
        Ok(r) => Some(r),
        Err(bad) if bad.kind == record::BadKind::Checksum => {
            let (len, stored) = record::header_at(bytes, pos)?;
            let start = pos + record::HEADER;
            let body = bytes.get(start..start.checked_add(len as usize)?)?;
            (len > 0 && crc32c::crc32c(body) == stored).then_some((body, start + body.len()))
        }
        Err(_) => None,
    }
}

/// What [`decode_all`] read from a log.
struct Decoded {
    entries: Vec<DlqEntry>,
    /// Ids of tombstones.
    removed: std::collections::BTreeSet<u64>,
    /// Where the intact records end (the start of a torn or corrupt tail).
    good_len: usize,
    /// Damaged byte ranges with intact records after them.
    skipped: Vec<std::ops::Range<usize>>,
}

/// One intact record at `pos`: an entry, or a tombstone's id.
fn decode_at(bytes: &[u8], pos: usize) -> Option<(Result<DlqEntry, u64>, usize)> {
    let (body, next) = read_record(bytes, pos)?;
    if body.len() == 9 && body[0] == TOMBSTONE {
        return Some((Err(u64::from_le_bytes(body[1..9].try_into().ok()?)), next));
    }
    Some((Ok(decode_body(body)?), next))
}

/// Decodes every intact record. At a torn or corrupt one it looks for an intact record further
/// on (each record is checksummed, so one found is real): none means a torn tail (`good_len`
/// marks it); one means damage in the middle, skipped so the later records are not dropped.
fn decode_all(bytes: &[u8]) -> Decoded {
    let mut d =
        Decoded { entries: Vec::new(), removed: Default::default(), good_len: 0, skipped: Vec::new() };
    let mut pos = 0;
    loop {
        while let Some((rec, next)) = decode_at(bytes, pos) {
            match rec {
                Ok(entry) => d.entries.push(entry),
                Err(id) => _ = d.removed.insert(id),
            }
            pos = next;
        }
        d.good_len = pos;
        match (pos + 1..bytes.len()).find(|p| decode_at(bytes, *p).is_some()) {
            Some(resume) => {
                d.skipped.push(pos..resume);
                pos = resume;
            }
            None => return d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::SimDisk;

    fn ev(i: u64) -> StoredEvent {
        let mut e = Event::new("payment", Priority::Medium, vec![i as u8; 5]);
        e.producer_id = 3;
        e.sequence = i;
        e.key = Some(Bytes::from_static(b"k"));
        e.headers.push(Header { name: "h".into(), value: Bytes::from_static(b"v") });
        StoredEvent { offset: i, timestamp_ms: 1000 + i, event: e }
    }

    #[test]
    fn entries_survive_a_restart_and_a_power_failure() {
        let disk = SimDisk::new();
        let dlq = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert_eq!(dlq.push(DlqReason::Invalid, "bad".into(), 5, ev(1)).unwrap(), Pushed::Stored(1));
        assert_eq!(dlq.push(DlqReason::Deadline, "late".into(), 6, ev(2)).unwrap(), Pushed::Stored(2));
        disk.power_fail(None);
        let again = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        let entries = again.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].reason, DlqReason::Invalid);
        assert_eq!(entries[0].event, ev(1));
        assert_eq!(entries[1].detail, "late");
        assert_eq!(again.push(DlqReason::Shutdown, String::new(), 7, ev(3)).unwrap(), Pushed::Stored(3));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn entry(id: u64, e: StoredEvent) -> DlqEntry {
        DlqEntry { id, reason: DlqReason::Invalid, detail: "old".into(), at_ms: 5, event: e }
    }

    /// The body of `entry(1, ev(1))` as layout 1 wrote it (before the DLQ used the domain codec).
    const LAYOUT_1_ENTRY_1: &str = concat!(
        "0100000000000000",
        "04",
        "0500000000000000",
        "03000000",
        "6f6c64",
        "0100000000000000",
        "e903000000000000",
        "07000000",
        "7061796d656e74",
        "02",
        "0300000000000000",
        "0100000000000000",
        "01",
        "01000000",
        "6b",
        "01000000",
        "01000000",
        "68",
        "01000000",
        "76",
        "05000000",
        "0101010101",
    );

    /// A layout-1 body with the id of `entry(id, ev(id))` patched in (ids below 256).
    fn layout_1(id: u8) -> Vec<u8> {
        let mut body = unhex(LAYOUT_1_ENTRY_1);
        body[0] = id;
        body[24] = id; // offset
        body[32] = 0xe8 + id; // timestamp_ms = 1000 + id
        body[60] = id; // sequence
        let n = body.len();
        body[n - 5..].fill(id);
        body
    }

    /// What is in every DLQ file from now on: these bytes must not change (a new layout gets a
    /// new marker, with this decoder kept).
    #[test]
    fn layout_2_bytes_are_pinned() {
        let bytes = encode(&entry(1, ev(1)));
        let (body, _) = record::read_at(&bytes, 0).unwrap();
        assert_eq!(
            hex(body),
            concat!(
                "0000000000000001",
                "00",
                "01",
                "04",
                "0000000000000005",
                "0000000000000001",
                "00000000000003e9",
                "00000003",
                "6f6c64",
                // The event in the domain codec, layout 1 (`event::codec`).
                "00000001",
                "0000000000000003",
                "0000000000000001",
                "02",
                "01",
                "0007",
                "7061796d656e74",
                "00000001",
                "6b",
                "0001",
                "0001",
                "68",
                "00000001",
                "76",
                "00000005",
                "0101010101",
            )
        );
        // The event part is the domain codec's, byte for byte.
        let mut ev_bytes = bytes::BytesMut::new();
        codec::encode_events(&mut ev_bytes, &[ev(1).event]);
        assert!(body.ends_with(&ev_bytes));
        assert_eq!(decode_body(body), Some(entry(1, ev(1))));
    }

    #[test]
    fn layout_1_bodies_still_decode() {
        assert_eq!(decode_body(&unhex(LAYOUT_1_ENTRY_1)), Some(entry(1, ev(1))));
        assert_eq!(decode_body(&layout_1(2)), Some(entry(2, ev(2))));
    }

    #[test]
    fn damaged_bodies_are_refused_not_panics() {
        let bytes = encode(&entry(1, ev(1)));
        let (body, _) = record::read_at(&bytes, 0).unwrap();
        for cut in 0..body.len() {
            assert_eq!(decode_body(&body[..cut]), None, "cut at {cut}");
        }
        let old = unhex(LAYOUT_1_ENTRY_1);
        for cut in 0..old.len() {
            assert_eq!(decode_body(&old[..cut]), None, "layout 1 cut at {cut}");
        }
        let mut newer = body.to_vec();
        newer[9] = codec::VERSION + 1;
        assert_eq!(decode_body(&newer), None, "an unknown event codec version is not guessed at");
    }

    /// Files written before the DLQ used the shared record framing (a checksum of the body alone)
    /// and the domain codec (layout 1) still load, with tombstones, next to new records.
    #[test]
    fn records_of_the_earlier_framing_and_layout_still_load() {
        let legacy = |body: Vec<u8>| {
            let mut out = (body.len() as u32).to_le_bytes().to_vec();
            out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            out.extend_from_slice(&body);
            out
        };
        let disk = SimDisk::new();
        let mut bytes = legacy(layout_1(1));
        bytes.extend(legacy(layout_1(2)));
        bytes.extend(legacy(encode_tombstone(1)[record::HEADER..].to_vec()));
        // Layout 1 inside the shared framing (written between the two changes).
        record::append(&mut bytes, &layout_1(3));
        disk.append(DLQ_FILE, &bytes).unwrap();
        disk.sync(DLQ_FILE).unwrap();
        let dlq = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert_eq!(dlq.entries(), vec![entry(2, ev(2)), entry(3, ev(3))]);
        assert_eq!(dlq.push(DlqReason::Deadline, "new".into(), 6, ev(4)).unwrap(), Pushed::Stored(4));
        let again = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert_eq!(again.entries().iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(again.entries()[0], entry(2, ev(2)));
        assert_eq!(again.entries()[2].event, ev(4));
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off() {
        let disk = SimDisk::new();
        let dlq = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        dlq.push(DlqReason::Invalid, "a".into(), 5, ev(1)).unwrap();
        let good = disk.size(DLQ_FILE).unwrap().unwrap();
        dlq.push(DlqReason::Invalid, "b".into(), 5, ev(2)).unwrap();
        disk.corrupt(DLQ_FILE, good as usize + 20).unwrap();
        let again = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(disk.size(DLQ_FILE).unwrap(), Some(good));
        // A partial record (torn write) too.
        disk.append(DLQ_FILE, &[9, 0, 0, 0, 1]).unwrap();
        assert_eq!(Dlq::open(Arc::new(disk.clone()), 10).unwrap().len(), 1);
    }

    /// fsyncgate: a failed fsync drops the appended bytes (Linux marks the pages clean) and a
    /// later fsync does not write them. Appending after them left a hole in the middle of the log,
    /// and the open cut off every entry after it, though those were reported stored.
    #[test]
    fn a_failed_fsync_leaves_no_hole_and_every_stored_entry_survives_a_power_failure() {
        use crate::rt::DiskFault;
        let disk = SimDisk::new();
        let dlq = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        let mut stored = Vec::new();
        let mut push = |i: u64| {
            if let Ok(Pushed::Stored(id)) = dlq.push(DlqReason::Invalid, format!("e{i}"), 5, ev(i)) {
                stored.push((id, ev(i)));
            }
        };
        push(1);
        disk.inject(DiskFault::FailSyncs(1));
        push(2);
        push(3);
        disk.inject(DiskFault::FailSyncs(1));
        push(4);
        push(5);
        assert!(stored.len() >= 3, "{stored:?}");
        disk.power_fail(None);
        let again = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        let got: Vec<(u64, StoredEvent)> = again.entries().into_iter().map(|e| (e.id, e.event)).collect();
        assert_eq!(got, stored, "exactly the entries reported stored, in order, with unique ids");
    }

    #[test]
    fn a_failed_rewrite_poisons_the_dlq_until_a_restart() {
        use crate::rt::DiskFault;
        let disk = SimDisk::new();
        let dlq = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        dlq.push(DlqReason::Invalid, String::new(), 5, ev(1)).unwrap();
        // The append's fsync and the rewrite's fsync both fail.
        disk.inject(DiskFault::FailSyncs(2));
        assert!(matches!(dlq.push(DlqReason::Invalid, String::new(), 5, ev(2)), Err(DlqError::Disk(_))));
        assert!(dlq.is_poisoned());
        assert!(matches!(dlq.push(DlqReason::Invalid, String::new(), 5, ev(3)), Err(DlqError::Poisoned)));
        assert!(matches!(dlq.finish_redrive(&[1]), Err(DlqError::Poisoned)));
        assert_eq!(dlq.entries().iter().map(|e| e.id).collect::<Vec<_>>(), vec![1]);
        disk.power_fail(None);
        let again = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert!(!again.is_poisoned());
        assert_eq!(
            again.entries().iter().map(|e| (e.id, e.event.clone())).collect::<Vec<_>>(),
            vec![(1, ev(1))]
        );
        assert_eq!(again.push(DlqReason::Invalid, String::new(), 5, ev(4)).unwrap(), Pushed::Stored(2));
    }

    /// A hole in the middle of the log (zeros where an older build's retried fsync wrote nothing)
    /// drops only itself: the intact records after it are kept and the log is rewritten.
    #[test]
    fn a_damaged_middle_keeps_the_records_after_it() {
        let disk = SimDisk::new();
        let mut bytes = encode(&entry(1, ev(1)));
        let hole = bytes.len();
        bytes.extend(vec![0; encode(&entry(2, ev(2))).len()]);
        bytes.extend(encode(&entry(3, ev(3))));
        bytes.extend(encode_tombstone(1));
        bytes.extend(encode(&entry(4, ev(4))));
        bytes.extend([7, 0, 0]); // and a torn tail
        disk.append(DLQ_FILE, &bytes).unwrap();
        disk.sync(DLQ_FILE).unwrap();
        let dlq = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert_eq!(dlq.entries(), vec![entry(3, ev(3)), entry(4, ev(4))]);
        assert!(disk.size(DLQ_FILE).unwrap().unwrap() > hole as u64);
        disk.power_fail(None);
        let again = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert_eq!(again.entries(), vec![entry(3, ev(3)), entry(4, ev(4))]);
        assert_eq!(again.push(DlqReason::Invalid, String::new(), 5, ev(5)).unwrap(), Pushed::Stored(5));
    }

    #[test]
    fn overflow_is_counted_durably_and_nothing_more_is_stored() {
        let disk = SimDisk::new();
        let dlq = Dlq::open(Arc::new(disk.clone()), 2).unwrap();
        for i in 0..5 {
            dlq.push(DlqReason::BatchOverflow, String::new(), 0, ev(i)).unwrap();
        }
        assert_eq!(dlq.len(), 2);
        assert_eq!(dlq.overflow(), 3);
        disk.power_fail(None);
        let again = Dlq::open(Arc::new(disk), 2).unwrap();
        assert_eq!((again.len(), again.overflow()), (2, 3));
    }

    #[test]
    fn take_removes_matching_entries_durably() {
        let disk = SimDisk::new();
        let dlq = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        dlq.push(DlqReason::Invalid, String::new(), 0, ev(1)).unwrap();
        dlq.push(DlqReason::Deadline, String::new(), 0, ev(2)).unwrap();
        dlq.push(DlqReason::Invalid, String::new(), 0, ev(3)).unwrap();
        let filter = RedriveFilter { reason: Some(DlqReason::Invalid), up_to_id: Some(1) };
        let taken = dlq.take(&filter).unwrap();
        assert_eq!(taken.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1]);
        disk.power_fail(None);
        let again = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert_eq!(again.entries().iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 3]);
        // Ids keep increasing after a take.
        assert_eq!(again.push(DlqReason::Invalid, String::new(), 0, ev(4)).unwrap(), Pushed::Stored(4));
    }

    #[test]
    fn a_redriven_entry_leaves_only_when_finished() {
        let disk = SimDisk::new();
        let dlq = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        for i in 1..=3 {
            dlq.push(DlqReason::Invalid, String::new(), 0, ev(i)).unwrap();
        }
        let out = dlq.begin_redrive(&RedriveFilter::default());
        assert_eq!(out.len(), 3);
        assert!(dlq.begin_redrive(&RedriveFilter::default()).is_empty(), "not handed out twice");
        dlq.finish_redrive(&[1, 3]).unwrap();
        assert_eq!(dlq.entries().iter().map(|e| e.id).collect::<Vec<_>>(), vec![2]);
        // A crash before entry 2 was settled: it is still there; the others are gone for good.
        disk.power_fail(None);
        let again = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert_eq!(again.entries().iter().map(|e| e.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(again.push(DlqReason::Invalid, String::new(), 0, ev(4)).unwrap(), Pushed::Stored(4));
        // Compacted at open: no tombstones left.
        let reread = Dlq::open(Arc::new(disk), 10).unwrap();
        assert_eq!(reread.entries().iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 4]);
    }

    #[test]
    fn redrive_requests_round_trip() {
        let disk = SimDisk::new();
        let dlq = Dlq::open(Arc::new(disk.clone()), 10).unwrap();
        assert_eq!(dlq.take_redrive_request().unwrap(), None);
        let f = RedriveFilter { reason: Some(DlqReason::Deadline), up_to_id: Some(9) };
        Dlq::request_redrive(&disk, &f).unwrap();
        assert_eq!(dlq.take_redrive_request().unwrap(), Some(f));
        assert_eq!(dlq.take_redrive_request().unwrap(), None, "a request is applied once");
        Dlq::request_redrive(&disk, &RedriveFilter::default()).unwrap();
        assert_eq!(dlq.take_redrive_request().unwrap(), Some(RedriveFilter::default()));
    }
}
