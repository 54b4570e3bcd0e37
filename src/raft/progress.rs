//! What a leader knows about one follower's log, and the flow control that decides what to send
//! next: probe (one append at a time until a match is found), replicate (pipelined appends, at most
//! `max_inflight_appends` unacknowledged) and snapshot (one chunk at a time).

use std::collections::VecDeque;

use super::types::Index;

/// Flow-control state of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Searching for the last matching index; one append in flight at a time.
    Probe,
    /// Matching; appends are pipelined optimistically.
    Replicate,
    /// Receiving a snapshot; appends wait until it is installed.
    Snapshot,
}

/// A leader's view of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub matched: Index,
    /// Next index to send.
    pub next: Index,
    /// Flow-control state.
    pub state: ProgressState,
    /// Probe: an append is outstanding, wait for its answer (or a heartbeat answer).
    pub probe_sent: bool,
    /// Replicate: last index of each unacknowledged append, oldest first.
    pub inflight: VecDeque<Index>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Snapshot: index of the snapshot being sent.
    pub pending_snapshot: Index,
    /// Snapshot: offset of the next chunk to send.
    pub snapshot_offset: u64,
    /// Snapshot: a chunk is outstanding.
    pub snapshot_chunk_sent: bool,
    /// Highest read-index round this follower acknowledged.
    pub read_round: u64,
    /// Highest commit index sent to this follower.
    pub sent_commit: Index,
    /// Replicate: the oldest unacknowledged append when the previous heartbeat answer arrived
    /// (still unacknowledged at the next one means it was lost).
    pub stalled_append: Option<Index>,
    /// Lowest `prev_index` of any append sent under this progress. Every answer to one of them
    /// says `index >= floor`, so an answer below it was meant for an earlier progress of the same
    /// node id: one from before the node was removed, wiped and added back, whose in-flight
    /// answers describe a log that no longer exists.
    pub floor: Index,
}

impl Progress {
    /// A follower we know nothing about yet: probe from `next`.
    pub fn new(next: Index) -> Self {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            pending_snapshot: 0,
            snapshot_offset: 0,
            snapshot_chunk_sent: false,
            read_round: 0,
            sent_commit: 0,
            stalled_append: None,
            floor: next.saturating_sub(1),
        }
    }

    /// True if an append answer at `index` (a success's match or a refusal's `prev_index`) may
    /// answer an append sent under this progress.
    pub fn may_answer(&self, index: Index) -> bool {
        index >= self.floor
    }

    /// True if nothing more may be sent now.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= max_inflight,
            ProgressState::Snapshot => true,
        }
    }

    /// Switches to probing from `matched + 1` (or past a just-installed snapshot).
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            self.next = (self.matched + 1).max(self.pending_snapshot + 1);
        } else {
            self.next = self.matched + 1;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Switches to pipelined replication after a match.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Switches to sending snapshot `index` from its first chunk.
    pub fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot;
        self.pending_snapshot = index;
        self.snapshot_offset = 0;
        self.snapshot_chunk_sent = false;
        self.inflight.clear();
    }

    /// Records a successful append up to `index`; returns true if `matched` grew.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        self.probe_sent = false;
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        self.next = self.next.max(index + 1);
        if index > self.matched {
            self.matched = index;
            true
        } else {
            false
        }
    }

    /// Records a refused append at `rejected` (its `prev_index`) with the next index the hint
    /// suggests. Returns false for a stale refusal (one that says nothing new).
    pub fn maybe_decrease(&mut self, rejected: Index, hint_next: Index) -> bool {
        match self.state {
            ProgressState::Replicate if rejected <= self.matched => return false,
            ProgressState::Probe if rejected.checked_add(1) != Some(self.next) => return false,
            ProgressState::Snapshot => return false,
            _ => {}
        }
        // Never below the known match, never at or above the refused position.
        self.next = hint_next.min(rejected).max(self.matched + 1);
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        true
    }

    /// Records an append of entries up to `last` just sent.
    pub fn sent(&mut self, last: Option<Index>) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next = last + 1;
                    self.inflight.push_back(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_append_at_a_time() {
        let mut p = Progress::new(5);
        assert!(!p.is_paused(4));
        p.sent(Some(7));
        assert!(p.is_paused(4), "probe waits for an answer");
        assert_eq!(p.next, 5, "probe does not advance next optimistically");
        p.maybe_update(7);
        p.become_replicate();
        assert_eq!((p.matched, p.next), (7, 8));
    }

    #[test]
    fn replicate_pipelines_up_to_the_inflight_bound() {
        let mut p = Progress::new(1);
        p.become_replicate();
        p.sent(Some(3));
        p.sent(Some(6));
        assert!(!p.is_paused(3));
        p.sent(Some(9));
        assert!(p.is_paused(3), "three appends in flight is the bound");
        assert_eq!(p.next, 10);
        p.maybe_update(6);
        assert_eq!(p.inflight, VecDeque::from([9]));
        assert!(!p.is_paused(3));
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(1);
        p.become_replicate();
        p.maybe_update(10);
        assert!(!p.maybe_decrease(9, 5), "rejection below match is stale in replicate");
        assert!(p.maybe_decrease(12, 11));
        assert_eq!((p.state, p.next), (ProgressState::Probe, 11));
        assert!(!p.maybe_decrease(12, 11), "probe only accepts a rejection of next - 1");
        assert!(p.maybe_decrease(10, 3), "hint below match is clamped");
        assert_eq!(p.next, 11);
    }

    #[test]
    fn snapshot_progress_resumes_after_the_snapshot() {
        let mut p = Progress::new(1);
        p.become_snapshot(50);
        assert!(p.is_paused(10));
        p.become_probe();
        assert_eq!(p.next, 51);
    }
}
