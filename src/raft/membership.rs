//! The configuration as a function of log position. A change takes effect as soon as its entry is
//! appended (dissertation §4.1); truncating the entry undoes it, and compaction folds it into the
//! base configuration.

use super::types::{ConfState, Index};

/// Base configuration plus the result of every configuration entry still in the log.
#[derive(Clone, Debug)]
pub struct Membership {
    base_index: Index,
    base: ConfState,
    /// `(index of the conf-change entry, configuration after it)`, ascending.
    changes: Vec<(Index, ConfState)>,
}

impl Membership {
    /// Membership whose configuration up to `index` is `conf`.
    pub fn new(index: Index, conf: ConfState) -> Self {
        Membership { base_index: index, base: conf, changes: Vec::new() }
    }

    /// The latest configuration (what this node acts on).
    pub fn current(&self) -> &ConfState {
        self.changes.last().map_or(&self.base, |(_, c)| c)
    }

    /// The configuration in force at log position `index`.
    pub fn at(&self, index: Index) -> &ConfState {
        self.changes.iter().rev().find(|(i, _)| *i <= index).map_or(&self.base, |(_, c)| c)
    }

    /// Index of the latest configuration entry (the base index if none is in the log).
    pub fn last_change_index(&self) -> Index {
        self.changes.last().map_or(self.base_index, |(i, _)| *i)
    }

    /// A configuration entry at `index` resulting in `conf` was appended.
    pub fn push(&mut self, index: Index, conf: ConfState) {
        assert!(index > self.last_change_index(), "configuration entries arrive in log order");
        self.changes.push((index, conf));
    }

    /// The log was truncated from `index` on: forget changes there and after.
    pub fn truncate_from(&mut self, index: Index) {
        self.changes.retain(|(i, _)| *i < index);
    }

    /// The log was compacted up to `index`: fold older changes into the base.
    pub fn compact_to(&mut self, index: Index) {
        let conf = self.at(index).clone();
        self.changes.retain(|(i, _)| *i > index);
        self.base = conf;
        self.base_index = self.base_index.max(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{ConfChange, ConfChangeKind};
    use bytes::Bytes;

    fn push(m: &mut Membership, index: Index, kind: ConfChangeKind, node: u64) {
        let next = m.current().apply(&ConfChange { kind, node, context: Bytes::new() });
        m.push(index, next);
    }

    #[test]
    fn changes_apply_on_append_and_revert_on_truncate() {
        let mut m = Membership::new(0, ConfState::with_voters([1, 2, 3]));
        push(&mut m, 5, ConfChangeKind::AddLearner, 4);
        push(&mut m, 8, ConfChangeKind::AddVoter, 4);
        assert_eq!(m.current(), &ConfState::with_voters([1, 2, 3, 4]));
        assert!(m.at(6).learners.contains(&4));
        m.truncate_from(8);
        assert!(m.current().learners.contains(&4));
        m.truncate_from(5);
        assert_eq!(m.current(), &ConfState::with_voters([1, 2, 3]));
    }

    #[test]
    fn compaction_folds_changes_into_the_base() {
        let mut m = Membership::new(0, ConfState::with_voters([1, 2, 3]));
        push(&mut m, 5, ConfChangeKind::Remove, 3);
        push(&mut m, 9, ConfChangeKind::AddLearner, 7);
        m.compact_to(6);
        assert_eq!(m.at(6), &ConfState::with_voters([1, 2]));
        assert_eq!(m.last_change_index(), 9);
        m.truncate_from(9);
        assert_eq!(m.current(), &ConfState::with_voters([1, 2]));
        assert_eq!(m.last_change_index(), 6);
    }
}
