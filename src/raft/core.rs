//! The Raft state machine: a plain struct driven by [`Raft::step`], [`Raft::tick`] and the client
//! calls, which hands its effects to the driver as a [`Ready`]. No I/O, no clock, no global state:
//! time is ticks and randomness comes from the node RNG given at construction.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::Rng;
use tracing::{debug, trace};

use super::config::RaftConfig;
use super::error::{InitError, ProposeError, RaftError, SnapshotError};
use super::log::RaftLog;
use super::membership::Membership;
use super::message::{Body, Message, RejectHint};
use super::progress::{Progress, ProgressState};
use super::quorum::{self, VoteResult};
use super::read_only::ReadOnly;
use super::types::{
    ConfChange, ConfChangeKind, ConfEntry, ConfState, Entry, EntryKind, HardState, Index, MAX_INDEX,
    MAX_TERM, NodeId, ReadState, RestoredState, Role, Snapshot, SnapshotMeta, SoftState, Term,
};
use crate::rt::NodeRng;

/// Everything the driver must do after the core changed, in this order:
///
/// 1. install `snapshot` durably (it replaces the state machine and every persisted entry);
/// 2. persist `entries` durably, first truncating any persisted entries from `entries[0].index` on;
/// 3. persist `hard_state` durably;
/// 4. only then send `messages` (they may promise what 1–3 made durable);
/// 5. apply `committed_entries` in order;
/// 6. serve each read in `read_states` once the applied index reaches its `index`;
/// 7. call [`Raft::advance`]. No mutating method of the core may be called between `ready` and
///    `advance` (it panics: the core would not know what was persisted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Changed term, vote or commit index, to persist.
    pub hard_state: Option<HardState>,
    /// Entries to append durably; they may overwrite a persisted suffix from `entries[0].index`.
    pub entries: Vec<Entry>,
    /// A snapshot received from the leader, to install durably before anything else.
    pub snapshot: Option<Snapshot>,
    /// Messages to send once the above is durable.
    pub messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads that are linearizable once applied reaches their index.
    pub read_states: Vec<ReadState>,
    /// New leader or role, if changed.
    pub soft_state: Option<SoftState>,
}

/// A cheap snapshot of the core's state for logs and debugging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Node id.
    pub id: NodeId,
    /// Current term.
    pub term: Term,
    /// Vote in the current term.
    pub vote: Option<NodeId>,
    /// Role.
    pub role: Role,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// First index in memory.
    pub first_index: Index,
    /// Last index.
    pub last_index: Index,
    /// Commit index.
    pub commit: Index,
    /// Applied index.
    pub applied: Index,
    /// Leader only: each member's `(match, next, state)`.
    pub progress: Vec<(NodeId, Index, Index, ProgressState)>,
}

/// What the core handed out in the last [`Ready`] and awaits confirmation of.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    last_entry: Index,
    applying: Index,
}

/// Receiving side of a chunked snapshot.
#[derive(Clone, Debug)]
struct SnapshotReceiver {
    meta: SnapshotMeta,
    buf: Vec<u8>,
}

/// Whether this node still pulls an installed snapshot's data (see [`Raft::set_catching_up`]).
#[derive(Debug, Default)]
struct CatchUp {
    /// This node's installed snapshot lacks data the driver still pulls: committed entries are
    /// not handed out for applying and this node does not campaign (it still appends and votes).
    catching_up: bool,
    /// Installing a snapshot from the leader sets `catching_up`.
    catch_up_on_install: bool,
}

/// One Raft node's consensus core.
pub struct Raft {
    id: NodeId,
    cfg: RaftConfig,
    rng: NodeRng,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    membership: Membership,
    progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    /// Ticks since the core was built (lease bookkeeping).
    ticks: u64,
    /// Leader: index of this term's no-op.
    term_start: Index,
    transferee: Option<NodeId>,
    /// Leader: a TimeoutNow went out this term, so another leader may exist soon; no lease reads.
    lease_revoked: bool,
    /// Lease mode: refuse votes for the first election timeout after a restart.
    fresh_start: bool,
    read_only: ReadOnly,
    msgs: Vec<Message>,
    read_states: Vec<ReadState>,
    receiver: Option<SnapshotReceiver>,
    /// The latest snapshot this node has (sent to lagging followers).
    latest_snapshot: Option<Snapshot>,
    /// Whether this node still pulls an installed snapshot's data.
    catch_up: CatchUp,
    /// A snapshot received from the leader, not yet handed to the driver.
    snapshot_to_install: Option<Snapshot>,
    prev_hard: HardState,
    prev_soft: SoftState,
    needs_flush: bool,
    in_flight: Option<InFlight>,
}

impl std::fmt::Debug for Raft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft").field("status", &self.status()).finish()
    }
}

impl Raft {
    // ----------------------------------------------------------------------------------------
    // Construction and accessors
    // ----------------------------------------------------------------------------------------

    /// Builds a core from its config, what the driver persisted (or a bootstrap state) and the
    /// node RNG (used only for election jitter).
    pub fn new(cfg: RaftConfig, restored: RestoredState, rng: NodeRng) -> Result<Raft, InitError> {
        cfg.validate()?;
        let RestoredState { hard_state, snapshot, entries, conf_state, applied } = restored;
        let (snap_index, snap_term, base_conf) = match &snapshot {
            Some(s) => (s.meta.index, s.meta.term, s.meta.conf_state.clone()),
            None => (0, 0, conf_state),
        };
        if hard_state.term > MAX_TERM || snap_term > MAX_TERM {
            return Err(InitError::Restore("persisted term is beyond the ceiling (MAX_TERM)"));
        }
        if snap_index > MAX_INDEX || hard_state.commit > MAX_INDEX || applied > MAX_INDEX {
            return Err(InitError::Restore("persisted index is beyond the ceiling (MAX_INDEX)"));
        }
        let mut log = RaftLog::new(snap_index, snap_term);
        let mut membership = Membership::new(snap_index, base_conf);
        let mut kept = Vec::with_capacity(entries.len());
        let mut expect = snap_index + 1;
        let mut last_term = snap_term;
        for e in entries.into_iter().filter(|e| e.index > snap_index) {
            if e.index != expect {
                return Err(InitError::Restore("entries are not contiguous after the snapshot"));
            }
            if e.term < last_term || e.term > hard_state.term {
                return Err(InitError::Restore("entry terms decrease or exceed the persisted term"));
            }
            if e.kind == EntryKind::ConfChange {
                let ce = ConfEntry::decode(&e.data)
                    .map_err(|_| InitError::Restore("undecodable conf change entry"))?;
                membership.push(e.index, ce.conf);
            }
            expect += 1;
            last_term = e.term;
            kept.push(e);
        }
        if hard_state.term < snap_term {
            return Err(InitError::Restore("persisted term is behind the snapshot"));
        }
        let last_index = expect - 1;
        if hard_state.commit > last_index {
            return Err(InitError::Restore("persisted commit index is beyond the persisted log"));
        }
        let commit = hard_state.commit.max(snap_index);
        if applied > commit {
            return Err(InitError::Restore("applied index is beyond the commit index"));
        }
        log.restore_persisted(kept, commit, applied);
        let mut raft = Raft {
            id: cfg.id,
            rng,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            membership,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: cfg.election_tick,
            ticks: 0,
            term_start: 0,
            transferee: None,
            lease_revoked: false,
            fresh_start: cfg.lease_ticks().is_some(),
            read_only: ReadOnly::default(),
            msgs: Vec::new(),
            read_states: Vec::new(),
            receiver: None,
            latest_snapshot: snapshot,
            catch_up: CatchUp::default(),
            snapshot_to_install: None,
            prev_hard: HardState { term: hard_state.term, vote: hard_state.vote, commit },
            prev_soft: SoftState { leader: None, role: Role::Follower },
            needs_flush: false,
            in_flight: None,
            cfg,
        };
        raft.reset_timers();
        debug!(node = raft.id, term = raft.term, last_index, commit, "raft core started");
        Ok(raft)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Vote cast in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The only voter of a committed configuration: it campaigns at its first tick, so a driver
    /// may give it that tick at once (a single member serves right after a restart).
    pub fn is_sole_committed_voter(&self) -> bool {
        self.sole_committed_voter()
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Known leader of the current term.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader
    }

    /// Highest committed index.
    pub fn commit_index(&self) -> Index {
        self.log.committed()
    }

    /// Highest index the driver confirmed applied.
    pub fn applied(&self) -> Index {
        self.log.applied()
    }

    /// Index of the last log entry.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// Term of the last log entry.
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }

    /// First log index still in memory (everything before is in the snapshot).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// Term of the entry at `index`, if still known.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// The log entries in memory (from `first_index()` on); for inspection and checkers.
    pub fn entries(&self) -> &[Entry] {
        self.log.entries()
    }

    /// The configuration this node acts on (the latest one in its log).
    pub fn conf_state(&self) -> &ConfState {
        self.membership.current()
    }

    /// The latest configuration once the change that made it is committed, or `Err(index)` of
    /// that change while it is not. An uncommitted change can still be undone, and a leader
    /// elected under the previous configuration (e.g. the member being removed) still needs that
    /// configuration's quorum: answering "not a member" from it lets an operator wipe a node whose
    /// copy of committed entries is still needed.
    pub fn committed_conf_state(&self) -> Result<&ConfState, Index> {
        let change = self.membership.last_change_index();
        if change > self.log.committed() { Err(change) } else { Ok(self.membership.current()) }
    }

    /// The latest snapshot this node holds, if any.
    pub fn latest_snapshot(&self) -> Option<&Snapshot> {
        self.latest_snapshot.as_ref()
    }

    /// The current hard state (what would be persisted now).
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed() }
    }

    /// Leader only: what it knows about `id`'s log.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    /// Pending leadership transfer target.
    pub fn transferee(&self) -> Option<NodeId> {
        self.transferee
    }

    /// The election timeout currently drawn, in ticks.
    pub fn randomized_election_timeout(&self) -> u32 {
        self.randomized_timeout
    }

    /// A cheap debug summary.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            term: self.term,
            vote: self.vote,
            role: self.role,
            leader: self.leader,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            commit: self.log.committed(),
            applied: self.log.applied(),
            progress: self.progress.iter().map(|(&id, p)| (id, p.matched, p.next, p.state)).collect(),
        }
    }

    fn promotable(&self) -> bool {
        self.membership.current().voters.contains(&self.id)
    }

    /// The only voter of a committed configuration: no other node can win an election or hold a
    /// lease in it (a leader that committed its own removal has stepped down), so this node
    /// campaigns at its first tick instead of waiting an election timeout — a single member
    /// serves again right after a restart (the wait was 0.5–1 s of it).
    fn sole_committed_voter(&self) -> bool {
        let voters = &self.membership.current().voters;
        voters.len() == 1
            && voters.contains(&self.id)
            && self.membership.last_change_index() <= self.log.committed()
    }

    /// Dissertation §4.2.2: a node removed by a configuration entry that is not committed yet may
    /// still be needed to commit it (its log may be the only up-to-date one), so it keeps
    /// campaigning; its own vote does not count.
    fn can_campaign(&self) -> bool {
        if self.catch_up.catching_up {
            return false;
        }
        if self.promotable() {
            return true;
        }
        let last = self.membership.last_change_index();
        last > self.log.committed() && self.membership.at(last - 1).voters.contains(&self.id)
    }

    fn assert_idle(&self) {
        assert!(self.in_flight.is_none(), "the core was driven between ready() and advance()");
    }

    // ----------------------------------------------------------------------------------------
    // Role transitions
    // ----------------------------------------------------------------------------------------

    fn set_term(&mut self, term: Term) {
        assert!(term >= self.term, "term moved back from {} to {term}", self.term);
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
    }

    fn set_vote(&mut self, id: NodeId) {
        assert!(self.vote.is_none() || self.vote == Some(id), "vote changed within term {}", self.term);
        self.vote = Some(id);
    }

    fn reset_timers(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let et = self.cfg.election_tick;
        self.randomized_timeout = self.rng.random_range(et..2 * et);
    }

    fn reset(&mut self, term: Term) {
        self.set_term(term);
        self.leader = None;
        self.reset_timers();
        self.votes.clear();
        self.progress.clear();
        self.transferee = None;
        self.lease_revoked = false;
        self.read_only = ReadOnly::default();
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        debug!(node = self.id, term, leader = ?leader, "became follower");
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader never pre-campaigns");
        // A pre-candidate keeps its term and vote: it only asks whether it could win.
        self.votes.clear();
        self.leader = None;
        self.reset_timers();
        self.role = Role::PreCandidate;
        debug!(node = self.id, term = self.term, "became pre-candidate");
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader never campaigns");
        self.reset(self.term + 1);
        self.set_vote(self.id);
        self.role = Role::Candidate;
        debug!(node = self.id, term = self.term, "became candidate");
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.rebuild_progress();
        // §5.4.2: a new leader commits entries of earlier terms only through one of its own term.
        let index = self.log.last_index() + 1;
        self.log.append(Entry { term: self.term, index, kind: EntryKind::Noop, data: Bytes::new() });
        self.term_start = index;
        self.needs_flush = true;
        debug!(node = self.id, term = self.term, index, "became leader");
    }

    /// Makes the progress map match the configuration (leader only).
    fn rebuild_progress(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members: Vec<NodeId> = self.membership.current().members().collect();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index() + 1;
        for id in members {
            self.progress.entry(id).or_insert_with(|| {
                let mut p = Progress::new(next);
                p.recent_active = true;
                p
            });
        }
        let stable = self.log.stable();
        if let Some(me) = self.progress.get_mut(&self.id) {
            me.matched = me.matched.max(stable);
            me.next = next;
            me.state = ProgressState::Replicate;
        }
        if self.transferee.is_some_and(|t| !self.progress.contains_key(&t)) {
            self.transferee = None;
        }
    }

    // ----------------------------------------------------------------------------------------
    // Time
    // ----------------------------------------------------------------------------------------

    /// Advances logical time by one tick: elections for followers and candidates, heartbeats and
    /// check-quorum for leaders.
    pub fn tick(&mut self) {
        self.assert_idle();
        self.ticks += 1;
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.fresh_start && self.election_elapsed >= self.cfg.election_tick {
            self.fresh_start = false;
        }
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.randomized_timeout || self.sole_committed_voter() {
            if self.can_campaign() {
                self.election_elapsed = 0;
                self.hup(false);
            } else if self.leader.is_some() {
                // A node that cannot campaign (a learner, or not in its configuration) still
                // stops trusting a leader it has not heard from for a whole election timeout;
                // its timer keeps running so it answers vote requests instead of
                // ignoring them as if it were in the leader's lease.
                debug!(node = self.id, term = self.term, "leader lost");
                self.leader = None;
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.quorum_active() {
                    debug!(node = self.id, term = self.term, "check-quorum failed, stepping down");
                    self.become_follower(self.term, None);
                    return;
                }
                for (&id, p) in self.progress.iter_mut() {
                    p.recent_active = id == self.id;
                }
            }
            if let Some(to) = self.transferee.take() {
                debug!(node = self.id, to, "leadership transfer timed out");
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    fn quorum_active(&self) -> bool {
        let votes: BTreeMap<NodeId, bool> =
            self.progress.iter().map(|(&id, p)| (id, id == self.id || p.recent_active)).collect();
        quorum::vote_result(&self.membership.current().voters, &votes) == VoteResult::Won
    }

    // ----------------------------------------------------------------------------------------
    // Elections
    // ----------------------------------------------------------------------------------------

    fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.can_campaign() {
            return;
        }
        // The ceilings are inclusive (peers, files and `Raft::new` accept MAX_TERM and MAX_INDEX)
        // and nothing here may go past them: a campaign takes term + 1, a new leader appends
        // an entry. Either beyond the ceiling would be persisted and refused at every restart.
        if self.term >= MAX_TERM || self.log.last_index() >= MAX_INDEX {
            // Unreachable by elections and appends; only a forged message or file gets here.
            tracing::error!(
                node = self.id,
                term = self.term,
                last_index = self.log.last_index(),
                "term or log index at the ceiling: not campaigning"
            );
            return;
        }
        if self.cfg.pre_vote && !transfer {
            self.campaign(true, false);
        } else {
            self.campaign(false, transfer);
        }
    }

    fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        let term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        self.votes.insert(self.id, true);
        if self.poll() {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> =
            self.membership.current().voters.iter().copied().filter(|&v| v != self.id).collect();
        for to in voters {
            self.send(to, term, Body::Vote { pre_vote, last_index, last_term, transfer });
        }
    }

    /// Counts votes; returns true if the election was decided.
    fn poll(&mut self) -> bool {
        match quorum::vote_result(&self.membership.current().voters, &self.votes) {
            VoteResult::Won if self.role == Role::PreCandidate => {
                self.campaign(false, false);
                true
            }
            VoteResult::Won => {
                self.become_leader();
                true
            }
            VoteResult::Lost => {
                self.become_follower(self.term, None);
                true
            }
            VoteResult::Pending => false,
        }
    }

    fn handle_vote(&mut self, m: &Message, pre_vote: bool, last_index: Index, last_term: Term) {
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && m.term > self.term);
        let granted = can_vote
            && (crate::planted!(VoteWithoutLogCheck) || self.log.is_up_to_date(last_index, last_term));
        trace!(node = self.id, term = self.term, from = m.from, pre_vote, granted, "vote request");
        if granted {
            if !pre_vote {
                self.election_elapsed = 0;
                self.set_vote(m.from);
            }
            self.send(m.from, m.term, Body::VoteResponse { pre_vote, granted: true });
        } else {
            self.send(m.from, self.term, Body::VoteResponse { pre_vote, granted: false });
        }
    }

    // ----------------------------------------------------------------------------------------
    // Messages
    // ----------------------------------------------------------------------------------------

    /// Processes one message from a peer. Stale messages are ignored; messages that cannot be
    /// for this node or break the protocol are refused with an error. Never panics on input.
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        self.assert_idle();
        if m.to != self.id {
            return Err(RaftError::WrongRecipient { to: m.to, id: self.id });
        }
        if m.from == self.id || m.from == 0 {
            return Err(RaftError::InvalidSender(m.from));
        }
        m.check_bounds().map_err(|reason| RaftError::Malformed { from: m.from, reason })?;
        if m.body.is_records() {
            // Catch-up traffic is the driver's; its term says nothing about elections.
            trace!(node = self.id, from = m.from, kind = m.body.name(), "records message ignored");
            return Ok(());
        }
        if m.term > self.term {
            if let Body::Vote { transfer, .. } = m.body {
                let lease = self.cfg.check_quorum && self.election_elapsed < self.cfg.election_tick;
                let in_lease = lease && (self.leader.is_some() || self.fresh_start);
                if !transfer && in_lease {
                    trace!(node = self.id, from = m.from, "vote request ignored: leader lease");
                    return Ok(());
                }
            }
            match m.body {
                // A pre-vote never changes anyone's term; a granted pre-vote is for our next term.
                Body::Vote { pre_vote: true, .. } | Body::VoteResponse { pre_vote: true, granted: true } => {}
                ref body => {
                    let leader = body.is_from_leader().then_some(m.from);
                    self.become_follower(m.term, leader);
                }
            }
        } else if m.term < self.term
            && !(crate::planted!(StaleTermAppendAccepted) && matches!(m.body, Body::Append { .. }))
        {
            match m.body {
                Body::Append { .. } | Body::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // Tell a stale leader about the newer term (it may be stuck behind pre-vote).
                    self.send(m.from, self.term, Body::AppendResponse { index: 0, reject: None });
                }
                Body::Vote { pre_vote: true, .. } => {
                    self.send(m.from, self.term, Body::VoteResponse { pre_vote: true, granted: false });
                }
                _ => trace!(node = self.id, from = m.from, term = m.term, "stale message ignored"),
            }
            return Ok(());
        }

        match m.body {
            Body::Vote { pre_vote, last_index, last_term, .. } => {
                self.handle_vote(&m, pre_vote, last_index, last_term);
            }
            Body::VoteResponse { pre_vote, granted } => {
                self.handle_vote_response(m.from, m.term, pre_vote, granted)
            }
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                self.step_from_leader(m)?
            }
            Body::AppendResponse { index, reject } => self.handle_append_response(m.from, index, reject),
            Body::HeartbeatResponse { round } => self.handle_heartbeat_response(m.from, round),
            Body::SnapshotResponse { snapshot_index, next_offset, done, last_index } => {
                self.handle_snapshot_response(m.from, snapshot_index, next_offset, done, last_index);
            }
            Body::TimeoutNow => {
                if self.role != Role::Leader {
                    debug!(node = self.id, from = m.from, "TimeoutNow: campaigning at once");
                    self.hup(true);
                }
            }
            Body::ReadIndex { ctx } => {
                if self.role == Role::Leader {
                    self.handle_read(ctx, m.from);
                }
            }
            Body::ReadIndexResponse { ctx, index } => {
                if self.role == Role::Follower {
                    self.read_states.push(ReadState { ctx, index });
                }
            }
            Body::RecordsRequest { .. } | Body::Records { .. } => {}
        }
        Ok(())
    }

    /// An append, heartbeat or snapshot chunk of the current term (from its leader).
    fn step_from_leader(&mut self, m: Message) -> Result<(), RaftError> {
        if self.role == Role::Leader {
            return Err(RaftError::Malformed { from: m.from, reason: "second leader in the same term" });
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(m.from));
        }
        self.leader = Some(m.from);
        self.election_elapsed = 0;
        match m.body {
            Body::Append { prev_index, prev_term, entries, commit } => {
                self.handle_append(m.from, prev_index, prev_term, entries, commit)?;
            }
            Body::Heartbeat { commit, round } => {
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(m.from, self.term, Body::HeartbeatResponse { round });
            }
            Body::Snapshot { meta, offset, data, done } => {
                self.handle_snapshot(m.from, meta, offset, data, done)
            }
            _ => unreachable!("only leader messages are passed here"),
        }
        Ok(())
    }

    /// Counts a (pre-)vote answer if it belongs to the campaign this node is running.
    fn handle_vote_response(&mut self, from: NodeId, term: Term, pre_vote: bool, granted: bool) {
        let expected_term = if pre_vote { self.term + 1 } else { self.term };
        let expected_role = if pre_vote { Role::PreCandidate } else { Role::Candidate };
        if self.role == expected_role && (term == expected_term || !granted) {
            self.votes.insert(from, granted);
            self.poll();
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) -> Result<(), RaftError> {
        let malformed = |reason| RaftError::Malformed { from, reason };
        let Some(first) = prev_index.checked_add(1) else {
            return Err(malformed("previous index overflows"));
        };
        let mut expect = (first, prev_term);
        for e in &entries {
            if e.index != expect.0 || e.term < expect.1 || e.term > self.term {
                return Err(malformed("entries are not contiguous or have impossible terms"));
            }
            if e.kind == EntryKind::ConfChange && ConfEntry::decode(&e.data).is_err() {
                return Err(malformed("undecodable conf change entry"));
            }
            expect = (e.index + 1, e.term);
        }
        if prev_index < self.log.committed() {
            // Everything up to our commit index matches the leader's log already.
            let committed = self.log.committed();
            self.send(from, self.term, Body::AppendResponse { index: committed, reject: None });
            return Ok(());
        }
        match self.log.maybe_append(prev_index, prev_term, &entries) {
            Some((last_new, changed_from)) => {
                if let Some(at) = changed_from {
                    self.membership.truncate_from(at);
                    for e in entries.iter().filter(|e| e.index >= at && e.kind == EntryKind::ConfChange) {
                        let ce = ConfEntry::decode(&e.data)
                            .map_err(|_| malformed("undecodable conf change entry"))?;
                        self.membership.push(e.index, ce.conf);
                    }
                }
                self.log.commit_to(if crate::planted!(ApplyBeforeCommit) {
                    last_new
                } else {
                    commit.min(last_new)
                });
                self.send(from, self.term, Body::AppendResponse { index: last_new, reject: None });
            }
            None => {
                let hint = self.log.reject_hint(prev_index);
                trace!(node = self.id, prev_index, ?hint, "append rejected");
                self.send(from, self.term, Body::AppendResponse { index: prev_index, reject: Some(hint) });
            }
        }
        Ok(())
    }

    fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta, offset: u64, data: Bytes, done: bool) {
        let index = meta.index;
        if index <= self.log.committed() && !crate::planted!(SnapshotMovesCommitBack) {
            self.receiver = None;
            let committed = self.log.committed();
            self.send(
                from,
                self.term,
                Body::SnapshotResponse {
                    snapshot_index: index,
                    next_offset: offset,
                    done: true,
                    last_index: committed,
                },
            );
            return;
        }
        let same = self.receiver.as_ref().is_some_and(|r| r.meta == meta);
        if offset == 0 && !same {
            self.receiver = Some(SnapshotReceiver { meta: meta.clone(), buf: Vec::new() });
        }
        let received = match self.receiver.as_mut().filter(|r| r.meta == meta) {
            Some(r) if r.buf.len() as u64 == offset => {
                r.buf.extend_from_slice(&data);
                r.buf.len() as u64
            }
            Some(r) => {
                // A duplicate or out-of-order chunk: tell the leader where we are.
                let have = r.buf.len() as u64;
                self.send(
                    from,
                    self.term,
                    Body::SnapshotResponse {
                        snapshot_index: index,
                        next_offset: have,
                        done: false,
                        last_index: 0,
                    },
                );
                return;
            }
            None => {
                self.send(
                    from,
                    self.term,
                    Body::SnapshotResponse {
                        snapshot_index: index,
                        next_offset: 0,
                        done: false,
                        last_index: 0,
                    },
                );
                return;
            }
        };
        if !done {
            self.send(
                from,
                self.term,
                Body::SnapshotResponse {
                    snapshot_index: index,
                    next_offset: received,
                    done: false,
                    last_index: 0,
                },
            );
            return;
        }
        let Some(r) = self.receiver.take() else {
            return;
        };
        let snapshot = Snapshot { meta: r.meta, data: Bytes::from(r.buf) };
        let last = self.restore(snapshot);
        self.send(
            from,
            self.term,
            Body::SnapshotResponse {
                snapshot_index: index,
                next_offset: received,
                done: true,
                last_index: last,
            },
        );
    }

    /// Installs a snapshot from the leader; returns the index our log now matches up to.
    fn restore(&mut self, snapshot: Snapshot) -> Index {
        let meta = &snapshot.meta;
        if self.log.match_term(meta.index, meta.term) {
            // We already have the entries it covers: just learn that they are committed.
            self.log.commit_to(meta.index);
            return meta.index;
        }
        debug!(node = self.id, index = meta.index, term = meta.term, "installing snapshot");
        self.log.restore(meta);
        self.membership = Membership::new(meta.index, meta.conf_state.clone());
        let index = meta.index;
        self.latest_snapshot = Some(snapshot.clone());
        self.catch_up.catching_up |= self.catch_up.catch_up_on_install;
        self.snapshot_to_install = Some(snapshot);
        index
    }

    fn handle_append_response(&mut self, from: NodeId, index: Index, reject: Option<RejectHint>) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        if reject.is_some() && index > last_index {
            // We never sent an append after our last entry: a bogus or ancient rejection.
            return;
        }
        let hint_next = reject.map(|h| {
            let next = match h.conflict_term {
                Some(t) => self.log.last_index_of_term(t, index).map_or(h.conflict_index, |i| i + 1),
                None => h.conflict_index,
            };
            next.min(last_index + 1)
        });
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if !pr.may_answer(index) {
            // Below every append this progress sent: an answer from the node's previous
            // membership (removed, wiped and added back under the same id), still in flight.
            // Counting it would credit the new, empty node with the old node's log.
            debug!(
                node = self.id,
                from,
                index,
                floor = pr.floor,
                "append answer from an earlier membership ignored"
            );
            return;
        }
        pr.recent_active = true;
        match hint_next {
            Some(next) => {
                if pr.maybe_decrease(index, next) {
                    trace!(node = self.id, to = from, next = pr.next, "backing up after rejection");
                    self.needs_flush = true;
                }
            }
            None => {
                let index = index.min(last_index);
                if pr.maybe_update(index) {
                    if pr.state == ProgressState::Probe {
                        pr.become_replicate();
                    }
                    let caught_up = pr.matched == last_index;
                    self.maybe_commit();
                    if caught_up && self.transferee == Some(from) {
                        self.send_timeout_now(from);
                    }
                }
                self.needs_flush = true;
            }
        }
        if let Some(pr) = self.progress.get(&from) {
            // Whatever a response said, the progress it left is consistent with this log.
            debug_assert!(
                pr.matched < pr.next && pr.matched <= last_index,
                "progress of {from} after a response: match {} next {} last index {last_index}",
                pr.matched,
                pr.next
            );
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.read_round = pr.read_round.max(round);
        match pr.state {
            ProgressState::Probe => pr.probe_sent = false,
            ProgressState::Replicate => {
                // The oldest outstanding append was already outstanding at the previous heartbeat
                // answer: a whole heartbeat round trip passed without its acknowledgement, so it
                // was lost. Fall back to probing from the match index.
                let oldest = pr.inflight.front().copied();
                if oldest.is_some() && oldest == pr.stalled_append {
                    pr.become_probe();
                    pr.stalled_append = None;
                } else {
                    pr.stalled_append = oldest;
                }
            }
            ProgressState::Snapshot => pr.snapshot_chunk_sent = false,
        }
        if pr.matched < last_index || pr.state == ProgressState::Snapshot {
            self.needs_flush = true;
        }
        self.check_reads();
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
        last_index: Index,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if pr.state != ProgressState::Snapshot || pr.pending_snapshot != snapshot_index {
            return;
        }
        pr.snapshot_chunk_sent = false;
        if done {
            pr.matched = pr.matched.max(last_index.min(self.log.last_index()));
            pr.become_probe();
            debug!(node = self.id, to = from, index = snapshot_index, "snapshot delivered");
            self.maybe_commit();
        } else {
            pr.snapshot_offset = next_offset;
        }
        self.needs_flush = true;
    }

    // ----------------------------------------------------------------------------------------
    // Replication (leader)
    // ----------------------------------------------------------------------------------------

    /// §5.3/§5.4.2: commit the highest index a quorum of voters holds, but only if it is an
    /// entry of this term — earlier terms' entries are never committed by counting replicas.
    fn maybe_commit(&mut self) -> bool {
        let progress = &self.progress;
        let mci = quorum::committed_value(&self.membership.current().voters, |id| {
            progress.get(&id).map_or(0, |p| p.matched)
        });
        if mci <= self.log.committed()
            || (self.log.term(mci) != Some(self.term) && !crate::planted!(Figure8Commit))
        {
            return false;
        }
        self.log.commit_to(mci);
        self.needs_flush = true;
        trace!(node = self.id, term = self.term, commit = mci, "committed");
        if mci >= self.term_start {
            for (ctx, from) in self.read_only.take_waiting() {
                self.handle_read(ctx, from);
            }
        }
        self.maybe_leave();
        true
    }

    /// A leader removed by a committed configuration hands over and steps down.
    fn maybe_leave(&mut self) {
        if self.promotable() || self.membership.last_change_index() > self.log.committed() {
            return;
        }
        let last = self.log.last_index();
        let best = self
            .membership
            .current()
            .voters
            .iter()
            .filter_map(|id| self.progress.get(id).map(|p| (p.matched, *id)))
            .max();
        debug!(node = self.id, term = self.term, "removed from the configuration, stepping down");
        if let Some((_, to)) = best.filter(|(matched, _)| *matched == last) {
            self.send(to, self.term, Body::TimeoutNow);
        }
        self.become_follower(self.term, None);
    }

    /// Sends whatever each follower can take now (batched, pipelined) and pending read rounds.
    fn flush(&mut self) {
        if self.role != Role::Leader {
            self.needs_flush = false;
            return;
        }
        let peers: Vec<NodeId> = self.progress.keys().copied().filter(|&id| id != self.id).collect();
        for to in peers {
            let mut sent = false;
            while self.send_append(to, false) {
                sent = true;
            }
            let (committed, last) = (self.log.committed(), self.log.last_index());
            // A lagging follower in probe always has a probe out: when the last one was lost (a
            // heartbeat answer unpaused it) and there is no entry to carry, an empty append
            // probes again — else a learner added after the last entry waits for the next write.
            let needs_empty = self.progress.get(&to).is_some_and(|p| match p.state {
                ProgressState::Snapshot => false,
                ProgressState::Probe => p.sent_commit < committed || p.matched < last,
                ProgressState::Replicate => p.sent_commit < committed,
            });
            if !sent && needs_empty {
                self.send_append(to, true);
            }
        }
        if self.read_only.round_needed() {
            self.broadcast_heartbeat();
        }
        self.needs_flush = false;
        let (last, committed) = (self.log.last_index(), self.log.committed());
        for (id, p) in &self.progress {
            // A flush only sends what this log holds and what it has committed.
            debug_assert!(p.next <= last + 1, "next {} for {id} beyond the log (last {last})", p.next);
            debug_assert!(
                p.sent_commit <= committed,
                "commit {} sent to {id} beyond ours ({committed})",
                p.sent_commit
            );
        }
    }

    /// Sends one append (or snapshot chunk) to `to` if flow control allows; returns true if an
    /// append carrying entries went out.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let max_inflight = self.cfg.max_inflight_appends;
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.state == ProgressState::Snapshot {
            self.send_snapshot_chunk(to);
            return false;
        }
        if pr.is_paused(max_inflight) {
            return false;
        }
        let next = pr.next;
        let last = self.log.last_index();
        let prev_index = next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            self.start_snapshot(to);
            return false;
        };
        if next > last && !allow_empty {
            return false;
        }
        let entries = self.batch_from(next);
        let last_sent = entries.last().map(|e| e.index);
        let commit = self.log.committed();
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        pr.sent(last_sent);
        pr.floor = pr.floor.min(prev_index);
        pr.sent_commit = commit;
        self.send(to, self.term, Body::Append { prev_index, prev_term, entries, commit });
        last_sent.is_some()
    }

    fn batch_from(&self, next: Index) -> Vec<Entry> {
        let last = self.log.last_index();
        if next > last {
            return Vec::new();
        }
        let hi = last.min(next + self.cfg.max_entries_per_append as Index - 1);
        let slice = self.log.slice(next, hi);
        let mut bytes = 0;
        let mut n = 0;
        for e in slice {
            bytes += e.size_hint();
            if n > 0 && bytes > self.cfg.max_append_bytes {
                break;
            }
            n += 1;
        }
        slice[..n].to_vec()
    }

    fn start_snapshot(&mut self, to: NodeId) {
        let Some(index) = self.latest_snapshot.as_ref().map(|s| s.meta.index) else {
            debug_assert!(false, "log compacted without a snapshot");
            return;
        };
        if let Some(pr) = self.progress.get_mut(&to) {
            debug!(node = self.id, to, index, "follower needs a snapshot");
            pr.become_snapshot(index);
        }
        self.send_snapshot_chunk(to);
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(snap) = self.latest_snapshot.as_ref() else {
            return;
        };
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        if pr.pending_snapshot != snap.meta.index {
            // A newer snapshot replaced the one being sent: start over with it.
            pr.become_snapshot(snap.meta.index);
        }
        if pr.snapshot_chunk_sent {
            return;
        }
        let len = snap.data.len() as u64;
        let start = pr.snapshot_offset.min(len);
        let end = len.min(start + self.cfg.snapshot_chunk_bytes as u64);
        let body = Body::Snapshot {
            meta: snap.meta.clone(),
            offset: start,
            data: snap.data.slice(start as usize..end as usize),
            done: end == len,
        };
        pr.snapshot_chunk_sent = true;
        self.send(to, self.term, body);
    }

    fn broadcast_heartbeat(&mut self) {
        let round = self.read_only.start_round(self.ticks);
        let commit = self.log.committed();
        let peers: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(&id, p)| {
                (id, if crate::planted!(HeartbeatCommitBeyondMatch) { commit } else { p.matched.min(commit) })
            })
            .collect();
        for (to, commit) in peers {
            self.send(to, self.term, Body::Heartbeat { commit, round });
        }
        self.check_reads();
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        debug!(node = self.id, to, "sending TimeoutNow");
        self.lease_revoked = true;
        self.send(to, self.term, Body::TimeoutNow);
    }

    fn send(&mut self, to: NodeId, term: Term, body: Body) {
        self.msgs.push(Message { from: self.id, to, term, body });
    }

    // ----------------------------------------------------------------------------------------
    // Client requests
    // ----------------------------------------------------------------------------------------

    fn check_leader(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if let Some(to) = self.transferee {
            return Err(ProposeError::TransferInProgress { to });
        }
        if !self.progress.contains_key(&self.id) {
            return Err(ProposeError::ProposalDropped);
        }
        if self.log.last_index() >= MAX_INDEX {
            return Err(ProposeError::LogFull(MAX_INDEX));
        }
        Ok(())
    }

    fn append_entry(&mut self, kind: EntryKind, data: Bytes) -> Index {
        let index = self.log.last_index() + 1;
        self.log.append(Entry { term: self.term, index, kind, data });
        self.needs_flush = true;
        index
    }

    /// Proposes application data; returns the index it will have if committed. On a follower:
    /// [`ProposeError::NotLeader`] with the leader's id when known.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        self.assert_idle();
        self.check_leader()?;
        Ok(self.append_entry(EntryKind::Normal, data))
    }

    /// Proposes a single-server membership change. Refused until the leader has committed an
    /// entry of its term, while another change is uncommitted, and for a learner that has not
    /// caught up (match within `max_entries_per_append` of the commit index).
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Index, ProposeError> {
        self.assert_idle();
        self.check_leader()?;
        let commit = self.log.committed();
        if commit < self.term_start && !crate::planted!(ConfChangeBeforeTermCommit) {
            return Err(ProposeError::FirstCommitPending);
        }
        let pending = self.membership.last_change_index();
        if pending > commit {
            return Err(ProposeError::ConfChangeInProgress { index: pending });
        }
        let conf = self.membership.current();
        if cc.node == 0 {
            return Err(ProposeError::InvalidConfChange("node id 0"));
        }
        match cc.kind {
            ConfChangeKind::AddLearner if conf.learners.contains(&cc.node) => {
                return Err(ProposeError::InvalidConfChange("already a learner"));
            }
            ConfChangeKind::AddLearner if conf.voters.contains(&cc.node) && conf.voters.len() == 1 => {
                return Err(ProposeError::InvalidConfChange("cannot demote the last voter"));
            }
            ConfChangeKind::AddVoter if conf.voters.contains(&cc.node) => {
                return Err(ProposeError::InvalidConfChange("already a voter"));
            }
            ConfChangeKind::AddVoter if !conf.learners.contains(&cc.node) => {
                return Err(ProposeError::InvalidConfChange("add the node as a learner first"));
            }
            ConfChangeKind::AddVoter => {
                let matched = self.progress.get(&cc.node).map_or(0, |p| p.matched);
                let margin = self.cfg.max_entries_per_append as Index;
                if matched + margin < commit || matched == 0 {
                    return Err(ProposeError::LearnerNotCaughtUp { node: cc.node, matched, commit });
                }
            }
            ConfChangeKind::Remove if !conf.contains(cc.node) => {
                return Err(ProposeError::InvalidConfChange("not a member"));
            }
            ConfChangeKind::Remove if conf.voters.contains(&cc.node) && conf.voters.len() == 1 => {
                return Err(ProposeError::InvalidConfChange("cannot remove the last voter"));
            }
            _ => {}
        }
        let conf = conf.apply(&cc);
        let kind = cc.kind;
        let target = cc.node;
        let data = ConfEntry { change: cc, conf: conf.clone() }.to_bytes();
        let index = self.append_entry(EntryKind::ConfChange, data);
        self.membership.push(index, conf);
        self.rebuild_progress();
        debug!(node = self.id, index, ?kind, target, "membership change proposed");
        // A change may shrink the quorum (e.g. removing a lagging voter).
        self.maybe_commit();
        Ok(index)
    }

    /// Asks for a linearizable read tagged `ctx`; a [`ReadState`] with the same `ctx` appears in a
    /// later [`Ready`]. A follower forwards it to the leader. Reads pending when leadership is lost
    /// are dropped: retry after a timeout.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.assert_idle();
        match self.role {
            Role::Leader => {
                self.handle_read(ctx, self.id);
                Ok(())
            }
            _ if crate::planted!(FollowerLocalRead) => {
                self.read_states.push(ReadState { ctx, index: self.log.committed() });
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, self.term, Body::ReadIndex { ctx });
                    Ok(())
                }
                None => Err(ProposeError::NotLeader { leader: None }),
            },
        }
    }

    fn handle_read(&mut self, ctx: u64, from: NodeId) {
        let commit = self.log.committed();
        if commit < self.term_start {
            self.read_only.wait_for_commit(ctx, from);
            return;
        }
        let lease = self.cfg.lease_ticks().filter(|_| !self.lease_revoked && self.transferee.is_none());
        if crate::planted!(ReadIndexWithoutQuorum)
            || lease.is_some_and(|lease_ticks| self.read_only.lease_valid(self.ticks, lease_ticks))
        {
            self.answer_read(ctx, from, commit);
            return;
        }
        self.read_only.add(ctx, from, commit);
        self.needs_flush = true;
    }

    fn answer_read(&mut self, ctx: u64, from: NodeId, index: Index) {
        if from == self.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            self.send(from, self.term, Body::ReadIndexResponse { ctx, index });
        }
    }

    /// Releases reads whose heartbeat round a quorum has acknowledged.
    fn check_reads(&mut self) {
        let own = self.read_only.round();
        let progress = &self.progress;
        let id = self.id;
        let acked = quorum::committed_value(&self.membership.current().voters, |v| {
            if v == id { own } else { progress.get(&v).map_or(0, |p| p.read_round) }
        });
        for r in self.read_only.quorum_acked(acked) {
            self.answer_read(r.ctx, r.from, r.index);
        }
    }

    /// Hands leadership to voter `to`: once its log is caught up it gets TimeoutNow and campaigns
    /// at once. Proposals are refused meanwhile; the transfer is abandoned after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.assert_idle();
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if to == self.id || self.transferee == Some(to) {
            return Ok(());
        }
        if !self.membership.current().voters.contains(&to) {
            return Err(ProposeError::InvalidConfChange("transfer target is not a voter"));
        }
        debug!(node = self.id, to, "leadership transfer started");
        self.transferee = Some(to);
        self.election_elapsed = 0;
        if self.progress.get(&to).is_some_and(|p| p.matched == self.log.last_index()) {
            self.send_timeout_now(to);
        } else {
            self.needs_flush = true;
        }
        Ok(())
    }

    /// The transport could not reach `id`: stop pipelining to it and probe again.
    pub fn report_unreachable(&mut self, id: NodeId) {
        self.assert_idle();
        if let Some(pr) = self.progress.get_mut(&id)
            && pr.state == ProgressState::Replicate
        {
            pr.become_probe();
        }
    }

    // ----------------------------------------------------------------------------------------
    // Snapshots and compaction (called by the application)
    // ----------------------------------------------------------------------------------------

    /// The application durably saved a snapshot of its state at `index` (which it has applied).
    /// The core keeps it to send to lagging followers; call [`Raft::compact`] to free the log.
    pub fn snapshot(&mut self, index: Index, data: Bytes) -> Result<(), SnapshotError> {
        self.assert_idle();
        let applied = self.log.applied();
        if index > applied {
            return Err(SnapshotError::NotApplied { index, applied });
        }
        let current = self.latest_snapshot.as_ref().map_or(0, |s| s.meta.index).max(self.log.snap_index());
        let Some(term) = self.log.term(index).filter(|_| index > current) else {
            return Err(SnapshotError::OutOfDate { index, current });
        };
        let conf_state = self.membership.at(index).clone();
        self.latest_snapshot = Some(Snapshot { meta: SnapshotMeta { index, term, conf_state }, data });
        Ok(())
    }

    /// While set, the state machine lacks part of an installed snapshot's data (the driver pulls
    /// it): committed entries are held back (applying resumes where it stopped once cleared) and
    /// this node neither campaigns nor answers `TimeoutNow`. It still appends, acks and votes.
    ///
    /// A snapshot installed since the driver last took a [`Ready`] keeps the mode on: the driver
    /// finishing the pull of an older install must not let entries after the newer one apply
    /// onto a state that lacks its data (seed 718: a late duplicate of a snapshot message).
    pub fn set_catching_up(&mut self, on: bool) {
        self.assert_idle();
        let newer_install = self.catch_up.catch_up_on_install && self.snapshot_to_install.is_some();
        self.catch_up.catching_up = on || newer_install;
    }

    /// From now on, installing a snapshot received from the leader also sets the catching-up mode
    /// ([`Raft::set_catching_up`]), so that nothing after it is applied before the driver has
    /// the snapshot's data and clears the mode.
    pub fn set_catch_up_on_install(&mut self, on: bool) {
        self.catch_up.catch_up_on_install = on;
    }

    /// See [`Raft::set_catching_up`].
    pub fn is_catching_up(&self) -> bool {
        self.catch_up.catching_up
    }

    /// Drops log entries up to `index`, which the latest snapshot must cover. Keeping a tail after
    /// the snapshot lets slightly lagging followers catch up without one.
    pub fn compact(&mut self, index: Index) -> Result<(), SnapshotError> {
        self.assert_idle();
        let snapshot = self.latest_snapshot.as_ref().map_or(0, |s| s.meta.index);
        if index > snapshot {
            return Err(SnapshotError::NoSnapshot { index, snapshot });
        }
        if index <= self.log.snap_index() {
            return Err(SnapshotError::OutOfDate { index, current: self.log.snap_index() });
        }
        self.membership.compact_to(index);
        self.log.compact(index);
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Ready / advance
    // ----------------------------------------------------------------------------------------

    /// True if [`Raft::ready`] has anything for the driver.
    pub fn has_ready(&self) -> bool {
        self.needs_flush
            || !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || self.snapshot_to_install.is_some()
            || !self.log.unstable_entries().is_empty()
            || (!self.catch_up.catching_up && !self.log.next_committed().is_empty())
            || self.hard_state() != self.prev_hard
            || self.soft_state() != self.prev_soft
    }

    fn soft_state(&self) -> SoftState {
        SoftState { leader: self.leader, role: self.role }
    }

    /// Takes what the driver must persist, send and apply (see [`Ready`] for the order). Call
    /// [`Raft::advance`] when done, before driving the core again.
    pub fn ready(&mut self) -> Ready {
        self.assert_idle();
        if self.needs_flush {
            self.flush();
        }
        let hard = self.hard_state();
        let soft = self.soft_state();
        let rd = Ready {
            hard_state: (hard != self.prev_hard).then_some(hard),
            entries: self.log.unstable_entries().to_vec(),
            snapshot: self.snapshot_to_install.take(),
            messages: std::mem::take(&mut self.msgs),
            committed_entries: if self.catch_up.catching_up {
                Vec::new()
            } else {
                self.log.next_committed().to_vec()
            },
            read_states: std::mem::take(&mut self.read_states),
            soft_state: (soft != self.prev_soft).then_some(soft),
        };
        self.prev_hard = hard;
        self.prev_soft = soft;
        let last_entry = self.log.take_unstable();
        let applying = if self.catch_up.catching_up { self.log.applied() } else { self.log.take_committed() };
        self.in_flight = Some(InFlight { last_entry, applying });
        rd
    }

    /// Confirms that the last [`Ready`] was fully handled: its state is durable, its messages sent
    /// and its committed entries applied.
    pub fn advance(&mut self) {
        let Some(done) = self.in_flight.take() else {
            panic!("advance() without a preceding ready()");
        };
        self.log.stable_to(done.last_entry);
        self.log.applied_to(done.applying);
        if self.role == Role::Leader {
            let stable = self.log.stable();
            if let Some(me) = self.progress.get_mut(&self.id) {
                me.matched = me.matched.max(stable);
            }
            self.maybe_commit();
        }
    }

    /// [`Self::advance`] when the driver applied the committed entries it was handed only up to
    /// `applied` (it stopped before the next one and will apply it again): the entries after
    /// `applied` are handed out again by the next [`Self::ready`].
    pub fn advance_applied_to(&mut self, applied: Index) {
        let Some(done) = self.in_flight.as_mut() else {
            panic!("advance_applied_to() without a preceding ready()");
        };
        assert!(
            applied >= self.log.applied() && applied <= done.applying,
            "applied {applied} outside what was handed out ({}..={})",
            self.log.applied(),
            done.applying
        );
        done.applying = applied;
        self.advance();
        self.log.hand_back_after(applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> Raft {
        Raft::new(RaftConfig::new(1), RestoredState::bootstrap([1, 2, 3]), crate::rt::rng_from_seed(1))
            .unwrap()
    }

    #[test]
    #[should_panic(expected = "term moved back")]
    fn term_never_decreases() {
        let mut r = core();
        r.set_term(5);
        r.set_term(4);
    }

    #[test]
    #[should_panic(expected = "vote changed within term")]
    fn vote_never_changes_within_a_term() {
        let mut r = core();
        r.set_term(1);
        r.set_vote(2);
        r.set_vote(3);
    }

    #[test]
    fn a_new_term_clears_the_vote_and_the_same_vote_may_be_recorded_again() {
        let mut r = core();
        r.set_term(1);
        r.set_vote(2);
        r.set_vote(2);
        r.set_term(2);
        assert_eq!(r.vote(), None);
        r.set_vote(3);
        assert_eq!(r.vote(), Some(3));
    }

    /// A sole voter campaigns at its first tick (and wins at once); a member of a larger
    /// configuration, or a sole voter whose configuration is not committed yet, waits its
    /// randomized election timeout as before.
    #[test]
    fn a_sole_committed_voter_campaigns_at_its_first_tick() {
        let new = |voters: &[NodeId]| {
            Raft::new(
                RaftConfig::new(1),
                RestoredState::bootstrap(voters.iter().copied()),
                crate::rt::rng_from_seed(1),
            )
            .unwrap()
        };
        let mut r = new(&[1]);
        assert!(r.sole_committed_voter());
        r.tick();
        assert_eq!(r.role(), Role::Leader);
        let mut r = new(&[1, 2, 3]);
        assert!(!r.sole_committed_voter());
        r.tick();
        assert_eq!(r.role(), Role::Follower);
        // A configuration entry making node 1 the sole voter, appended but not committed.
        let mut r = new(&[1, 2]);
        r.membership.push(1, ConfState::with_voters([1]));
        assert!(!r.sole_committed_voter(), "not before the configuration is committed");
    }

    #[test]
    fn entries_not_applied_after_a_partial_apply_are_handed_out_again() {
        let mut r = Raft::new(RaftConfig::new(1), RestoredState::bootstrap([1]), crate::rt::rng_from_seed(1))
            .unwrap();
        for _ in 0..1000 {
            if r.role() == Role::Leader {
                break;
            }
            r.tick();
            if r.has_ready() {
                r.ready();
                r.advance();
            }
        }
        for p in 0..3u8 {
            r.propose(Bytes::from(vec![p])).unwrap();
        }
        let rd = loop {
            assert!(r.has_ready());
            let rd = r.ready();
            if rd.committed_entries.iter().any(|e| e.data[..] == [2]) {
                break rd;
            }
            r.advance();
        };
        let handed: Vec<Index> = rd.committed_entries.iter().map(|e| e.index).collect();
        let stop = handed.len() - 2;
        // Applying stopped at the second-to-last entry: applied is the one before it.
        r.advance_applied_to(handed[stop] - 1);
        assert_eq!(r.applied(), handed[stop] - 1);
        assert!(r.has_ready());
        let again: Vec<Index> = r.ready().committed_entries.iter().map(|e| e.index).collect();
        assert_eq!(again, handed[stop..]);
        r.advance();
        assert_eq!(r.applied(), *handed.last().unwrap());
        assert!(r.ready().committed_entries.is_empty());
    }

    #[test]
    #[should_panic(expected = "without a preceding ready")]
    fn advance_without_ready_is_refused() {
        core().advance();
    }

    #[test]
    fn step_refuses_terms_and_indexes_beyond_the_ceiling_and_keeps_campaigning_normally() {
        let mut r = core();
        let bad = [
            Message { from: 2, to: 1, term: u64::MAX, body: Body::Heartbeat { commit: 1, round: 1 } },
            Message { from: 2, to: 1, term: MAX_TERM + 1, body: Body::TimeoutNow },
            Message { from: 2, to: 1, term: 1, body: Body::Heartbeat { commit: u64::MAX, round: 1 } },
            Message {
                from: 2,
                to: 1,
                term: 1,
                body: Body::Append { prev_index: u64::MAX, prev_term: 1, entries: vec![], commit: 0 },
            },
        ];
        for m in bad {
            assert!(matches!(r.step(m.clone()), Err(RaftError::Malformed { from: 2, .. })), "{m:?}");
        }
        assert_eq!((r.term(), r.commit_index()), (0, 0));
        r.hup(true);
        assert_eq!(r.term(), 1, "the next election is an ordinary one");
    }

    #[test]
    fn a_term_at_the_ceiling_never_campaigns_past_it() {
        let mut restored = RestoredState::bootstrap([1, 2, 3]);
        restored.hard_state.term = MAX_TERM;
        let mut r = Raft::new(RaftConfig::new(1), restored, crate::rt::rng_from_seed(1)).unwrap();
        r.hup(true);
        assert_eq!((r.term(), r.role()), (MAX_TERM, Role::Follower));
    }

    #[test]
    fn restored_state_beyond_the_ceiling_is_a_typed_error() {
        let mut terms = RestoredState::bootstrap([1, 2, 3]);
        terms.hard_state.term = u64::MAX;
        let mut snap = RestoredState::bootstrap([1, 2, 3]);
        snap.hard_state.term = 2;
        snap.snapshot = Some(Snapshot {
            meta: SnapshotMeta { index: u64::MAX, term: 2, conf_state: ConfState::with_voters([1, 2, 3]) },
            data: Bytes::new(),
        });
        for restored in [terms, snap] {
            let r = Raft::new(RaftConfig::new(1), restored, crate::rt::rng_from_seed(1));
            assert!(matches!(r, Err(InitError::Restore(_))), "{:?}", r.err());
        }
    }
}
