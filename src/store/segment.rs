//! One topic segment: its file name, the record inside it (one stored event, [`crate::record`]
//! framing), its sparse offset index, and the chunked walk over its records that reads, indexes
//! and recovers it without loading the whole file.

use std::sync::Mutex;

use bytes::Bytes;

use crate::event::codec::{decode_events, encode_events};
use crate::event::{Event, StoredEvent};
use crate::record::{self, Bad, BadKind};

/// Bytes read from a file at a time when walking records.
pub(super) const CHUNK: usize = 64 * 1024;
/// Bytes of a record payload before the event: offset and timestamp.
const RECORD_FIXED: usize = 16;
pub(super) const SUFFIX: &str = ".seg";

/// The file name of the segment of `prefix` whose first record has offset `base`.
pub(super) fn segment_name(prefix: &str, base: u64) -> String {
    format!("{prefix}{base:020}{SUFFIX}")
}

/// The base offset in a segment file name of `prefix`, if it is one.
pub(super) fn parse_segment_name(prefix: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Appends the record of one stored event; `Err(len)` if the payload cannot be framed.
pub(super) fn encode_record(
    buf: &mut Vec<u8>,
    offset: u64,
    stamp_ms: u64,
    event: &Event,
) -> Result<usize, usize> {
    record::try_append_with(buf, u32::MAX as usize, |b| {
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&stamp_ms.to_be_bytes());
        // Straight into the batch's buffer: no block allocated and copied per event.
        encode_events(b, std::slice::from_ref(event));
    })
}

/// The offset and timestamp of a record's payload, without decoding the event.
pub(super) fn record_head(payload: &[u8]) -> Option<(u64, u64)> {
    let h = payload.get(..RECORD_FIXED)?;
    let word = |i: usize| u64::from_be_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    Some((word(0), word(8)))
}

/// Decodes a record payload that passed its checksum.
pub(super) fn decode_record(payload: &[u8]) -> Result<StoredEvent, String> {
    let (offset, timestamp_ms) = record_head(payload).ok_or("record shorter than its fixed fields")?;
    let mut events = decode_events(Bytes::copy_from_slice(&payload[RECORD_FIXED..]))
        .map_err(|e| format!("record checks out but its event does not decode: {e}"))?;
    if events.len() != 1 {
        return Err(format!("record holds {} events, not one", events.len()));
    }
    let event = events.pop().expect("one event");
    Ok(StoredEvent { offset, timestamp_ms, event })
}

/// The running checksum of a segment's bytes, extended by one record (header and payload).
pub(super) fn extend_crc(crc: u32, payload: &[u8]) -> u32 {
    let len = (payload.len() as u32).to_le_bytes();
    let sum = record::checksum(len, payload).to_le_bytes();
    let crc = crc32c::crc32c_append(crc, &len);
    crc32c::crc32c_append(crc32c::crc32c_append(crc, &sum), payload)
}

/// What a full scan of a segment learns: its sparse index, checksum and last timestamp.
#[derive(Debug, Clone, Default)]
pub(super) struct SegIndex {
    /// (offset - base, byte position) of a record every `index_interval` bytes; first is (0, 0).
    pub(super) entries: Vec<(u32, u32)>,
    /// CRC32C of the segment's bytes so far.
    pub(super) crc: u32,
    pub(super) last_stamp_ms: u64,
    /// Byte position of the last index entry.
    last_pos: u64,
    /// Records below this point are not indexed yet (a restart trusted them by the snapshot).
    pub(super) unindexed: Option<Unindexed>,
}

/// The front of a segment a restart did not read: records `base..base + rel` in bytes
/// `0..pos`, whose checksum the snapshot recorded as `crc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unindexed {
    pub(super) rel: u64,
    pub(super) pos: u64,
    pub(super) crc: u32,
}

impl SegIndex {
    /// The index of a segment whose first `front.pos` bytes are known only by the snapshot's
    /// record of them: appends extend it, reads below `front` fill it first ([`Self::fill`]).
    pub(super) fn resumed(front: Unindexed) -> Self {
        if front.pos == 0 {
            return SegIndex::default();
        }
        let rel = u32::try_from(front.rel).expect("segment holds fewer than 2^32 records");
        let at = u32::try_from(front.pos).expect("segment smaller than 4 GiB");
        SegIndex {
            entries: vec![(rel, at)],
            crc: front.crc,
            last_stamp_ms: 0,
            last_pos: front.pos,
            unindexed: Some(front),
        }
    }

    /// Whether reading offset `base + rel` needs the unread front indexed first.
    pub(super) fn needs_fill(&self, rel: u64) -> bool {
        self.unindexed.is_some_and(|u| rel < u.rel)
    }

    /// Takes a scan of the unread front (checked against what the snapshot recorded by the
    /// caller) into this index.
    pub(super) fn fill(&mut self, front: SegIndex) {
        let mut entries = front.entries;
        let last = entries.last().map(|e| e.0);
        entries.extend(self.entries.iter().copied().filter(|e| last.is_none_or(|l| e.0 > l)));
        self.entries = entries;
        self.unindexed = None;
    }

    /// Notes a record of offset `base + rel` at byte `pos` (the caller extends `crc`).
    pub(super) fn note(&mut self, rel: u64, pos: u64, payload: &[u8], interval: u64) {
        if self.entries.is_empty() || pos >= self.last_pos + interval {
            let rel = u32::try_from(rel).expect("segment holds fewer than 2^32 records");
            let at = u32::try_from(pos).expect("segment smaller than 4 GiB");
            self.entries.push((rel, at));
            self.last_pos = pos;
        }
        self.last_stamp_ms = record_head(payload).map_or(self.last_stamp_ms, |(_, t)| t);
    }

    /// Byte position of the last indexed record at or before offset `base + rel`.
    pub(super) fn seek(&self, rel: u64) -> u64 {
        let i = self.entries.partition_point(|&(r, _)| u64::from(r) <= rel);
        i.checked_sub(1).map_or(0, |i| u64::from(self.entries[i].1))
    }
}

/// One segment file: records with offsets `base..end` in bytes `0..len`.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) base: u64,
    pub(super) name: String,
    pub(super) end: u64,
    pub(super) len: u64,
    /// Bytes made durable by an fsync.
    pub(super) synced_len: u64,
    /// Built on first read of a segment recovery did not scan; always present for the active one.
    pub(super) index: Mutex<Option<SegIndex>>,
}

impl Segment {
    pub(super) fn new(prefix: &str, base: u64) -> Self {
        let name = segment_name(prefix, base);
        Segment { base, name, end: base, len: 0, synced_len: 0, index: Mutex::new(Some(SegIndex::default())) }
    }

    pub(super) fn index(&self) -> std::sync::MutexGuard<'_, Option<SegIndex>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn index_mut(&mut self) -> &mut Option<SegIndex> {
        self.index.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a walk over records stopped early.
#[derive(Debug, Clone)]
pub(super) struct Stop {
    pub(super) pos: u64,
    pub(super) reason: String,
}

/// Walks the records of a file from byte `from` to `limit`, `CHUNK` bytes at a time, fetching
/// bytes with `fetch(pos, len)`; calls `visit(pos, payload)` for each good record until it
/// returns `Ok(false)`. Returns the position reached and, if bad bytes (or `visit`) stopped it
/// early, where and why.
pub(super) fn walk<E>(
    mut fetch: impl FnMut(u64, usize) -> Result<Vec<u8>, E>,
    from: u64,
    limit: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<bool, String>,
) -> Result<(u64, Option<Stop>), E> {
    let mut pos = from;
    let mut need = 0usize;
    while pos < limit {
        let want = CHUNK.max(need).min(usize::try_from(limit - pos).unwrap_or(usize::MAX));
        let buf = fetch(pos, want)?;
        if buf.is_empty() {
            return Ok((pos, Some(Stop { pos, reason: "file shorter than its recorded length".into() })));
        }
        let whole = pos + buf.len() as u64 >= limit;
        let mut off = 0;
        need = 0;
        while off < buf.len() {
            match record::read_at(&buf, off) {
                Ok((payload, next)) => match visit(pos + off as u64, payload) {
                    Ok(true) => off = next,
                    Ok(false) => return Ok((pos + off as u64, None)),
                    Err(reason) => {
                        return Ok((pos + off as u64, Some(Stop { pos: pos + off as u64, reason })));
                    }
                },
                Err(Bad { kind: BadKind::Partial, .. }) if !whole => {
                    need = record::header_at(&buf, off)
                        .map_or(record::HEADER, |(l, _)| record::HEADER.saturating_add(l as usize));
                    break;
                }
                Err(bad) => {
                    let at = pos + off as u64;
                    return Ok((at, Some(Stop { pos: at, reason: bad.reason.to_string() })));
                }
            }
        }
        if off == 0 && need <= buf.len() {
            // Cannot happen (a partial record needs more than the chunk), but never loop forever.
            return Ok((pos, Some(Stop { pos, reason: "record does not fit its reported length".into() })));
        }
        pos += off as u64;
    }
    Ok((pos, None))
}

/// What scanning a segment from its start found.
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) end: u64,
    pub(super) len: u64,
    pub(super) index: SegIndex,
    pub(super) stop: Option<Stop>,
}

/// Scans a segment's records from byte 0 to `limit`, checking offsets run from `base`.
pub(super) fn scan<E>(
    fetch: impl FnMut(u64, usize) -> Result<Vec<u8>, E>,
    base: u64,
    limit: u64,
    interval: u64,
) -> Result<Scan, E> {
    let mut index = SegIndex::default();
    let mut expected = base;
    let (len, stop) = walk(fetch, 0, limit, |pos, payload| {
        match record_head(payload) {
            Some((off, _)) if off == expected => {}
            Some((off, _)) => return Err(format!("record of offset {off} where {expected} was expected")),
            None => return Err("record shorter than its fixed fields".into()),
        }
        index.note(expected - base, pos, payload, interval);
        index.crc = extend_crc(index.crc, payload);
        expected += 1;
        Ok(true)
    })?;
    Ok(Scan { end: expected, len, index, stop })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;
    use bytes::{BufMut, BytesMut};

    #[test]
    fn names_round_trip_and_other_files_are_ignored() {
        assert_eq!(segment_name("t-", 42), "t-00000000000000000042.seg");
        assert_eq!(parse_segment_name("t-", "t-00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_name("t-", "t-x-00000000000000000042.seg"), None);
        assert_eq!(parse_segment_name("t-", "t-00000000000000000042.seg.tmp"), None);
        assert_eq!(parse_segment_name("t-", "wal-00000000000000000042.seg"), None);
    }

    #[test]
    fn a_record_round_trips() {
        let mut e = Event::new("orders", Priority::High, "payload");
        e.producer_id = 7;
        e.sequence = 9;
        let mut buf = Vec::new();
        encode_record(&mut buf, 5, 1234, &e).unwrap();
        let (payload, next) = record::read_at(&buf, 0).unwrap();
        assert_eq!(next, buf.len());
        assert_eq!(record_head(payload), Some((5, 1234)));
        assert_eq!(decode_record(payload).unwrap(), StoredEvent { offset: 5, timestamp_ms: 1234, event: e });
        assert!(decode_record(&payload[..20]).is_err());
    }

    /// The record is the event block framed after offset and stamp, byte for byte what segments
    /// written before the block was encoded in place hold (so those still read).
    #[test]
    fn a_record_is_offset_stamp_and_the_event_block_framed() {
        let mut e = Event::new("orders", Priority::High, vec![3u8; 300]);
        e.key = Some(b"k".to_vec().into());
        e.headers.push(crate::event::Header { name: "h".into(), value: b"v".to_vec().into() });
        let mut payload = BytesMut::new();
        payload.put_u64(5);
        payload.put_u64(1234);
        encode_events(&mut payload, std::slice::from_ref(&e));
        let mut expected = b"earlier records".to_vec();
        record::append(&mut expected, &payload);
        let mut buf = b"earlier records".to_vec();
        assert_eq!(encode_record(&mut buf, 5, 1234, &e), Ok(payload.len()));
        assert_eq!(buf, expected);
    }

    #[test]
    fn walk_reads_records_that_straddle_chunks() {
        let mut buf = Vec::new();
        let big = Event::new("t", Priority::Low, vec![7u8; CHUNK + 100]);
        for i in 0..5 {
            encode_record(&mut buf, i, 0, &big).unwrap();
        }
        let fetch = |pos: u64, len: usize| -> Result<Vec<u8>, ()> {
            let p = pos as usize;
            Ok(buf[p..(p + len).min(buf.len())].to_vec())
        };
        let s = scan(fetch, 0, buf.len() as u64, 4096).unwrap();
        assert!(s.stop.is_none(), "{:?}", s.stop);
        assert_eq!((s.end, s.len), (5, buf.len() as u64));
        assert_eq!(s.index.entries.len(), 5);
    }
}
