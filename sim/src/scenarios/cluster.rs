//! Scenarios `cluster`, `cluster3` and `cluster5`: a 3- or 5-node Raft cluster of real
//! `ClusterNode` + `IngestServer` members on simulated TCP and `SimDisk`s, under a seeded fault
//! plan — partitions (isolate a member or whoever leads, random halves, a bridge member, one-way
//! links), packet loss and latency spikes, crashes with `power_fail()` (unsynced writes lost, the
//! last one possibly torn) and restarts, power failures inside a disk operation (`disk_crash`), disk write/fsync failures and full disks, pauses, clock
//! drift and steps, membership changes (remove, wipe, add back), storms of hostile TCP
//! clients, and in some seeds a peer-port storm (garbage, wrong secrets, replayed handshakes, an
//! insider's impossible terms and indexes; [`crate::peer_storm`]) — while producers publish with idempotency keys through `ClusterClient` (redirects,
//! failover, retries with the same keys) and consumers long-poll topics from any member.
//!
//! Every member reports each driver round to a [`RaftWatch`] (Raft's safety properties at every
//! step). After the faults stop the cluster must elect a leader and commit a new write within a
//! bound (checker `liveness`), and the replicas must converge. Then, from the history: the run
//! carried a minimum workload; every acked event is in every replica's log exactly once at its
//! acked offset, stored as published (payload, priority, headers, key), acked as new at most once;
//! nothing unpublished is stored, per-producer order holds, offsets are dense, replicas are
//! identical in their logs and their whole state (snapshot encoding), every event a consumer saw
//! is in the final log at that offset with the payload it read, and linearizable reads (every
//! generated plan has a reader) saw every write acked and every write an earlier linearizable
//! read saw before they began, with the page matching the end offset they report.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstreamcore::client::{ClientError, ClusterClient};
use eventstreamcore::config::{
    ClientCredential, ClusterConfig, Config, IngestConfig, MemberConfig, Role as ClientRole,
};
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::node::{CatchUpCounters, ClusterNode};
use eventstreamcore::pipeline::PipelineConfig;
use eventstreamcore::rt::{self, Disk, DiskError, NodeClock, NodeRng, SimDisk};
use eventstreamcore::server::{Disks, Seams, Server, ServerError};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use super::{Mutant, Options, RunReport};
use crate::history::{History, ReadRecord};
use crate::peer_storm::{PeerStormConfig, PeerStormStats, PeerTarget, spawn_peer_storm};
use crate::raft_watch::RaftWatch;
use crate::storm::{StormConfig, StormStats};

mod faults;
mod judge;
mod latency;
mod legacy;

use faults::{FaultInjector, FaultLog, InjectorParts};
pub use judge::describe_links;
use judge::{
    VerdictTimes, await_convergence, await_tasks, check_liveness, disk_tally, failure_marks, finish_timeline,
    judge, run_digest, summarize,
};

const TOPICS: &[&str] = &["orders", "payment", "sensor/temperature"];
const CLIENT_PORT: u16 = 7070;
const RAFT_PORT: u16 = 7170;
/// The ChaCha stream the peer storm draws from (the run's other draws use stream 0).
const PEER_STORM_STREAM: u64 = 0x7065_6572;
/// The ChaCha stream the fault layers of #15 (crashes inside disk operations, …) draw from, so
/// the faults a seed drew before them stay what they were.
const FAULT_LAYERS_STREAM: u64 = 0x6c61_7972;
/// The ChaCha stream bit rot at rest is drawn from (so every other draw stays what it was).
const BIT_ROT_STREAM: u64 = 0x726f_7421;
/// The ChaCha stream a small per-peer send queue is drawn from (issue 15: the transport's
/// full-queue path), so every other draw of a seed stays what it was.
const PEER_QUEUE_STREAM: u64 = 0x7071_7565;
/// The ChaCha stream the members' disk latencies are drawn from.
const DISK_LATENCY_STREAM: u64 = 0x6c61_7465;
/// The ChaCha stream the legacy-protocol clients are drawn from.
const LEGACY_STREAM: u64 = 0x6c65_6761;
/// The stream lossy and stalled peer links are drawn from (plans without them stay as they were).
const LOSSY_LINKS_STREAM: u64 = 0x6c6f_7373;
/// The stream short dedup windows (and the clock steps against them) are drawn from.
const SHORT_DEDUP_STREAM: u64 = 0x6464_7570;
/// The stream the leader-change faults for the zoo's consensus bugs are drawn from.
const CONSENSUS_FAULTS_STREAM: u64 = 0x636f_6e73;
/// The random stream retention limits are drawn from (so plans without them stay as they were).
const RETENTION_STREAM: u64 = 0x7265_7465;
/// The random stream small topic files (segment size, catch-up chunk) are drawn from.
const TOPIC_FILES_STREAM: u64 = 0x7365_676d;
/// The stream the targeted faults for the zoo's rare catches are drawn from (`faults/rare.rs`).
const RARE_CATCHES_STREAM: u64 = 0x7261_7265;
/// Faults happen within this window after the start; then the network heals.
const FAULT_WINDOW: Duration = Duration::from_secs(12);
/// After healing, a leader must commit a new write within this long.
const LIVENESS_BOUND: Duration = Duration::from_secs(20);
/// Producers stop retrying at this point (their last batch then stays unacked).
const PRODUCER_DEADLINE: Duration = Duration::from_secs(40);
/// Clock drift drawn for members, at most ± this many parts per million (5 %) unless the run's
/// options say otherwise.
pub const DEFAULT_MAX_DRIFT_PPM: i64 = 50_000;

/// One scheduled fault. Serialized (in seed files and shrunk plans) as an inline table tagged by
/// `kind`, e.g. `{ kind = "crash", node = 1, down_ms = 1500 }`; nodes are 0-based member indexes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Cut one member off from everyone (both directions).
    Isolate { node: usize },
    /// Split members into two sides that cannot talk to each other.
    Split { side: Vec<usize> },
    /// Drop traffic from `from` to `to` only.
    OneWay { from: usize, to: usize },
    /// Undo every network fault.
    Heal,
    /// Kill a member, lose its unsynced writes (tearing the last one), restart it after a pause.
    Crash { node: usize, down_ms: u64 },
    /// Power-fail several members at the same moment (a majority, or all of them: a rack or a
    /// data-centre power cut); each restarts after its own pause.
    CrashMany { nodes: Vec<usize>, down_ms: u64 },
    /// Freeze a member (a long GC pause or VM stall), then resume it.
    Pause { node: usize, ms: u64 },
    /// Step a member's wall clock.
    StepClock { node: usize, ms: i64 },
    /// Cut off whichever member leads at that moment (found at run time; the timeline shows who).
    IsolateLeader,
    /// Two sides that cannot talk to each other, and a `bridge` member that talks to both.
    Bridge { bridge: usize, side: Vec<usize> },
    /// Lose `pct` % of packets everywhere for `ms` (simulated TCP retransmits: stalls, not loss).
    PacketLoss { pct: u32, ms: u64 },
    /// Every link slows to a latency between `min_ms` and `max_ms` for `ms` (a latency spike).
    Slow { min_ms: u64, max_ms: u64, ms: u64 },
    /// A member's disk starts failing — writes, fsyncs, or it is full — so its storage fails and
    /// it stops replicating; after `down_ms` it is power-cycled with the fault cleared.
    Disk { node: usize, error: DiskErrorKind, down_ms: u64 },
    /// Membership change under faults: remove a member (through the leader), wipe its disk, and
    /// after `down_ms` add it back as a new, empty learner that catches up and becomes a voter.
    Rejoin { node: usize, down_ms: u64 },
    /// Power fails inside a disk operation: the member's WAL disk lets `after_ops` more
    /// operations through, then the power goes in the middle of the next one (an interrupted
    /// append or write may land in part, torn); the member dies there and restarts after
    /// `down_ms`. Disarmed at the end of the fault window if it never struck.
    DiskCrash { node: usize, after_ops: u64, down_ms: u64 },
    /// Bit rot at rest: one bit flips in a synced file of the member's log disk (a WAL segment,
    /// the snapshot, the hard state, a topic segment); an operator reboots the member
    /// `restart_ms` later. Recovery must detect it (CRC) and refuse to start; the simulator then
    /// removes, wipes and re-adds the member (see TESTBED.md). One member at a time. `files`:
    /// only files whose name starts with it (e.g. `"topic-"`; drawn plans leave it out: any).
    BitRot {
        node: usize,
        restart_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        files: Option<String>,
    },
    /// Lossy peer links (the fault layer under the peer transport): for `ms`, each Raft frame
    /// from a member of `from` to another member of `to` is lost (`drop_pct` %), delivered twice
    /// with the copy up to `max_delay_ms` late (`dup_pct`), held back up to `max_delay_ms` so
    /// later frames overtake it (`delay_pct`), or resets its connection (`reset_pct`).
    LossyLinks {
        from: Vec<usize>,
        to: Vec<usize>,
        ms: u64,
        drop_pct: u32,
        dup_pct: u32,
        delay_pct: u32,
        max_delay_ms: u64,
        reset_pct: u32,
    },
    /// Writes from `from` to `to` block for `ms` (a peer that stopped reading): beyond the
    /// transport's write timeout (2 s) the batch is lost and the connection redialled.
    StallLink { from: usize, to: usize, ms: u64 },
    /// Whoever leads at that moment loses every peer link, both ways, for `ms` (its clients
    /// still reach it: a partition of the peer network only), and freezes for the first
    /// `pause_ms` of it (a long GC pause), so the others elect a new leader and commit while it
    /// still believes it leads.
    CutLeaderPeers { ms: u64, pause_ms: u64 },
    /// Figure 8's sequence: whoever leads is cut from its peers for `cut_ms` while its clients
    /// still reach it (it appends a tail nobody else has); meanwhile and for `hold_ms` after, what
    /// any other member sends as a leader is lost, so a member elected meanwhile holds its term's
    /// first entry alone (as if it crashed right after its election); the old leader, back, can
    /// win again and replicate its old tail (in steps of `max_entries_per_append`).
    StaleLeaderReturns { cut_ms: u64, hold_ms: u64 },
    /// A membership change aimed at a fresh leader: whoever leads is cut from its peers for
    /// `cut_ms`, links among the others hold frames back up to `delay_ms`, and the moment another
    /// member wins an election the operator removes the old leader through it (the request
    /// arrives before the new leader's first entry commits), wipes it, and adds it back after
    /// `down_ms`.
    ChangeAfterElection { cut_ms: u64, delay_ms: u64, down_ms: u64 },
    /// A deposed leader's appends arriving in a newer term: for `ms`, every frame whoever leads
    /// sends to its peers arrives `hold_ms` to `hold_ms + 1500` late, so the others hear nothing,
    /// elect a new leader and commit in its term while the old leader's appends are on the way
    /// (frames among them are reordered meanwhile, so commit news comes late). A client
    /// publishes to the old leader meanwhile.
    HeldLeaderFrames { ms: u64, hold_ms: u64 },
    /// A deposed leader asked to read: whoever leads is cut from its peers for `ms` and frozen
    /// for the first `pause_ms` (as `cut_leader_peers`), and once it resumes a client reads
    /// every topic linearizably from it alone until the cut ends.
    StaleLeaderReads { ms: u64, pause_ms: u64 },
    /// Late copies of a snapshot: a follower is power-failed for `down_ms` (back, it is sent a
    /// snapshot), and every frame sent to it until `ms` after it restarts arrives twice, the copy
    /// up to `max_delay_ms` late, so a copy of the snapshot can arrive after its commit index
    /// moved past it and its log was compacted past it. Plans that draw it snapshot every 8–16
    /// entries.
    SnapshotCopiesLate { down_ms: u64, ms: u64, max_delay_ms: u64 },
}

/// How an injected disk fault shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskErrorKind {
    /// Appends and writes fail with an I/O error.
    Write,
    /// One fsync fails and drops the file's unsynced writes for good (Linux's page cache marks
    /// them clean); later fsyncs succeed but never write them.
    Fsync,
    /// The disk is full: writes fail with "no space".
    Full,
    /// The process is out of file descriptors: opening a file fails and nothing is written. The
    /// member's storage waits (clients are told to retry) and goes on by itself once the fault
    /// ends — no power cycle. Only in hand-written plans (plans drawn from a seed never pick it).
    Descriptors,
}

/// The shape of a scenario variant: `cluster` (3 or 5 members, a few clients, ~45 simulated
/// seconds), `cluster3` / `cluster5` (a fixed size, 50 clients, 60 simulated seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub nodes: Option<usize>,
    /// 50 clients for 60 simulated seconds instead of a handful for ~45.
    pub long: bool,
}

impl Shape {
    pub const MIXED: Shape = Shape { nodes: None, long: false };
    pub const THREE: Shape = Shape { nodes: Some(3), long: true };
    pub const FIVE: Shape = Shape { nodes: Some(5), long: true };
}

fn default_fault_window_ms() -> u64 {
    FAULT_WINDOW.as_millis() as u64
}
fn default_deadline_ms() -> u64 {
    PRODUCER_DEADLINE.as_millis() as u64
}
fn default_think_ms() -> u64 {
    400
}
fn default_snapshot_entries() -> u64 {
    64
}

/// A fault and when it happens (milliseconds after the start).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub at_ms: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// The plan of a run, drawn from the seed (or read from a seed file / a shrunk plan: see
/// [`Options::plan`](super::Options)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub nodes: usize,
    pub producers: usize,
    pub batches: usize,
    pub consumers: usize,
    /// Per member clock drift in parts per million.
    pub drift_ppm: Vec<i64>,
    /// No faults when left out (a quiet run).
    #[serde(default)]
    pub faults: Vec<Step>,
    /// Faults happen before this; then the network heals and members come back.
    #[serde(default = "default_fault_window_ms")]
    pub fault_window_ms: u64,
    /// Producers stop at this point; consumers 10 s earlier.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// A producer waits up to this long between batches.
    #[serde(default = "default_think_ms")]
    pub think_ms: u64,
    /// Hostile TCP clients during the fault window (connect floods, half-sent frames, malformed
    /// bytes, slow readers, vanishers, retriers after timeouts with the same keys).
    #[serde(default)]
    pub storm_clients: usize,
    /// The storm starts this long after the start…
    #[serde(default)]
    pub storm_at_ms: u64,
    /// …and lasts this long (`None`: until the end of the fault window).
    #[serde(default)]
    pub storm_ms: Option<u64>,
    /// Members snapshot their state every this many entries (small: snapshots, compaction and
    /// catch-up by snapshot happen in every run).
    #[serde(default = "default_snapshot_entries")]
    pub snapshot_entries: u64,
    /// Hostile clients on the members' peer (Raft) ports from the start, for the fault window or
    /// 10 s at most: garbage, wrong secrets, replayed handshakes, and an insider that knows the
    /// secret sending impossible terms and indexes. Drawn from a stream of its own, so plans
    /// without it are exactly what they were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peer_storm_clients: usize,
    /// If no consumer draws linearizable reads, the first one reads linearizably anyway, so the
    /// linearizable-read checker has something to check. Generated plans set it; a plan written
    /// before it existed (a golden script, a regression seed's `[plan]`) leaves it out and runs
    /// as it always did.
    #[serde(default)]
    pub linearizable_reader: bool,
    /// Named consumers that crash and resume from their committed position (see
    /// `scenarios/durable.rs`). Drawn from a stream of their own; a plan without it runs none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub durable_consumers: usize,
    /// Retention: every topic keeps at most this many events (`[topics.default] max_events`),
    /// so trims by the leader happen under every fault. Drawn from a stream of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_max_events: Option<u64>,
    /// What each member's log disk costs in simulated time (one per member, or none: instant
    /// disks, as every plan before it). Drawn from a stream of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_latency: Vec<latency::MemberDiskLatency>,
    /// Legacy-protocol clients (fire-and-forget frames, no key, no reply) sending to members they
    /// draw until the consumers stop. Drawn from a stream of their own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub legacy_clients: usize,
    /// Topic segment files this small (bytes; `None`: the default), so segment rolls, deletion
    /// by retention and snapshot installs across many segments happen under every fault. Drawn
    /// from a stream of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_segment_bytes: Option<u64>,
    /// Record bytes a member installing a snapshot asks for per request (`None`: the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_chunk_bytes: Option<u32>,
    /// `cluster.max_entries_per_append` on every member (`None`: the default, 1,024). Small in
    /// plans that draw `stale_leader_returns`: a returning leader then replicates its old tail in
    /// steps, so a majority holds an earlier term's entry before its own (Figure 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries_per_append: Option<u64>,
    /// `dedup.window_ms` on every member (`None`: 10 minutes, longer than any run). Seconds in
    /// some plans, against clock steps larger than it: a retry after the window (by the
    /// leader-stamped times) is stored again, and the checkers allow exactly that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window_ms: Option<u64>,
    /// `cluster.peer_queue` on every member (`None`: the default, 1,024 messages per peer). Small
    /// (4–64) in some seeds, so a stalled or slow link fills it and the transport drops (Raft
    /// retransmits). Drawn from a stream of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_queue: Option<u64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Draws one fault of a plan of `nodes` members, aimed at `node` where it needs one.
fn draw_fault(rng: &mut NodeRng, nodes: usize, node: usize) -> Fault {
    match rng.random_range(0..130) {
        0..=14 => Fault::Isolate { node },
        15..=19 => Fault::IsolateLeader,
        20..=34 => {
            let mut ids: Vec<usize> = (0..nodes).collect();
            ids.shuffle(rng);
            let cut = rng.random_range(1..nodes);
            let mut side = ids[..cut].to_vec();
            side.sort_unstable();
            Fault::Split { side }
        }
        35..=44 => {
            let other = (node + rng.random_range(1..nodes)) % nodes;
            Fault::OneWay { from: node, to: other }
        }
        45..=54 => Fault::Heal,
        55..=74 => Fault::Crash { node, down_ms: rng.random_range(100..3_000) },
        75..=79 => {
            let mut ids: Vec<usize> = (0..nodes).collect();
            ids.shuffle(rng);
            let k = if rng.random_bool(0.5) { nodes } else { nodes / 2 + 1 };
            let mut victims = ids[..k].to_vec();
            victims.sort_unstable();
            Fault::CrashMany { nodes: victims, down_ms: rng.random_range(100..2_000) }
        }
        80..=89 => Fault::Pause { node, ms: rng.random_range(100..2_000) },
        90..=99 => Fault::StepClock { node, ms: rng.random_range(-5_000..=5_000) },
        100..=104 => {
            let mut others: Vec<usize> = (0..nodes).filter(|&n| n != node).collect();
            others.shuffle(rng);
            let mut side = others[..others.len() / 2].to_vec();
            side.sort_unstable();
            Fault::Bridge { bridge: node, side }
        }
        105..=109 => Fault::PacketLoss { pct: rng.random_range(5..=40), ms: rng.random_range(500..5_000) },
        110..=114 => {
            let min_ms = rng.random_range(20..200);
            Fault::Slow { min_ms, max_ms: min_ms * rng.random_range(2..=5), ms: rng.random_range(500..4_000) }
        }
        115..=122 => Fault::Disk {
            node,
            error: *[DiskErrorKind::Write, DiskErrorKind::Fsync, DiskErrorKind::Full]
                .choose(rng)
                .expect("non-empty"),
            down_ms: rng.random_range(200..3_000),
        },
        _ => Fault::Rejoin { node, down_ms: rng.random_range(200..3_000) },
    }
}

/// One lossy-links fault: one directed link, both directions of a pair, one member's outbound
/// links, or every link.
fn draw_lossy_link(rng: &mut NodeRng, nodes: usize) -> Fault {
    let a = rng.random_range(0..nodes);
    let b = (a + rng.random_range(1..nodes.max(2))) % nodes;
    let all: Vec<usize> = (0..nodes).collect();
    let (from, to) = match rng.random_range(0..4) {
        0 => (vec![a], vec![b]),
        1 => {
            let mut pair = vec![a, b];
            pair.sort_unstable();
            (pair.clone(), pair)
        }
        2 => (vec![a], all),
        _ => (all.clone(), all),
    };
    Fault::LossyLinks {
        from,
        to,
        ms: rng.random_range(500..5_000),
        drop_pct: rng.random_range(0..=30),
        dup_pct: rng.random_range(0..=30),
        delay_pct: rng.random_range(0..=40),
        max_delay_ms: rng.random_range(20..=1_500),
        reset_pct: rng.random_range(0..=2),
    }
}

impl Plan {
    /// Draws a plan.
    pub fn generate(rng: &mut NodeRng, shape: Shape, max_drift_ppm: i64) -> Plan {
        let nodes = shape.nodes.unwrap_or_else(|| if rng.random_bool(0.5) { 3 } else { 5 });
        let drift_ppm = (0..nodes)
            .map(|_| {
                if max_drift_ppm > 0 && rng.random_bool(0.5) {
                    rng.random_range(-max_drift_ppm..=max_drift_ppm)
                } else {
                    0
                }
            })
            .collect();
        let (fault_window_ms, deadline_ms, n_faults) = if shape.long {
            (40_000, 56_000, rng.random_range(6..=16))
        } else {
            (default_fault_window_ms(), default_deadline_ms(), rng.random_range(2..=8))
        };
        let mut faults = Vec::new();
        for _ in 0..n_faults {
            let at_ms = rng.random_range(500..fault_window_ms);
            let node = rng.random_range(0..nodes);
            let fault = draw_fault(rng, nodes, node);
            faults.push(Step { at_ms, fault });
        }
        faults.sort_by_key(|f| f.at_ms);
        let (producers, batches, consumers, think_ms, storm_clients) = if shape.long {
            // 50 clients: producers publish until the deadline, consumers follow topics; and a
            // 10-second storm of hostile clients somewhere in the fault window (below).
            (45, 10_000, 5, 4_000, 6)
        } else {
            let storm = if rng.random_bool(0.3) { rng.random_range(6..=18) } else { 0 };
            (
                rng.random_range(4..=10),
                rng.random_range(5..=20),
                rng.random_range(1..=3),
                default_think_ms(),
                storm,
            )
        };
        Plan {
            nodes,
            producers,
            batches,
            consumers,
            drift_ppm,
            faults,
            fault_window_ms,
            deadline_ms,
            think_ms,
            storm_clients,
            storm_at_ms: if shape.long { rng.random_range(0..fault_window_ms - 10_000) } else { 0 },
            storm_ms: shape.long.then_some(10_000),
            // The long runs commit thousands of entries; a whole-state snapshot every 64 would
            // cost more than the rest of the run.
            snapshot_entries: if shape.long { 512 } else { default_snapshot_entries() },
            peer_storm_clients: 0,
            // Derived, not drawn: the random stream stays as it was.
            linearizable_reader: true,
            durable_consumers: 0,
            retention_max_events: None,
            disk_latency: Vec::new(),
            legacy_clients: 0,
            topic_segment_bytes: None,
            catchup_chunk_bytes: None,
            max_entries_per_append: None,
            dedup_window_ms: None,
            peer_queue: None,
        }
    }

    /// Draws small topic segments (4–64 KiB) and catch-up chunks (4–16 KiB) for some seeds from
    /// `rng`, a stream of its own.
    fn draw_topic_files(&mut self, rng: &mut NodeRng) {
        if rng.random_bool(0.5) {
            self.topic_segment_bytes = Some(rng.random_range(4..=64) << 10);
            self.catchup_chunk_bytes = Some(rng.random_range(4..=16) << 10);
        }
    }

    /// Draws small retention limits for some seeds from `rng`, a stream of its own.
    fn draw_retention(&mut self, rng: &mut NodeRng) {
        self.retention_max_events = rng.random_bool(0.4).then(|| rng.random_range(5..=40));
    }

    /// Draws the peer storm (some seeds get 2–4 clients) from `rng`, a stream of its own.
    fn draw_peer_storm(&mut self, rng: &mut NodeRng) {
        self.peer_storm_clients = if rng.random_bool(0.35) { rng.random_range(2..=4) } else { 0 };
    }

    /// Draws the durable consumers (1–3) from `rng`, a stream of their own.
    fn draw_durable_consumers(&mut self, rng: &mut NodeRng) {
        self.durable_consumers = rng.random_range(1..=3);
    }

    /// Draws the fault layers' faults (half the seeds get one or two crashes inside disk
    /// operations; a third one transient fsync error, drawn after them so they stay what they
    /// were) from `rng`, a stream of its own, and adds them to the plan in time order.
    fn draw_fault_layers(&mut self, rng: &mut NodeRng) {
        if rng.random_bool(0.5) {
            for _ in 0..rng.random_range(1..=2) {
                let at_ms = rng.random_range(500..self.fault_window_ms);
                let node = rng.random_range(0..self.nodes);
                let (after_ops, down_ms) = (rng.random_range(0..60), rng.random_range(100..2_000));
                self.faults.push(Step { at_ms, fault: Fault::DiskCrash { node, after_ops, down_ms } });
            }
        }
        // One failed fsync while the member keeps running for a second or three before the
        // operator power-cycles it: a member that goes on after it (fsyncgate) acks writes the
        // failure dropped. Random faults seldom draw it (a third of their rare disk faults).
        if rng.random_bool(1.0 / 3.0) {
            let at_ms = rng.random_range(500..self.fault_window_ms.max(501));
            let node = rng.random_range(0..self.nodes);
            let down_ms = rng.random_range(1_000..3_000);
            self.faults
                .push(Step { at_ms, fault: Fault::Disk { node, error: DiskErrorKind::Fsync, down_ms } });
        }
        self.faults.sort_by_key(|f| f.at_ms);
    }

    /// How long the client storm runs from `storm_at_ms`.
    pub(crate) fn storm_duration_ms(&self) -> u64 {
        self.storm_ms.unwrap_or(self.fault_window_ms.saturating_sub(self.storm_at_ms))
    }

    /// How long the peer-port storm runs from the start.
    pub(crate) fn peer_storm_duration_ms(&self) -> u64 {
        self.fault_window_ms.min(10_000)
    }

    /// Draws bit rot at rest (a third of the seeds get one) from `rng`, a stream of its own, and
    /// adds it to the plan in time order.
    fn draw_bit_rot(&mut self, rng: &mut NodeRng) {
        if rng.random_bool(0.33) {
            let at_ms = rng.random_range(2_000..self.fault_window_ms.max(2_001));
            let (node, restart_ms) = (rng.random_range(0..self.nodes), rng.random_range(100..3_000));
            self.faults.push(Step { at_ms, fault: Fault::BitRot { node, restart_ms, files: None } });
            self.faults.sort_by_key(|f| f.at_ms);
        }
    }

    /// Draws lossy and stalled peer links (the fault layer under the peer transport) for some
    /// seeds from `rng`, a stream of its own, and adds them to the plan in time order.
    fn draw_lossy_links(&mut self, rng: &mut NodeRng) {
        if rng.random_bool(0.5) {
            for _ in 0..rng.random_range(1..=4) {
                let at_ms = rng.random_range(500..self.fault_window_ms);
                let fault = draw_lossy_link(rng, self.nodes);
                self.faults.push(Step { at_ms, fault });
            }
        }
        // A deposed leader answering: frozen long enough that its stuck clients time out (3 s)
        // and fail over to the new leader, which acks their writes, then still cut off for a
        // while after it resumes (it believes it leads until its check-quorum runs).
        if rng.random_bool(0.3) && self.fault_window_ms > 6_000 {
            let at_ms = rng.random_range(1_000..self.fault_window_ms - 5_000);
            let pause_ms = rng.random_range(1_500..3_000);
            let fault = Fault::CutLeaderPeers { ms: pause_ms + rng.random_range(1_000..2_500), pause_ms };
            self.faults.push(Step { at_ms, fault });
        }
        if rng.random_bool(0.2) {
            let at_ms = rng.random_range(500..self.fault_window_ms);
            let from = rng.random_range(0..self.nodes);
            let to = (from + rng.random_range(1..self.nodes.max(2))) % self.nodes;
            let fault = Fault::StallLink { from, to, ms: rng.random_range(500..4_000) };
            self.faults.push(Step { at_ms, fault });
        }
        self.faults.sort_by_key(|f| f.at_ms);
    }

    /// Draws the leader-change sequences (`stale_leader_returns` in a quarter of the seeds, with
    /// appends of 1–3 entries; `change_after_election` in a fifth) from `rng`, a stream of its
    /// own, and adds them to the plan in time order.
    fn draw_consensus_faults(&mut self, rng: &mut NodeRng) {
        let window = self.fault_window_ms;
        if rng.random_bool(0.25) && window > 6_000 {
            let at_ms = rng.random_range(1_000..window - 4_000);
            let fault = Fault::StaleLeaderReturns {
                cut_ms: rng.random_range(1_500..3_000),
                hold_ms: rng.random_range(1_500..4_000),
            };
            self.faults.push(Step { at_ms, fault });
            self.max_entries_per_append = Some(rng.random_range(1..=3));
        }
        if rng.random_bool(0.2) && window > 6_000 {
            let at_ms = rng.random_range(1_000..window - 4_000);
            let fault = Fault::ChangeAfterElection {
                cut_ms: rng.random_range(1_500..3_000),
                delay_ms: rng.random_range(50..=250),
                down_ms: rng.random_range(200..2_000),
            };
            self.faults.push(Step { at_ms, fault });
        }
        self.faults.sort_by_key(|f| f.at_ms);
    }

    /// Draws a small per-peer send queue (4–64 messages, 30 % of the seeds) from `rng`, a stream
    /// of its own.
    fn draw_peer_queue(&mut self, rng: &mut NodeRng) {
        self.peer_queue = rng.random_bool(0.3).then(|| rng.random_range(4..=64));
    }

    /// Draws a short dedup window (1–5 s, a third of the seeds) from `rng`, a stream of its own,
    /// with a clock step on one member larger than the window, either way.
    fn draw_short_dedup_window(&mut self, rng: &mut NodeRng) {
        if !rng.random_bool(0.33) {
            return;
        }
        let window = rng.random_range(1_000..=5_000u64);
        self.dedup_window_ms = Some(window);
        let at_ms = rng.random_range(500..self.fault_window_ms);
        let node = rng.random_range(0..self.nodes);
        let size = rng.random_range(window..=3 * window) as i64;
        let ms = if rng.random_bool(0.5) { size } else { -size };
        self.faults.push(Step { at_ms, fault: Fault::StepClock { node, ms } });
        self.faults.sort_by_key(|f| f.at_ms);
    }

    /// Checks a plan read from outside (node indexes in range, faults inside the fault window).
    pub fn validate(&self) -> Result<(), String> {
        if self.legacy_clients > 50 {
            return Err(format!("legacy_clients = {} (at most 50)", self.legacy_clients));
        }
        if self.durable_consumers > 50 {
            return Err(format!("durable_consumers = {} (at most 50)", self.durable_consumers));
        }
        if !(1..=9).contains(&self.nodes) {
            return Err(format!("nodes = {} (1 to 9 members)", self.nodes));
        }
        if self.storm_at_ms >= self.deadline_ms {
            return Err(format!("storm_at_ms = {} is after the deadline", self.storm_at_ms));
        }
        if self.snapshot_entries == 0 {
            return Err("snapshot_entries must be at least 1".into());
        }
        if self.deadline_ms < self.fault_window_ms + 10_000 {
            return Err(format!(
                "deadline_ms = {} must leave 10 s after the fault window ({} ms)",
                self.deadline_ms, self.fault_window_ms
            ));
        }
        if !self.disk_latency.is_empty() && self.disk_latency.len() != self.nodes {
            return Err(format!(
                "disk_latency has {} entries for {} nodes (one per member, or none)",
                self.disk_latency.len(),
                self.nodes
            ));
        }
        if self.peer_queue == Some(0) {
            return Err("peer_queue must be at least 1".into());
        }
        if self.dedup_window_ms == Some(0) {
            return Err("dedup_window_ms must be at least 1".into());
        }
        if self.max_entries_per_append == Some(0) {
            return Err("max_entries_per_append must be at least 1".into());
        }
        if self.drift_ppm.len() != self.nodes {
            return Err(format!("drift_ppm has {} values for {} nodes", self.drift_ppm.len(), self.nodes));
        }
        self.faults.iter().try_for_each(|f| self.validate_fault(f))?;
        crate::plans::check_fault_order(self)?;
        Ok(())
    }

    /// Checks one fault of a plan read from outside: inside the fault window, members in range.
    fn validate_fault(&self, f: &Step) -> Result<(), String> {
        let ok = |n: &usize| *n < self.nodes;
        if f.at_ms >= self.fault_window_ms {
            return Err(format!(
                "fault at {} ms is after the fault window ({} ms)",
                f.at_ms, self.fault_window_ms
            ));
        }
        let in_range = match &f.fault {
            Fault::Isolate { node }
            | Fault::Crash { node, .. }
            | Fault::Pause { node, .. }
            | Fault::StepClock { node, .. }
            | Fault::Disk { node, .. }
            | Fault::Rejoin { node, .. }
            | Fault::DiskCrash { node, .. }
            | Fault::BitRot { node, .. } => ok(node),
            Fault::Bridge { bridge, side } => ok(bridge) && side.iter().all(ok),
            Fault::PacketLoss { pct, .. } => *pct <= 100,
            Fault::Slow { min_ms, max_ms, .. } => min_ms < max_ms,
            Fault::IsolateLeader => true,
            Fault::CutLeaderPeers { ms, pause_ms } => pause_ms <= ms,
            Fault::StaleLeaderReturns { .. } => true,
            Fault::ChangeAfterElection { delay_ms, .. } => *delay_ms >= 1,
            Fault::HeldLeaderFrames { .. } => true,
            Fault::StaleLeaderReads { ms, pause_ms } => pause_ms <= ms,
            Fault::SnapshotCopiesLate { max_delay_ms, .. } => *max_delay_ms >= 1,
            Fault::Split { side } => side.iter().all(ok),
            Fault::CrashMany { nodes, .. } => nodes.iter().all(ok),
            Fault::OneWay { from, to } | Fault::StallLink { from, to, .. } => ok(from) && ok(to),
            Fault::Heal => true,
            Fault::LossyLinks { from, to, drop_pct, dup_pct, delay_pct, reset_pct, .. } => {
                from.iter().chain(to).all(ok) && drop_pct + dup_pct + delay_pct + reset_pct <= 100
            }
        };
        if !in_range {
            return Err(format!(
                "{:?} names a member outside 0..{} (or has an empty range)",
                f.fault, self.nodes
            ));
        }
        Ok(())
    }

    /// A readable description.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} nodes, {} producers × {} batches, {} consumers, {} storm clients{}{}; drift ppm {:?}; faults:",
            self.nodes,
            self.producers,
            self.batches,
            self.consumers,
            self.storm_clients,
            match (self.storm_clients, self.storm_ms) {
                (0, _) | (_, None) => String::new(),
                (_, Some(ms)) => {
                    format!(" at {:.1}s for {:.1}s", self.storm_at_ms as f64 / 1000.0, ms as f64 / 1000.0)
                }
            },
            match (self.peer_storm_clients, self.durable_consumers) {
                (0, 0) => String::new(),
                (n, 0) => format!(", {n} peer-storm clients"),
                (0, d) => format!(", {d} durable consumers"),
                (n, d) => format!(", {n} peer-storm clients, {d} durable consumers"),
            },
            self.drift_ppm
        );
        for f in &self.faults {
            let _ = write!(s, " {:.1}s {:?};", f.at_ms as f64 / 1000.0, f.fault);
        }
        s.push_str(" heal at end of window");
        if let Some(b) = self.topic_segment_bytes {
            let _ = write!(s, "; topic segments of {} KiB", b >> 10);
        }
        if let Some(b) = self.catchup_chunk_bytes {
            let _ = write!(s, ", catch-up chunks of {} KiB", b >> 10);
        }
        if self.legacy_clients > 0 {
            let _ = write!(s, "; {} legacy-protocol clients", self.legacy_clients);
        }
        if let Some(n) = self.peer_queue {
            let _ = write!(s, "; peer queues of {n} messages");
        }
        s
    }
}

fn member_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, (i + 1) as u8)
}

fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(member_ip(i)), CLIENT_PORT)
}

/// A disk whose fsyncs do nothing (the `LyingFsync` mutant).
#[derive(Debug)]
struct LyingDisk(Arc<SimDisk>);

impl Disk for LyingDisk {
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        self.0.read(name)
    }
    fn size(&self, name: &str) -> Result<Option<u64>, DiskError> {
        self.0.size(name)
    }
    fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.0.append(name, data)
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.0.write(name, data)
    }
    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
        self.0.truncate(name, len)
    }
    fn sync(&self, _name: &str) -> Result<(), DiskError> {
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.0.rename(from, to)
    }
    fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.0.remove(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, DiskError> {
        self.0.list(prefix)
    }
    fn sync_dir(&self) -> Result<(), DiskError> {
        Ok(())
    }
    fn take_latency(&self) -> Duration {
        self.0.take_latency()
    }
}

/// What the scenario keeps of a member across restarts.
struct MemberSlot {
    /// Start the next incarnation as a joining node (empty configuration; it is added back).
    joining: Arc<std::sync::atomic::AtomicBool>,
    disk_faulty: Arc<std::sync::atomic::AtomicBool>,
    /// The member's last start was refused: recovery found corrupt data (bit rot) on its disk.
    refused_corrupt: Arc<std::sync::atomic::AtomicBool>,
    disk: Arc<SimDisk>,
    /// The member's dead-letter queue (it loses unsynced writes in a power failure too).
    dlq: Arc<SimDisk>,
    node: Arc<Mutex<Option<ClusterNode>>>,
    clock: Arc<Mutex<Option<NodeClock>>>,
    /// Snapshot installs of the member's incarnations before the one in `node`.
    installs: Arc<Mutex<CatchUpCounters>>,
}

/// The pipeline as members run it in the scenario: the defaults, with a fast control loop so
/// checkpoints are recorded often.
fn pipeline_config() -> PipelineConfig {
    let mut c = PipelineConfig::default();
    c.control.interval_ms = 100;
    c
}

fn cluster_config(plan_nodes: usize, i: usize, join: bool, snapshot_entries: u64) -> ClusterConfig {
    let members = (0..plan_nodes)
        .map(|j| MemberConfig {
            id: j as u64 + 1,
            raft_addr: SocketAddr::new(IpAddr::V4(member_ip(j)), RAFT_PORT).to_string(),
            client_addr: client_addr(j).to_string(),
        })
        .collect();
    ClusterConfig {
        cluster_id: "sim".into(),
        secret: "sim-secret".into(),
        raft_listen: SocketAddr::new(IpAddr::V4(member_ip(i)), RAFT_PORT),
        members,
        tick_ms: 50,
        election_ticks: 10,
        heartbeat_ticks: 2,
        snapshot_entries,
        // A short tail: a member that was down or cut off catches up through a snapshot.
        snapshot_keep_entries: 8,
        commit_timeout_ms: 3_000,
        segment_bytes: 16 * 1024,
        join,
        ..ClusterConfig::default()
    }
}

/// What a member's every incarnation starts from.
#[derive(Clone)]
struct MemberEnv {
    i: usize,
    nodes: usize,
    snapshot_entries: u64,
    retention_max_events: Option<u64>,
    /// The plan's topic segment size and catch-up chunk, if small.
    topic_files: (Option<u64>, Option<u32>),
    /// The snapshot installs of the member's earlier incarnations.
    installs: Arc<Mutex<CatchUpCounters>>,
    max_entries_per_append: Option<u64>,
    dedup_window_ms: Option<u64>,
    peer_queue: Option<u64>,
    drift: i64,
    disk: Arc<dyn Disk>,
    /// The simulated disk under `disk` (to tell a start cut short by a power failure).
    sim_disk: Arc<SimDisk>,
    dlq: Arc<dyn Disk>,
    slot: Arc<Mutex<Option<ClusterNode>>>,
    clock_slot: Arc<Mutex<Option<NodeClock>>>,
    joining: Arc<std::sync::atomic::AtomicBool>,
    /// A disk fault is injected right now (a start that fails on it is expected).
    disk_faulty: Arc<std::sync::atomic::AtomicBool>,
    /// Set when a start is refused because recovery found corrupt data.
    refused_corrupt: Arc<std::sync::atomic::AtomicBool>,
    watch: Arc<RaftWatch>,
}

/// Member `i`'s configuration: its cluster view (`join`: it joins a running cluster), the sim
/// pipeline, the retention limit if any, and an ingest listener with one admin credential.
fn member_config(
    i: usize,
    nodes: usize,
    join: bool,
    snapshot_entries: u64,
    (retention_max_events, topic_files): (Option<u64>, (Option<u64>, Option<u32>)),
) -> Config {
    let mut config = Config::default();
    config.node.id = i as u64 + 1;
    config.node.name = format!("sim-{}", i + 1);
    config.cluster = cluster_config(nodes, i, join, snapshot_entries);
    // The operator's answer to bit rot in topic files (wipe and re-add) needs the member to
    // refuse its start; members here hold little data, so the full read costs nothing.
    config.cluster.verify_topics_at_start = true;
    if let Some(b) = topic_files.0 {
        config.cluster.topic_segment_bytes = b;
    }
    if let Some(b) = topic_files.1 {
        config.cluster.catchup_chunk_bytes = b;
    }
    config.pipeline = pipeline_config();
    if let Some(max) = retention_max_events {
        let limits = eventstreamcore::node::TopicConfig { max_events: Some(max), ..Default::default() };
        config.topics.insert("default".into(), limits);
    }
    config.ingest = IngestConfig {
        listen: client_addr(i),
        idle_timeout_ms: 60_000,
        read_timeout_ms: 10_000,
        write_timeout_ms: 10_000,
        // Membership changes need an admin credential; producers and consumers stay anonymous.
        clients: vec![ClientCredential {
            name: "sim-admin".into(),
            token: SIM_ADMIN_TOKEN.into(),
            roles: vec![ClientRole::Admin],
        }],
        anonymous_roles: Some(vec![ClientRole::Publish, ClientRole::Consume]),
        ..IngestConfig::default()
    };
    config
}

/// Starts (or restarts) a member: recovers from its disk, serves clients until killed.
/// The clock of a member's new incarnation. A machine's clock does not reset when its process
/// restarts: the new incarnation's wall clock goes on from the old one's reading (its steps and
/// the drift it accumulated kept; differences under a millisecond are rounding, not state).
fn member_clock(drift: i64, clock_slot: &Mutex<Option<NodeClock>>) -> NodeClock {
    let clock = NodeClock::new();
    if drift != 0 {
        clock.set_drift_ppm(drift);
    }
    if let Some(old) = clock_slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        continue_clock(old, &clock);
    }
    *clock_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(clock.clone());
    clock
}

async fn member_main(env: MemberEnv) {
    let MemberEnv {
        i,
        nodes,
        snapshot_entries,
        retention_max_events,
        topic_files,
        installs,
        max_entries_per_append,
        dedup_window_ms,
        peer_queue,
        drift,
        disk,
        sim_disk,
        dlq,
        slot,
        clock_slot,
        joining,
        disk_faulty,
        refused_corrupt,
        watch,
    } = env;
    let clock = member_clock(drift, &clock_slot);
    let join = joining.load(std::sync::atomic::Ordering::SeqCst);
    if join && disk.list("").is_ok_and(|files| files.is_empty()) {
        watch.member_wiped(i as u64 + 1); // a new member: its old term and vote are gone by design
    }
    let mut config = member_config(i, nodes, join, snapshot_entries, (retention_max_events, topic_files));
    tune(&mut config, max_entries_per_append, dedup_window_ms, peer_queue);
    // The production assembly, with simulated seams: power-fail disks, this member's drifting
    // clock, the per-round Raft watch.
    let seams = Seams {
        disks: Disks::Given { log: disk, dlq },
        clock,
        rng: rt::node_rng(),
        observer: Some(watch),
        repair: false,
        on_node: Some(Box::new(move |node: &ClusterNode| {
            let old = slot.lock().unwrap_or_else(|e| e.into_inner()).replace(node.clone());
            if let Some(old) = old {
                installs.lock().unwrap_or_else(|e| e.into_inner()).add(&old.catch_up_counters());
            }
        })),
    };
    let server = match Server::start(&config, seams).await {
        Ok(s) => s,
        Err(e) => return start_failed(i, &e, &sim_disk, &disk_faulty, &refused_corrupt),
    };
    let _ = server.run().await;
}

/// The plan's settings beyond the defaults: append size, dedup window.
fn tune(
    config: &mut Config,
    max_entries_per_append: Option<u64>,
    dedup_window_ms: Option<u64>,
    peer_queue: Option<u64>,
) {
    if let Some(n) = peer_queue {
        config.cluster.peer_queue = n;
    }
    if let Some(n) = max_entries_per_append {
        config.cluster.max_entries_per_append = n;
    }
    if let Some(ms) = dedup_window_ms {
        config.dedup.window_ms = ms;
    }
}

/// A member's start failed: like the real process, it exits with the error, and the fault that
/// caused it (if any) restarts it. Any other failure is a bug.
fn start_failed(
    i: usize,
    e: &ServerError,
    disk: &SimDisk,
    disk_faulty: &std::sync::atomic::AtomicBool,
    refused_corrupt: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering::SeqCst;
    // An armed power failure struck inside recovery's own disk operations (a recovery that
    // deletes or syncs): the process died there; the crash fault restarts it.
    if disk.crashed() {
        tracing::warn!(member = i + 1, error = %e, "member lost power while starting");
        return;
    }
    match e {
        // An operator restarted it while its disk still fails (a disk fault's own restart
        // comes later).
        ServerError::Node { .. } if disk_faulty.load(SeqCst) => {
            tracing::warn!(member = i + 1, error = %e, "member cannot start on a failing disk; it stays down");
        }
        // Recovery found bytes its checksums reject (bit rot): it refuses to start; the operator
        // (the simulator) wipes it and adds it back.
        e if is_corrupt(e) => {
            tracing::warn!(member = i + 1, error = %e, "member refuses to start on corrupt data; it stays down");
            refused_corrupt.store(true, SeqCst);
        }
        e => panic!("member {} cannot start: {e}", i + 1),
    }
}

/// True if a start failed because recovery found corrupt data on the member's disk.
fn is_corrupt(e: &ServerError) -> bool {
    use eventstreamcore::node::ClusterError;
    matches!(
        e,
        ServerError::Node {
            source: ClusterError::Storage(eventstreamcore::wal::StorageError::Corrupt { .. })
                | ClusterError::Snapshot(_),
            ..
        }
    )
}

/// Sets `new`'s wall clock to go on from `old`'s reading (a restarted process on the same
/// machine); a difference under a millisecond is rounding and left alone.
fn continue_clock(old: &NodeClock, new: &NodeClock) {
    let delta = i128::from(old.wall_unix_ns()) - i128::from(new.wall_unix_ns());
    if delta.abs() >= 1_000_000 {
        new.step_wall(delta);
    }
}

/// The token of the simulated operator's admin credential (membership changes need one).
const SIM_ADMIN_TOKEN: &str = "sim-admin-token";

/// Runs the scenario inside the current simulator runtime.
pub async fn run(opts: Options, shape: Shape) -> RunReport {
    let handle = madsim::runtime::Handle::current();
    let net = madsim::net::NetSim::current();
    let mut rng = rt::node_rng();
    let (plan, mut peer_rng, mut durable_rng) = draw_plan(&opts, shape, &mut rng);
    *opts.plan_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan.describe());

    let log = FaultLog::start(opts.timeline.clone(), &plan);
    *opts.plan_toml_slot.lock().unwrap_or_else(|e| e.into_inner()) = toml::to_string(&plan).ok();
    let start = rt::time::now();
    let history = History::timed(start);
    history.dedup_window(plan.dedup_window_ms);
    let watch = new_watch(&opts, start);

    // --- members ---------------------------------------------------------------------------------
    let (slots, ids) = start_members(&handle, &plan, &opts, &watch);
    let addrs: Vec<SocketAddr> = (0..plan.nodes).map(client_addr).collect();

    // --- clients ---------------------------------------------------------------------------------
    let t0 = rt::time::now();
    let (producers, mut consumers, durable_traces) =
        spawn_clients(&handle, &plan, &addrs, &history, [&mut rng, &mut durable_rng], t0, opts.mutant);
    consumers.extend(legacy::spawn(&handle, &plan, &addrs, &history, &rng, t0));

    let mut storms = Storms::spawn(&handle, &plan, &addrs, &history, &mut rng, &mut peer_rng);

    // --- faults ----------------------------------------------------------------------------------
    let parts = InjectorParts {
        handle: handle.clone(),
        net: net.clone(),
        ids: &ids,
        slots: &slots,
        addrs: &addrs,
        history: history.clone(),
        log: log.clone(),
        t0,
        watch: watch.clone(),
    };
    let links = FaultInjector::new(parts, &plan, &mut rng).run(&plan, opts.mutant).await;

    // --- liveness: a leader commits a new write within the bound --------------------------------
    let (liveness_failed, liveness_ms) = check_liveness(&handle, &history, &addrs).await;
    let mut times = VerdictTimes { liveness: ms_since(start), converged: 0 };

    await_tasks(producers, &history, "producer").await;
    await_tasks(consumers, &history, "consumer").await;
    storms.await_clients(&history).await;

    // --- convergence -----------------------------------------------------------------------------
    let converged_states = await_convergence(&slots).await;
    times.converged = ms_since(start);
    let converged = converged_states.is_some();
    let states = converged_states.unwrap_or_default();
    let data = history.snapshot();
    let failure = judge(&watch, liveness_failed, converged, &slots, &data, &states, &plan)
        .or_else(|| super::durable::check(&durable_traces, &states).err());
    let end = ms_since(start);
    let digest = run_digest(&states, &data, &watch, end);
    let disk = disk_tally(&slots);
    let installs = install_tally(&slots);
    let summary = summarize(&states, &data, &watch, liveness_ms, (&disk, &links), &plan, &storms);
    let summary = format!("{summary}\n{}", describe_installs(&installs));
    let summary = with_durable_summary(summary, &plan, &durable_traces);
    kill_members(&handle, &ids);
    let marks = failure.as_ref().map(|f| (f, failure_marks(f, &watch, &data, times, end)));
    finish_timeline(opts.timeline.as_ref(), &plan, marks, start);
    RunReport { digest, summary, failure, raft_log: Some(watch.summary()), disk, links, installs }
}

/// The snapshot installs of every member's every incarnation.
fn install_tally(slots: &[MemberSlot]) -> CatchUpCounters {
    let mut sum = CatchUpCounters::default();
    for s in slots {
        sum.add(&s.installs.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(n) = s.node.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            sum.add(&n.catch_up_counters());
        }
    }
    sum
}

/// One line on the snapshot installs of a run or a sweep.
pub fn describe_installs(c: &CatchUpCounters) -> String {
    format!(
        "snapshot installs: {} ({} interrupted and resumed, {} completed); {} record bytes pulled in {} chunks, {} topic pulls restarted by retention",
        c.installs, c.resumed, c.completed, c.bytes, c.chunks, c.restarts
    )
}

/// The task handles of a run's clients.
type ClientTasks = Vec<madsim::task::JoinHandle<()>>;

/// Starts the producers and consumers (drawing from `rng`), then the durable consumers (drawing
/// from `durable_rng`), in that order.
fn spawn_clients(
    handle: &madsim::runtime::Handle,
    plan: &Plan,
    addrs: &[SocketAddr],
    history: &History,
    [rng, durable_rng]: [&mut NodeRng; 2],
    t0: rt::time::Instant,
    mutant: Option<Mutant>,
) -> (ClientTasks, ClientTasks, super::durable::Traces) {
    let producers = spawn_producers(handle, plan, addrs, history, rng, t0);
    let mut consumers = spawn_consumers(handle, plan, addrs, history, rng, t0, mutant);
    let durable_traces = super::durable::Traces::default();
    consumers.extend(spawn_durable_consumers(handle, plan, addrs, history, durable_rng, t0, &durable_traces));
    (producers, consumers, durable_traces)
}

/// Simulated milliseconds since `start`.
fn ms_since(start: rt::time::Instant) -> u64 {
    (rt::time::now() - start).as_millis() as u64
}

/// The run's Raft watch, its clock in milliseconds since `start`.
fn new_watch(opts: &Options, start: rt::time::Instant) -> Arc<RaftWatch> {
    Arc::new(
        RaftWatch::new(move || (rt::time::now() - start).as_millis() as u64)
            .with_timeline(opts.timeline.clone()),
    )
}

/// `summary` followed by the durable consumers' account, when the plan had any.
fn with_durable_summary(summary: String, plan: &Plan, traces: &super::durable::Traces) -> String {
    if plan.durable_consumers > 0 {
        format!("{summary}\n{}", super::durable::describe(traces))
    } else {
        summary
    }
}

/// Ends every member of the run.
fn kill_members(handle: &madsim::runtime::Handle, ids: &[madsim::task::NodeId]) {
    for id in ids {
        handle.kill(*id);
    }
}

/// Draws the run's plan (and the peer storm's stream), or takes the one the options give: the
/// seed still draws its plan first, so the rest of the run sees the same random stream.
fn draw_plan(opts: &Options, shape: Shape, rng: &mut NodeRng) -> (Plan, NodeRng, NodeRng) {
    // The peer storm draws from another stream of the same key: `rng` is not advanced, so every
    // other draw of the run (and the golden runs) stays what it was.
    let mut peer_rng = rng.clone();
    peer_rng.set_stream(PEER_STORM_STREAM);
    let mut durable_rng = rng.clone();
    durable_rng.set_stream(super::durable::DURABLE_STREAM);
    let max_drift = opts.max_drift_ppm.unwrap_or(DEFAULT_MAX_DRIFT_PPM);
    let mut plan = Plan::generate(rng, shape, max_drift);
    plan.draw_peer_storm(&mut peer_rng);
    let mut layers_rng = rng.clone();
    layers_rng.set_stream(FAULT_LAYERS_STREAM);
    plan.draw_fault_layers(&mut layers_rng);
    let mut lossy_rng = rng.clone();
    lossy_rng.set_stream(LOSSY_LINKS_STREAM);
    plan.draw_lossy_links(&mut lossy_rng);
    plan.draw_durable_consumers(&mut durable_rng);
    let mut rot_rng = rng.clone();
    rot_rng.set_stream(BIT_ROT_STREAM);
    plan.draw_bit_rot(&mut rot_rng);
    let mut latency_rng = rng.clone();
    latency_rng.set_stream(DISK_LATENCY_STREAM);
    plan.disk_latency = latency::draw(&mut latency_rng, plan.nodes);
    let mut legacy_rng = rng.clone();
    legacy_rng.set_stream(LEGACY_STREAM);
    plan.legacy_clients = if legacy_rng.random_bool(0.4) { legacy_rng.random_range(1..=3) } else { 0 };
    let mut retention_rng = rng.clone();
    retention_rng.set_stream(RETENTION_STREAM);
    plan.draw_retention(&mut retention_rng);
    let mut files_rng = rng.clone();
    files_rng.set_stream(TOPIC_FILES_STREAM);
    plan.draw_topic_files(&mut files_rng);
    let mut consensus_rng = rng.clone();
    consensus_rng.set_stream(CONSENSUS_FAULTS_STREAM);
    plan.draw_consensus_faults(&mut consensus_rng);
    let mut dedup_rng = rng.clone();
    dedup_rng.set_stream(SHORT_DEDUP_STREAM);
    plan.draw_short_dedup_window(&mut dedup_rng);
    let mut queue_rng = rng.clone();
    queue_rng.set_stream(PEER_QUEUE_STREAM);
    plan.draw_peer_queue(&mut queue_rng);
    let mut rare_rng = rng.clone();
    rare_rng.set_stream(RARE_CATCHES_STREAM);
    plan.draw_rare_catches(&mut rare_rng);
    if let Some(text) = &opts.plan {
        // The seed still draws its plan first, so the rest of the run sees the same random stream.
        plan = match toml::from_str(text) {
            Ok(p) => p,
            Err(e) => panic!("the given plan is not a valid `cluster` plan: {e}"),
        };
        plan.validate().unwrap_or_else(|e| panic!("the given plan is not usable: {e}"));
    }
    (plan, peer_rng, durable_rng)
}

/// Starts the producers, each on a node of its own with its own RNG and member order.
fn spawn_producers(
    handle: &madsim::runtime::Handle,
    plan: &Plan,
    addrs: &[SocketAddr],
    history: &History,
    rng: &mut NodeRng,
    t0: rt::time::Instant,
) -> Vec<madsim::task::JoinHandle<()>> {
    let mut producers = Vec::new();
    for p in 0..plan.producers {
        let node = handle
            .create_node()
            .name(format!("producer-{p}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 1, 0, p as u8 + 1)))
            .build();
        let (history, mut addrs) = (history.clone(), addrs.to_vec());
        let timing = ProducerTiming {
            batches: plan.batches,
            think_ms: plan.think_ms,
            deadline: t0 + Duration::from_millis(plan.deadline_ms),
        };
        let mut prng = rt::rng::split(rng);
        addrs.shuffle(&mut prng);
        producers.push(node.spawn(async move { producer(p as u64 + 1, addrs, timing, history, prng).await }));
    }
    producers
}

/// Starts the named consumers that crash and resume (see `scenarios/durable.rs`).
fn spawn_durable_consumers(
    handle: &madsim::runtime::Handle,
    plan: &Plan,
    addrs: &[SocketAddr],
    history: &History,
    durable_rng: &mut NodeRng,
    t0: rt::time::Instant,
    durable_traces: &super::durable::Traces,
) -> Vec<madsim::task::JoinHandle<()>> {
    let mut consumers = Vec::new();
    for d in 0..plan.durable_consumers {
        let node = handle
            .create_node()
            .name(format!("durable-consumer-{d}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 5, 0, d as u8 + 1)))
            .build();
        let (mut addrs, mut drng) = (addrs.to_vec(), rt::rng::split(durable_rng));
        addrs.shuffle(&mut drng);
        let how = super::durable::DurableRun {
            name: format!("durable-{d}"),
            topic: TOPICS[d % TOPICS.len()],
            until: t0 + Duration::from_millis(plan.deadline_ms) - Duration::from_secs(10),
        };
        let (traces, history) = (durable_traces.clone(), history.clone());
        consumers.push(node.spawn(async move {
            if let Err(e) = super::durable::durable_consumer(addrs, how, drng, traces).await {
                history.violation(e);
            }
        }));
    }
    consumers
}

/// Starts the consumers, each on a node of its own; one reads linearizably if none drew it.
fn spawn_consumers(
    handle: &madsim::runtime::Handle,
    plan: &Plan,
    addrs: &[SocketAddr],
    history: &History,
    rng: &mut NodeRng,
    t0: rt::time::Instant,
    mutant: Option<Mutant>,
) -> Vec<madsim::task::JoinHandle<()>> {
    let mut consumers = Vec::new();
    let consumer_rngs: Vec<(Vec<SocketAddr>, NodeRng)> = (0..plan.consumers)
        .map(|_| {
            let (mut addrs, mut crng) = (addrs.to_vec(), rt::rng::split(rng));
            addrs.shuffle(&mut crng);
            (addrs, crng)
        })
        .collect();
    // Every generated run has a linearizable reader: if no consumer draws one, the first becomes
    // one. Derived, not drawn, so the random stream stays as it was.
    let none_linearizable =
        plan.linearizable_reader && !consumer_rngs.iter().any(|(_, r)| ConsumerDraw::peek(r).linearizable);
    for (c, (addrs, crng)) in consumer_rngs.into_iter().enumerate() {
        let node = handle
            .create_node()
            .name(format!("consumer-{c}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 2, 0, c as u8 + 1)))
            .build();
        let history = history.clone();
        let how = ConsumerRun {
            until: t0 + Duration::from_millis(plan.deadline_ms) - Duration::from_secs(10),
            stale_reads: mutant == Some(Mutant::StaleReads),
            force_linearizable: none_linearizable && c == 0,
        };
        consumers.push(node.spawn(async move { consumer(c, addrs, history, crng, how).await }));
    }
    consumers
}

/// The hostile clients of a run (client-port storm and peer-port storm), and what they saw.
struct Storms {
    storm: Vec<madsim::task::JoinHandle<()>>,
    storm_stats: Arc<Mutex<StormStats>>,
    peer_storm: Vec<madsim::task::JoinHandle<()>>,
    peer_stats: Arc<Mutex<PeerStormStats>>,
}

impl Storms {
    /// Waits for the storm and peer-storm clients to end (each counted into `history`).
    async fn await_clients(&mut self, history: &History) {
        await_tasks(std::mem::take(&mut self.storm), history, "storm client").await;
        await_tasks(std::mem::take(&mut self.peer_storm), history, "peer storm client").await;
    }

    /// Starts the plan's storms (the client storm now or at its time, the peer storm now).
    fn spawn(
        handle: &madsim::runtime::Handle,
        plan: &Plan,
        addrs: &[SocketAddr],
        history: &History,
        rng: &mut NodeRng,
        peer_rng: &mut NodeRng,
    ) -> Storms {
        let storm_stats = Arc::new(Mutex::new(StormStats::default()));
        let storm_config = StormConfig {
            clients: plan.storm_clients,
            kinds: Vec::new(),
            duration: Duration::from_millis(plan.storm_duration_ms()),
        };
        let storm_ip = Ipv4Addr::new(10, 9, 0, 1);
        let storm = if plan.storm_at_ms == 0 {
            storm_config.spawn(handle, storm_ip, addrs, rng, history.clone(), storm_stats.clone())
        } else {
            // A burst later in the run: the clients are made when it starts.
            let (h, addrs, history, stats) =
                (handle.clone(), addrs.to_vec(), history.clone(), storm_stats.clone());
            let mut srng = rt::rng::split(rng);
            let at = Duration::from_millis(plan.storm_at_ms);
            vec![madsim::task::spawn(async move {
                rt::time::sleep(at).await;
                for c in storm_config.spawn(&h, storm_ip, &addrs, &mut srng, history, stats) {
                    let _ = c.await;
                }
            })]
        };

        let peer_stats = Arc::new(Mutex::new(PeerStormStats::default()));
        let peer_storm = if plan.peer_storm_clients > 0 {
            let base = cluster_config(plan.nodes, 0, false, plan.snapshot_entries);
            let cfg = PeerStormConfig {
                clients: plan.peer_storm_clients,
                cluster_id: base.cluster_id,
                secret: base.secret,
                duration: Duration::from_millis(plan.peer_storm_duration_ms()),
            };
            let targets: Vec<PeerTarget> = (0..plan.nodes)
                .map(|i| PeerTarget {
                    node_id: i as u64 + 1,
                    addr: SocketAddr::new(IpAddr::V4(member_ip(i)), RAFT_PORT),
                })
                .collect();
            let ip = Ipv4Addr::new(10, 8, 0, 1);
            spawn_peer_storm(handle, ip, &cfg, &targets, peer_rng, history.clone(), peer_stats.clone())
        } else {
            Vec::new()
        };
        Storms { storm, storm_stats, peer_storm, peer_stats }
    }
}

/// Creates the members' simulated nodes, each with its own disks and slots the run observes.
fn start_members(
    handle: &madsim::runtime::Handle,
    plan: &Plan,
    opts: &Options,
    watch: &Arc<RaftWatch>,
) -> (Vec<MemberSlot>, Vec<madsim::task::NodeId>) {
    let mut slots = Vec::new();
    let mut ids = Vec::new();
    for i in 0..plan.nodes {
        let slot = MemberSlot {
            joining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            disk_faulty: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            refused_corrupt: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            disk: Arc::new(SimDisk::new()),
            dlq: Arc::new(SimDisk::new()),
            node: Arc::new(Mutex::new(None)),
            clock: Arc::new(Mutex::new(None)),
            installs: Default::default(),
        };
        if let Some(l) = plan.disk_latency.get(i) {
            l.apply(&slot.disk);
        }
        let disk: Arc<dyn Disk> = match opts.mutant {
            Some(Mutant::LyingFsync) => Arc::new(LyingDisk(slot.disk.clone())),
            _ => slot.disk.clone(),
        };
        let env = MemberEnv {
            i,
            nodes: plan.nodes,
            snapshot_entries: plan.snapshot_entries,
            retention_max_events: plan.retention_max_events,
            topic_files: (plan.topic_segment_bytes, plan.catchup_chunk_bytes),
            installs: slot.installs.clone(),
            max_entries_per_append: plan.max_entries_per_append,
            dedup_window_ms: plan.dedup_window_ms,
            peer_queue: plan.peer_queue,
            drift: plan.drift_ppm[i],
            disk,
            sim_disk: slot.disk.clone(),
            dlq: slot.dlq.clone(),
            slot: slot.node.clone(),
            clock_slot: slot.clock.clone(),
            joining: slot.joining.clone(),
            disk_faulty: slot.disk_faulty.clone(),
            refused_corrupt: slot.refused_corrupt.clone(),
            watch: watch.clone(),
        };
        let h = handle
            .create_node()
            .name(format!("member-{}", i + 1))
            .ip(IpAddr::V4(member_ip(i)))
            .init(move || member_main(env.clone()))
            .build();
        ids.push(h.id());
        slots.push(slot);
    }
    (slots, ids)
}

/// Publishes `batches` frames of 1–4 keyed events, one at a time, each retried with the same keys
/// until acked (so per-producer order must hold in the log).
/// How long and how often a producer publishes.
#[derive(Debug, Clone, Copy)]
struct ProducerTiming {
    batches: usize,
    think_ms: u64,
    deadline: rt::time::Instant,
}

async fn producer(
    id: u64,
    addrs: Vec<SocketAddr>,
    timing: ProducerTiming,
    history: History,
    mut rng: NodeRng,
) {
    let name = format!("producer-{id}");
    let mut client = ClusterClient::new(addrs, name.clone(), "");
    client.timeout = Duration::from_secs(2);
    client.backoff = Duration::from_millis(rng.random_range(50..200));
    client.max_attempts = 20;
    rt::time::sleep(Duration::from_millis(rng.random_range(0..2_000))).await;
    let mut seq = 1;
    'batches: for _ in 0..timing.batches {
        if rt::time::now() >= timing.deadline {
            break;
        }
        let n = rng.random_range(1..=4);
        let topic = *TOPICS.choose(&mut rng).expect("non-empty");
        let events: Vec<Event> = (seq..seq + n)
            .map(|s| {
                let mut e = Event::new(topic, Priority::Medium, format!("{id}:{s}").into_bytes());
                e.producer_id = id;
                e.sequence = s;
                history.published(&e);
                e
            })
            .collect();
        seq += n;
        loop {
            match client.publish(events.clone()).await {
                Ok(items) => {
                    history.record_acks(&name, &events, &items);
                    break;
                }
                Err(ClientError::Server(e)) if !e.code.is_retryable() => {
                    history.violation(format!("{name}: publish refused: {e}"));
                    break 'batches;
                }
                Err(_) if rt::time::now() >= timing.deadline => {
                    history.count("producer_gave_up");
                    break 'batches;
                }
                Err(_) => history.count("publish_retry_rounds"),
            }
        }
        rt::time::sleep(Duration::from_millis(rng.random_range(0..timing.think_ms.max(1)))).await;
    }
}

/// What a consumer draws first from its RNG.
struct ConsumerDraw {
    topic: &'static str,
    linearizable: bool,
}

impl ConsumerDraw {
    fn draw(rng: &mut NodeRng) -> Self {
        let topic = *TOPICS.choose(rng).expect("non-empty");
        ConsumerDraw { topic, linearizable: rng.random_bool(0.5) }
    }

    /// What a consumer given `rng` will draw, without drawing it.
    fn peek(rng: &NodeRng) -> Self {
        Self::draw(&mut rng.clone())
    }
}

/// How a consumer runs.
#[derive(Debug, Clone, Copy)]
struct ConsumerRun {
    until: rt::time::Instant,
    /// The `StaleReads` mutant: linearizable reads are sent as plain ones.
    stale_reads: bool,
    /// Read linearizably whatever the draw said (the run's one guaranteed linearizable reader).
    force_linearizable: bool,
}

/// How many events a consumer asks for per read.
const PAGE: u32 = 50;

/// Follows one topic with long polls from whichever member answers, checking that offsets come
/// contiguously and in order; records what it saw for the rolled-back-read check.
async fn consumer(c: usize, addrs: Vec<SocketAddr>, history: History, mut rng: NodeRng, how: ConsumerRun) {
    let ConsumerDraw { topic, linearizable } = ConsumerDraw::draw(&mut rng);
    let linearizable = linearizable || how.force_linearizable;
    let mut client = ClusterClient::new(addrs, format!("consumer-{c}"), "");
    client.timeout = Duration::from_secs(3);
    client.max_attempts = 5;
    let mut offset = 0;
    while rt::time::now() < how.until {
        let started = history.read_started();
        let ask_linearizable = linearizable && !how.stale_reads;
        match client.read(topic, offset, PAGE, ask_linearizable, 1_000).await {
            Ok(page) => {
                let read = (topic, offset, PAGE);
                history.read_done(ReadRecord::of_page(
                    &format!("consumer-{c}"),
                    read,
                    linearizable,
                    started,
                    &page,
                ));
                for s in &page.events {
                    if s.offset != offset {
                        history.violation(format!(
                            "consumer-{c}: {topic} expected offset {offset}, got {}",
                            s.offset
                        ));
                        return;
                    }
                    history.consumed(topic, s.offset, &s.event);
                    offset += 1;
                }
            }
            // Retention removed what this consumer was about to read: an explicit answer, the
            // only gap a consumer may see (the checker verifies the policy allowed it).
            Err(e) if e.first_available().is_some_and(|f| f > offset) => {
                let first = e.first_available().unwrap_or(offset);
                history.retention_skip(topic, offset, first);
                offset = first;
            }
            Err(_) => history.count("consumer_retry_rounds"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_restarted_member_keeps_its_clock_steps() {
        let old = NodeClock::new();
        old.step_wall(3_000_000_000);
        let fresh = NodeClock::new();
        let gap = |a: &NodeClock, b: &NodeClock| {
            (i128::from(a.wall_unix_ns()) - i128::from(b.wall_unix_ns())).abs()
        };
        assert!(gap(&old, &fresh) >= 2_999_000_000, "a fresh clock forgets the step");
        continue_clock(&old, &fresh);
        assert!(gap(&old, &fresh) < 1_000_000, "the new incarnation goes on from the old reading");
    }

    #[test]
    fn plans_round_trip_through_toml_and_validate() {
        for seed in 0..50 {
            let plan = Plan::generate(&mut NodeRng::seed_from_u64(seed), Shape::MIXED, DEFAULT_MAX_DRIFT_PPM);
            let text = toml::to_string(&plan).expect("a plan serializes");
            let back: Plan = toml::from_str(&text).expect("and reads back");
            assert_eq!(back, plan, "seed {seed}:\n{text}");
            assert_eq!(back.validate(), Ok(()));
        }
    }

    #[test]
    fn a_plan_naming_a_missing_member_is_refused() {
        let mut plan = Plan::generate(&mut NodeRng::seed_from_u64(1), Shape::FIVE, DEFAULT_MAX_DRIFT_PPM);
        plan.faults.push(Step { at_ms: 1_000, fault: Fault::Isolate { node: plan.nodes } });
        assert!(plan.validate().unwrap_err().contains("outside"));
        let text = "nodes = 3\nproducers = 1\nbatches = 1\nconsumers = 1\ndrift_ppm = [0, 0, 0]\n\
                    faults = [{ at_ms = 100, kind = \"explode\", node = 1 }]\n";
        assert!(toml::from_str::<Plan>(text).is_err());
        let typo = text.replace("kind = \"explode\", node", "kind = \"crash\", down_ms = 5, nod");
        assert!(toml::from_str::<Plan>(&typo).is_err(), "{typo}");
    }
}
