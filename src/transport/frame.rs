//! Message frames on a peer connection: one [`crate::record`] each (`u32` length, `u32` CRC32C
//! of the length bytes and the payload, both little-endian), the payload being the [`Message`]
//! codec bytes. Files and connections share the framing; only the reading differs (a stream asks
//! for more bytes where a file has a torn tail).
//!
//! The length counts the payload only and must be in `1..=max_frame_bytes`; the receiver checks it
//! before buffering the payload, so a hostile length cannot make it allocate.

use crate::raft::codec::DecodeError;
use crate::raft::message::Message;
use crate::record;

/// Bytes before the payload: length and checksum.
pub const FRAME_HEADER_LEN: usize = record::HEADER;

/// Why a frame was refused. Any of these closes the connection it arrived on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is zero or above the limit.
    #[error("frame length {len} outside 1..={max}")]
    BadLength {
        /// The length read.
        len: u64,
        /// The configured `max_frame_bytes`.
        max: usize,
    },
    /// The payload does not match its checksum.
    #[error("checksum mismatch: header says {stored:#010x}, payload hashes to {computed:#010x}")]
    Checksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the payload received.
        computed: u32,
    },
    /// The checksum matched but the payload is not a message.
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
}

/// Appends one frame holding `msg` to `buf`. Returns the frame's payload length; if that exceeds
/// `max_frame_bytes` nothing is appended (`buf` is left as it was) and `Err(len)` is returned.
pub fn encode_frame(msg: &Message, max_frame_bytes: usize, buf: &mut Vec<u8>) -> Result<usize, usize> {
    record::try_append_with(buf, max_frame_bytes, |b| msg.encode(b))
}

/// Decodes the frame at the start of `buf`: `Ok(None)` if more bytes are needed, else the message
/// and how many bytes it used. Checks the length before waiting for the payload.
pub fn decode_frame(buf: &[u8], max_frame_bytes: usize) -> Result<Option<(Message, usize)>, FrameError> {
    let Some((len, stored)) = record::header_at(buf, 0) else {
        return Ok(None);
    };
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len == 0 || len_usize > max_frame_bytes {
        return Err(FrameError::BadLength { len: u64::from(len), max: max_frame_bytes });
    }
    let total = FRAME_HEADER_LEN + len_usize;
    let Some(payload) = buf.get(FRAME_HEADER_LEN..total) else {
        return Ok(None);
    };
    let computed = record::checksum(len.to_le_bytes(), payload);
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(Some((Message::decode(payload)?, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::Body;
    use crate::raft::types::{Entry, EntryKind};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn append(n: u64, payload: usize) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: Body::Append {
                prev_index: n,
                prev_term: 3,
                entries: vec![Entry {
                    term: 3,
                    index: n + 1,
                    kind: EntryKind::Normal,
                    data: Bytes::from(vec![7u8; payload]),
                }],
                commit: n,
            },
        }
    }

    #[test]
    fn frames_round_trip_back_to_back_and_byte_by_byte() {
        let msgs: Vec<Message> = (0..20).map(|i| append(i, i as usize * 3)).collect();
        let mut buf = Vec::new();
        for m in &msgs {
            encode_frame(m, 1 << 20, &mut buf).unwrap();
        }
        // All at once.
        let mut at = 0;
        let mut out = Vec::new();
        while let Some((m, used)) = decode_frame(&buf[at..], 1 << 20).unwrap() {
            out.push(m);
            at += used;
        }
        assert_eq!(at, buf.len());
        assert_eq!(out, msgs);
        // Every prefix of the first frame asks for more rather than failing.
        let first_len = FRAME_HEADER_LEN + u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        for cut in 0..first_len {
            assert_eq!(decode_frame(&buf[..cut], 1 << 20), Ok(None), "prefix {cut}");
        }
    }

    #[test]
    fn oversized_messages_are_not_framed_and_oversized_lengths_are_refused_early() {
        let big = append(1, 1000);
        let mut buf = vec![9u8];
        let len = encode_frame(&big, 100, &mut buf).unwrap_err();
        assert!(len > 1000);
        assert_eq!(buf, vec![9u8], "a refused message leaves the buffer untouched");
        // A header announcing more than the limit fails before any payload arrives.
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&101u32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode_frame(&hdr, 100), Err(FrameError::BadLength { len: 101, max: 100 }));
        let zero = [0u8; 8];
        assert!(matches!(decode_frame(&zero, 100), Err(FrameError::BadLength { len: 0, .. })));
    }

    /// What is on the wire since the peer handshake's version 2: a [`record`], nothing else.
    #[test]
    fn a_frame_is_a_record() {
        let m = append(5, 3);
        let mut frame = Vec::new();
        let len = encode_frame(&m, 1 << 20, &mut frame).unwrap();
        let mut payload = Vec::new();
        m.encode(&mut payload);
        let mut want = Vec::new();
        record::append(&mut want, &payload);
        assert_eq!(frame, want);
        assert_eq!(record::read_at(&frame, 0), Ok((&payload[..], FRAME_HEADER_LEN + len)));
        assert_eq!(&frame[..4], &(len as u32).to_le_bytes());
    }

    #[test]
    fn a_damaged_length_is_a_checksum_error_not_a_shorter_frame() {
        let mut buf = Vec::new();
        encode_frame(&append(5, 10), 1 << 20, &mut buf).unwrap();
        buf[0] -= 1;
        assert!(matches!(decode_frame(&buf, 1 << 20), Err(FrameError::Checksum { .. })));
    }

    #[test]
    fn a_flipped_bit_is_a_checksum_error() {
        let mut buf = Vec::new();
        encode_frame(&append(5, 10), 1 << 20, &mut buf).unwrap();
        let last = buf.len() - 1;
        buf[last] ^= 0x01;
        assert!(matches!(decode_frame(&buf, 1 << 20), Err(FrameError::Checksum { .. })));
    }

    #[test]
    fn a_valid_checksum_over_garbage_is_a_decode_error() {
        let mut buf = Vec::new();
        record::append(&mut buf, &[0xffu8; 12]);
        assert!(matches!(decode_frame(&buf, 1 << 20), Err(FrameError::Decode(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..1024) {
            let mut at = 0;
            while let Ok(Some((_, used))) = decode_frame(&bytes[at..], max) {
                prop_assert!(used > 0);
                at += used;
            }
        }

        #[test]
        fn arbitrary_payload_with_valid_header_never_panics(payload in proptest::collection::vec(any::<u8>(), 1..256)) {
            let mut buf = Vec::new();
            record::append(&mut buf, &payload);
            if let Ok(Some((m, used))) = decode_frame(&buf, 1 << 20) {
                prop_assert_eq!(used, buf.len());
                // Whatever decoded re-encodes to a frame that decodes to the same message.
                let mut again = Vec::new();
                encode_frame(&m, 1 << 20, &mut again).unwrap();
                prop_assert_eq!(decode_frame(&again, 1 << 20).unwrap().unwrap().0, m);
            }
        }
    }
}
