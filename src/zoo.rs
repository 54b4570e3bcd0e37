//! The bug zoo: classic mistakes of real systems, planted behind one short line each
//! (`if planted!(Figure8Commit) { … }`), to measure whether the simulator catches them.
//!
//! Only the simulated build can switch a bug on: the simulator's runner plants at most one per
//! run, in a thread-local of the thread that runs the seed (never process-global). In the normal
//! build [`planted`] is a `const fn` that returns `false`, so every site folds away and
//! production code and speed are untouched.

/// A planted bug. Each is a faithful copy of a mistake a real system made; the site that plants
/// it names it with [`planted!`](crate::planted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bug {
    /// Raft core: a vote is granted without checking that the candidate's log is up to date (§5.4.1).
    VoteWithoutLogCheck,
    /// Raft core: a leader commits an earlier term's entry by counting replicas (Figure 8).
    Figure8Commit,
    /// Raft core: a follower accepts an append from a leader of an older term (no term check on
    /// AppendEntries), so a deposed leader overwrites what the new one replicated.
    StaleTermAppendAccepted,
    /// Raft core: a follower cuts its log after a stale (duplicated, reordered) append even
    /// though the entries after it match the leader's.
    TruncateOnStaleAppend,
    /// Raft core: the leader's heartbeat carries its commit index instead of the follower's
    /// match, so a follower commits whatever divergent entry it has at that index.
    HeartbeatCommitBeyondMatch,
    /// Raft core: a follower takes everything it appended as committed (applies before commit).
    ApplyBeforeCommit,
    /// Raft core: a leader answers a ReadIndex with its commit index without a heartbeat round
    /// proving it is still the leader (a deposed leader serves stale reads).
    ReadIndexWithoutQuorum,
    /// Raft core: a follower answers a linearizable read from its own commit index.
    FollowerLocalRead,
    /// Raft core: a snapshot behind the commit index is installed anyway (commit moves back).
    SnapshotMovesCommitBack,
    /// Raft core: a membership change is accepted before the leader committed an entry of its
    /// term (the single-server change bug of Ongaro's thesis, fixed in 2015).
    ConfChangeBeforeTermCommit,
    /// Storage: the vote is written without the candidate (term only), so a restarted member
    /// votes twice in one term.
    VoteNotPersisted,
    /// Storage: a term learned without a vote is not persisted; a restarted member goes back
    /// to an older term.
    TermNotPersisted,
    /// Storage: recovery keeps a torn tail in the WAL instead of cutting it, and appends after
    /// the garbage.
    TornTailKept,
    /// Storage: an fsync error is ignored and the next fsync trusted (PostgreSQL's fsyncgate):
    /// the kernel dropped the dirty pages, so the data never reaches the disk.
    FsyncErrorIgnored,
    /// Driver: a follower answers an append before the entries are fsynced.
    AckBeforeDurable,
    /// Dedup: the dedup window is not restored from a snapshot (a replica restarted or caught
    /// up from one stores a retried event again once it leads).
    DedupNotInSnapshot,
    /// Dedup: expiry runs on each replica's own clock at apply instead of the replicated time.
    DedupExpiryLocalClock,
    /// Pipeline: the checkpoint records the position after the last event handled instead of
    /// after the last one of an unbroken handled prefix (events still in flight are skipped by
    /// the next leader).
    CheckpointAheadOfWork,
    /// Ingest: the acks of a coalesced batch go to the wrong slots (offsets of other events).
    AckSlotsMixedUp,
    /// Storage: a snapshot records the topic files' metadata without syncing their data first,
    /// and the log behind it is compacted, so a power failure loses events the snapshot (and no
    /// log entry any more) says are there.
    SnapshotBeforeTopicSync,
    /// Catch-up: a member marks a snapshot's catch-up complete (marker removed) before the
    /// records it pulled are synced, so a power failure leaves a hole nothing will pull again.
    CatchUpDoneBeforeSync,
    /// Catch-up: the core is let apply again after the first pulled chunk, while the installed
    /// snapshot's topic data is still missing, so applied events land where pulled ones belong.
    ApplyDuringCatchUp,
}

impl Bug {
    /// Every planted bug, in the order the zoo runs them.
    pub const ALL: &'static [Bug] = &[
        Bug::VoteWithoutLogCheck,
        Bug::Figure8Commit,
        Bug::StaleTermAppendAccepted,
        Bug::TruncateOnStaleAppend,
        Bug::HeartbeatCommitBeyondMatch,
        Bug::ApplyBeforeCommit,
        Bug::ReadIndexWithoutQuorum,
        Bug::FollowerLocalRead,
        Bug::SnapshotMovesCommitBack,
        Bug::ConfChangeBeforeTermCommit,
        Bug::VoteNotPersisted,
        Bug::TermNotPersisted,
        Bug::TornTailKept,
        Bug::FsyncErrorIgnored,
        Bug::AckBeforeDurable,
        Bug::DedupNotInSnapshot,
        Bug::DedupExpiryLocalClock,
        Bug::CheckpointAheadOfWork,
        Bug::AckSlotsMixedUp,
        Bug::SnapshotBeforeTopicSync,
        Bug::CatchUpDoneBeforeSync,
        Bug::ApplyDuringCatchUp,
    ];

    /// The name `--bug` takes (kebab case).
    pub fn name(self) -> &'static str {
        match self {
            Bug::VoteWithoutLogCheck => "vote-without-log-check",
            Bug::Figure8Commit => "figure8-commit",
            Bug::StaleTermAppendAccepted => "stale-term-append-accepted",
            Bug::TruncateOnStaleAppend => "truncate-on-stale-append",
            Bug::HeartbeatCommitBeyondMatch => "heartbeat-commit-beyond-match",
            Bug::ApplyBeforeCommit => "apply-before-commit",
            Bug::ReadIndexWithoutQuorum => "read-index-without-quorum",
            Bug::FollowerLocalRead => "follower-local-read",
            Bug::SnapshotMovesCommitBack => "snapshot-moves-commit-back",
            Bug::ConfChangeBeforeTermCommit => "conf-change-before-term-commit",
            Bug::VoteNotPersisted => "vote-not-persisted",
            Bug::TermNotPersisted => "term-not-persisted",
            Bug::TornTailKept => "torn-tail-kept",
            Bug::FsyncErrorIgnored => "fsync-error-ignored",
            Bug::AckBeforeDurable => "ack-before-durable",
            Bug::DedupNotInSnapshot => "dedup-not-in-snapshot",
            Bug::DedupExpiryLocalClock => "dedup-expiry-local-clock",
            Bug::CheckpointAheadOfWork => "checkpoint-ahead-of-work",
            Bug::AckSlotsMixedUp => "ack-slots-mixed-up",
            Bug::SnapshotBeforeTopicSync => "snapshot-before-topic-sync",
            Bug::CatchUpDoneBeforeSync => "catch-up-done-before-sync",
            Bug::ApplyDuringCatchUp => "apply-during-catch-up",
        }
    }

    /// The bug called `name`.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.iter().copied().find(|b| b.name() == name)
    }

    /// Where the bug lives (for the zoo's table).
    pub fn area(self) -> &'static str {
        match self {
            Bug::VoteNotPersisted
            | Bug::TermNotPersisted
            | Bug::TornTailKept
            | Bug::FsyncErrorIgnored
            | Bug::SnapshotBeforeTopicSync => "storage",
            Bug::CatchUpDoneBeforeSync | Bug::ApplyDuringCatchUp => "catch-up",
            Bug::AckBeforeDurable => "driver",
            Bug::DedupNotInSnapshot | Bug::DedupExpiryLocalClock => "dedup",
            Bug::ReadIndexWithoutQuorum | Bug::FollowerLocalRead => "reads",
            Bug::CheckpointAheadOfWork => "pipeline",
            Bug::AckSlotsMixedUp => "ingest",
            _ => "raft core",
        }
    }
}

#[cfg(madsim)]
thread_local! {
    static PLANTED: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// True if `bug` is switched on for the run on this thread (simulated build only).
#[cfg(madsim)]
#[inline]
pub fn planted(bug: Bug) -> bool {
    PLANTED.with(|p| p.get() == Some(bug))
}

/// Always false: bugs exist only in the simulated build.
#[cfg(not(madsim))]
#[inline(always)]
pub const fn planted(_bug: Bug) -> bool {
    false
}

/// Switches `bug` on (or every bug off) for runs on this thread until the guard drops. The
/// simulator's runner calls it on the fresh thread of each seed.
#[cfg(madsim)]
pub fn plant(bug: Option<Bug>) -> PlantGuard {
    let previous = PLANTED.with(|p| p.replace(bug));
    PlantGuard { previous }
}

/// Restores the previous planting when dropped.
#[cfg(madsim)]
#[derive(Debug)]
pub struct PlantGuard {
    previous: Option<Bug>,
}

#[cfg(madsim)]
impl Drop for PlantGuard {
    fn drop(&mut self) {
        PLANTED.with(|p| p.set(self.previous));
    }
}

/// `planted!(Name)`: true if [`Bug::Name`](Bug) is switched on for this run; `false` (a
/// constant) outside the simulator.
#[macro_export]
macro_rules! planted {
    ($bug:ident) => {
        $crate::zoo::planted($crate::zoo::Bug::$bug)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut names = std::collections::BTreeSet::new();
        for &b in Bug::ALL {
            assert_eq!(Bug::from_name(b.name()), Some(b));
            assert!(names.insert(b.name()), "{} twice", b.name());
        }
        assert!(Bug::ALL.len() >= 16);
    }

    #[cfg(not(madsim))]
    #[test]
    fn nothing_is_planted_outside_the_simulator() {
        assert!(Bug::ALL.iter().all(|&b| !planted(b)));
    }

    #[cfg(madsim)]
    #[test]
    #[allow(clippy::disallowed_methods)] // a real thread stands for another seed's thread
    fn planting_is_per_thread_and_undone_by_the_guard() {
        {
            let _g = plant(Some(Bug::Figure8Commit));
            assert!(planted!(Figure8Commit));
            assert!(!planted!(VoteNotPersisted));
            let other = std::thread::spawn(|| planted!(Figure8Commit)).join().unwrap();
            assert!(!other, "another thread (another seed) sees nothing planted");
        }
        assert!(!planted!(Figure8Commit));
    }
}
