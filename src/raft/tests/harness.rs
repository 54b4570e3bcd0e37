//! Helpers for driving single cores by hand in unit tests.

pub use crate::raft::testkit::{Cluster, ClusterConfig, Faults};
pub use crate::raft::*;
pub use bytes::Bytes;

/// A config with pre-vote and check-quorum off (the plain paper algorithm) for node `id`.
pub fn plain_config(id: NodeId) -> RaftConfig {
    RaftConfig { pre_vote: false, check_quorum: false, ..RaftConfig::new(id) }
}

/// A fresh core that is one of `voters`.
pub fn new_raft(id: NodeId, voters: &[NodeId], cfg: RaftConfig) -> Raft {
    Raft::new(
        RaftConfig { id, ..cfg },
        RestoredState::bootstrap(voters.iter().copied()),
        crate::rt::rng_from_seed(id),
    )
    .expect("valid")
}

/// A core restored with the given log (terms of entries 1..) at `term`.
pub fn raft_with_log(id: NodeId, voters: &[NodeId], cfg: RaftConfig, terms: &[Term], term: Term) -> Raft {
    let entries = terms.iter().enumerate().map(|(i, &t)| ent(i as Index + 1, t)).collect();
    let restored = RestoredState {
        hard_state: HardState { term, vote: None, commit: 0 },
        entries,
        ..RestoredState::bootstrap(voters.iter().copied())
    };
    Raft::new(RaftConfig { id, ..cfg }, restored, crate::rt::rng_from_seed(id)).expect("valid")
}

/// A normal entry with empty data.
pub fn ent(index: Index, term: Term) -> Entry {
    Entry { term, index, kind: EntryKind::Normal, data: Bytes::new() }
}

/// Handles the core's `Ready` as a driver would (without storage) and returns it.
pub fn drain(r: &mut Raft) -> Ready {
    let mut all = Ready::default();
    while r.has_ready() {
        let rd = r.ready();
        all.hard_state = rd.hard_state.or(all.hard_state);
        all.entries.extend(rd.entries);
        all.snapshot = rd.snapshot.or(all.snapshot);
        all.messages.extend(rd.messages);
        all.committed_entries.extend(rd.committed_entries);
        all.read_states.extend(rd.read_states);
        all.soft_state = rd.soft_state.or(all.soft_state);
        r.advance();
    }
    all
}

/// The messages the core wants sent now.
pub fn msgs(r: &mut Raft) -> Vec<Message> {
    drain(r).messages
}

/// A message from `from` to `to` at `term`.
pub fn msg(from: NodeId, to: NodeId, term: Term, body: Body) -> Message {
    Message { from, to, term, body }
}

/// Ticks `r` until it has started an election (or `max` ticks pass).
pub fn tick_until_campaign(r: &mut Raft, max: u32) {
    for _ in 0..max {
        r.tick();
        if r.role() != Role::Follower {
            return;
        }
    }
}

/// Makes a 3-node core `id` the leader of `term + 1` by hand, returns it with its messages drained.
pub fn make_leader(id: NodeId, voters: &[NodeId], cfg: RaftConfig) -> Raft {
    let mut r = new_raft(id, voters, cfg);
    tick_until_campaign(&mut r, 100);
    let term = r.term();
    drain(&mut r);
    for &v in voters.iter().filter(|&&v| v != id) {
        let pre = r.role() == Role::PreCandidate;
        let t = if pre { term + 1 } else { r.term() };
        r.step(msg(v, id, t, Body::VoteResponse { pre_vote: pre, granted: true })).expect("step");
        drain(&mut r);
        if r.role() == Role::Leader {
            break;
        }
    }
    assert_eq!(r.role(), Role::Leader);
    r
}
