//! Replays every regression seed in `seeds/` (a seed that once failed is replayed forever), each
//! with its `[plan]` if the file carries one.
#![cfg(madsim)]
#![allow(clippy::disallowed_methods)] // writes a seed file to a temp dir

use std::path::Path;

use eventstreamcore_sim::runner;
use eventstreamcore_sim::scenarios::cluster::{Fault, Plan, Step};
use eventstreamcore_sim::shrink;

#[test]
fn every_regression_seed_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let files = runner::load_seed_files(&dir).expect("seed files parse");
    let mut failed = Vec::new();
    for (path, f) in &files {
        let r = runner::replay_seed_file(path, f);
        if r.failed() {
            eprintln!("{} ({}):\n{}", path.display(), f.note, r.failure_report());
            failed.push(path.display().to_string());
        }
        if f.determinism
            && let Err(e) = runner::check_determinism_with(&f.scenario, f.seed, f.plan_toml())
        {
            eprintln!("{} ({}): not deterministic: {e}", path.display(), f.note);
            failed.push(path.display().to_string());
        }
    }
    println!("replayed {} regression seeds", files.len());
    assert!(failed.is_empty(), "regression seeds failed: {failed:?}");
}

/// A seed file with a `[plan]` replays that plan, not the one its seed draws.
#[test]
fn a_seed_file_with_a_plan_replays_that_plan() {
    let plan = Plan {
        nodes: 3,
        producers: 2,
        batches: 3,
        consumers: 1,
        drift_ppm: vec![0, 0, 0],
        faults: vec![
            Step { at_ms: 1_000, fault: Fault::Crash { node: 1, down_ms: 500 } },
            Step { at_ms: 2_000, fault: Fault::Isolate { node: 0 } },
        ],
        fault_window_ms: 12_000,
        deadline_ms: 40_000,
        think_ms: 400,
        storm_clients: 0,
        storm_at_ms: 0,
        storm_ms: None,
        snapshot_entries: 64,
        peer_storm_clients: 0,
        linearizable_reader: true,
        durable_consumers: 0,
        retention_max_events: None,
        disk_latency: Vec::new(),
        legacy_clients: 0,
        topic_segment_bytes: None,
        catchup_chunk_bytes: None,
        max_entries_per_append: None,
        dedup_window_ms: None,
        peer_queue: None,
    };
    let dir = std::env::temp_dir().join(format!("esc-sim-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Seed 4 draws a 5-member plan with other faults.
    let text = shrink::seed_file_text("cluster", 4, "a plan-carrying seed file", &plan);
    shrink::write_new_file(&dir.join("cluster-4.toml"), &text).unwrap();
    let files = runner::load_seed_files(&dir).expect("the seed file parses");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(files.len(), 1);
    let (path, f) = &files[0];
    let r = runner::replay_seed_file(path, f);
    assert_eq!(r.plan, Some(plan.describe()), "ran the file's plan");
    assert!(!r.failed(), "{}", r.failure_report());
    assert!(r.replay_line().ends_with(&format!("--plan {}", path.display())), "{}", r.replay_line());
    let drawn = runner::run_seed("cluster", 4, runner::default_options());
    assert_ne!(drawn.plan, r.plan, "seed 4's own plan differs, so the test shows the file's plan ran");
}

/// A seed file whose `[plan]` is not a usable plan is refused when loading, not when running.
#[test]
fn a_seed_file_with_a_bad_plan_is_refused() {
    let dir = std::env::temp_dir().join(format!("esc-sim-bad-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = "scenario = \"cluster\"\nseed = 1\nnote = \"n\"\n\n[plan]\nnodes = 3\nproducers = 1\nbatches = 1\n\
                consumers = 1\ndrift_ppm = [0, 0, 0]\n\n[[plan.faults]]\nat_ms = 100\nkind = \"isolate\"\nnode = 7\n";
    std::fs::write(dir.join("cluster-1.toml"), text).unwrap();
    let err = runner::load_seed_files(&dir).unwrap_err();
    std::fs::write(
        dir.join("cluster-1.toml"),
        text.replace("scenario = \"cluster\"", "scenario = \"ingest\""),
    )
    .unwrap();
    let err2 = runner::load_seed_files(&dir).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.contains("outside"), "{err}");
    assert!(err2.contains("takes no plan"), "{err2}");
}
