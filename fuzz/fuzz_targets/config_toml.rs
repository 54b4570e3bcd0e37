#![no_main]
//! Body: [`eventstreamcore::fuzzing::config_toml`] (shared with tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| eventstreamcore::fuzzing::config_toml(data));
