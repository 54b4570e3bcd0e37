//! One test per rule of the Raft paper's §5 (and §6 membership in `features`), driving single
//! cores by hand, in the spirit of etcd's raft paper tests.

use super::harness::*;

const V3: [NodeId; 3] = [1, 2, 3];

fn has(ms: &[Message], pred: impl Fn(&Message) -> bool) -> bool {
    ms.iter().any(pred)
}

// ---------------------------------------------------------------------------------------------
// §5.1 terms
// ---------------------------------------------------------------------------------------------

#[test]
fn test_5_1_follower_candidate_and_leader_adopt_a_higher_term_and_become_follower() {
    // Follower.
    let mut f = new_raft(1, &V3, plain_config(1));
    f.step(msg(2, 1, 5, Body::Heartbeat { commit: 0, round: 0 })).unwrap();
    assert_eq!((f.term(), f.role(), f.leader_id()), (5, Role::Follower, Some(2)));
    // Candidate.
    let mut c = new_raft(1, &V3, plain_config(1));
    tick_until_campaign(&mut c, 100);
    assert_eq!(c.role(), Role::Candidate);
    c.step(msg(3, 1, 9, Body::Append { prev_index: 0, prev_term: 0, entries: vec![], commit: 0 })).unwrap();
    assert_eq!((c.term(), c.role(), c.leader_id()), (9, Role::Follower, Some(3)));
    // Leader.
    let mut l = make_leader(1, &V3, plain_config(1));
    l.step(msg(2, 1, l.term() + 1, Body::AppendResponse { index: 0, reject: None })).unwrap();
    assert_eq!(l.role(), Role::Follower);
    assert_eq!(l.vote(), None, "a new term starts without a vote");
}

#[test]
fn test_5_1_requests_with_a_stale_term_are_rejected() {
    let mut f = raft_with_log(1, &V3, plain_config(1), &[1], 3);
    f.step(msg(2, 1, 2, Body::Append { prev_index: 1, prev_term: 1, entries: vec![ent(2, 2)], commit: 1 }))
        .unwrap();
    assert_eq!(f.last_index(), 1, "a stale leader's entries are not accepted");
    f.step(msg(2, 1, 2, Body::Vote { pre_vote: false, last_index: 5, last_term: 2, transfer: false }))
        .unwrap();
    assert_eq!(f.vote(), None, "a stale candidate gets no vote");
    assert_eq!(f.term(), 3);
}

// ---------------------------------------------------------------------------------------------
// §5.2 leader election
// ---------------------------------------------------------------------------------------------

#[test]
fn test_5_2_follower_starts_election_after_timeout_and_votes_for_itself() {
    let mut r = new_raft(1, &V3, plain_config(1));
    let timeout = r.randomized_election_timeout();
    for _ in 0..timeout - 1 {
        r.tick();
    }
    assert_eq!(r.role(), Role::Follower, "no election before the timeout");
    r.tick();
    assert_eq!((r.role(), r.term(), r.vote()), (Role::Candidate, 1, Some(1)));
    let rd = drain(&mut r);
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, Some(1))), "term and vote are persisted");
    let votes: Vec<NodeId> = rd
        .messages
        .iter()
        .filter(|m| matches!(m.body, Body::Vote { pre_vote: false, .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(votes, vec![2, 3]);
}

#[test]
fn test_5_2_candidate_wins_with_a_majority_and_loses_without() {
    let mut r = new_raft(1, &[1, 2, 3, 4, 5], plain_config(1));
    tick_until_campaign(&mut r, 100);
    drain(&mut r);
    r.step(msg(2, 1, 1, Body::VoteResponse { pre_vote: false, granted: true })).unwrap();
    assert_eq!(r.role(), Role::Candidate, "2 of 5 is not a majority");
    r.step(msg(3, 1, 1, Body::VoteResponse { pre_vote: false, granted: true })).unwrap();
    assert_eq!(r.role(), Role::Leader);

    let mut r = new_raft(1, &[1, 2, 3, 4, 5], plain_config(1));
    tick_until_campaign(&mut r, 100);
    for v in [2, 3, 4] {
        r.step(msg(v, 1, 1, Body::VoteResponse { pre_vote: false, granted: false })).unwrap();
    }
    assert_eq!(r.role(), Role::Follower, "a candidate refused by a majority gives up");
}

#[test]
fn test_5_2_follower_votes_at_most_once_per_term_first_come_first_served() {
    let mut r = new_raft(1, &V3, plain_config(1));
    r.step(msg(2, 1, 1, Body::Vote { pre_vote: false, last_index: 0, last_term: 0, transfer: false }))
        .unwrap();
    r.step(msg(3, 1, 1, Body::Vote { pre_vote: false, last_index: 0, last_term: 0, transfer: false }))
        .unwrap();
    let ms = msgs(&mut r);
    assert!(has(&ms, |m| m.to == 2 && m.body == Body::VoteResponse { pre_vote: false, granted: true }));
    assert!(has(&ms, |m| m.to == 3 && m.body == Body::VoteResponse { pre_vote: false, granted: false }));
    assert_eq!(r.vote(), Some(2));
    // The same candidate asking again (a retransmission) gets the vote again.
    r.step(msg(2, 1, 1, Body::Vote { pre_vote: false, last_index: 0, last_term: 0, transfer: false }))
        .unwrap();
    assert!(
        has(&msgs(&mut r), |m| m.to == 2 && m.body == Body::VoteResponse { pre_vote: false, granted: true })
    );
}

#[test]
fn test_5_2_candidate_steps_down_when_a_leader_of_its_term_appends() {
    let mut r = new_raft(1, &V3, plain_config(1));
    tick_until_campaign(&mut r, 100);
    let term = r.term();
    r.step(msg(2, 1, term, Body::Append { prev_index: 0, prev_term: 0, entries: vec![], commit: 0 }))
        .unwrap();
    assert_eq!((r.role(), r.term(), r.leader_id()), (Role::Follower, term, Some(2)));
}

#[test]
fn test_5_2_split_vote_leads_to_a_new_election_in_a_higher_term() {
    let mut r = new_raft(1, &V3, plain_config(1));
    tick_until_campaign(&mut r, 100);
    assert_eq!(r.term(), 1);
    tick_until_campaign(&mut r, 100); // still a candidate: tick until the next timeout
    for _ in 0..40 {
        r.tick();
    }
    assert!(r.term() > 1, "an undecided election times out and starts again");
    assert_eq!(r.role(), Role::Candidate);
}

#[test]
fn test_5_2_election_timeouts_are_randomized_within_one_to_two_timeouts() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..50 {
        let cfg = plain_config(1);
        let r = Raft::new(cfg.clone(), RestoredState::bootstrap([1, 2, 3]), crate::rt::rng_from_seed(seed))
            .unwrap();
        let t = r.randomized_election_timeout();
        assert!((cfg.election_tick..2 * cfg.election_tick).contains(&t));
        seen.insert(t);
    }
    assert!(seen.len() > 3, "timeouts must differ between nodes: {seen:?}");
}

#[test]
fn test_5_2_leader_sends_heartbeats_every_heartbeat_tick() {
    let cfg = plain_config(1);
    let mut l = make_leader(1, &V3, cfg.clone());
    for _ in 0..cfg.heartbeat_tick - 1 {
        l.tick();
    }
    assert!(!has(&msgs(&mut l), |m| matches!(m.body, Body::Heartbeat { .. })));
    l.tick();
    let beats: Vec<NodeId> =
        msgs(&mut l).iter().filter(|m| matches!(m.body, Body::Heartbeat { .. })).map(|m| m.to).collect();
    assert_eq!(beats, vec![2, 3]);
}

#[test]
fn test_5_2_heartbeat_resets_the_followers_election_timer() {
    let mut r = new_raft(1, &V3, plain_config(1));
    for _ in 0..100 {
        r.tick();
        r.step(msg(2, 1, 1, Body::Heartbeat { commit: 0, round: 0 })).unwrap();
    }
    assert_eq!(r.role(), Role::Follower, "a follower hearing from its leader never campaigns");
}

// ---------------------------------------------------------------------------------------------
// §5.3 log replication
// ---------------------------------------------------------------------------------------------

#[test]
fn test_5_3_leader_appends_a_proposal_to_its_log_and_replicates_it() {
    let mut l = make_leader(1, &V3, plain_config(1));
    // Followers acknowledge the no-op, which moves them from probing to pipelined replication.
    for f in [2, 3] {
        l.step(msg(f, 1, l.term(), Body::AppendResponse { index: 1, reject: None })).unwrap();
    }
    drain(&mut l);
    let index = l.propose(Bytes::from_static(b"a")).unwrap();
    assert_eq!(index, 2, "after the no-op");
    let rd = drain(&mut l);
    assert!(rd.entries.iter().any(|e| e.index == 2 && e.data == Bytes::from_static(b"a")), "persisted first");
    for to in [2, 3] {
        assert!(has(&rd.messages, |m| m.to == to
            && matches!(&m.body, Body::Append { entries, .. } if entries.iter().any(|e| e.index == 2))));
    }
}

#[test]
fn test_5_3_follower_rejects_append_when_prev_entry_mismatches() {
    let mut f = raft_with_log(1, &V3, plain_config(1), &[1, 1, 2], 3);
    f.step(msg(2, 1, 3, Body::Append { prev_index: 3, prev_term: 3, entries: vec![ent(4, 3)], commit: 0 }))
        .unwrap();
    assert_eq!(f.last_index(), 3);
    let ms = msgs(&mut f);
    assert!(has(&ms, |m| matches!(m.body, Body::AppendResponse { index: 3, reject: Some(_) })));
    // A missing previous entry is refused too, with a hint at our log's end.
    f.step(msg(2, 1, 3, Body::Append { prev_index: 7, prev_term: 3, entries: vec![ent(8, 3)], commit: 0 }))
        .unwrap();
    let ms = msgs(&mut f);
    assert!(has(&ms, |m| m.body
        == Body::AppendResponse {
            index: 7,
            reject: Some(RejectHint { conflict_term: None, conflict_index: 4 })
        }));
}

#[test]
fn test_5_3_follower_deletes_conflicting_entries_and_appends_new_ones() {
    let mut f = raft_with_log(1, &V3, plain_config(1), &[1, 1, 2, 2], 3);
    f.step(msg(2, 1, 3, Body::Append { prev_index: 2, prev_term: 1, entries: vec![ent(3, 3)], commit: 0 }))
        .unwrap();
    assert_eq!((f.last_index(), f.term_at(3)), (3, Some(3)));
    let rd = drain(&mut f);
    assert_eq!(rd.entries, vec![ent(3, 3)], "the driver is told to overwrite from index 3");
}

#[test]
fn test_5_3_follower_keeps_entries_already_present_when_an_old_append_arrives() {
    let mut f = raft_with_log(1, &V3, plain_config(1), &[1, 1, 1, 1], 1);
    // A delayed append carrying only entries 2..=3 must not truncate entry 4.
    f.step(msg(
        2,
        1,
        1,
        Body::Append { prev_index: 1, prev_term: 1, entries: vec![ent(2, 1), ent(3, 1)], commit: 0 },
    ))
    .unwrap();
    assert_eq!(f.last_index(), 4);
    assert!(has(&msgs(&mut f), |m| m.body == Body::AppendResponse { index: 3, reject: None }));
}

#[test]
fn test_5_3_leader_commits_on_majority_and_followers_learn_the_commit_index() {
    let mut l = make_leader(1, &V3, plain_config(1));
    drain(&mut l);
    assert_eq!(l.commit_index(), 0);
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 1, reject: None })).unwrap();
    assert_eq!(l.commit_index(), 1, "leader + one follower is a majority of three");
    let rd = drain(&mut l);
    assert_eq!(rd.committed_entries.len(), 1);
    // The commit index reaches followers in the next append.
    assert!(has(&rd.messages, |m| matches!(m.body, Body::Append { commit: 1, .. })));

    let mut f = new_raft(2, &V3, plain_config(2));
    f.step(msg(1, 2, 1, Body::Append { prev_index: 0, prev_term: 0, entries: vec![ent(1, 1)], commit: 0 }))
        .unwrap();
    drain(&mut f);
    f.step(msg(1, 2, 1, Body::Append { prev_index: 1, prev_term: 1, entries: vec![], commit: 1 })).unwrap();
    assert_eq!(f.commit_index(), 1);
    assert_eq!(drain(&mut f).committed_entries, vec![ent(1, 1)]);
}

#[test]
fn test_5_3_follower_commit_never_passes_the_last_entry_it_got_from_this_append() {
    let mut f = raft_with_log(1, &V3, plain_config(1), &[1, 1, 1, 1], 2);
    // Leader commit is 4 but it only vouched for entries up to 2 (entries 3, 4 may be stale).
    f.step(msg(2, 1, 2, Body::Append { prev_index: 1, prev_term: 1, entries: vec![ent(2, 1)], commit: 4 }))
        .unwrap();
    assert_eq!(f.commit_index(), 2);
}

#[test]
fn test_5_3_leader_never_overwrites_or_deletes_its_own_log() {
    let mut l = raft_with_log(1, &V3, plain_config(1), &[1, 1, 1], 1);
    tick_until_campaign(&mut l, 100);
    l.step(msg(2, 1, l.term(), Body::VoteResponse { pre_vote: false, granted: true })).unwrap();
    assert_eq!(l.role(), Role::Leader);
    let before: Vec<Entry> = l.entries().to_vec();
    drain(&mut l);
    // Followers with shorter and conflicting logs answer; the leader only moves its pointers.
    l.step(msg(
        2,
        1,
        l.term(),
        Body::AppendResponse {
            index: 3,
            reject: Some(RejectHint { conflict_term: None, conflict_index: 1 }),
        },
    ))
    .unwrap();
    l.step(msg(
        3,
        1,
        l.term(),
        Body::AppendResponse {
            index: 3,
            reject: Some(RejectHint { conflict_term: Some(1), conflict_index: 1 }),
        },
    ))
    .unwrap();
    drain(&mut l);
    assert_eq!(&l.entries()[..before.len()], &before[..], "leader log is append-only");
    // A leader that receives an append of its own term refuses it rather than truncating.
    let res = l.step(msg(
        2,
        1,
        l.term(),
        Body::Append { prev_index: 0, prev_term: 0, entries: vec![ent(1, l.term())], commit: 0 },
    ));
    assert!(matches!(res, Err(RaftError::Malformed { .. })));
    assert_eq!(&l.entries()[..before.len()], &before[..]);
}

#[test]
fn test_5_3_leader_retries_with_a_lower_next_index_after_rejection() {
    let mut l = raft_with_log(1, &V3, plain_config(1), &[1, 1, 1], 1);
    tick_until_campaign(&mut l, 100);
    l.step(msg(2, 1, l.term(), Body::VoteResponse { pre_vote: false, granted: true })).unwrap();
    drain(&mut l);
    // Follower 3 has only entry 1.
    l.step(msg(
        3,
        1,
        l.term(),
        Body::AppendResponse {
            index: 3,
            reject: Some(RejectHint { conflict_term: None, conflict_index: 2 }),
        },
    ))
    .unwrap();
    let ms = msgs(&mut l);
    assert!(has(&ms, |m| m.to == 3
        && matches!(&m.body, Body::Append { prev_index: 1, prev_term: 1, entries, .. } if entries.len() == 3)));
}

#[test]
fn test_5_3_fast_backtracking_skips_a_whole_conflicting_term_per_round_trip() {
    // Leader log: terms 1,1,4,4,4 + its no-op (term 5). Follower: 1,1,2,2,2,2,2 (stale term 2).
    let mut l = raft_with_log(1, &V3, plain_config(1), &[1, 1, 4, 4, 4], 4);
    tick_until_campaign(&mut l, 100);
    l.step(msg(2, 1, l.term(), Body::VoteResponse { pre_vote: false, granted: true })).unwrap();
    let mut f = raft_with_log(3, &V3, plain_config(3), &[1, 1, 2, 2, 2, 2, 2], 4);
    let mut rounds = 0;
    // The new leader probes at its old last index (5) with its no-op.
    let mut pending: Vec<Message> =
        msgs(&mut l).into_iter().filter(|m| m.to == 3 && matches!(m.body, Body::Append { .. })).collect();
    assert_eq!(pending.len(), 1);
    while let Some(m) = pending.pop() {
        rounds += 1;
        assert!(rounds < 10, "backtracking did not converge");
        f.step(m).unwrap();
        for resp in msgs(&mut f) {
            let done = matches!(resp.body, Body::AppendResponse { reject: None, .. });
            l.step(resp).unwrap();
            if done {
                continue;
            }
            pending.extend(
                msgs(&mut l).into_iter().filter(|m| m.to == 3 && matches!(m.body, Body::Append { .. })),
            );
        }
    }
    assert_eq!(f.entries(), l.entries(), "follower converged to the leader's log");
    // Probe at 5 (rejected, hint: term 2 starts at 3) → leader has no term 2 → next 3 → match.
    assert!(rounds <= 3, "one round trip per conflicting term, not per entry (took {rounds})");
}

#[test]
fn test_5_3_follower_applies_committed_entries_in_log_order() {
    let mut f = new_raft(2, &V3, plain_config(2));
    let entries: Vec<Entry> = (1..=5).map(|i| ent(i, 1)).collect();
    f.step(msg(1, 2, 1, Body::Append { prev_index: 0, prev_term: 0, entries, commit: 3 })).unwrap();
    let rd = drain(&mut f);
    assert_eq!(rd.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2, 3]);
    f.step(msg(1, 2, 1, Body::Heartbeat { commit: 5, round: 0 })).unwrap();
    let rd = drain(&mut f);
    assert_eq!(rd.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(f.applied(), 5);
}

// ---------------------------------------------------------------------------------------------
// §5.4 safety
// ---------------------------------------------------------------------------------------------

#[test]
fn test_5_4_1_candidate_with_older_log_is_refused() {
    // Our last term is 3; the candidate's is 2 even though its log is longer.
    let mut f = raft_with_log(1, &V3, plain_config(1), &[1, 3], 3);
    f.step(msg(2, 1, 4, Body::Vote { pre_vote: false, last_index: 9, last_term: 2, transfer: false }))
        .unwrap();
    assert!(has(&msgs(&mut f), |m| m.body == Body::VoteResponse { pre_vote: false, granted: false }));
    assert_eq!(f.vote(), None);
    assert_eq!(f.term(), 4, "the term is still adopted");
}

#[test]
fn test_5_4_1_candidate_with_shorter_log_of_same_last_term_is_refused() {
    let mut f = raft_with_log(1, &V3, plain_config(1), &[1, 2, 2], 2);
    f.step(msg(2, 1, 3, Body::Vote { pre_vote: false, last_index: 2, last_term: 2, transfer: false }))
        .unwrap();
    assert!(has(&msgs(&mut f), |m| m.body == Body::VoteResponse { pre_vote: false, granted: false }));
}

#[test]
fn test_5_4_1_candidate_with_at_least_as_up_to_date_log_is_granted() {
    for (last_index, last_term) in [(3, 2), (4, 2), (1, 3)] {
        let mut f = raft_with_log(1, &V3, plain_config(1), &[1, 2, 2], 2);
        f.step(msg(2, 1, 3, Body::Vote { pre_vote: false, last_index, last_term, transfer: false })).unwrap();
        assert!(
            has(&msgs(&mut f), |m| m.body == Body::VoteResponse { pre_vote: false, granted: true }),
            "({last_index}, {last_term})"
        );
        assert_eq!(f.vote(), Some(2));
    }
}

#[test]
fn test_5_4_2_new_leader_appends_a_noop_of_its_term() {
    let l = make_leader(1, &V3, plain_config(1));
    let last = l.entries().last().unwrap();
    assert_eq!((last.kind, last.term, last.index), (EntryKind::Noop, l.term(), 1));
}

#[test]
fn test_5_4_2_leader_does_not_commit_prior_term_entries_by_counting_replicas() {
    // Figure 8 (c): the leader of term 4 holds entry 2 of term 2, replicated to a majority.
    let mut l = raft_with_log(1, &[1, 2, 3, 4, 5], plain_config(1), &[1, 2], 3);
    tick_until_campaign(&mut l, 100);
    for v in [2, 3] {
        l.step(msg(v, 1, l.term(), Body::VoteResponse { pre_vote: false, granted: true })).unwrap();
    }
    assert_eq!(l.role(), Role::Leader);
    drain(&mut l);
    let term = l.term();
    // Two followers acknowledge index 2 (the old-term entry) only.
    l.step(msg(2, 1, term, Body::AppendResponse { index: 2, reject: None })).unwrap();
    l.step(msg(3, 1, term, Body::AppendResponse { index: 2, reject: None })).unwrap();
    assert_eq!(l.commit_index(), 0, "a majority holding a term-2 entry does not commit it in term {term}");
    // Once the no-op of the current term (index 3) is on a majority, both commit together.
    l.step(msg(2, 1, term, Body::AppendResponse { index: 3, reject: None })).unwrap();
    assert_eq!(l.commit_index(), 0);
    l.step(msg(3, 1, term, Body::AppendResponse { index: 3, reject: None })).unwrap();
    assert_eq!(l.commit_index(), 3);
}

#[test]
fn test_5_4_3_entries_are_committed_in_order_with_the_current_term_entry() {
    let mut l = raft_with_log(1, &V3, plain_config(1), &[1, 1, 2], 2);
    tick_until_campaign(&mut l, 100);
    l.step(msg(2, 1, l.term(), Body::VoteResponse { pre_vote: false, granted: true })).unwrap();
    drain(&mut l);
    l.step(msg(2, 1, l.term(), Body::AppendResponse { index: 4, reject: None })).unwrap();
    let rd = drain(&mut l);
    assert_eq!(rd.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

// ---------------------------------------------------------------------------------------------
// §5.5 follower and candidate crashes, §5.6 timing
// ---------------------------------------------------------------------------------------------

#[test]
fn test_5_5_lost_appends_are_retried_and_duplicates_are_harmless() {
    // make_leader dropped the leader's first messages: the no-op append to 2 is lost.
    let mut l = make_leader(1, &V3, plain_config(1));
    for _ in 0..l.randomized_election_timeout() {
        l.tick();
    }
    assert!(!has(&msgs(&mut l), |m| matches!(m.body, Body::Append { .. })), "probing waits for an answer");
    // 2 answers a heartbeat, so the leader knows it is reachable and re-sends.
    l.step(msg(2, 1, l.term(), Body::HeartbeatResponse { round: 1 })).unwrap();
    let again = msgs(&mut l);
    let retry =
        again.iter().find(|m| m.to == 2 && matches!(m.body, Body::Append { prev_index: 0, .. })).cloned();
    let retry = retry.expect("append re-sent after the heartbeat answer");
    // Delivering the retry twice to a follower leaves one entry.
    let mut f = new_raft(2, &V3, plain_config(2));
    f.step(retry.clone()).unwrap();
    f.step(retry).unwrap();
    assert_eq!(f.last_index(), 1);
}

#[test]
fn test_5_5_restarted_follower_keeps_term_vote_and_log() {
    let mut f = new_raft(1, &V3, plain_config(1));
    f.step(msg(2, 1, 3, Body::Vote { pre_vote: false, last_index: 0, last_term: 0, transfer: false }))
        .unwrap();
    f.step(msg(2, 1, 3, Body::Append { prev_index: 0, prev_term: 0, entries: vec![ent(1, 3)], commit: 0 }))
        .unwrap();
    let rd = drain(&mut f);
    let restored = RestoredState {
        hard_state: rd.hard_state.unwrap(),
        entries: rd.entries,
        ..RestoredState::bootstrap(V3)
    };
    let mut again = Raft::new(plain_config(1), restored, crate::rt::rng_from_seed(9)).unwrap();
    assert_eq!((again.term(), again.vote(), again.last_index()), (3, Some(2), 1));
    again
        .step(msg(3, 1, 3, Body::Vote { pre_vote: false, last_index: 5, last_term: 3, transfer: false }))
        .unwrap();
    assert!(
        has(&msgs(&mut again), |m| m.body == Body::VoteResponse { pre_vote: false, granted: false }),
        "no second vote in term 3"
    );
}

#[test]
fn test_5_6_heartbeat_interval_must_be_shorter_than_election_timeout() {
    let cfg = RaftConfig { election_tick: 4, heartbeat_tick: 4, ..RaftConfig::new(1) };
    assert!(matches!(cfg.validate(), Err(ConfigError::Timing { .. })));
    assert!(Raft::new(cfg, RestoredState::bootstrap([1]), crate::rt::rng_from_seed(1)).is_err());
}
