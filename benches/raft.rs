//! Raft core throughput: a 3-node cluster of cores driven through the in-memory network of
//! `raft::testkit` (no I/O, no checker), measured in committed entries per second at batch sizes
//! 1, 64 and 1024. One batch = `batch` proposals at the leader, then every message delivered and
//! every `Ready` handled (persisted to in-memory storage, sent, applied on all three nodes) until
//! the cluster is quiescent and the batch is committed.
//!
//! Run: `cargo bench --bench raft -- --warm-up-time 1 --measurement-time 3`

#[cfg(not(madsim))]
mod bench {
    use bytes::Bytes;
    use criterion::{BenchmarkId, Criterion, Throughput};
    use eventstreamcore::raft::testkit::{Cluster, ClusterConfig};

    /// A quiet 3-node cluster with an elected leader.
    fn cluster() -> (Cluster, u64) {
        let mut cfg = ClusterConfig::new(3, 7);
        cfg.check = false;
        cfg.record_applied = false;
        // Keep memory bounded over millions of entries: snapshot and compact now and then.
        cfg.snapshot_every = Some(200_000);
        cfg.raft.max_entries_per_append = 1024;
        cfg.raft.max_inflight_appends = 64;
        let mut c = Cluster::new(cfg);
        let leader = c.wait_for_leader(500).expect("a leader");
        (c, leader)
    }

    /// Proposes `batch` entries and runs the cluster until they are committed.
    fn round(c: &mut Cluster, leader: u64, batch: usize, payload: &Bytes) {
        let raft = c.raft_mut(leader);
        let mut last = 0;
        for _ in 0..batch {
            last = raft.propose(payload.clone()).expect("leader accepts");
        }
        c.process(leader);
        c.deliver();
        assert!(c.raft(leader).commit_index() >= last, "batch not committed");
    }

    pub fn committed_entries_per_second(crit: &mut Criterion) {
        let payload = Bytes::from(vec![0x5a; 16]);
        let mut group = crit.benchmark_group("raft_3_nodes_commit");
        for batch in [1usize, 64, 1024] {
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
                let (mut c, leader) = cluster();
                b.iter(|| round(&mut c, leader, batch, &payload));
                // Every node applied what the leader committed: the work measured is complete.
                let commit = c.raft(leader).commit_index();
                c.deliver();
                assert!(c.nodes.values().all(|n| n.sm.applied + 1024 >= commit));
            });
        }
        group.finish();
    }
}

#[cfg(not(madsim))]
criterion::criterion_group!(benches, bench::committed_entries_per_second);
#[cfg(not(madsim))]
criterion::criterion_main!(benches);

#[cfg(madsim)]
fn main() {}
