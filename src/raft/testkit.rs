//! A deterministic in-memory cluster of Raft cores for tests, benches and simulator checkers.
//!
//! * [`Network`]: a seeded message scheduler that can drop, delay, duplicate and reorder messages
//!   and cut links (partitions).
//! * [`Cluster`]: N cores driven exactly as a real driver would (persist → send → apply →
//!   advance), each with a [`MemStorage`] holding only what a `Ready` made durable, so
//!   [`Cluster::crash`] loses everything else and [`Cluster::restart`] rebuilds the core from it.
//! * [`Checker`]: the Raft safety invariants over [`NodeView`]s, callable after every step.
//!
//! Everything is driven by one seed: the same seed gives the same run.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use rand::Rng;

use super::config::RaftConfig;
use super::core::Raft;
use super::error::ProposeError;
use super::message::Message;
use super::types::{
    ConfState, Entry, HardState, Index, NodeId, ReadState, RestoredState, Role, Snapshot, Term,
};
use crate::rt::{NodeRng, rng_from_seed};

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

/// Fault knobs of the [`Network`]. Rates are probabilities in `[0, 1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Each message is delayed by a uniform number of ticks in `0..=max_delay`.
    pub max_delay: u64,
    /// Deliver due messages in random order rather than send order.
    pub reorder: bool,
}

impl Faults {
    /// A reliable, in-order network without delay.
    pub fn none() -> Self {
        Faults::default()
    }

    /// A lossy network: 10% drops, 5% duplicates, up to 2 ticks of delay, reordering.
    pub fn unreliable() -> Self {
        Faults { drop: 0.1, duplicate: 0.05, max_delay: 2, reorder: true }
    }
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost (randomly or to a cut link).
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
}

#[derive(Clone, Debug)]
struct Envelope {
    at: u64,
    msg: Message,
}

/// A seeded in-memory message scheduler.
#[derive(Debug)]
pub struct Network {
    rng: NodeRng,
    /// Current fault knobs (may be changed at any time).
    pub faults: Faults,
    queue: VecDeque<Envelope>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// What the network did so far.
    pub stats: NetStats,
}

impl Network {
    /// A network whose random choices come from `rng`.
    pub fn new(rng: NodeRng, faults: Faults) -> Self {
        Network { rng, faults, queue: VecDeque::new(), blocked: BTreeSet::new(), stats: NetStats::default() }
    }

    /// Accepts `msg` at tick `now`.
    pub fn send(&mut self, msg: Message, now: u64) {
        self.stats.sent += 1;
        let f = self.faults;
        if self.is_blocked(msg.from, msg.to) || (f.drop > 0.0 && self.rng.random_bool(f.drop)) {
            self.stats.dropped += 1;
            return;
        }
        if f.duplicate > 0.0 && self.rng.random_bool(f.duplicate) {
            self.stats.duplicated += 1;
            let at = now + self.delay();
            self.queue.push_back(Envelope { at, msg: msg.clone() });
        }
        let at = now + self.delay();
        self.queue.push_back(Envelope { at, msg });
    }

    fn delay(&mut self) -> u64 {
        if self.faults.max_delay == 0 { 0 } else { self.rng.random_range(0..=self.faults.max_delay) }
    }

    /// Takes the next message due by tick `now` (dropping those on cut links), if any.
    pub fn next_due(&mut self, now: u64) -> Option<Message> {
        loop {
            let pos = if self.faults.reorder {
                let due: Vec<usize> =
                    self.queue.iter().enumerate().filter(|(_, e)| e.at <= now).map(|(i, _)| i).collect();
                if due.is_empty() {
                    return None;
                }
                due[self.rng.random_range(0..due.len())]
            } else {
                self.queue.iter().position(|e| e.at <= now)?
            };
            let env = self.queue.remove(pos)?;
            if self.is_blocked(env.msg.from, env.msg.to) {
                self.stats.dropped += 1;
                continue;
            }
            self.stats.delivered += 1;
            return Some(env.msg);
        }
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// True if messages from `from` to `to` are lost.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Cuts the link from `from` to `to` (one direction).
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Restores the link from `from` to `to`.
    pub fn unblock(&mut self, from: NodeId, to: NodeId) {
        self.blocked.remove(&(from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Drops every message in flight (e.g. to model a network flush).
    pub fn clear(&mut self) {
        self.stats.dropped += self.queue.len() as u64;
        self.queue.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Storage and state machine of one test node
// ---------------------------------------------------------------------------------------------

/// What a node made durable: exactly what its `Ready`s asked to persist, plus the application's
/// own snapshots.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    /// Last persisted hard state.
    pub hard_state: HardState,
    /// Latest durable snapshot.
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl MemStorage {
    fn first_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index) + 1
    }

    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        let base = self.first_index();
        assert!(first >= base, "persisting entry {first} before the snapshot");
        let keep = (first - base) as usize;
        assert!(keep <= self.entries.len(), "persisted log would have a gap at {first}");
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        let base = self.first_index();
        if index >= base {
            let drop = ((index - base + 1) as usize).min(self.entries.len());
            self.entries.drain(..drop);
            if self.entries.first().is_some_and(|e| e.index != index + 1) {
                self.entries.clear();
            }
        }
        self.snapshot = Some(snapshot);
    }
}

/// The test state machine: the applied index and a digest chained over every applied entry, so
/// two nodes with the same digest at an index applied the same sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// Highest applied index.
    pub applied: Index,
    /// Digest of the applied sequence `1..=applied`.
    pub digest: u64,
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn entry_hash(e: &Entry) -> u64 {
    let h = fnv(0xcbf2_9ce4_8422_2325, &e.term.to_le_bytes());
    let h = fnv(h, &e.index.to_le_bytes());
    let h = fnv(h, &[e.kind as u8]);
    fnv(h, &e.data)
}

impl StateMachine {
    /// Applies one committed entry; returns the new digest.
    pub fn apply(&mut self, e: &Entry) -> u64 {
        assert_eq!(e.index, self.applied + 1, "entries applied out of order");
        self.applied = e.index;
        self.digest = fnv(self.digest, &entry_hash(e).to_le_bytes());
        self.digest
    }

    /// Serialises the state machine, padded with `padding` bytes (to exercise chunking).
    pub fn to_snapshot_data(&self, padding: usize) -> Bytes {
        let mut v = Vec::with_capacity(16 + padding);
        v.extend_from_slice(&self.applied.to_le_bytes());
        v.extend_from_slice(&self.digest.to_le_bytes());
        v.resize(16 + padding, 0xab);
        Bytes::from(v)
    }

    /// Rebuilds the state machine from snapshot data.
    pub fn from_snapshot_data(data: &[u8]) -> StateMachine {
        assert!(data.len() >= 16, "snapshot data too short");
        let mut a = [0u8; 8];
        let mut d = [0u8; 8];
        a.copy_from_slice(&data[..8]);
        d.copy_from_slice(&data[8..16]);
        StateMachine { applied: Index::from_le_bytes(a), digest: u64::from_le_bytes(d) }
    }
}

/// One test node: its core (absent while crashed), durable storage and state machine.
#[derive(Debug)]
pub struct Node {
    /// The core, `None` while crashed.
    pub raft: Option<Raft>,
    /// Durable state.
    pub storage: MemStorage,
    /// Volatile state machine (rebuilt from the snapshot on restart).
    pub sm: StateMachine,
    /// Reads released to this node, in order.
    pub reads: Vec<ReadState>,
    /// Data of the normal entries this node applied since its last (re)start, in order.
    pub applied_data: Vec<Bytes>,
    config: RaftConfig,
    bootstrap: ConfState,
    rng: NodeRng,
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// How a [`Cluster`] is built.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Initial voters.
    pub ids: Vec<NodeId>,
    /// Template config (its `id` is replaced per node).
    pub raft: RaftConfig,
    /// Seed of every random choice.
    pub seed: u64,
    /// Network faults.
    pub faults: Faults,
    /// Take an application snapshot every this many applied entries.
    pub snapshot_every: Option<u64>,
    /// Entries kept in memory behind a snapshot when compacting.
    pub keep_tail: u64,
    /// Extra bytes in each snapshot (so it spans several chunks).
    pub snapshot_padding: usize,
    /// Run the [`Checker`] after every delivered message and tick (panics on a violation).
    pub check: bool,
    /// Record applied normal entries' data in [`Node::applied_data`].
    pub record_applied: bool,
}

impl ClusterConfig {
    /// `n` voters with ids `1..=n`, default Raft config, reliable network, checker on.
    pub fn new(n: u64, seed: u64) -> Self {
        ClusterConfig {
            ids: (1..=n).collect(),
            raft: RaftConfig::new(1),
            seed,
            faults: Faults::none(),
            snapshot_every: None,
            keep_tail: 0,
            snapshot_padding: 0,
            check: true,
            record_applied: true,
        }
    }
}

/// A deterministic cluster of cores over a [`Network`].
#[derive(Debug)]
pub struct Cluster {
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// The network between them.
    pub net: Network,
    /// Safety checker (used when `cfg.check`).
    pub checker: Checker,
    cfg: ClusterConfig,
    now: u64,
    rng: NodeRng,
}

impl Cluster {
    /// Builds and bootstraps a cluster.
    pub fn new(cfg: ClusterConfig) -> Self {
        let mut rng = rng_from_seed(cfg.seed);
        let net = Network::new(crate::rt::rng::split(&mut rng), cfg.faults);
        let mut c = Cluster { nodes: BTreeMap::new(), net, checker: Checker::default(), cfg, now: 0, rng };
        let voters = ConfState::with_voters(c.cfg.ids.iter().copied());
        for id in c.cfg.ids.clone() {
            c.add_node(id, voters.clone());
        }
        c
    }

    /// Adds a node that starts from `bootstrap` (use an empty [`ConfState`] for a node that joins
    /// an existing cluster through a membership change).
    pub fn add_node(&mut self, id: NodeId, bootstrap: ConfState) {
        let mut config = self.cfg.raft.clone();
        config.id = id;
        let rng = crate::rt::rng::split(&mut self.rng);
        let node = Node {
            raft: None,
            storage: MemStorage::default(),
            sm: StateMachine::default(),
            reads: Vec::new(),
            applied_data: Vec::new(),
            config,
            bootstrap,
            rng,
        };
        self.nodes.insert(id, node);
        self.restart(id);
    }

    /// Current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The cluster's configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The core of `id` (panics if the node is unknown or crashed).
    pub fn raft(&self, id: NodeId) -> &Raft {
        self.nodes[&id].raft.as_ref().unwrap_or_else(|| panic!("node {id} is down"))
    }

    /// Mutable core of `id`; process its `Ready` afterwards with [`Cluster::process`].
    pub fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()).unwrap_or_else(|| panic!("node {id} is down"))
    }

    /// True if `id` is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.raft.is_some())
    }

    /// Ids of the running nodes.
    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.raft.is_some()).map(|(&id, _)| id).collect()
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| {
                n.raft.as_ref().filter(|r| r.role() == Role::Leader).map(|r| (r.term(), id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Crashes `id`: its core and everything not yet persisted are lost.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.raft = None;
        node.reads.clear();
    }

    /// (Re)starts `id` from its persisted state.
    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.raft.is_none(), "node {id} is already running");
        let restored = RestoredState {
            hard_state: node.storage.hard_state,
            snapshot: node.storage.snapshot.clone(),
            entries: node.storage.entries.clone(),
            conf_state: node.bootstrap.clone(),
            applied: 0,
        };
        node.sm = node
            .storage
            .snapshot
            .as_ref()
            .map_or_else(StateMachine::default, |s| StateMachine::from_snapshot_data(&s.data));
        node.applied_data.clear();
        let rng = crate::rt::rng::split(&mut node.rng);
        let raft = Raft::new(node.config.clone(), restored, rng)
            .unwrap_or_else(|e| panic!("node {id} cannot restart: {e}"));
        node.raft = Some(raft);
        self.checker.node_restarted(id);
        self.process(id);
    }

    /// Cuts both directions between every pair of nodes in different groups.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        self.net.heal();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in a.iter() {
                    for &y in b.iter() {
                        self.net.block(x, y);
                        self.net.block(y, x);
                    }
                }
            }
        }
    }

    /// Cuts `id` off from every other node.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            self.net.block(id, o);
            self.net.block(o, id);
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.net.heal();
    }

    /// Drives `id`'s `Ready`s like a real driver: persist, send, apply, advance.
    pub fn process(&mut self, id: NodeId) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        while raft.has_ready() {
            let rd = raft.ready();
            if let Some(s) = rd.snapshot {
                node.sm = StateMachine::from_snapshot_data(&s.data);
                assert_eq!(node.sm.applied, s.meta.index, "snapshot data and metadata disagree");
                node.storage.install_snapshot(s);
                node.storage.entries.clear();
            }
            node.storage.append(&rd.entries);
            if let Some(hs) = rd.hard_state {
                node.storage.hard_state = hs;
            }
            for m in rd.messages {
                self.net.send(m, now);
            }
            for e in &rd.committed_entries {
                let digest = node.sm.apply(e);
                if self.cfg.check
                    && let Err(v) = self.checker.record_apply(id, e.index, digest)
                {
                    panic!("seed {}: {v}", self.cfg.seed);
                }
                if self.cfg.record_applied && e.kind == super::types::EntryKind::Normal {
                    node.applied_data.push(e.data.clone());
                }
            }
            node.reads.extend(rd.read_states);
            raft.advance();
            if let Some(every) = self.cfg.snapshot_every {
                let last = raft.latest_snapshot().map_or(0, |s| s.meta.index);
                let applied = raft.applied();
                if applied >= last + every {
                    let data = node.sm.to_snapshot_data(self.cfg.snapshot_padding);
                    debug_assert_eq!(node.sm.applied, applied);
                    raft.snapshot(applied, data.clone()).expect("snapshot of an applied index");
                    // Persist the application's snapshot, then free the log behind it.
                    let snap = raft.latest_snapshot().cloned().expect("just taken");
                    node.storage.install_snapshot(snap);
                    let compact_to = applied.saturating_sub(self.cfg.keep_tail);
                    if compact_to >= raft.first_index() {
                        raft.compact(compact_to).expect("compaction behind the snapshot");
                    }
                }
            }
        }
    }

    /// Delivers one message if any is due; returns false when none is.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.net.next_due(self.now) else {
            return false;
        };
        let to = m.to;
        if let Some(raft) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) {
            if let Err(e) = raft.step(m) {
                panic!("seed {}: node {to} refused a message from an honest peer: {e}", self.cfg.seed);
            }
            self.process(to);
            self.check_changed(Some(to));
        }
        true
    }

    /// Delivers due messages until none is due.
    pub fn deliver(&mut self) {
        while self.deliver_one() {}
    }

    /// One tick on every running node, then delivery of everything due.
    pub fn tick(&mut self) {
        self.now += 1;
        for id in self.up_ids() {
            self.raft_mut(id).tick();
            self.process(id);
        }
        self.check();
        self.deliver();
    }

    /// Runs `n` ticks.
    pub fn run_ticks(&mut self, n: u64) {
        for _ in 0..n {
            self.tick();
        }
    }

    /// Ticks until `done` holds (checked before each tick); false if `max_ticks` pass first.
    pub fn run_until(&mut self, max_ticks: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..max_ticks {
            if done(self) {
                return true;
            }
            self.tick();
        }
        done(self)
    }

    /// Ticks until some running node leads (and has committed its term's no-op).
    pub fn wait_for_leader(&mut self, max_ticks: u64) -> Option<NodeId> {
        self.run_until(max_ticks, |c| {
            c.leader().is_some_and(|l| {
                let r = c.raft(l);
                r.term_at(r.commit_index()) == Some(r.term())
            })
        });
        self.leader()
    }

    /// Proposes `data` at `id` and processes its `Ready`.
    pub fn propose(&mut self, id: NodeId, data: impl Into<Bytes>) -> Result<Index, ProposeError> {
        let r = self.raft_mut(id).propose(data.into());
        self.process(id);
        r
    }

    /// Proposes at the current leader and ticks until the leader applied it; returns `(leader,
    /// index)`, or `None` if no leader accepted it or it did not apply within `max_ticks`.
    pub fn propose_and_commit(&mut self, data: impl Into<Bytes>, max_ticks: u64) -> Option<(NodeId, Index)> {
        let data = data.into();
        let leader = self.wait_for_leader(max_ticks)?;
        let index = self.propose(leader, data).ok()?;
        let term = self.raft(leader).term();
        let ok = self.run_until(max_ticks, |c| {
            c.is_up(leader)
                && c.raft(leader).applied() >= index
                && c.raft(leader).term_at(index) == Some(term)
        });
        ok.then_some((leader, index))
    }

    /// Ticks until every running node applied at least `index`.
    pub fn wait_applied_everywhere(&mut self, index: Index, max_ticks: u64) -> bool {
        self.run_until(max_ticks, |c| c.up_ids().iter().all(|&id| c.nodes[&id].sm.applied >= index))
    }

    /// Views of the running nodes, for the [`Checker`]; `changed` names the only node whose log
    /// may have changed since the last check (`None`: any).
    pub fn views(&self, changed: Option<NodeId>) -> Vec<NodeView<'_>> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| {
                n.raft.as_ref().map(|r| NodeView {
                    id,
                    term: r.term(),
                    role: r.role(),
                    commit: r.commit_index(),
                    first_index: r.first_index(),
                    entries: r.entries(),
                    applied: n.sm.applied,
                    digest: n.sm.digest,
                    log_changed: changed.is_none_or(|c| c == id),
                })
            })
            .collect()
    }

    /// Runs the checker now (if enabled); panics with the seed on a violation.
    pub fn check(&mut self) {
        self.check_changed(None);
    }

    fn check_changed(&mut self, changed: Option<NodeId>) {
        if !self.cfg.check {
            return;
        }
        let mut checker = std::mem::take(&mut self.checker);
        let result = checker.check(&self.views(changed));
        self.checker = checker;
        if let Err(v) = result {
            panic!("seed {}: invariant violated: {v}", self.cfg.seed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checker
// ---------------------------------------------------------------------------------------------

/// What the [`Checker`] looks at for one running node.
#[derive(Clone, Debug)]
pub struct NodeView<'a> {
    /// Node id.
    pub id: NodeId,
    /// Current term.
    pub term: Term,
    /// Role.
    pub role: Role,
    /// Commit index.
    pub commit: Index,
    /// First index in `entries`.
    pub first_index: Index,
    /// The log in memory.
    pub entries: &'a [Entry],
    /// State machine applied index.
    pub applied: Index,
    /// State machine digest at `applied`.
    pub digest: u64,
    /// The log may have changed since the last check (false skips the log-matching scan of this
    /// node; true is always safe).
    pub log_changed: bool,
}

/// A broken Raft safety property.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Election safety: two leaders in one term.
    #[error("two leaders in term {term}: {a} and {b}")]
    TwoLeaders {
        /// The term.
        term: Term,
        /// First leader seen.
        a: NodeId,
        /// Second leader.
        b: NodeId,
    },
    /// Log matching: same index and term but different entries or predecessors.
    #[error("log matching broken at index {index} term {term} (nodes {a} and {b})")]
    LogMismatch {
        /// Index.
        index: Index,
        /// Term.
        term: Term,
        /// Node that first had the entry.
        a: NodeId,
        /// Node that differs.
        b: NodeId,
    },
    /// A committed entry changed (or was committed with two different terms).
    #[error("committed entry {index} differs on node {node}")]
    CommittedChanged {
        /// Node.
        node: NodeId,
        /// Index.
        index: Index,
    },
    /// Leader completeness: a leader lacks an entry committed before its term.
    #[error("leader {leader} of term {term} lacks committed entry {index}")]
    LeaderIncomplete {
        /// Leader.
        leader: NodeId,
        /// Its term.
        term: Term,
        /// Missing index.
        index: Index,
    },
    /// A node's commit index moved back.
    #[error("commit index of node {node} moved back from {from} to {to}")]
    CommitRegressed {
        /// Node.
        node: NodeId,
        /// Earlier commit.
        from: Index,
        /// Later commit.
        to: Index,
    },
    /// A node applied beyond its commit index.
    #[error("node {node} applied {applied} beyond commit {commit}")]
    AppliedBeyondCommit {
        /// Node.
        node: NodeId,
        /// Applied index.
        applied: Index,
        /// Commit index.
        commit: Index,
    },
    /// State machine safety: applied sequences are not prefixes of one another.
    #[error("node {node} applied a different sequence up to index {index}")]
    AppliedDiverged {
        /// Node.
        node: NodeId,
        /// Index where the digests differ.
        index: Index,
    },
}

/// Stateful checker of Raft's safety properties over a run.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    /// `(index, term)` → (first node seen with it, term of its predecessor, hash of the entry).
    entries: HashMap<(Index, Term), (NodeId, Term, u64)>,
    /// Committed index → (entry term, term of the node that first saw it committed).
    committed: BTreeMap<Index, (Term, Term)>,
    /// Per leader `(id, term)`: committed indexes already verified present.
    leader_checked: BTreeMap<(NodeId, Term), Index>,
    commits: BTreeMap<NodeId, Index>,
    digests: BTreeMap<Index, (NodeId, u64)>,
}

impl Checker {
    /// A node restarted: its commit index may restart from the persisted value.
    pub fn node_restarted(&mut self, id: NodeId) {
        self.commits.remove(&id);
    }

    /// Records that `node` applied `index` reaching state-machine digest `digest`.
    pub fn record_apply(&mut self, node: NodeId, index: Index, digest: u64) -> Result<(), Violation> {
        match self.digests.get(&index) {
            Some(&(_, d)) if d != digest => Err(Violation::AppliedDiverged { node, index }),
            Some(_) => Ok(()),
            None => {
                self.digests.insert(index, (node, digest));
                Ok(())
            }
        }
    }

    /// Checks every invariant against the current views.
    pub fn check(&mut self, views: &[NodeView<'_>]) -> Result<(), Violation> {
        for v in views {
            self.check_node(v)?;
        }
        for v in views.iter().filter(|v| v.role == Role::Leader) {
            self.check_leader_complete(v)?;
        }
        Ok(())
    }

    fn check_node(&mut self, v: &NodeView<'_>) -> Result<(), Violation> {
        // Election safety.
        if v.role == Role::Leader {
            match self.leaders.get(&v.term) {
                Some(&a) if a != v.id => {
                    return Err(Violation::TwoLeaders { term: v.term, a, b: v.id });
                }
                _ => {
                    self.leaders.insert(v.term, v.id);
                }
            }
        }
        // Commit monotonic, applied <= commit.
        let prev = self.commits.get(&v.id).copied().unwrap_or(0);
        if v.commit < prev {
            return Err(Violation::CommitRegressed { node: v.id, from: prev, to: v.commit });
        }
        self.commits.insert(v.id, v.commit);
        if v.applied > v.commit {
            return Err(Violation::AppliedBeyondCommit { node: v.id, applied: v.applied, commit: v.commit });
        }
        if let Some(&(_, d)) = self.digests.get(&v.applied)
            && v.applied > 0
            && d != v.digest
        {
            return Err(Violation::AppliedDiverged { node: v.id, index: v.applied });
        }
        // Log matching: an (index, term) pair identifies the entry and its predecessor's term.
        let mut prev_term = None;
        let scan: &[Entry] = if v.log_changed { v.entries } else { &[] };
        for e in scan {
            let h = entry_hash(e);
            let pt = prev_term.unwrap_or(Term::MAX);
            match self.entries.get_mut(&(e.index, e.term)) {
                None => {
                    self.entries.insert((e.index, e.term), (v.id, pt, h));
                }
                Some((a, t, eh)) => {
                    if *eh != h {
                        return Err(Violation::LogMismatch { index: e.index, term: e.term, a: *a, b: v.id });
                    }
                    if *t == Term::MAX {
                        *t = pt;
                    } else if pt != Term::MAX && *t != pt {
                        return Err(Violation::LogMismatch { index: e.index, term: e.term, a: *a, b: v.id });
                    }
                }
            }
            prev_term = Some(e.term);
        }
        // Newly committed entries agree with what was committed before, anywhere.
        let last = v.first_index + v.entries.len() as Index;
        for index in (prev + 1).max(v.first_index)..=v.commit.min(last.saturating_sub(1)) {
            let e = &v.entries[(index - v.first_index) as usize];
            match self.committed.get(&index) {
                Some(&(t, _)) if t != e.term => {
                    return Err(Violation::CommittedChanged { node: v.id, index });
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, (e.term, v.term));
                }
            }
        }
        Ok(())
    }

    fn check_leader_complete(&mut self, v: &NodeView<'_>) -> Result<(), Violation> {
        let from = self.leader_checked.get(&(v.id, v.term)).map_or(1, |&i| i + 1);
        let mut upto = from.saturating_sub(1);
        for (&index, &(term, seen_in)) in self.committed.range(from..) {
            if seen_in > v.term {
                continue;
            }
            upto = index;
            if index < v.first_index {
                continue;
            }
            match v.entries.get((index - v.first_index) as usize) {
                Some(e) if e.term == term => {}
                _ => {
                    return Err(Violation::LeaderIncomplete { leader: v.id, term: v.term, index });
                }
            }
        }
        self.leader_checked.insert((v.id, v.term), upto);
        Ok(())
    }
}
