//! The term and index ceilings (`MAX_TERM`, `MAX_INDEX`) are inclusive everywhere: a peer
//! message, a persisted state and `Raft::new` accept exactly the ceiling and refuse one more, and
//! the core never makes a value past it (no campaign at the ceiling, no append past it), so
//! nothing a peer sends can leave a persisted state that refuses to restart.

use super::harness::*;

const ONE: [NodeId; 1] = [1];

/// A single-voter core restored from a snapshot at `index` (term 3), everything applied.
fn at_index(index: Index) -> RestoredState {
    let conf_state = ConfState::with_voters(ONE);
    RestoredState {
        hard_state: HardState { term: 3, vote: Some(1), commit: index },
        snapshot: Some(Snapshot { meta: SnapshotMeta { index, term: 3, conf_state }, data: Bytes::new() }),
        entries: vec![],
        conf_state: ConfState::with_voters(ONE),
        applied: index,
    }
}

fn core(restored: RestoredState) -> Result<Raft, InitError> {
    Raft::new(plain_config(1), restored, crate::rt::rng_from_seed(1))
}

/// What a driver would have persisted after `rd`, on top of `before`.
fn persisted(before: RestoredState, rd: &Ready) -> RestoredState {
    let mut after = before;
    if let Some(hs) = rd.hard_state {
        after.hard_state = hs;
    }
    after.entries.extend(rd.entries.iter().cloned());
    after
}

#[test]
fn the_ceilings_are_inclusive_for_peers_and_for_restored_state() {
    let heartbeat = |term| msg(2, 1, term, Body::Heartbeat { commit: 0, round: 0 });
    assert_eq!(heartbeat(MAX_TERM).check_bounds(), Ok(()));
    assert!(heartbeat(MAX_TERM + 1).check_bounds().is_err());
    let append =
        |index| Body::Append { prev_index: index - 1, prev_term: 1, entries: vec![ent(index, 1)], commit: 0 };
    assert_eq!(msg(2, 1, 1, append(MAX_INDEX)).check_bounds(), Ok(()));
    assert!(msg(2, 1, 1, append(MAX_INDEX + 1)).check_bounds().is_err());

    assert!(core(at_index(MAX_INDEX)).is_ok(), "a persisted index of exactly the ceiling restarts");
    assert!(matches!(core(at_index(MAX_INDEX + 1)), Err(InitError::Restore(_))));
    let term = |t| RestoredState {
        hard_state: HardState { term: t, vote: None, commit: 0 },
        ..RestoredState::bootstrap(ONE)
    };
    assert!(core(term(MAX_TERM)).is_ok(), "a persisted term of exactly the ceiling restarts");
    assert!(matches!(core(term(MAX_TERM + 1)), Err(InitError::Restore(_))));
}

#[test]
fn a_node_at_the_term_ceiling_never_campaigns_past_it_and_restarts() {
    let restored = RestoredState {
        hard_state: HardState { term: 1, vote: None, commit: 0 },
        ..RestoredState::bootstrap([1, 2, 3])
    };
    let mut r = Raft::new(plain_config(1), restored.clone(), crate::rt::rng_from_seed(1)).unwrap();
    // A peer (one that knows the secret) announces a term of exactly the ceiling: accepted.
    r.step(msg(2, 1, MAX_TERM, Body::Heartbeat { commit: 0, round: 0 })).unwrap();
    let mut state = persisted(restored, &drain(&mut r));
    for _ in 0..50 * plain_config(1).election_tick {
        r.tick();
        state = persisted(state, &drain(&mut r));
    }
    assert_eq!(r.term(), MAX_TERM, "no campaign past the term ceiling");
    assert!(
        Raft::new(plain_config(1), state, crate::rt::rng_from_seed(1)).is_ok(),
        "the persisted state restarts"
    );
}

#[test]
fn a_log_at_the_index_ceiling_gets_no_entry_past_it_and_restarts() {
    // At exactly the ceiling: a campaign would make a leader append its no-op past it.
    let mut r = core(at_index(MAX_INDEX)).unwrap();
    let mut state = at_index(MAX_INDEX);
    for _ in 0..50 * plain_config(1).election_tick {
        r.tick();
        state = persisted(state, &drain(&mut r));
    }
    assert_eq!(r.last_index(), MAX_INDEX, "no entry past the index ceiling");
    assert!(core(state).is_ok(), "the persisted state restarts");

    // One below: the node leads (its no-op takes the last index), then refuses proposals.
    let mut r = core(at_index(MAX_INDEX - 1)).unwrap();
    let mut state = at_index(MAX_INDEX - 1);
    tick_until_campaign(&mut r, 1000);
    state = persisted(state, &drain(&mut r));
    assert_eq!((r.role(), r.last_index()), (Role::Leader, MAX_INDEX));
    assert_eq!(r.propose(Bytes::from_static(b"x")), Err(ProposeError::LogFull(MAX_INDEX)));
    state = persisted(state, &drain(&mut r));
    assert!(state.entries.iter().all(|e| e.index <= MAX_INDEX));
    assert!(core(state).is_ok(), "the persisted state restarts");
}
