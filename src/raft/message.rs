//! The RPCs nodes exchange. Every message names its sender, recipient and the sender's term.

use bytes::Bytes;

use super::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// One message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// Sender's term (for a pre-vote request: the term the sender would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: Body,
}

/// Why an append was refused, and where the leader should look next (fast backtracking).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// Term of the follower's entry at the rejected `prev_log_index`, if it has one there.
    pub conflict_term: Option<Term>,
    /// First index of `conflict_term` in the follower's log, or its last index + 1 when its log
    /// is too short.
    pub conflict_index: Index,
}

/// The body of a [`Message`]: one variant per RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// RequestVote (§5.2), or a pre-vote probe that changes no term when `pre_vote` is set.
    Vote {
        /// Pre-vote round rather than a real election.
        pre_vote: bool,
        /// Candidate's last log index.
        last_index: Index,
        /// Candidate's last log term.
        last_term: Term,
        /// Sent because of a leadership transfer: voters skip the leader-lease check.
        transfer: bool,
    },
    /// Answer to [`Body::Vote`].
    VoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// Vote granted.
        granted: bool,
    },
    /// AppendEntries (§5.3): entries after `prev_index`, plus the leader's commit index.
    Append {
        /// Index of the entry before `entries`.
        prev_index: Index,
        /// Term of that entry.
        prev_term: Term,
        /// New entries (may be empty: a commit update or probe).
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: Index,
    },
    /// Answer to [`Body::Append`].
    AppendResponse {
        /// On success: the follower's log matches the leader's up to here. On rejection: the
        /// `prev_index` of the refused append (lets the leader drop stale rejections).
        index: Index,
        /// `Some` when the append was refused.
        reject: Option<RejectHint>,
    },
    /// Leader heartbeat: asserts leadership, carries the commit index and a read-index round.
    Heartbeat {
        /// `min(commit, follower's match)`: never beyond what the follower is known to hold.
        commit: Index,
        /// Read-index round this heartbeat confirms (the read-index context).
        round: u64,
    },
    /// Answer to [`Body::Heartbeat`], echoing its round.
    HeartbeatResponse {
        /// The round being acknowledged.
        round: u64,
    },
    /// One chunk of a snapshot (InstallSnapshot, §7).
    Snapshot {
        /// Snapshot position and configuration.
        meta: SnapshotMeta,
        /// Byte offset of `data` within the snapshot.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// This is the last chunk.
        done: bool,
    },
    /// Answer to [`Body::Snapshot`].
    SnapshotResponse {
        /// Index of the snapshot being transferred.
        snapshot_index: Index,
        /// Bytes received so far (the offset of the next chunk wanted).
        next_offset: u64,
        /// The snapshot was received completely; `last_index` is valid.
        done: bool,
        /// After `done`: the follower's log matches the leader's up to here.
        last_index: Index,
    },
    /// Leadership transfer: the recipient should start an election at once (§3.10 of the
    /// dissertation).
    TimeoutNow,
    /// A follower forwards a linearizable read to the leader.
    ReadIndex {
        /// The caller's context, echoed back.
        ctx: u64,
    },
    /// The leader's answer to a forwarded read.
    ReadIndexResponse {
        /// The caller's context.
        ctx: u64,
        /// Serve the read once applied reaches this index.
        index: Index,
    },
}

impl Body {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Vote { pre_vote: true, .. } => "PreVote",
            Body::Vote { .. } => "Vote",
            Body::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            Body::VoteResponse { .. } => "VoteResponse",
            Body::Append { .. } => "Append",
            Body::AppendResponse { .. } => "AppendResponse",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::HeartbeatResponse { .. } => "HeartbeatResponse",
            Body::Snapshot { .. } => "Snapshot",
            Body::SnapshotResponse { .. } => "SnapshotResponse",
            Body::TimeoutNow => "TimeoutNow",
            Body::ReadIndex { .. } => "ReadIndex",
            Body::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }

    /// True for the messages only a leader sends (they name the sender as the term's leader).
    pub fn is_from_leader(&self) -> bool {
        matches!(self, Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. })
    }
}
