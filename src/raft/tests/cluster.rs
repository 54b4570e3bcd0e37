use super::harness::*;

#[test]
fn initial_election_elects_one_leader_and_commits() {
    let mut c = Cluster::new(ClusterConfig::new(3, 1));
    let leader = c.wait_for_leader(200).expect("a leader");
    let (l, index) = c.propose_and_commit(&b"x"[..], 100).expect("committed");
    assert_eq!(l, leader);
    assert!(c.wait_applied_everywhere(index, 100));
}
