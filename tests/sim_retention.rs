//! Retention under faults: a cluster run whose topics keep at most a few events trims on every
//! replica identically (the checkers hold the run to the policy), consumers get explicit
//! out-of-range answers instead of gaps, and a sweep of drawn plans includes retention seeds.
#![cfg(madsim)]

use eventstreamcore_sim::runner::{self, default_options};
use eventstreamcore_sim::scenarios::Options;

/// The numbers of the summary's `retention:` line: (max_events, removed, stored, out-of-range answers).
fn retention_line(summary: &str) -> Option<(u64, u64, u64, u64)> {
    let line = summary.lines().find(|l| l.starts_with("retention:"))?;
    let n: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    match n[..] {
        [max, removed, stored, skips] => Some((max, removed, stored, skips)),
        _ => None,
    }
}

#[test]
fn a_small_retention_limit_trims_the_same_events_everywhere_through_a_crash() {
    let plan = "nodes = 3\ndrift_ppm = [0, 0, 0]\nproducers = 4\nbatches = 12\nconsumers = 2\nthink_ms = 300\n\
                retention_max_events = 6\n\
                faults = [{ at_ms = 3000, kind = \"crash\", node = 1, down_ms = 1500 }]\n";
    let r = runner::run_seed("cluster", 5, Options { plan: Some(plan.to_string()), ..default_options() });
    assert!(!r.failed(), "{}", r.failure_report());
    let summary = r.outcome.map(|o| o.summary).unwrap_or_default();
    println!("{summary}");
    let (max, removed, stored, _) = retention_line(&summary).expect("a retention line");
    assert_eq!(max, 6);
    assert!(removed > 0 && removed < stored, "retention removed {removed} of {stored}: {summary}");
}

#[test]
fn drawn_plans_include_retention_and_pass() {
    let mut with_retention = 0;
    for seed in 0..12 {
        let r = runner::run_seed("cluster", seed, default_options());
        assert!(!r.failed(), "{}", r.failure_report());
        let summary = r.outcome.map(|o| o.summary).unwrap_or_default();
        if retention_line(&summary).is_some_and(|(_, removed, _, _)| removed > 0) {
            with_retention += 1;
        }
    }
    assert!(with_retention > 0, "no seed of 12 drew retention limits that trimmed anything");
}

/// Seeds that once failed to converge: a new leader's pipeline waited at its checkpoint position
/// for events retention had already removed (it now resumes at the first retained offset).
#[test]
fn a_new_leader_pipeline_resumes_past_trimmed_events() {
    for seed in [257, 260, 379, 399, 426, 1366] {
        let r = runner::run_seed("cluster", seed, default_options());
        assert!(!r.failed(), "{}", r.failure_report());
    }
}
