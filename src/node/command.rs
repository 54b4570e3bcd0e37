//! What the cluster replicates: one [`Command`] per Raft entry, decoded identically on every
//! replica. The leader stamps its wall time into the entry; replicas never read their own clock
//! to apply it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::event::Event;
use crate::wire::acked::{BodyError, decode_events, encode_events};

const TAG_PUBLISH: u8 = 1;

/// A replicated state-machine command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Append `events` (deduplicated by idempotency key) at the leader's time `stamped_ms`.
    Publish { stamped_ms: u64, events: Vec<Event> },
}

/// A Raft entry that does not decode as a [`Command`] (written by a newer or broken node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("unknown command tag {0}")]
    UnknownTag(u8),
    #[error("truncated command")]
    Truncated,
    #[error("bad publish body: {0}")]
    Body(#[from] BodyError),
}

impl Command {
    /// The entry payload.
    pub fn encode(&self) -> Bytes {
        match self {
            Command::Publish { stamped_ms, events } => {
                let size: usize = events.iter().map(|e| e.approx_size() + 32).sum();
                let mut out = BytesMut::with_capacity(16 + size);
                out.put_u8(TAG_PUBLISH);
                out.put_u64(*stamped_ms);
                encode_events(&mut out, events);
                out.freeze()
            }
        }
    }

    /// Parses an entry payload. Never panics.
    pub fn decode(mut data: Bytes) -> Result<Command, CommandError> {
        if data.is_empty() {
            return Err(CommandError::Empty);
        }
        match data.get_u8() {
            TAG_PUBLISH => {
                if data.remaining() < 8 {
                    return Err(CommandError::Truncated);
                }
                let stamped_ms = data.get_u64();
                Ok(Command::Publish { stamped_ms, events: decode_events(data)? })
            }
            t => Err(CommandError::UnknownTag(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;
    use proptest::prelude::*;

    #[test]
    fn publish_round_trips() {
        let mut e = Event::new("sensor/t", Priority::High, &b"\x51"[..]);
        e.producer_id = 7;
        e.sequence = 9;
        e.key = Some(Bytes::from_static(b"k"));
        let c = Command::Publish { stamped_ms: 1_700_000_000_123, events: vec![e.clone(), e] };
        assert_eq!(Command::decode(c.encode()).unwrap(), c);
        let empty = Command::Publish { stamped_ms: 0, events: vec![] };
        assert_eq!(Command::decode(empty.encode()).unwrap(), empty);
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert_eq!(Command::decode(Bytes::new()), Err(CommandError::Empty));
        assert_eq!(Command::decode(Bytes::from_static(&[9])), Err(CommandError::UnknownTag(9)));
        assert_eq!(Command::decode(Bytes::from_static(&[1, 0, 0])), Err(CommandError::Truncated));
        let mut good = Command::Publish { stamped_ms: 5, events: vec![Event::new("a", Priority::Low, "x")] }
            .encode()
            .to_vec();
        good.push(0);
        assert!(matches!(Command::decode(Bytes::from(good)), Err(CommandError::Body(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Command::decode(Bytes::from(data));
        }
    }
}
