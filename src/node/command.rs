//! What the cluster replicates: one [`Command`] per Raft entry, decoded identically on every
//! replica. The leader stamps its wall time into the entry; replicas never read their own clock
//! to apply it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::consumers::OffsetCommit;
use crate::event::Event;
use crate::event::codec::{CodecError, decode_events, encode_events, get_str16, put_str16};
use crate::node::state::retention::TopicSettings;

const TAG_PUBLISH: u8 = 1;
const TAG_CHECKPOINT: u8 = 2;
const TAG_COMMIT_OFFSET: u8 = 5;
const TAG_TOPIC_SETTINGS: u8 = 3;
const TAG_TRIM: u8 = 4;

/// A replicated state-machine command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Append `events` (deduplicated by idempotency key) at the leader's time `stamped_ms`.
    Publish { stamped_ms: u64, events: Vec<Event> },
    /// The leader's event pipeline got this far: per topic the next unhandled offset, and the
    /// idempotency keys whose transactional effects happened since the last checkpoint.
    Checkpoint { positions: Vec<(String, u64)>, handled: Vec<(u64, u64)> },
    /// A named consumer's position (see `node/consumers.rs`; never moves back unless `reset`).
    CommitOffset(OffsetCommit),
    /// The leader's configured per-topic retention settings, replacing the replicated ones.
    TopicSettings(TopicSettings),
    /// Retention: drop the events of `topic` below offset `before`.
    Trim { topic: String, before: u64 },
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
    Body(#[from] CodecError),
    #[error("bad topic settings: {0}")]
    Settings(String),
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
            Command::Checkpoint { positions, handled } => {
                let mut out = BytesMut::with_capacity(16 + positions.len() * 40 + handled.len() * 16);
                out.put_u8(TAG_CHECKPOINT);
                out.put_u32(positions.len() as u32);
                for (topic, next) in positions {
                    put_str16(&mut out, topic);
                    out.put_u64(*next);
                }
                out.put_u32(handled.len() as u32);
                for (p, q) in handled {
                    out.put_u64(*p);
                    out.put_u64(*q);
                }
                out.freeze()
            }
            Command::CommitOffset(c) => super::consumers::encode_commit(TAG_COMMIT_OFFSET, c),
            Command::TopicSettings(settings) => {
                let mut out = BytesMut::with_capacity(64);
                out.put_u8(TAG_TOPIC_SETTINGS);
                settings.encode(&mut out);
                out.freeze()
            }
            Command::Trim { topic, before } => {
                let mut out = BytesMut::with_capacity(16 + topic.len());
                out.put_u8(TAG_TRIM);
                put_str16(&mut out, topic);
                out.put_u64(*before);
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
            TAG_CHECKPOINT => {
                let need = |d: &Bytes, n: usize| {
                    if d.remaining() < n { Err(CommandError::Truncated) } else { Ok(()) }
                };
                need(&data, 4)?;
                let n = data.get_u32();
                let mut positions = Vec::new();
                for _ in 0..n {
                    let topic = get_str16(&mut data, "topic").map_err(|_| CommandError::Truncated)?;
                    need(&data, 8)?;
                    positions.push((topic, data.get_u64()));
                }
                need(&data, 4)?;
                let k = data.get_u32() as usize;
                if data.remaining() != k.saturating_mul(16) {
                    return Err(CommandError::Truncated);
                }
                let handled = (0..k).map(|_| (data.get_u64(), data.get_u64())).collect();
                Ok(Command::Checkpoint { positions, handled })
            }
            TAG_COMMIT_OFFSET => super::consumers::decode_commit(data)
                .map(Command::CommitOffset)
                .ok_or(CommandError::Truncated),
            TAG_TOPIC_SETTINGS => {
                let settings = TopicSettings::decode(&mut data).map_err(CommandError::Settings)?;
                if data.has_remaining() {
                    return Err(CommandError::Settings(format!("{} trailing bytes", data.remaining())));
                }
                Ok(Command::TopicSettings(settings))
            }
            TAG_TRIM => {
                let topic = get_str16(&mut data, "topic").map_err(|_| CommandError::Truncated)?;
                if data.remaining() != 8 {
                    return Err(CommandError::Truncated);
                }
                Ok(Command::Trim { topic, before: data.get_u64() })
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
        let cp = Command::Checkpoint {
            positions: vec![("a".into(), 5), ("b/c".into(), 0)],
            handled: vec![(1, 2)],
        };
        assert_eq!(Command::decode(cp.encode()).unwrap(), cp);
        let commit = Command::CommitOffset(OffsetCommit {
            name: "c".into(),
            topic: "t/1".into(),
            offset: 9,
            reset: true,
        });
        assert_eq!(Command::decode(commit.encode()).unwrap(), commit);
        assert_eq!(commit.encode()[0], 5, "consumers own command tag 5");
        for bytes in [cp.encode(), commit.encode()] {
            for cut in 1..bytes.len() {
                assert!(Command::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
            }
        }
        let mut settings = TopicSettings::default();
        settings.default.max_events = Some(10);
        let rule = crate::node::TopicLimits {
            max_bytes: Some(1 << 20),
            max_age_ms: Some(60_000),
            max_events: None,
            discard: crate::node::Discard::New,
        };
        settings.rules.insert("audit.*".into(), rule);
        for c in [Command::TopicSettings(settings), Command::Trim { topic: "orders".into(), before: 42 }] {
            assert_eq!(Command::decode(c.encode()).unwrap(), c);
            let bytes = c.encode();
            for cut in 1..bytes.len() {
                assert!(Command::decode(bytes.slice(..cut)).is_err(), "cut at {cut} of {c:?}");
            }
        }
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
