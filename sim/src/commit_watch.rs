//! A member's commit index never moves back across its life (issue 15): within one incarnation
//! every round's commit index is at least the highest it reported before, and a snapshot install
//! never lowers it (a snapshot behind the commit index must be answered, not installed). Only a
//! restart (the commit index comes back from the hard state, whose commit-only changes are
//! deferred) or a wipe (a new member under the old id) starts it over.
//!
//! [`crate::raft_watch`] feeds it every round of every member, before the core checker's
//! checks, so its message names the install that lowered the commit index. The planted bug
//! `snapshot-moves-commit-back` still trips the log's own assertion first (`RaftLog::restore`
//! panics inside the step, before the round ends and any observer sees it).

use std::collections::BTreeMap;

use eventstreamcore::raft::{Index, NodeId};

/// One member's round as the commit checker needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRound {
    pub node: NodeId,
    pub commit: Index,
    /// The first round of a new incarnation (a restart).
    pub first_round: bool,
    /// The index of a snapshot installed this round.
    pub installed: Option<Index>,
}

/// Per member, the highest commit index of its current incarnation.
#[derive(Debug, Default)]
pub struct CommitHistory {
    highest: BTreeMap<NodeId, Index>,
}

impl CommitHistory {
    /// Checks one round; the violation, if its commit index moved back.
    pub fn observe(&mut self, r: CommitRound) -> Result<(), String> {
        if r.first_round {
            self.highest.remove(&r.node);
        }
        let before = self.highest.get(&r.node).copied().unwrap_or(0);
        // Judged on the commit index after the round, not on the install's index alone: a core may
        // take a snapshot and commit past it before its driver hands the install out.
        if let Some(snap) = r.installed.filter(|_| r.commit < before) {
            return Err(format!(
                "commit index: n{} installed a snapshot at index {snap} and its commit index moved back \
                 from {before} to {}: a snapshot behind the commit index must be answered, not installed",
                r.node, r.commit
            ));
        }
        if r.commit < before {
            return Err(format!(
                "commit index: n{} moved its commit index back from {before} to {} without a restart or a wipe",
                r.node, r.commit
            ));
        }
        self.highest.insert(r.node, r.commit);
        Ok(())
    }

    /// Member `node` was wiped to be added back as a new member: its history starts over.
    pub fn wiped(&mut self, node: NodeId) {
        self.highest.remove(&node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(node: NodeId, commit: Index) -> CommitRound {
        CommitRound { node, commit, first_round: false, installed: None }
    }

    #[test]
    fn rising_commits_restarts_and_wipes_pass() {
        let mut h = CommitHistory::default();
        for r in [
            round(1, 3),
            round(2, 1),
            round(1, 3),
            round(1, 9),
            // A restart brings the commit index back from the hard state: lower is fine.
            CommitRound { first_round: true, ..round(1, 4) },
            round(1, 5),
            // An install ahead of the commit index.
            CommitRound { installed: Some(20), ..round(1, 20) },
        ] {
            h.observe(r).expect("a history that never moves back");
        }
        h.wiped(2);
        h.observe(round(2, 0)).expect("a wiped member starts over");
    }

    #[test]
    fn a_commit_index_moving_back_within_an_incarnation_fails() {
        let mut h = CommitHistory::default();
        h.observe(round(3, 12)).unwrap();
        h.observe(round(1, 20)).unwrap();
        let err = h.observe(round(3, 11)).unwrap_err();
        assert!(err.contains("n3 moved its commit index back from 12 to 11"), "{err}");
    }

    #[test]
    fn a_snapshot_install_behind_the_commit_index_fails() {
        // The planted bug `snapshot-moves-commit-back`: a late copy of an old snapshot installed.
        let mut h = CommitHistory::default();
        h.observe(round(2, 40)).unwrap();
        let err = h.observe(CommitRound { installed: Some(32), ..round(2, 32) }).unwrap_err();
        assert!(
            err.contains("n2 installed a snapshot at index 32 and its commit index moved back from 40 to 32"),
            "{err}"
        );
        // A snapshot reported installed once the core committed past it is no violation.
        let mut h = CommitHistory::default();
        h.observe(round(2, 40)).unwrap();
        h.observe(CommitRound { installed: Some(32), ..round(2, 41) }).expect("commit did not move back");
    }
}
