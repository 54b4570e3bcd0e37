//! The RPCs nodes exchange. Every message names its sender, recipient and the sender's term.

use bytes::Bytes;

use crate::event::MAX_TOPIC_LEN;

use super::types::{Entry, Index, MAX_INDEX, MAX_SNAPSHOT_BYTES, MAX_TERM, NodeId, SnapshotMeta, Term};

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
    /// Catch-up (not Raft: the core ignores it, the driver serves it): the stored records of
    /// `topic` from `offset`, before `up_to`, at most `max_bytes` of them unless one is bigger.
    RecordsRequest {
        /// The asker's id for this request, echoed back.
        req_id: u64,
        /// Topic name (at most [`MAX_TOPIC_LEN`] bytes).
        topic: String,
        /// First offset wanted.
        offset: u64,
        /// Offsets from here on are not wanted (`offset < up_to`).
        up_to: u64,
        /// Byte budget of the answer, at most [`MAX_RECORDS_BYTES`].
        max_bytes: u32,
    },
    /// Answer to [`Body::RecordsRequest`] (not Raft: the core ignores it).
    Records {
        /// The request's `req_id`.
        req_id: u64,
        /// The records, or why there are none.
        result: RecordsResult,
    },
}

/// Largest `max_bytes` a [`Body::RecordsRequest`] may ask for.
pub const MAX_RECORDS_BYTES: u32 = 1 << 20;

/// What a member answers to a [`Body::RecordsRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordsResult {
    /// Whole framed records ([`crate::record`]) of offsets `from..next` (`from < next`).
    Chunk {
        /// Topic name.
        topic: String,
        /// Offset of the first record.
        from: u64,
        /// Offset after the last record.
        next: u64,
        /// The records, as stored.
        bytes: Bytes,
    },
    /// The offset asked for is below the first the member retains: it now starts at `first`.
    FirstOffset {
        /// Topic name.
        topic: String,
        /// The member's first retained offset.
        first: u64,
    },
    /// The member has no records there (no such topic, or its log ends at or before the offset).
    NotAvailable {
        /// Topic name.
        topic: String,
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
            Body::RecordsRequest { .. } => "RecordsRequest",
            Body::Records { .. } => "Records",
        }
    }

    /// True for the catch-up messages, which carry records, not consensus: the core ignores them.
    pub fn is_records(&self) -> bool {
        matches!(self, Body::RecordsRequest { .. } | Body::Records { .. })
    }

    /// True for the messages only a leader sends (they name the sender as the term's leader).
    pub fn is_from_leader(&self) -> bool {
        matches!(self, Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. })
    }
}

impl Message {
    /// Checks what no honest node can send, whatever its state: ids 0, a term above [`MAX_TERM`],
    /// an index above [`MAX_INDEX`], a log term newer than the sender's term, entries that do not
    /// follow `prev_index` one by one with non-decreasing terms, a snapshot chunk ending past
    /// [`MAX_SNAPSHOT_BYTES`], a records request past its byte cap or a chunk with fewer bytes
    /// than its records need. The transport refuses such a
    /// message before the core sees it, and [`crate::raft::Raft::step`] checks again.
    pub fn check_bounds(&self) -> Result<(), &'static str> {
        if self.from == 0 || self.to == 0 {
            return Err("node id 0");
        }
        if self.term > MAX_TERM {
            return Err("term beyond the ceiling");
        }
        let index_ok = |i: Index| i <= MAX_INDEX;
        let log_term_ok = |t: Term| t <= self.term;
        let ok = match &self.body {
            Body::Vote { last_index, last_term, .. } => index_ok(*last_index) && log_term_ok(*last_term),
            Body::Append { prev_index, prev_term, entries, commit } => {
                if !(index_ok(*prev_index) && log_term_ok(*prev_term) && index_ok(*commit)) {
                    return Err("append position beyond the ceiling or the sender's term");
                }
                return check_entries(*prev_index, *prev_term, self.term, entries);
            }
            Body::AppendResponse { index, reject } => {
                index_ok(*index)
                    && reject.is_none_or(|h| {
                        h.conflict_index <= MAX_INDEX + 1 && h.conflict_term.is_none_or(log_term_ok)
                    })
            }
            Body::Heartbeat { commit, .. } => index_ok(*commit),
            Body::Snapshot { meta, offset, data, .. } => {
                let ids_ok = meta.conf_state.members().all(|id| id != 0);
                let end_ok =
                    offset.checked_add(data.len() as u64).is_some_and(|end| end <= MAX_SNAPSHOT_BYTES);
                index_ok(meta.index) && log_term_ok(meta.term) && ids_ok && end_ok
            }
            Body::SnapshotResponse { snapshot_index, last_index, .. } => {
                index_ok(*snapshot_index) && index_ok(*last_index)
            }
            Body::ReadIndexResponse { index, .. } => index_ok(*index),
            Body::RecordsRequest { topic, offset, up_to, max_bytes, .. } => {
                topic_ok(topic) && offset < up_to && *max_bytes > 0 && *max_bytes <= MAX_RECORDS_BYTES
            }
            Body::Records { result, .. } => match result {
                RecordsResult::Chunk { topic, from, next, bytes } => {
                    let n = next.checked_sub(*from).filter(|&n| n > 0);
                    let fits = n.is_some_and(|n| n.saturating_mul(MIN_RECORD_BYTES) <= bytes.len() as u64);
                    topic_ok(topic) && fits
                }
                RecordsResult::FirstOffset { topic, .. } | RecordsResult::NotAvailable { topic } => {
                    topic_ok(topic)
                }
            },
            Body::VoteResponse { .. }
            | Body::HeartbeatResponse { .. }
            | Body::TimeoutNow
            | Body::ReadIndex { .. } => true,
        };
        if ok { Ok(()) } else { Err("index beyond the ceiling or log term newer than the sender's term") }
    }
}

/// Bytes of the smallest stored record (header, offset, timestamp): a chunk of `n` records holds
/// at least `n` times this.
const MIN_RECORD_BYTES: u64 = 24;

fn topic_ok(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_LEN
}

/// Entries must follow `prev_index` one by one, with terms from `prev_term` up to `term`.
fn check_entries(
    prev_index: Index,
    prev_term: Term,
    term: Term,
    entries: &[Entry],
) -> Result<(), &'static str> {
    let (mut expect_index, mut min_term) = (prev_index + 1, prev_term);
    for e in entries {
        if e.index != expect_index || e.index > MAX_INDEX {
            return Err("entries do not follow prev_index one by one");
        }
        if e.term < min_term || e.term > term {
            return Err("entry terms decrease or exceed the sender's term");
        }
        expect_index += 1;
        min_term = e.term;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::raft::types::{ConfState, EntryKind};

    fn msg(term: Term, body: Body) -> Message {
        Message { from: 2, to: 1, term, body }
    }

    fn entry(index: Index, term: Term) -> Entry {
        Entry { index, term, kind: EntryKind::Normal, data: Bytes::new() }
    }

    fn append(prev_index: Index, prev_term: Term, entries: Vec<Entry>, commit: Index) -> Body {
        Body::Append { prev_index, prev_term, entries, commit }
    }

    #[test]
    fn honest_messages_pass() {
        let ok = [
            msg(MAX_TERM, Body::Heartbeat { commit: MAX_INDEX, round: u64::MAX }),
            msg(3, Body::Vote { pre_vote: true, last_index: 10, last_term: 3, transfer: false }),
            msg(3, append(4, 2, vec![entry(5, 2), entry(6, 3)], 9)),
            msg(3, append(0, 0, vec![], 0)),
            msg(
                3,
                Body::AppendResponse {
                    index: 4,
                    reject: Some(RejectHint { conflict_term: Some(2), conflict_index: 3 }),
                },
            ),
            msg(3, Body::TimeoutNow),
        ];
        for m in ok {
            assert_eq!(m.check_bounds(), Ok(()), "{m:?}");
        }
    }

    #[test]
    fn impossible_values_are_refused() {
        let snap = |index, term, voters: Vec<u64>| Body::Snapshot {
            meta: SnapshotMeta { index, term, conf_state: ConfState::with_voters(voters) },
            offset: 0,
            data: Bytes::new(),
            done: true,
        };
        let bad = [
            msg(u64::MAX, Body::Heartbeat { commit: 1, round: 1 }),
            msg(MAX_TERM + 1, Body::TimeoutNow),
            msg(3, Body::Heartbeat { commit: u64::MAX, round: 1 }),
            msg(3, Body::Vote { pre_vote: false, last_index: u64::MAX, last_term: 1, transfer: false }),
            msg(3, Body::Vote { pre_vote: false, last_index: 1, last_term: 4, transfer: false }),
            msg(3, append(u64::MAX, 1, vec![], 0)),
            msg(3, append(1, 1, vec![], u64::MAX)),
            msg(3, append(1, 4, vec![], 1)),
            msg(3, append(1, 1, vec![entry(3, 1)], 1)),
            msg(3, append(1, 2, vec![entry(2, 1)], 1)),
            msg(3, append(1, 1, vec![entry(2, 4)], 1)),
            msg(3, append(1, 1, vec![entry(2, 2), entry(3, 1)], 1)),
            msg(3, Body::AppendResponse { index: u64::MAX, reject: None }),
            msg(3, snap(u64::MAX, 1, vec![1, 2])),
            msg(3, snap(5, 9, vec![1, 2])),
            msg(3, snap(5, 2, vec![0, 2])),
            msg(3, Body::ReadIndexResponse { ctx: 1, index: u64::MAX }),
            Message { from: 0, to: 1, term: 1, body: Body::TimeoutNow },
        ];
        for m in bad {
            assert!(m.check_bounds().is_err(), "{m:?}");
        }
    }

    #[test]
    fn records_messages_out_of_bounds_are_refused() {
        let req = |topic: &str, offset, up_to, max_bytes| {
            msg(3, Body::RecordsRequest { req_id: 1, topic: topic.into(), offset, up_to, max_bytes })
        };
        let chunk = |from, next, len: usize| {
            let bytes = Bytes::from(vec![0u8; len]);
            let result = RecordsResult::Chunk { topic: "t".into(), from, next, bytes };
            msg(3, Body::Records { req_id: 1, result })
        };
        assert_eq!(req("t", 0, 1, MAX_RECORDS_BYTES).check_bounds(), Ok(()));
        assert_eq!(chunk(5, 7, 48).check_bounds(), Ok(()));
        let bad = [
            req("t", 0, 1, MAX_RECORDS_BYTES + 1),
            req("t", 0, 1, 0),
            req("t", 4, 4, 10),
            req("", 0, 1, 10),
            req(&"x".repeat(MAX_TOPIC_LEN + 1), 0, 1, 10),
            chunk(5, 5, 48),
            chunk(7, 5, 48),
            chunk(5, 7, 47),
            chunk(0, u64::MAX, 1 << 20),
        ];
        for m in bad {
            assert!(m.check_bounds().is_err(), "{m:?}");
        }
    }

    #[test]
    fn a_snapshot_chunk_may_end_at_the_size_cap_but_not_past_it() {
        let chunk = |offset: u64, len: usize| {
            msg(
                3,
                Body::Snapshot {
                    meta: SnapshotMeta { index: 5, term: 2, conf_state: ConfState::with_voters([1, 2]) },
                    offset,
                    data: Bytes::from(vec![0u8; len]),
                    done: false,
                },
            )
        };
        assert_eq!(chunk(MAX_SNAPSHOT_BYTES - 2, 2).check_bounds(), Ok(()));
        assert!(chunk(MAX_SNAPSHOT_BYTES - 1, 2).check_bounds().is_err());
        assert!(chunk(MAX_SNAPSHOT_BYTES, 1).check_bounds().is_err());
    }
}
