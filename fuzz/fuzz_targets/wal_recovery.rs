#![no_main]
//! Body: [`eventstreamcore::fuzzing::wal_recovery`] (shared with tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| eventstreamcore::fuzzing::wal_recovery(data));
