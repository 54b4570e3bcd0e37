//! Typed errors of the core's entry points.

use super::config::ConfigError;
use super::types::{Index, NodeId};

/// A message the core refused to process. Stale messages are not errors: they are ignored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// The message is addressed to another node.
    #[error("message for node {to} delivered to node {id}")]
    WrongRecipient {
        /// Intended recipient.
        to: NodeId,
        /// This node.
        id: NodeId,
    },
    /// The sender is this node itself or the reserved id 0.
    #[error("invalid sender {0}")]
    InvalidSender(NodeId),
    /// The message breaks the protocol (e.g. non-contiguous entries, a second leader in a term).
    #[error("malformed message from {from}: {reason}")]
    Malformed {
        /// Sender.
        from: NodeId,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Why a client request (proposal, membership change, read, transfer) was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts this; retry at `leader` if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed to `to`; retry there shortly.
    #[error("leadership transfer to {to} in progress")]
    TransferInProgress {
        /// The transferee.
        to: NodeId,
    },
    /// The leader is no longer a member of the configuration and accepts no new entries.
    #[error("proposal dropped: this leader is leaving the cluster")]
    ProposalDropped,
    /// The leader has not committed an entry of its own term yet (required before a membership
    /// change or a read: the leader-completeness fix).
    #[error("leader has not committed an entry of its term yet")]
    FirstCommitPending,
    /// A membership change at `index` is not committed yet; one change at a time.
    #[error("membership change at index {index} is not committed yet")]
    ConfChangeInProgress {
        /// Index of the pending change.
        index: Index,
    },
    /// The learner must catch up before it becomes a voter.
    #[error("learner {node} has not caught up (match {matched}, commit {commit})")]
    LearnerNotCaughtUp {
        /// The learner.
        node: NodeId,
        /// Its match index.
        matched: Index,
        /// The leader's commit index.
        commit: Index,
    },
    /// The membership change makes no sense in the current configuration.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(&'static str),
    /// The log has reached the index ceiling ([`crate::raft::MAX_INDEX`]): an entry beyond it
    /// would be refused on restart, so none is appended.
    #[error("the log is at its index ceiling ({0}); no entry can be appended")]
    LogFull(Index),
}

/// Why a snapshot or compaction request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The index is not applied yet.
    #[error("index {index} is not applied yet (applied {applied})")]
    NotApplied {
        /// Requested index.
        index: Index,
        /// Applied index.
        applied: Index,
    },
    /// The index is at or before the current compaction point or snapshot.
    #[error("index {index} is not after the current snapshot ({current})")]
    OutOfDate {
        /// Requested index.
        index: Index,
        /// Current snapshot or compaction index.
        current: Index,
    },
    /// Compaction must not pass the last snapshot (lagging followers would get nothing).
    #[error("cannot compact to {index}: no snapshot covers it (last snapshot {snapshot})")]
    NoSnapshot {
        /// Requested index.
        index: Index,
        /// Index of the last snapshot.
        snapshot: Index,
    },
}

/// Why a core could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The configuration is invalid.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// The restored state is inconsistent.
    #[error("inconsistent restored state: {0}")]
    Restore(&'static str),
}
