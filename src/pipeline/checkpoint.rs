//! Where processing has got to, so a new leader resumes there: per topic the next offset not yet
//! fully handled, and the idempotency keys whose transactional effects happened. The Raft node
//! implements [`Checkpoint`] by recording these as replicated entries; [`MemCheckpoint`] keeps them
//! in memory (one node, or a test sharing it between an "old" and a "new" leader).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::rt::{Disk, DiskError};
pub use crate::service::Checkpoint;

#[derive(Debug, Default)]
struct MemState {
    positions: BTreeMap<String, u64>,
    keys: BTreeSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
}

/// An in-memory checkpoint remembering at most `max_keys` idempotency keys (oldest forgotten).
#[derive(Debug)]
pub struct MemCheckpoint {
    max_keys: usize,
    state: Mutex<MemState>,
}

impl MemCheckpoint {
    pub fn new(max_keys: usize) -> Self {
        MemCheckpoint { max_keys: max_keys.max(1), state: Mutex::new(MemState::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Checkpoint for MemCheckpoint {
    fn positions(&self) -> BTreeMap<String, u64> {
        self.lock().positions.clone()
    }

    fn record_position(&self, topic: &str, next_offset: u64) {
        let mut st = self.lock();
        let p = st.positions.entry(topic.to_string()).or_insert(0);
        *p = (*p).max(next_offset);
    }

    fn is_handled(&self, key: (u64, u64)) -> bool {
        self.lock().keys.contains(&key)
    }

    fn mark_handled(&self, key: (u64, u64)) {
        let mut st = self.lock();
        if st.keys.insert(key) {
            st.order.push_back(key);
            while st.order.len() > self.max_keys {
                if let Some(old) = st.order.pop_front() {
                    st.keys.remove(&old);
                }
            }
        }
    }
}

/// A checkpoint kept on the [`Disk`] seam (`checkpoint.log`): records are appended as they
/// happen and fsynced on [`Checkpoint::flush`]; at open the log is read (a torn tail is ignored)
/// and compacted. What was not flushed before a crash is handled again (at-least-once).
#[derive(Debug)]
pub struct DiskCheckpoint {
    disk: Arc<dyn Disk>,
    mem: MemCheckpoint,
    /// Lines not yet appended.
    pending: Mutex<String>,
    /// A write failed and rewriting the log failed too: the next flush rewrites it again instead
    /// of appending (see [`Checkpoint::flush`]).
    rewrite: std::sync::atomic::AtomicBool,
}

/// The checkpoint log file.
pub const CHECKPOINT_FILE: &str = "checkpoint.log";

impl DiskCheckpoint {
    /// Opens (or creates) the checkpoint in `disk`, remembering at most `max_keys` keys.
    pub fn open(disk: Arc<dyn Disk>, max_keys: usize) -> Result<Self, DiskError> {
        let mem = MemCheckpoint::new(max_keys);
        let bytes = match disk.read(CHECKPOINT_FILE) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&bytes);
        // Only whole lines count: a torn last line is dropped. A NUL ends a line too: a hole of
        // zeros in the middle (what an older build's retried fsync left) would otherwise merge
        // into the line after it and drop that line with it.
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        let mut malformed = 0u64;
        for line in complete.split(['\n', '\0']).filter(|l| !l.is_empty()) {
            let mut f = line.split(' ');
            match (f.next(), f.next(), f.next(), f.next()) {
                (Some("P"), Some(next), Some(topic_hex), None) => {
                    if let (Ok(next), Some(topic)) = (next.parse(), unhex(topic_hex)) {
                        mem.record_position(&topic, next);
                    }
                }
                (Some("K"), Some(p), Some(q), None) => {
                    if let (Ok(p), Ok(q)) = (p.parse(), q.parse()) {
                        mem.mark_handled((p, q));
                    }
                }
                _ => malformed += 1,
            }
        }
        if malformed > 0 {
            tracing::error!(
                malformed,
                "checkpoint: skipped malformed records (their events are handled again)"
            );
        }
        let cp = DiskCheckpoint {
            disk,
            mem,
            pending: Mutex::new(String::new()),
            rewrite: std::sync::atomic::AtomicBool::new(false),
        };
        cp.compact()?;
        Ok(cp)
    }

    /// Rewrites the log with only the current state.
    fn compact(&self) -> Result<(), DiskError> {
        let mut out = String::new();
        for (t, n) in self.mem.positions() {
            out.push_str(&format!("P {n} {}\n", hex(&t)));
        }
        for (p, q) in self.mem.lock().order.iter() {
            out.push_str(&format!("K {p} {q}\n"));
        }
        self.disk.write_atomic(CHECKPOINT_FILE, out.as_bytes())
    }

    fn push(&self, line: String) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).push_str(&line);
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

impl Checkpoint for DiskCheckpoint {
    fn positions(&self) -> BTreeMap<String, u64> {
        self.mem.positions()
    }

    fn record_position(&self, topic: &str, next_offset: u64) {
        self.mem.record_position(topic, next_offset);
        self.push(format!("P {next_offset} {}\n", hex(topic)));
    }

    fn is_handled(&self, key: (u64, u64)) -> bool {
        self.mem.is_handled(key)
    }

    fn mark_handled(&self, key: (u64, u64)) {
        self.mem.mark_handled(key);
        self.push(format!("K {} {}\n", key.0, key.1));
    }

    /// Appends the pending lines and fsyncs them. A failed append or fsync is never retried on the
    /// same file (fsyncgate): Linux marks the pages of a failed fsync clean, a later fsync does not
    /// write them, and re-appending the lines after them left a hole mid-file at the next power
    /// failure, merging lines the open then skipped. Instead the whole state is rewritten from
    /// memory into a new file ([`DiskCheckpoint::compact`]: `write_atomic`, a fresh file fsynced,
    /// renamed over, directory fsynced), which relies on nothing of the failed pages. Every
    /// pending line's effect is in memory before the line is queued, so the rewrite covers it;
    /// until a rewrite succeeds each flush tries one again (each on a fresh file), and the log
    /// keeps only what was durable before, so a restart handles the rest again (at-least-once).
    fn flush(&self) {
        use std::sync::atomic::Ordering;
        let lines = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !self.rewrite.load(Ordering::Acquire) {
            if lines.is_empty() {
                return;
            }
            let r = self
                .disk
                .append(CHECKPOINT_FILE, lines.as_bytes())
                .and_then(|()| self.disk.sync(CHECKPOINT_FILE));
            let Err(e) = r else { return };
            tracing::warn!(%e, "checkpoint: flush failed; rewriting the log into a new file");
        }
        match self.compact() {
            Ok(()) => self.rewrite.store(false, Ordering::Release),
            Err(e) => {
                self.rewrite.store(true, Ordering::Release);
                tracing::error!(%e, "checkpoint: rewrite failed; retried (into a new file) at the next flush");
            }
        }
    }
}

/// Per-topic completion tracking: offsets may finish out of order (different classes), the
/// position only advances over a contiguous run of finished offsets.
///
/// The finished offsets held ahead of a position are bounded ([`Progress::with_max_ahead`]): one
/// offset that never finishes (a handler that hangs, an offset never submitted) would otherwise
/// make the set grow with every later event. Past the bound the position skips the oldest
/// unfinished offsets (logged with the count so far). Their events are not dropped:
/// each still settles where it is (processed, or in the DLQ) if it ever does; only the
/// checkpoint stops waiting for them, so a new leader after a failover would not handle them
/// again (at-least-once gives way for those offsets alone, and the log says which).
#[derive(Debug)]
pub(crate) struct Progress {
    topics: BTreeMap<String, TopicProgress>,
    max_ahead: usize,
    skipped: u64,
}

#[derive(Debug, Default)]
struct TopicProgress {
    next: u64,
    done: BTreeSet<u64>,
}

impl Progress {
    /// Starts from the checkpoint's positions.
    pub fn new(positions: BTreeMap<String, u64>) -> Self {
        Progress {
            topics: positions
                .into_iter()
                .map(|(t, next)| (t, TopicProgress { next, done: BTreeSet::new() }))
                .collect(),
            max_ahead: usize::MAX,
            skipped: 0,
        }
    }

    /// Holds at most `max_ahead` finished offsets ahead of a topic's position (at least 1).
    pub fn with_max_ahead(self, max_ahead: usize) -> Self {
        Progress { max_ahead: max_ahead.max(1), ..self }
    }

    /// Offsets the position skipped unfinished so far (each skip is also logged, with this total).
    #[cfg(test)]
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// False if `offset` of `topic` was already handled (below the position), so it is skipped.
    /// A topic the checkpoint does not know starts at offset 0, so batches committed in one order
    /// and submitted in another are all handled (a node enabling the pipeline on an existing log
    /// should seed the checkpoint, or the position waits for offsets never submitted).
    pub fn admit(&mut self, topic: &str, offset: u64) -> bool {
        // Looked up by `&str` first: the topic's name is copied once, not once per event.
        match self.topics.get(topic) {
            Some(t) => offset >= t.next && !t.done.contains(&offset),
            None => {
                self.topics.insert(topic.to_string(), TopicProgress::default());
                true // a topic new to the checkpoint starts at offset 0, nothing done
            }
        }
    }

    /// Marks `offset` finished; returns the new position if it advanced.
    pub fn finish(&mut self, topic: &str, offset: u64) -> Option<u64> {
        let t = self.topics.get_mut(topic)?;
        if offset < t.next {
            return None;
        }
        t.done.insert(offset);
        let before = t.next;
        if t.done.len() > self.max_ahead
            && let Some(&first) = t.done.first()
        {
            self.skipped += first - t.next;
            tracing::warn!(
                topic,
                from = t.next,
                to = first,
                finished_ahead = t.done.len(),
                skipped_total = self.skipped,
                "pipeline position skips offsets that never finished"
            );
            t.next = first;
        }
        while t.done.remove(&t.next) {
            t.next += 1;
        }
        (t.next != before).then_some(t.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_advances_over_contiguous_finished_offsets_only() {
        let mut p = Progress::new(BTreeMap::new());
        for o in 0..4 {
            assert!(p.admit("t", o));
        }
        assert_eq!(p.finish("t", 1), None);
        assert_eq!(p.finish("t", 3), None);
        assert_eq!(p.finish("t", 0), Some(2));
        assert_eq!(p.finish("t", 2), Some(4));
        assert!(!p.admit("t", 2), "already handled");
    }

    #[test]
    fn an_offset_that_never_finishes_is_skipped_once_too_many_are_held_ahead_of_it() {
        let mut p = Progress::new(BTreeMap::new()).with_max_ahead(3);
        for o in 0..10 {
            assert!(p.admit("t", o));
        }
        // Offset 0 hangs; 1..=3 finish and are held.
        for o in 1..=3 {
            assert_eq!(p.finish("t", o), None);
        }
        // The fourth held one is past the bound: the position skips 0 and runs over 1..=4.
        assert_eq!(p.finish("t", 4), Some(5));
        assert_eq!(p.skipped(), 1);
        assert!(p.topics["t"].done.is_empty());
        // The hung offset settling late changes nothing; later gaps are held again.
        assert_eq!(p.finish("t", 0), None);
        assert_eq!(p.finish("t", 7), None);
        assert_eq!(p.finish("t", 5), Some(6));
        assert!(p.topics["t"].done.len() <= 3);
    }

    #[test]
    fn a_new_topic_starts_at_zero_whatever_arrives_first() {
        let mut p = Progress::new(BTreeMap::new());
        // A later batch's commit completes first.
        assert!(p.admit("t", 2));
        assert_eq!(p.finish("t", 2), None);
        assert!(p.admit("t", 0));
        assert!(p.admit("t", 1));
        assert_eq!(p.finish("t", 0), Some(1));
        assert_eq!(p.finish("t", 1), Some(3));
    }

    #[test]
    fn resumes_from_checkpoint_positions() {
        let mut p = Progress::new([("t".to_string(), 10)].into_iter().collect());
        assert!(!p.admit("t", 9));
        assert!(p.admit("t", 10));
        assert_eq!(p.finish("t", 10), Some(11));
    }

    #[test]
    fn disk_checkpoint_keeps_what_was_flushed_across_a_power_failure() {
        use crate::rt::SimDisk;
        let disk = SimDisk::new();
        let c = DiskCheckpoint::open(Arc::new(disk.clone()), 100).unwrap();
        c.record_position("sensor/a b", 7);
        c.mark_handled((3, 4));
        c.flush();
        c.record_position("sensor/a b", 9);
        c.mark_handled((3, 5));
        disk.power_fail(None);
        let again = DiskCheckpoint::open(Arc::new(disk.clone()), 100).unwrap();
        assert_eq!(again.positions()["sensor/a b"], 7, "the unflushed position is not durable");
        assert!(again.is_handled((3, 4)));
        assert!(!again.is_handled((3, 5)));
        // A torn last line is ignored.
        disk.append(CHECKPOINT_FILE, b"K 9 ").unwrap();
        let torn = DiskCheckpoint::open(Arc::new(disk), 100).unwrap();
        assert_eq!(torn.positions()["sensor/a b"], 7);
    }

    /// fsyncgate: re-appending the lines of a failed flush after the bytes the failed fsync dropped
    /// left a hole of zeros in the middle of the log, and the open skipped the line it merged into.
    #[test]
    fn a_failed_flush_is_not_retried_into_a_hole() {
        use crate::rt::{DiskFault, SimDisk};
        let disk = SimDisk::new();
        let c = DiskCheckpoint::open(Arc::new(disk.clone()), 100).unwrap();
        c.record_position("t", 1);
        c.mark_handled((1, 1));
        c.flush();
        disk.inject(DiskFault::FailSyncs(1));
        c.mark_handled((1, 2));
        c.record_position("t", 2);
        c.flush();
        c.mark_handled((1, 3));
        c.record_position("t", 3);
        c.flush();
        disk.power_fail(None);
        let again = DiskCheckpoint::open(Arc::new(disk.clone()), 100).unwrap();
        assert_eq!(again.positions()["t"], 3);
        for k in 1..=3 {
            assert!(again.is_handled((1, k)), "key {k} was flushed by the last flush");
        }
        // A write failing outright is not retried on the same file either.
        disk.inject(DiskFault::FailWrites(1));
        again.mark_handled((1, 4));
        again.flush();
        again.mark_handled((1, 5));
        again.flush();
        disk.power_fail(None);
        let third = DiskCheckpoint::open(Arc::new(disk.clone()), 100).unwrap();
        assert!((1..=5).all(|k| third.is_handled((1, k))));
        // The append's fsync and the rewrite's both fail: the next flush rewrites, never appends.
        disk.inject(DiskFault::FailSyncs(2));
        third.mark_handled((1, 6));
        third.flush();
        third.mark_handled((1, 7));
        third.flush();
        disk.power_fail(None);
        let fourth = DiskCheckpoint::open(Arc::new(disk), 100).unwrap();
        assert!((1..=7).all(|k| fourth.is_handled((1, k))));
    }

    #[test]
    fn a_hole_of_zeros_mid_file_drops_no_later_line() {
        use crate::rt::SimDisk;
        let disk = SimDisk::new();
        disk.append(CHECKPOINT_FILE, b"K 1 1\n\0\0\0\0\0\0K 1 2\nP 4 74\n").unwrap();
        let c = DiskCheckpoint::open(Arc::new(disk), 100).unwrap();
        assert!(c.is_handled((1, 1)) && c.is_handled((1, 2)));
        assert_eq!(c.positions()["t"], 4);
    }

    #[test]
    fn mem_checkpoint_forgets_oldest_keys_and_never_moves_back() {
        let c = MemCheckpoint::new(2);
        c.mark_handled((1, 1));
        c.mark_handled((1, 2));
        c.mark_handled((1, 3));
        assert!(!c.is_handled((1, 1)));
        assert!(c.is_handled((1, 3)));
        c.record_position("t", 5);
        c.record_position("t", 3);
        assert_eq!(c.positions()["t"], 5);
    }
}
