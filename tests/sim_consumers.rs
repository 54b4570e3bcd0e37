//! Named consumers in the simulated cluster: they crash (drop their connection, forget their
//! local state) and resume from the position the cluster committed, under the seed's faults;
//! `no_consumer_skips` and `acked_commits_are_durable` (sim/src/scenarios/durable.rs, with
//! unit tests that make them fail) must hold, and the runs must really exercise resuming.
#![cfg(madsim)]

use eventstreamcore_sim::runner::{self, default_options};
use eventstreamcore_sim::scenarios::Options;

/// (named, incarnations, acknowledged commits) from a run summary's durable-consumer line.
fn durable_counts(summary: &str) -> (u64, u64, u64) {
    let line = summary
        .lines()
        .find_map(|l| l.strip_prefix("durable consumers: "))
        .unwrap_or_else(|| panic!("no durable-consumer line in:\n{summary}"));
    let n: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1], n[2])
}

#[test]
fn named_consumers_crash_resume_and_skip_nothing_under_faults() {
    let (mut named, mut lives, mut commits) = (0, 0, 0);
    for seed in 0..6 {
        let r = runner::run_seed("cluster", seed, default_options());
        assert!(!r.failed(), "{}", r.failure_report());
        let (n, l, c) = durable_counts(&r.outcome.expect("passed").summary);
        (named, lives, commits) = (named + n, lives + l, commits + c);
    }
    assert!(named >= 6, "every generated plan has named consumers");
    assert!(lives > 2 * named, "consumers must crash and resume: {lives} incarnations of {named}");
    assert!(commits >= named, "commits must be acknowledged: {commits} for {named} consumers");
}

#[test]
fn a_plan_without_durable_consumers_runs_none() {
    let plan =
        "nodes = 3\ndrift_ppm = [0, 0, 0]\nproducers = 2\nbatches = 3\nconsumers = 1\nthink_ms = 300\n";
    let r = runner::run_seed("cluster", 9, Options { plan: Some(plan.into()), ..default_options() });
    assert!(!r.failed(), "{}", r.failure_report());
    assert!(!r.outcome.expect("passed").summary.contains("durable consumers"));
}

#[test]
fn a_leader_crash_and_a_partition_do_not_make_a_named_consumer_skip() {
    let plan = "nodes = 3\ndrift_ppm = [0, 0, 0]\nproducers = 4\nbatches = 12\nconsumers = 1\nthink_ms = 300\n\
                durable_consumers = 3\nsnapshot_entries = 16\n\
                faults = [{ at_ms = 2000, kind = \"isolate_leader\" }, { at_ms = 3000, kind = \"crash\", node = 1, down_ms = 1500 }, \
                { at_ms = 6000, kind = \"heal\" }, { at_ms = 7000, kind = \"crash_many\", nodes = [0, 1, 2], down_ms = 800 }]\n";
    let r = runner::run_seed("cluster", 4, Options { plan: Some(plan.into()), ..default_options() });
    assert!(!r.failed(), "{}", r.failure_report());
    let (named, lives, commits) = durable_counts(&r.outcome.expect("passed").summary);
    assert_eq!(named, 3);
    assert!(lives > named && commits > 0, "{lives} incarnations, {commits} commits");
}
