//! Durable consumers, the domain side: what a named consumer is, the limits on names and on how
//! many there may be, and why a commit is refused. The replicated table lives in
//! `node/consumers.rs`; the wire carries these types in COMMIT / CONSUMERS frames.
//!
//! A consumer is a `(name, topic)` pair with a committed position: the offset of the next event
//! it has not yet handled. Positions only move forward — a commit below the current position
//! leaves it where it is — unless the commit is an explicit *reset*, which may move it anywhere
//! from 0 to the topic's end.

/// Most `(name, topic)` pairs the cluster remembers (also the bound on the lag metric's labels).
pub const MAX_CONSUMERS: usize = 1024;
/// Longest consumer name, in bytes.
pub const MAX_CONSUMER_NAME: usize = 128;

/// A request to record a consumer's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub name: String,
    pub topic: String,
    /// The next offset the consumer has not handled yet.
    pub offset: u64,
    /// Allow the position to move back (otherwise a lower offset leaves it unchanged).
    pub reset: bool,
}

/// One consumer's committed position and the topic's end, as a member knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPosition {
    pub name: String,
    pub topic: String,
    /// The next offset to deliver to this consumer.
    pub committed: u64,
    /// One past the topic's last stored offset.
    pub end_offset: u64,
}

impl ConsumerPosition {
    /// Events stored but not yet committed by this consumer.
    pub fn lag(&self) -> u64 {
        self.end_offset.saturating_sub(self.committed)
    }
}

/// Why a commit was refused (never retryable as it stands).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    #[error("consumer name `{0}` is invalid: use 1 to {MAX_CONSUMER_NAME} characters from A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("topic `{topic}` is invalid: {why}")]
    BadTopic { topic: String, why: &'static str },
    #[error(
        "the cluster already has {MAX_CONSUMERS} consumers (name, topic); a new one is refused \
         (reuse a name or commit on a topic it already follows)"
    )]
    TooMany,
    #[error(
        "offset {offset} is past the end of topic `{topic}` (end offset {end}); commit only what was read"
    )]
    PastEnd { topic: String, offset: u64, end: u64 },
}

/// Checks a consumer name: 1 to [`MAX_CONSUMER_NAME`] bytes of `A-Z a-z 0-9 . _ -` (safe in
/// logs, metric labels and file names).
pub fn validate_name(name: &str) -> Result<(), ConsumerError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CONSUMER_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(ConsumerError::BadName(name.chars().take(MAX_CONSUMER_NAME + 1).collect())) }
}

/// Checks everything about a commit that does not depend on the replicated state.
pub fn validate_commit(c: &OffsetCommit) -> Result<(), ConsumerError> {
    validate_name(&c.name)?;
    crate::event::validate_topic(&c.topic)
        .map_err(|why| ConsumerError::BadTopic { topic: c.topic.chars().take(256).collect(), why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(validate_name("billing-v2.worker_1").is_ok());
        assert!(validate_name(&"a".repeat(MAX_CONSUMER_NAME)).is_ok());
        for bad in ["", "has space", "quote\"", "new\nline", "ümlaut", &"a".repeat(MAX_CONSUMER_NAME + 1)] {
            assert!(matches!(validate_name(bad), Err(ConsumerError::BadName(_))), "{bad:?}");
        }
        let c = OffsetCommit { name: "ok".into(), topic: String::new(), offset: 0, reset: false };
        assert!(matches!(validate_commit(&c), Err(ConsumerError::BadTopic { .. })));
    }

    #[test]
    fn lag_never_underflows() {
        let p = ConsumerPosition { name: "a".into(), topic: "t".into(), committed: 7, end_offset: 5 };
        assert_eq!(p.lag(), 0);
        assert_eq!(ConsumerPosition { committed: 2, ..p }.lag(), 3);
    }
}
