//! Per-topic retention, decided by replicated state: the topic settings (from the leader's config,
//! replicated as a [`Command::TopicSettings`](super::command::Command::TopicSettings) entry), the
//! trims the leader proposes when a topic exceeds them, a full `discard = "new"` topic refusing a
//! publish at apply, reads below the first retained offset, and the snapshot block that carries
//! the settings and first offsets. Everything here is computed from committed entries and the
//! time stamped into them, never from a local clock, so every replica trims the same events.
//!
//! A child module of `state` (it reads the topic logs directly).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{ApplyError, EventLogState, ReadError, SnapshotDecodeError, get_str};
use crate::event::codec::{get_str16, put_str16};
use crate::event::{Event, StoredEvent};
use crate::service::{Appended, FetchReply};
use crate::store::{StoreError, TopicStore};

/// What a full topic does with a new event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discard {
    /// Drop the oldest events (the leader trims them).
    #[default]
    Old,
    /// Refuse the publish with an "out of range" error (JetStream's discard-new).
    New,
}

/// A maximum age in the config: milliseconds, or a duration string (`"500ms"`, `"30s"`,
/// `"10m"`, `"2h"`, `"7d"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AgeValue {
    Ms(u64),
    Text(String),
}

impl AgeValue {
    fn millis(&self) -> Result<u64, String> {
        let text = match self {
            AgeValue::Ms(v) => return Ok(*v),
            AgeValue::Text(t) => t.trim(),
        };
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (num, unit) = text.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("`{text}` is not a duration like 30s, 10m, 7d"))?;
        let mult = match unit.trim() {
            "" | "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            u => return Err(format!("`{text}`: unknown unit `{u}` (use ms, s, m, h or d)")),
        };
        n.checked_mul(mult).ok_or_else(|| format!("`{text}` is too long"))
    }
}

/// One `[topics."NAME"]` section of the config file (unknown keys are refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<AgeValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<u64>,
    #[serde(default)]
    pub discard: Discard,
}

/// The limits of one topic; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TopicLimits {
    pub max_bytes: Option<u64>,
    pub max_age_ms: Option<u64>,
    pub max_events: Option<u64>,
    pub discard: Discard,
}

/// The replicated topic settings: a default and rules by exact name or prefix (`"audit.*"`).
/// An exact name wins over a prefix; the longest prefix wins among prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSettings {
    pub default: TopicLimits,
    /// Pattern → limits (never contains the key `default`).
    pub rules: BTreeMap<String, TopicLimits>,
}

/// The config key naming the default section.
pub const DEFAULT_SECTION: &str = "default";

impl TopicSettings {
    /// The settings the `[topics]` sections of a config ask for; `Err((section, why))` if one is bad.
    pub fn from_config(sections: &BTreeMap<String, TopicConfig>) -> Result<TopicSettings, (String, String)> {
        let mut out = TopicSettings::default();
        for (name, c) in sections {
            let bad = |why: String| (name.clone(), why);
            let max_age_ms = c.max_age_ms.as_ref().map(AgeValue::millis).transpose().map_err(bad)?;
            let limits = TopicLimits {
                max_bytes: c.max_bytes,
                max_age_ms,
                max_events: c.max_events,
                discard: c.discard,
            };
            for (key, v) in [
                ("max_bytes", limits.max_bytes),
                ("max_age_ms", max_age_ms),
                ("max_events", limits.max_events),
            ] {
                if v == Some(0) {
                    return Err(bad(format!("{key} must be at least 1 (leave it out for no limit)")));
                }
            }
            if name == DEFAULT_SECTION {
                out.default = limits;
                continue;
            }
            let stem = name.strip_suffix('*').unwrap_or(name);
            if stem.is_empty() || stem.len() > u16::MAX as usize {
                return Err(bad("a topic pattern must be a name or a non-empty prefix ending in `*`".into()));
            }
            if stem.contains('*') {
                return Err(bad("`*` is only allowed at the end of a pattern".into()));
            }
            out.rules.insert(name.clone(), limits);
        }
        Ok(out)
    }

    /// The limits that apply to `topic`.
    pub fn limits_for(&self, topic: &str) -> &TopicLimits {
        if let Some(l) = self.rules.get(topic) {
            return l;
        }
        self.rules
            .iter()
            .filter_map(|(pat, l)| {
                pat.strip_suffix('*').filter(|p| topic.starts_with(p)).map(|p| (p.len(), l))
            })
            .max_by_key(|(len, _)| *len)
            .map_or(&self.default, |(_, l)| l)
    }

    /// Appends the settings (the body of a `TopicSettings` command and of the snapshot block).
    pub fn encode(&self, out: &mut BytesMut) {
        put_limits(out, &self.default);
        out.put_u32(self.rules.len() as u32);
        for (pat, l) in &self.rules {
            put_str16(out, pat);
            put_limits(out, l);
        }
    }

    /// Parses what [`encode`](Self::encode) wrote. Never panics.
    pub fn decode(b: &mut Bytes) -> Result<TopicSettings, String> {
        let default = get_limits(b)?;
        if b.remaining() < 4 {
            return Err("truncated topic rules".into());
        }
        let n = b.get_u32() as usize;
        if n.saturating_mul(2 + LIMITS_LEN) > b.remaining() {
            return Err("topic rule count larger than the data".into());
        }
        let mut rules = BTreeMap::new();
        for _ in 0..n {
            let pat = get_str16(b, "topic pattern").map_err(|e| e.to_string())?;
            rules.insert(pat, get_limits(b)?);
        }
        Ok(TopicSettings { default, rules })
    }
}

const LIMITS_LEN: usize = 8 * 3 + 1;

fn put_limits(out: &mut BytesMut, l: &TopicLimits) {
    for v in [l.max_bytes, l.max_age_ms, l.max_events] {
        out.put_u64(v.unwrap_or(0));
    }
    out.put_u8(match l.discard {
        Discard::Old => 0,
        Discard::New => 1,
    });
}

fn get_limits(b: &mut Bytes) -> Result<TopicLimits, String> {
    if b.remaining() < LIMITS_LEN {
        return Err("truncated topic limits".into());
    }
    let mut v = || Some(b.get_u64()).filter(|v| *v != 0);
    let (max_bytes, max_age_ms, max_events) = (v(), v(), v());
    let discard = match b.get_u8() {
        0 => Discard::Old,
        1 => Discard::New,
        d => return Err(format!("unknown discard policy {d}")),
    };
    Ok(TopicLimits { max_bytes, max_age_ms, max_events, discard })
}

/// Bytes an event counts for against `max_bytes`.
pub fn event_bytes(e: &Event) -> u64 {
    e.approx_size() as u64
}

/// A publish refused at apply: a `discard = "new"` topic is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic `{topic}` is full ({reason}) and its discard policy is \"new\": publish refused")]
pub struct TopicFull {
    pub topic: String,
    pub reason: String,
}

/// A publish refused at apply: it would create a topic beyond `cluster.max_topics`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "topic `{topic}` would be a new topic, and this server holds {have} of at most {max} \
     (cluster.max_topics): publish refused; publish to an existing topic or raise the limit"
)]
pub struct TooManyTopics {
    pub topic: String,
    pub have: usize,
    pub max: usize,
}

/// A read below the first retained offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset} of topic `{topic}` is out of range, first available is {first}")]
pub struct OutOfRange {
    pub topic: String,
    pub offset: u64,
    pub first: u64,
}

/// One line of `esc topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSummary {
    pub topic: String,
    pub events: u64,
    pub bytes: u64,
    pub first_offset: u64,
    pub end_offset: u64,
    pub retention: TopicLimits,
}

impl EventLogState {
    /// Applies a publish: refused as a whole (state unchanged) if it would overfill a
    /// `discard = "new"` topic, otherwise [`apply_batch`](Self::apply_batch).
    pub fn apply_publish(
        &mut self,
        events: Vec<Event>,
        stamped_ms: u64,
    ) -> Result<Vec<Appended>, ApplyError> {
        self.apply_publish_keeping(events, stamped_ms, None)
    }

    /// [`Self::apply_publish`], pushing the newly stored events (not duplicates) to `fresh`
    /// (the leader's pipeline processes them).
    pub fn apply_publish_keeping(
        &mut self,
        events: Vec<Event>,
        stamped_ms: u64,
        fresh: Option<&mut Vec<StoredEvent>>,
    ) -> Result<Vec<Appended>, ApplyError> {
        self.check_room(&events)?;
        Ok(self.apply_batch_keeping(events, stamped_ms, fresh)?)
    }

    /// Refuses a publish that would take the number of topics past [`Self::max_topics`]. The
    /// leader asks before it proposes; applying never refuses for this (an entry applies the
    /// same on every member and on every replay, whatever each member's limit).
    pub fn check_new_topics(&self, events: &[Event]) -> Result<(), TooManyTopics> {
        let have = self.topic_count();
        let mut new: Vec<&str> =
            events.iter().map(|e| e.topic.as_str()).filter(|t| !self.has_topic(t)).collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() || have + new.len() <= self.max_topics() {
            return Ok(());
        }
        Err(TooManyTopics { topic: new[0].to_string(), have, max: self.max_topics() })
    }

    /// Refuses a publish that would overfill a `discard = "new"` topic.
    fn check_room(&self, events: &[Event]) -> Result<(), TopicFull> {
        let mut adding: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for e in events {
            let limits = self.settings.limits_for(&e.topic);
            let known = e.idempotency_key().is_some_and(|(p, s)| self.dedup.lookup(p, s).is_some());
            if limits.discard != Discard::New || known {
                continue;
            }
            let a = adding.entry(e.topic.as_str()).or_default();
            a.0 += 1;
            a.1 += event_bytes(e);
        }
        for (topic, (n, bytes)) in adding {
            let limits = *self.settings.limits_for(topic);
            let (held, held_bytes) = (self.event_count(topic), self.topics.get(topic).map_or(0, |t| t.bytes));
            let full = |max: Option<u64>, have: u64, add: u64, what: &str| {
                max.filter(|m| have + add > *m).map(|m| format!("{what} {have} + {add} > max {m}"))
            };
            if let Some(reason) = full(limits.max_events, held, n, "events").or(full(
                limits.max_bytes,
                held_bytes,
                bytes,
                "bytes",
            )) {
                return Err(TopicFull { topic: topic.to_string(), reason });
            }
        }
        Ok(())
    }

    /// Replaces the replicated topic settings.
    pub fn apply_topic_settings(&mut self, settings: TopicSettings) {
        self.settings = settings;
    }

    /// Drops the events of `topic` below `before` (clamped to what is held): the same on every
    /// replica. Reads the dropped events once (their sizes leave the byte count); the files go
    /// once a snapshot recording the new first offset is durable.
    pub fn apply_trim(&mut self, topic: &str, before: u64) -> Result<(), StoreError> {
        let (first, end) = (self.first_offset(topic), self.end_offset(topic));
        let before = before.min(end);
        if before <= first {
            return Ok(());
        }
        let mut dropped = 0;
        for e in self.events_from(topic, first) {
            let e = e?;
            if e.offset >= before {
                break;
            }
            dropped += event_bytes(&e.event);
        }
        if let Some(store) = self.store.get_mut(topic) {
            store.trim_before(before)?;
        }
        if let Some(info) = self.topics.get_mut(topic) {
            info.bytes = info.bytes.saturating_sub(dropped);
        }
        Ok(())
    }

    /// Counts the bytes of `topic`'s retained events again (reads them once). A snapshot install
    /// that restarted the topic at a source's newer first offset needs it: the count the
    /// snapshot recorded still holds the events it skipped, which the trim that removed them on
    /// the source cannot subtract here.
    pub fn recount_bytes(&mut self, topic: &str) -> Result<(), StoreError> {
        let mut bytes = 0;
        for e in self.events_from(topic, self.first_offset(topic)) {
            bytes += event_bytes(&e?.event);
        }
        if let Some(info) = self.topics.get_mut(topic) {
            info.bytes = bytes;
        }
        Ok(())
    }

    /// The replicated topic settings.
    pub fn topic_settings(&self) -> &TopicSettings {
        &self.settings
    }

    /// The first retained offset of `topic` (0 for an unknown topic).
    pub fn first_offset(&self, topic: &str) -> u64 {
        self.store.get(topic).map_or(0, TopicStore::first_offset)
    }

    /// One past the last offset of `topic`.
    pub fn end_offset(&self, topic: &str) -> u64 {
        self.store.get(topic).map_or(0, TopicStore::end_offset)
    }

    /// The stored event at `offset`, if it is held (read from the files).
    pub fn stored_event(&self, topic: &str, offset: u64) -> Result<Option<StoredEvent>, StoreError> {
        let Some(store) = self.store.get(topic) else { return Ok(None) };
        if offset < store.first_offset() {
            return Ok(None);
        }
        Ok(store.read(offset, 1, usize::MAX)?.into_iter().next())
    }

    /// A fetch that refuses an offset below the first retained one.
    pub fn read(&self, topic: &str, offset: u64, max: usize) -> Result<FetchReply, ReadError> {
        let first = self.first_offset(topic);
        if offset < first {
            return Err(OutOfRange { topic: topic.to_string(), offset, first }.into());
        }
        Ok(self.fetch(topic, offset, max)?)
    }

    /// Per topic the first offset to keep, where the settings say events must go (only topics
    /// whose first offset would move). Age is judged against the latest time stamped into the
    /// log, never a local clock. The leader proposes these as `Trim` commands. Reads only the
    /// events that are due to go (and the first one that stays).
    pub fn trims_due(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for (name, info) in &self.topics {
            let limits = self.settings.limits_for(name);
            let (first, end) = (self.first_offset(name), self.end_offset(name));
            let mut before = first;
            if limits.discard == Discard::Old
                && let Some(max) = limits.max_events
            {
                before = before.max(end.saturating_sub(max));
            }
            let oldest_kept = limits.max_age_ms.map(|age| self.last_stamp_ms.saturating_sub(age));
            let mut over = limits
                .max_bytes
                .filter(|_| limits.discard == Discard::Old)
                .map_or(0, |m| info.bytes.saturating_sub(m));
            if over > 0 || oldest_kept.is_some() {
                for e in self.events_from(name, first) {
                    let e = e?;
                    let expired = oldest_kept.is_some_and(|k| e.timestamp_ms < k);
                    if over == 0 && !expired {
                        break;
                    }
                    over = over.saturating_sub(event_bytes(&e.event));
                    before = before.max(e.offset + 1);
                }
            }
            if before > first {
                out.push((name.clone(), before));
            }
        }
        Ok(out)
    }

    /// Every topic with its size, offsets and retention settings, sorted by name.
    pub fn topic_summaries(&self) -> Vec<TopicSummary> {
        self.topics
            .iter()
            .map(|(name, info)| TopicSummary {
                topic: name.clone(),
                events: self.event_count(name),
                bytes: info.bytes,
                first_offset: self.first_offset(name),
                end_offset: self.end_offset(name),
                retention: *self.settings.limits_for(name),
            })
            .collect()
    }

    /// The answer to the TOPICS admin request: a JSON document (see docs/protocol.md).
    pub fn topics_json(&self) -> String {
        serde_json::json!({ "topics": self.topic_summaries() }).to_string()
    }
}

/// Appends the retention block (settings, then per topic its retained bytes) at the end of a
/// snapshot (first offsets are in the topic files' metadata).
pub(super) fn encode_block(st: &EventLogState, out: &mut BytesMut) {
    st.settings.encode(out);
    out.put_u32(st.topics.len() as u32);
    for (name, info) in &st.topics {
        put_str16(out, name);
        out.put_u64(info.bytes);
    }
}

/// Reads the retention block. It is required: a snapshot cut before it would silently forget
/// what retention counts.
pub(super) fn decode_block(st: &mut EventLogState, b: &mut Bytes) -> Result<(), SnapshotDecodeError> {
    let bad = |e: String| SnapshotDecodeError(format!("retention block: {e}"));
    st.settings = TopicSettings::decode(b).map_err(bad)?;
    if b.remaining() < 4 {
        return Err(bad("truncated topic count".into()));
    }
    let n = b.get_u32();
    for _ in 0..n {
        let name = get_str(b)?;
        if b.remaining() < 8 {
            return Err(bad("truncated byte count".into()));
        }
        let bytes = b.get_u64();
        let info = st.topics.get_mut(&name).ok_or_else(|| bad(format!("bytes of unknown topic `{name}`")))?;
        info.bytes = bytes;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;
    use crate::node::DedupConfig;

    fn ev(topic: &str, seq: u64) -> Event {
        let mut e = Event::new(topic, Priority::Medium, vec![b'x'; 100]);
        e.producer_id = 1;
        e.sequence = seq;
        e
    }

    fn settings(default: TopicLimits, rules: &[(&str, TopicLimits)]) -> TopicSettings {
        TopicSettings { default, rules: rules.iter().map(|(p, l)| (p.to_string(), *l)).collect() }
    }

    fn events(n: u64) -> TopicLimits {
        TopicLimits { max_events: Some(n), ..TopicLimits::default() }
    }

    /// A state with `n` events in `topic` (sequences 0..n, stamped at 1000 + i).
    fn filled(topic: &str, n: u64) -> EventLogState {
        let mut s = EventLogState::new(DedupConfig::default());
        for i in 0..n {
            s.apply_publish(vec![ev(topic, i)], 1000 + i).unwrap();
        }
        s
    }

    #[test]
    fn exact_names_beat_prefixes_and_the_longest_prefix_wins() {
        let s = settings(
            events(1),
            &[("audit.*", events(2)), ("audit.login*", events(3)), ("audit.x", events(4))],
        );
        assert_eq!(s.limits_for("audit.login.eu").max_events, Some(3));
        assert_eq!(s.limits_for("audit.other").max_events, Some(2));
        assert_eq!(s.limits_for("audit.x").max_events, Some(4));
        assert_eq!(s.limits_for("orders").max_events, Some(1));
    }

    #[test]
    fn trims_follow_max_events_and_drop_below_before_everywhere() {
        let mut s = filled("a", 10);
        assert!(s.trims_due().unwrap().is_empty(), "no settings: nothing to trim");
        s.apply_topic_settings(settings(events(4), &[]));
        assert_eq!(s.trims_due().unwrap(), vec![("a".to_string(), 6)]);
        s.apply_trim("a", 6).unwrap();
        assert_eq!((s.first_offset("a"), s.end_offset("a")), (6, 10));
        assert!(s.trims_due().unwrap().is_empty());
        // Offsets keep counting from the end; a trim past the end is clamped.
        let a = s.apply_publish(vec![ev("a", 99)], 2000).unwrap();
        assert_eq!(a[0].offset, 10);
        assert_eq!(s.stored_event("a", 10).unwrap().unwrap().event.sequence, 99);
        assert!(s.stored_event("a", 5).unwrap().is_none());
        s.apply_trim("a", 1000).unwrap();
        assert_eq!((s.first_offset("a"), s.end_offset("a")), (11, 11));
        assert_eq!(s.topic_summaries()[0].bytes, 0);
    }

    #[test]
    fn a_publish_that_would_create_a_topic_beyond_max_topics_is_refused_whole() {
        let mut s = filled("a", 2);
        s.set_max_topics(2);
        assert_eq!(s.check_new_topics(&[ev("b", 10), ev("a", 3)]), Ok(()));
        s.apply_publish(vec![ev("b", 10)], 2000).unwrap();
        // A third topic, even mixed with events of existing ones (and twice): refused whole.
        let e = s.check_new_topics(&[ev("a", 11), ev("c", 12), ev("c", 13)]).unwrap_err();
        assert_eq!((e.topic.as_str(), e.have, e.max), ("c", 2, 2));
        assert!(e.to_string().contains("cluster.max_topics"), "{e}");
        // Existing topics go on taking events.
        assert_eq!(s.check_new_topics(&[ev("a", 11), ev("b", 13)]), Ok(()));
        // Applying never refuses for the limit: a replay with a lower limit stays the same.
        s.set_max_topics(1);
        assert_eq!(s.apply_publish(vec![ev("c", 12)], 2004).unwrap()[0].offset, 0);
        assert_eq!(s.topic_count(), 3);
        assert!(s.check_new_topics(&[ev("d", 14)]).is_err());
    }

    #[test]
    fn reads_below_the_first_offset_are_out_of_range() {
        let mut s = filled("a", 5);
        s.apply_trim("a", 3).unwrap();
        let Err(ReadError::OutOfRange(e)) = s.read("a", 1, 10) else { panic!("not out of range") };
        assert_eq!(e.first, 3);
        assert!(e.to_string().ends_with("first available is 3"), "{e}");
        let r = s.read("a", 3, 10).unwrap();
        assert_eq!(r.events.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!((r.next_offset, r.end_offset), (5, 5));
        assert_eq!(s.read("a", 7, 10).unwrap().next_offset, 7);
        assert!(s.read("unknown", 0, 10).unwrap().events.is_empty());
    }

    #[test]
    fn age_is_judged_by_the_stamped_time_and_bytes_by_event_size() {
        let mut s = filled("a", 10); // stamped 1000..=1009
        s.apply_topic_settings(settings(TopicLimits { max_age_ms: Some(5), ..TopicLimits::default() }, &[]));
        // The newest stamp is 1009: events stamped before 1004 are older than 5 ms.
        assert_eq!(s.trims_due().unwrap(), vec![("a".to_string(), 4)]);
        let per_event = event_bytes(&ev("a", 0));
        s.apply_topic_settings(settings(
            TopicLimits { max_bytes: Some(3 * per_event), ..TopicLimits::default() },
            &[],
        ));
        assert_eq!(s.trims_due().unwrap(), vec![("a".to_string(), 7)]);
    }

    #[test]
    fn a_full_discard_new_topic_refuses_the_whole_publish_at_apply() {
        let mut s = filled("a", 3);
        let full = TopicLimits { max_events: Some(4), discard: Discard::New, ..TopicLimits::default() };
        s.apply_topic_settings(settings(TopicLimits::default(), &[("a", full)]));
        assert!(s.trims_due().unwrap().is_empty(), "discard=new never trims by count");
        let before = s.digest();
        let Err(ApplyError::Full(err)) = s.apply_publish(vec![ev("b", 50), ev("a", 51), ev("a", 52)], 5000)
        else {
            panic!("not refused as full")
        };
        assert_eq!(err.topic, "a");
        assert!(err.to_string().contains("discard policy is \"new\""), "{err}");
        assert_eq!(s.digest(), before, "a refused batch changes nothing");
        s.apply_publish(vec![ev("a", 51)], 5000).unwrap();
        // A retry of a stored event is still answered (it adds nothing).
        assert!(s.apply_publish(vec![ev("a", 51)], 5001).unwrap()[0].duplicate);
        assert!(s.apply_publish(vec![ev("a", 53)], 5002).is_err());
    }

    #[test]
    fn snapshots_carry_settings_and_first_offsets() {
        let mut s = filled("a", 6);
        s.apply_publish(vec![ev("b", 100)], 3000).unwrap();
        s.apply_topic_settings(settings(
            events(3),
            &[("b*", TopicLimits { discard: Discard::New, ..events(9) })],
        ));
        s.apply_trim("a", 4).unwrap();
        s.apply_trim("b", 1).unwrap();
        let snap = s.encode_snapshot();
        let r = crate::node::state::decode_on_copy(&s, DedupConfig::default(), snap.clone()).unwrap();
        assert_eq!(r.topic_settings(), s.topic_settings());
        assert_eq!(r.topic_summaries(), s.topic_summaries());
        assert_eq!(r.digest(), s.digest());
        assert_eq!(r.read("a", 4, 10).unwrap().events[0].event.sequence, 4);
        assert!(matches!(r.read("a", 3, 10), Err(ReadError::OutOfRange(OutOfRange { first: 4, .. }))));
        for cut in 0..snap.len() {
            if let Ok(t) = crate::node::state::decode_on_copy(&s, DedupConfig::default(), snap.slice(..cut)) {
                panic!("cut at {cut} decoded: {:?}", t.topic_summaries());
            }
        }
    }

    #[test]
    fn a_snapshot_without_the_block_is_refused() {
        let s = filled("a", 3);
        let snap = s.encode_snapshot();
        let mut block = BytesMut::new();
        encode_block(&s, &mut block);
        let cut = snap.slice(..snap.len() - block.len());
        let err = crate::node::state::decode_on_copy(&s, DedupConfig::default(), cut).unwrap_err();
        assert!(err.to_string().contains("retention block"), "{err}");
    }

    #[test]
    fn topics_json_lists_sizes_offsets_and_retention() {
        let mut s = filled("a", 4);
        s.apply_topic_settings(settings(events(2), &[]));
        s.apply_trim("a", 2).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s.topics_json()).unwrap();
        let t = &v["topics"][0];
        assert_eq!(t["topic"], "a");
        assert_eq!(
            (t["events"].as_u64(), t["first_offset"].as_u64(), t["end_offset"].as_u64()),
            (Some(2), Some(2), Some(4))
        );
        assert_eq!(t["bytes"].as_u64(), Some(2 * event_bytes(&ev("a", 0))));
        assert_eq!(t["retention"]["max_events"].as_u64(), Some(2));
        assert_eq!(t["retention"]["discard"], "old");
    }
}
