#![no_main]
//! Body: [`eventstreamcore::fuzzing::acked_frame`] (shared with tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| eventstreamcore::fuzzing::acked_frame(data));
