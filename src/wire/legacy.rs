//! The legacy EventStreamCore frame, byte for byte.
//!
//! ```text
//! u32 BE  body length (bytes after this field)
//! u8      priority   0 BATCH, 1 LOW, 2 MEDIUM, 3 HIGH, 4 CRITICAL
//! u16 BE  topic length (at least 1)
//! [u8]    topic (UTF-8)
//! [u8]    payload: the rest of the body
//! ```
//!
//! A body length of 0 is a keep-alive that is skipped. Legacy frames get no reply.

use bytes::{BufMut, Bytes};

use crate::event::{Event, Priority, validate_topic};

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Smallest valid body: priority + topic length + a 1-byte topic would be 4, but the original's
/// check is on the fixed part (3 bytes); a 3-byte body then fails the topic-length check.
pub const MIN_BODY: usize = 3;

/// Why a legacy body was rejected. The framing is intact, so the connection goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    #[error("body of {0} bytes is shorter than the 3-byte fixed part")]
    TooShort(usize),
    #[error("priority {0} is not 0-4")]
    BadPriority(u8),
    #[error("topic length is 0")]
    EmptyTopic,
    #[error("topic length {topic_len} exceeds the {available} bytes left in the body")]
    TopicOverrun { topic_len: usize, available: usize },
    #[error("topic is not valid: {0}")]
    BadTopic(&'static str),
}

/// Parses a legacy body (everything after the length prefix) into an anonymous event.
pub fn parse_body(body: &Bytes) -> Result<Event, LegacyError> {
    if body.len() < MIN_BODY {
        return Err(LegacyError::TooShort(body.len()));
    }
    let priority = Priority::from_u8(body[0]).ok_or(LegacyError::BadPriority(body[0]))?;
    let topic_len = usize::from(u16::from_be_bytes([body[1], body[2]]));
    if topic_len == 0 {
        return Err(LegacyError::EmptyTopic);
    }
    let available = body.len() - MIN_BODY;
    if topic_len > available {
        return Err(LegacyError::TopicOverrun { topic_len, available });
    }
    let topic_bytes = &body[MIN_BODY..MIN_BODY + topic_len];
    let topic = std::str::from_utf8(topic_bytes).map_err(|_| LegacyError::BadTopic("not UTF-8"))?;
    validate_topic(topic).map_err(LegacyError::BadTopic)?;
    let payload = body.slice(MIN_BODY + topic_len..);
    Ok(Event::new(topic, priority, payload))
}

/// Appends one legacy frame to `out`. Panics if the topic is empty or longer than `u16::MAX`
/// bytes, or the body exceeds `u32::MAX` bytes (a programming error on the sending side).
pub fn encode(priority: Priority, topic: &str, payload: &[u8], out: &mut impl BufMut) {
    assert!(!topic.is_empty() && topic.len() <= usize::from(u16::MAX), "legacy topic length");
    let body_len = MIN_BODY + topic.len() + payload.len();
    let body_len = u32::try_from(body_len).expect("legacy body fits in u32");
    out.put_u32(body_len);
    out.put_u8(priority.as_u8());
    out.put_u16(topic.len() as u16);
    out.put_slice(topic.as_bytes());
    out.put_slice(payload);
}

/// One legacy frame as a fresh buffer.
pub fn encode_to_vec(priority: Priority, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(LENGTH_PREFIX + MIN_BODY + topic.len() + payload.len());
    encode(priority, topic, payload, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_exactly_the_original_layout() {
        // struct.pack('>I', 3 + 4 + 2) + struct.pack('>BH', 3, 4) + b'temp' + b'hi'
        let got = encode_to_vec(Priority::High, "temp", b"hi");
        let want = [0, 0, 0, 9, 3, 0, 4, b't', b'e', b'm', b'p', b'h', b'i'];
        assert_eq!(got, want);
    }

    #[test]
    fn parses_a_body() {
        let frame = encode_to_vec(Priority::Critical, "sensor/pressure", &[201]);
        let e = parse_body(&Bytes::copy_from_slice(&frame[4..])).unwrap();
        assert_eq!(e.topic, "sensor/pressure");
        assert_eq!(e.priority, Priority::Critical);
        assert_eq!(&e.payload[..], &[201]);
        assert_eq!(e.idempotency_key(), None);
    }

    #[test]
    fn empty_payload_is_valid() {
        let frame = encode_to_vec(Priority::Batch, "t", b"");
        assert!(parse_body(&Bytes::copy_from_slice(&frame[4..])).unwrap().payload.is_empty());
    }

    #[test]
    fn rejects_each_malformation() {
        let b = |v: &[u8]| Bytes::copy_from_slice(v);
        assert_eq!(parse_body(&b(&[1, 0])), Err(LegacyError::TooShort(2)));
        assert_eq!(parse_body(&b(&[5, 0, 1, b'a'])), Err(LegacyError::BadPriority(5)));
        assert_eq!(parse_body(&b(&[1, 0, 0, b'a'])), Err(LegacyError::EmptyTopic));
        assert_eq!(
            parse_body(&b(&[1, 0, 2, b'a'])),
            Err(LegacyError::TopicOverrun { topic_len: 2, available: 1 })
        );
        assert!(matches!(parse_body(&b(&[1, 0, 1, 0xFF])), Err(LegacyError::BadTopic(_))));
        assert!(matches!(parse_body(&b(&[1, 0, 1, b'\n'])), Err(LegacyError::BadTopic(_))));
    }
}
