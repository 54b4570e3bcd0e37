//! The in-memory Raft log after the last compaction point, with the cursors that say what has
//! been persisted, committed and applied.
//!
//! Index layout: `snap_index` is the last compacted index (its term is kept), entries hold
//! `snap_index + 1 ..= last_index`. Cursors: `stable <= last_index` (persisted),
//! `applied <= applying <= committed <= last_index`.

use super::message::RejectHint;
use super::types::{Entry, Index, SnapshotMeta, Term};

/// The log and its cursors.
#[derive(Clone, Debug)]
pub struct RaftLog {
    snap_index: Index,
    snap_term: Term,
    entries: Vec<Entry>,
    committed: Index,
    applied: Index,
    /// Committed entries up to here were handed to the driver to apply.
    applying: Index,
    /// Entries up to here are durable.
    stable: Index,
    /// Entries from here on have not been handed to the driver for persistence.
    unstable_from: Index,
}

impl RaftLog {
    /// A log that starts after `snap_index` (whose term is `snap_term`), with nothing else yet.
    pub fn new(snap_index: Index, snap_term: Term) -> Self {
        RaftLog {
            snap_index,
            snap_term,
            entries: Vec::new(),
            committed: snap_index,
            applied: snap_index,
            applying: snap_index,
            stable: snap_index,
            unstable_from: snap_index + 1,
        }
    }

    /// First index held in memory (one past the compaction point).
    pub fn first_index(&self) -> Index {
        self.snap_index + 1
    }

    /// Index of the last entry (the compaction point if none).
    pub fn last_index(&self) -> Index {
        self.snap_index + self.entries.len() as Index
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snap_term, |e| e.term)
    }

    /// The compaction point (last index covered by a snapshot or compaction).
    pub fn snap_index(&self) -> Index {
        self.snap_index
    }

    /// Highest committed index.
    pub fn committed(&self) -> Index {
        self.committed
    }

    /// Highest index the driver confirmed applied.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// Highest index known durable.
    pub fn stable(&self) -> Index {
        self.stable
    }

    /// All entries in memory.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Term of the entry at `index`, if known (the compaction point's term is kept).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snap_index {
            return Some(self.snap_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if in memory.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let off = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(off).ok()?)
    }

    /// True if the entry at `index` has term `term`.
    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Entries `lo ..= hi` (both within memory).
    pub fn slice(&self, lo: Index, hi: Index) -> &[Entry] {
        debug_assert!(lo >= self.first_index() && hi <= self.last_index());
        if lo > hi {
            return &[];
        }
        let first = self.first_index();
        &self.entries[(lo - first) as usize..=(hi - first) as usize]
    }

    /// §5.4.1: a candidate's log is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Leader append: entries continue the log. A leader never overwrites its own log.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "entries must be contiguous");
        assert!(entry.term >= self.last_term(), "entry terms never decrease along the log");
        self.entries.push(entry);
    }

    /// Follower append (§5.3): if the entry at `prev_index` has `prev_term`, drop any conflicting
    /// suffix and append what is new. Returns `(last_new_index, first_changed_index)`, or `None`
    /// when the previous entry does not match.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<(Index, Option<Index>)> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as Index;
        let conflict = entries.iter().position(|e| !self.match_term(e.index, e.term));
        let Some(pos) = conflict else {
            if crate::planted!(TruncateOnStaleAppend) && last_new < self.last_index() {
                self.truncate_from(last_new + 1);
                return Some((last_new, Some(last_new + 1)));
            }
            return Some((last_new, None));
        };
        let at = entries[pos].index;
        if at <= self.last_index() {
            assert!(at > self.committed, "truncating committed entry {at} (commit {})", self.committed);
            self.truncate_from(at);
        }
        for e in &entries[pos..] {
            self.append(e.clone());
        }
        Some((last_new, Some(at)))
    }

    fn truncate_from(&mut self, index: Index) {
        self.entries.truncate((index - self.first_index()) as usize);
        self.stable = self.stable.min(index - 1);
        self.unstable_from = self.unstable_from.min(index);
    }

    /// Where a leader should resume after an append at `prev_index` failed here (fast backup):
    /// the term we hold at `prev_index` and its first index, or our last index + 1.
    pub fn reject_hint(&self, prev_index: Index) -> RejectHint {
        let Some(term) = self.term(prev_index).filter(|_| prev_index <= self.last_index()) else {
            return RejectHint { conflict_term: None, conflict_index: self.last_index() + 1 };
        };
        let mut first = prev_index;
        // Stop above the commit index: committed entries match the leader's anyway.
        while first > self.committed + 1 && first > self.first_index() && self.term(first - 1) == Some(term) {
            first -= 1;
        }
        RejectHint { conflict_term: Some(term), conflict_index: first }
    }

    /// Leader side of fast backup: last index at or below `upto` whose term is `term`.
    pub fn last_index_of_term(&self, term: Term, upto: Index) -> Option<Index> {
        let mut i = upto.min(self.last_index());
        while i >= self.first_index() {
            match self.term(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                _ => i -= 1,
            }
        }
        None
    }

    /// Raises the commit index; it never moves back and never passes the last entry.
    pub fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(index <= self.last_index(), "commit {index} beyond last index {}", self.last_index());
            self.committed = index;
        }
    }

    /// Entries not yet handed out for persistence.
    pub fn unstable_entries(&self) -> &[Entry] {
        if self.unstable_from > self.last_index() {
            &[]
        } else {
            self.slice(self.unstable_from, self.last_index())
        }
    }

    /// Marks everything in memory as handed out for persistence; returns the last index handed out.
    pub fn take_unstable(&mut self) -> Index {
        self.unstable_from = self.last_index() + 1;
        self.last_index()
    }

    /// The driver persisted entries up to `index`.
    pub fn stable_to(&mut self, index: Index) {
        self.stable = self.stable.max(index.min(self.last_index()));
    }

    /// Committed entries not yet handed out for applying.
    pub fn next_committed(&self) -> &[Entry] {
        if self.applying >= self.committed { &[] } else { self.slice(self.applying + 1, self.committed) }
    }

    /// Marks committed entries as handed out for applying; returns the highest one.
    pub fn take_committed(&mut self) -> Index {
        self.applying = self.applying.max(self.committed);
        self.applying
    }

    /// The driver applied entries up to `index`.
    pub fn applied_to(&mut self, index: Index) {
        assert!(index <= self.committed, "applied {index} beyond commit {}", self.committed);
        assert!(index >= self.applied, "applied index moved back from {} to {index}", self.applied);
        self.applied = index;
    }

    /// The driver stopped applying at `index` (its applied index): the committed entries after
    /// it are to be handed out again.
    pub fn hand_back_after(&mut self, index: Index) {
        assert_eq!(index, self.applied, "entries are handed back only after the applied index");
        self.applying = index;
    }

    /// Drops entries up to `index` (which must be applied); keeps `index`'s term.
    pub fn compact(&mut self, index: Index) {
        assert!(index <= self.applied, "compacting unapplied entries (to {index}, applied {})", self.applied);
        if index <= self.snap_index {
            return;
        }
        let term = self.term(index).expect("compaction point is in memory");
        self.entries.drain(..(index - self.snap_index) as usize);
        self.snap_index = index;
        self.snap_term = term;
    }

    /// Replaces the whole log by a received snapshot; the state machine is reset to it.
    pub fn restore(&mut self, meta: &SnapshotMeta) {
        assert!(meta.index > self.committed, "restoring a snapshot behind the commit index");
        *self = RaftLog::new(meta.index, meta.term);
    }

    /// Restores persisted state at start-up: entries after the compaction point, commit and applied.
    pub fn restore_persisted(&mut self, entries: Vec<Entry>, commit: Index, applied: Index) {
        self.entries = entries;
        self.stable = self.last_index();
        self.unstable_from = self.last_index() + 1;
        self.committed = commit.max(self.snap_index);
        self.applied = applied.max(self.snap_index);
        self.applying = self.applied;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;
    use bytes::Bytes;

    fn ent(index: Index, term: Term) -> Entry {
        Entry { term, index, kind: EntryKind::Normal, data: Bytes::new() }
    }

    fn log_with(terms: &[Term]) -> RaftLog {
        let mut log = RaftLog::new(0, 0);
        for (i, &t) in terms.iter().enumerate() {
            log.append(ent(i as Index + 1, t));
        }
        log
    }

    #[test]
    fn term_lookup_and_bounds() {
        let log = log_with(&[1, 1, 2]);
        assert_eq!(log.term(0), Some(0));
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(4), None);
        assert_eq!((log.first_index(), log.last_index(), log.last_term()), (1, 3, 2));
    }

    #[test]
    fn maybe_append_truncates_only_conflicts() {
        let mut log = log_with(&[1, 1, 2, 2]);
        // Already-present entries change nothing.
        assert_eq!(log.maybe_append(1, 1, &[ent(2, 1), ent(3, 2)]), Some((3, None)));
        assert_eq!(log.last_index(), 4);
        // A conflicting entry at 3 drops 3..=4.
        assert_eq!(log.maybe_append(2, 1, &[ent(3, 3)]), Some((3, Some(3))));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        // Mismatching previous entry.
        assert_eq!(log.maybe_append(3, 2, &[ent(4, 3)]), None);
    }

    #[test]
    #[should_panic(expected = "truncating committed")]
    fn truncating_a_committed_entry_is_an_invariant_violation() {
        let mut log = log_with(&[1, 1, 2]);
        log.commit_to(3);
        log.maybe_append(1, 1, &[ent(2, 3)]);
    }

    #[test]
    fn commit_never_moves_back() {
        let mut log = log_with(&[1, 1]);
        log.commit_to(2);
        log.commit_to(1);
        assert_eq!(log.committed(), 2);
    }

    #[test]
    #[should_panic(expected = "beyond last index")]
    fn commit_beyond_last_index_panics() {
        log_with(&[1]).commit_to(2);
    }

    #[test]
    #[should_panic(expected = "moved back")]
    fn applied_never_moves_back() {
        let mut log = log_with(&[1, 1]);
        log.commit_to(2);
        log.applied_to(2);
        log.applied_to(1);
    }

    #[test]
    #[should_panic(expected = "beyond commit")]
    fn applied_never_passes_commit() {
        log_with(&[1, 1]).applied_to(1);
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn leader_append_must_be_contiguous() {
        log_with(&[1]).append(ent(3, 1));
    }

    #[test]
    fn reject_hint_points_at_first_index_of_conflicting_term() {
        let log = log_with(&[1, 2, 2, 2, 3]);
        assert_eq!(log.reject_hint(4), RejectHint { conflict_term: Some(2), conflict_index: 2 });
        assert_eq!(log.reject_hint(9), RejectHint { conflict_term: None, conflict_index: 6 });
        assert_eq!(log.last_index_of_term(2, 5), Some(4));
        assert_eq!(log.last_index_of_term(4, 5), None);
    }

    #[test]
    fn compaction_keeps_the_boundary_term() {
        let mut log = log_with(&[1, 1, 2, 3]);
        log.commit_to(3);
        log.applied_to(3);
        log.compact(2);
        assert_eq!((log.first_index(), log.term(2), log.term(1)), (3, Some(1), None));
        assert_eq!(log.entries().len(), 2);
    }
}
