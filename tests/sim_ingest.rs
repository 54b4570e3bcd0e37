//! Seed sweep of the `ingest` scenario: one server, 200+ clients of every behaviour.
//!
//! `ESC_SIM_SEEDS` (default 750) sets how many fixed seeds, `ESC_SIM_SEED_BASE` (default 0) the
//! first; `ESC_SIM_EXPLORE_SEEDS` (default 250) how many exploring seeds, from a base that changes
//! with the commit and the day (printed; `ESC_SIM_EXPLORE_BASE` pins it).
//! A failure prints the seed, the plan, the failed checker and the command that replays it alone.
#![cfg(madsim)]

use eventstreamcore_sim::runner::{self, default_options};
use eventstreamcore_sim::scenarios::Mutant;

#[test]
fn sweep_ingest_seeds() {
    runner::sweep_from_env("ingest", "ESC_SIM_SEEDS", 750);
}

#[test]
fn explore_ingest_seeds() {
    runner::explore_from_env("ingest", "ESC_SIM_EXPLORE_SEEDS", 250);
}

#[test]
fn the_same_seed_gives_the_same_digest() {
    for seed in [3, 17, 4242] {
        let a = runner::run_seed("ingest", seed, default_options());
        let b = runner::run_seed("ingest", seed, default_options());
        assert!(!a.failed(), "{}", a.failure_report());
        assert_eq!(a.digest(), b.digest(), "seed {seed} is not deterministic");
        assert_eq!(a.plan, b.plan);
    }
    let x = runner::run_seed("ingest", 5, default_options()).digest();
    let y = runner::run_seed("ingest", 6, default_options()).digest();
    assert_ne!(x, y, "different seeds must give different runs");
}

#[test]
fn madsim_determinism_check_passes() {
    // What MADSIM_TEST_CHECK_DETERMINISM=1 does: run twice, compare every random draw and the
    // simulated time at which it happened.
    // Half fixed, half a rotating sample of the exploring range.
    for seed in [1, 2, 3, 99, 1234].into_iter().chain(runner::explore_sample(5)) {
        runner::check_determinism("ingest", seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn a_server_that_acks_before_storing_is_caught_and_the_seed_replays_alone() {
    let mutant = || {
        let mut o = default_options();
        o.mutant = Some(Mutant::AckBeforeStore);
        o
    };
    let report = runner::sweep("ingest", 0..30, runner::default_jobs(), mutant, |_| {});
    let first = report.failures.first().expect("the sweep must catch an ack-before-store server");
    let text = first.failure_report();
    assert!(text.contains(&format!("seed:     {}", first.seed)), "{text}");
    assert!(text.contains(&format!("cargo sim -- replay --scenario ingest --seed {}", first.seed)), "{text}");
    assert!(text.contains("acked_exactly_once"), "{text}");
    // Replaying that one seed alone fails the same way.
    let again = runner::run_seed("ingest", first.seed, mutant());
    assert_eq!(again.failure(), first.failure());
    // And the correct server passes the same seed.
    let good = runner::run_seed("ingest", first.seed, default_options());
    assert!(!good.failed(), "{}", good.failure_report());
}

#[test]
fn a_mutant_that_does_not_apply_is_refused_by_the_scenario_library_not_run() {
    use eventstreamcore_sim::scenarios::ingest;
    for m in [Mutant::StaleReads, Mutant::LyingFsync, Mutant::LostQuorum, Mutant::StrandedMember] {
        let opts = || {
            let mut o = default_options();
            o.mutant = Some(m);
            o
        };
        // The library itself answers with a typed error (before it would have run as a pass).
        let refused = madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default())
            .block_on(ingest::run(opts()))
            .expect_err("a mutant that does nothing here must be refused");
        assert_eq!((refused.mutant, refused.scenario.as_str()), (m, "ingest"));
        assert!(refused.fits.iter().all(|s| s.starts_with("cluster")), "{refused}");
        // Through the runner the seed is a failure naming why, never a silent pass.
        let r = runner::run_seed("ingest", 1, opts());
        assert!(r.failed(), "{m:?} ran as a pass");
        assert!(r.failure_report().contains("does not apply to scenario `ingest`"), "{}", r.failure_report());
    }
}
