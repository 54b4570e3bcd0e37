#![no_main]
//! Body: [`eventstreamcore::fuzzing::peer_handshake`] (shared with tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| eventstreamcore::fuzzing::peer_handshake(data));
