#![no_main]
//! Body: [`eventstreamcore::fuzzing::legacy_frame`] (shared with tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| eventstreamcore::fuzzing::legacy_frame(data));
