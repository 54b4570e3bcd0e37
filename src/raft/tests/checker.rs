//! Every invariant of the testkit's checker, fed a broken state, must fail (a checker that
//! cannot fail is a defect), and must accept healthy states.

use super::harness::*;
use crate::raft::testkit::{Checker, NodeView, Violation};

fn e(index: Index, term: Term, data: &'static [u8]) -> Entry {
    Entry { term, index, kind: EntryKind::Normal, data: Bytes::from_static(data) }
}

fn view<'a>(id: NodeId, term: Term, role: Role, commit: Index, entries: &'a [Entry]) -> NodeView<'a> {
    NodeView { id, term, role, commit, first_index: 1, entries, applied: 0, digest: 0, log_changed: true }
}

#[test]
fn healthy_states_pass() {
    let log = [e(1, 1, b"a"), e(2, 1, b"b")];
    let short = [e(1, 1, b"a")];
    let mut c = Checker::default();
    let views = [view(1, 1, Role::Leader, 2, &log), view(2, 1, Role::Follower, 1, &short)];
    assert_eq!(c.check(&views), Ok(()));
    assert_eq!(c.check(&views), Ok(()));
}

#[test]
fn two_leaders_in_one_term_fail() {
    let mut c = Checker::default();
    assert_eq!(c.check(&[view(1, 3, Role::Leader, 0, &[])]), Ok(()));
    // Even at a later step: election safety is about the whole history.
    assert_eq!(
        c.check(&[view(2, 3, Role::Leader, 0, &[])]),
        Err(Violation::TwoLeaders { term: 3, a: 1, b: 2 })
    );
}

#[test]
fn log_matching_violation_fails() {
    let mut c = Checker::default();
    let a = [e(1, 1, b"a"), e(2, 2, b"b")];
    let b = [e(1, 1, b"x"), e(2, 2, b"b")];
    let res = c.check(&[view(1, 2, Role::Follower, 0, &a), view(2, 2, Role::Follower, 0, &b)]);
    assert!(matches!(res, Err(Violation::LogMismatch { index: 1, .. })), "{res:?}");
    // Same (index, term) but different predecessors.
    let mut c = Checker::default();
    let a = [e(1, 1, b"a"), e(2, 3, b"b")];
    let b = [e(1, 2, b"a"), e(2, 3, b"b")];
    let res = c.check(&[view(1, 3, Role::Follower, 0, &a), view(2, 3, Role::Follower, 0, &b)]);
    assert!(matches!(res, Err(Violation::LogMismatch { index: 2, .. })), "{res:?}");
}

#[test]
fn committed_entry_that_changes_fails() {
    let mut c = Checker::default();
    let a = [e(1, 1, b"a")];
    let b = [e(1, 2, b"a")];
    assert_eq!(c.check(&[view(1, 1, Role::Follower, 1, &a)]), Ok(()));
    assert_eq!(
        c.check(&[view(2, 2, Role::Follower, 1, &b)]),
        Err(Violation::CommittedChanged { node: 2, index: 1 })
    );
}

#[test]
fn leader_missing_a_committed_entry_fails() {
    let mut c = Checker::default();
    let full = [e(1, 1, b"a"), e(2, 1, b"b")];
    let short = [e(1, 1, b"a")];
    assert_eq!(c.check(&[view(1, 1, Role::Follower, 2, &full)]), Ok(()));
    assert_eq!(
        c.check(&[view(2, 2, Role::Leader, 1, &short)]),
        Err(Violation::LeaderIncomplete { leader: 2, term: 2, index: 2 })
    );
}

#[test]
fn commit_index_moving_back_fails_but_a_restart_resets_the_baseline() {
    let log = [e(1, 1, b"a"), e(2, 1, b"b")];
    let mut c = Checker::default();
    assert_eq!(c.check(&[view(1, 1, Role::Follower, 2, &log)]), Ok(()));
    assert_eq!(
        c.check(&[view(1, 1, Role::Follower, 1, &log)]),
        Err(Violation::CommitRegressed { node: 1, from: 2, to: 1 })
    );
    let mut c = Checker::default();
    assert_eq!(c.check(&[view(1, 1, Role::Follower, 2, &log)]), Ok(()));
    c.node_restarted(1);
    assert_eq!(c.check(&[view(1, 1, Role::Follower, 1, &log)]), Ok(()));
}

#[test]
fn applying_beyond_commit_fails() {
    let mut c = Checker::default();
    let v = NodeView { applied: 3, ..view(1, 1, Role::Follower, 2, &[]) };
    assert_eq!(c.check(&[v]), Err(Violation::AppliedBeyondCommit { node: 1, applied: 3, commit: 2 }));
}

#[test]
fn diverging_applied_sequences_fail() {
    let mut c = Checker::default();
    assert_eq!(c.record_apply(1, 1, 0xaa), Ok(()));
    assert_eq!(c.record_apply(2, 1, 0xaa), Ok(()));
    assert_eq!(c.record_apply(3, 1, 0xbb), Err(Violation::AppliedDiverged { node: 3, index: 1 }));
    let v = NodeView { applied: 1, digest: 0xcc, ..view(4, 1, Role::Follower, 1, &[]) };
    assert_eq!(c.check(&[v]), Err(Violation::AppliedDiverged { node: 4, index: 1 }));
}

#[test]
#[should_panic(expected = "invariant violated")]
fn the_cluster_panics_when_its_checker_sees_a_violation() {
    let mut c = Cluster::new(ClusterConfig::new(3, 1));
    let leader = c.wait_for_leader(200).unwrap();
    // Inject a fake leader of the next term into the checker's history, then let the cluster
    // elect a real one in that term.
    let term = c.raft(leader).term();
    let _ = c.checker.check(&[view(99, term + 1, Role::Leader, 0, &[])]);
    c.raft_mut(leader).transfer_leader(if leader == 1 { 2 } else { 1 }).unwrap();
    c.process(leader);
    c.run_ticks(5);
}
