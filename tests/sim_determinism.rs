//! Every named scenario is deterministic: the same seed twice gives the same digest (everything
//! observable: final logs, acks, counters; for the cluster family also every ack in order, roles
//! and terms per member, the committed Raft log and the end time), and madsim's own checker finds
//! every random draw and its simulated time identical across two runs (on a rotating sample of
//! seeds from the exploring range). A scenario added to `SCENARIOS` is covered here
//! without further work.
#![cfg(madsim)]

use eventstreamcore_sim::runner::{self, default_options};
use eventstreamcore_sim::scenarios::SCENARIOS;

#[test]
fn every_scenario_gives_the_same_digest_for_the_same_seed() {
    assert!(SCENARIOS.len() >= 5, "ingest, cluster, cluster3, cluster5, pipeline");
    for s in SCENARIOS {
        let a = runner::run_seed(s.name, 42, default_options());
        let b = runner::run_seed(s.name, 42, default_options());
        assert!(!a.failed(), "{}", a.failure_report());
        assert_eq!(a.digest(), b.digest(), "scenario {} is not deterministic", s.name);
        assert_eq!(a.plan, b.plan, "scenario {}", s.name);
        let other = runner::run_seed(s.name, 43, default_options());
        assert_ne!(a.digest(), other.digest(), "scenario {}: seeds 42 and 43 ran the same", s.name);
    }
}

#[test]
fn every_scenario_passes_madsims_determinism_check() {
    // A rotating sample: a seed from the exploring range, one per scenario.
    let seeds = runner::explore_sample(SCENARIOS.len() as u64);
    for (s, seed) in SCENARIOS.iter().zip(seeds) {
        runner::check_determinism(s.name, seed).unwrap_or_else(|e| {
            panic!(
                "scenario {} seed {seed} (replay: cargo sim -- determinism --scenario {} --seed {seed}): {e}",
                s.name, s.name
            )
        });
    }
}

/// A seed's digest does not depend on what ran before it in the process or on which worker
/// thread: a sweep on one thread (each seed after all the earlier ones) and one on three threads
/// give every seed the same digest, and so does each seed run alone first in a fresh runtime. The
/// digests are printed (`digest SEED HEX`, as `cargo sim -- sweep --digests` prints them), so the
/// test binary's can be compared with esc-sim's.
#[test]
fn a_seeds_digest_does_not_depend_on_the_thread_or_what_ran_before() {
    use std::sync::Mutex;
    let digests = |jobs| {
        let all = Mutex::new(Vec::new());
        runner::sweep("cluster", 0..12, jobs, default_options, |r| {
            all.lock().unwrap().push((r.seed, r.digest()));
        });
        let mut all = all.into_inner().unwrap();
        all.sort_unstable();
        all
    };
    let one = digests(1);
    assert_eq!(one, digests(3), "the same seeds on one thread and on three");
    assert!(one.iter().all(|(_, d)| d.is_some()), "every seed passes: {one:?}");
    for (seed, d) in &one {
        println!("digest {seed} {:016x}", d.unwrap_or_default());
    }
    let alone = runner::run_seed("cluster", 7, default_options());
    assert_eq!(alone.digest(), one[7].1, "seed 7 alone");
}
