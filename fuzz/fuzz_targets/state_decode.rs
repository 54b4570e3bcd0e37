#![no_main]
//! Body: [`eventstreamcore::fuzzing::state_decode`] (shared with tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| eventstreamcore::fuzzing::state_decode(data));
