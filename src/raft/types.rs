//! The plain data the core speaks in: log entries, persisted state, configurations, snapshots,
//! and what a driver is told about roles and reads.

use std::collections::BTreeSet;

use bytes::Bytes;

/// Identifies a node in the cluster. `0` is never a valid id.
pub type NodeId = u64;
/// A Raft term (election epoch); starts at 0 and never decreases on a node.
pub type Term = u64;
/// A log position; the first real entry has index 1, index 0 is the empty log.
pub type Index = u64;

/// Highest term a node accepts from a peer or a file. No real cluster gets near it (a new term
/// every millisecond would take 8,900 years), and `term + 1` stays far from overflow, so a
/// larger value is a forgery or corruption and is refused before the core sees it.
pub const MAX_TERM: Term = 1 << 48;

/// Highest log index a node accepts from a peer or a file (same reasoning as [`MAX_TERM`]).
pub const MAX_INDEX: Index = 1 << 48;

/// Largest snapshot a node receives from a peer (2 GiB): a chunk ending past it is refused
/// (logged and counted as an impossible message, its connection closed), so the receive buffer
/// of a chunked snapshot never holds more. A state whose snapshot is larger cannot be sent.
pub const MAX_SNAPSHOT_BYTES: u64 = 2 << 30;

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data, handed to the state machine once committed.
    Normal,
    /// Appended by each new leader at the start of its term (§5.4.2); carries no data.
    Noop,
    /// A membership change; `data` holds an encoded [`ConfEntry`].
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: Index,
    /// What the entry is.
    pub kind: EntryKind,
    /// Payload: application bytes, or an encoded [`ConfEntry`].
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry counts for in append-size limits (payload plus a fixed header estimate).
    pub fn size_hint(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state a node must persist before it sends any message that depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Current term.
    pub term: Term,
    /// Candidate voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest index known committed (persisting it is an optimisation that saves re-learning it).
    pub commit: Index,
}

/// A cluster configuration: who votes and who only receives the log.
///
/// Membership changes one server at a time (see [`ConfChange`]), so there is no joint
/// configuration: any two consecutive configurations differ in at most one voter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    /// Voting members.
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members that receive the log (catching up before promotion).
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    /// A configuration with the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ConfState { voters: voters.into_iter().collect(), learners: BTreeSet::new() }
    }

    /// True if `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Voters and learners, ascending.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.union(&self.learners).copied()
    }

    /// The configuration after `change` (a total function: changes that do nothing leave it as is).
    pub fn apply(&self, change: &ConfChange) -> ConfState {
        let mut next = self.clone();
        match change.kind {
            ConfChangeKind::AddLearner => {
                next.voters.remove(&change.node);
                next.learners.insert(change.node);
            }
            ConfChangeKind::AddVoter => {
                next.learners.remove(&change.node);
                next.voters.insert(change.node);
            }
            ConfChangeKind::Remove => {
                next.learners.remove(&change.node);
                next.voters.remove(&change.node);
            }
        }
        next
    }
}

/// The kind of a single-server membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// Add a non-voting learner (or demote a voter to learner).
    AddLearner,
    /// Promote a caught-up learner to voter.
    AddVoter,
    /// Remove a voter or learner (may be the leader itself).
    Remove,
}

/// A single-server membership change, proposed with `Raft::propose_conf_change` and carried
/// (with its resulting configuration) in a [`EntryKind::ConfChange`] entry as a [`ConfEntry`].
///
/// It takes effect on each node as soon as the entry is appended to its log (Raft dissertation
/// §4.1) and is undone if the entry is truncated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChange {
    /// What to do.
    pub kind: ConfChangeKind,
    /// The node it is done to.
    pub node: NodeId,
    /// Opaque application context (e.g. the node's address).
    pub context: Bytes,
}

/// What a [`EntryKind::ConfChange`] entry carries: the change and the whole configuration that
/// results from it, so a node can adopt it without knowing the previous configuration (a node
/// that joins with an empty configuration learns the cluster from the first such entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfEntry {
    /// The change that was proposed.
    pub change: ConfChange,
    /// The configuration after it.
    pub conf: ConfState,
}

/// Where a snapshot ends and what configuration holds there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last log index the snapshot covers.
    pub index: Index,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Configuration as of `index`.
    pub conf_state: ConfState,
}

/// An application snapshot with its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Position and configuration.
    pub meta: SnapshotMeta,
    /// Opaque application state.
    pub data: Bytes,
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs a pre-vote round; has not changed its term yet.
    PreCandidate,
    /// Campaigns for votes in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Volatile state a driver may want to observe (who leads, our role). Not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// Known leader of the current term.
    pub leader: Option<NodeId>,
    /// This node's role.
    pub role: Role,
}

/// A read that is linearizable once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The context the caller passed to `read_index`.
    pub ctx: u64,
    /// Serve the read once `applied >= index`.
    pub index: Index,
}

/// What a driver restores a core from after a (re)start: exactly what it persisted.
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    /// Last persisted hard state (default for a fresh node).
    pub hard_state: HardState,
    /// The last durable snapshot, if any, with its data: a restarted leader sends it to followers
    /// that need entries the log no longer holds.
    pub snapshot: Option<Snapshot>,
    /// Persisted entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// Initial configuration for a fresh cluster; ignored when `snapshot` is present (its
    /// configuration wins). Configuration entries in `entries` are replayed on top.
    pub conf_state: ConfState,
    /// Highest index already applied to a state machine that survived the restart (0 if the state
    /// machine is rebuilt from the snapshot; it is raised to the snapshot index automatically).
    pub applied: Index,
}

impl RestoredState {
    /// The state for bootstrapping a fresh cluster whose initial voters are `voters`.
    pub fn bootstrap(voters: impl IntoIterator<Item = NodeId>) -> Self {
        RestoredState { conf_state: ConfState::with_voters(voters), ..Default::default() }
    }

    /// The state for a fresh node that joins an existing cluster (it learns the configuration
    /// from the leader's log or snapshot).
    pub fn joining() -> Self {
        RestoredState::default()
    }
}
