//! Tests of the features beyond §5: pre-vote, check-quorum, membership (§6 of the paper, one
//! server at a time), snapshots (§7), leadership transfer, reads (§8 / dissertation §6.4),
//! proposals on followers, and input robustness.

use super::harness::*;

const V3: [NodeId; 3] = [1, 2, 3];

fn has(ms: &[Message], pred: impl Fn(&Message) -> bool) -> bool {
    ms.iter().any(pred)
}

fn cluster(n: u64, seed: u64) -> Cluster {
    Cluster::new(ClusterConfig::new(n, seed))
}

fn cc(kind: ConfChangeKind, node: NodeId) -> ConfChange {
    ConfChange { kind, node, context: Bytes::new() }
}

// ---------------------------------------------------------------------------------------------
// Pre-vote and check-quorum
// ---------------------------------------------------------------------------------------------

#[test]
fn test_prevote_does_not_change_terms() {
    let cfg = RaftConfig { check_quorum: false, ..RaftConfig::new(1) };
    let mut r = new_raft(1, &V3, cfg.clone());
    tick_until_campaign(&mut r, 100);
    assert_eq!((r.role(), r.term(), r.vote()), (Role::PreCandidate, 0, None), "pre-candidate keeps term 0");
    let ms = msgs(&mut r);
    assert!(has(&ms, |m| m.term == 1 && matches!(m.body, Body::Vote { pre_vote: true, .. })));
    // A voter grants the pre-vote without adopting the term or recording a vote.
    let mut v = new_raft(2, &V3, RaftConfig { id: 2, ..cfg });
    v.step(msg(1, 2, 1, Body::Vote { pre_vote: true, last_index: 0, last_term: 0, transfer: false }))
        .unwrap();
    assert!(
        has(&msgs(&mut v), |m| m.term == 1 && m.body == Body::VoteResponse { pre_vote: true, granted: true })
    );
    assert_eq!((v.term(), v.vote()), (0, None));
    // With a majority of pre-votes the real election starts in term 1.
    r.step(msg(2, 1, 1, Body::VoteResponse { pre_vote: true, granted: true })).unwrap();
    assert_eq!((r.role(), r.term()), (Role::Candidate, 1));
}

#[test]
fn test_prevote_keeps_a_partitioned_node_from_inflating_its_term() {
    let mut c = cluster(3, 11);
    let leader = c.wait_for_leader(200).unwrap();
    let loner = (1..=3).find(|&i| i != leader).unwrap();
    let term = c.raft(leader).term();
    c.isolate(loner);
    c.run_ticks(200);
    assert_eq!(c.raft(loner).term(), term, "pre-vote failed every time, the term stayed");
    c.heal();
    c.run_ticks(50);
    assert_eq!(c.leader(), Some(leader), "the rejoining node did not disrupt the leader");
    assert_eq!(c.raft(leader).term(), term);
}

#[test]
fn test_without_prevote_a_partitioned_node_disrupts_on_rejoin() {
    // The counterpart of the test above: shows that pre-vote is what prevents the disruption.
    let mut cfg = ClusterConfig::new(3, 11);
    cfg.raft.pre_vote = false;
    cfg.raft.check_quorum = false;
    let mut c = Cluster::new(cfg);
    let leader = c.wait_for_leader(200).unwrap();
    let loner = (1..=3).find(|&i| i != leader).unwrap();
    let term = c.raft(leader).term();
    c.isolate(loner);
    c.run_ticks(200);
    assert!(c.raft(loner).term() > term + 3);
    c.heal();
    c.run_ticks(10);
    assert!(c.raft(leader).term() > term, "the old leader was deposed by the higher term");
}

#[test]
fn test_check_quorum_leader_steps_down_without_a_majority() {
    let mut c = cluster(3, 5);
    let leader = c.wait_for_leader(200).unwrap();
    c.isolate(leader);
    let election = u64::from(c.config().raft.election_tick);
    c.run_ticks(2 * election + 1);
    assert_eq!(c.raft(leader).role(), Role::Follower, "isolated leader stepped down");
    // And without check-quorum it would not have.
    let mut cfg = ClusterConfig::new(3, 5);
    cfg.raft.check_quorum = false;
    let mut c = Cluster::new(cfg);
    let leader = c.wait_for_leader(200).unwrap();
    c.isolate(leader);
    c.run_ticks(2 * election + 1);
    assert_eq!(c.raft(leader).role(), Role::Leader);
}

#[test]
fn test_check_quorum_followers_ignore_votes_while_they_hear_from_a_leader() {
    let mut f = new_raft(1, &V3, RaftConfig { pre_vote: false, ..RaftConfig::new(1) });
    f.step(msg(2, 1, 1, Body::Heartbeat { commit: 0, round: 0 })).unwrap();
    f.step(msg(3, 1, 2, Body::Vote { pre_vote: false, last_index: 9, last_term: 1, transfer: false }))
        .unwrap();
    assert_eq!((f.term(), f.vote()), (1, None), "vote ignored within the leader lease");
    assert!(msgs(&mut f).iter().all(|m| !matches!(m.body, Body::VoteResponse { .. })));
    // A leadership transfer's election bypasses the lease.
    f.step(msg(3, 1, 2, Body::Vote { pre_vote: false, last_index: 9, last_term: 1, transfer: true }))
        .unwrap();
    assert_eq!((f.term(), f.vote()), (2, Some(3)));
}

#[test]
fn test_stale_leader_learns_the_new_term_from_a_follower() {
    let mut f = raft_with_log(1, &V3, RaftConfig::new(1), &[1], 5);
    f.step(msg(2, 1, 3, Body::Heartbeat { commit: 0, round: 0 })).unwrap();
    assert!(has(&msgs(&mut f), |m| m.to == 2
        && m.term == 5
        && matches!(m.body, Body::AppendResponse { .. })));
}

// ---------------------------------------------------------------------------------------------
// Proposals
// ---------------------------------------------------------------------------------------------

#[test]
fn test_proposal_on_follower_returns_not_leader_with_the_leader_id() {
    let mut c = cluster(3, 3);
    let leader = c.wait_for_leader(200).unwrap();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    assert_eq!(c.propose(follower, &b"x"[..]), Err(ProposeError::NotLeader { leader: Some(leader) }));
    let mut fresh = new_raft(1, &V3, RaftConfig::new(1));
    assert_eq!(fresh.propose(Bytes::new()), Err(ProposeError::NotLeader { leader: None }));
}

#[test]
fn test_single_node_cluster_commits_after_its_own_persistence() {
    let mut r = new_raft(1, &[1], RaftConfig::new(1));
    tick_until_campaign(&mut r, 100);
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(r.commit_index(), 0, "nothing commits before the leader's own log is durable");
    let rd = r.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.committed_entries.is_empty());
    r.advance();
    assert_eq!(r.commit_index(), 1);
    let i = r.propose(Bytes::from_static(b"a")).unwrap();
    let rd = drain(&mut r);
    assert_eq!(rd.committed_entries.last().map(|e| e.index), Some(i));
}

// ---------------------------------------------------------------------------------------------
// Replication flow control
// ---------------------------------------------------------------------------------------------

#[test]
fn test_replication_pipelines_a_bounded_number_of_appends_in_batches() {
    let cfg = RaftConfig { max_inflight_appends: 3, max_entries_per_append: 4, ..plain_config(1) };
    let mut l = make_leader(1, &V3, cfg);
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 1, reject: None })).unwrap();
    drain(&mut l);
    for _ in 0..40 {
        l.propose(Bytes::from_static(b"e")).unwrap();
    }
    let to2: Vec<Message> = msgs(&mut l).into_iter().filter(|m| m.to == 2).collect();
    let sizes: Vec<usize> = to2
        .iter()
        .map(|m| match &m.body {
            Body::Append { entries, .. } => entries.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(sizes, vec![4, 4, 4], "three batches of four in flight, then wait");
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Replicate);
    // Follower 3 never answered: it is still probed with a single append.
    assert_eq!(l.progress(3).unwrap().state, ProgressState::Probe);
    // An acknowledgement frees a slot.
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 5, reject: None })).unwrap();
    let more: Vec<Message> = msgs(&mut l).into_iter().filter(|m| m.to == 2).collect();
    assert_eq!(more.len(), 1);
}

#[test]
fn test_append_batches_respect_the_byte_limit() {
    let cfg = RaftConfig { max_append_bytes: 100, ..plain_config(1) };
    let mut l = make_leader(1, &V3, cfg);
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 1, reject: None })).unwrap();
    drain(&mut l);
    for _ in 0..10 {
        l.propose(Bytes::from(vec![0u8; 40])).unwrap();
    }
    for m in msgs(&mut l).into_iter().filter(|m| m.to == 2) {
        if let Body::Append { entries, .. } = m.body {
            let bytes: usize = entries.iter().map(|e| e.size_hint()).sum();
            assert!(entries.len() == 1 || bytes <= 100, "{bytes} bytes in {} entries", entries.len());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots (§7)
// ---------------------------------------------------------------------------------------------

#[test]
fn test_7_snapshot_compacts_the_log_and_refuses_bad_indexes() {
    let mut r = new_raft(1, &[1], RaftConfig::new(1));
    tick_until_campaign(&mut r, 100);
    for _ in 0..10 {
        r.propose(Bytes::from_static(b"x")).unwrap();
    }
    drain(&mut r);
    drain(&mut r);
    assert_eq!(r.applied(), 11);
    assert_eq!(r.snapshot(12, Bytes::new()), Err(SnapshotError::NotApplied { index: 12, applied: 11 }));
    assert_eq!(r.compact(5), Err(SnapshotError::NoSnapshot { index: 5, snapshot: 0 }));
    r.snapshot(8, Bytes::from_static(b"state")).unwrap();
    r.compact(6).unwrap();
    assert_eq!((r.first_index(), r.term_at(6), r.term_at(5)), (7, Some(1), None));
    assert_eq!(r.latest_snapshot().unwrap().meta.conf_state, ConfState::with_voters([1]));
    assert!(matches!(r.snapshot(8, Bytes::new()), Err(SnapshotError::OutOfDate { .. })));
}

#[test]
fn test_7_lagging_follower_receives_install_snapshot_in_chunks_and_resumes() {
    let mut cfg = ClusterConfig::new(3, 21);
    cfg.snapshot_every = Some(10);
    cfg.snapshot_padding = 1000;
    cfg.raft.snapshot_chunk_bytes = 256;
    let mut c = Cluster::new(cfg);
    let leader = c.wait_for_leader(200).unwrap();
    let lagger = (1..=3).find(|&i| i != leader).unwrap();
    c.crash(lagger);
    for i in 0..50u32 {
        c.propose_and_commit(Bytes::from(i.to_le_bytes().to_vec()), 100).expect("commit");
    }
    assert!(c.raft(leader).first_index() > 2, "leader compacted its log");
    let sent_before = c.net.stats.sent;
    c.restart(lagger);
    let target = c.raft(leader).commit_index();
    assert!(c.wait_applied_everywhere(target, 300), "lagger caught up");
    let lag = c.raft(lagger);
    assert!(lag.latest_snapshot().is_some_and(|s| s.meta.index > 1), "caught up through a snapshot");
    assert!(c.nodes[&lagger].storage.snapshot.is_some(), "installed snapshot was persisted");
    assert!(c.net.stats.sent > sent_before + 4, "several chunks were exchanged");
    // Replication resumes with normal appends after the snapshot.
    let (_, i) = c.propose_and_commit(&b"after"[..], 100).unwrap();
    assert!(c.wait_applied_everywhere(i, 100));
}

#[test]
fn test_7_follower_reassembles_chunks_and_refuses_out_of_order_ones() {
    let mut f = new_raft(2, &V3, plain_config(2));
    let meta = SnapshotMeta { index: 10, term: 3, conf_state: ConfState::with_voters(V3) };
    let mut data = 10u64.to_le_bytes().to_vec();
    data.extend_from_slice(&[7; 8]);
    let chunk = |offset: usize, len: usize, done| Body::Snapshot {
        meta: meta.clone(),
        offset: offset as u64,
        data: Bytes::copy_from_slice(&data[offset..offset + len]),
        done,
    };
    f.step(msg(1, 2, 3, chunk(0, 6, false))).unwrap();
    // A chunk that skips ahead is refused with the offset we need.
    f.step(msg(1, 2, 3, chunk(12, 4, true))).unwrap();
    let ms = msgs(&mut f);
    assert!(has(&ms, |m| matches!(m.body, Body::SnapshotResponse { next_offset: 6, done: false, .. })));
    f.step(msg(1, 2, 3, chunk(6, 6, false))).unwrap();
    f.step(msg(1, 2, 3, chunk(6, 6, false))).unwrap(); // duplicate
    f.step(msg(1, 2, 3, chunk(12, 4, true))).unwrap();
    let rd = drain(&mut f);
    let snap = rd.snapshot.expect("snapshot handed to the driver");
    assert_eq!(snap.data.as_ref(), &data[..]);
    assert_eq!((f.commit_index(), f.applied(), f.last_index(), f.first_index()), (10, 10, 10, 11));
    assert!(has(&rd.messages, |m| matches!(
        m.body,
        Body::SnapshotResponse { done: true, last_index: 10, .. }
    )));
}

#[test]
fn test_7_snapshot_covering_entries_we_already_have_only_advances_commit() {
    let mut f = raft_with_log(2, &V3, plain_config(2), &[1, 1, 1, 1], 1);
    let meta = SnapshotMeta { index: 2, term: 1, conf_state: ConfState::with_voters(V3) };
    f.step(msg(1, 2, 1, Body::Snapshot { meta, offset: 0, data: Bytes::from_static(b"s"), done: true }))
        .unwrap();
    let rd = drain(&mut f);
    assert!(rd.snapshot.is_none());
    assert_eq!((f.commit_index(), f.last_index()), (2, 4), "log kept, commit advanced");
}

// ---------------------------------------------------------------------------------------------
// Membership changes (§6, one server at a time)
// ---------------------------------------------------------------------------------------------

#[test]
fn test_6_conf_change_requires_a_committed_entry_of_the_current_term() {
    let mut l = make_leader(1, &V3, plain_config(1));
    assert_eq!(
        l.propose_conf_change(cc(ConfChangeKind::AddLearner, 4)),
        Err(ProposeError::FirstCommitPending)
    );
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 1, reject: None })).unwrap();
    assert!(l.propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).is_ok());
}

#[test]
fn test_6_only_one_conf_change_at_a_time() {
    let mut l = make_leader(1, &V3, plain_config(1));
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 1, reject: None })).unwrap();
    let i = l.propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
    assert_eq!(
        l.propose_conf_change(cc(ConfChangeKind::AddLearner, 5)),
        Err(ProposeError::ConfChangeInProgress { index: i })
    );
    drain(&mut l);
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: i, reject: None })).unwrap();
    assert!(l.propose_conf_change(cc(ConfChangeKind::AddLearner, 5)).is_ok());
}

#[test]
fn test_6_conf_change_takes_effect_on_append_and_is_undone_by_truncation() {
    let mut f = new_raft(2, &V3, plain_config(2));
    let change = cc(ConfChangeKind::AddLearner, 4);
    let conf = ConfState::with_voters(V3).apply(&change);
    let data = ConfEntry { change, conf }.to_bytes();
    let add = Entry { term: 1, index: 1, kind: EntryKind::ConfChange, data };
    f.step(msg(1, 2, 1, Body::Append { prev_index: 0, prev_term: 0, entries: vec![add], commit: 0 }))
        .unwrap();
    assert!(f.conf_state().learners.contains(&4), "in effect before commit");
    f.step(msg(3, 2, 2, Body::Append { prev_index: 0, prev_term: 0, entries: vec![ent(1, 2)], commit: 0 }))
        .unwrap();
    assert_eq!(f.conf_state(), &ConfState::with_voters(V3), "truncated with its entry");
}

#[test]
fn test_6_invalid_conf_changes_are_refused() {
    let mut l = make_leader(1, &V3, plain_config(1));
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 1, reject: None })).unwrap();
    assert!(matches!(
        l.propose_conf_change(cc(ConfChangeKind::AddVoter, 2)),
        Err(ProposeError::InvalidConfChange(_))
    ));
    assert!(matches!(
        l.propose_conf_change(cc(ConfChangeKind::AddVoter, 9)),
        Err(ProposeError::InvalidConfChange(_))
    ));
    assert!(matches!(
        l.propose_conf_change(cc(ConfChangeKind::Remove, 9)),
        Err(ProposeError::InvalidConfChange(_))
    ));
    let mut solo = new_raft(1, &[1], RaftConfig::new(1));
    tick_until_campaign(&mut solo, 100);
    drain(&mut solo);
    assert!(matches!(
        solo.propose_conf_change(cc(ConfChangeKind::Remove, 1)),
        Err(ProposeError::InvalidConfChange(_))
    ));
}

#[test]
fn test_6_learner_receives_the_log_but_neither_votes_nor_counts() {
    let mut l = make_leader(1, &V3, plain_config(1));
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 1, reject: None })).unwrap();
    let i = l.propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
    let ms = msgs(&mut l);
    assert!(has(&ms, |m| m.to == 4 && matches!(m.body, Body::Append { .. })), "learner gets appends");
    // Learner 4 acknowledging does not make a majority with the leader.
    l.step(msg(4, 1, l.term(), Body::AppendResponse { index: i, reject: None })).unwrap();
    assert!(l.commit_index() < i);
    l.step(msg(3, 1, l.term(), Body::AppendResponse { index: i, reject: None })).unwrap();
    assert_eq!(l.commit_index(), i);
    // A learner never campaigns.
    let mut learner =
        Raft::new(RaftConfig::new(4), RestoredState::joining(), crate::rt::rng_from_seed(4)).unwrap();
    for _ in 0..100 {
        learner.tick();
    }
    assert_eq!((learner.role(), learner.term()), (Role::Follower, 0));
}

#[test]
fn test_6_learner_must_catch_up_before_promotion() {
    let cfg = RaftConfig { max_entries_per_append: 4, ..plain_config(1) };
    let mut l = make_leader(1, &V3, cfg);
    let t = l.term();
    l.step(msg(2, 1, t, Body::AppendResponse { index: 1, reject: None })).unwrap();
    let add = l.propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
    for _ in 0..20 {
        l.propose(Bytes::from_static(b"x")).unwrap();
    }
    drain(&mut l);
    l.step(msg(2, 1, t, Body::AppendResponse { index: l.last_index(), reject: None })).unwrap();
    assert!(l.commit_index() > add + 10);
    let res = l.propose_conf_change(cc(ConfChangeKind::AddVoter, 4));
    assert!(matches!(res, Err(ProposeError::LearnerNotCaughtUp { node: 4, .. })), "{res:?}");
    l.step(msg(4, 1, t, Body::AppendResponse { index: l.last_index(), reject: None })).unwrap();
    assert!(l.propose_conf_change(cc(ConfChangeKind::AddVoter, 4)).is_ok());
    assert!(l.conf_state().voters.contains(&4));
}

#[test]
fn test_6_a_node_added_back_is_not_credited_with_its_previous_membership_log() {
    // Found by sim seed 880160153101: node 2 is removed, wiped and added back under the same id
    // while an append answer from its old membership is still in flight. Counted against the new
    // progress, that answer claimed the empty node held the old log: it was promoted at once and,
    // its match being above every index it refused, backed up to match + 1 forever.
    let cfg = RaftConfig { max_entries_per_append: 4, ..plain_config(1) };
    let mut l = make_leader(1, &V3, cfg);
    let t = l.term();
    for _ in 0..20 {
        l.propose(Bytes::from_static(b"x")).unwrap();
    }
    let old = l.last_index();
    drain(&mut l);
    l.step(msg(2, 1, t, Body::AppendResponse { index: old, reject: None })).unwrap();
    l.step(msg(3, 1, t, Body::AppendResponse { index: old, reject: None })).unwrap();
    let remove = l.propose_conf_change(cc(ConfChangeKind::Remove, 2)).unwrap();
    drain(&mut l);
    l.step(msg(3, 1, t, Body::AppendResponse { index: remove, reject: None })).unwrap();
    assert_eq!(l.commit_index(), remove);
    let add = l.propose_conf_change(cc(ConfChangeKind::AddLearner, 2)).unwrap();
    drain(&mut l);
    // The old membership's answer arrives late, in the same term.
    l.step(msg(2, 1, t, Body::AppendResponse { index: old, reject: None })).unwrap();
    assert_eq!(l.progress(2).map(|p| p.matched), Some(0), "stale answer counted");
    l.step(msg(3, 1, t, Body::AppendResponse { index: add, reject: None })).unwrap();
    let res = l.propose_conf_change(cc(ConfChangeKind::AddVoter, 2));
    assert!(matches!(res, Err(ProposeError::LearnerNotCaughtUp { node: 2, matched: 0, .. })), "{res:?}");
    // The new, empty node refuses the probe; the leader backs up to its log's end, not to the
    // old membership's match.
    l.step(msg(
        2,
        1,
        t,
        Body::AppendResponse {
            index: add,
            reject: Some(RejectHint { conflict_term: None, conflict_index: 1 }),
        },
    ))
    .unwrap();
    assert_eq!(l.progress(2).map(|p| p.next), Some(1));
    let ms = msgs(&mut l);
    assert!(
        has(&ms, |m| m.to == 2 && matches!(m.body, Body::Append { prev_index: 0, .. })),
        "the whole log goes to the new node: {ms:?}"
    );
    // Its answer to that append counts.
    l.step(msg(2, 1, t, Body::AppendResponse { index: 4, reject: None })).unwrap();
    assert_eq!(l.progress(2).map(|p| p.matched), Some(4));
}

/// A leader whose log is compacted behind a snapshot of `state`, with learner 4 just added (its
/// first probes went out and are returned here, undelivered), and an empty learner 4.
fn leader_adding_a_learner_behind_a_snapshot(state: &'static [u8]) -> (Raft, Raft, Vec<Message>) {
    let cfg = RaftConfig { snapshot_chunk_bytes: 4, ..plain_config(1) };
    let mut l = make_leader(1, &V3, cfg);
    let t = l.term();
    for _ in 0..5 {
        l.propose(Bytes::from_static(b"x")).unwrap();
    }
    drain(&mut l);
    l.step(msg(2, 1, t, Body::AppendResponse { index: l.last_index(), reject: None })).unwrap();
    drain(&mut l);
    l.snapshot(l.applied(), Bytes::from_static(state)).unwrap();
    l.compact(l.applied()).unwrap();
    let add = l.propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
    let mut sent = msgs(&mut l);
    l.step(msg(2, 1, t, Body::AppendResponse { index: add, reject: None })).unwrap();
    sent.extend(msgs(&mut l));
    assert_eq!(l.commit_index(), add);
    let learner = Raft::new(plain_config(4), RestoredState::joining(), crate::rt::rng_from_seed(4)).unwrap();
    (l, learner, sent.into_iter().filter(|m| m.to == 4).collect())
}

/// Ticks leader `l` up to `ticks` times, carrying messages between it and learner `f` except
/// those `lose` picks (everything to other nodes is lost too); returns the ticks it took until
/// `f` installed a snapshot, if it did.
fn ticks_until_installed(
    l: &mut Raft,
    f: &mut Raft,
    ticks: u32,
    mut lose: impl FnMut(&Message) -> bool,
) -> Option<u32> {
    for tick in 1..=ticks {
        l.tick();
        let mut to_leader = Vec::new();
        for m in msgs(l).into_iter().filter(|m| m.to == 4 && !lose(m)) {
            f.step(m).unwrap();
            let rd = drain(f);
            to_leader.extend(rd.messages);
            if rd.snapshot.is_some() {
                return Some(tick);
            }
        }
        for m in to_leader.into_iter().filter(|m| !lose(m)) {
            l.step(m).unwrap();
        }
    }
    None
}

#[test]
fn test_6_a_learner_whose_probes_are_lost_is_probed_again_and_gets_the_snapshot() {
    // Found by sim seed 578593639392: a node removed and added back as a learner had its probes
    // (empty appends: the leader has no entry past the AddLearner) lost on a lossy link.
    // Heartbeats got through and unpaused the probe, but the leader sent another empty append
    // only when its commit index had moved, so the learner waited for the next client write —
    // five minutes — for the snapshot it needed.
    let (mut l, mut f, first_probes) = leader_adding_a_learner_behind_a_snapshot(b"the whole state");
    assert!(
        has(&first_probes, |m| matches!(m.body, Body::Append { .. })),
        "the learner was probed: {first_probes:?}"
    );
    let hb = plain_config(1).heartbeat_tick;
    // The probe the next commit index brings is lost too; after that nothing is lost.
    let mut lost = false;
    let lose = |m: &Message| matches!(m.body, Body::Append { .. }) && !std::mem::replace(&mut lost, true);
    let took = ticks_until_installed(&mut l, &mut f, 20 * hb, lose);
    // Probed again within a heartbeat round trip of the loss, then one tick per 4-byte chunk.
    let chunks = "the whole state".len().div_ceil(4) as u32;
    assert!(took.is_some_and(|t| t <= 3 * hb + chunks), "probed again at once: {took:?}");
    assert_eq!(f.latest_snapshot().map(|s| s.data.as_ref()), Some(&b"the whole state"[..]));
}

#[test]
fn test_7_a_lost_snapshot_chunk_is_sent_again_within_a_heartbeat_round_trip() {
    let (mut l, mut f, _lost) = leader_adding_a_learner_behind_a_snapshot(b"the whole state");
    let hb = plain_config(1).heartbeat_tick;
    // Every first copy of a chunk (and of its answer) is lost; each resend gets through.
    let mut seen = std::collections::BTreeSet::new();
    let lose = |m: &Message| match &m.body {
        Body::Snapshot { offset, .. } => seen.insert(("chunk", *offset)),
        Body::SnapshotResponse { next_offset, .. } => seen.insert(("answer", *next_offset)),
        _ => false,
    };
    let chunks = "the whole state".len().div_ceil(4) as u32;
    let took = ticks_until_installed(&mut l, &mut f, 40 * hb, lose);
    assert!(
        took.is_some_and(|t| t <= 2 * hb * (2 * chunks + 1)),
        "each loss costs at most a heartbeat round trip: {took:?}"
    );
    assert_eq!(f.latest_snapshot().map(|s| s.data.as_ref()), Some(&b"the whole state"[..]));
}

#[test]
fn test_6_add_and_promote_a_new_node_in_a_cluster() {
    let mut c = cluster(3, 31);
    let leader = c.wait_for_leader(200).unwrap();
    c.add_node(4, ConfState::default());
    let i = c.raft_mut(leader).propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
    c.process(leader);
    assert!(c.wait_applied_everywhere(i, 100));
    let i = c.raft_mut(leader).propose_conf_change(cc(ConfChangeKind::AddVoter, 4)).unwrap();
    c.process(leader);
    assert!(c.wait_applied_everywhere(i, 100));
    assert_eq!(c.raft(4).conf_state(), &ConfState::with_voters([1, 2, 3, 4]));
    // With four voters, two failures stop progress; the new voter counts towards quorums.
    let others: Vec<NodeId> = (1..=3).filter(|&x| x != leader).collect();
    c.crash(others[0]);
    let (_, j) = c.propose_and_commit(&b"with 4"[..], 100).expect("3 of 4 is a quorum");
    assert!(c.raft(4).commit_index() >= j || c.wait_applied_everywhere(j, 50));
}

#[test]
fn test_6_removing_the_leader_hands_over_and_the_rest_continue() {
    let mut c = cluster(3, 41);
    let leader = c.wait_for_leader(200).unwrap();
    let i = c.raft_mut(leader).propose_conf_change(cc(ConfChangeKind::Remove, leader)).unwrap();
    c.process(leader);
    let rest: Vec<NodeId> = (1..=3).filter(|&x| x != leader).collect();
    assert!(c.run_until(200, |c| { rest.iter().all(|&id| c.raft(id).commit_index() >= i) }));
    assert_ne!(c.raft(leader).role(), Role::Leader, "removed leader stepped down");
    let new_leader = c.wait_for_leader(200).expect("remaining voters elect a leader");
    assert!(rest.contains(&new_leader));
    assert_eq!(c.raft(new_leader).conf_state(), &ConfState::with_voters(rest.clone()));
    // The removed node never campaigns again.
    c.run_ticks(100);
    assert!(c.raft(leader).term() <= c.raft(new_leader).term());
    assert_ne!(c.raft(leader).role(), Role::Candidate);
    assert!(c.propose_and_commit(&b"after removal"[..], 100).is_some());
}

#[test]
fn test_6_leader_removed_by_an_uncommitted_entry_still_campaigns_to_finish_the_change() {
    // Dissertation §4.2.2. Found by the schedule property test: without this rule the cluster
    // deadlocks — the only node with the up-to-date log is not in its own latest configuration.
    let mut c = cluster(3, 43);
    let leader = c.wait_for_leader(200).unwrap();
    let rest: Vec<NodeId> = (1..=3).filter(|&x| x != leader).collect();
    let (a, b) = (rest[0], rest[1]);
    let i = c.raft_mut(leader).propose_conf_change(cc(ConfChangeKind::Remove, b)).unwrap();
    c.process(leader);
    assert!(c.run_until(100, |c| c.raft(a).commit_index() >= i && c.raft(leader).commit_index() >= i));
    c.crash(b);
    // The leader appends its own removal but nobody receives it.
    c.isolate(leader);
    c.raft_mut(leader).propose_conf_change(cc(ConfChangeKind::Remove, leader)).unwrap();
    c.process(leader);
    assert_eq!(c.raft(leader).conf_state(), &ConfState::with_voters([a]));
    c.run_ticks(40);
    assert_ne!(c.raft(leader).role(), Role::Leader, "check-quorum deposed it");
    c.heal();
    // `a` cannot win alone in its configuration {leader, a}: the old leader's log is more
    // up to date. The old leader campaigns, is elected by `a`, commits its removal and leaves.
    assert!(
        c.run_until(400, |c| c.leader() == Some(a) && c.raft(a).conf_state() == &ConfState::with_voters([a]))
    );
    assert!(c.propose_and_commit(&b"after"[..], 100).is_some());
}

// ---------------------------------------------------------------------------------------------
// Leadership transfer
// ---------------------------------------------------------------------------------------------

#[test]
fn test_transfer_sends_timeout_now_to_a_caught_up_target_which_wins() {
    let mut c = cluster(3, 51);
    let leader = c.wait_for_leader(200).unwrap();
    c.propose_and_commit(&b"x"[..], 100).unwrap();
    let target = (1..=3).find(|&i| i != leader).unwrap();
    let term = c.raft(leader).term();
    c.raft_mut(leader).transfer_leader(target).unwrap();
    assert!(
        matches!(c.raft_mut(leader).propose(Bytes::new()), Err(ProposeError::TransferInProgress { to }) if to == target)
    );
    c.process(leader);
    c.deliver();
    assert_eq!(c.leader(), Some(target), "target won without waiting for a timeout");
    assert_eq!(c.raft(target).term(), term + 1);
}

#[test]
fn test_transfer_to_a_lagging_target_waits_until_it_caught_up() {
    let mut l = make_leader(1, &V3, plain_config(1));
    let t = l.term();
    l.step(msg(2, 1, t, Body::AppendResponse { index: 1, reject: None })).unwrap();
    drain(&mut l);
    l.transfer_leader(3).unwrap();
    assert!(!has(&msgs(&mut l), |m| m.body == Body::TimeoutNow), "3 has nothing yet");
    l.step(msg(3, 1, t, Body::AppendResponse { index: 1, reject: None })).unwrap();
    assert!(has(&msgs(&mut l), |m| m.to == 3 && m.body == Body::TimeoutNow));
}

#[test]
fn test_transfer_is_abandoned_after_an_election_timeout() {
    let cfg = plain_config(1);
    let mut l = make_leader(1, &V3, cfg.clone());
    l.transfer_leader(3).unwrap();
    assert!(l.propose(Bytes::new()).is_err());
    for _ in 0..cfg.election_tick {
        l.tick();
    }
    assert_eq!(l.transferee(), None);
    assert!(l.propose(Bytes::new()).is_ok(), "proposals accepted again");
}

#[test]
fn test_graceful_shutdown_of_the_leader_through_transfer() {
    let mut c = cluster(5, 61);
    let leader = c.wait_for_leader(200).unwrap();
    let (_, i) = c.propose_and_commit(&b"before"[..], 100).unwrap();
    c.wait_applied_everywhere(i, 100);
    let target = (1..=5).find(|&x| x != leader).unwrap();
    c.raft_mut(leader).transfer_leader(target).unwrap();
    c.process(leader);
    assert!(c.run_until(20, |c| c.leader() == Some(target)));
    c.crash(leader);
    let start = c.now();
    let (l2, _) = c.propose_and_commit(&b"after"[..], 100).expect("new leader serves at once");
    assert_eq!(l2, target);
    assert!(c.now() - start < 5, "no election timeout was needed");
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

#[test]
fn test_read_index_waits_for_a_quorum_heartbeat_round() {
    let mut l = make_leader(1, &V3, plain_config(1));
    let t = l.term();
    l.step(msg(2, 1, t, Body::AppendResponse { index: 1, reject: None })).unwrap();
    drain(&mut l);
    l.read_index(42).unwrap();
    let rd = drain(&mut l);
    assert!(rd.read_states.is_empty(), "not before a quorum confirms leadership");
    let round = rd
        .messages
        .iter()
        .find_map(|m| match m.body {
            Body::Heartbeat { round, .. } => Some(round),
            _ => None,
        })
        .unwrap();
    l.step(msg(2, 1, t, Body::HeartbeatResponse { round: round - 1 })).unwrap();
    assert!(drain(&mut l).read_states.is_empty(), "an older round does not confirm a newer read");
    l.step(msg(2, 1, t, Body::HeartbeatResponse { round })).unwrap();
    assert_eq!(drain(&mut l).read_states, vec![ReadState { ctx: 42, index: 1 }]);
}

#[test]
fn test_read_index_before_the_first_commit_of_the_term_waits_for_it() {
    let mut l = make_leader(1, &V3, plain_config(1));
    let t = l.term();
    l.read_index(7).unwrap();
    l.step(msg(2, 1, t, Body::HeartbeatResponse { round: 0 })).unwrap();
    assert!(drain(&mut l).read_states.is_empty());
    l.step(msg(2, 1, t, Body::AppendResponse { index: 1, reject: None })).unwrap();
    let round = msgs(&mut l).iter().find_map(|m| match m.body {
        Body::Heartbeat { round, .. } => Some(round),
        _ => None,
    });
    l.step(msg(2, 1, t, Body::HeartbeatResponse { round: round.expect("read round sent after the commit") }))
        .unwrap();
    assert_eq!(drain(&mut l).read_states, vec![ReadState { ctx: 7, index: 1 }]);
}

#[test]
fn test_read_index_on_a_follower_is_forwarded_to_the_leader() {
    let mut c = cluster(3, 71);
    let leader = c.wait_for_leader(200).unwrap();
    let (_, i) = c.propose_and_commit(&b"x"[..], 100).unwrap();
    let f = (1..=3).find(|&x| x != leader).unwrap();
    c.raft_mut(f).read_index(99).unwrap();
    c.process(f);
    assert!(c.run_until(20, |c| !c.nodes[&f].reads.is_empty()));
    let rs = c.nodes[&f].reads[0];
    assert_eq!(rs.ctx, 99);
    assert!(rs.index >= i);
    let mut lonely = new_raft(1, &V3, RaftConfig::new(1));
    assert_eq!(lonely.read_index(1), Err(ProposeError::NotLeader { leader: None }));
}

fn lease_config(id: NodeId) -> RaftConfig {
    RaftConfig {
        read_only: ReadOnlyOption::LeaseBased { max_clock_drift_ppm: 100_000 },
        pre_vote: false,
        ..RaftConfig::new(id)
    }
}

#[test]
fn test_lease_read_is_served_without_a_round_trip_only_within_the_lease() {
    let cfg = lease_config(1);
    let mut l = make_leader(1, &V3, cfg.clone());
    let t = l.term();
    l.step(msg(2, 1, t, Body::AppendResponse { index: 1, reject: None })).unwrap();
    drain(&mut l);
    // Renew the lease: a heartbeat round acknowledged by a quorum.
    for _ in 0..cfg.heartbeat_tick {
        l.tick();
    }
    let round = msgs(&mut l)
        .iter()
        .find_map(|m| match m.body {
            Body::Heartbeat { round, .. } => Some(round),
            _ => None,
        })
        .unwrap();
    l.step(msg(2, 1, t, Body::HeartbeatResponse { round })).unwrap();
    drain(&mut l);
    l.read_index(1).unwrap();
    let rd = drain(&mut l);
    assert_eq!(rd.read_states, vec![ReadState { ctx: 1, index: 1 }], "served at once");
    assert!(!has(&rd.messages, |m| matches!(m.body, Body::Heartbeat { .. })));
    // Past the lease (election timeout shortened by the drift bound), reads need a round again.
    // Ticks are delivered without acknowledgements, so the lease is not renewed.
    for _ in 0..cfg.lease_ticks().unwrap() {
        l.tick();
    }
    drain(&mut l);
    l.read_index(2).unwrap();
    assert!(drain(&mut l).read_states.is_empty(), "lease expired: wait for a quorum round");
}

#[test]
fn test_lease_reads_are_off_once_leadership_transfer_started() {
    let cfg = lease_config(1);
    let mut l = make_leader(1, &V3, cfg.clone());
    let t = l.term();
    for f in [2, 3] {
        l.step(msg(f, 1, t, Body::AppendResponse { index: 1, reject: None })).unwrap();
    }
    for _ in 0..cfg.heartbeat_tick {
        l.tick();
    }
    let round = msgs(&mut l)
        .iter()
        .find_map(|m| match m.body {
            Body::Heartbeat { round, .. } => Some(round),
            _ => None,
        })
        .unwrap();
    l.step(msg(2, 1, t, Body::HeartbeatResponse { round })).unwrap();
    drain(&mut l);
    l.transfer_leader(3).unwrap();
    drain(&mut l);
    l.read_index(5).unwrap();
    assert!(drain(&mut l).read_states.is_empty(), "the transferee may already lead: no lease");
}

#[test]
fn test_lease_mode_restarted_node_refuses_votes_for_one_election_timeout() {
    // A node without a configuration never campaigns, so ticking it only moves its timer.
    let cfg = lease_config(1);
    let vote = Body::Vote { pre_vote: false, last_index: 0, last_term: 0, transfer: false };
    let mut f = Raft::new(cfg.clone(), RestoredState::joining(), crate::rt::rng_from_seed(1)).unwrap();
    for _ in 0..cfg.election_tick - 1 {
        f.tick();
    }
    f.step(msg(2, 1, 1, vote.clone())).unwrap();
    assert_eq!(f.vote(), None, "it may have been in a leader's lease before it restarted");
    f.tick();
    f.step(msg(2, 1, 1, vote.clone())).unwrap();
    assert_eq!(f.vote(), Some(2), "after an election timeout it votes again");
    // In safe mode there is no lease to protect: it votes at once.
    let mut g = Raft::new(RaftConfig::new(1), RestoredState::joining(), crate::rt::rng_from_seed(1)).unwrap();
    g.step(msg(2, 1, 1, vote)).unwrap();
    assert_eq!(g.vote(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Input robustness and driver contract
// ---------------------------------------------------------------------------------------------

#[test]
fn test_foreign_and_malformed_messages_are_refused_with_typed_errors() {
    let mut f = new_raft(1, &V3, plain_config(1));
    assert_eq!(f.step(msg(2, 9, 1, Body::TimeoutNow)), Err(RaftError::WrongRecipient { to: 9, id: 1 }));
    assert_eq!(f.step(msg(1, 1, 1, Body::TimeoutNow)), Err(RaftError::InvalidSender(1)));
    assert_eq!(f.step(msg(0, 1, 1, Body::TimeoutNow)), Err(RaftError::InvalidSender(0)));
    let gap = Body::Append { prev_index: 0, prev_term: 0, entries: vec![ent(2, 1)], commit: 0 };
    assert!(matches!(f.step(msg(2, 1, 1, gap)), Err(RaftError::Malformed { .. })));
    let future = Body::Append { prev_index: 0, prev_term: 0, entries: vec![ent(1, 7)], commit: 0 };
    assert!(matches!(f.step(msg(2, 1, 1, future)), Err(RaftError::Malformed { .. })));
    let bad_cc = Entry { term: 1, index: 1, kind: EntryKind::ConfChange, data: Bytes::from_static(&[9, 9]) };
    let bad = Body::Append { prev_index: 0, prev_term: 0, entries: vec![bad_cc], commit: 0 };
    assert!(matches!(f.step(msg(2, 1, 1, bad)), Err(RaftError::Malformed { .. })));
    let overflow = Body::Append { prev_index: u64::MAX, prev_term: 0, entries: vec![], commit: u64::MAX };
    assert!(f.step(msg(2, 1, 1, overflow)).is_err());
    assert_eq!(f.last_index(), 0);
}

#[test]
#[should_panic(expected = "between ready() and advance()")]
fn test_driving_the_core_between_ready_and_advance_is_refused() {
    let mut r = new_raft(1, &V3, plain_config(1));
    tick_until_campaign(&mut r, 100);
    let _rd = r.ready();
    r.tick();
}

#[test]
fn test_restore_refuses_inconsistent_persisted_state() {
    let restored = |hs: HardState, entries: Vec<Entry>| RestoredState {
        hard_state: hs,
        entries,
        ..RestoredState::bootstrap(V3)
    };
    let new = |r| Raft::new(RaftConfig::new(1), r, crate::rt::rng_from_seed(1));
    assert!(matches!(
        new(restored(HardState { term: 1, vote: None, commit: 3 }, vec![ent(1, 1)])),
        Err(InitError::Restore(_))
    ));
    assert!(matches!(
        new(restored(HardState { term: 1, vote: None, commit: 0 }, vec![ent(2, 1)])),
        Err(InitError::Restore(_))
    ));
    assert!(matches!(
        new(restored(HardState { term: 1, vote: None, commit: 0 }, vec![ent(1, 2)])),
        Err(InitError::Restore(_))
    ));
    assert!(
        new(restored(HardState { term: 2, vote: Some(1), commit: 1 }, vec![ent(1, 1), ent(2, 2)])).is_ok()
    );
}

#[test]
fn test_learner_stops_trusting_a_silent_leader_and_answers_vote_requests() {
    // Found by the schedule property test: a learner reset its timer at every timeout and kept its
    // old leader, so with check-quorum it ignored vote requests forever (it looked in-lease) and
    // a configuration that needed its vote could never elect a leader.
    let cfg = RaftConfig { pre_vote: false, ..RaftConfig::new(3) };
    let mut learner = Raft::new(cfg.clone(), RestoredState::joining(), crate::rt::rng_from_seed(3)).unwrap();
    learner.step(msg(2, 3, 1, Body::Heartbeat { commit: 0, round: 0 })).unwrap();
    assert_eq!(learner.leader_id(), Some(2));
    for _ in 0..2 * cfg.election_tick {
        learner.tick();
    }
    assert_eq!(learner.leader_id(), None, "the silent leader is forgotten");
    learner
        .step(msg(2, 3, 2, Body::Vote { pre_vote: false, last_index: 5, last_term: 1, transfer: false }))
        .unwrap();
    assert_eq!(learner.vote(), Some(2), "and vote requests are answered again");
}

#[test]
fn test_persistence_a_vote_is_handed_out_for_persisting_with_the_response_that_depends_on_it() {
    let mut f = new_raft(1, &V3, plain_config(1));
    f.step(msg(2, 1, 4, Body::Vote { pre_vote: false, last_index: 0, last_term: 0, transfer: false }))
        .unwrap();
    let rd = f.ready();
    assert_eq!(rd.hard_state, Some(HardState { term: 4, vote: Some(2), commit: 0 }));
    assert!(has(&rd.messages, |m| m.body == Body::VoteResponse { pre_vote: false, granted: true }));
    f.advance();
    // Nothing is handed out twice.
    assert!(!f.has_ready());
}

#[test]
fn test_lost_pipelined_appends_fall_back_to_probing_after_a_silent_heartbeat_interval() {
    let mut l = make_leader(1, &V3, plain_config(1));
    let t = l.term();
    l.step(msg(2, 1, t, Body::AppendResponse { index: 1, reject: None })).unwrap();
    drain(&mut l);
    l.propose(Bytes::from_static(b"lost")).unwrap();
    drain(&mut l); // the append to 2 is lost
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Replicate);
    l.step(msg(2, 1, t, Body::HeartbeatResponse { round: 0 })).unwrap();
    assert_eq!(
        l.progress(2).unwrap().state,
        ProgressState::Replicate,
        "one heartbeat answer may simply have overtaken the append's acknowledgement"
    );
    l.step(msg(2, 1, t, Body::HeartbeatResponse { round: 0 })).unwrap();
    assert_eq!(
        l.progress(2).unwrap().state,
        ProgressState::Probe,
        "no progress between two heartbeat answers"
    );
    let ms = msgs(&mut l);
    assert!(has(&ms, |m| m.to == 2
        && matches!(&m.body, Body::Append { prev_index: 1, entries, .. } if entries.len() == 1)));
}

#[test]
fn test_report_unreachable_stops_pipelining_to_a_follower() {
    let mut l = make_leader(1, &V3, plain_config(1));
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 1, reject: None })).unwrap();
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Replicate);
    drain(&mut l);
    l.report_unreachable(2);
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Probe);
}

// ---------------------------------------------------------------------------------------------
// Catching up the data of an installed snapshot
// ---------------------------------------------------------------------------------------------

#[test]
fn test_a_catching_up_follower_appends_and_votes_but_neither_applies_nor_campaigns() {
    let mut f = new_raft(1, &V3, RaftConfig { pre_vote: false, ..RaftConfig::new(1) });
    f.set_catching_up(true);
    let entries = vec![ent(1, 1), ent(2, 1)];
    f.step(msg(2, 1, 1, Body::Append { prev_index: 0, prev_term: 0, entries, commit: 2 })).unwrap();
    let rd = drain(&mut f);
    assert_eq!(rd.entries.len(), 2, "entries are still appended");
    assert!(rd.committed_entries.is_empty(), "nothing is handed out for applying");
    assert!(has(&rd.messages, |m| matches!(m.body, Body::AppendResponse { reject: None, .. })));
    assert_eq!((f.commit_index(), f.applied()), (2, 0));
    // It never campaigns, not even when told to (TimeoutNow), but still grants a vote.
    for _ in 0..100 {
        f.tick();
    }
    f.step(msg(2, 1, 1, Body::TimeoutNow)).unwrap();
    assert_eq!(f.role(), Role::Follower);
    let vote = Body::Vote { pre_vote: false, last_index: 2, last_term: 1, transfer: false };
    f.step(msg(3, 1, 2, vote)).unwrap();
    assert!(has(&msgs(&mut f), |m| matches!(m.body, Body::VoteResponse { granted: true, .. })));
    // Once caught up, applying resumes where it stopped.
    f.set_catching_up(false);
    let rd = drain(&mut f);
    assert_eq!(rd.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(f.applied(), 2);
    tick_until_campaign(&mut f, 100);
    assert_ne!(f.role(), Role::Follower, "and it campaigns again");
}

#[test]
fn test_installing_a_snapshot_holds_back_what_follows_until_its_data_is_complete() {
    let mut f = new_raft(2, &V3, plain_config(2));
    f.set_catch_up_on_install(true);
    let meta = SnapshotMeta { index: 5, term: 1, conf_state: ConfState::with_voters(V3) };
    f.step(msg(1, 2, 1, Body::Snapshot { meta, offset: 0, data: Bytes::from_static(b"s"), done: true }))
        .unwrap();
    // Entries after it arrive and commit before the driver took the snapshot's Ready.
    let entries = vec![ent(6, 1), ent(7, 1)];
    f.step(msg(1, 2, 1, Body::Append { prev_index: 5, prev_term: 1, entries, commit: 7 })).unwrap();
    assert!(f.is_catching_up());
    let rd = drain(&mut f);
    assert!(rd.snapshot.is_some());
    assert!(rd.committed_entries.is_empty(), "nothing after the snapshot is applied yet");
    assert_eq!((f.commit_index(), f.applied()), (7, 5));
    f.set_catching_up(false);
    assert_eq!(drain(&mut f).committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![6, 7]);
}

/// Seeds 718 and 3000002558 (found the same day by two sweeps): the driver finished pulling an
/// older install's data after the core had installed a newer snapshot but before the driver took it; clearing the mode then let the entries after
/// the newer snapshot apply onto a state that lacked its data, and the member's topics diverged.
#[test]
fn test_a_newer_install_keeps_catching_up_when_an_older_pull_ends() {
    let mut f = new_raft(2, &V3, plain_config(2));
    f.set_catch_up_on_install(true);
    let snap = |index| Body::Snapshot {
        meta: SnapshotMeta { index, term: 1, conf_state: ConfState::with_voters(V3) },
        offset: 0,
        data: Bytes::from_static(b"s"),
        done: true,
    };
    f.step(msg(1, 2, 1, snap(5))).unwrap();
    assert!(drain(&mut f).snapshot.is_some(), "the driver took the first install");
    f.step(msg(1, 2, 1, snap(9))).unwrap();
    let entries = vec![ent(10, 1), ent(11, 1)];
    f.step(msg(1, 2, 1, Body::Append { prev_index: 9, prev_term: 1, entries, commit: 11 })).unwrap();
    // The pull of snapshot 5 ends now: the driver clears the mode.
    f.set_catching_up(false);
    assert!(f.is_catching_up(), "snapshot 9 still waits for its data");
    let rd = drain(&mut f);
    assert_eq!(rd.snapshot.map(|s| s.meta.index), Some(9));
    assert!(rd.committed_entries.is_empty(), "nothing after snapshot 9 is applied yet");
    f.set_catching_up(false);
    assert_eq!(drain(&mut f).committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![10, 11]);
}
