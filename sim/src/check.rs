//! Checkers: properties a run must satisfy, each able to fail (see the tests below).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use eventstreamcore::event::StoredEvent;

use crate::history::HistoryData;

/// A property that did not hold, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    pub checker: &'static str,
    pub detail: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "checker `{}` failed: {}", self.checker, self.detail)
    }
}

fn fail(checker: &'static str, detail: String) -> Result<(), CheckFailure> {
    Err(CheckFailure { checker, detail })
}

/// A read-only view of a node's topic logs.
pub trait LogView {
    fn topics(&self) -> Vec<String>;
    fn topic_log(&self, topic: &str) -> Vec<StoredEvent>;
}

impl LogView for eventstreamcore::node::EventLogState {
    fn topics(&self) -> Vec<String> {
        eventstreamcore::node::EventLogState::topics(self).map(str::to_string).collect()
    }
    fn topic_log(&self, topic: &str) -> Vec<StoredEvent> {
        eventstreamcore::node::EventLogState::topic_log(self, topic).to_vec()
    }
}

impl LogView for BTreeMap<String, Vec<StoredEvent>> {
    fn topics(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
    fn topic_log(&self, topic: &str) -> Vec<StoredEvent> {
        self.get(topic).cloned().unwrap_or_default()
    }
}

/// Client-side expectations recorded during the run all held.
pub fn no_client_violations(h: &HistoryData) -> Result<(), CheckFailure> {
    if let Some(v) = h.violations.first() {
        return fail(
            "client_expectations",
            format!("{} broken expectation(s); first: {v}", h.violations.len()),
        );
    }
    Ok(())
}

/// Offsets in every topic log are dense and start at 0.
pub fn offsets_dense(log: &dyn LogView) -> Result<(), CheckFailure> {
    for t in log.topics() {
        for (i, s) in log.topic_log(&t).iter().enumerate() {
            if s.offset != i as u64 {
                return fail("offsets_dense", format!("topic {t}: position {i} holds offset {}", s.offset));
            }
        }
    }
    Ok(())
}

/// Every acked event is in the log exactly once, at the offset it was acked with, with the content
/// that was published; acks of the same key agree.
pub fn acked_events_stored_exactly_once(h: &HistoryData, log: &dyn LogView) -> Result<(), CheckFailure> {
    const C: &str = "acked_exactly_once";
    // Where each key is stored (first copy) and how many copies exist.
    let mut copies: BTreeMap<(u64, u64), Vec<(String, u64)>> = BTreeMap::new();
    let mut logs = BTreeMap::new();
    for t in log.topics() {
        let events = log.topic_log(&t);
        for s in &events {
            if let Some(k) = s.event.idempotency_key() {
                copies.entry(k).or_default().push((t.clone(), s.offset));
            }
        }
        logs.insert(t, events);
    }
    let mut acked_at: BTreeMap<(u64, u64), (String, u64)> = BTreeMap::new();
    for a in &h.acks {
        let key = (a.producer, a.sequence);
        if let Some(prev) = acked_at.get(&key)
            && *prev != (a.topic.clone(), a.offset)
        {
            return fail(
                C,
                format!(
                    "key {key:?} acked at {}@{} and at {}@{} (client {})",
                    prev.0, prev.1, a.topic, a.offset, a.client
                ),
            );
        }
        acked_at.insert(key, (a.topic.clone(), a.offset));
        let Some(stored) = logs.get(&a.topic).and_then(|l| l.get(a.offset as usize)) else {
            return fail(
                C,
                format!(
                    "ack for key {key:?} points at {}@{} but the log has no such offset (client {})",
                    a.topic, a.offset, a.client
                ),
            );
        };
        if stored.event.idempotency_key() != Some(key) {
            return fail(
                C,
                format!(
                    "ack for key {key:?} points at {}@{} which holds key {:?} (client {})",
                    a.topic,
                    a.offset,
                    stored.event.idempotency_key(),
                    a.client
                ),
            );
        }
        if let Some(p) = h.published.get(&key)
            && (p.topic != a.topic || p.payload != stored.event.payload)
        {
            return fail(C, format!("key {key:?} stored with content other than what was published"));
        }
        let n = copies.get(&key).map_or(0, Vec::len);
        if n != 1 {
            return fail(
                C,
                format!("acked key {key:?} appears {n} times in the log: {:?}", copies.get(&key)),
            );
        }
    }
    Ok(())
}

/// Nothing is stored that no client published; keyed events appear at most once.
pub fn nothing_unpublished_stored(h: &HistoryData, log: &dyn LogView) -> Result<(), CheckFailure> {
    const C: &str = "no_phantom_events";
    let mut legacy_left = h.legacy_sent.clone();
    let mut seen = BTreeSet::new();
    for t in log.topics() {
        for s in log.topic_log(&t) {
            match s.event.idempotency_key() {
                Some(key) => {
                    let Some(p) = h.published.get(&key) else {
                        return fail(C, format!("{t}@{}: key {key:?} was never published", s.offset));
                    };
                    if p.topic != t || p.payload != s.event.payload {
                        return fail(
                            C,
                            format!("{t}@{}: key {key:?} holds content it was not published with", s.offset),
                        );
                    }
                    if !seen.insert(key) {
                        return fail(C, format!("{t}@{}: key {key:?} stored twice", s.offset));
                    }
                }
                None => {
                    let k = (t.clone(), s.event.payload.to_vec());
                    match legacy_left.get_mut(&k) {
                        Some(n) if *n > 0 => *n -= 1,
                        _ => {
                            return fail(
                                C,
                                format!(
                                    "{t}@{}: anonymous event {:?} stored more often than it was sent",
                                    s.offset,
                                    String::from_utf8_lossy(&s.event.payload)
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Per producer and topic, events are stored in sequence order (producers that send in order and
/// retry a frame before sending the next; pipelining producers are exempt, see the history).
pub fn per_producer_order(h: &HistoryData, log: &dyn LogView) -> Result<(), CheckFailure> {
    for t in log.topics() {
        let mut last: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for s in log.topic_log(&t) {
            if let Some((p, seq)) = s.event.idempotency_key() {
                if h.unordered_producers.contains(&p) {
                    continue;
                }
                if let Some(&(prev_seq, prev_off)) = last.get(&p)
                    && seq < prev_seq
                {
                    return fail(
                        "per_producer_order",
                        format!(
                            "{t}: producer {p} seq {seq} at offset {} after seq {prev_seq} at offset {prev_off}",
                            s.offset
                        ),
                    );
                }
                last.insert(p, (seq, s.offset));
            }
        }
    }
    Ok(())
}

/// Runs every checker of the single-node ingest scenario, first failure wins.
pub fn check_ingest_run(h: &HistoryData, log: &dyn LogView) -> Result<(), CheckFailure> {
    no_client_violations(h)?;
    offsets_dense(log)?;
    acked_events_stored_exactly_once(h, log)?;
    nothing_unpublished_stored(h, log)?;
    per_producer_order(h, log)?;
    Ok(())
}

/// Every event a consumer read is in the final log at the offset it was read at (a consumer never
/// sees an event that is later rolled back).
pub fn consumed_events_committed(h: &HistoryData, log: &dyn LogView) -> Result<(), CheckFailure> {
    let mut logs: BTreeMap<String, Vec<StoredEvent>> = BTreeMap::new();
    for c in &h.consumed {
        let l = logs.entry(c.topic.clone()).or_insert_with(|| log.topic_log(&c.topic));
        let found = l.get(c.offset as usize).and_then(|s| s.event.idempotency_key());
        if found != Some((c.producer, c.sequence)) {
            return fail(
                "consumed_committed",
                format!(
                    "a consumer read ({}, {}) at {}:{} but the final log holds {found:?} there",
                    c.producer, c.sequence, c.topic, c.offset
                ),
            );
        }
    }
    Ok(())
}

/// All replicas hold the same topic logs.
pub fn replicas_identical(replicas: &[(u64, &dyn LogView)]) -> Result<(), CheckFailure> {
    let Some((first_id, first)) = replicas.first() else {
        return Ok(());
    };
    for (id, other) in &replicas[1..] {
        let mut topics = first.topics();
        topics.extend(other.topics());
        topics.sort();
        topics.dedup();
        for t in topics {
            let (a, b) = (first.topic_log(&t), other.topic_log(&t));
            if a != b {
                let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
                return fail(
                    "replicas_identical",
                    format!(
                        "topic {t}: node {first_id} has {} events, node {id} has {}; first difference at offset {at}",
                        a.len(),
                        b.len()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Linearizable reads: a read that asked for linearizability sees every event acknowledged
/// before it began (the topic's end offset it reports lies beyond every such ack's offset).
pub fn linearizable_reads(h: &HistoryData) -> Result<(), CheckFailure> {
    // Per topic, the acks in the order they completed: (time, offset).
    let mut acked: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for (a, t) in h.acks.iter().zip(&h.ack_times) {
        acked.entry(a.topic.as_str()).or_default().push((*t, a.offset));
    }
    for r in h.reads.iter().filter(|r| r.linearizable) {
        let Some(acks) = acked.get(r.topic.as_str()) else { continue };
        // The highest offset acked before the read started.
        let before = acks.iter().take_while(|(t, _)| *t < r.started).map(|(_, o)| *o).max();
        if let Some(o) = before
            && o >= r.end_offset
        {
            let (t, _) = acks.iter().find(|(_, x)| *x == o).copied().unwrap_or_default();
            return fail(
                "linearizable_reads",
                format!(
                    "{}: a linearizable read of {} (started at operation {}) reported the topic ending at \
                     offset {}, but offset {o} had been acked before it began (at operation {t}): a stale read",
                    r.client, r.topic, r.started, r.end_offset
                ),
            );
        }
    }
    Ok(())
}

/// The part of the history and of a log that a failure names: for each idempotency key
/// `(producer, sequence)` in the detail, that producer's acks around it; for each `topic@offset`,
/// the log around that offset. Empty if the detail names neither.
pub fn history_excerpt(h: &HistoryData, log: &dyn LogView, detail: &str) -> String {
    let mut out = String::new();
    let mut keys: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut rest = detail;
    while let Some(i) = rest.find('(') {
        rest = &rest[i + 1..];
        let inner = rest.split(')').next().unwrap_or_default();
        let mut nums = inner.split(',').map(|n| n.trim().parse::<u64>());
        if let (Some(Ok(p)), Some(Ok(q)), None) = (nums.next(), nums.next(), nums.next()) {
            keys.insert((p, q));
        }
    }
    for (p, q) in keys.iter().take(3) {
        out.push_str(&format!("\n  producer {p} around sequence {q}:"));
        let near = |s: u64| s + 3 >= *q && s <= q + 3;
        for (key, publ) in h.published.range((*p, 0)..=(*p, u64::MAX)).filter(|(k, _)| near(k.1)) {
            let acks: Vec<String> = h
                .acks
                .iter()
                .filter(|a| (a.producer, a.sequence) == *key)
                .map(|a| {
                    format!(
                        "{}@{}{} by {}",
                        a.topic,
                        a.offset,
                        if a.duplicate { " (dup)" } else { "" },
                        a.client
                    )
                })
                .collect();
            let acks =
                if acks.is_empty() { "not acked".to_string() } else { format!("acked {}", acks.join(", ")) };
            out.push_str(&format!("\n    seq {} → {}: {acks}", key.1, publ.topic));
        }
    }
    let mut places: BTreeSet<(String, u64)> = BTreeSet::new();
    for word in detail.split([' ', ',', ':', ';']) {
        if let Some((t, o)) = word.rsplit_once('@')
            && let Ok(o) = o.parse::<u64>()
            && !t.is_empty()
        {
            places.insert((t.to_string(), o));
        }
    }
    for (t, o) in places.iter().take(3) {
        let events = log.topic_log(t);
        out.push_str(&format!("\n  log of {t} around offset {o} ({} events):", events.len()));
        for e in events.iter().filter(|e| e.offset + 3 >= *o && e.offset <= o + 3) {
            out.push_str(&format!("\n    {t}@{} = key {:?}", e.offset, e.event.idempotency_key()));
        }
    }
    out
}

/// Runs every checker of the cluster scenario on every replica, first failure wins.
pub fn check_cluster_run(
    h: &HistoryData,
    replicas: &[(u64, eventstreamcore::node::EventLogState)],
) -> Result<(), CheckFailure> {
    no_client_violations(h)?;
    linearizable_reads(h)?;
    for (id, state) in replicas {
        let in_node = |mut f: CheckFailure| {
            f.detail = format!("node {id}: {}", f.detail);
            f
        };
        offsets_dense(state).map_err(in_node)?;
        acked_events_stored_exactly_once(h, state).map_err(in_node)?;
        nothing_unpublished_stored(h, state).map_err(in_node)?;
        per_producer_order(h, state).map_err(in_node)?;
    }
    let views: Vec<(u64, &dyn LogView)> = replicas.iter().map(|(id, s)| (*id, s as &dyn LogView)).collect();
    replicas_identical(&views)?;
    if let Some((_, s)) = replicas.first() {
        consumed_events_committed(h, s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Each checker is fed a history or log that breaks its property and must fail.
    use super::*;
    use crate::history::{AckRecord, History, ReadRecord};
    use eventstreamcore::event::{Event, Priority};

    fn stored(offset: u64, producer: u64, seq: u64, payload: &str) -> StoredEvent {
        let mut e = Event::new("t", Priority::Low, payload.to_string());
        e.producer_id = producer;
        e.sequence = seq;
        StoredEvent { offset, timestamp_ms: 0, event: e }
    }

    fn ack(producer: u64, seq: u64, offset: u64) -> AckRecord {
        AckRecord { client: "c".into(), producer, sequence: seq, topic: "t".into(), offset, duplicate: false }
    }

    fn good() -> (History, BTreeMap<String, Vec<StoredEvent>>) {
        let h = History::new();
        h.published(1, 1, "t", b"a");
        h.published(1, 2, "t", b"b");
        h.legacy_sent("t", b"L");
        h.acked(ack(1, 1, 0));
        h.acked(ack(1, 2, 2));
        let mut log = BTreeMap::new();
        let mut anon = stored(1, 0, 0, "L");
        anon.event.producer_id = 0;
        log.insert("t".to_string(), vec![stored(0, 1, 1, "a"), anon, stored(2, 1, 2, "b")]);
        (h, log)
    }

    #[test]
    fn a_correct_run_passes() {
        let (h, log) = good();
        check_ingest_run(&h.snapshot(), &log).unwrap();
    }

    #[test]
    fn client_violations_fail() {
        let (h, log) = good();
        h.violation("stalled client never dropped");
        assert_eq!(check_ingest_run(&h.snapshot(), &log).unwrap_err().checker, "client_expectations");
    }

    #[test]
    fn an_acked_event_missing_from_the_log_fails() {
        let (h, mut log) = good();
        log.get_mut("t").unwrap().truncate(2);
        assert_eq!(
            acked_events_stored_exactly_once(&h.snapshot(), &log).unwrap_err().checker,
            "acked_exactly_once"
        );
    }

    #[test]
    fn an_ack_at_the_wrong_offset_fails() {
        let (h, log) = good();
        h.acked(AckRecord { sequence: 2, offset: 0, ..ack(1, 2, 0) });
        assert!(acked_events_stored_exactly_once(&h.snapshot(), &log).is_err());
    }

    #[test]
    fn a_duplicate_copy_of_an_acked_key_fails() {
        let (h, mut log) = good();
        log.get_mut("t").unwrap().push(stored(3, 1, 1, "a"));
        assert!(acked_events_stored_exactly_once(&h.snapshot(), &log).is_err());
        assert!(nothing_unpublished_stored(&h.snapshot(), &log).is_err());
    }

    #[test]
    fn a_phantom_event_fails() {
        let (h, mut log) = good();
        log.get_mut("t").unwrap().push(stored(3, 9, 9, "x"));
        assert_eq!(nothing_unpublished_stored(&h.snapshot(), &log).unwrap_err().checker, "no_phantom_events");
        let (h, mut log) = good();
        let mut anon = stored(3, 0, 0, "L");
        anon.event.producer_id = 0;
        log.get_mut("t").unwrap().push(anon); // sent once, stored twice
        assert!(nothing_unpublished_stored(&h.snapshot(), &log).is_err());
    }

    #[test]
    fn changed_content_fails() {
        let (h, mut log) = good();
        log.get_mut("t").unwrap()[0].event.payload = "zzz".into();
        assert!(acked_events_stored_exactly_once(&h.snapshot(), &log).is_err());
    }

    #[test]
    fn reordered_producer_events_fail() {
        let (h, mut log) = good();
        let l = log.get_mut("t").unwrap();
        l.swap(0, 2);
        l[0].offset = 0;
        l[2].offset = 2;
        assert_eq!(per_producer_order(&h.snapshot(), &log).unwrap_err().checker, "per_producer_order");
        h.unordered(1);
        assert!(per_producer_order(&h.snapshot(), &log).is_ok(), "exempt producers are not checked");
    }

    #[test]
    fn holes_in_offsets_fail() {
        let (_, mut log) = good();
        log.get_mut("t").unwrap()[1].offset = 7;
        assert_eq!(offsets_dense(&log).unwrap_err().checker, "offsets_dense");
    }

    #[test]
    fn a_consumed_event_missing_from_the_final_log_fails() {
        let (h, log) = good();
        h.consumed("t", 0, 1, 1);
        h.consumed("t", 2, 1, 2);
        consumed_events_committed(&h.snapshot(), &log).unwrap();
        // A read of an entry that was later rolled back: something else sits at that offset.
        h.consumed("t", 1, 1, 9);
        assert_eq!(consumed_events_committed(&h.snapshot(), &log).unwrap_err().checker, "consumed_committed");
        let (h, log) = good();
        h.consumed("t", 3, 1, 3);
        assert_eq!(consumed_events_committed(&h.snapshot(), &log).unwrap_err().checker, "consumed_committed");
    }

    #[test]
    fn a_stale_linearizable_read_fails_and_a_stale_plain_read_does_not() {
        let h = History::new();
        h.acked(ack(1, 1, 0));
        h.acked(ack(1, 2, 1));
        let started = h.read_started();
        let read = |linearizable, end_offset| ReadRecord {
            client: "c".into(),
            topic: "t".into(),
            linearizable,
            started,
            end_offset,
        };
        h.read_done(read(true, 2));
        assert_eq!(linearizable_reads(&h.snapshot()), Ok(()));
        h.read_done(read(false, 1));
        assert_eq!(linearizable_reads(&h.snapshot()), Ok(()), "a plain read may lag");
        h.read_done(read(true, 1));
        let f = linearizable_reads(&h.snapshot()).unwrap_err();
        assert_eq!(f.checker, "linearizable_reads");
        assert!(f.detail.contains("offset 1 had been acked before it began"), "{}", f.detail);
        // An ack that completes after the read started does not count against it.
        let h = History::new();
        let started = h.read_started();
        h.acked(ack(1, 1, 0));
        h.read_done(ReadRecord { started, ..read(true, 0) });
        assert_eq!(linearizable_reads(&h.snapshot()), Ok(()));
    }

    #[test]
    fn a_failure_comes_with_the_history_around_it() {
        let (h, mut log) = good();
        // Lose the last event: the ack for key (1, 2) now points past the end of the log.
        log.get_mut("t").unwrap().truncate(2);
        let f = acked_events_stored_exactly_once(&h.snapshot(), &log).unwrap_err();
        let x = history_excerpt(&h.snapshot(), &log, &f.detail);
        assert!(x.contains("producer 1 around sequence 2:"), "{}\n{x}", f.detail);
        assert!(x.contains("seq 2 → t: acked t@2 by c"), "{x}");
        assert!(x.contains("log of t around offset 2 (2 events):"), "{x}");
        assert!(x.contains("t@0 = key Some((1, 1))"), "{x}");
        assert_eq!(history_excerpt(&h.snapshot(), &log, "nothing named here"), "");
    }

    #[test]
    fn diverging_replicas_fail() {
        let (_, a) = good();
        let b = a.clone();
        replicas_identical(&[(1, &a), (2, &b)]).unwrap();
        let mut c = a.clone();
        c.get_mut("t").unwrap().pop();
        let err = replicas_identical(&[(1, &a), (2, &b), (3, &c)]).unwrap_err();
        assert_eq!(err.checker, "replicas_identical");
        assert!(err.detail.contains("node 3"), "{}", err.detail);
        let mut d = a.clone();
        d.insert("other".into(), vec![stored(0, 5, 5, "x")]);
        assert!(replicas_identical(&[(1, &a), (4, &d)]).is_err(), "an extra topic on one replica");
    }
}
