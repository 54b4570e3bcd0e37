//! Membership answers of a deposed leader, hand-scripted in the simulator (three real members:
//! driver, transport, storage): a leader paused while the others elect a new leader and remove
//! it still believes it leads when it wakes up, and its committed configuration is stale.
#![cfg(madsim)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstreamcore::config::{ClusterConfig, MemberConfig};
use eventstreamcore::node::{ClusterNode, ClusterOptions, DedupConfig};
use eventstreamcore::raft::Role;
use eventstreamcore::rt::{self, NodeClock, SimDisk};
use eventstreamcore::service::{AdminCommand, EventService};

type Slot = Arc<Mutex<Option<ClusterNode>>>;

fn member(id: u64) -> MemberConfig {
    MemberConfig { id, raft_addr: format!("10.0.0.{id}:7170"), client_addr: format!("10.0.0.{id}:7070") }
}

/// Starts member `id` of a 3-member cluster on its own simulated host.
fn start(handle: &madsim::runtime::Handle, id: u64) -> (madsim::task::NodeId, Slot) {
    let host =
        handle.create_node().name(format!("n{id}")).ip(format!("10.0.0.{id}").parse().unwrap()).build();
    let slot: Slot = Arc::default();
    let s = slot.clone();
    host.spawn(async move {
        let cluster = ClusterConfig {
            secret: "s3cret".into(),
            raft_listen: member(id).raft_addr.parse().unwrap(),
            members: (1..=3).map(member).collect(),
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            ..ClusterConfig::default()
        };
        let opts = ClusterOptions {
            node_id: id,
            cluster,
            dedup: DedupConfig::default(),
            client_addr: member(id).client_addr,
            repair: false,
            pipeline: None,
            observer: None,
            store: Default::default(),
            read_max_bytes: 1 << 20,
        };
        let (node, task) =
            ClusterNode::start(opts, Arc::new(SimDisk::new()), NodeClock::new(), rt::node_rng())
                .await
                .unwrap();
        *s.lock().unwrap() = Some(node);
        task.wait().await;
    });
    (host.id(), slot)
}

fn node(slot: &Slot) -> ClusterNode {
    slot.lock().unwrap().clone().expect("started")
}

/// Waits for a leader among `ids` (1-based) that has applied an entry of its term; returns it.
async fn leader_among(slots: &[Slot], ids: &[u64]) -> u64 {
    for _ in 0..200 {
        for &id in ids {
            let st = slots[id as usize - 1].lock().unwrap().as_ref().map(|n| n.status());
            if st.is_some_and(|s| s.role == Role::Leader && s.applied >= 1 && s.commit == s.applied) {
                return id;
            }
        }
        rt::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader among {ids:?}");
}

/// Seed 844681447073 of the `cluster` scenario: the operator removed member 1, wiped it and
/// asked to add it back; the request reached a leader that had been paused (cut from its peers)
/// and did not know yet that it was deposed. It answered "node 1 is already a voter" from its
/// committed configuration — true once, stale now — so member 1 was never added back. An
/// answer read from the configuration is a read: it must wait for a quorum to confirm the
/// leader (ReadIndex), as linearizable reads do.
#[test]
fn a_deposed_leader_does_not_answer_membership_questions_from_its_stale_configuration() {
    let runtime = madsim::runtime::Runtime::with_seed_and_config(3, madsim::Config::default());
    runtime.block_on(async {
        let handle = madsim::runtime::Handle::current();
        let net = madsim::net::NetSim::current();
        let (hosts, slots): (Vec<_>, Vec<_>) = (1..=3).map(|id| start(&handle, id)).unzip();
        let old = leader_among(&slots, &[1, 2, 3]).await;
        let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
        handle.pause(hosts[old as usize - 1]);
        let new = leader_among(&slots, &others).await;
        let leader = node(&slots[new as usize - 1]);
        let removed = leader.admin(AdminCommand::RemoveNode { id: old }).await;
        assert_eq!(removed, Ok(format!("node {old} removed")));

        // The old leader wakes up cut from its peers, still leading in its own eyes.
        net.clog_node(hosts[old as usize - 1]);
        handle.resume(hosts[old as usize - 1]);
        let stale = node(&slots[old as usize - 1]);
        let add = |id: u64| AdminCommand::AddNode {
            id,
            raft_addr: member(id).raft_addr,
            client_addr: member(id).client_addr,
        };
        let within = Duration::from_secs(10);
        let (add_back, remove_stranger) = tokio::join!(
            rt::time::timeout(within, stale.admin(add(old))),
            rt::time::timeout(within, stale.admin(AdminCommand::RemoveNode { id: 9 })),
        );
        for answer in [add_back, remove_stranger] {
            // An error (not the leader, or not confirmed in time) and the operator retries.
            assert!(matches!(answer, Ok(Err(_))), "the deposed leader answered {answer:?}");
        }

        // The real leader still answers both from its configuration, once confirmed.
        assert_eq!(leader.admin(add(others[0])).await, Ok(format!("node {} is already a voter", others[0])));
        assert_eq!(
            leader.admin(AdminCommand::RemoveNode { id: old }).await,
            Ok(format!("node {old} is not a member"))
        );
    });
}
