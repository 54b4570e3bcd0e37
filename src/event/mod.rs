//! The domain event (shared by the wire codecs, the node and the pipeline) and its own versioned
//! codec ([`codec`]) for everything replicated or stored.

pub mod codec;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

/// Priority of an event, as on the legacy wire (one byte, 0..=4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[repr(u8)]
pub enum Priority {
    Batch = 0,
    Low = 1,
    Medium = 2,
    High = 3,
    Critical = 4,
}

impl Priority {
    /// All priorities, lowest first.
    pub const ALL: [Priority; 5] =
        [Priority::Batch, Priority::Low, Priority::Medium, Priority::High, Priority::Critical];

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses the wire byte; `None` above 4.
    pub fn from_u8(b: u8) -> Option<Priority> {
        Priority::ALL.get(usize::from(b)).copied()
    }

    /// Upper-case name as in the original (`BATCH` … `CRITICAL`).
    pub fn name(self) -> &'static str {
        match self {
            Priority::Batch => "BATCH",
            Priority::Low => "LOW",
            Priority::Medium => "MEDIUM",
            Priority::High => "HIGH",
            Priority::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error parsing a priority name or number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority `{0}` (expected BATCH, LOW, MEDIUM, HIGH, CRITICAL or 0-4)")]
pub struct ParsePriorityError(pub String);

impl FromStr for Priority {
    type Err = ParsePriorityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(n) = s.parse::<u8>() {
            return Priority::from_u8(n).ok_or_else(|| ParsePriorityError(s.to_string()));
        }
        Priority::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParsePriorityError(s.to_string()))
    }
}

/// One header of an event: a name and an opaque value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Bytes,
}

/// Producer id 0 means "anonymous": the event carries no idempotency key and is never
/// deduplicated (legacy frames are anonymous).
pub const ANONYMOUS_PRODUCER: u64 = 0;

/// An event as a producer publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub topic: String,
    pub priority: Priority,
    /// With `sequence`, the idempotency key; [`ANONYMOUS_PRODUCER`] for none.
    pub producer_id: u64,
    pub sequence: u64,
    pub key: Option<Bytes>,
    pub headers: Vec<Header>,
    pub payload: Bytes,
}

impl Event {
    /// An anonymous event with no key and no headers.
    pub fn new(topic: impl Into<String>, priority: Priority, payload: impl Into<Bytes>) -> Self {
        Event {
            topic: topic.into(),
            priority,
            producer_id: ANONYMOUS_PRODUCER,
            sequence: 0,
            key: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// The idempotency key, if the event has one.
    pub fn idempotency_key(&self) -> Option<(u64, u64)> {
        (self.producer_id != ANONYMOUS_PRODUCER).then_some((self.producer_id, self.sequence))
    }

    /// Bytes this event occupies in memory, roughly (for limits and metrics).
    pub fn approx_size(&self) -> usize {
        self.topic.len()
            + self.payload.len()
            + self.key.as_ref().map_or(0, |k| k.len())
            + self.headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>()
            + 32
    }
}

/// An event as stored in a topic log: the event plus where and when it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub offset: u64,
    /// Milliseconds since the Unix epoch, stamped by the node that ordered the event (the leader).
    pub timestamp_ms: u64,
    pub event: Event,
}

/// Checks a topic name: 1..=255 bytes of UTF-8 with no control characters.
pub fn validate_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("topic is empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err("topic longer than 255 bytes");
    }
    if topic.chars().any(char::is_control) {
        return Err("topic contains a control character");
    }
    Ok(())
}

/// Longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_wire_bytes_match_the_original() {
        assert_eq!(Priority::Batch.as_u8(), 0);
        assert_eq!(Priority::Low.as_u8(), 1);
        assert_eq!(Priority::Medium.as_u8(), 2);
        assert_eq!(Priority::High.as_u8(), 3);
        assert_eq!(Priority::Critical.as_u8(), 4);
        assert_eq!(Priority::from_u8(5), None);
        for p in Priority::ALL {
            assert_eq!(Priority::from_u8(p.as_u8()), Some(p));
        }
    }

    #[test]
    fn priority_parses_names_and_numbers() {
        assert_eq!("critical".parse::<Priority>(), Ok(Priority::Critical));
        assert_eq!("HIGH".parse::<Priority>(), Ok(Priority::High));
        assert_eq!("0".parse::<Priority>(), Ok(Priority::Batch));
        assert!("5".parse::<Priority>().is_err());
        assert!("urgent".parse::<Priority>().is_err());
    }

    #[test]
    fn topics_are_validated() {
        assert!(validate_topic("sensor/temperature").is_ok());
        assert!(validate_topic("").is_err());
        assert!(validate_topic(&"x".repeat(256)).is_err());
        assert!(validate_topic("a\nb").is_err());
    }

    #[test]
    fn anonymous_events_have_no_idempotency_key() {
        let mut e = Event::new("t", Priority::Low, "p");
        assert_eq!(e.idempotency_key(), None);
        e.producer_id = 9;
        e.sequence = 3;
        assert_eq!(e.idempotency_key(), Some((9, 3)));
    }
}
