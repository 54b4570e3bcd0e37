//! `DedupWindow`: remembers where each idempotency key (producer id, sequence) was stored, so a
//! retried publish gets its original offset back instead of a second copy.
//!
//! Entries expire by *replicated* time — the timestamp the ordering node stamped into the batch —
//! never by a local clock, so every replica expires the same entries at the same point.
//!
//! The keys are held as *runs*: keys recorded one after the other by one producer with
//! consecutive sequences and offsets, one topic and one stamp (a pipelined producer's share of a
//! batch) are one run. Every operation works on runs — recording extends the newest run or starts
//! one, expiry drops whole runs from the oldest end, the caps trim a run at its front — so a
//! snapshot writes the window by walking a list ([`DedupWindow::runs`]) and a restore inserts
//! each run as it is ([`DedupWindow::restore_run`]), with no work per key. The runs are always
//! the longest possible (two neighbours that could be one run are merged), so they depend only on
//! which keys are remembered and in which order, never on how the window got there: every replica
//! writes the same bytes for the same applied entries, whether it applied them or restored a
//! snapshot (the same bytes the key-by-key window of format 5 wrote).
//!
//! Producers are found in a `BTreeMap`, not a hash map: producer ids come from clients, and a
//! fixed-key hasher would let a client choose ids that collide (HashDoS); a random key would make
//! the table's layout differ per process. With the few producers of a typical window the tree is
//! one node, and it is never worse than logarithmic whatever ids a client picks.

use std::collections::BTreeMap;
use std::sync::Arc;

#[cfg(test)]
mod tests;

/// Where a key was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupHit {
    pub topic: Arc<str>,
    pub offset: u64,
}

/// `len` keys of one producer, `first_seq + i` stored at `first_offset + i` of `topic`, all
/// stamped `stamped_ms` (see [`DedupWindow::runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupRun<'a> {
    pub producer: u64,
    pub first_seq: u64,
    pub first_offset: u64,
    pub stamped_ms: u64,
    /// At least 1, at most `u32::MAX`.
    pub len: u64,
    pub topic: &'a Arc<str>,
}

/// A run read from a snapshot that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("dedup run out of range")]
    OutOfRange,
    #[error("dedup entry out of order")]
    OutOfOrder,
    #[error("dedup run repeats a remembered key")]
    Repeated,
}

/// Limits of a [`DedupWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// How long a key is remembered, in milliseconds of replicated time.
    pub window_ms: u64,
    /// Keys remembered per producer; the lowest sequences are forgotten first.
    pub max_keys_per_producer: usize,
    /// Keys remembered in total; the oldest are forgotten first.
    pub max_keys: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig { window_ms: 10 * 60 * 1000, max_keys_per_producer: 100_000, max_keys: 2_000_000 }
    }
}

/// No slot: the end of the run list.
const NIL: usize = usize::MAX;

/// A run in its slot, linked to its neighbours in recording order.
#[derive(Debug, Clone)]
struct Run {
    producer: u64,
    first_seq: u64,
    first_offset: u64,
    stamped_ms: u64,
    /// At least 1 while the slot is in use.
    len: u32,
    topic: Arc<str>,
    prev: usize,
    next: usize,
}

impl Run {
    /// True if the key `(producer, seq)`, stored at `offset` of `topic` and stamped `stamped_ms`,
    /// would continue this run (room aside).
    fn continued_by(&self, producer: u64, seq: u64, offset: u64, stamped_ms: u64, topic: &Arc<str>) -> bool {
        let len = u64::from(self.len);
        self.producer == producer
            && self.stamped_ms == stamped_ms
            && self.first_seq.checked_add(len) == Some(seq)
            && self.first_offset.checked_add(len) == Some(offset)
            && (Arc::ptr_eq(&self.topic, topic) || self.topic == *topic)
    }

    /// The last key's sequence.
    fn last_seq(&self) -> u64 {
        self.first_seq + (u64::from(self.len) - 1)
    }
}

/// One producer's keys.
#[derive(Debug, Clone, Default)]
struct Producer {
    keys: u64,
    /// Its runs' slots by first sequence; the runs' sequence ranges never overlap.
    runs: BTreeMap<u64, usize>,
}

/// The table of recently seen idempotency keys.
#[derive(Debug, Clone)]
pub struct DedupWindow {
    config: DedupConfig,
    producers: BTreeMap<u64, Producer>,
    /// The runs, in slots reused through `free`: the memory follows the most runs ever
    /// remembered at once (at most `max_keys`), not the keys published.
    slots: Vec<Run>,
    free: Vec<usize>,
    oldest: usize,
    newest: usize,
    runs: usize,
    len: usize,
    last_stamp_ms: u64,
}

impl DedupWindow {
    /// An empty window.
    pub fn new(config: DedupConfig) -> Self {
        DedupWindow {
            config,
            producers: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            oldest: NIL,
            newest: NIL,
            runs: 0,
            len: 0,
            last_stamp_ms: 0,
        }
    }

    /// The run holding `(producer, seq)` and the key's index in it.
    fn find(&self, producer: u64, seq: u64) -> Option<(&Run, u64)> {
        let (_, &slot) = self.producers.get(&producer)?.runs.range(..=seq).next_back()?;
        let run = &self.slots[slot];
        let i = seq - run.first_seq;
        (i < u64::from(run.len)).then_some((run, i))
    }

    /// Where `(producer, sequence)` was stored, if it is still remembered.
    pub fn lookup(&self, producer: u64, sequence: u64) -> Option<DedupHit> {
        let (run, i) = self.find(producer, sequence)?;
        Some(DedupHit { topic: run.topic.clone(), offset: run.first_offset + i })
    }

    /// [`lookup`](Self::lookup) as it will answer once [`expire`](Self::expire)d at `now_ms`
    /// (stamps never go backwards, so expiry drops exactly the keys stamped more than the window
    /// before `now_ms`).
    pub fn lookup_at(&self, producer: u64, sequence: u64, now_ms: u64) -> Option<DedupHit> {
        let (run, i) = self.find(producer, sequence)?;
        (run.stamped_ms.saturating_add(self.config.window_ms) >= now_ms)
            .then(|| DedupHit { topic: run.topic.clone(), offset: run.first_offset + i })
    }

    /// Remembers a newly stored key. `stamped_ms` must not go backwards (the state machine clamps).
    pub fn record(&mut self, producer: u64, sequence: u64, topic: Arc<str>, offset: u64, stamped_ms: u64) {
        debug_assert!(stamped_ms >= self.last_stamp_ms, "replicated time went backwards");
        debug_assert!(
            self.find(producer, sequence).is_none(),
            "a key is recorded once; duplicates are looked up first"
        );
        self.last_stamp_ms = stamped_ms;
        self.append(producer, sequence, offset, stamped_ms, 1, topic);
        self.apply_caps(producer);
    }

    /// Adds a run read from a snapshot (see [`runs`](Self::runs)) as the newest keys, then this
    /// window's caps: a member with smaller caps than the writer's keeps each producer's highest
    /// sequences, then the newest keys. O(log runs), whatever the run's length. Refuses what a
    /// damaged snapshot could hold: an empty run or one past the sequence or offset space, a
    /// stamp before the last one, a key already remembered.
    pub fn restore_run(&mut self, run: &DedupRun<'_>) -> Result<(), RestoreError> {
        let n = run.len;
        if n == 0
            || n > u64::from(u32::MAX)
            || run.first_seq.checked_add(n - 1).is_none()
            || run.first_offset.checked_add(n - 1).is_none()
        {
            return Err(RestoreError::OutOfRange);
        }
        if run.stamped_ms < self.last_stamp_ms {
            return Err(RestoreError::OutOfOrder);
        }
        // The ranges are disjoint: only the last run starting at or below this one's last key
        // can overlap it.
        let last = run.first_seq + (n - 1);
        if let Some(p) = self.producers.get(&run.producer)
            && let Some((_, &slot)) = p.runs.range(..=last).next_back()
            && self.slots[slot].last_seq() >= run.first_seq
        {
            return Err(RestoreError::Repeated);
        }
        self.last_stamp_ms = run.stamped_ms;
        self.append(run.producer, run.first_seq, run.first_offset, run.stamped_ms, n, run.topic.clone());
        self.apply_caps(run.producer);
        Ok(())
    }

    /// Forgets keys stamped more than the window before `now_ms` (replicated time).
    pub fn expire(&mut self, now_ms: u64) {
        // Runs are in stamp order, so the first live one decides.
        while let Some(run) = self.slots.get(self.oldest)
            && run.stamped_ms.saturating_add(self.config.window_ms) < now_ms
        {
            let len = u64::from(run.len);
            self.trim_front(self.oldest, len);
        }
    }

    /// The remembered keys as runs, oldest first: keys recorded one after the other by one
    /// producer, with consecutive sequences and offsets, one topic and one stamp, make one run
    /// of at most `u32::MAX` keys. Restoring them in this order into an empty window rebuilds this
    /// one. A walk over the runs: no per-key work.
    pub fn runs(&self) -> impl Iterator<Item = DedupRun<'_>> + '_ {
        let mut at = self.oldest;
        std::iter::from_fn(move || {
            let r = self.slots.get(at)?;
            at = r.next;
            Some(DedupRun {
                producer: r.producer,
                first_seq: r.first_seq,
                first_offset: r.first_offset,
                stamped_ms: r.stamped_ms,
                len: u64::from(r.len),
                topic: &r.topic,
            })
        })
    }

    /// The configuration.
    pub fn config(&self) -> DedupConfig {
        self.config
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs currently remembered.
    pub fn run_count(&self) -> usize {
        self.runs
    }

    /// Adds `len` keys `seq..` stored at `offset..` as the newest, extending the newest run as
    /// far as they continue it (the caller has checked the keys are new and in range).
    fn append(
        &mut self,
        producer: u64,
        mut seq: u64,
        mut offset: u64,
        stamped_ms: u64,
        len: u64,
        topic: Arc<str>,
    ) {
        self.producers.entry(producer).or_default().keys += len;
        self.len += len as usize;
        let mut left = len;
        if let Some(run) = self.slots.get_mut(self.newest)
            && run.continued_by(producer, seq, offset, stamped_ms, &topic)
        {
            let take = left.min(u64::from(u32::MAX - run.len));
            run.len += take as u32;
            left -= take;
            if left > 0 {
                (seq, offset) = (seq + take, offset + take);
            }
        }
        while left > 0 {
            let take = left.min(u64::from(u32::MAX));
            let run = Run {
                producer,
                first_seq: seq,
                first_offset: offset,
                stamped_ms,
                len: take as u32,
                topic: topic.clone(),
                prev: NIL,
                next: NIL,
            };
            let slot = self.push_newest(run);
            self.producers.entry(producer).or_default().runs.insert(seq, slot);
            left -= take;
            if left > 0 {
                (seq, offset) = (seq + take, offset + take);
            }
        }
    }

    /// Forgets `producer`'s lowest sequences beyond its cap, then the oldest keys beyond the
    /// total cap.
    fn apply_caps(&mut self, producer: u64) {
        let keys = self.producers.get(&producer).map_or(0, |p| p.keys);
        let mut over = keys.saturating_sub(self.config.max_keys_per_producer as u64);
        while over > 0
            && let Some(&slot) = self.producers.get(&producer).and_then(|p| p.runs.values().next())
        {
            let k = over.min(u64::from(self.slots[slot].len));
            self.trim_front(slot, k);
            over -= k;
        }
        let mut over = self.len.saturating_sub(self.config.max_keys) as u64;
        while over > 0 && self.oldest != NIL {
            let k = over.min(u64::from(self.slots[self.oldest].len));
            self.trim_front(self.oldest, k);
            over -= k;
        }
    }

    /// Forgets the `k` lowest keys (at most its length) of the run in `slot`.
    fn trim_front(&mut self, slot: usize, k: u64) {
        let run = &mut self.slots[slot];
        debug_assert!(k >= 1 && k <= u64::from(run.len), "a trim takes 1..=len keys");
        let (producer, old_first) = (run.producer, run.first_seq);
        run.len -= k as u32;
        let emptied = run.len == 0;
        if !emptied {
            run.first_seq += k;
            run.first_offset += k;
        }
        let new_first = run.first_seq;
        self.len -= k as usize;
        let p = self.producers.get_mut(&producer).expect("a run's producer is listed");
        p.keys -= k;
        p.runs.remove(&old_first);
        if !emptied {
            p.runs.insert(new_first, slot);
            return;
        }
        if p.keys == 0 {
            self.producers.remove(&producer);
        }
        let (prev, next) = self.detach(slot);
        if prev != NIL && next != NIL {
            self.merge(prev, next);
        }
    }

    /// Merges run `next` into `prev`, its neighbour, if they now make one run (the run between
    /// them was forgotten): the runs stay the longest possible. No further merge can follow:
    /// what follows `next` did not continue it. Two runs longer than `u32::MAX` together stay
    /// two (the key-by-key window wrote the first full and the rest after it: a difference only
    /// with over 4 G keys of one producer, which that window could not hold in memory).
    fn merge(&mut self, prev: usize, next: usize) {
        let n = &self.slots[next];
        let (producer, first, len) = (n.producer, n.first_seq, n.len);
        let p = &self.slots[prev];
        if u64::from(p.len) + u64::from(len) > u64::from(u32::MAX)
            || !p.continued_by(producer, first, n.first_offset, n.stamped_ms, &n.topic)
        {
            return;
        }
        self.slots[prev].len += len;
        self.producers.get_mut(&producer).expect("a run's producer is listed").runs.remove(&first);
        self.detach(next);
    }

    /// Takes a slot for `run` and links it as the newest.
    fn push_newest(&mut self, mut run: Run) -> usize {
        (run.prev, run.next) = (self.newest, NIL);
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = run;
                s
            }
            None => {
                self.slots.push(run);
                self.slots.len() - 1
            }
        };
        match self.newest {
            NIL => self.oldest = slot,
            n => self.slots[n].next = slot,
        }
        self.newest = slot;
        self.runs += 1;
        slot
    }

    /// Unlinks the run in `slot` and frees the slot; returns its former neighbours.
    fn detach(&mut self, slot: usize) -> (usize, usize) {
        let (prev, next) = (self.slots[slot].prev, self.slots[slot].next);
        match prev {
            NIL => self.oldest = next,
            p => self.slots[p].next = next,
        }
        match next {
            NIL => self.newest = prev,
            n => self.slots[n].prev = prev,
        }
        self.slots[slot].len = 0;
        self.runs -= 1;
        if self.runs == 0 {
            self.slots.clear();
            self.free.clear();
        } else {
            self.free.push(slot);
        }
        (prev, next)
    }
}
