//! Seed sweep of the `cluster` scenario: 3- and 5-member Raft clusters under partitions, power-fail
//! crashes, pauses and clock skew, with retrying producers and long-poll consumers.
//!
//! `ESC_SIM_CLUSTER_SEEDS` (default 2000) sets how many seeds, `ESC_SIM_SEED_BASE` (default 0)
//! the first. A failure prints the seed, the fault plan, the failed checker and the replay command.
#![cfg(madsim)]

use eventstreamcore_sim::runner::{self, default_options};

#[test]
fn sweep_cluster_seeds() {
    runner::sweep_from_env("cluster", "ESC_SIM_CLUSTER_SEEDS", 2000);
}

#[test]
fn the_same_seed_gives_the_same_digest() {
    for seed in [2, 11, 777] {
        let a = runner::run_seed("cluster", seed, default_options());
        let b = runner::run_seed("cluster", seed, default_options());
        assert!(!a.failed(), "{}", a.failure_report());
        assert_eq!(a.digest(), b.digest(), "seed {seed} is not deterministic");
        assert_eq!(a.plan, b.plan);
    }
    let x = runner::run_seed("cluster", 5, default_options()).digest();
    let y = runner::run_seed("cluster", 6, default_options()).digest();
    assert_ne!(x, y, "different seeds must give different runs");
}

#[test]
fn madsim_determinism_check_passes() {
    for seed in [1, 2, 3] {
        runner::check_determinism("cluster", seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn disks_that_lie_about_fsync_are_caught_and_the_seed_replays_alone() {
    use eventstreamcore_sim::scenarios::Mutant;
    let mutant = || {
        let mut o = default_options();
        o.mutant = Some(Mutant::LyingFsync);
        o
    };
    let report = runner::sweep("cluster", 0..40, runner::default_jobs(), mutant, |_| {});
    let first = report.failures.first().expect("the sweep must catch acked writes lost to lying fsyncs");
    let text = first.failure_report();
    assert!(
        text.contains(&format!("cargo sim -- replay --scenario cluster --seed {}", first.seed)),
        "{text}"
    );
    let again = runner::run_seed("cluster", first.seed, mutant());
    assert_eq!(again.failure(), first.failure(), "the failing seed replays alone, identically");
    let good = runner::run_seed("cluster", first.seed, default_options());
    assert!(!good.failed(), "{}", good.failure_report());
    // The per-round Raft checkers see it first in some seeds: a vote or a log entry the disk
    // "forgot" lets two members lead one term, or a new leader lack a committed entry.
    let raft: Vec<_> = report
        .failures
        .iter()
        .filter(|r| r.failure().is_some_and(|f| f.contains("checker `raft_invariants` failed")))
        .collect();
    let r = raft.first().expect("a Raft invariant broken at some step of some seed");
    let text = r.failure_report();
    assert!(text.contains("the rounds before it"), "the report shows the history excerpt: {text}");
}

/// A publish to an idle single-member cluster is acked at once in simulated time (well under a
/// millisecond; the simulator charges nanoseconds per poll):
/// the driver goes round again when `advance()` made more ready (its own durable append commits
/// the entry) instead of waiting for the next tick. Regression: acks waited up to one tick.
#[test]
fn an_idle_single_member_acks_without_waiting_for_a_tick() {
    use std::sync::Arc;
    use std::time::Duration;

    use eventstreamcore::config::ClusterConfig;
    use eventstreamcore::event::{Event, Priority};
    use eventstreamcore::node::{ClusterNode, ClusterOptions, DedupConfig, EventService};
    use eventstreamcore::raft::Role;
    use eventstreamcore::rt::{self, NodeClock, SimDisk};

    let runtime = madsim::runtime::Runtime::with_seed_and_config(7, madsim::Config::default());
    runtime.block_on(async {
        let handle = madsim::runtime::Handle::current();
        let host = handle.create_node().name("single").ip("10.0.0.1".parse().unwrap()).build();
        host.spawn(async {
            let cluster = ClusterConfig {
                raft_listen: "10.0.0.1:7170".parse().unwrap(),
                tick_ms: 1_000,
                election_ticks: 2,
                heartbeat_ticks: 1,
                ..ClusterConfig::default()
            };
            let opts = ClusterOptions {
                node_id: 1,
                cluster,
                dedup: DedupConfig::default(),
                client_addr: "10.0.0.1:7070".into(),
                repair: false,
                pipeline: None,
                observer: None,
            };
            let (node, task) =
                ClusterNode::start(opts, Arc::new(SimDisk::new()), NodeClock::new(), rt::node_rng())
                    .await
                    .unwrap();
            // Steps of 137 ms never line up with the 1 s ticks.
            while !(node.status().role == Role::Leader && node.status().applied >= 1) {
                rt::time::sleep(Duration::from_millis(137)).await;
            }
            for seq in 1..=5 {
                rt::time::sleep(Duration::from_millis(137)).await;
                let mut e = Event::new("t", Priority::Medium, "x");
                e.producer_id = 1;
                e.sequence = seq;
                let t0 = rt::time::now();
                node.publish(vec![e]).await.unwrap();
                let waited = rt::time::now() - t0;
                assert!(waited < Duration::from_millis(1), "publish {seq} waited {waited:?} (for a tick?)");
            }
            node.shutdown();
            task.wait().await;
        })
        .await
        .unwrap();
    });
}
