//! Seed sweep of the `pipeline` scenario: an overload storm in which no event may be lost
//! silently (processed, dead-lettered with a reason, or refused to its producer).
//!
//! `ESC_SIM_PIPELINE_SEEDS` (default 200) sets how many fixed seeds, `ESC_SIM_SEED_BASE` (default 0)
//! the first; `ESC_SIM_PIPELINE_EXPLORE_SEEDS` (default 200) how many exploring seeds, from a base
//! that changes with the commit and the day (printed; `ESC_SIM_EXPLORE_BASE` pins it). A failure prints the seed, the plan, the failed checker and the command that replays it.
#![cfg(madsim)]

use eventstreamcore_sim::runner::{self, default_options};

#[test]
fn sweep_pipeline_seeds() {
    runner::sweep_from_env("pipeline", "ESC_SIM_PIPELINE_SEEDS", 200);
}

#[test]
fn explore_pipeline_seeds() {
    runner::explore_from_env("pipeline", "ESC_SIM_PIPELINE_EXPLORE_SEEDS", 200);
}

#[test]
fn the_storm_really_overloads() {
    // Across a few seeds the storm must reach every kind of fate, or the checks prove little.
    let mut refused = false;
    let mut dead = false;
    let mut degraded = false;
    for seed in 0..12 {
        let r = runner::run_seed("pipeline", seed, default_options());
        assert!(!r.failed(), "{}", r.failure_report());
        let summary = r.outcome.as_ref().map(|o| o.summary.clone()).unwrap_or_default();
        // "result: N sent, N refused, N processed, N dead-lettered, N duplicates; transitions ... [a, b, c, d]"
        let result = summary.split("result: ").nth(1).unwrap_or_default();
        let num = |label: &str| -> u64 {
            result
                .split([',', ';'])
                .map(str::trim)
                .find_map(|part| part.strip_suffix(label).and_then(|n| n.trim().parse().ok()))
                .unwrap_or(0)
        };
        refused |= num("refused") > 0;
        dead |= num("dead-lettered") > 0;
        degraded |= !result.contains("emergency [0, 0, 0, 0]");
    }
    assert!(refused, "no seed refused a producer");
    assert!(dead, "no seed dead-lettered an event");
    assert!(degraded, "no seed moved the control loop");
}

#[test]
fn the_same_seed_gives_the_same_digest() {
    // 15 and 51 fail over mid-storm.
    for seed in [3, 15, 51, 4242] {
        let a = runner::run_seed("pipeline", seed, default_options());
        let b = runner::run_seed("pipeline", seed, default_options());
        assert!(!a.failed(), "{}", a.failure_report());
        assert_eq!(a.digest(), b.digest(), "seed {seed} is not deterministic");
        assert_eq!(a.plan, b.plan);
    }
    let x = runner::run_seed("pipeline", 5, default_options()).digest();
    let y = runner::run_seed("pipeline", 6, default_options()).digest();
    assert_ne!(x, y, "different seeds must give different runs");
}

#[test]
fn madsim_determinism_check_passes() {
    for seed in [1, 15].into_iter().chain(runner::explore_sample(2)) {
        runner::check_determinism("pipeline", seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}
