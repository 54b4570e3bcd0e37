//! Targeted faults for the zoo's rare catches (issue 15): interleavings that random plans line
//! up in about 1 % of seeds, brought about on purpose in some seeds (drawn from a stream of their
//! own, so every other draw of a seed stays what it was).
//!
//! * `held_leader_frames` (a deposed leader's append in a newer term): whoever leads keeps
//!   appending what its clients send, but every frame it sends its peers arrives 1.5–4.5 s late,
//!   and frames among the others are reordered meanwhile (commit news comes late).
//!   The others hear nothing, elect a new leader and commit its noop; then the old leader's
//!   appends arrive, of an older term, with entries where the new term's stand. A follower must
//!   refuse them (§5.1); one that takes them cuts committed entries
//!   (`stale-term-append-accepted`).
//! * `stale_leader_reads` (a ReadIndex without its quorum round): whoever leads is cut from its
//!   peers and frozen long enough that its producers fail over to the new leader, which acks
//!   their writes; once it resumes (still cut, still believing it leads) a client reads every
//!   topic linearizably from it alone. A leader must confirm its leadership with a quorum
//!   before answering; one that does not answers from its stale commit index
//!   (`read-index-without-quorum`), and `linearizable_reads` sees an acked write missing.
//! * `snapshot_copies_late` (a snapshot behind the commit index): a follower is power-failed
//!   long enough to be sent a snapshot when it is back, and every frame sent to it arrives twice,
//!   the copy 1–4 s late, and snapshots are taken every 8–16 entries. A copy that arrives once
//!   the follower has committed past the snapshot and compacted its log beyond it must be
//!   answered, not installed (`snapshot-moves-commit-back` trips the log's assertion that a
//!   restored snapshot is ahead of the commit index; a copy of the snapshot it last installed
//!   is harmless, the log still matches it).

use super::*;
use crate::history::ReadRecord;
use crate::scenarios::cluster::{PAGE, TOPICS};
use eventstreamcore::event::{Event, Priority};
use rand::Rng;

impl Plan {
    /// Draws the targeted faults (`held_leader_frames` and `snapshot_copies_late` in half the
    /// seeds whose fault window is long enough, `stale_leader_reads` in a quarter) from `rng`, a
    /// stream of its own, and adds them in time order.
    pub(crate) fn draw_rare_catches(&mut self, rng: &mut NodeRng) {
        let window = self.fault_window_ms;
        if window <= 8_000 {
            return;
        }
        if rng.random_bool(0.5) {
            let at_ms = rng.random_range(1_000..window - 4_000);
            let fault = Fault::HeldLeaderFrames {
                ms: rng.random_range(1_200..2_000),
                hold_ms: rng.random_range(1_500..3_000),
            };
            self.faults.push(Step { at_ms, fault });
        }
        if rng.random_bool(0.25) {
            let at_ms = rng.random_range(1_000..window - 7_000);
            let pause_ms = rng.random_range(3_200..4_500);
            let fault = Fault::StaleLeaderReads { ms: pause_ms + rng.random_range(1_000..2_000), pause_ms };
            self.faults.push(Step { at_ms, fault });
        }
        if rng.random_bool(0.5) {
            let at_ms = rng.random_range(1_000..window - 5_000);
            let fault = Fault::SnapshotCopiesLate {
                down_ms: rng.random_range(800..3_000),
                ms: rng.random_range(1_500..4_000),
                max_delay_ms: rng.random_range(1_000..=4_000),
            };
            self.faults.push(Step { at_ms, fault });
            // Snapshots often enough that the leader compacts past what the follower has while it
            // is down (a handful of producers commit a few hundred entries a run).
            self.snapshot_entries = self.snapshot_entries.min(rng.random_range(8..=16));
        }
        self.faults.sort_by_key(|f| f.at_ms);
    }
}

impl FaultInjector<'_> {
    /// For `ms`, every frame whoever leads sends its peers arrives `hold_ms` to `hold_ms + 1500`
    /// late, and frames among the others are reordered until then (see the module doc).
    pub(super) fn held_leader_frames(&mut self, ms: u64, hold_ms: u64) {
        let Some(l) = current_leader(self.slots) else {
            self.history.count("held_leader_frames_without_leader");
            return;
        };
        let left = self.fault_end.saturating_duration_since(rt::time::now());
        let window = Duration::from_millis(ms).min(left);
        let spread = 1_500;
        let held = LinkSpec {
            delay_pct: 100,
            min_delay_ms: hold_ms,
            max_delay_ms: hold_ms + spread,
            ..LinkSpec::default()
        };
        let leader = l as u64 + 1;
        let others: Vec<u64> = (1..=self.ids.len() as u64).filter(|&o| o != leader).collect();
        for &other in &others {
            self.links.lossy(leader, other, held, window);
        }
        // A follower harmed by a stale append is one that holds the new leader's entries but has
        // not learned yet that they are committed: frames among the others are reordered and
        // late (up to 400 ms) until the held ones have arrived, so commit news comes late.
        let reorder = LinkSpec { delay_pct: 60, max_delay_ms: 400, ..LinkSpec::default() };
        let until = (window + Duration::from_millis(hold_ms + spread)).min(left);
        for &a in &others {
            for &b in others.iter().filter(|&&b| b != a) {
                self.links.lossy(a, b, reorder, until);
            }
        }
        // Something to append meanwhile (its producers may be between batches): one client
        // publishes to it alone while it still leads.
        let at = rt::time::now().saturating_duration_since(self.t0).as_millis() as u64;
        let publisher = HeldPublisher::new(self.addrs[l], at, self.history.clone(), rt::time::now() + window);
        let ip = Ipv4Addr::new(10, 6, (at >> 8) as u8, at as u8);
        let node = self.handle.create_node().name(format!("held-publisher-{at}")).ip(IpAddr::V4(ip)).build();
        node.spawn(publisher.run());
        tracing::info!(member = %format!("n{leader}"), "fault injected: the leader's frames are held back");
        let label = format!("leader's frames {:.1} s late", hold_ms as f64 / 1000.0);
        self.log.span(l, window.as_millis() as u64, SpanKind::Isolated, label);
        self.history.count("held_leader_frames");
    }

    /// Cuts and freezes whoever leads (as `cut_leader_peers`) and, once it resumes, reads every
    /// topic linearizably from it alone until the cut ends.
    pub(super) fn stale_leader_reads(&mut self, ms: u64, pause_ms: u64) {
        let Some(l) = current_leader(self.slots) else {
            self.history.count("stale_leader_reads_without_leader");
            return;
        };
        self.cut_leader_peers(ms, pause_ms);
        let now = rt::time::now();
        let reader = StaleReader {
            addr: self.addrs[l],
            name: format!("stale-reader-{}", now.saturating_duration_since(self.t0).as_millis()),
            history: self.history.clone(),
            from: now + Duration::from_millis(pause_ms),
            until: (now + Duration::from_millis(ms)).min(self.fault_end),
        };
        // A node of its own per reader: its address says when it started (one per millisecond).
        let at = now.saturating_duration_since(self.t0).as_millis() as u64;
        let ip = Ipv4Addr::new(10, 5, (at >> 8) as u8, at as u8);
        let node = self.handle.create_node().name(reader.name.clone()).ip(IpAddr::V4(ip)).build();
        node.spawn(reader.run());
        self.history.count("stale_leader_reads");
    }

    /// Power-fails a follower for `down_ms`; every frame sent to it until `ms` after it is back
    /// arrives twice, the copy up to `max_delay_ms` late.
    pub(super) fn snapshot_copies_late(&mut self, down_ms: u64, ms: u64, max_delay_ms: u64) {
        let now = rt::time::now();
        let leader = current_leader(self.slots);
        let Some(f) = (0..self.ids.len()).find(|&i| Some(i) != leader && now >= self.down_until[i]) else {
            self.history.count("snapshot_copies_late_without_follower");
            return;
        };
        self.crash_member(f, down_ms, "power fail; frames to it then arrive twice, late");
        let left = self.fault_end.saturating_duration_since(now);
        let window = Duration::from_millis(down_ms + ms).min(left);
        let copies = LinkSpec { dup_pct: 100, max_delay_ms, ..LinkSpec::default() };
        let follower = f as u64 + 1;
        for other in (1..=self.ids.len() as u64).filter(|&o| o != follower) {
            self.links.lossy(other, follower, copies, window);
        }
        self.history.count("snapshot_copies_late");
    }
}

/// Producer ids of the publishers `held_leader_frames` starts (plus the fault's time in ms), far
/// above the plan's producers.
const HELD_PUBLISHER_IDS: u64 = 1 << 32;

/// A client that publishes a batch every 50 ms to one member until `until`, recording what it
/// published (and what was acked, if anything) like a producer, but never retrying a batch.
struct HeldPublisher {
    addr: SocketAddr,
    id: u64,
    history: History,
    until: rt::time::Instant,
}

impl HeldPublisher {
    /// The publisher of the fault started `at_ms` into the run, marked exempt from
    /// `per_producer_order`: it gives a frame up after 200 ms and sends the next sequence on a
    /// new connection without retrying, so frames it gave up may still wait at the member (for
    /// pipeline room while commits are held) and be stored after later ones, as a pipelining
    /// producer's may (seed 734184422384: seq 7 stored after seq 16).
    fn new(addr: SocketAddr, at_ms: u64, history: History, until: rt::time::Instant) -> Self {
        let id = HELD_PUBLISHER_IDS + at_ms;
        history.unordered(id);
        HeldPublisher { addr, id, history, until }
    }

    async fn run(self) {
        let name = format!("held-publisher-{}", self.id - HELD_PUBLISHER_IDS);
        let mut seq = 1;
        while rt::time::now() < self.until {
            let topic = TOPICS[seq as usize % TOPICS.len()];
            let mut e = Event::new(topic, Priority::Medium, format!("{}:{seq}", self.id).into_bytes());
            e.producer_id = self.id;
            e.sequence = seq;
            seq += 1;
            self.history.published(&e);
            let mut client = ClusterClient::new(vec![self.addr], name.clone(), "");
            client.max_attempts = 1;
            client.timeout = Duration::from_millis(200);
            let events = vec![e];
            if let Ok(Ok(items)) =
                rt::time::timeout(Duration::from_millis(200), client.publish(events.clone())).await
            {
                self.history.record_acks(&name, &events, &items);
            }
            rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A client that reads every topic linearizably from one member between `from` and `until`,
/// recording each answer for `linearizable_reads`.
struct StaleReader {
    addr: SocketAddr,
    name: String,
    history: History,
    from: rt::time::Instant,
    until: rt::time::Instant,
}

impl StaleReader {
    async fn run(self) {
        rt::time::sleep_until(self.from).await;
        let mut offsets = [0u64; TOPICS.len()];
        let mut turn = 0;
        while rt::time::now() < self.until {
            let t = turn % TOPICS.len();
            turn += 1;
            let (topic, offset) = (TOPICS[t], offsets[t]);
            let mut client = ClusterClient::new(vec![self.addr], self.name.clone(), "");
            client.max_attempts = 1;
            client.timeout = Duration::from_millis(300);
            let started = self.history.read_started();
            let read = client.read(topic, offset, PAGE, true, 0);
            match rt::time::timeout(Duration::from_millis(300), read).await {
                Ok(Ok(page)) => {
                    let read = (topic, offset, PAGE);
                    self.history.read_done(ReadRecord::of_page(&self.name, read, true, started, &page))
                }
                Ok(Err(e)) if e.first_available().is_some_and(|f| f > offset) => {
                    offsets[t] = e.first_available().unwrap_or(offset);
                }
                _ => self.history.count("stale_reader_no_answer"),
            }
            rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::{DEFAULT_MAX_DRIFT_PPM, Shape};
    use super::*;
    use rand::SeedableRng;

    /// Seed 734184422384: the held publisher gives frames up without retrying them, so a frame
    /// it gave up may be stored after later ones; `per_producer_order` must not judge it.
    #[tokio::test]
    async fn the_held_publisher_is_exempt_from_per_producer_order() {
        let history = History::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], 7070));
        let p = HeldPublisher::new(addr, 6968, history.clone(), rt::time::now());
        assert_eq!(p.id, HELD_PUBLISHER_IDS + 6968);
        assert!(history.snapshot().unordered_producers.contains(&p.id));
    }

    #[test]
    fn some_plans_draw_each_targeted_fault_inside_the_window_and_valid() {
        let mut seen = [0; 3];
        for seed in 0..200 {
            let mut plan =
                Plan::generate(&mut NodeRng::seed_from_u64(seed), Shape::MIXED, DEFAULT_MAX_DRIFT_PPM);
            let before = plan.faults.len();
            plan.draw_rare_catches(&mut NodeRng::seed_from_u64(seed ^ 0x7261_7265));
            for s in &plan.faults {
                match s.fault {
                    Fault::HeldLeaderFrames { .. } => seen[0] += 1,
                    Fault::StaleLeaderReads { ms, .. } => {
                        assert!(
                            s.at_ms + ms < plan.fault_window_ms,
                            "seed {seed}: the reads end in the window"
                        );
                        seen[1] += 1;
                    }
                    Fault::SnapshotCopiesLate { .. } => seen[2] += 1,
                    _ => {}
                }
            }
            assert!(plan.faults.len() - before <= 3);
            assert_eq!(plan.validate(), Ok(()), "seed {seed}");
            let text = toml::to_string(&plan).expect("a plan serializes");
            assert_eq!(toml::from_str::<Plan>(&text).expect("and reads back"), plan);
        }
        let (half, quarter) = (70..=130, 25..=80);
        assert!(
            half.contains(&seen[0]) && quarter.contains(&seen[1]) && half.contains(&seen[2]),
            "drawn in half, a quarter and half of 200 plans: {seen:?}"
        );
    }
}
