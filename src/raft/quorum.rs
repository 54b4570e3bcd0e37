//! Majority arithmetic over a voter set: the highest value a quorum has reached, and election
//! outcomes.

use std::collections::{BTreeMap, BTreeSet};

use super::types::NodeId;

/// Outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority can no longer grant.
    Lost,
    /// Not decided yet.
    Pending,
}

/// The largest value that a majority of `voters` has reached, where `value(id)` is what voter
/// `id` has acknowledged (e.g. its match index). 0 for an empty voter set.
pub fn committed_value(voters: &BTreeSet<NodeId>, value: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return 0;
    }
    let mut values: Vec<u64> = voters.iter().map(|&id| value(id)).collect();
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[voters.len() / 2]
}

/// Counts `votes` (granted or refused) among `voters`; votes of non-voters are ignored.
pub fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let majority = voters.len() / 2 + 1;
    let (mut granted, mut missing) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    if granted >= majority {
        VoteResult::Won
    } else if granted + missing >= majority {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn committed_value_is_the_majority_th_largest() {
        let v = set(&[1, 2, 3]);
        assert_eq!(committed_value(&v, |id| [0, 5, 7, 9][id as usize]), 7);
        let v = set(&[1, 2, 3, 4]);
        assert_eq!(committed_value(&v, |id| [0, 5, 7, 9, 1][id as usize]), 5);
        assert_eq!(committed_value(&set(&[1]), |_| 4), 4);
        assert_eq!(committed_value(&set(&[]), |_| 4), 0);
    }

    #[test]
    fn vote_result_decides_only_with_a_majority() {
        let v = set(&[1, 2, 3]);
        let votes = |pairs: &[(NodeId, bool)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();
        assert_eq!(vote_result(&v, &votes(&[(1, true)])), VoteResult::Pending);
        assert_eq!(vote_result(&v, &votes(&[(1, true), (2, true)])), VoteResult::Won);
        assert_eq!(vote_result(&v, &votes(&[(1, true), (2, false), (3, false)])), VoteResult::Lost);
        // A non-voter's vote does not count.
        assert_eq!(vote_result(&v, &votes(&[(1, true), (9, true)])), VoteResult::Pending);
    }
}
