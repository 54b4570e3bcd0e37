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
}
