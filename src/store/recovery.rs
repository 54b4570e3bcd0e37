//! Opening a topic store: list its segments, scan the ones that may hold unsynced data, cut a
//! torn or lost tail, refuse damage below the synced point — or, at a snapshot that recorded the
//! active segment's length and checksum, cut back to it without reading.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::segment::{self, SegIndex, Segment, Unindexed};
use super::{SegmentMeta, StoreConfig, StoreError, TailCache, TopicStore};
use crate::rt::Disk;

impl TopicStore {
    /// Opens (or starts empty) the topic log of `prefix` on `disk`, where offsets below `synced`
    /// were made durable by an earlier [`TopicStore::sync_through`]. What is past that point and
    /// damaged (a torn tail, a lost unsynced segment) is cut and the cut made durable.
    pub fn open(
        disk: Arc<dyn Disk>,
        prefix: &str,
        cfg: StoreConfig,
        synced: u64,
    ) -> Result<Self, StoreError> {
        check(prefix, &cfg)?;
        let mut store = Self::listed(disk, prefix, cfg)?;
        store.recover_tail(synced)?;
        if store.end_offset() < synced {
            return Err(StoreError::Missing { prefix: prefix.to_string(), end: store.end_offset(), synced });
        }
        store.synced = store.end_offset();
        Ok(store)
    }

    /// Opens the topic log of `prefix` exactly as a snapshot recorded it (`end`, and `last`, its
    /// active segment then, fsynced before the snapshot was recorded): what was written after it is
    /// cut without being read — the Raft log replays it — and the recorded bytes are trusted by
    /// their length and checksum, read (and checked) only when a read first needs them. `None`
    /// when the files do not line up with the record or `cfg.verify_on_open` asks for every
    /// record to be read: the caller then opens with [`TopicStore::open`], which scans.
    pub(super) fn open_at_snapshot(
        disk: Arc<dyn Disk>,
        prefix: &str,
        cfg: StoreConfig,
        end: u64,
        last: &SegmentMeta,
    ) -> Result<Option<Self>, StoreError> {
        check(prefix, &cfg)?;
        let Some(crc) = last.crc.filter(|_| !cfg.verify_on_open && last.end == end && last.base <= end)
        else {
            return Ok(None);
        };
        let mut store = Self::listed(disk, prefix, cfg)?;
        let file_len = match store.segments.get(&last.base) {
            Some(seg) if seg.len >= last.bytes => seg.len,
            _ => return Ok(None),
        };
        let front = Unindexed { rel: end - last.base, pos: last.bytes, crc };
        let name = store.segments[&last.base].name.clone();
        if file_len > last.bytes {
            tracing::debug!(file = %name, cut = file_len - last.bytes, "cutting what was written after the snapshot");
            store.mutate(|s| s.disk.truncate(&name, last.bytes))?;
        }
        store.mutate(|s| s.disk.sync(&name))?;
        let seg = store.segments.get_mut(&last.base).expect("listed");
        (seg.end, seg.len, seg.synced_len) = (end, last.bytes, last.bytes);
        *seg.index_mut() = Some(SegIndex::resumed(front));
        store.drop_after(last.base)?;
        store.synced = store.end_offset();
        Ok(Some(store))
    }

    /// The store of the segment files of `prefix` on `disk`, each trusted by its length, none read.
    fn listed(disk: Arc<dyn Disk>, prefix: &str, cfg: StoreConfig) -> Result<Self, StoreError> {
        let mut segments = BTreeMap::new();
        for name in disk.list(prefix)? {
            if let Some(base) = segment::parse_segment_name(prefix, &name) {
                let len = disk.size(&name)?.unwrap_or(0);
                let mut seg = Segment::new(prefix, base);
                (seg.len, seg.synced_len) = (len, len);
                seg.index = Mutex::new(None);
                segments.insert(base, seg);
            }
        }
        // A sealed segment ends where the next begins (checked when it is first read).
        let bases: Vec<u64> = segments.keys().copied().collect();
        for w in bases.windows(2) {
            segments.get_mut(&w[0]).expect("listed").end = w[1];
        }
        let first = bases.first().copied().unwrap_or(0);
        Ok(TopicStore {
            disk,
            prefix: prefix.to_string(),
            cfg,
            segments,
            first,
            synced: 0,
            dir_dirty: false,
            tail: TailCache::default(),
            poisoned: false,
            buf: Vec::new(),
            corrupt_found: Default::default(),
        })
    }

    /// Scans from the segment that holds `synced` on; cuts at the first bad record or gap at or
    /// past `synced`, dropping every later segment.
    fn recover_tail(&mut self, synced: u64) -> Result<(), StoreError> {
        let from = self.segments.range(..=synced).next_back().map_or(0, |(b, _)| *b);
        let bases: Vec<u64> = self.segments.range(from..).map(|(b, _)| *b).collect();
        for (i, &base) in bases.iter().enumerate() {
            let seg = &self.segments[&base];
            let fetch = |pos, len| self.disk.read_range(&seg.name, pos, len);
            let scan = segment::scan(fetch, base, seg.len, self.cfg.index_interval_bytes)?;
            let next_base = bases.get(i + 1).copied();
            let cut = match (&scan.stop, next_base) {
                (Some(stop), _) if scan.end < synced => {
                    return Err(self.corrupt(&seg.name, stop.pos, &stop.reason));
                }
                (Some(stop), _) => {
                    tracing::warn!(file = %seg.name, byte = stop.pos, reason = %stop.reason, "cutting an unsynced topic tail");
                    true
                }
                (None, Some(nb)) if nb != scan.end && scan.end < synced => {
                    let why =
                        format!("records end at offset {} but the next segment starts at {nb}", scan.end);
                    return Err(self.corrupt(&seg.name, scan.len, &why));
                }
                (None, Some(nb)) => nb != scan.end,
                (None, None) => false,
            };
            let name = seg.name.clone();
            let file_len = seg.len;
            let seg = self.segments.get_mut(&base).expect("listed");
            (seg.end, seg.len, seg.synced_len) = (scan.end, scan.len, scan.len);
            *seg.index_mut() = Some(scan.index);
            // What a crashed process left in the page cache is made durable before it is trusted.
            if scan.len < file_len {
                self.mutate(|s| s.disk.truncate(&name, scan.len))?;
            }
            self.mutate(|s| s.disk.sync(&name))?;
            if cut {
                return self.drop_after(base);
            }
        }
        self.mutate(|s| s.disk.sync_dir())
    }

    /// Removes every segment after the one at `base`, durably.
    fn drop_after(&mut self, base: u64) -> Result<(), StoreError> {
        let later: Vec<u64> = self.segments.range(base + 1..).map(|(b, _)| *b).rev().collect();
        for b in later {
            let seg = self.segments.remove(&b).expect("listed");
            self.mutate(|s| s.disk.remove(&seg.name))?;
        }
        self.mutate(|s| s.disk.sync_dir())
    }
}

fn check(prefix: &str, cfg: &StoreConfig) -> Result<(), StoreError> {
    if prefix.is_empty() || prefix.contains(['/', '\\', '\0']) {
        return Err(StoreError::Config(format!("prefix {prefix:?} must be a non-empty flat file name")));
    }
    if cfg.segment_bytes == 0 || cfg.segment_bytes > super::MAX_SEGMENT_BYTES {
        return Err(StoreError::Config(format!(
            "segment_bytes {} must be 1..={}",
            cfg.segment_bytes,
            super::MAX_SEGMENT_BYTES
        )));
    }
    if cfg.index_interval_bytes == 0 {
        return Err(StoreError::Config("index_interval_bytes must be at least 1".into()));
    }
    Ok(())
}
