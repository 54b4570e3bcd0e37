//! The replicated table of consumer positions: `(name, topic) → next offset`, changed only by
//! committed `Command::CommitOffset` entries, so every replica holds the same table. Its snapshot
//! block is appended after the rest of the state.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::consumers::{ConsumerError, ConsumerPosition, MAX_CONSUMERS, OffsetCommit, validate_commit};
use crate::event::codec::{get_str16, put_str16};

/// Committed positions of the named consumers, bounded by [`MAX_CONSUMERS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerTable {
    positions: BTreeMap<(String, String), u64>,
}

impl ConsumerTable {
    /// Applies a commit against a topic that currently ends at `topic_end`; returns the position
    /// now recorded. Deterministic: it reads nothing but its arguments and the table.
    pub fn commit(&mut self, c: &OffsetCommit, topic_end: u64) -> Result<u64, ConsumerError> {
        validate_commit(c)?;
        if c.offset > topic_end {
            return Err(ConsumerError::PastEnd { topic: c.topic.clone(), offset: c.offset, end: topic_end });
        }
        let key = (c.name.clone(), c.topic.clone());
        let next = match self.positions.get(&key) {
            Some(&old) if !c.reset => old.max(c.offset),
            Some(_) => c.offset,
            None if self.positions.len() >= MAX_CONSUMERS => return Err(ConsumerError::TooMany),
            None => c.offset,
        };
        let old = self.positions.insert(key, next);
        debug_assert!(c.reset || old.is_none_or(|o| o <= next), "a position moved back without a reset");
        Ok(next)
    }

    /// The committed position of `name` on `topic`.
    pub fn get(&self, name: &str, topic: &str) -> Option<u64> {
        self.positions.get(&(name.to_string(), topic.to_string())).copied()
    }

    /// Number of `(name, topic)` pairs.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// True if no consumer has committed.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Every consumer (or those called `name`), sorted by name then topic, with the topic's end.
    pub fn list(&self, name: Option<&str>, end_of: impl Fn(&str) -> u64) -> Vec<ConsumerPosition> {
        self.positions
            .iter()
            .filter(|((n, _), _)| name.is_none_or(|want| want == n))
            .map(|((n, t), &committed)| ConsumerPosition {
                name: n.clone(),
                topic: t.clone(),
                committed,
                end_offset: end_of(t),
            })
            .collect()
    }

    /// Appends the snapshot block: u32 count, then per consumer name, topic (u16-length strings)
    /// and the u64 position.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32(self.positions.len() as u32);
        for ((name, topic), next) in &self.positions {
            put_str16(out, name);
            put_str16(out, topic);
            out.put_u64(*next);
        }
    }

    /// Reads the block [`encode`](Self::encode) wrote from the front of `b`. Never panics.
    pub fn decode(b: &mut Bytes) -> Result<ConsumerTable, String> {
        let mut t = ConsumerTable::default();
        if b.remaining() < 4 {
            return Err("truncated consumer count".into());
        }
        let n = b.get_u32() as usize;
        if n > MAX_CONSUMERS {
            return Err(format!("{n} consumers in the snapshot; at most {MAX_CONSUMERS}"));
        }
        for _ in 0..n {
            let name = get_str16(b, "consumer name").map_err(|e| e.to_string())?;
            let topic = get_str16(b, "consumer topic").map_err(|e| e.to_string())?;
            if b.remaining() < 8 {
                return Err("truncated consumer position".into());
            }
            let next = b.get_u64();
            validate_commit(&OffsetCommit {
                name: name.clone(),
                topic: topic.clone(),
                offset: next,
                reset: false,
            })
            .map_err(|e| format!("consumer in the snapshot: {e}"))?;
            if t.positions.insert((name, topic), next).is_some() {
                return Err("a consumer appears twice in the snapshot".into());
            }
        }
        Ok(t)
    }
}

const COMMIT_RESET: u8 = 0x01;

/// The `CommitOffset` entry payload: tag, name, topic (u16-length strings), offset, flags.
pub(super) fn encode_commit(tag: u8, c: &OffsetCommit) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + c.name.len() + c.topic.len());
    out.put_u8(tag);
    put_str16(&mut out, &c.name);
    put_str16(&mut out, &c.topic);
    out.put_u64(c.offset);
    out.put_u8(if c.reset { COMMIT_RESET } else { 0 });
    out.freeze()
}

/// Parses what [`encode_commit`] wrote after the tag; `None` if it is not exactly that.
pub(super) fn decode_commit(mut b: Bytes) -> Option<OffsetCommit> {
    let name = get_str16(&mut b, "consumer name").ok()?;
    let topic = get_str16(&mut b, "consumer topic").ok()?;
    if b.remaining() != 9 {
        return None;
    }
    let offset = b.get_u64();
    let reset = b.get_u8() & COMMIT_RESET != 0;
    Some(OffsetCommit { name, topic, offset, reset })
}

/// The lag gauge of every consumer, in the Prometheus text format (at most [`MAX_CONSUMERS`]
/// series: names are validated, so the label set is bounded).
pub fn render_lag(consumers: &[ConsumerPosition]) -> String {
    let name = "esc_consumer_lag";
    let mut out = format!(
        "# HELP {name} events stored on the topic but not yet committed by the named consumer\n\
         # TYPE {name} gauge\n"
    );
    for c in consumers {
        let topic = c.topic.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("{name}{{consumer=\"{}\",topic=\"{topic}\"}} {}\n", c.name, c.lag()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, topic: &str, offset: u64, reset: bool) -> OffsetCommit {
        OffsetCommit { name: name.into(), topic: topic.into(), offset, reset }
    }

    #[test]
    fn positions_never_move_back_without_a_reset() {
        let mut t = ConsumerTable::default();
        assert_eq!(t.commit(&c("a", "t", 5, false), 10), Ok(5));
        assert_eq!(t.commit(&c("a", "t", 3, false), 10), Ok(5));
        assert_eq!(t.get("a", "t"), Some(5));
        assert_eq!(t.commit(&c("a", "t", 8, false), 10), Ok(8));
        assert_eq!(t.commit(&c("a", "t", 2, true), 10), Ok(2));
        assert_eq!(t.get("a", "t"), Some(2));
        // Another topic of the same name is another consumer.
        assert_eq!(t.commit(&c("a", "u", 0, false), 0), Ok(0));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn commits_past_the_end_bad_names_and_a_full_table_are_refused() {
        let mut t = ConsumerTable::default();
        assert!(matches!(t.commit(&c("a", "t", 11, false), 10), Err(ConsumerError::PastEnd { end: 10, .. })));
        assert!(matches!(t.commit(&c("a b", "t", 1, false), 10), Err(ConsumerError::BadName(_))));
        assert!(t.is_empty());
        for i in 0..MAX_CONSUMERS {
            t.commit(&c(&format!("c{i}"), "t", 1, false), 10).unwrap();
        }
        assert_eq!(t.commit(&c("one-more", "t", 1, false), 10), Err(ConsumerError::TooMany));
        // An existing consumer still commits when the table is full.
        assert_eq!(t.commit(&c("c0", "t", 4, false), 10), Ok(4));
    }

    #[test]
    fn the_snapshot_block_round_trips_and_rejects_damage() {
        let mut t = ConsumerTable::default();
        t.commit(&c("a", "t", 5, false), 9).unwrap();
        t.commit(&c("b.2", "x/y", 0, false), 0).unwrap();
        let mut out = BytesMut::new();
        t.encode(&mut out);
        let bytes = out.freeze();
        assert_eq!(ConsumerTable::decode(&mut bytes.clone()), Ok(t.clone()));
        for cut in 0..bytes.len() {
            assert!(ConsumerTable::decode(&mut bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut huge = BytesMut::new();
        huge.put_u32(u32::MAX);
        assert!(ConsumerTable::decode(&mut huge.freeze()).is_err());
    }

    #[test]
    fn the_lag_gauge_has_one_series_per_consumer() {
        let mut t = ConsumerTable::default();
        t.commit(&c("a", "t\"q", 3, false), 9).unwrap();
        let text = render_lag(&t.list(None, |_| 9));
        assert!(text.contains("esc_consumer_lag{consumer=\"a\",topic=\"t\\\"q\"} 6\n"), "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1);
    }
}
