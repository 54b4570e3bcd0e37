//! The fault injector of the `cluster` scenarios: it plays a [`Plan`]'s faults at their times —
//! partitions, packet loss and latency, crashes with power failure, disk faults, pauses, clock
//! steps, membership changes — draws them on the timeline, heals the network when the fault
//! window ends, and brings every member back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstreamcore::client::ClusterClient;
use eventstreamcore::node::ClusterNode;
use eventstreamcore::raft::Role;
use eventstreamcore::rt::{self, Disk, DiskFault, NodeRng, SimDisk};
use eventstreamcore::transport::lossy::{self, InstallGuard, LinkFaults, LinkSpec, LinkStats};
use eventstreamcore::wire::AdminRequest;

use super::{
    DiskErrorKind, Fault, MemberSlot, Plan, RAFT_PORT, SIM_ADMIN_TOKEN, Step, client_addr, member_ip,
};
use crate::history::History;
use crate::peer_storm::PeerStormKind;
use crate::scenarios::Mutant;
use crate::storm::StormKind;
use crate::timeline::{Event as TimelineEvent, Ms, Recorder, SpanKind};

mod bitrot;
mod rare;
mod takeover;

/// Plays a plan's faults against the members (see the module doc).
pub(super) struct FaultInjector<'a> {
    /// Told of each crash: a member killed inside a round may have persisted (and acked) more
    /// than the last round the watch saw of it.
    pub watch: Arc<crate::raft_watch::RaftWatch>,
    pub handle: madsim::runtime::Handle,
    pub net: Arc<madsim::net::NetSim>,
    pub ids: &'a [madsim::task::NodeId],
    pub slots: &'a [MemberSlot],
    pub addrs: &'a [SocketAddr],
    pub history: History,
    pub log: FaultLog,
    /// Where the plan's times count from.
    pub t0: rt::time::Instant,
    /// Tears the last unsynced write of a crashed member's disks.
    tear_rng: NodeRng,
    /// A member already down until then skips a crash or disk fault aimed at it.
    down_until: Vec<rt::time::Instant>,
    fault_end: rt::time::Instant,
    /// Network conditions (loss, latency) are global in the simulator: each one restores the
    /// defaults when it ends unless a later one replaced it meanwhile.
    net_epoch: Arc<AtomicU64>,
    admin_node: madsim::runtime::NodeHandle,
    rejoins: Vec<madsim::task::JoinHandle<()>>,
    /// One membership change at a time (single-server changes).
    rejoin_busy: Arc<AtomicBool>,
    /// A member whose disk has a crash armed is not removed for a membership change until then
    /// (wiping its disk would run into the crash).
    armed_until: Vec<rt::time::Instant>,
    /// The fault layer under the peer transport, installed for the run while the injector lives.
    links: Arc<LinkFaults>,
    _links_installed: InstallGuard,
}

/// The stream the lossy links' per-frame choices are drawn from.
const LINK_FRAMES_STREAM: u64 = 0x6672_616d;

/// What the injector is given (the rest it makes itself).
pub(super) struct InjectorParts<'a> {
    pub handle: madsim::runtime::Handle,
    pub net: Arc<madsim::net::NetSim>,
    pub ids: &'a [madsim::task::NodeId],
    pub slots: &'a [MemberSlot],
    pub addrs: &'a [SocketAddr],
    pub history: History,
    pub log: FaultLog,
    pub t0: rt::time::Instant,
    pub watch: Arc<crate::raft_watch::RaftWatch>,
}

impl<'a> FaultInjector<'a> {
    /// An injector for `plan`; draws its tear stream from `rng` and creates the admin node (in
    /// that order, as the run always has).
    pub fn new(parts: InjectorParts<'a>, plan: &Plan, rng: &mut NodeRng) -> Self {
        let InjectorParts { handle, net, ids, slots, addrs, history, log, t0, watch } = parts;
        let tear_rng = rt::rng::split(rng);
        // Another stream of the same key: `rng` is not advanced, so runs without lossy links
        // draw what they always drew.
        let mut frames_rng = rng.clone();
        frames_rng.set_stream(LINK_FRAMES_STREAM);
        let links = LinkFaults::new(frames_rng);
        let admin_node =
            handle.create_node().name("admin").ip(IpAddr::V4(Ipv4Addr::new(10, 4, 0, 1))).build();
        FaultInjector {
            tear_rng,
            down_until: vec![t0; plan.nodes],
            fault_end: t0 + Duration::from_millis(plan.fault_window_ms),
            net_epoch: Arc::new(AtomicU64::new(0)),
            admin_node,
            rejoins: Vec::new(),
            rejoin_busy: Arc::new(AtomicBool::new(false)),
            armed_until: vec![t0; plan.nodes],
            _links_installed: lossy::install(links.clone()),
            links,
            handle,
            net,
            ids,
            slots,
            addrs,
            history,
            log,
            t0,
            watch,
        }
    }

    /// Plays every fault at its time, heals when the window ends (or, for the liveness and
    /// convergence mutants, breaks the network for good), waits for crashed and paused members
    /// to come back and for removed members to be added back. What the lossy links did.
    pub async fn run(mut self, plan: &Plan, mutant: Option<Mutant>) -> LinkStats {
        for Step { at_ms, fault } in &plan.faults {
            rt::time::sleep_until(self.t0 + Duration::from_millis(*at_ms)).await;
            tracing::info!(at_ms, kind = fault.kind(), members = %fault.member_names(), "fault injected: {fault:?} (plan numbering: node = 0 is n1)");
            self.apply(fault);
        }
        rt::time::sleep_until(self.fault_end).await;
        heal(&self.net, self.ids);
        self.links.heal();
        self.log.heal();
        self.log.mark(None, "faults end: heal");
        self.net_epoch.fetch_add(1, Ordering::SeqCst);
        self.net.update_config(|c| *c = madsim::net::Config::default());
        match mutant {
            Some(Mutant::LostQuorum) => self.ids.iter().for_each(|id| self.net.clog_node(*id)),
            Some(Mutant::StrandedMember) => self.net.clog_node(self.ids[plan.nodes - 1]),
            _ => {}
        }
        // Crashed members come back within 3 s, paused ones within 2 s.
        rt::time::sleep(Duration::from_secs(3)).await;
        for id in self.ids {
            self.handle.resume(*id);
        }
        // Members removed for a membership change are added back (the admin retries through faults).
        for r in std::mem::take(&mut self.rejoins) {
            if r.await.is_err() {
                self.history.violation("rejoin task failed");
            }
        }
        self.links.stats()
    }

    /// Applies one fault now.
    fn apply(&mut self, fault: &Fault) {
        match fault {
            Fault::Isolate { .. }
            | Fault::IsolateLeader
            | Fault::Split { .. }
            | Fault::Bridge { .. }
            | Fault::OneWay { .. }
            | Fault::Heal => self.partition(fault),
            Fault::PacketLoss { pct, ms } => {
                self.log.band(*ms, format!("{pct}% packet loss"));
                self.net.update_config(|c| c.packet_loss_rate = f64::from(*pct) / 100.0);
                restore_net_later(&self.net, &self.net_epoch, Duration::from_millis(*ms));
            }
            Fault::Slow { min_ms, max_ms, ms } => {
                let range = Duration::from_millis(*min_ms)..Duration::from_millis(*max_ms);
                self.net.update_config(|c| c.send_latency = range);
                self.log.band(*ms, format!("latency {min_ms}–{max_ms} ms"));
                restore_net_later(&self.net, &self.net_epoch, Duration::from_millis(*ms));
            }
            Fault::Crash { node, down_ms } => {
                if rt::time::now() < self.down_until[*node] {
                    self.history.count("crash_while_down_skipped");
                    return;
                }
                self.crash_member(*node, *down_ms, "crash, power fail");
            }
            Fault::CrashMany { nodes, down_ms } => {
                for node in nodes {
                    if rt::time::now() < self.down_until[*node] {
                        continue;
                    }
                    self.crash_member(*node, *down_ms, "power cut (several members)");
                }
            }
            Fault::Disk { node, error, down_ms } => self.disk_fault(*node, *error, *down_ms),
            Fault::Rejoin { node, down_ms } => self.rejoin(*node, *down_ms),
            Fault::DiskCrash { node, after_ops, down_ms } => self.disk_crash(*node, *after_ops, *down_ms),
            Fault::BitRot { node, restart_ms, files } => self.bit_rot(*node, *restart_ms, files.as_deref()),
            Fault::Pause { node, ms } => {
                self.handle.pause(self.ids[*node]);
                let label = format!("paused {:.1} s", *ms as f64 / 1000.0);
                self.log.span(*node, *ms, SpanKind::Paused, label);
                let (h, id, ms) = (self.handle.clone(), self.ids[*node], *ms);
                madsim::task::spawn(async move {
                    rt::time::sleep(Duration::from_millis(ms)).await;
                    h.resume(id);
                });
            }
            Fault::LossyLinks { .. } | Fault::StallLink { .. } => self.lossy_links(fault),
            Fault::CutLeaderPeers { ms, pause_ms } => self.cut_leader_peers(*ms, *pause_ms),
            Fault::StaleLeaderReturns { cut_ms, hold_ms } => self.stale_leader_returns(*cut_ms, *hold_ms),
            Fault::ChangeAfterElection { cut_ms, delay_ms, down_ms } => {
                self.change_after_election(*cut_ms, *delay_ms, *down_ms)
            }
            Fault::HeldLeaderFrames { ms, hold_ms } => self.held_leader_frames(*ms, *hold_ms),
            Fault::StaleLeaderReads { ms, pause_ms } => self.stale_leader_reads(*ms, *pause_ms),
            Fault::SnapshotCopiesLate { down_ms, ms, max_delay_ms } => {
                self.snapshot_copies_late(*down_ms, *ms, *max_delay_ms)
            }
            Fault::StepClock { node, ms } => {
                if let Some(c) = self.slots[*node].clock.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    c.step_wall(i128::from(*ms) * 1_000_000);
                }
                self.log.mark(Some(*node), format!("clock {:+.1} s", *ms as f64 / 1000.0));
            }
        }
    }

    /// Network cuts that last until the next heal (and the heal itself).
    fn partition(&mut self, fault: &Fault) {
        let (net, ids, log) = (&self.net, self.ids, &self.log);
        let nodes = ids.len();
        match fault {
            Fault::Isolate { node } => {
                net.clog_node(ids[*node]);
                log.until_heal(Some(*node), "isolated");
            }
            Fault::IsolateLeader => match current_leader(self.slots) {
                Some(l) => {
                    tracing::info!(member = %format!("n{}", l + 1), "fault injected: the leader is isolated");
                    net.clog_node(ids[l]);
                    log.until_heal(Some(l), "leader isolated");
                    self.history.count("leader_isolated");
                }
                None => self.history.count("isolate_leader_without_leader"),
            },
            Fault::Split { side } => {
                for a in 0..nodes {
                    for b in 0..nodes {
                        if side.contains(&a) != side.contains(&b) {
                            net.clog_link(ids[a], ids[b]);
                        }
                    }
                }
                log.until_heal(None, format!("split {} | rest", names(side)));
            }
            Fault::Bridge { bridge, side } => {
                for a in (0..nodes).filter(|n| n != bridge) {
                    for b in (0..nodes).filter(|n| n != bridge) {
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
                heal(net, ids);
                log.heal();
            }
            _ => unreachable!("partition() is given network cuts only"),
        }
    }

    /// Opens a lossy or stalled window on peer links (closed at the latest when the faults end).
    fn lossy_links(&mut self, fault: &Fault) {
        let left = self.fault_end.saturating_duration_since(rt::time::now());
        let id = |n: &usize| *n as u64 + 1;
        match fault {
            Fault::LossyLinks { from, to, ms, drop_pct, dup_pct, delay_pct, max_delay_ms, reset_pct } => {
                let spec = LinkSpec {
                    drop_pct: *drop_pct,
                    dup_pct: *dup_pct,
                    delay_pct: *delay_pct,
                    max_delay_ms: *max_delay_ms,
                    reset_pct: *reset_pct,
                    ..LinkSpec::default()
                };
                let window = Duration::from_millis(*ms).min(left);
                for a in from {
                    for b in to.iter().filter(|b| *b != a) {
                        self.links.lossy(id(a), id(b), spec, window);
                    }
                }
                let label = format!(
                    "{} → {} lossy: drop {drop_pct}%, dup {dup_pct}%, delay {delay_pct}% ≤{max_delay_ms} ms, reset {reset_pct}%",
                    names(from),
                    names(to)
                );
                self.log.band(window.as_millis() as u64, label);
                self.history.count("lossy_link_windows");
            }
            Fault::StallLink { from, to, ms } => {
                let window = Duration::from_millis(*ms).min(left);
                self.links.stall(id(from), id(to), window);
                self.log.band(window.as_millis() as u64, format!("n{} → n{} writes stall", from + 1, to + 1));
                self.history.count("stalled_links");
            }
            _ => unreachable!("lossy_links() is given link faults only"),
        }
    }

    /// Cuts whoever leads now from every peer (both ways) for `ms`, its clients still reaching
    /// it, and pauses it for the first `pause_ms`.
    fn cut_leader_peers(&mut self, ms: u64, pause_ms: u64) {
        let Some(l) = current_leader(self.slots) else {
            self.history.count("cut_leader_peers_without_leader");
            return;
        };
        let window = Duration::from_millis(ms).min(self.fault_end.saturating_duration_since(rt::time::now()));
        let cut = LinkSpec { drop_pct: 100, ..LinkSpec::default() };
        let leader = l as u64 + 1;
        for other in (1..=self.ids.len() as u64).filter(|&o| o != leader) {
            self.links.lossy(leader, other, cut, window);
            self.links.lossy(other, leader, cut, window);
        }
        tracing::info!(member = %format!("n{leader}"), "fault injected: the leader is cut from its peers");
        let label = format!("leader cut from peers {:.1} s", window.as_secs_f64());
        self.log.span(l, window.as_millis() as u64, SpanKind::Isolated, label);
        self.history.count("leader_peers_cut");
        self.apply(&Fault::Pause { node: l, ms: pause_ms });
    }

    /// Power-fails a member now and restarts it after `down_ms`.
    fn crash_member(&mut self, node: usize, down_ms: u64, label: &str) {
        self.down_until[node] = rt::time::now() + Duration::from_millis(down_ms);
        let down = Duration::from_millis(down_ms);
        self.watch.member_crashed(node as u64 + 1);
        crash(&self.handle, self.ids[node], &self.slots[node].handles(), &mut self.tear_rng, down);
        self.log.span(node, down_ms, SpanKind::Down, label);
        self.history.count("crashes");
    }

    /// A member's disk starts failing; after `down_ms` it is power-cycled with the fault cleared.
    fn disk_fault(&mut self, node: usize, error: DiskErrorKind, down_ms: u64) {
        if rt::time::now() < self.down_until[node] {
            return;
        }
        let down = Duration::from_millis(down_ms);
        self.down_until[node] = rt::time::now() + down;
        if error == DiskErrorKind::Descriptors {
            return self.descriptor_exhaustion(node, down);
        }
        let disk = &self.slots[node].disk;
        self.slots[node].disk_faulty.store(true, Ordering::SeqCst);
        disk.inject(match error {
            DiskErrorKind::Write => DiskFault::FailWrites(u32::MAX),
            // One failed fsync, then the disk works again (a transient writeback error): the
            // failure drops the unsynced writes (Linux), so only a member that stops is safe.
            DiskErrorKind::Fsync => DiskFault::FailSyncs(1),
            DiskErrorKind::Full => DiskFault::Capacity(disk.used_bytes()),
            DiskErrorKind::Descriptors => unreachable!("handled above"),
        });
        self.history.count("disk_faults");
        self.log.span(node, down_ms, SpanKind::DiskFault, format!("disk: {error:?}"));
        // The member notices at its next write and stops replicating (serving reads); then an
        // operator power-cycles it with the disk fixed.
        let (h, id, slot, mut trng) = (
            self.handle.clone(),
            self.ids[node],
            self.slots[node].handles(),
            rt::rng::split(&mut self.tear_rng),
        );
        madsim::task::spawn(async move {
            rt::time::sleep(down).await;
            slot.disk.clear_faults();
            slot.disk_faulty.store(false, Ordering::SeqCst);
            crash(&h, id, &slot, &mut trng, Duration::from_millis(100));
        });
    }

    /// The member runs out of file descriptors for `down`: every open fails (nothing written),
    /// its storage waits and retries, and it goes on by itself once they free — no restart.
    fn descriptor_exhaustion(&mut self, node: usize, down: Duration) {
        let disk = self.slots[node].disk.clone();
        // The WAL waits to persist and apply waits to open topic files: neither needs a restart.
        disk.inject(DiskFault::TooManyOpenFiles(u32::MAX));
        self.history.count("disk_faults");
        self.log.span(node, down.as_millis() as u64, SpanKind::DiskFault, "disk: out of descriptors");
        madsim::task::spawn(async move {
            rt::time::sleep(down).await;
            disk.clear_faults();
        });
    }

    /// Arms a power failure inside one of the member's next disk operations; when it strikes,
    /// the member is killed there (its disks power-fail, the interrupted write torn) and
    /// restarted after `down_ms`. Other crashes and disk faults skip the member while it is armed.
    fn disk_crash(&mut self, node: usize, after_ops: u64, down_ms: u64) {
        if rt::time::now() < self.down_until[node] {
            self.history.count("disk_crash_while_down_skipped");
            return;
        }
        self.down_until[node] = self.fault_end;
        self.armed_until[node] = self.fault_end;
        let slot = self.slots[node].handles();
        let latch = slot.disk.arm_crash(after_ops);
        self.log.mark(Some(node), format!("power fail armed: {after_ops} disk ops on"));
        let (h, id, history, log, watch) =
            (self.handle.clone(), self.ids[node], self.history.clone(), self.log.clone(), self.watch.clone());
        let (mut trng, give_up) = (rt::rng::split(&mut self.tear_rng), self.fault_end);
        madsim::task::spawn(async move {
            rt::select! {
                biased;
                _ = latch.wait() => {}
                _ = rt::time::sleep_until(give_up) => {
                    if !slot.disk.disarm_crash() {
                        history.count("disk_crash_never_struck");
                        return;
                    }
                }
            }
            history.count("crashes_inside_disk_ops");
            watch.member_crashed(node as u64 + 1);
            log.span(node, down_ms, SpanKind::Down, "power fail inside a disk operation");
            crash(&h, id, &slot, &mut trng, Duration::from_millis(down_ms));
        });
    }

    /// The job that removes member `node`, wipes it and adds it back after `down_ms`.
    fn rejoin_job(&self, node: usize, down_ms: u64) -> Rejoin {
        Rejoin {
            handle: self.handle.clone(),
            id: self.ids[node],
            member: node,
            slot: self.slots[node].handles(),
            addrs: self.addrs.to_vec(),
            down: Duration::from_millis(down_ms),
            history: self.history.clone(),
            busy: self.rejoin_busy.clone(),
            log: self.log.clone(),
            give_up: self.fault_end + Duration::from_secs(30),
        }
    }

    /// Starts a membership change: remove the member, wipe it, add it back after `down_ms`.
    fn rejoin(&mut self, node: usize, down_ms: u64) {
        if rt::time::now() < self.armed_until[node] {
            self.history.count("rejoin_skipped_disk_crash_armed");
            return;
        }
        if self.rejoin_busy.swap(true, Ordering::SeqCst) {
            self.history.count("rejoin_skipped_busy");
            return;
        }
        self.down_until[node] = self.fault_end + Duration::from_secs(5);
        let job = self.rejoin_job(node, down_ms);
        self.rejoins.push(self.admin_node.spawn(job.run()));
    }
}

/// A network fault open until the next heal: (node, or `None` for a band; since; label).
type OpenFault = (Option<usize>, Ms, String);

/// Draws the faults on the run's timeline (when one is recorded): spans with their ends, network
/// conditions as bands, clock steps and membership changes as marks.
#[derive(Clone)]
pub(super) struct FaultLog {
    pub rec: Option<Recorder>,
    pub start: rt::time::Instant,
    /// Isolations and partitions open until the next heal: (node or band, from, label).
    pub open: Arc<Mutex<Vec<OpenFault>>>,
}

impl FaultLog {
    /// A log that starts now: the timeline (when one is recorded) gets a row per member and
    /// each member's clock drift.
    pub fn start(rec: Option<Recorder>, plan: &Plan) -> Self {
        let log = FaultLog { rec, start: rt::time::now(), open: Arc::default() };
        if let Some(r) = &log.rec {
            r.set_nodes((0..plan.nodes).map(|i| format!("n{}", i + 1)).collect());
            for (node, ppm) in plan.drift_ppm.iter().enumerate() {
                r.record(TimelineEvent::Drift { node, ppm: *ppm });
            }
            for phase in storm_phases(plan) {
                r.record(phase);
            }
        }
        log
    }

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

/// The plan's storms as timeline lanes: the client storm and the peer-port storm, each from
/// when it starts to when its clients stop starting work, with how many clients of each kind
/// (assigned round-robin, as the storms do).
pub(super) fn storm_phases(plan: &Plan) -> Vec<TimelineEvent> {
    fn counts(n: usize, kinds: &[&str]) -> String {
        let each: Vec<String> = kinds
            .iter()
            .enumerate()
            .filter_map(|(k, name)| {
                let c = n / kinds.len() + usize::from(k < n % kinds.len());
                (c > 0).then(|| format!("{c} {name}"))
            })
            .collect();
        format!("{n} clients: {}", each.join(", "))
    }
    let mut phases = Vec::new();
    if plan.storm_clients > 0 {
        let kinds: Vec<&str> = StormKind::ALL.iter().map(|k| k.name()).collect();
        phases.push(TimelineEvent::Phase {
            lane: "client storm".into(),
            from: plan.storm_at_ms,
            to: Some(plan.storm_at_ms + plan.storm_duration_ms()),
            label: counts(plan.storm_clients, &kinds),
        });
    }
    if plan.peer_storm_clients > 0 {
        let kinds: Vec<&str> = PeerStormKind::ALL.iter().map(|k| k.name()).collect();
        phases.push(TimelineEvent::Phase {
            lane: "peer storm".into(),
            from: 0,
            to: Some(plan.peer_storm_duration_ms()),
            label: counts(plan.peer_storm_clients, &kinds),
        });
    }
    phases
}

/// What tasks outside the fault loop need of a member (disks and its current incarnation).
#[derive(Clone)]
struct MemberHandles {
    disk: Arc<SimDisk>,
    disk_faulty: Arc<AtomicBool>,
    refused_corrupt: Arc<AtomicBool>,
    dlq: Arc<SimDisk>,
    node: Arc<Mutex<Option<ClusterNode>>>,
    joining: Arc<AtomicBool>,
}

impl MemberSlot {
    fn handles(&self) -> MemberHandles {
        MemberHandles {
            disk: self.disk.clone(),
            disk_faulty: self.disk_faulty.clone(),
            refused_corrupt: self.refused_corrupt.clone(),
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
fn restore_net_later(net: &Arc<madsim::net::NetSim>, epoch: &Arc<AtomicU64>, after: Duration) {
    let mine = epoch.fetch_add(1, Ordering::SeqCst) + 1;
    let (net, epoch) = (net.clone(), epoch.clone());
    madsim::task::spawn(async move {
        rt::time::sleep(after).await;
        if epoch.load(Ordering::SeqCst) == mine {
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
    busy: Arc<AtomicBool>,
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
            self.busy.store(false, Ordering::SeqCst);
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
        self.slot.joining.store(true, Ordering::SeqCst);
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
        self.busy.store(false, Ordering::SeqCst);
    }

    /// Retries an admin request until it succeeds or the deadline passes.
    async fn admin(&self, client: &mut ClusterClient, req: AdminRequest) -> bool {
        loop {
            match client.admin(req.clone()).await {
                Ok(answer) => {
                    tracing::info!(?req, %answer, "membership change answered");
                    return true;
                }
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
