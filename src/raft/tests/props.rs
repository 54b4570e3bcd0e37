//! Property tests over schedules: random sequences of ticks, proposals, crashes, restarts,
//! partitions, transfers and membership changes on a faulty network. The cluster's checker runs
//! after every delivered message and tick, so every reachable state is checked for: at most one
//! leader per term, log matching, leader completeness, committed entries never changing, commit
//! monotonic, applied ≤ commit, and applied sequences being prefixes of one another.

use super::harness::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Action {
    Tick(u8),
    Propose(u8),
    Crash(u8),
    Restart(u8),
    Partition(u8),
    Heal,
    Transfer(u8),
    RemoveAndReAdd(u8),
    Read(u8),
}

fn arb_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (1u8..8).prop_map(Action::Tick),
        6 => any::<u8>().prop_map(Action::Propose),
        1 => any::<u8>().prop_map(Action::Crash),
        2 => any::<u8>().prop_map(Action::Restart),
        1 => any::<u8>().prop_map(Action::Partition),
        1 => Just(Action::Heal),
        1 => any::<u8>().prop_map(Action::Transfer),
        1 => any::<u8>().prop_map(Action::RemoveAndReAdd),
        1 => any::<u8>().prop_map(Action::Read),
    ]
}

fn pick(ids: &[NodeId], x: u8) -> Option<NodeId> {
    (!ids.is_empty()).then(|| ids[x as usize % ids.len()])
}

fn run_schedule(seed: u64, n: u64, lossy: bool, actions: &[Action]) {
    let mut cfg = ClusterConfig::new(n, seed);
    if lossy {
        cfg.faults = Faults { drop: 0.1, duplicate: 0.05, max_delay: 2, reorder: true };
    }
    cfg.snapshot_every = Some(7);
    cfg.keep_tail = 2;
    cfg.snapshot_padding = 100;
    cfg.raft.snapshot_chunk_bytes = 48;
    cfg.raft.max_entries_per_append = 4;
    cfg.raft.max_inflight_appends = 3;
    let mut c = Cluster::new(cfg);
    let all: Vec<NodeId> = (1..=n).collect();
    let mut next = 0u64;
    for a in actions {
        match *a {
            Action::Tick(k) => c.run_ticks(u64::from(k)),
            Action::Propose(x) => {
                if let Some(id) = pick(&c.up_ids(), x) {
                    next += 1;
                    let _ = c.propose(id, Bytes::from(next.to_le_bytes().to_vec()));
                }
            }
            Action::Crash(x) => {
                if let Some(id) = pick(&c.up_ids(), x) {
                    c.crash(id);
                }
            }
            Action::Restart(x) => {
                let down: Vec<NodeId> = all.iter().copied().filter(|&id| !c.is_up(id)).collect();
                if let Some(id) = pick(&down, x) {
                    c.restart(id);
                }
            }
            Action::Partition(mask) => {
                let (a, b): (Vec<NodeId>, Vec<NodeId>) =
                    all.iter().partition(|&&id| mask & (1 << (id - 1)) != 0);
                c.partition(&[&a, &b]);
            }
            Action::Heal => c.heal(),
            Action::Transfer(x) => {
                if let Some(l) = c.leader()
                    && let Some(to) = pick(&all, x)
                {
                    let _ = c.raft_mut(l).transfer_leader(to);
                    c.process(l);
                }
            }
            Action::RemoveAndReAdd(x) => {
                // Alternates: remove a voter, or add back a removed one as learner, or promote it.
                if let Some(l) = c.leader() {
                    let conf = c.raft(l).conf_state().clone();
                    let target = all[x as usize % all.len()];
                    let kind = if conf.learners.contains(&target) {
                        ConfChangeKind::AddVoter
                    } else if conf.voters.contains(&target) {
                        ConfChangeKind::Remove
                    } else {
                        ConfChangeKind::AddLearner
                    };
                    let _ = c.raft_mut(l).propose_conf_change(ConfChange {
                        kind,
                        node: target,
                        context: Bytes::new(),
                    });
                    c.process(l);
                }
            }
            Action::Read(x) => {
                if let Some(id) = pick(&c.up_ids(), x) {
                    let _ = c.raft_mut(id).read_index(u64::from(x));
                    c.process(id);
                }
            }
        }
    }
    // A read is only ever released at an index some leader had committed (and so persisted).
    let max_commit = c.nodes.values().map(|n| n.storage.hard_state.commit).max().unwrap_or(0);
    for n in c.nodes.values() {
        for r in &n.reads {
            assert!(r.index <= max_commit, "read released at {} beyond any commit ({max_commit})", r.index);
        }
    }
    // Liveness once the faults stop: every node back, network healed and reliable.
    for &id in &all {
        if !c.is_up(id) {
            c.restart(id);
        }
    }
    c.heal();
    c.net.faults = Faults::none();
    let mut ok = false;
    for _ in 0..10 {
        if c.propose_and_commit(&b"final"[..], 200).is_some() {
            ok = true;
            break;
        }
        // E.g. a leadership transfer in progress refuses proposals for up to an election timeout.
        c.run_ticks(10);
    }
    if !ok {
        for id in c.up_ids() {
            eprintln!("{:?} conf={:?}", c.raft(id).status(), c.raft(id).conf_state());
        }
    }
    assert!(ok, "seed {seed}: no progress after the faults stopped");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn safety_holds_on_every_schedule_three_nodes(seed in any::<u64>(), lossy in any::<bool>(), actions in proptest::collection::vec(arb_action(), 1..120)) {
        run_schedule(seed, 3, lossy, &actions);
    }

    #[test]
    fn safety_holds_on_every_schedule_five_nodes(seed in any::<u64>(), lossy in any::<bool>(), actions in proptest::collection::vec(arb_action(), 1..120)) {
        run_schedule(seed, 5, lossy, &actions);
    }
}

#[test]
fn many_seeds_with_a_fixed_busy_schedule() {
    let actions: Vec<Action> = (0..80u8)
        .map(|i| match i % 8 {
            0 | 3 | 5 => Action::Propose(i),
            1 => Action::Tick(3),
            2 => Action::Crash(i),
            4 => Action::Restart(i),
            6 => Action::Partition(i),
            _ => Action::Heal,
        })
        .collect();
    for seed in 0..8 {
        run_schedule(seed, 5, seed % 2 == 0, &actions);
    }
}
