//! Raft's safety properties checked at every round of every member, not only at the end of a run.
//!
//! [`RaftWatch`] is the [`RaftObserver`] every simulated member reports to. After each round of a
//! member's driver it feeds that member's view to the Raft core's [`Checker`] (election safety:
//! one leader per term; log matching; leader completeness; commit index never moving back within
//! an incarnation; applied never beyond commit) and checks state-machine safety itself: every
//! member applies the same entry at each index. The first violation is kept with the recent
//! rounds that led to it (the history excerpt a failure report prints).
//!
//! It also keeps what the golden snapshots and the timeline need: the committed log (index →
//! term, kind, payload digest), the leader of each term, role changes and commit progress.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;

use eventstreamcore::node::command::Command;
use eventstreamcore::node::state::Fnv64;
use eventstreamcore::node::{RaftObserver, RoundView};
use eventstreamcore::raft::testkit::{Checker, NodeView};
use eventstreamcore::raft::{Entry, EntryKind, Index, NodeId, Role, Term};

use crate::commit_watch::{CommitHistory, CommitRound};
use crate::timeline::{Event, Recorder, RoleMark};

/// How many recent rounds a violation report shows.
const EXCERPT: usize = 24;

/// One committed entry as the watch recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedEntry {
    pub term: Term,
    pub kind: EntryClass,
    /// Digest of the entry's payload.
    pub digest: u64,
}

/// What an entry carries, for summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryClass {
    /// A batch of events (`Command::Publish`), with how many.
    Publish(usize),
    /// A pipeline checkpoint.
    Checkpoint,
    /// A named consumer's committed position.
    CommitOffset,
    /// Topic settings or a retention trim.
    Retention,
    /// A new leader's empty entry.
    Noop,
    /// A membership change.
    ConfChange,
    /// Data that does not decode as a command.
    Undecodable,
}

impl EntryClass {
    fn of(e: &Entry) -> EntryClass {
        match e.kind {
            EntryKind::Noop => EntryClass::Noop,
            EntryKind::ConfChange => EntryClass::ConfChange,
            EntryKind::Normal => match Command::decode(e.data.clone()) {
                Ok(Command::Publish { events, .. }) => EntryClass::Publish(events.len()),
                Ok(Command::Checkpoint { .. }) => EntryClass::Checkpoint,
                Ok(Command::CommitOffset(_)) => EntryClass::CommitOffset,
                Ok(Command::TopicSettings(_) | Command::Trim { .. }) => EntryClass::Retention,
                Err(_) => EntryClass::Undecodable,
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            EntryClass::Publish(_) => "publish",
            EntryClass::Checkpoint => "checkpoint",
            EntryClass::CommitOffset => "commit_offset",
            EntryClass::Retention => "retention",
            EntryClass::Noop => "noop",
            EntryClass::ConfChange => "conf",
            EntryClass::Undecodable => "undecodable",
        }
    }
}

/// Digest of an entry: term, kind and payload.
pub fn entry_digest(e: &Entry) -> u64 {
    let mut h = Fnv64::default();
    h.write_u64(e.term);
    h.write(&[e.kind as u8]);
    h.write(&e.data);
    h.finish()
}

/// The applied-sequence digest after applying an entry with digest `entry` to a state with `chain`.
fn chain_digest(chain: u64, entry: u64) -> u64 {
    let mut h = Fnv64::default();
    h.write_u64(chain);
    h.write_u64(entry);
    h.finish()
}

/// A Raft safety violation, with where and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftViolation {
    /// Simulated milliseconds since the start.
    pub at_ms: u64,
    pub node: NodeId,
    pub what: String,
    /// The rounds just before it, one line each.
    pub excerpt: Vec<String>,
}

/// A change of a member's role or term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleChange {
    pub at_ms: u64,
    pub node: NodeId,
    pub role: Role,
    pub term: Term,
}

#[derive(Debug, Default)]
struct Inner {
    checker: Checker,
    violation: Option<RaftViolation>,
    committed: BTreeMap<Index, CommittedEntry>,
    /// Which member applied each index first.
    leaders: BTreeMap<Term, NodeId>,
    roles: BTreeMap<NodeId, (Role, Term)>,
    role_changes: Vec<RoleChange>,
    commits: Vec<(u64, NodeId, Index)>,
    last_commit: BTreeMap<NodeId, Index>,
    /// Per member: the term and vote at the end of its last round (durable by then).
    hard: BTreeMap<NodeId, (Term, Option<NodeId>)>,
    /// Per member: entries applied one by one, snapshots installed, restarts.
    applied_count: BTreeMap<NodeId, u64>,
    snapshots: BTreeMap<NodeId, u64>,
    incarnations: BTreeMap<NodeId, u64>,
    /// Per member: the index it last applied and a digest chained over the entries it applied
    /// one by one since the state it started from (fed to the core checker's applied-divergence
    /// check, which compares it with the other members' chains at the same index).
    chains: BTreeMap<NodeId, (Index, u64)>,
    /// The chained digest at each index, as the first member to apply it computed it: where a
    /// member that starts from a snapshot or a restart continues its chain.
    chain_at: BTreeMap<Index, u64>,
    recent: VecDeque<String>,
    rounds: u64,
    /// Per member: the highest committed index its log held (with the committed entry's term)
    /// at the end of a round; see [`check_kept_committed`].
    held: BTreeMap<NodeId, Index>,
    /// Per member: its log at the end of its last round, as elections see it.
    shapes: BTreeMap<NodeId, LogShape>,
    /// Per leader: the highest commit index checked by [`check_commit_is_safe`].
    safe_commit: BTreeMap<NodeId, Index>,
    /// Per member: the highest commit index of its incarnation ([`CommitHistory`]).
    commit_history: CommitHistory,
    /// Per member leading now: its term and commit index at the end of its last round as leader
    /// ([`check_leader_commits_own_term`]).
    leader_commit: BTreeMap<NodeId, (Term, Index)>,
}

/// A member's log as the election rule sees it: its last entry and where each term's run of
/// entries starts (entries before `first` are compacted into its snapshot, whose last entry is
/// `base` when known).
#[derive(Debug, Clone, Default)]
struct LogShape {
    first: Index,
    last: Index,
    runs: Vec<(Index, Term)>,
    /// (term, index) of the last compacted entry (`first - 1`): from the snapshot installed this
    /// round, or from the member's previous shape (a restart from its own snapshot).
    base: Option<(Term, Index)>,
}

impl LogShape {
    fn of(v: &RoundView<'_>, prev: Option<&LogShape>) -> LogShape {
        let mut runs: Vec<(Index, Term)> = Vec::new();
        for e in v.entries {
            if runs.last().is_none_or(|&(_, t)| t != e.term) {
                runs.push((e.index, e.term));
            }
        }
        let at = v.first_index.checked_sub(1).filter(|&i| i > 0);
        let base = at.and_then(|i| match v.snapshot {
            Some((si, st)) if si == i => Some((st, i)),
            _ => prev.and_then(|p| p.term_at(i)).map(|t| (t, i)),
        });
        LogShape { first: v.first_index, last: v.entries.last().map_or(0, |e| e.index), runs, base }
    }

    /// The term of the entry at `index`, if this shape knows it (held, or its compacted last).
    fn term_at(&self, index: Index) -> Option<Term> {
        if (self.first..=self.last).contains(&index) {
            return self.runs.iter().rev().find(|(start, _)| *start <= index).map(|r| r.1);
        }
        self.base.filter(|b| b.1 == index).map(|b| b.0)
    }

    /// (last term, last index), what a vote compares (an empty log after a snapshot: the
    /// snapshot's last entry); `None` when unknown.
    fn up_to_date(&self) -> Option<(Term, Index)> {
        self.runs.last().map(|&(_, t)| (t, self.last)).or(self.base)
    }

    /// The log holds `term` at `index` (or compacted it: then it holds the committed entry).
    fn holds(&self, index: Index, term: Term) -> bool {
        if index < self.first {
            return true;
        }
        index <= self.last
            && self.runs.iter().rev().find(|(start, _)| *start <= index).is_some_and(|r| r.1 == term)
    }
}

/// The observer the simulated members share (one per run).
pub struct RaftWatch {
    now_ms: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Role changes and commit progress also go here as they happen (member `n` is row `n - 1`).
    timeline: Option<Recorder>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for RaftWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftWatch").finish_non_exhaustive()
    }
}

impl RaftWatch {
    /// A watch reading simulated time (milliseconds since the start) from `now_ms`.
    pub fn new(now_ms: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        RaftWatch { now_ms: Box::new(now_ms), timeline: None, inner: Mutex::new(Inner::default()) }
    }

    /// Also records role changes and commit progress on `timeline` as they happen.
    pub fn with_timeline(mut self, timeline: Option<Recorder>) -> Self {
        self.timeline = timeline;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first violation seen, if any.
    pub fn violation(&self) -> Option<RaftViolation> {
        self.lock().violation.clone()
    }

    /// Rounds observed so far (all members).
    pub fn rounds(&self) -> u64 {
        self.lock().rounds
    }

    /// The committed log as applied by the members (index → entry).
    pub fn committed(&self) -> BTreeMap<Index, CommittedEntry> {
        self.lock().committed.clone()
    }

    /// The leader of each term.
    pub fn leaders(&self) -> BTreeMap<Term, NodeId> {
        self.lock().leaders.clone()
    }

    /// Every role or term change, in order.
    pub fn role_changes(&self) -> Vec<RoleChange> {
        self.lock().role_changes.clone()
    }

    /// Commit index progress: (ms, node, commit index) whenever a member's commit index changed.
    pub fn commits(&self) -> Vec<(u64, NodeId, Index)> {
        self.lock().commits.clone()
    }

    /// A short, stable summary for golden snapshots: the leader of each term; the committed log
    /// one line per term (index range, entries by kind, events published, a digest over the
    /// entries' payloads); and per member how it got its state.
    pub fn summary(&self) -> String {
        #[derive(Default)]
        struct TermRun {
            first: Index,
            last: Index,
            kinds: BTreeMap<&'static str, usize>,
            events: usize,
            digest: Fnv64,
        }
        let inner = self.lock();
        let mut s = String::from("leaders:");
        for (term, node) in &inner.leaders {
            let _ = write!(s, " t{term}=n{node}");
        }
        s.push_str("\ncommitted log by term:\n");
        let mut terms: BTreeMap<Term, TermRun> = BTreeMap::new();
        for (&i, e) in &inner.committed {
            let r = terms.entry(e.term).or_insert_with(|| TermRun { first: i, ..TermRun::default() });
            r.last = i;
            *r.kinds.entry(e.kind.name()).or_default() += 1;
            if let EntryClass::Publish(n) = e.kind {
                r.events += n;
            }
            r.digest.write_u64(e.digest);
        }
        for (t, r) in &terms {
            let kinds: Vec<String> = r.kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let _ = writeln!(
                s,
                "  t{t}: {}..{} {} ({} events) {:016x}",
                r.first,
                r.last,
                kinds.join(", "),
                r.events,
                r.digest.finish()
            );
        }
        s.push_str("members (entries applied one by one / snapshots installed / incarnations):\n");
        for (node, n) in &inner.incarnations {
            let _ = writeln!(
                s,
                "  n{node}: {} / {} / {n}",
                inner.applied_count.get(node).copied().unwrap_or(0),
                inner.snapshots.get(node).copied().unwrap_or(0),
            );
        }
        s
    }

    /// Member `node` was wiped to be added back as a new member: it starts with no term or vote.
    pub fn member_wiped(&self, node: NodeId) {
        let mut g = self.lock();
        g.hard.remove(&node);
        g.held.remove(&node);
        g.shapes.remove(&node);
        g.commit_history.wiped(node);
    }

    /// Member `node` was killed: its log is unknown until it reports a round again (with what
    /// recovery found). A kill can land inside a round after the round's writes and messages but
    /// before the watch saw it, so the last round seen may hold less than the member persisted
    /// and acked; judging a commit against that stale log would be a false alarm (seed
    /// 875366204207). Its term and vote are kept (they must survive the crash).
    pub fn member_crashed(&self, node: NodeId) {
        self.lock().shapes.remove(&node);
    }

    fn observe(&self, v: &RoundView<'_>) {
        let at_ms = (self.now_ms)();
        let mut g = self.lock();
        let inner = &mut *g;
        inner.rounds += 1;
        if v.first_round {
            inner.checker.node_restarted(v.node);
            *inner.incarnations.entry(v.node).or_default() += 1;
        }
        if v.snapshot.is_some() {
            *inner.snapshots.entry(v.node).or_default() += 1;
        }
        let line = format!(
            "{:>8.3}s n{} {:?} term {} leader {:?} commit {} applied {} log {}..{}{}{}",
            at_ms as f64 / 1000.0,
            v.node,
            v.role,
            v.term,
            v.leader,
            v.commit,
            v.applied,
            v.first_index,
            v.first_index + v.entries.len() as Index,
            v.snapshot.map(|(i, t)| format!(" installed snapshot {i}@t{t}")).unwrap_or_default(),
            if v.first_round { " (restarted)" } else { "" },
        );
        if inner.recent.len() == EXCERPT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(line);
        if inner.roles.get(&v.node) != Some(&(v.role, v.term)) {
            inner.roles.insert(v.node, (v.role, v.term));
            inner.role_changes.push(RoleChange { at_ms, node: v.node, role: v.role, term: v.term });
            if let Some(t) = &self.timeline {
                let role = match v.role {
                    Role::Follower => RoleMark::Follower,
                    Role::PreCandidate => RoleMark::PreCandidate,
                    Role::Candidate => RoleMark::Candidate,
                    Role::Leader => RoleMark::Leader,
                };
                t.record(Event::Role { at: at_ms, node: v.node as usize - 1, role, term: v.term });
            }
        }
        if v.role == Role::Leader {
            inner.leaders.entry(v.term).or_insert(v.node);
        }
        if inner.last_commit.get(&v.node) != Some(&v.commit) {
            inner.last_commit.insert(v.node, v.commit);
            inner.commits.push((at_ms, v.node, v.commit));
            if let Some(t) = &self.timeline {
                t.record(Event::Commit { at: at_ms, node: v.node as usize - 1, index: v.commit });
            }
        }
        if inner.violation.is_some() {
            return;
        }
        let result = self::check_round(inner, v);
        if let Err(what) = result {
            let excerpt = inner.recent.iter().cloned().collect();
            inner.violation = Some(RaftViolation { at_ms, node: v.node, what, excerpt });
        }
    }
}

/// State-machine safety and the core checker's invariants for one round.
/// No run holds anywhere near this many elections (one every election timeout would take
/// weeks of simulated time); a member past it took a forged term from a peer.
pub const PLAUSIBLE_TERM: Term = 100_000;

fn check_round(inner: &mut Inner, v: &RoundView<'_>) -> Result<(), String> {
    if v.term > PLAUSIBLE_TERM {
        return Err(format!(
            "term: n{} is at term {}, beyond any term a run's elections reach ({PLAUSIBLE_TERM}): it took a forged term",
            v.node, v.term
        ));
    }
    check_hard_state(inner, v)?;
    let round = CommitRound {
        node: v.node,
        commit: v.commit,
        first_round: v.first_round,
        installed: v.snapshot.map(|(i, _)| i),
    };
    inner.commit_history.observe(round)?;
    if v.first_round || v.snapshot.is_some() {
        // The member's state now comes from its disk or a snapshot: its chain continues from there.
        inner.chains.remove(&v.node);
    }
    for e in v.applied_entries {
        check_applied(inner, v.node, e)?;
    }
    check_kept_committed(inner, v)?;
    let shape = LogShape::of(v, inner.shapes.get(&v.node));
    inner.shapes.insert(v.node, shape);
    check_leader_commits_own_term(inner, v)?;
    check_commit_is_safe(inner, v)?;
    check_conf_change_after_term_commit(v)?;
    // The member's own chain where it has one; otherwise (it has applied nothing one by one since it
    // started from its disk or a snapshot) the chain recorded at that index, which is all there is.
    let digest = match inner.chains.get(&v.node) {
        Some(&(i, chain)) if i == v.applied => chain,
        _ => inner.chain_at.get(&v.applied).copied().unwrap_or(0),
    };
    // Entries already in the log were scanned for log matching when they arrived; after a plain
    // append only the new entries (and their predecessor) need it. A snapshot or a restart
    // rescans the whole log.
    let full_scan = v.first_round || v.snapshot.is_some();
    let view = NodeView {
        id: v.node,
        term: v.term,
        role: v.role,
        commit: v.commit,
        first_index: v.first_index,
        entries: v.entries,
        applied: v.applied,
        digest,
        log_changed: v.log_changed && (full_scan || v.appended_from.is_none()),
    };
    inner.checker.check(std::slice::from_ref(&view)).map_err(|x| x.to_string())?;
    if let Some(from) = v.appended_from.filter(|_| !full_scan && v.log_changed) {
        let start = from.saturating_sub(1).max(v.first_index);
        let skip = usize::try_from(start - v.first_index).unwrap_or(usize::MAX).min(v.entries.len());
        // Only the log-matching scan runs on this view: same commit (nothing newly committed),
        // not a leader (election safety and completeness were checked on the whole log above).
        let tail = NodeView {
            role: Role::Follower,
            first_index: start,
            entries: &v.entries[skip..],
            log_changed: true,
            ..view
        };
        inner.checker.check(&[tail]).map_err(|x| x.to_string())?;
    }
    Ok(())
}

/// A member's term and vote survive its crash (Raft's persistent state, Figure 2): a round ends
/// only after its hard state is durable, so a restarted member comes back with at least the term
/// it had, and within that term the same vote. (A member wiped and added back is a new member:
/// [`RaftWatch::member_wiped`] forgets what it had.)
fn check_hard_state(inner: &mut Inner, v: &RoundView<'_>) -> Result<(), String> {
    let now = (v.term, v.vote);
    let before = inner.hard.insert(v.node, now);
    match before {
        Some((term, _)) if v.term < term => Err(format!(
            "hard state: n{} is at term {} after being at term {term}{}: its term was not durable",
            v.node,
            v.term,
            if v.first_round { " before its restart" } else { "" }
        )),
        Some((term, Some(vote))) if v.term == term && v.vote != Some(vote) => Err(format!(
            "hard state: n{} voted for n{vote} in term {term} and now has vote {:?} in the same term{}: its vote was not durable",
            v.node,
            v.vote,
            if v.first_round { " after a restart" } else { "" }
        )),
        _ => Ok(()),
    }
}

/// A member never loses a committed entry its log held. A round ends with its log durable, a
/// committed entry is one the leader counted on, and Raft only ever removes entries that conflict
/// with the leader's, which a committed one never does: a member that held committed entry `i`
/// holds it in every later round (in its log, or compacted into its snapshot) unless it was wiped
/// and added back as a new member. Log matching makes checking the highest such entry enough.
fn check_kept_committed(inner: &mut Inner, v: &RoundView<'_>) -> Result<(), String> {
    let last = (v.first_index + v.entries.len() as Index).saturating_sub(1);
    let term_at = |i: Index| -> Option<Term> {
        let k = usize::try_from(i.checked_sub(v.first_index)?).ok()?;
        v.entries.get(k).map(|e| e.term)
    };
    if let Some(&held) = inner.held.get(&v.node)
        && held >= v.first_index
        && let Some(c) = inner.committed.get(&held)
        && term_at(held) != Some(c.term)
    {
        return Err(format!(
            "committed entry lost: n{} held committed entry {held} (term {}) and no longer has it \
             (its log is now {}..={last}{}): a committed entry was removed from a member's log",
            v.node,
            c.term,
            v.first_index,
            if v.first_round { ", after a restart" } else { "" }
        ));
    }
    let Some((&top, c)) = inner.committed.range(..=last).next_back() else { return Ok(()) };
    if top >= v.first_index && term_at(top) == Some(c.term) {
        inner.held.insert(v.node, top);
    }
    Ok(())
}

/// A leader proposes a membership change only once it has committed an entry of its own term
/// (Ongaro's single-server change bug, fixed in 2015): before that, the previous leader's change
/// may still sit uncommitted on a minority, and two successive single-server changes from
/// different bases can have majorities that do not overlap. Checked when a leader's round appends
/// a configuration entry of its term: the entry at its commit index must be of that term.
fn check_conf_change_after_term_commit(v: &RoundView<'_>) -> Result<(), String> {
    let Some(from) = v.appended_from.filter(|_| v.role == Role::Leader) else { return Ok(()) };
    let skip = usize::try_from(from.saturating_sub(v.first_index)).unwrap_or(usize::MAX);
    let Some(change) =
        v.entries.iter().skip(skip).find(|e| e.kind == EntryKind::ConfChange && e.term == v.term)
    else {
        return Ok(());
    };
    let committed_term = v
        .commit
        .checked_sub(v.first_index)
        .and_then(|k| v.entries.get(usize::try_from(k).ok()?))
        .map(|e| e.term);
    match committed_term {
        // Compacted (committed long ago) or of this term: fine.
        None => Ok(()),
        Some(t) if t == v.term => Ok(()),
        Some(t) => Err(format!(
            "membership change too early: n{} leading in term {} appended a configuration change at \
             index {} while its commit index {} is an entry of term {t}: a leader must commit an entry \
             of its own term before changing membership (a change of the previous leader may still \
             sit on a minority)",
            v.node, v.term, change.index, v.commit
        )),
    }
}

/// A leader moves its commit index only to an entry of its own term (Raft §5.4.2): counting
/// replicas of an earlier term's entry proves nothing, since a member holding a later term's
/// entry at that index may still win an election (Figure 8). Earlier entries become committed
/// only with it. Checked whenever a leader's commit index advances within its term (its first
/// round as leader carries the commit index it had as a follower); the rule itself, so a leader
/// that breaks it fails even where the faults never bring the overwrite about.
fn check_leader_commits_own_term(inner: &mut Inner, v: &RoundView<'_>) -> Result<(), String> {
    if v.role != Role::Leader {
        inner.leader_commit.remove(&v.node);
        return Ok(());
    }
    let before = inner.leader_commit.insert(v.node, (v.term, v.commit));
    let Some((term, from)) = before.filter(|&(t, c)| t == v.term && c < v.commit && !v.first_round) else {
        return Ok(());
    };
    let at = v.commit.checked_sub(v.first_index).and_then(|k| v.entries.get(usize::try_from(k).ok()?));
    match at {
        // Compacted into the leader's snapshot: committed before.
        None => Ok(()),
        Some(e) if e.term == term => Ok(()),
        Some(e) => Err(format!(
            "commit of an earlier term's entry (Raft §5.4.2): n{} leading in term {term} moved its commit \
             index from {from} to {}, an entry of term {}: a leader commits only entries of its own term \
             by counting replicas",
            v.node, v.commit, e.term
        )),
    }
}

/// A leader's commit is safe (Raft §5.4, Figure 8): once an entry is committed, no member whose
/// log lacks it can win an election. When a leader's commit index advances, every member
/// lacking the entry there must be less up to date (last term, last index) than a majority of
/// the members it would need votes from; the members' last reported logs decide (the ones that
/// acknowledged the entry reported it before they did). Committing an earlier term's entry by
/// counting replicas breaks exactly this: a member with a later term's entry at that index can
/// still win and overwrite it.
fn check_commit_is_safe(inner: &mut Inner, v: &RoundView<'_>) -> Result<(), String> {
    if v.role != Role::Leader || inner.safe_commit.get(&v.node).is_some_and(|&c| c >= v.commit) {
        return Ok(());
    }
    inner.safe_commit.insert(v.node, v.commit);
    let Some(term) = v
        .commit
        .checked_sub(v.first_index)
        .and_then(|k| v.entries.get(usize::try_from(k).ok()?))
        .map(|e| e.term)
    else {
        return Ok(());
    };
    let known: Vec<(NodeId, (Term, Index))> =
        inner.shapes.iter().filter_map(|(n, s)| Some((*n, s.up_to_date()?))).collect();
    for (x, x_last) in &known {
        if inner.shapes[x].holds(v.commit, term) {
            continue;
        }
        let voters: Vec<NodeId> = known.iter().filter(|(_, last)| last <= x_last).map(|(n, _)| *n).collect();
        if voters.len() * 2 > known.len() {
            return Err(format!(
                "unsafe commit (Figure 8): n{} committed index {} (term {term}) in term {}, but n{x} lacks \
                 that entry and its log (last term {}, index {}) is at least as up to date as {voters:?}'s, \
                 a majority of {} members: it can win an election and overwrite a committed entry",
                v.node,
                v.commit,
                v.term,
                x_last.0,
                x_last.1,
                known.len()
            ));
        }
    }
    Ok(())
}

/// One entry `node` applied: it follows the node's previous one, matches what any other member
/// applied at its index, and extends the node's chain of applied digests.
fn check_applied(inner: &mut Inner, node: NodeId, e: &Entry) -> Result<(), String> {
    let entry = CommittedEntry { term: e.term, kind: EntryClass::of(e), digest: entry_digest(e) };
    let chain = match inner.chains.get(&node) {
        Some(&(last, chain)) if e.index == last + 1 => Some(chain),
        Some(&(last, _)) => {
            return Err(format!(
                "state-machine safety: n{} applied index {} right after index {last} (entries applied \
                 one by one must follow each other)",
                node, e.index
            ));
        }
        None if e.index == 1 => Some(0),
        None => inner.chain_at.get(&(e.index - 1)).copied(),
    };
    *inner.applied_count.entry(node).or_default() += 1;
    match inner.committed.get(&e.index) {
        Some(c) if *c != entry => {
            return Err(format!(
                "state-machine safety: n{} applied {:?} at index {}, another member applied {:?}",
                node, entry, e.index, c
            ));
        }
        Some(_) => {}
        None => {
            inner.committed.insert(e.index, entry);
        }
    }
    match chain.map(|c| chain_digest(c, entry.digest)) {
        Some(chain) => {
            inner.chains.insert(node, (e.index, chain));
            inner.chain_at.entry(e.index).or_insert(chain);
            inner.checker.record_apply(node, e.index, chain).map_err(|x| x.to_string())?;
        }
        // The state it started from was never applied one by one by anyone the watch saw: no
        // chain to continue (the member's own entries are still compared one by one above).
        None => {
            inner.chains.remove(&node);
        }
    }
    Ok(())
}

impl RaftObserver for RaftWatch {
    fn round(&self, view: &RoundView<'_>) {
        self.observe(view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(index: Index, term: Term, data: &'static [u8]) -> Entry {
        Entry { term, index, kind: EntryKind::Normal, data: Bytes::from_static(data) }
    }

    #[allow(clippy::too_many_arguments)]
    fn round<'a>(
        node: NodeId,
        term: Term,
        role: Role,
        commit: Index,
        entries: &'a [Entry],
        applied: &'a [Entry],
        first_round: bool,
    ) -> RoundView<'a> {
        RoundView {
            node,
            term,
            vote: (role == Role::Leader).then_some(node),
            role,
            leader: (role == Role::Leader).then_some(node),
            commit,
            applied: applied.last().map_or(0, |e| e.index),
            first_index: 1,
            entries,
            log_changed: true,
            appended_from: None,
            applied_entries: applied,
            snapshot: None,
            first_round,
        }
    }

    #[test]
    fn a_healthy_sequence_of_rounds_passes_and_is_summarized() {
        let w = RaftWatch::new(|| 5);
        let log = [e(1, 1, b"a"), e(2, 1, b"b")];
        w.round(&round(1, 1, Role::Leader, 2, &log, &log, true));
        w.round(&round(2, 1, Role::Follower, 2, &log, &log, true));
        assert_eq!(w.violation(), None);
        assert_eq!(w.leaders(), BTreeMap::from([(1, 1)]));
        assert_eq!(w.committed().len(), 2);
        let s = w.summary();
        assert!(s.contains("t1=n1"), "{s}");
        assert!(s.contains("  t1: 1..2 2 undecodable (0 events) "), "{s}");
        assert!(s.contains("n2: 2 / 0 / 1"), "{s}");
    }

    #[test]
    fn an_absurd_term_is_reported() {
        let w = RaftWatch::new(|| 7);
        w.round(&round(1, 2, Role::Follower, 0, &[], &[], true));
        assert_eq!(w.violation(), None);
        w.round(&round(1, u64::MAX, Role::Follower, 0, &[], &[], false));
        let v = w.violation().expect("a violation");
        assert!(v.what.contains("forged term"), "{}", v.what);
    }

    #[test]
    fn two_leaders_in_a_term_are_reported_with_an_excerpt() {
        let w = RaftWatch::new(|| 1_500);
        w.round(&round(1, 3, Role::Leader, 0, &[], &[], true));
        w.round(&round(2, 3, Role::Leader, 0, &[], &[], true));
        let v = w.violation().expect("a violation");
        assert_eq!(v.node, 2);
        assert!(v.what.contains("two leaders in term 3"), "{}", v.what);
        assert_eq!(v.excerpt.len(), 2);
        assert!(v.excerpt[1].contains("n2 Leader term 3"), "{:?}", v.excerpt);
    }

    #[test]
    fn members_applying_different_entries_at_one_index_fail() {
        let w = RaftWatch::new(|| 0);
        let a = [e(1, 1, b"a")];
        let b = [e(1, 1, b"b")];
        w.round(&round(1, 1, Role::Follower, 1, &a, &a, true));
        // Node 2's log has a different entry with the same (index, term) and applies it.
        w.round(&RoundView { log_changed: false, ..round(2, 1, Role::Follower, 1, &b, &b, true) });
        let v = w.violation().expect("a violation");
        assert!(v.what.contains("state-machine safety"), "{}", v.what);
    }

    #[test]
    fn a_member_skipping_or_repeating_an_entry_fails() {
        let w = RaftWatch::new(|| 0);
        let log = [e(1, 1, b"a"), e(2, 1, b"b"), e(3, 1, b"c")];
        w.round(&round(1, 1, Role::Follower, 3, &log, &log[..1], true));
        // Applies index 3 right after index 1.
        w.round(&RoundView { applied: 3, ..round(1, 1, Role::Follower, 3, &log, &log[2..], false) });
        let v = w.violation().expect("a violation");
        assert!(v.what.contains("applied index 3 right after index 1"), "{}", v.what);
        let w = RaftWatch::new(|| 0);
        w.round(&round(1, 1, Role::Follower, 3, &log, &log[..2], true));
        w.round(&RoundView { applied: 2, ..round(1, 1, Role::Follower, 3, &log, &log[1..2], false) });
        assert!(w.violation().is_some(), "index 2 applied twice");
    }

    #[test]
    fn a_member_whose_applied_state_diverged_fails_the_core_checker() {
        // n1 applies 1 and 2. n2 restarts from its disk at index 1 (its state claims a different
        // history) — the watch cannot know that state — then applies 2: its chain continues from
        // what was recorded at 1, so equal. But a member whose own chain took another entry at 1
        // (seen below) differs at 2 even though entry 2 is the same everywhere.
        let w = RaftWatch::new(|| 0);
        let log = [e(1, 1, b"a"), e(2, 1, b"b")];
        w.round(&round(1, 1, Role::Follower, 2, &log, &log, true));
        assert_eq!(w.violation(), None);
        let mut inner = w.lock();
        // A chain that took another entry at index 1.
        let other = chain_digest(0, entry_digest(&e(1, 1, b"x")));
        inner.chains.insert(2, (1, other));
        let r = check_round(&mut inner, &round(2, 1, Role::Follower, 2, &log, &log[1..], false));
        let err = r.expect_err("a diverged applied sequence");
        assert!(err.contains("applied a different sequence up to index 2"), "{err}");
        drop(inner);
        // The same sequence continued from the recorded chain passes.
        let w = RaftWatch::new(|| 0);
        w.round(&round(1, 1, Role::Follower, 2, &log, &log, true));
        w.round(&RoundView { applied: 2, ..round(2, 1, Role::Follower, 2, &log, &log[1..], true) });
        assert_eq!(w.violation(), None);
    }

    #[test]
    fn a_log_matching_break_fails() {
        let w = RaftWatch::new(|| 0);
        let a = [e(1, 1, b"a"), e(2, 2, b"b")];
        let b = [e(1, 1, b"x"), e(2, 2, b"b")];
        w.round(&round(1, 2, Role::Follower, 0, &a, &[], true));
        w.round(&round(2, 2, Role::Follower, 0, &b, &[], true));
        assert!(w.violation().expect("a violation").what.contains("log matching"));
    }

    #[test]
    fn an_appended_entry_breaking_log_matching_fails() {
        let w = RaftWatch::new(|| 0);
        let a = [e(1, 1, b"a"), e(2, 2, b"b")];
        w.round(&round(1, 2, Role::Follower, 0, &a, &[], true));
        let short = [e(1, 1, b"a")];
        w.round(&round(2, 2, Role::Follower, 0, &short, &[], true));
        assert_eq!(w.violation(), None);
        // Node 2 appends a different entry with the same (index, term): only the new tail is
        // scanned, and that is enough.
        let b = [e(1, 1, b"a"), e(2, 2, b"x")];
        w.round(&RoundView { appended_from: Some(2), ..round(2, 2, Role::Follower, 0, &b, &[], false) });
        assert!(w.violation().expect("a violation").what.contains("log matching"));
    }

    #[test]
    fn a_leader_missing_a_committed_entry_fails() {
        let w = RaftWatch::new(|| 0);
        let full = [e(1, 1, b"a"), e(2, 1, b"b")];
        let short = [e(1, 1, b"a")];
        w.round(&round(1, 1, Role::Follower, 2, &full, &[], true));
        w.round(&round(2, 2, Role::Leader, 1, &short, &[], true));
        assert!(w.violation().expect("a violation").what.contains("lacks committed entry 2"));
    }

    #[test]
    fn a_member_dropping_a_committed_entry_it_held_fails_but_a_wiped_one_may() {
        let w = RaftWatch::new(|| 0);
        let full = [e(1, 1, b"a"), e(2, 1, b"b"), e(3, 1, b"c")];
        let short = [e(1, 1, b"a")];
        // n1 leads and applies 1..=2 (committed); n2 holds them (commit not known yet).
        w.round(&round(1, 1, Role::Leader, 2, &full, &full[..2], true));
        w.round(&round(2, 1, Role::Follower, 0, &full, &[], true));
        assert_eq!(w.violation(), None);
        // n2 cuts its log behind a stale append: entry 3 was never committed, but 2 was.
        w.round(&round(2, 1, Role::Follower, 0, &full[..2], &[], false));
        assert_eq!(w.violation(), None, "an uncommitted entry may go");
        w.member_wiped(2);
        w.round(&round(2, 1, Role::Follower, 0, &[], &[], true));
        assert_eq!(w.violation(), None, "a wiped member starts empty");
        w.round(&round(2, 1, Role::Follower, 0, &full[..2], &[], false));
        w.round(&round(2, 1, Role::Follower, 0, &short, &[], false));
        let v = w.violation().expect("a violation");
        assert!(v.what.contains("committed entry lost: n2 held committed entry 2"), "{}", v.what);
    }

    #[test]
    fn committing_an_earlier_terms_entry_that_a_more_up_to_date_member_lacks_fails() {
        // Figure 8: n3 holds term 3's entry at index 2; n1 (leading in term 4) and n2 hold
        // term 2's. Committing index 2 with n1's noop (term 4) on a majority is safe…
        let (a, old2, new2, noop) = (e(1, 1, b"a"), e(2, 2, b"b"), e(2, 3, b"x"), e(3, 4, b""));
        let w = RaftWatch::new(|| 0);
        w.round(&round(3, 4, Role::Follower, 1, &[a.clone(), new2.clone()], &[], true));
        w.round(&round(2, 4, Role::Follower, 1, &[a.clone(), old2.clone(), noop.clone()], &[], true));
        w.round(&round(1, 4, Role::Leader, 3, &[a.clone(), old2.clone(), noop.clone()], &[], true));
        assert_eq!(w.violation(), None, "{:?}", w.violation());
        // …committing index 2 by counting n1 and n2 alone is not: n3 can still win.
        let w = RaftWatch::new(|| 0);
        w.round(&round(3, 4, Role::Follower, 1, &[a.clone(), new2], &[], true));
        w.round(&round(2, 4, Role::Follower, 1, &[a.clone(), old2.clone()], &[], true));
        w.round(&round(1, 4, Role::Leader, 2, &[a, old2, noop], &[], true));
        let v = w.violation().expect("a violation");
        assert!(v.what.contains("unsafe commit (Figure 8): n1 committed index 2 (term 2)"), "{}", v.what);
    }

    #[test]
    fn a_crashed_members_last_seen_log_does_not_judge_a_commit() {
        // Seed 875366204207: n2 was last seen holding 1..=1 when it was killed inside a round
        // that had persisted and acked entry 2; n1 then committed 2 with that ack. Judged by the
        // stale view, n2 and n3 (also at 1) look like a majority that can elect n2.
        let (a, b) = (e(1, 1, b"a"), e(2, 1, b"b"));
        let seen = |w: &RaftWatch| {
            w.round(&round(2, 1, Role::Follower, 1, std::slice::from_ref(&a), &[], true));
            w.round(&round(3, 1, Role::Follower, 1, std::slice::from_ref(&a), &[], true));
        };
        let w = RaftWatch::new(|| 0);
        seen(&w);
        w.member_crashed(2);
        w.round(&round(1, 1, Role::Leader, 2, &[a.clone(), b.clone()], &[], true));
        assert_eq!(w.violation(), None, "{:?}", w.violation());
        // Without the crash the same views are a real Figure 8 hole.
        let w = RaftWatch::new(|| 0);
        seen(&w);
        w.round(&round(1, 1, Role::Leader, 2, &[a, b], &[], true));
        assert!(w.violation().expect("a violation").what.contains("unsafe commit (Figure 8)"));
    }

    #[test]
    fn members_whose_log_is_all_in_their_snapshot_still_count_as_up_to_date() {
        // Seed 3000003944: five members; n2 and n3 held 1..=4 (term 1), snapshotted it and
        // restarted with empty logs; n5 (holding 1..=4) leads term 2 with commit 4; n4 holds
        // only 1..=3 and n1 only 1. n4 cannot win: n2, n3 and n5 are more up to date.
        let log = [e(1, 1, b"a"), e(2, 1, b"b"), e(3, 1, b"c"), e(4, 1, b"d")];
        let compacted =
            |node| RoundView { first_index: 5, ..round(node, 1, Role::Follower, 4, &[], &[], true) };
        let run = |with_history: bool| {
            let w = RaftWatch::new(|| 0);
            for node in [2, 3] {
                if with_history {
                    w.round(&round(node, 1, Role::Follower, 4, &log, &[], true));
                }
                w.round(&compacted(node));
            }
            w.round(&round(4, 1, Role::Follower, 3, &log[..3], &[], true));
            w.round(&round(1, 1, Role::Follower, 1, &log[..1], &[], true));
            w.round(&round(5, 2, Role::Leader, 4, &log, &[], true));
            w.violation()
        };
        assert_eq!(run(true), None, "their snapshots' last entries are known from their earlier logs");
        // With nothing known of n2 and n3 the check stays as strict as before: a majority of the
        // members it knows.
        assert!(run(false).is_some_and(|v| v.what.contains("unsafe commit")));
    }

    #[test]
    fn a_membership_change_before_the_leaders_first_commit_fails() {
        let cc =
            |index, term| Entry { term, index, kind: EntryKind::ConfChange, data: Bytes::from_static(b"") };
        let (a, noop) = (e(1, 1, b"a"), Entry { kind: EntryKind::Noop, ..e(2, 2, b"") });
        let log = [a.clone(), noop.clone(), cc(3, 2)];
        // Proposed after the noop (term 2) committed: fine.
        let w = RaftWatch::new(|| 0);
        w.round(&RoundView { appended_from: Some(3), ..round(1, 2, Role::Leader, 2, &log, &[], true) });
        assert_eq!(w.violation(), None, "{:?}", w.violation());
        // Proposed while the commit index is still term 1's entry: too early.
        let w = RaftWatch::new(|| 0);
        w.round(&RoundView { appended_from: Some(2), ..round(1, 2, Role::Leader, 1, &log, &[], true) });
        let v = w.violation().expect("a violation");
        assert!(v.what.contains("membership change too early: n1 leading in term 2"), "{}", v.what);
        // A follower appending the same entries is not proposing anything.
        let w = RaftWatch::new(|| 0);
        w.round(&RoundView { appended_from: Some(2), ..round(2, 2, Role::Follower, 1, &log, &[], true) });
        assert_eq!(w.violation(), None, "{:?}", w.violation());
    }

    #[test]
    fn a_leader_moving_its_commit_to_an_earlier_terms_entry_fails() {
        let noop = Entry { kind: EntryKind::Noop, ..e(3, 2, b"") };
        let log = [e(1, 1, b"a"), e(2, 1, b"b"), noop];
        // Elected in term 2 with commit 1 (as a follower), then commits its noop: fine.
        let w = RaftWatch::new(|| 0);
        w.round(&round(1, 2, Role::Leader, 1, &log, &[], true));
        w.round(&round(1, 2, Role::Leader, 3, &log, &[], false));
        assert_eq!(w.violation(), None, "{:?}", w.violation());
        // Commits term 1's entry 2 by counting replicas: the rule is broken.
        let w = RaftWatch::new(|| 0);
        w.round(&round(1, 2, Role::Leader, 1, &log, &[], true));
        w.round(&round(1, 2, Role::Leader, 2, &log, &[], false));
        let v = w.violation().expect("a violation");
        assert!(v.what.contains("commit of an earlier term's entry"), "{}", v.what);
        // A follower learning commit 2 from its leader is fine; so is a leader's first round.
        let w = RaftWatch::new(|| 0);
        w.round(&round(2, 2, Role::Follower, 1, &log, &[], true));
        w.round(&round(2, 2, Role::Follower, 2, &log, &[], false));
        w.round(&round(2, 3, Role::Leader, 2, &log, &[], false));
        assert_eq!(w.violation(), None, "{:?}", w.violation());
    }

    #[test]
    fn a_commit_index_moving_back_fails_but_not_across_a_restart() {
        let w = RaftWatch::new(|| 0);
        let log = [e(1, 1, b"a"), e(2, 1, b"b")];
        w.round(&round(1, 1, Role::Follower, 2, &log, &[], true));
        w.round(&round(1, 1, Role::Follower, 1, &log, &[], true));
        assert_eq!(w.violation(), None, "a restart may come back with a lower commit index");
        w.round(&round(1, 1, Role::Follower, 0, &log, &[], false));
        let v = w.violation().expect("a violation");
        assert!(v.what.contains("commit index back from 1 to 0"), "{}", v.what);
    }

    #[test]
    fn a_term_or_vote_lost_across_a_restart_fails() {
        let log = [e(1, 1, b"a")];
        // The vote survives: fine; a higher term may bring another vote.
        let w = RaftWatch::new(|| 0);
        w.round(&RoundView { vote: Some(2), ..round(1, 1, Role::Follower, 0, &log, &[], false) });
        w.round(&RoundView { vote: Some(2), ..round(1, 1, Role::Follower, 0, &log, &[], true) });
        w.round(&RoundView { vote: Some(3), ..round(1, 2, Role::Follower, 0, &log, &[], false) });
        assert_eq!(w.violation(), None);
        // The vote is gone after a restart in the same term.
        let w = RaftWatch::new(|| 0);
        w.round(&RoundView { vote: Some(2), ..round(1, 1, Role::Follower, 0, &log, &[], false) });
        w.round(&RoundView { vote: None, ..round(1, 1, Role::Follower, 0, &log, &[], true) });
        let v = w.violation().expect("a lost vote is reported");
        assert!(v.what.contains("its vote was not durable"), "{}", v.what);
        // The term went back.
        let w = RaftWatch::new(|| 0);
        w.round(&RoundView { vote: None, ..round(1, 3, Role::Follower, 0, &log, &[], false) });
        w.round(&RoundView { vote: None, ..round(1, 2, Role::Follower, 0, &log, &[], true) });
        let v = w.violation().expect("a term moving back is reported");
        assert!(v.what.contains("its term was not durable"), "{}", v.what);
        // A member wiped and added back starts over.
        let w = RaftWatch::new(|| 0);
        w.round(&RoundView { vote: Some(2), ..round(1, 3, Role::Follower, 0, &log, &[], false) });
        w.member_wiped(1);
        w.round(&RoundView { vote: None, ..round(1, 3, Role::Follower, 0, &[], &[], true) });
        assert_eq!(w.violation(), None);
    }
}
