//! Scenarios `cluster`, `cluster3` and `cluster5`: a 3- or 5-node Raft cluster of real
//! `ClusterNode` + `IngestServer` members on simulated TCP and `SimDisk`s, under a seeded fault
//! plan — partitions (isolate a member or whoever leads, random halves, a bridge member, one-way
//! links), packet loss and latency spikes, crashes with `power_fail()` (unsynced writes lost, the
//! last one possibly torn) and restarts, disk write/fsync failures and full disks, pauses, clock
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
use eventstreamcore::node::{ClusterNode, EventLogState};
use eventstreamcore::pipeline::PipelineConfig;
use eventstreamcore::raft::Role;
use eventstreamcore::rt::{self, Disk, DiskError, DiskFault, NodeClock, NodeRng, SimDisk};
use eventstreamcore::server::{Disks, Seams, Server, ServerError};
use eventstreamcore::service::EventService;
use eventstreamcore::wire::AdminRequest;
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use super::{Mutant, Options, RunReport};
use crate::check;
use crate::history::{History, HistoryData, ReadRecord};
use crate::peer_storm::{PeerStormConfig, PeerStormStats, PeerTarget, spawn_peer_storm};
use crate::raft_watch::RaftWatch;
use crate::storm::{StormConfig, StormStats};
use crate::timeline::{Event as TimelineEvent, Ms, Recorder, SpanKind};

const TOPICS: &[&str] = &["orders", "payment", "sensor/temperature"];
const CLIENT_PORT: u16 = 7070;
const RAFT_PORT: u16 = 7170;
/// The ChaCha stream the peer storm draws from (the run's other draws use stream 0).
const PEER_STORM_STREAM: u64 = 0x7065_6572;
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
}

/// How an injected disk fault shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskErrorKind {
    /// Appends and writes fail with an I/O error.
    Write,
    /// fsync fails (nothing becomes durable).
    Fsync,
    /// The disk is full: writes fail with "no space".
    Full,
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
        }
    }

    /// Draws the peer storm (some seeds get 2–4 clients) from `rng`, a stream of its own.
    fn draw_peer_storm(&mut self, rng: &mut NodeRng) {
        self.peer_storm_clients = if rng.random_bool(0.35) { rng.random_range(2..=4) } else { 0 };
    }

    /// Checks a plan read from outside (node indexes in range, faults inside the fault window).
    pub fn validate(&self) -> Result<(), String> {
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
        if self.drift_ppm.len() != self.nodes {
            return Err(format!("drift_ppm has {} values for {} nodes", self.drift_ppm.len(), self.nodes));
        }
        let ok = |n: &usize| *n < self.nodes;
        for f in &self.faults {
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
                | Fault::Rejoin { node, .. } => ok(node),
                Fault::Bridge { bridge, side } => ok(bridge) && side.iter().all(ok),
                Fault::PacketLoss { pct, .. } => *pct <= 100,
                Fault::Slow { min_ms, max_ms, .. } => min_ms < max_ms,
                Fault::IsolateLeader => true,
                Fault::Split { side } => side.iter().all(ok),
                Fault::CrashMany { nodes, .. } => nodes.iter().all(ok),
                Fault::OneWay { from, to } => ok(from) && ok(to),
                Fault::Heal => true,
            };
            if !in_range {
                return Err(format!(
                    "{:?} names a member outside 0..{} (or has an empty range)",
                    f.fault, self.nodes
                ));
            }
        }
        crate::plans::check_fault_order(self)?;
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
            match self.peer_storm_clients {
                0 => String::new(),
                n => format!(", {n} peer-storm clients"),
            },
            self.drift_ppm
        );
        for f in &self.faults {
            let _ = write!(s, " {:.1}s {:?};", f.at_ms as f64 / 1000.0, f.fault);
        }
        s.push_str(" heal at end of window");
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
}

/// What the scenario keeps of a member across restarts.
struct MemberSlot {
    /// Start the next incarnation as a joining node (empty configuration; it is added back).
    joining: Arc<std::sync::atomic::AtomicBool>,
    disk_faulty: Arc<std::sync::atomic::AtomicBool>,
    disk: Arc<SimDisk>,
    /// The member's dead-letter queue (it loses unsynced writes in a power failure too).
    dlq: Arc<SimDisk>,
    node: Arc<Mutex<Option<ClusterNode>>>,
    clock: Arc<Mutex<Option<NodeClock>>>,
}

/// A network fault open until the next heal: (node, or `None` for a band; since; label).
type OpenFault = (Option<usize>, Ms, String);

/// Draws the faults on the run's timeline (when one is recorded): spans with their ends, network
/// conditions as bands, clock steps and membership changes as marks.
#[derive(Clone)]
struct FaultLog {
    rec: Option<Recorder>,
    start: rt::time::Instant,
    /// Isolations and partitions open until the next heal: (node or band, from, label).
    open: Arc<Mutex<Vec<OpenFault>>>,
}

impl FaultLog {
    fn now(&self) -> Ms {
        (rt::time::now() - self.start).as_millis() as Ms
    }

    fn span(&self, node: usize, ms: u64, kind: SpanKind, label: impl Into<String>) {
        if let Some(r) = &self.rec {
            let from = self.now();
            r.record(TimelineEvent::Span { node, from, to: Some(from + ms), kind, label: label.into() });
        }
    }

    fn band(&self, ms: u64, label: impl Into<String>) {
        if let Some(r) = &self.rec {
            let from = self.now();
            r.record(TimelineEvent::NetSpan { from, to: Some(from + ms), label: label.into() });
        }
    }

    fn mark(&self, node: Option<usize>, label: impl Into<String>) {
        if let Some(r) = &self.rec {
            r.record(TimelineEvent::Mark { at: self.now(), node, label: label.into() });
        }
    }

    /// A network fault that lasts until the next heal: on one node's row, or as a band.
    fn until_heal(&self, node: Option<usize>, label: impl Into<String>) {
        if self.rec.is_some() {
            self.open.lock().unwrap_or_else(|e| e.into_inner()).push((node, self.now(), label.into()));
        }
    }

    fn heal(&self) {
        let Some(r) = &self.rec else { return };
        let to = Some(self.now());
        for (node, from, label) in self.open.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            r.record(match node {
                Some(node) => TimelineEvent::Span { node, from, to, kind: SpanKind::Isolated, label },
                None => TimelineEvent::NetSpan { from, to, label },
            });
        }
    }
}

/// What tasks outside the fault loop need of a member (disks and its current incarnation).
#[derive(Clone)]
struct MemberHandles {
    disk: Arc<SimDisk>,
    disk_faulty: Arc<std::sync::atomic::AtomicBool>,
    dlq: Arc<SimDisk>,
    node: Arc<Mutex<Option<ClusterNode>>>,
    joining: Arc<std::sync::atomic::AtomicBool>,
}

impl MemberSlot {
    fn handles(&self) -> MemberHandles {
        MemberHandles {
            disk: self.disk.clone(),
            disk_faulty: self.disk_faulty.clone(),
            dlq: self.dlq.clone(),
            node: self.node.clone(),
            joining: self.joining.clone(),
        }
    }
}

/// The member that leads in the highest term right now, if any.
fn current_leader(slots: &[MemberSlot]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.node.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|n| (i, n.status()))
        })
        .filter(|(_, st)| st.role == Role::Leader && st.failed.is_none())
        .max_by_key(|(_, st)| st.term)
        .map(|(i, _)| i)
}

/// Restores the simulator's default network after `after`, unless another network fault was
/// applied meanwhile (it restores in turn).
fn restore_net_later(
    net: &Arc<madsim::net::NetSim>,
    epoch: &Arc<std::sync::atomic::AtomicU64>,
    after: Duration,
) {
    let mine = epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let (net, epoch) = (net.clone(), epoch.clone());
    madsim::task::spawn(async move {
        rt::time::sleep(after).await;
        if epoch.load(std::sync::atomic::Ordering::SeqCst) == mine {
            net.update_config(|c| *c = madsim::net::Config::default());
        }
    });
}

/// A membership change under faults: remove a member, wipe it, add it back empty.
struct Rejoin {
    handle: madsim::runtime::Handle,
    id: madsim::task::NodeId,
    member: usize,
    slot: MemberHandles,
    addrs: Vec<SocketAddr>,
    down: Duration,
    history: History,
    busy: Arc<std::sync::atomic::AtomicBool>,
    give_up: rt::time::Instant,
    log: FaultLog,
}

impl Rejoin {
    async fn run(self) {
        let node_id = self.member as u64 + 1;
        let mut client = ClusterClient::new(self.addrs.clone(), "admin", SIM_ADMIN_TOKEN);
        client.timeout = Duration::from_secs(3);
        client.backoff = Duration::from_millis(100);
        client.max_attempts = 10;
        if !self.admin(&mut client, AdminRequest::RemoveNode { id: node_id }).await {
            self.history.count("rejoin_remove_gave_up");
            self.busy.store(false, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        self.history.count("members_removed");
        let removed_at = self.log.now();
        self.log.mark(Some(self.member), "removed, wiped");
        // The old incarnation and everything it stored are gone: it comes back as a new member.
        self.handle.kill(self.id);
        *self.slot.node.lock().unwrap_or_else(|e| e.into_inner()) = None;
        wipe(&self.slot.disk);
        wipe(&self.slot.dlq);
        self.slot.joining.store(true, std::sync::atomic::Ordering::SeqCst);
        rt::time::sleep(self.down).await;
        self.handle.kill(self.id);
        self.handle.restart(self.id);
        let add = AdminRequest::AddNode {
            id: node_id,
            raft_addr: SocketAddr::new(IpAddr::V4(member_ip(self.member)), RAFT_PORT).to_string(),
            client_addr: client_addr(self.member).to_string(),
        };
        let added = self.admin(&mut client, add).await;
        if let Some(r) = &self.log.rec {
            let (from, to) = (removed_at, Some(self.log.now()));
            let label = "removed from the cluster".to_string();
            r.record(TimelineEvent::Span { node: self.member, from, to, kind: SpanKind::Removed, label });
        }
        if added {
            self.log.mark(Some(self.member), "added back");
            self.history.count("members_added_back");
        } else {
            self.history.violation(format!(
                "membership: node {node_id} could not be added back after its removal (gave up at the deadline)"
            ));
        }
        self.busy.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Retries an admin request until it succeeds or the deadline passes.
    async fn admin(&self, client: &mut ClusterClient, req: AdminRequest) -> bool {
        loop {
            match client.admin(req.clone()).await {
                Ok(_) => return true,
                Err(_) if rt::time::now() >= self.give_up => return false,
                Err(_) => {
                    self.history.count("admin_retry_rounds");
                    rt::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

/// "n1, n3" for member indexes.
fn names(side: &[usize]) -> String {
    side.iter().map(|n| format!("n{}", n + 1)).collect::<Vec<_>>().join(", ")
}

/// Deletes every file of a simulated disk, durably.
fn wipe(disk: &SimDisk) {
    for name in disk.list("").unwrap_or_default() {
        let _ = disk.remove(&name);
    }
    let _ = disk.sync_dir();
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
    drift: i64,
    disk: Arc<dyn Disk>,
    dlq: Arc<dyn Disk>,
    slot: Arc<Mutex<Option<ClusterNode>>>,
    clock_slot: Arc<Mutex<Option<NodeClock>>>,
    joining: Arc<std::sync::atomic::AtomicBool>,
    /// A disk fault is injected right now (a start that fails on it is expected).
    disk_faulty: Arc<std::sync::atomic::AtomicBool>,
    watch: Arc<RaftWatch>,
}

/// Starts (or restarts) a member: recovers from its disk, serves clients until killed.
async fn member_main(env: MemberEnv) {
    let MemberEnv {
        i,
        nodes,
        snapshot_entries,
        drift,
        disk,
        dlq,
        slot,
        clock_slot,
        joining,
        disk_faulty,
        watch,
    } = env;
    let clock = NodeClock::new();
    if drift != 0 {
        clock.set_drift_ppm(drift);
    }
    *clock_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(clock.clone());
    let join = joining.load(std::sync::atomic::Ordering::SeqCst);
    let mut config = Config::default();
    config.node.id = i as u64 + 1;
    config.node.name = format!("sim-{}", i + 1);
    config.cluster = cluster_config(nodes, i, join, snapshot_entries);
    config.pipeline = pipeline_config();
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
    // The production assembly, with simulated seams: power-fail disks, this member's drifting
    // clock, the per-round Raft watch.
    let seams = Seams {
        disks: Disks::Given { log: disk, dlq },
        clock,
        rng: rt::node_rng(),
        observer: Some(watch),
        repair: false,
        on_node: Some(Box::new(move |node: &ClusterNode| {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(node.clone());
        })),
    };
    let server = match Server::start(&config, seams).await {
        Ok(s) => s,
        // An operator restarted it while its disk still fails (a disk fault's own restart
        // comes later): like the real process, it exits with the error.
        Err(e @ ServerError::Node { .. }) if disk_faulty.load(std::sync::atomic::Ordering::SeqCst) => {
            tracing::warn!(member = i + 1, error = %e, "member cannot start on a failing disk; it stays down");
            return;
        }
        Err(e) => panic!("member {} cannot start: {e}", i + 1),
    };
    let _ = server.run().await;
}

/// The token of the simulated operator's admin credential (membership changes need one).
const SIM_ADMIN_TOKEN: &str = "sim-admin-token";

/// Runs the scenario inside the current simulator runtime.
pub async fn run(opts: Options, shape: Shape) -> RunReport {
    let handle = madsim::runtime::Handle::current();
    let net = madsim::net::NetSim::current();
    let mut rng = rt::node_rng();
    // The peer storm draws from another stream of the same key: `rng` is not advanced, so every
    // other draw of the run (and the golden runs) stays what it was.
    let mut peer_rng = rng.clone();
    peer_rng.set_stream(PEER_STORM_STREAM);
    let max_drift = opts.max_drift_ppm.unwrap_or(DEFAULT_MAX_DRIFT_PPM);
    let mut plan = Plan::generate(&mut rng, shape, max_drift);
    plan.draw_peer_storm(&mut peer_rng);
    if let Some(text) = &opts.plan {
        // The seed still draws its plan first, so the rest of the run sees the same random stream.
        plan = match toml::from_str(text) {
            Ok(p) => p,
            Err(e) => panic!("the given plan is not a valid `cluster` plan: {e}"),
        };
        plan.validate().unwrap_or_else(|e| panic!("the given plan is not usable: {e}"));
    }
    let description = plan.describe();
    *opts.plan_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(description.clone());
    let log = FaultLog { rec: opts.timeline.clone(), start: rt::time::now(), open: Arc::default() };
    if let Some(r) = &log.rec {
        r.set_nodes((0..plan.nodes).map(|i| format!("n{}", i + 1)).collect());
        for (node, ppm) in plan.drift_ppm.iter().enumerate() {
            r.record(TimelineEvent::Drift { node, ppm: *ppm });
        }
    }
    *opts.plan_toml_slot.lock().unwrap_or_else(|e| e.into_inner()) = toml::to_string(&plan).ok();
    let history = History::new();
    let start = rt::time::now();
    let watch = Arc::new(
        RaftWatch::new(move || (rt::time::now() - start).as_millis() as u64)
            .with_timeline(opts.timeline.clone()),
    );

    // --- members ---------------------------------------------------------------------------------
    let (slots, ids) = start_members(&handle, &plan, &opts, &watch);
    let addrs: Vec<SocketAddr> = (0..plan.nodes).map(client_addr).collect();

    // --- clients ---------------------------------------------------------------------------------
    let t0 = rt::time::now();
    let mut producers = Vec::new();
    for p in 0..plan.producers {
        let node = handle
            .create_node()
            .name(format!("producer-{p}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 1, 0, p as u8 + 1)))
            .build();
        let (history, mut addrs) = (history.clone(), addrs.clone());
        let timing = ProducerTiming {
            batches: plan.batches,
            think_ms: plan.think_ms,
            deadline: t0 + Duration::from_millis(plan.deadline_ms),
        };
        let mut prng = rt::rng::split(&mut rng);
        addrs.shuffle(&mut prng);
        producers.push(node.spawn(async move { producer(p as u64 + 1, addrs, timing, history, prng).await }));
    }
    let mut consumers = Vec::new();
    let consumer_rngs: Vec<(Vec<SocketAddr>, NodeRng)> = (0..plan.consumers)
        .map(|_| {
            let (mut addrs, mut crng) = (addrs.clone(), rt::rng::split(&mut rng));
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
            stale_reads: opts.mutant == Some(Mutant::StaleReads),
            force_linearizable: none_linearizable && c == 0,
        };
        consumers.push(node.spawn(async move { consumer(c, addrs, history, crng, how).await }));
    }

    let storm_stats = Arc::new(Mutex::new(StormStats::default()));
    let storm_config = StormConfig {
        clients: plan.storm_clients,
        kinds: Vec::new(),
        duration: Duration::from_millis(
            plan.storm_ms.unwrap_or(plan.fault_window_ms.saturating_sub(plan.storm_at_ms)),
        ),
    };
    let storm_ip = Ipv4Addr::new(10, 9, 0, 1);
    let storm = if plan.storm_at_ms == 0 {
        storm_config.spawn(&handle, storm_ip, &addrs, &mut rng, history.clone(), storm_stats.clone())
    } else {
        // A burst later in the run: the clients are made when it starts.
        let (h, addrs, history, stats) =
            (handle.clone(), addrs.clone(), history.clone(), storm_stats.clone());
        let mut srng = rt::rng::split(&mut rng);
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
            duration: Duration::from_millis(plan.fault_window_ms.min(10_000)),
        };
        let targets: Vec<PeerTarget> = (0..plan.nodes)
            .map(|i| PeerTarget {
                node_id: i as u64 + 1,
                addr: SocketAddr::new(IpAddr::V4(member_ip(i)), RAFT_PORT),
            })
            .collect();
        let ip = Ipv4Addr::new(10, 8, 0, 1);
        spawn_peer_storm(&handle, ip, &cfg, &targets, &mut peer_rng, history.clone(), peer_stats.clone())
    } else {
        Vec::new()
    };

    // --- faults ----------------------------------------------------------------------------------
    let mut tear_rng = rt::rng::split(&mut rng);
    let mut down_until = vec![t0; plan.nodes];
    let fault_end = t0 + Duration::from_millis(plan.fault_window_ms);
    // Network conditions (loss, latency) are global in the simulator: each one restores the
    // defaults when it ends unless a later one replaced it meanwhile.
    let net_epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let admin_node = handle.create_node().name("admin").ip(IpAddr::V4(Ipv4Addr::new(10, 4, 0, 1))).build();
    let mut rejoins = Vec::new();
    let rejoin_busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for Step { at_ms, fault } in &plan.faults {
        rt::time::sleep_until(t0 + Duration::from_millis(*at_ms)).await;
        tracing::info!(at_ms, kind = fault.kind(), members = %fault.member_names(), "fault injected: {fault:?} (plan numbering: node = 0 is n1)");
        match fault {
            Fault::Isolate { node } => {
                net.clog_node(ids[*node]);
                log.until_heal(Some(*node), "isolated");
            }
            Fault::IsolateLeader => match current_leader(&slots) {
                Some(l) => {
                    tracing::info!(member = %format!("n{}", l + 1), "fault injected: the leader is isolated");
                    net.clog_node(ids[l]);
                    log.until_heal(Some(l), "leader isolated");
                    history.count("leader_isolated");
                }
                None => history.count("isolate_leader_without_leader"),
            },
            Fault::Split { side } => {
                for a in 0..plan.nodes {
                    for b in 0..plan.nodes {
                        if side.contains(&a) != side.contains(&b) {
                            net.clog_link(ids[a], ids[b]);
                        }
                    }
                }
                log.until_heal(None, format!("split {} | rest", names(side)));
            }
            Fault::Bridge { bridge, side } => {
                for a in (0..plan.nodes).filter(|n| n != bridge) {
                    for b in (0..plan.nodes).filter(|n| n != bridge) {
                        if side.contains(&a) != side.contains(&b) {
                            net.clog_link(ids[a], ids[b]);
                        }
                    }
                }
                log.until_heal(None, format!("bridge n{}: {} | rest", bridge + 1, names(side)));
            }
            Fault::OneWay { from, to } => {
                net.clog_link(ids[*from], ids[*to]);
                log.until_heal(None, format!("n{} → n{} cut", from + 1, to + 1));
            }
            Fault::Heal => {
                heal(&net, &ids);
                log.heal();
            }
            Fault::PacketLoss { pct, ms } => {
                log.band(*ms, format!("{pct}% packet loss"));
                net.update_config(|c| c.packet_loss_rate = f64::from(*pct) / 100.0);
                restore_net_later(&net, &net_epoch, Duration::from_millis(*ms));
            }
            Fault::Slow { min_ms, max_ms, ms } => {
                let range = Duration::from_millis(*min_ms)..Duration::from_millis(*max_ms);
                net.update_config(|c| c.send_latency = range);
                log.band(*ms, format!("latency {min_ms}–{max_ms} ms"));
                restore_net_later(&net, &net_epoch, Duration::from_millis(*ms));
            }
            Fault::Crash { node, down_ms } => {
                if rt::time::now() < down_until[*node] {
                    history.count("crash_while_down_skipped");
                    continue;
                }
                down_until[*node] = rt::time::now() + Duration::from_millis(*down_ms);
                crash(
                    &handle,
                    ids[*node],
                    &slots[*node].handles(),
                    &mut tear_rng,
                    Duration::from_millis(*down_ms),
                );
                log.span(*node, *down_ms, SpanKind::Down, "crash, power fail");
                history.count("crashes");
            }
            Fault::CrashMany { nodes, down_ms } => {
                for node in nodes {
                    if rt::time::now() < down_until[*node] {
                        continue;
                    }
                    down_until[*node] = rt::time::now() + Duration::from_millis(*down_ms);
                    crash(
                        &handle,
                        ids[*node],
                        &slots[*node].handles(),
                        &mut tear_rng,
                        Duration::from_millis(*down_ms),
                    );
                    log.span(*node, *down_ms, SpanKind::Down, "power cut (several members)");
                    history.count("crashes");
                }
            }
            Fault::Disk { node, error, down_ms } => {
                if rt::time::now() < down_until[*node] {
                    continue;
                }
                let down = Duration::from_millis(*down_ms);
                down_until[*node] = rt::time::now() + down;
                let disk = &slots[*node].disk;
                slots[*node].disk_faulty.store(true, std::sync::atomic::Ordering::SeqCst);
                disk.inject(match error {
                    DiskErrorKind::Write => DiskFault::FailWrites(u32::MAX),
                    DiskErrorKind::Fsync => DiskFault::FailSyncs(u32::MAX),
                    DiskErrorKind::Full => DiskFault::Capacity(disk.used_bytes()),
                });
                history.count("disk_faults");
                log.span(*node, *down_ms, SpanKind::DiskFault, format!("disk: {error:?}"));
                // The member notices at its next write and stops replicating (serving reads);
                // then an operator power-cycles it with the disk fixed.
                let (h, id, slot, mut trng) =
                    (handle.clone(), ids[*node], slots[*node].handles(), rt::rng::split(&mut tear_rng));
                madsim::task::spawn(async move {
                    rt::time::sleep(down).await;
                    slot.disk.clear_faults();
                    slot.disk_faulty.store(false, std::sync::atomic::Ordering::SeqCst);
                    crash(&h, id, &slot, &mut trng, Duration::from_millis(100));
                });
            }
            Fault::Rejoin { node, down_ms } => {
                if rejoin_busy.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    // One membership change at a time (single-server changes).
                    history.count("rejoin_skipped_busy");
                    continue;
                }
                down_until[*node] = fault_end + Duration::from_secs(5);
                let job = Rejoin {
                    handle: handle.clone(),
                    id: ids[*node],
                    member: *node,
                    slot: slots[*node].handles(),
                    addrs: addrs.clone(),
                    down: Duration::from_millis(*down_ms),
                    history: history.clone(),
                    busy: rejoin_busy.clone(),
                    log: log.clone(),
                    give_up: fault_end + Duration::from_secs(30),
                };
                rejoins.push(admin_node.spawn(job.run()));
            }
            Fault::Pause { node, ms } => {
                handle.pause(ids[*node]);
                log.span(*node, *ms, SpanKind::Paused, format!("paused {:.1} s", *ms as f64 / 1000.0));
                let (h, id, ms) = (handle.clone(), ids[*node], *ms);
                madsim::task::spawn(async move {
                    rt::time::sleep(Duration::from_millis(ms)).await;
                    h.resume(id);
                });
            }
            Fault::StepClock { node, ms } => {
                if let Some(c) = slots[*node].clock.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    c.step_wall(i128::from(*ms) * 1_000_000);
                }
                log.mark(Some(*node), format!("clock {:+.1} s", *ms as f64 / 1000.0));
            }
        }
    }
    rt::time::sleep_until(fault_end).await;
    heal(&net, &ids);
    log.heal();
    log.mark(None, "faults end: heal");
    net_epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    net.update_config(|c| *c = madsim::net::Config::default());
    match opts.mutant {
        Some(Mutant::LostQuorum) => ids.iter().for_each(|id| net.clog_node(*id)),
        Some(Mutant::StrandedMember) => net.clog_node(ids[plan.nodes - 1]),
        _ => {}
    }
    // Crashed members come back within 3 s, paused ones within 2 s.
    rt::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        handle.resume(*id);
    }
    // Members removed for a membership change are added back (the admin retries through faults).
    for r in rejoins {
        if r.await.is_err() {
            history.violation("rejoin task failed");
        }
    }

    // --- liveness: a leader commits a new write within the bound --------------------------------
    let (liveness_failed, liveness_ms) = check_liveness(&handle, &history, &addrs).await;

    await_tasks(producers, &history, "producer").await;
    await_tasks(consumers, &history, "consumer").await;
    await_tasks(storm, &history, "storm client").await;
    await_tasks(peer_storm, &history, "peer storm client").await;

    // --- convergence -----------------------------------------------------------------------------
    let converged_states = await_convergence(&slots).await;
    let converged = converged_states.is_some();
    let states = converged_states.unwrap_or_default();
    let data = history.snapshot();
    let failure = judge(&watch, liveness_failed, converged, &slots, &data, &states, &plan);
    let mut d = eventstreamcore::node::state::Fnv64::default();
    for (id, s) in &states {
        d.write_u64(*id);
        d.write_u64(s.digest());
    }
    d.write_u64(data.acks.len() as u64);
    for (k, v) in &data.counters {
        d.write(k.as_bytes());
        d.write_u64(*v);
    }
    digest_the_run(&mut d, &data, &watch, (rt::time::now() - start).as_millis() as u64);
    let stored = states.first().map_or(0, |s| s.1.events_stored());
    let summary = format!(
        "{description}\nresult: {stored} events stored, {} acks ({} duplicate), {} consumed, liveness {liveness_ms} ms after healing; {} Raft rounds checked; counters {:?}",
        data.acks.len(),
        data.acks.iter().filter(|a| a.duplicate).count(),
        data.consumed.len(),
        watch.rounds(),
        data.counters,
    );
    let disk = disk_tally(&slots);
    let summary = format!(
        "{summary}\ndisks: {} power failures, {} torn writes, {} injected failures",
        disk.power_failures, disk.torn_writes, disk.injected_failures
    );
    let summary = if plan.storm_clients > 0 {
        format!("{summary}\n{}", storm_stats.lock().unwrap_or_else(|e| e.into_inner()).describe())
    } else {
        summary
    };
    let summary = if plan.peer_storm_clients > 0 {
        format!("{summary}\n{}", peer_stats.lock().unwrap_or_else(|e| e.into_inner()).describe())
    } else {
        summary
    };
    for id in &ids {
        handle.kill(*id);
    }
    if let Some(r) = &opts.timeline {
        let base = r.snapshot().title;
        r.set_title(format!(
            "{base} — {} members, {} faults — {}",
            plan.nodes,
            plan.faults.len(),
            failure.as_ref().map_or("passed".to_string(), |f| format!("FAILED: {}", f.checker))
        ));
        r.finish((rt::time::now() - start).as_millis() as Ms);
    }
    RunReport { digest: d.finish(), summary, failure, raft_log: Some(watch.summary()), disk }
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
            disk: Arc::new(SimDisk::new()),
            dlq: Arc::new(SimDisk::new()),
            node: Arc::new(Mutex::new(None)),
            clock: Arc::new(Mutex::new(None)),
        };
        let disk: Arc<dyn Disk> = match opts.mutant {
            Some(Mutant::LyingFsync) => Arc::new(LyingDisk(slot.disk.clone())),
            _ => slot.disk.clone(),
        };
        let env = MemberEnv {
            i,
            nodes: plan.nodes,
            snapshot_entries: plan.snapshot_entries,
            drift: plan.drift_ppm[i],
            disk,
            dlq: slot.dlq.clone(),
            slot: slot.node.clone(),
            clock_slot: slot.clock.clone(),
            joining: slot.joining.clone(),
            disk_faulty: slot.disk_faulty.clone(),
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

/// Whether the healed cluster commits a new write within [`LIVENESS_BOUND`] (the failure, also
/// recorded as a violation), and how long it took in ms.
async fn check_liveness(
    handle: &madsim::runtime::Handle,
    history: &History,
    addrs: &[SocketAddr],
) -> (Option<String>, u128) {
    let healed = rt::time::now();
    let live_node = handle.create_node().name("liveness").ip(IpAddr::V4(Ipv4Addr::new(10, 3, 0, 1))).build();
    let (lh, laddrs) = (history.clone(), addrs.to_vec());
    let live = live_node
        .spawn(async move {
            let mut c = ClusterClient::new(laddrs, "liveness", "");
            c.timeout = Duration::from_secs(2);
            c.backoff = Duration::from_millis(100);
            c.max_attempts = 1_000;
            let mut e = Event::new("liveness", Priority::High, "ping");
            e.producer_id = 999_999;
            e.sequence = 1;
            lh.published(&e);
            rt::time::timeout(LIVENESS_BOUND, c.publish(vec![e.clone()]))
                .await
                .map(|r| r.map(|items| (items, e)))
        })
        .await;
    let liveness_failed = match live {
        Ok(Ok(Ok((items, e)))) => {
            history.record_acks("liveness", &[e], &items);
            None
        }
        Ok(Ok(Err(e))) => Some(format!("liveness: the healed cluster refused a write: {e}")),
        Ok(Err(_)) => Some(format!("liveness: no write committed within {LIVENESS_BOUND:?} of healing")),
        Err(_) => Some("liveness client task failed".to_string()),
    };
    if let Some(l) = &liveness_failed {
        history.violation(l.clone());
    }
    let liveness_ms = (rt::time::now() - healed).as_millis();
    (liveness_failed, liveness_ms)
}

/// Waits for every task, recording a violation for each that failed.
async fn await_tasks<T, E>(tasks: Vec<impl Future<Output = Result<T, E>>>, history: &History, what: &str) {
    for t in tasks {
        if t.await.is_err() {
            history.violation(format!("{what} task failed"));
        }
    }
}

/// Waits (up to 20 s) for the members to converge: every member applied the leader's commit
/// index and the leader's pipeline processed every topic to its end. Their states, if they did.
async fn await_convergence(slots: &[MemberSlot]) -> Option<Vec<(u64, EventLogState)>> {
    for _ in 0..200 {
        let nodes: Vec<Option<ClusterNode>> =
            slots.iter().map(|s| s.node.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect();
        if nodes.iter().all(Option::is_some) {
            let nodes: Vec<ClusterNode> = nodes.into_iter().flatten().collect();
            let st: Vec<_> = nodes.iter().map(|n| n.status()).collect();
            let leader_commit = st.iter().filter(|s| s.role == Role::Leader).map(|s| s.commit).max();
            let leader = nodes.iter().zip(&st).find(|(_, s)| s.role == Role::Leader).map(|(n, _)| n);
            // Quiescent: every member applied everything, and the leader's pipeline has handled
            // and checkpointed every topic to its end (it resumed after whatever failovers).
            let processed = leader.is_some_and(|l| {
                let state = l.state();
                state.topics().all(|t| {
                    state.processing().positions.get(t).copied().unwrap_or(0)
                        == state.topic_log(t).len() as u64
                })
            });
            if let Some(lc) = leader_commit
                && st.iter().all(|s| s.applied == lc)
                && processed
            {
                return Some(nodes.iter().map(|n| (n.node_id(), n.state().clone())).collect());
            }
        }
        rt::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The run's verdict, first failure first: a Raft invariant broken, no liveness, no
/// convergence, then the checkers over the history and the converged logs.
fn judge(
    watch: &RaftWatch,
    liveness_failed: Option<String>,
    converged: bool,
    slots: &[MemberSlot],
    data: &HistoryData,
    states: &[(u64, EventLogState)],
    plan: &Plan,
) -> Option<check::CheckFailure> {
    if let Some(v) = watch.violation() {
        Some(check::CheckFailure {
            checker: "raft_invariants",
            detail: format!(
                "at {:.3}s on n{}: {}\nthe rounds before it (all members):\n  {}",
                v.at_ms as f64 / 1000.0,
                v.node,
                v.what,
                v.excerpt.join("\n  ")
            ),
        })
    } else if let Some(l) = liveness_failed {
        Some(check::CheckFailure { checker: "liveness", detail: l })
    } else if !converged {
        let st: Vec<String> = slots
            .iter()
            .map(|s| match s.node.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                Some(n) => format!("{:?}", n.status()),
                None => "down".into(),
            })
            .collect();
        Some(check::CheckFailure {
            checker: "replicas_converge",
            detail: format!(
                "no convergence (every member applied the leader's commit index, the leader's pipeline \
             processed every topic to its end) 20 s after healing: {st:?}"
            ),
        })
    } else {
        check::check_cluster_run(data, states, min_acks(plan)).err().map(|mut f| {
            if let Some((_, log)) = states.first() {
                let excerpt = check::history_excerpt(data, log, &f.detail);
                if !excerpt.is_empty() {
                    f.detail =
                        format!("{}\nhistory excerpt (the log of node {}):{excerpt}", f.detail, states[0].0);
                }
            }
            f
        })
    }
}

/// What the members' disks (WAL and DLQ) saw, summed.
fn disk_tally(slots: &[MemberSlot]) -> eventstreamcore::rt::disk::SimDiskStats {
    let mut t = eventstreamcore::rt::disk::SimDiskStats::default();
    for s in slots.iter().flat_map(|s| [s.disk.stats(), s.dlq.stats()]) {
        t.writes += s.writes;
        t.syncs += s.syncs;
        t.power_failures += s.power_failures;
        t.torn_writes += s.torn_writes;
        t.injected_failures += s.injected_failures;
    }
    t
}

/// Adds to the run's digest what two runs of one seed must also agree on: every ack in the order
/// received, each member's roles and terms as they changed (and when), the leader of each term,
/// the committed Raft log, and the simulated time at the end.
fn digest_the_run(
    d: &mut eventstreamcore::node::state::Fnv64,
    data: &crate::history::HistoryData,
    watch: &RaftWatch,
    end_ms: u64,
) {
    for a in &data.acks {
        d.write(a.client.as_bytes());
        d.write_u64(a.producer);
        d.write_u64(a.sequence);
        d.write(a.topic.as_bytes());
        d.write_u64(a.offset);
        d.write(&[u8::from(a.duplicate)]);
    }
    for c in watch.role_changes() {
        d.write_u64(c.at_ms);
        d.write_u64(c.node);
        d.write(&[c.role as u8]);
        d.write_u64(c.term);
    }
    for (term, node) in watch.leaders() {
        d.write_u64(term);
        d.write_u64(node);
    }
    for (index, e) in watch.committed() {
        d.write_u64(index);
        d.write_u64(e.term);
        d.write_u64(e.digest);
    }
    d.write_u64(end_ms);
}

/// The fewest acked events a run must carry: one per producer (each publishes 5 or more batches
/// over tens of seconds; a run below this checked next to nothing).
fn min_acks(plan: &Plan) -> usize {
    plan.producers
}

/// Kills a member, loses its unsynced writes (tearing the last one) and restarts it after `down`.
fn crash(
    handle: &madsim::runtime::Handle,
    id: madsim::task::NodeId,
    slot: &MemberHandles,
    tear_rng: &mut NodeRng,
    down: Duration,
) {
    handle.kill(id);
    *slot.node.lock().unwrap_or_else(|e| e.into_inner()) = None;
    slot.disk.power_fail(Some(tear_rng));
    slot.dlq.power_fail(Some(tear_rng));
    let h = handle.clone();
    madsim::task::spawn(async move {
        rt::time::sleep(down).await;
        // madsim's restart does not reset the node's sockets; a kill does. If the node was
        // crashed and restarted again meanwhile, this is one more (clean) process restart.
        h.kill(id);
        h.restart(id);
    });
}

fn heal(net: &madsim::net::NetSim, ids: &[madsim::task::NodeId]) {
    for &a in ids {
        net.unclog_node(a);
        for &b in ids {
            if a != b {
                net.unclog_link(a, b);
            }
        }
    }
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
                history.read_done(ReadRecord {
                    client: format!("consumer-{c}"),
                    topic: topic.to_string(),
                    linearizable,
                    started,
                    end_offset: page.end_offset,
                    from: offset,
                    max: u64::from(PAGE),
                    keys: page.events.iter().map(|s| s.event.idempotency_key()).collect(),
                    completed: 0,
                });
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
            Err(_) => history.count("consumer_retry_rounds"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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
