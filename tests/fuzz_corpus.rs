//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same function
//! its cargo-fuzz target calls ([`eventstreamcore::fuzzing`]), so what the fuzzer once explored
//! (and every crash it found, kept there as a regression input) is checked by plain `cargo test`.
//! A missing or empty corpus fails: this test cannot pass by finding nothing.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` (re)writes the seed inputs.
#![cfg(not(madsim))]
// Reads the corpus files from the repository: not on the simulated path.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;

use eventstreamcore::fuzzing::{TARGETS, seeds};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

#[test]
fn every_corpus_file_replays_without_a_panic() {
    for (target, run) in TARGETS {
        let dir = corpus_dir(target);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("readable corpus dir").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
            n += 1;
        }
        assert!(n > 0, "corpus {} is empty", dir.display());
    }
}

#[test]
fn every_target_has_seeds() {
    for (target, run) in TARGETS {
        let s = seeds(target);
        assert!(!s.is_empty(), "{target} has no seeds");
        s.iter().for_each(|input| run(input));
    }
}

#[test]
#[ignore = "writes fuzz/corpus/*/seed-*; run by hand before fuzzing"]
fn write_seed_corpus() {
    for (target, _) in TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, input) in seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
        }
    }
}
