//! Replays every regression seed in `seeds/` (a seed that once failed is replayed forever).
#![cfg(madsim)]

use std::path::Path;

use eventstreamcore_sim::runner::{self, default_options};

#[test]
fn every_regression_seed_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let files = runner::load_seed_files(&dir).expect("seed files parse");
    let mut failed = Vec::new();
    for (path, f) in &files {
        let r = runner::run_seed(&f.scenario, f.seed, default_options());
        if r.failed() {
            eprintln!("{} ({}):\n{}", path.display(), f.note, r.failure_report());
            failed.push(path.display().to_string());
        }
        if f.determinism
            && let Err(e) = runner::check_determinism(&f.scenario, f.seed)
        {
            eprintln!("{} ({}): not deterministic: {e}", path.display(), f.note);
            failed.push(path.display().to_string());
        }
    }
    println!("replayed {} regression seeds", files.len());
    assert!(failed.is_empty(), "regression seeds failed: {failed:?}");
}
