//! Raw records for catch-up: a topic's framed records read and written as bytes, checked but not
//! decoded, so members with different `segment_bytes` exchange record ranges, not segment files.

use bytes::Bytes;

use super::segment::{self, walk};
use super::{StoreError, TailCache, TopicStore};
use crate::record;

/// Checks that `bytes` are whole [`crate::record`] records, each checksummed, holding offsets
/// `from`, `from + 1`, …; returns the offset after the last. Never panics.
pub fn check_records(bytes: &[u8], from: u64) -> Result<u64, String> {
    let (mut off, mut next) = (0usize, from);
    while off < bytes.len() {
        let (payload, after) =
            record::read_at(bytes, off).map_err(|bad| format!("byte {off}: {}", bad.reason))?;
        match segment::record_head(payload) {
            Some((o, _)) if o == next => {}
            Some((o, _)) => return Err(format!("record at byte {off} holds offset {o}, not {next}")),
            None => return Err(format!("record at byte {off} is shorter than its fixed fields")),
        }
        next = next.checked_add(1).ok_or("offset overflows")?;
        off = after;
    }
    Ok(next)
}

impl TopicStore {
    /// Whole framed records from `offset` (below [`Self::end_offset`]): at least one, then as
    /// many as fit in `max_bytes`. Returns the offset after the last and the bytes (empty at or
    /// past the end). Below the first offset: [`StoreError::OutOfRange`]. Memory: the bytes
    /// returned plus one read chunk, never the log.
    pub fn read_raw(&self, offset: u64, max_bytes: usize) -> Result<(u64, Bytes), StoreError> {
        self.read_raw_to(offset, u64::MAX, max_bytes)
    }

    /// [`Self::read_raw`], stopping before offset `up_to`.
    pub fn read_raw_to(&self, offset: u64, up_to: u64, max_bytes: usize) -> Result<(u64, Bytes), StoreError> {
        if offset < self.first {
            return Err(StoreError::OutOfRange { offset, first: self.first });
        }
        let mut out = Vec::new();
        let (mut next, mut full) = (offset, false);
        let from = self.segments.range(..=offset).next_back().map_or(offset, |(b, _)| *b);
        for seg in self.segments.range(from..).map(|(_, s)| s) {
            if full || next >= up_to {
                break;
            }
            if seg.end <= next {
                continue;
            }
            let start = self.seek(seg, next)?;
            let fetch = |pos, len| self.bytes_at(seg, pos, len);
            let (_, stop) = walk(fetch, start, seg.len, |_, payload| {
                let off = segment::record_head(payload).map(|(o, _)| o);
                if off.is_some_and(|o| o < next) {
                    return Ok(true);
                }
                if off != Some(next) {
                    return Err(format!("record of offset {off:?} where {next} was expected"));
                }
                let size = record::HEADER + payload.len();
                if next >= up_to || (!out.is_empty() && out.len() + size > max_bytes) {
                    full = true;
                    return Ok(false);
                }
                record::append(&mut out, payload);
                next += 1;
                Ok(true)
            })?;
            if let Some(stop) = stop {
                return Err(self.corrupt(&seg.name, stop.pos, &stop.reason));
            }
        }
        Ok((next, Bytes::from(out)))
    }

    /// Appends framed records (as [`Self::read_raw`] gives them) that must start at
    /// [`Self::end_offset`] and run on one by one, each checksummed; nothing is written unless all
    /// check out ([`StoreError::Refused`]). Written through the normal segment roll (this store's
    /// own `segment_bytes`), not fsynced, all or nothing when out of descriptors (as
    /// [`Self::append`]). Returns the new end.
    pub fn append_raw(&mut self, from: u64, bytes: &[u8]) -> Result<u64, StoreError> {
        self.check_live()?;
        let end = self.end_offset();
        if from != end {
            return Err(self.refused(format!("records start at offset {from} but the log ends at {end}")));
        }
        let next = check_records(bytes, from).map_err(|why| self.refused(why))?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(bytes);
        let (mut rolls, mut plan, mut off) = (Vec::new(), self.roll_plan(), 0usize);
        for offset in from.. {
            let Some((len, _)) = record::header_at(bytes, off) else { break };
            let size = record::HEADER + len as usize;
            plan.add(off, size as u64, offset, &mut rolls);
            off += size;
        }
        let p = self.prepare_encoded(buf, rolls)?;
        self.write_prepared(p)?;
        debug_assert_eq!(self.end_offset(), next, "checked records all landed");
        Ok(self.end_offset())
    }

    /// Drops every segment and starts an empty log at `first` (for a local log that cannot be
    /// extended to a catch-up target). Durable when it returns.
    pub fn reset_to(&mut self, first: u64) -> Result<(), StoreError> {
        self.check_live()?;
        while let Some((_, seg)) = self.segments.pop_last() {
            // A segment just rolled to has no file until its first write.
            self.mutate(|s| match s.disk.remove(&seg.name) {
                Err(e) if e.is_not_found() => Ok(()),
                done => done,
            })?;
        }
        for name in self.disk.list(&self.prefix)? {
            if segment::parse_segment_name(&self.prefix, &name).is_some() {
                self.mutate(|s| s.disk.remove(&name))?;
            }
        }
        if first > 0 {
            // An empty segment names where the log now starts, so a restart finds it there even
            // if nothing is appended before it.
            let seg = segment::Segment::new(&self.prefix, first);
            self.mutate(|s| s.disk.write(&seg.name, &[]))?;
            self.mutate(|s| s.disk.sync(&seg.name))?;
            self.segments.insert(first, seg);
        }
        self.mutate(|s| s.disk.sync_dir())?;
        (self.first, self.synced, self.dir_dirty) = (first, first, false);
        self.tail = TailCache::default();
        Ok(())
    }

    fn refused(&self, reason: String) -> StoreError {
        StoreError::Refused { prefix: self.prefix.clone(), reason }
    }
}
