//! Log segments: their names, and the records in them ([`crate::record`] framing, one [`Entry`]
//! each). `scan_records` is where a torn tail is told from corruption.

use super::*;

pub(super) fn segment_name(first: Index) -> String {
    format!("{SEGMENT_PREFIX}{first:020}{SEGMENT_SUFFIX}")
}

pub(super) fn is_segment_name(name: &str) -> bool {
    parse_segment_name(name).is_some()
}

pub(super) fn parse_segment_name(name: &str) -> Option<Index> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Appends one record for `e` to `buf` (its data is at most [`MAX_ENTRY_DATA`] bytes).
pub(super) fn encode_record(e: &Entry, buf: &mut Vec<u8>) {
    crate::record::append_with(buf, |b| e.encode(b));
}

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadKind {
    /// A record header of zeros: an unsynced write that never landed (a hole), always torn.
    Zero,
    /// A record running past the end of the file: torn, unless a valid record follows.
    Partial,
    /// A checksum mismatch: torn (the last record) if nothing valid follows.
    Checksum,
    /// Cannot come from a crash: a record that checks out but is not the entry expected there.
    Hard,
}

#[derive(Debug)]
pub(super) struct BadRecord {
    pub(super) offset: usize,
    pub(super) kind: BadKind,
    pub(super) reason: String,
}

/// Reads records from `data`, expecting indexes from `first`; calls `f(offset, entry)` for each
/// good one until `f` returns false. Returns the offset reached and, if it stopped early on bad
/// bytes, why.
pub(super) fn scan_records(
    data: &[u8],
    first: Index,
    mut f: impl FnMut(usize, Entry) -> bool,
) -> (usize, Option<BadRecord>) {
    let mut off = 0;
    let mut expected = first;
    while off < data.len() {
        match read_record(data, off) {
            Ok((entry, next)) => {
                if entry.index != expected {
                    let reason = format!("entry index {} where {expected} was expected", entry.index);
                    return (off, Some(BadRecord { offset: off, kind: BadKind::Hard, reason }));
                }
                if entry.index > MAX_INDEX {
                    let reason = format!("entry index {} is beyond the ceiling {MAX_INDEX}", entry.index);
                    return (off, Some(BadRecord { offset: off, kind: BadKind::Hard, reason }));
                }
                if entry.term > MAX_TERM {
                    let reason = format!(
                        "entry {} has term {}, beyond the ceiling {MAX_TERM}",
                        entry.index, entry.term
                    );
                    return (off, Some(BadRecord { offset: off, kind: BadKind::Hard, reason }));
                }
                if !f(off, entry) {
                    return (off, None);
                }
                off = next;
                expected += 1;
            }
            Err(bad) => return (off, Some(bad)),
        }
    }
    (off, None)
}

/// Reads one record at `off`: the entry and the offset after it.
pub(super) fn read_record(data: &[u8], off: usize) -> Result<(Entry, usize), BadRecord> {
    use crate::record::{self, BadKind as Framing};
    let (payload, next) = record::read_at(data, off).map_err(|bad| BadRecord {
        offset: off,
        kind: match bad.kind {
            Framing::Zero => BadKind::Zero,
            Framing::Partial => BadKind::Partial,
            Framing::Checksum => BadKind::Checksum,
        },
        reason: bad.reason.to_string(),
    })?;
    let entry = Entry::decode(payload).map_err(|e| BadRecord {
        offset: off,
        kind: BadKind::Hard,
        reason: format!("record checks out but does not decode: {e}"),
    })?;
    Ok((entry, next))
}

/// True if a record with a good checksum holding an entry at or after `index` starts anywhere
/// after `from`: the bad bytes before it are not a torn tail.
pub(super) fn valid_record_after(data: &[u8], from: usize, index: Index) -> bool {
    // Every entry takes more than 8 bytes, so a real later record has an index in this window.
    let max_index = index.saturating_add((data.len() / RECORD_HEADER) as u64);
    (from..data.len().saturating_sub(RECORD_HEADER)).any(|p| {
        plausible_record(&data[p..], index, max_index)
            && matches!(read_record(data, p), Ok((e, _)) if e.index >= index)
    })
}

/// A cheap check (no checksum, no copy) that `rest` starts with a record whose entry has an
/// index in `min..=max` and whose encoding fills the record exactly, so the scan for a valid
/// record over garbage costs O(n), not O(n²) checksummed bytes.
pub(super) fn plausible_record(rest: &[u8], min: Index, max: Index) -> bool {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f).checked_shl(7 * i)?;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    if rest.len() < RECORD_HEADER {
        return false;
    }
    let len = u32_at(rest, 0) as usize;
    let Some(payload) = rest.get(RECORD_HEADER..RECORD_HEADER.saturating_add(len)) else { return false };
    let mut at = 0;
    let (Some(_term), Some(index)) = (varint(payload, &mut at), varint(payload, &mut at)) else {
        return false;
    };
    if index < min || index > max || payload.get(at).is_none_or(|&k| k > 2) {
        return false;
    }
    at += 1;
    varint(payload, &mut at).is_some_and(|n| usize::try_from(n).ok() == payload.len().checked_sub(at))
}

/// Offset of the record holding `index` in `seg` (which holds it).
pub(super) fn offset_of(disk: &dyn Disk, seg: &Segment, index: Index) -> Result<u64, StorageError> {
    let data = disk.read(&seg.name)?;
    let mut found = None;
    let (_, bad) = scan_records(&data, seg.first, |off, e| {
        if e.index == index {
            found = Some(off as u64);
            false
        } else {
            true
        }
    });
    match (found, bad) {
        (Some(off), _) => Ok(off),
        (None, Some(bad)) => Err(corrupt(&seg.name, bad.offset, bad.reason)),
        (None, None) => Err(corrupt(&seg.name, data.len(), format!("entry {index} is missing"))),
    }
}

/// Debug builds, after each append: re-reads the bytes just appended to `seg` (which still has
/// its size and last index from before) and checks, with the recovery scanner, that they are
/// whole records with valid checksums holding the entries that follow `seg.last`, and that the
/// file ends where the segment's bookkeeping says. A mismatch is our bug (a wrong offset after a
/// truncation, an encoder that does not round-trip), so it asserts. A failed read (say, no file
/// descriptor left) skips the check: a debug-only check never changes what an append returns.
#[cfg(debug_assertions)]
pub(super) fn verify_appended(disk: &dyn Disk, seg: &Segment, written: &[u8]) {
    let (Ok(Some(size)), Ok(back)) =
        (disk.size(&seg.name), disk.read_range(&seg.name, seg.bytes, written.len()))
    else {
        return;
    };
    let want = seg.bytes + written.len() as u64;
    assert_eq!(
        size, want,
        "{}: {size} bytes after an append, the segment's bookkeeping says {want}",
        seg.name
    );
    assert!(back == written, "{}: the bytes appended at {} do not read back", seg.name, seg.bytes);
    let (end, bad) = scan_records(&back, seg.last + 1, |_, _| true);
    if let Some(bad) = bad {
        panic!(
            "{}: record appended at byte {} does not scan: {}",
            seg.name,
            seg.bytes + bad.offset as u64,
            bad.reason
        );
    }
    assert_eq!(end, back.len(), "{}: appended records end early", seg.name);
}
