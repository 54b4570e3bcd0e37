//! Linearizable reads on the leader (dissertation §6.4): a read is safe at the commit index of the
//! moment it arrived once a quorum has acknowledged a heartbeat round sent after it (ReadIndex), or,
//! with lease reads, while a quorum acknowledged a round within the lease.

use std::collections::VecDeque;

use super::types::{Index, NodeId};

/// A read waiting for its heartbeat round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Caller's context.
    pub ctx: u64,
    /// Node that asked (the leader itself or a forwarding follower).
    pub from: NodeId,
    /// Commit index when the read arrived.
    pub index: Index,
    /// Heartbeat round that must be acknowledged by a quorum.
    pub round: u64,
}

/// Pending reads and heartbeat rounds of one leader term.
#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    round: u64,
    round_needed: bool,
    acked_round: u64,
    pending: VecDeque<ReadRequest>,
    /// Reads that arrived before the leader committed an entry of its term.
    waiting_for_commit: Vec<(u64, NodeId)>,
    /// `(round, tick it was sent)` for rounds not yet acknowledged by a quorum.
    sent_ticks: VecDeque<(u64, u64)>,
    lease_start: Option<u64>,
}

/// Rounds remembered for lease bookkeeping; older unacknowledged rounds are forgotten.
const MAX_TRACKED_ROUNDS: usize = 1024;

impl ReadOnly {
    /// The latest round broadcast.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// True if a read waits for a round that has not been broadcast yet.
    pub fn round_needed(&self) -> bool {
        self.round_needed
    }

    /// Queues a read at commit index `index`; it waits for the next round.
    pub fn add(&mut self, ctx: u64, from: NodeId, index: Index) {
        self.round_needed = true;
        self.pending.push_back(ReadRequest { ctx, from, index, round: self.round + 1 });
    }

    /// Parks a read until the leader has committed an entry of its term.
    pub fn wait_for_commit(&mut self, ctx: u64, from: NodeId) {
        self.waiting_for_commit.push((ctx, from));
    }

    /// Takes the reads parked by [`ReadOnly::wait_for_commit`].
    pub fn take_waiting(&mut self) -> Vec<(u64, NodeId)> {
        std::mem::take(&mut self.waiting_for_commit)
    }

    /// Starts a new heartbeat round at `tick`; returns its number.
    pub fn start_round(&mut self, tick: u64) -> u64 {
        self.round += 1;
        self.round_needed = false;
        if self.sent_ticks.len() == MAX_TRACKED_ROUNDS {
            self.sent_ticks.pop_front();
        }
        self.sent_ticks.push_back((self.round, tick));
        self.round
    }

    /// A quorum has acknowledged rounds up to `round`: renews the lease and returns the reads
    /// that are now safe, in arrival order.
    pub fn quorum_acked(&mut self, round: u64) -> Vec<ReadRequest> {
        if round <= self.acked_round {
            return Vec::new();
        }
        self.acked_round = round;
        while let Some(&(r, tick)) = self.sent_ticks.front() {
            if r > round {
                break;
            }
            if r == round {
                self.lease_start = Some(tick);
            }
            self.sent_ticks.pop_front();
        }
        let mut ready = Vec::new();
        while self.pending.front().is_some_and(|r| r.round <= round) {
            ready.extend(self.pending.pop_front());
        }
        ready
    }

    /// True if a quorum acknowledged a round sent less than `lease_ticks` ago.
    pub fn lease_valid(&self, now: u64, lease_ticks: u64) -> bool {
        self.lease_start.is_some_and(|start| now < start + lease_ticks)
    }

    /// Reads still waiting (for status and tests).
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.waiting_for_commit.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wait_for_a_round_sent_after_them() {
        let mut ro = ReadOnly::default();
        let r1 = ro.start_round(0);
        ro.add(7, 1, 10);
        assert!(ro.round_needed());
        // Acknowledging the round that was sent before the read does not release it.
        assert!(ro.quorum_acked(r1).is_empty());
        let r2 = ro.start_round(1);
        let ready = ro.quorum_acked(r2);
        assert_eq!(ready, vec![ReadRequest { ctx: 7, from: 1, index: 10, round: 2 }]);
        assert_eq!(ro.pending_len(), 0);
    }

    #[test]
    fn lease_starts_when_the_acked_round_was_sent() {
        let mut ro = ReadOnly::default();
        assert!(!ro.lease_valid(0, 5));
        let r = ro.start_round(10);
        ro.start_round(12);
        ro.quorum_acked(r);
        assert!(ro.lease_valid(14, 5));
        assert!(!ro.lease_valid(15, 5));
    }
}
