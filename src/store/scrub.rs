//! Background scrub of sealed topic segments (issue 15): bit rot in synced topic data found while
//! the member runs, not only by the read that meets it or at the next start.
//!
//! A scrub reads each sealed segment (every one but a topic's active segment) through the disk
//! seam, record by record, checking every record's CRC32C and offset, without holding the
//! store: [`TopicSet::scrub_targets`] lists the segments, [`scrub_segment`] reads one,
//! [`TopicSet::scrub_found`] reports a bad record if the segment is still what was read (a
//! segment deleted by retention or cut by a catch-up meanwhile is no error). A bad record is
//! counted like one a read meets ([`TopicStore::corrupt_found`], `esc_topic_corrupt_records_total`)
//! and logged with file and byte; reads of that range keep answering `unavailable` by their own
//! CRC check, and the operator restores the member from a peer. The node paces it
//! ([`crate::node::ClusterNode`], `cluster.scrub_bytes_per_sec`).

use super::*;

/// One sealed segment to scrub, as the store listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubTarget {
    pub topic: String,
    /// The segment's file name.
    pub file: String,
    /// Its first offset and its length in bytes.
    pub base: u64,
    pub len: u64,
}

/// A bad record [`scrub_segment`] met: its byte position and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubFinding {
    pub pos: u64,
    pub reason: String,
}

/// Reads `t`'s segment record by record (memory: one read chunk or one record); the first bad
/// record, if any. A disk error (the file gone, a short read) is returned as is.
pub fn scrub_segment(disk: &dyn Disk, t: &ScrubTarget) -> Result<Option<ScrubFinding>, DiskError> {
    let fetch = |pos, len| disk.read_range(&t.file, pos, len);
    let scan = segment::scan(fetch, t.base, t.len, u64::MAX)?;
    Ok(scan.stop.map(|s| ScrubFinding { pos: s.pos, reason: s.reason }))
}

impl TopicStore {
    /// This topic's sealed segments holding retained records, oldest first.
    fn scrub_targets(&self, topic: &str) -> Vec<ScrubTarget> {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments
            .values()
            .take(sealed)
            .filter(|s| s.end > self.first && s.len > 0)
            .map(|s| ScrubTarget { topic: topic.to_string(), file: s.name.clone(), base: s.base, len: s.len })
            .collect()
    }

    /// Whether `t` is still a sealed segment of this store, as long as when it was listed.
    fn still_sealed(&self, t: &ScrubTarget) -> bool {
        let active = self.segments.keys().next_back().copied();
        self.segments.get(&t.base).is_some_and(|s| s.name == t.file && s.len == t.len)
            && active != Some(t.base)
    }
}

impl TopicSet {
    /// Every topic's sealed segments holding retained records (see [`scrub_segment`]).
    pub fn scrub_targets(&self) -> Vec<ScrubTarget> {
        self.topics.iter().flat_map(|(name, (_, s))| s.scrub_targets(name)).collect()
    }

    /// Reports what a scrub of `t` found, if the segment is still what was read: counted and
    /// logged as corrupt (file and byte). False (nothing reported) if it changed meanwhile.
    pub fn scrub_found(&self, t: &ScrubTarget, found: &ScrubFinding) -> bool {
        let Some((_, store)) = self.topics.get(&t.topic) else { return false };
        if !store.still_sealed(t) {
            return false;
        }
        let reason = format!("found by the background scrub: {}", found.reason);
        let _ = store.corrupt(&t.file, found.pos, &reason);
        true
    }

    /// The disk the topics live on (the scrub reads it without holding the set).
    pub fn disk(&self) -> Arc<dyn Disk> {
        self.disk.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Priority};
    use crate::rt::{SimDisk, rng_from_seed};

    fn set_with_sealed_segments(d: &SimDisk) -> TopicSet {
        let cfg = StoreConfig { segment_bytes: 512, ..StoreConfig::default() };
        let mut set = TopicSet::open(Arc::new(d.clone()), cfg, None).unwrap();
        for i in 0..60u64 {
            let e = Event::new("t", Priority::Low, format!("payload {i}"));
            set.append("t", [(i, &e)]).unwrap();
        }
        set.sync_all().unwrap();
        set
    }

    fn scrub_all(set: &TopicSet) -> Vec<(ScrubTarget, ScrubFinding)> {
        let disk = set.disk();
        set.scrub_targets()
            .into_iter()
            .filter_map(|t| scrub_segment(&*disk, &t).unwrap().map(|f| (t, f)))
            .collect()
    }

    #[test]
    fn a_scrub_finds_a_flipped_bit_in_a_sealed_segment_without_a_read() {
        for seed in 0..24 {
            let d = SimDisk::new();
            let set = set_with_sealed_segments(&d);
            let targets = set.scrub_targets();
            assert!(targets.len() >= 2, "small segments seal: {targets:?}");
            assert!(scrub_all(&set).is_empty(), "intact data scrubs clean");
            let files = d.list(TOPIC_FILE_PREFIX).unwrap();
            let spare: Vec<(String, u64)> =
                files.into_iter().filter(|f| !targets.iter().any(|t| &t.file == f)).map(|f| (f, 0)).collect();
            let rot = d.rot(&[TOPIC_FILE_PREFIX], &spare, &mut rng_from_seed(seed)).expect("sealed bytes");
            let found = scrub_all(&set);
            assert_eq!(found.len(), 1, "seed {seed}: {rot:?} found once: {found:?}");
            let (t, f) = &found[0];
            assert_eq!(t.file, rot.file, "seed {seed}");
            assert!(
                f.pos <= rot.offset as u64 && rot.offset as u64 - f.pos < 512,
                "seed {seed}: {f:?} {rot:?}"
            );
            assert_eq!(set.corrupt_found(), 0, "nothing counted before it is reported");
            assert!(set.scrub_found(t, f));
            assert_eq!(set.corrupt_found(), 1, "counted like a read that meets rot");
        }
    }

    #[test]
    fn a_finding_on_a_segment_that_changed_since_it_was_listed_is_not_reported() {
        let d = SimDisk::new();
        let set = set_with_sealed_segments(&d);
        let mut t = set.scrub_targets().remove(0);
        t.len += 1;
        let f = ScrubFinding { pos: 0, reason: "short read".into() };
        assert!(!set.scrub_found(&t, &f), "a segment listed at another length changed meanwhile");
        assert_eq!(set.corrupt_found(), 0);
    }
}
