//! Simulation only (`cfg(madsim)`): a fault layer under the peer transport. madsim's TCP never
//! loses, duplicates or reorders a byte and its writes never block, so without this layer Raft's
//! handling of lost, duplicated and reordered messages never runs through the real transport,
//! driver and storage.
//!
//! The simulator installs a [`LinkFaults`] table for a run (in a thread-local of the seed's
//! thread, like the bug zoo's planting; never process-global) and opens fault windows on
//! directed links `from → to`. The transport asks it at two points:
//!
//! * when a frame from an authenticated peer has been read ([`fate`]): deliver it, drop it,
//!   deliver it and a late copy (duplicate), hold it back so later frames overtake it (delay:
//!   reordering), or reset the connection (the frame and whatever the sender had in flight
//!   are lost; it redials);
//! * before a batch is written ([`stall`]): the write blocks for a while, as to a peer whose
//!   receive window is closed, so the write-timeout path runs.
//!
//! Per-frame choices come from the table's own RNG (split from the run's seed), so a seed
//! replays. In the normal build this module does not exist.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

use crate::raft::types::NodeId;
use crate::rt::{self, NodeRng};

/// How frames on one directed link fare while its window is open (percentages per frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkSpec {
    /// Frames lost.
    pub drop_pct: u32,
    /// Frames delivered and delivered again later (up to `max_delay_ms` after).
    pub dup_pct: u32,
    /// Frames held back up to `max_delay_ms`, so later ones overtake them.
    pub delay_pct: u32,
    /// The longest a delayed or duplicated frame is held back.
    pub max_delay_ms: u64,
    /// The shortest (0: any delay from 1 ms): a sender whose frames all arrive this late falls
    /// silent to its peers while its old frames are still on the way.
    pub min_delay_ms: u64,
    /// Frames on which the receiver resets the connection.
    pub reset_pct: u32,
}

/// What the layer did during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// Fault windows opened (lossy and stalled links).
    pub windows: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub resets: u64,
    /// Batches whose write was stalled.
    pub stalled_writes: u64,
    /// The transport's own reactions, counted across every incarnation of every member: batches
    /// not flushed within the write timeout…
    pub write_timeouts: u64,
    /// …and messages `send` dropped because the peer's queue was full.
    pub queue_full: u64,
}

impl LinkStats {
    /// Adds `o` to these counters.
    pub fn add(&mut self, o: &LinkStats) {
        self.windows += o.windows;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.delayed += o.delayed;
        self.resets += o.resets;
        self.stalled_writes += o.stalled_writes;
        self.write_timeouts += o.write_timeouts;
        self.queue_full += o.queue_full;
    }
}

#[derive(Default)]
struct Counters {
    windows: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    delayed: AtomicU64,
    resets: AtomicU64,
    stalled_writes: AtomicU64,
    write_timeouts: AtomicU64,
    queue_full: AtomicU64,
}

/// A link's open windows: lossy until one instant, stalled until another.
#[derive(Clone, Copy)]
struct Link {
    spec: LinkSpec,
    lossy_until: Option<rt::time::Instant>,
    stalled_until: Option<rt::time::Instant>,
}

/// The fault windows of a run, per directed link `(from, to)`.
pub struct LinkFaults {
    links: Mutex<BTreeMap<(NodeId, NodeId), Link>>,
    /// While open: what members but one send as leaders or candidates is lost
    /// ([`LinkFaults::mute_except`]).
    muted: Mutex<Option<Mute>>,
    rng: Mutex<NodeRng>,
    counters: Counters,
}

/// A mute window: what members other than `keep` send as leaders (until `leaders_until`) or as
/// candidates (from `candidates_from` to `candidates_until`) is lost.
#[derive(Debug, Clone, Copy)]
struct Mute {
    keep: NodeId,
    leaders_until: rt::time::Instant,
    candidates_from: rt::time::Instant,
    candidates_until: rt::time::Instant,
}

/// Who sends a message, as a mute window sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A leader: appends, heartbeats, snapshot chunks, transfers.
    Leader,
    /// A candidate: vote and pre-vote requests.
    Candidate,
    /// Anything else (answers, reads, catch-up records).
    Other,
}

/// What becomes of a frame read from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
    /// Deliver now, and a copy after the delay.
    Duplicate(Duration),
    /// Deliver after the delay.
    Delay(Duration),
    /// Close the connection (the frame is lost).
    Reset,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LinkFaults {
    /// An empty table (every link clean) drawing per-frame choices from `rng`.
    pub fn new(rng: NodeRng) -> Arc<LinkFaults> {
        Arc::new(LinkFaults {
            links: Mutex::default(),
            muted: Mutex::default(),
            rng: Mutex::new(rng),
            counters: Counters::default(),
        })
    }

    /// Frames from `from` to `to` fare as `spec` says for `window`.
    pub fn lossy(&self, from: NodeId, to: NodeId, spec: LinkSpec, window: Duration) {
        let until = rt::time::now() + window;
        let mut links = lock(&self.links);
        let link = links.entry((from, to)).or_insert(Link { spec, lossy_until: None, stalled_until: None });
        link.spec = spec;
        link.lossy_until = Some(until);
        self.counters.windows.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes from `from` to `to` block until `window` has passed.
    pub fn stall(&self, from: NodeId, to: NodeId, window: Duration) {
        let until = rt::time::now() + window;
        let mut links = lock(&self.links);
        let blank = Link { spec: LinkSpec::default(), lossy_until: None, stalled_until: None };
        links.entry((from, to)).or_insert(blank).stalled_until = Some(until);
        self.counters.windows.fetch_add(1, Ordering::Relaxed);
    }

    /// For `leaders`, what a leader sends (appends, heartbeats, snapshot chunks, transfers) is
    /// lost unless it comes from `keep`: a member elected meanwhile holds its term's first entry
    /// alone, as if it had crashed right after its election. Between `candidates.0` and
    /// `candidates.1` from now, vote requests from members but `keep` are lost too, so only
    /// `keep` can win an election (the fault `stale_leader_returns` uses both). Answers, reads
    /// and catch-up records pass.
    pub fn mute_except(&self, keep: NodeId, leaders: Duration, candidates: (Duration, Duration)) {
        let now = rt::time::now();
        *lock(&self.muted) = Some(Mute {
            keep,
            leaders_until: now + leaders,
            candidates_from: now + candidates.0,
            candidates_until: now + candidates.1,
        });
        self.counters.windows.fetch_add(1, Ordering::Relaxed);
    }

    /// Closes every window (the network heals).
    pub fn heal(&self) {
        lock(&self.links).clear();
        *lock(&self.muted) = None;
    }

    /// True if a message `from` sent as `sender` is lost to the mute window now.
    fn muted(&self, from: NodeId, sender: Sender) -> bool {
        let now = rt::time::now();
        let muted = lock(&self.muted).is_some_and(|m| {
            from != m.keep
                && match sender {
                    Sender::Leader => now < m.leaders_until,
                    Sender::Candidate => m.candidates_from <= now && now < m.candidates_until,
                    Sender::Other => false,
                }
        });
        if muted {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        muted
    }

    /// The counters so far.
    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            windows: g(&c.windows),
            dropped: g(&c.dropped),
            duplicated: g(&c.duplicated),
            delayed: g(&c.delayed),
            resets: g(&c.resets),
            stalled_writes: g(&c.stalled_writes),
            write_timeouts: g(&c.write_timeouts),
            queue_full: g(&c.queue_full),
        }
    }

    fn fate(&self, from: NodeId, to: NodeId) -> Fate {
        let now = rt::time::now();
        let spec = match lock(&self.links).get(&(from, to)) {
            Some(l) if l.lossy_until.is_some_and(|u| now < u) => l.spec,
            _ => return Fate::Deliver,
        };
        let mut rng = lock(&self.rng);
        let roll = rng.random_range(0..100u32);
        // With no minimum this is the draw it always was (`1..=max`), so seeds replay.
        let lo = spec.min_delay_ms.max(1);
        let delay = Duration::from_millis(rng.random_range(lo..=spec.max_delay_ms.max(lo)));
        let c = &self.counters;
        let mut edge = spec.reset_pct;
        if roll < edge {
            c.resets.fetch_add(1, Ordering::Relaxed);
            return Fate::Reset;
        }
        edge += spec.drop_pct;
        if roll < edge {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return Fate::Drop;
        }
        edge += spec.dup_pct;
        if roll < edge {
            c.duplicated.fetch_add(1, Ordering::Relaxed);
            return Fate::Duplicate(delay);
        }
        edge += spec.delay_pct;
        if roll < edge {
            c.delayed.fetch_add(1, Ordering::Relaxed);
            return Fate::Delay(delay);
        }
        Fate::Deliver
    }

    fn stalled_until(&self, from: NodeId, to: NodeId) -> Option<rt::time::Instant> {
        let now = rt::time::now();
        let until = lock(&self.links).get(&(from, to)).and_then(|l| l.stalled_until).filter(|u| now < *u)?;
        self.counters.stalled_writes.fetch_add(1, Ordering::Relaxed);
        Some(until)
    }
}

thread_local! {
    static ACTIVE: RefCell<Option<Arc<LinkFaults>>> = const { RefCell::new(None) };
}

/// Makes `faults` the table of runs on this thread until the guard drops.
pub fn install(faults: Arc<LinkFaults>) -> InstallGuard {
    let previous = ACTIVE.with(|a| a.replace(Some(faults)));
    InstallGuard { previous }
}

/// Restores the previous table when dropped.
pub struct InstallGuard {
    previous: Option<Arc<LinkFaults>>,
}

impl Drop for InstallGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ACTIVE.with(|a| *a.borrow_mut() = previous);
    }
}

fn active() -> Option<Arc<LinkFaults>> {
    ACTIVE.with(|a| a.borrow().clone())
}

/// What becomes of a frame `from → to` just read (always delivered when no table is installed).
pub fn fate(from: NodeId, to: NodeId) -> Fate {
    active().map_or(Fate::Deliver, |f| f.fate(from, to))
}

/// [`fate`] of a message `from → to` sent as `sender` (a mute window may drop it).
pub fn fate_of(from: NodeId, to: NodeId, sender: Sender) -> Fate {
    match active() {
        Some(f) if f.muted(from, sender) => Fate::Drop,
        Some(f) => f.fate(from, to),
        None => Fate::Deliver,
    }
}

/// Blocks a write `from → to` while that link is stalled.
pub async fn stall(from: NodeId, to: NodeId) {
    let until = active().and_then(|f| f.stalled_until(from, to));
    if let Some(until) = until {
        rt::time::sleep_until(until).await;
    }
}

/// The transport gave up on a write (timeout).
pub fn note_write_timeout() {
    if let Some(f) = active() {
        f.counters.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

/// The transport dropped a message because the peer's queue was full.
pub fn note_queue_full() {
    if let Some(f) = active() {
        f.counters.queue_full.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<LinkFaults> {
        LinkFaults::new(rt::rng_from_seed(7))
    }

    #[crate::rt::test]
    async fn a_clean_link_delivers_everything() {
        let t = table();
        let _g = install(t.clone());
        assert!((0..100).all(|_| fate(1, 2) == Fate::Deliver));
        t.lossy(1, 2, LinkSpec { drop_pct: 100, ..LinkSpec::default() }, Duration::from_secs(1));
        assert!((0..100).all(|_| fate(2, 1) == Fate::Deliver), "the other direction stays clean");
    }

    #[crate::rt::test]
    async fn a_lossy_window_drops_duplicates_delays_and_resets_then_closes() {
        let t = table();
        let _g = install(t.clone());
        let spec = LinkSpec {
            drop_pct: 20,
            dup_pct: 20,
            delay_pct: 20,
            max_delay_ms: 500,
            reset_pct: 5,
            ..LinkSpec::default()
        };
        t.lossy(1, 2, spec, Duration::from_secs(1));
        let fates: Vec<Fate> = (0..1000).map(|_| fate(1, 2)).collect();
        let s = t.stats();
        assert!(s.dropped > 100 && s.duplicated > 100 && s.delayed > 100 && s.resets > 10, "{s:?}");
        assert!(fates.iter().all(|f| match f {
            Fate::Delay(d) | Fate::Duplicate(d) => *d <= Duration::from_millis(500),
            _ => true,
        }));
        rt::time::sleep(Duration::from_secs(1)).await;
        assert!((0..100).all(|_| fate(1, 2) == Fate::Deliver), "the window closed");
    }

    #[crate::rt::test]
    async fn a_held_link_delivers_every_frame_no_sooner_than_its_minimum() {
        let t = table();
        let _g = install(t.clone());
        let spec =
            LinkSpec { delay_pct: 100, min_delay_ms: 1_500, max_delay_ms: 2_000, ..LinkSpec::default() };
        t.lossy(1, 2, spec, Duration::from_secs(1));
        assert!((0..200).all(|_| match fate(1, 2) {
            Fate::Delay(d) => (Duration::from_millis(1_500)..=Duration::from_millis(2_000)).contains(&d),
            _ => false,
        }));
    }

    #[crate::rt::test]
    async fn a_mute_window_drops_leader_traffic_of_all_but_one_member_then_closes() {
        let t = table();
        let _g = install(t.clone());
        let s = Duration::from_secs;
        t.mute_except(1, s(2), (s(1), s(3)));
        assert!(
            (0..50).all(|_| fate_of(2, 3, Sender::Leader) == Fate::Drop),
            "another member's appends are lost"
        );
        assert!((0..50).all(|_| fate_of(2, 3, Sender::Candidate) == Fate::Deliver), "votes pass at first");
        assert!((0..50).all(|_| fate_of(2, 3, Sender::Other) == Fate::Deliver), "answers pass");
        assert!(
            (0..50).all(|_| fate_of(1, 2, Sender::Leader) == Fate::Deliver),
            "the kept member's appends pass"
        );
        rt::time::sleep(s(1)).await;
        assert!((0..50).all(|_| fate_of(2, 3, Sender::Candidate) == Fate::Drop), "then votes are lost");
        assert!(
            (0..50).all(|_| fate_of(1, 3, Sender::Candidate) == Fate::Deliver),
            "except the kept member's"
        );
        rt::time::sleep(s(1)).await;
        assert!(
            (0..50).all(|_| fate_of(2, 3, Sender::Leader) == Fate::Deliver),
            "the leaders' window closed"
        );
        rt::time::sleep(s(1)).await;
        assert!((0..50).all(|_| fate_of(2, 3, Sender::Candidate) == Fate::Deliver), "the candidates' too");
        assert_eq!(t.stats().dropped, 100);
    }

    #[crate::rt::test]
    async fn a_stalled_link_blocks_writes_until_the_window_ends() {
        let t = table();
        let _g = install(t.clone());
        t.stall(1, 2, Duration::from_millis(2_500));
        let start = rt::time::now();
        stall(1, 2).await;
        assert!(rt::time::now() - start >= Duration::from_millis(2_500));
        let start = rt::time::now();
        stall(1, 2).await;
        stall(2, 1).await;
        assert_eq!(rt::time::now(), start, "an ended stall and the other direction do not block");
        assert_eq!(t.stats().stalled_writes, 1);
    }
}
