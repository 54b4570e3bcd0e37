//! Making a snapshot's topic data durable, and deleting what its retention trimmed, off the
//! driver's round (issue 13).
//!
//! The round calls [`TopicSet::begin_sync`] at the snapshot's index: O(topics + segments), no
//! disk access. It lists the segments holding unsynced records and the first offset of every
//! topic. A task then runs [`TopicSync::run`] (the fsyncs) while the round goes on appending;
//! fsyncing an active segment that grew meanwhile makes more durable than asked, never less.
//! Only once it succeeded may the snapshot be recorded; the round then notes the fsyncs with
//! [`TopicSet::synced`]. A failed fsync is never retried (after one the kernel may have dropped
//! the dirty pages and report success the next time — fsyncgate): the caller poisons the set
//! ([`TopicSet::poison`]) and refuses to record the snapshot.
//!
//! Once the snapshot is durable, [`TopicSet::take_trimmed`] takes the segments wholly below the
//! first offsets *that snapshot* records (not the current ones: trims applied after it may still
//! be needed by a restart from it) out of the set, and [`TrimmedSegments::run`] unlinks them,
//! off the round too. The removals are not fsynced: a crash before the next directory fsync
//! brings some back, and [`TopicSet::open`] finds them below the recorded first offset, where no
//! read goes, and the next snapshot's [`TopicSet::take_trimmed`] deletes them again.

use std::sync::Arc;

use super::{StoreError, TopicSet};
use crate::rt::{Disk, DiskError};

/// One segment's bytes as listed for an fsync.
#[derive(Debug, Clone)]
struct Listed {
    topic: String,
    base: u64,
    len: u64,
}

/// The fsyncs a snapshot needs: the files holding unsynced topic records when it was taken.
#[derive(Debug)]
#[must_use = "the snapshot's topic data is durable only once this has run"]
pub struct TopicSync {
    disk: Arc<dyn Disk>,
    files: Vec<(String, Listed)>,
    /// A segment was created (or removed) since the directory was last fsynced.
    dir: bool,
    /// Each topic's end and first offset when the snapshot was taken.
    offsets: Vec<(String, u64, u64)>,
}

impl TopicSync {
    /// Fsyncs the listed files, then the directory if segments were created. Stops at the first
    /// failure (the caller must then poison the set and not record the snapshot).
    pub fn run(&self) -> Result<(), DiskError> {
        for (name, _) in &self.files {
            self.disk.sync(name)?;
        }
        if self.dir {
            self.disk.sync_dir()?;
        }
        Ok(())
    }

    /// Files to fsync.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

/// Segments a durable snapshot no longer needs, taken out of the set, still to unlink.
#[derive(Debug)]
#[must_use = "the segments stay on disk until run"]
pub struct TrimmedSegments {
    disk: Arc<dyn Disk>,
    names: Vec<String>,
}

impl TrimmedSegments {
    /// True if there is nothing to unlink.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// How many segments.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Unlinks the segments, oldest of each topic first, stopping at the first failure: a file
    /// left behind lies below the recorded first offset, and a restart finds it there and
    /// deletes it after its next snapshot.
    pub fn run(self) {
        for name in &self.names {
            if let Err(e) = self.disk.remove(name) {
                tracing::warn!(segment = %name, error = %e, "unlinking a trimmed topic segment failed; deleted after a restart");
                return;
            }
        }
    }
}

impl TopicSet {
    /// Lists what a snapshot of the set as it is now needs fsynced (see the module docs). No
    /// disk access. Fails only if a store is poisoned. (`skip_files`: list no file — the
    /// planted bug `snapshot-before-topic-sync`.)
    pub fn begin_sync(&mut self, skip_files: bool) -> Result<TopicSync, StoreError> {
        let mut files = Vec::new();
        let mut dir = false;
        let mut offsets = Vec::with_capacity(self.topics.len());
        for (topic, (_, s)) in &mut self.topics {
            s.check_live()?;
            offsets.push((topic.clone(), s.end_offset(), s.first_offset()));
            dir |= std::mem::take(&mut s.dir_dirty);
            let unsynced = s.segments.values().filter(|seg| seg.synced_len < seg.len && !skip_files);
            for seg in unsynced {
                let listed = Listed { topic: topic.clone(), base: seg.base, len: seg.len };
                files.push((seg.name.clone(), listed));
            }
        }
        Ok(TopicSync { disk: self.disk.clone(), files, dir, offsets })
    }

    /// Notes that `sync` ran successfully: what it covered is durable.
    pub fn synced(&mut self, sync: &TopicSync) {
        for (_, l) in &sync.files {
            if let Some(seg) = self.topics.get_mut(&l.topic).and_then(|(_, s)| s.segments.get_mut(&l.base)) {
                seg.synced_len = seg.synced_len.max(l.len.min(seg.len));
            }
        }
        for (topic, end, _) in &sync.offsets {
            if let Some((_, s)) = self.topics.get_mut(topic) {
                s.synced = s.synced.max((*end).min(s.end_offset()));
            }
        }
    }

    /// Notes that `sync` did not run (out of descriptors): the directory fsync it would have
    /// done is owed by the next one.
    pub fn sync_not_done(&mut self, sync: &TopicSync) {
        if sync.dir {
            for (_, s) in self.topics.values_mut() {
                s.dir_dirty = true;
            }
        }
    }

    /// Takes out of the set the segments wholly below the first offsets `sync`'s snapshot
    /// recorded (never a topic's last segment), to unlink once that snapshot is durable.
    pub fn take_trimmed(&mut self, sync: &TopicSync) -> TrimmedSegments {
        let mut names = Vec::new();
        for (topic, _, first) in &sync.offsets {
            let Some((_, s)) = self.topics.get_mut(topic) else { continue };
            let last = s.segments.keys().next_back().copied();
            let gone: Vec<u64> = s
                .segments
                .values()
                .filter(|g| g.end <= *first && Some(g.base) != last)
                .map(|g| g.base)
                .collect();
            for base in gone {
                if let Some(seg) = s.segments.remove(&base) {
                    names.push(seg.name);
                    s.dir_dirty = true;
                }
            }
        }
        TrimmedSegments { disk: self.disk.clone(), names }
    }

    /// Refuses every later mutation of every topic (an fsync of topic data failed): the member
    /// must restart and recover from disk.
    pub fn poison(&mut self) {
        for (_, s) in self.topics.values_mut() {
            s.poisoned = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{StoreConfig, StoreError, TopicSet};
    use crate::event::{Event, Priority};
    use crate::rt::{Disk, SimDisk};

    fn cfg() -> StoreConfig {
        StoreConfig {
            segment_bytes: 300,
            index_interval_bytes: 64,
            read_cache_bytes: 128,
            verify_on_open: true,
        }
    }

    fn fill(s: &mut TopicSet, topic: &str, from: u64, to: u64) {
        for i in from..to {
            s.append(topic, [(i, &Event::new(topic, Priority::Low, format!("{topic}:{i}")))]).unwrap();
        }
    }

    fn payloads(s: &TopicSet, topic: &str) -> Vec<Vec<u8>> {
        let t = s.get(topic).unwrap();
        t.read(t.first_offset(), usize::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| e.event.payload.to_vec())
            .collect()
    }

    /// The rule a snapshot relies on: the files `begin_sync` lists hold the data it covers. A
    /// power failure before they were fsynced loses it (a snapshot recorded then could not be
    /// opened: the order matters); after, the set opens whole at the snapshot, whatever was
    /// appended since. Listing no file (the planted bug `snapshot-before-topic-sync`) loses it.
    #[test]
    fn the_listed_fsyncs_make_the_snapshots_topic_data_durable_and_nothing_less_does() {
        for case in ["not run", "run", "planted: nothing listed"] {
            let d = SimDisk::new();
            let mut s = TopicSet::open(Arc::new(d.clone()), cfg(), None).unwrap();
            fill(&mut s, "a", 0, 30);
            fill(&mut s, "b", 30, 33);
            let (meta, before) = (s.metadata(), payloads(&s, "a"));
            let sync = s.begin_sync(case.starts_with("planted")).unwrap();
            if case != "run" {
                d.power_fail(None);
                let err = TopicSet::open(Arc::new(d.clone()), cfg(), Some(&meta)).unwrap_err();
                assert!(matches!(err, StoreError::Missing { .. }), "{case}: {err}");
                continue;
            }
            assert_eq!(sync.file_count(), 2, "the active segment of each topic (sealed ones were synced)");
            sync.run().unwrap();
            s.synced(&sync);
            assert_eq!(s.begin_sync(false).unwrap().file_count(), 0, "nothing new to fsync");
            fill(&mut s, "a", 30, 40);
            d.power_fail(None);
            let r = TopicSet::open(Arc::new(d.clone()), cfg(), Some(&meta)).unwrap();
            assert_eq!(payloads(&r, "a"), before, "{case}");
            assert_eq!(r.get("b").unwrap().end_offset(), 3);
        }
    }

    /// Retention deletion: only the segments below the first offsets the snapshot recorded go
    /// (a trim applied after it is still needed by a restart from it). Unlinked without a
    /// directory fsync: a power failure brings them back, the set opens at the snapshot with
    /// them below its first offset, serves exactly the retained events, and the next
    /// snapshot's `take_trimmed` deletes them again.
    #[test]
    fn trimmed_segments_go_below_the_recorded_first_offset_and_a_crash_that_brings_them_back_converges() {
        let d = SimDisk::new();
        let mut s = TopicSet::open(Arc::new(d.clone()), cfg(), None).unwrap();
        fill(&mut s, "a", 0, 40);
        s.get_mut("a").unwrap().trim_before(10).unwrap();
        let (meta, retained) = (s.metadata(), payloads(&s, "a"));
        let sync = s.begin_sync(false).unwrap();
        sync.run().unwrap();
        s.synced(&sync);
        s.get_mut("a").unwrap().trim_before(25).unwrap();
        let files_before = d.list("topic-").unwrap();
        let trimmed = s.take_trimmed(&sync);
        assert!(!trimmed.is_empty());
        let segs = s.get("a").unwrap().segments();
        assert!(
            segs.iter().all(|g| g.end > 10),
            "nothing at or past the recorded first offset goes: {segs:?}"
        );
        assert!(segs.iter().any(|g| g.end <= 25), "a segment only the later trim frees stays: {segs:?}");
        let n = trimmed.len();
        trimmed.run();
        assert_eq!(d.list("topic-").unwrap().len(), files_before.len() - n);
        d.power_fail(None);
        assert_eq!(d.list("topic-").unwrap(), files_before, "unsynced removals come back");
        let mut r = TopicSet::open(Arc::new(d.clone()), cfg(), Some(&meta)).unwrap();
        assert_eq!(payloads(&r, "a"), retained, "only the retained events are served");
        let again = r.begin_sync(false).unwrap();
        let trimmed = r.take_trimmed(&again);
        assert_eq!(trimmed.len(), n, "deleted again after the next snapshot");
        trimmed.run();
        again.run().unwrap();
        r.synced(&again);
        let next = r.begin_sync(false).unwrap();
        next.run().unwrap();
        d.power_fail(None);
        assert_eq!(
            d.list("topic-").unwrap().len(),
            files_before.len() - n,
            "the next directory fsync made it durable"
        );
        assert_eq!(
            payloads(&TopicSet::open(Arc::new(d.clone()), cfg(), Some(&meta)).unwrap(), "a"),
            retained
        );
    }

    #[test]
    fn a_poisoned_set_refuses_appends_and_snapshots() {
        let mut s = TopicSet::open(Arc::new(SimDisk::new()), cfg(), None).unwrap();
        fill(&mut s, "a", 0, 3);
        s.poison();
        let ev = Event::new("a", Priority::Low, "x");
        assert!(matches!(s.append("a", [(3, &ev)]), Err(StoreError::Poisoned(_))));
        assert!(matches!(s.begin_sync(false), Err(StoreError::Poisoned(_))));
    }
}
