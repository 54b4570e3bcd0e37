//! Catch-up by streaming records: raw reads and appends, the planner, the server side, and a
//! model test through lost, duplicated, reordered and corrupted chunks and power failures.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::event::{Event, Priority};
use crate::raft::message::{Body, Message, RecordsResult};
use crate::rt::SimDisk;
use crate::rt::rng::rng_from_seed;

fn cfg(segment_bytes: u64) -> StoreConfig {
    StoreConfig { segment_bytes, index_interval_bytes: 64, read_cache_bytes: 96, verify_on_open: true }
}

fn ev(topic: &str, i: u64) -> Event {
    Event::new(topic, Priority::Low, format!("{topic}:{i}:{}", "x".repeat((i % 7) as usize * 9)))
}

fn set_on(d: &SimDisk, segment_bytes: u64) -> TopicSet {
    TopicSet::open(Arc::new(d.clone()), cfg(segment_bytes), None).unwrap()
}

fn fill(s: &mut TopicSet, topic: &str, n: u64) {
    let start = s.get(topic).map_or(0, TopicStore::end_offset);
    let evs: Vec<Event> = (start..start + n).map(|i| ev(topic, i)).collect();
    s.append(topic, evs.iter().zip(start..).map(|(e, i)| (i * 3, e))).unwrap();
}

/// Per topic: first offset, then every stored event (offset, stamp, event).
fn contents(s: &TopicSet) -> Vec<(String, u64, Vec<StoredEvent>)> {
    s.names()
        .map(|n| {
            let t = s.get(n).unwrap();
            (n.to_string(), t.first_offset(), t.iter_from(t.first_offset()).map(Result::unwrap).collect())
        })
        .collect()
}

fn request(body: Body) -> Message {
    Message { from: 2, to: 1, term: 4, body }
}

fn result(reply: Message) -> RecordsResult {
    assert_eq!((reply.from, reply.to, reply.term), (1, 2, 4), "a reply goes back to the asker");
    match reply.body {
        Body::Records { result, .. } => result,
        other => panic!("not a records reply: {other:?}"),
    }
}

#[test]
fn read_raw_gives_whole_checked_records_within_the_budget() {
    let d = SimDisk::new();
    let mut s = set_on(&d, 300);
    fill(&mut s, "a", 60);
    let t = s.get("a").unwrap();
    assert!(t.segments().len() > 4, "several segments");
    for from in [0, 1, 17, 59] {
        for max in [0, 50, 200, 1000] {
            let (next, bytes) = t.read_raw(from, max).unwrap();
            assert!(next > from, "at least one record");
            assert_eq!(check_records(&bytes, from), Ok(next));
            assert!(next == from + 1 || bytes.len() <= max, "{from} {max}: {} bytes", bytes.len());
        }
    }
    let (next, bytes) = t.read_raw(0, usize::MAX).unwrap();
    assert_eq!(next, 60, "reads across every segment");
    assert_eq!(bytes.len() as u64, t.bytes());
    assert_eq!(t.read_raw_to(10, 13, usize::MAX).unwrap().0, 13, "stops before up_to");
    assert_eq!(t.read_raw(60, 100).unwrap(), (60, Bytes::new()), "empty at the end");
    s.get_mut("a").unwrap().trim_before(20).unwrap();
    let err = s.get("a").unwrap().read_raw(19, 100).unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange { offset: 19, first: 20 }), "{err}");
}

#[test]
fn append_raw_rolls_by_its_own_segment_size_and_reads_back_the_same_events() {
    let (d1, d2) = (SimDisk::new(), SimDisk::new());
    let mut src = set_on(&d1, 300);
    fill(&mut src, "a", 40);
    let (_, bytes) = src.get("a").unwrap().read_raw(0, usize::MAX).unwrap();
    let mut dst = TopicStore::open(Arc::new(d2.clone()), "topic-x-", cfg(120), 0).unwrap();
    assert_eq!(dst.append_raw(0, &bytes).unwrap(), 40);
    assert!(dst.segments().len() > src.get("a").unwrap().segments().len());
    assert!(dst.segments().iter().all(|m| m.bytes <= 120 || m.end == m.base + 1));
    let want: Vec<StoredEvent> = src.get("a").unwrap().iter_from(0).map(Result::unwrap).collect();
    let got: Vec<StoredEvent> = dst.iter_from(0).map(Result::unwrap).collect();
    assert_eq!(got, want);
    // Sealed segments are durable at once: a power failure loses at most the active one's tail.
    d2.power_fail(None);
    let back = TopicStore::open(Arc::new(d2), "topic-x-", cfg(120), 0).unwrap();
    assert!(back.end_offset() >= dst.segments().last().unwrap().base);
}

#[test]
fn append_raw_refuses_bad_records_and_writes_nothing() {
    let d = SimDisk::new();
    let mut src = set_on(&d, 1 << 20);
    fill(&mut src, "a", 10);
    let (_, bytes) = src.get("a").unwrap().read_raw(0, usize::MAX).unwrap();
    let (_, tail) = src.get("a").unwrap().read_raw(5, usize::MAX).unwrap();
    let d2 = SimDisk::new();
    let mut dst = TopicStore::open(Arc::new(d2.clone()), "topic-x-", cfg(200), 0).unwrap();
    let mut flipped = bytes.to_vec();
    flipped[bytes.len() / 2] ^= 0x10;
    let mut gap = bytes[..bytes.len() - tail.len()].to_vec();
    gap.extend_from_slice(&src.get("a").unwrap().read_raw(6, usize::MAX).unwrap().1);
    let cases: [(u64, &[u8]); 5] = [
        (1, &bytes),                    // does not start at the end
        (0, &flipped),                  // a checksum fails
        (0, &bytes[..bytes.len() - 3]), // a torn last record
        (0, &gap),                      // offset 5 missing
        (0, &tail),                     // records of offsets 5.. offered as 0..
    ];
    for (from, b) in cases {
        let err = dst.append_raw(from, b).unwrap_err();
        assert!(err.is_refusal(), "{err}");
        assert_eq!(dst.end_offset(), 0);
        assert!(d2.list("topic-x-").unwrap().is_empty(), "nothing written");
    }
    assert_eq!(dst.append_raw(0, &bytes).unwrap(), 10, "the store is still usable");
}

#[test]
fn reset_to_drops_every_segment_durably_and_starts_at_the_offset() {
    let d = SimDisk::new();
    let mut s = TopicStore::open(Arc::new(d.clone()), "topic-x-", cfg(100), 0).unwrap();
    let e = ev("x", 0);
    s.append((0..30).map(|i| (i, &e))).unwrap();
    s.sync().unwrap();
    s.reset_to(50).unwrap();
    assert_eq!((s.first_offset(), s.end_offset(), s.bytes()), (50, 50, 0));
    assert_eq!(d.list("topic-x-").unwrap().len(), 1, "one empty segment names the new start");
    d.power_fail(None);
    assert_eq!(d.list("topic-x-").unwrap().len(), 1, "the removals were durable");
    // A restart before anything is appended finds the log starting (and ending) at 50.
    let back = TopicStore::open(Arc::new(d.clone()), "topic-x-", cfg(100), 50).unwrap();
    assert_eq!((back.first_offset(), back.end_offset()), (50, 50));
    drop(back);
    let mut src = set_on(&SimDisk::new(), 1000);
    fill(&mut src, "a", 55);
    let (next, bytes) = src.get("a").unwrap().read_raw(50, usize::MAX).unwrap();
    assert_eq!(s.append_raw(50, &bytes).unwrap(), next);
    assert_eq!(s.read(50, 10, usize::MAX).unwrap()[0].offset, 50);
}

#[test]
fn serve_records_answers_each_case() {
    let mut s = set_on(&SimDisk::new(), 300);
    fill(&mut s, "a", 30);
    s.get_mut("a").unwrap().trim_before(10).unwrap();
    let ask = |topic: &str, offset, up_to, max_bytes| {
        serve_records(
            &s,
            &request(Body::RecordsRequest { req_id: 7, topic: topic.into(), offset, up_to, max_bytes }),
        )
        .map(result)
        .unwrap()
    };
    match ask("a", 12, 20, 100) {
        RecordsResult::Chunk { topic, from, next, bytes } => {
            assert_eq!((topic.as_str(), from), ("a", 12));
            assert!(next > 12 && next <= 20 && (next == 13 || bytes.len() <= 100));
            assert_eq!(check_records(&bytes, 12), Ok(next));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(ask("a", 12, 14, 1 << 20), RecordsResult::Chunk { next: 14, .. }), "up_to is kept");
    assert_eq!(ask("a", 3, 20, 100), RecordsResult::FirstOffset { topic: "a".into(), first: 10 });
    assert_eq!(ask("a", 30, 40, 100), RecordsResult::NotAvailable { topic: "a".into() });
    assert_eq!(ask("b", 0, 4, 100), RecordsResult::NotAvailable { topic: "b".into() });
    assert!(serve_records(&s, &request(Body::TimeoutNow)).is_none());
}

#[test]
fn the_planner_makes_the_local_set_a_prefix_of_the_target() {
    let (ds, dd) = (SimDisk::new(), SimDisk::new());
    let mut src = set_on(&ds, 300);
    let mut dst = set_on(&dd, 200);
    fill(&mut dst, "gone", 5); // id 0 here; the target has no such topic
    fill(&mut src, "a", 5); // id 0 in the target
    fill(&mut src, "b", 40);
    fill(&mut dst, "b", 3); // id 1 here, 1 in the target: behind its first offset below
    fill(&mut src, "c", 10);
    src.get_mut("b").unwrap().trim_before(20).unwrap();
    let target = src.metadata();
    let plan = CatchUp::new(&mut dst, &target).unwrap();
    assert!(dd.list("topic-00000000-").unwrap().is_empty(), "the stale topic's files are gone");
    assert_eq!(dst.names().collect::<Vec<_>>(), ["a", "b", "c"]);
    let b = dst.get("b").unwrap();
    assert_eq!((b.first_offset(), b.end_offset()), (20, 20), "b restarts at the target's first");
    assert_eq!(dst.metadata().next_id, target.next_id);
    let Some(Body::RecordsRequest { topic, offset, up_to, max_bytes, .. }) = plan.next_request(1, u32::MAX)
    else {
        panic!("work to do")
    };
    assert_eq!((topic.as_str(), offset, up_to, max_bytes), ("a", 0, 5, MAX_RECORDS_BYTES));
    assert!(!plan.is_done());

    // A target no honest member records is refused before anything changes.
    for break_it in [
        |m: &mut StoreMeta| m.topics[1].id = m.topics[0].id,
        |m: &mut StoreMeta| m.topics[1].name = m.topics[0].name.clone(),
        |m: &mut StoreMeta| m.topics[0].first = m.topics[0].end + 1,
        |m: &mut StoreMeta| m.next_id = 2,
    ] {
        let mut bad = target.clone();
        break_it(&mut bad);
        let err = CatchUp::new(&mut set_on(&SimDisk::new(), 200), &bad).unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err}");
        assert!(TopicSet::open_partial(Arc::new(SimDisk::new()), cfg(200), &bad).is_err());
    }

    // A local log longer than the target is cut back to it.
    let mut ahead = set_on(&SimDisk::new(), 200);
    fill(&mut ahead, "a", 9);
    let plan = CatchUp::new(&mut ahead, &target).unwrap();
    assert_eq!(ahead.get("a").unwrap().end_offset(), 5);
    assert!(
        plan.next_request(1, 10)
            .is_some_and(|b| matches!(b, Body::RecordsRequest { topic, .. } if topic == "b"))
    );
}

#[test]
fn chunks_not_matching_what_was_asked_are_refused() {
    let mut src = set_on(&SimDisk::new(), 300);
    fill(&mut src, "a", 20);
    let mut dst = set_on(&SimDisk::new(), 300);
    let mut plan = CatchUp::new(&mut dst, &src.metadata()).unwrap();
    let (next, bytes) = src.get("a").unwrap().read_raw(0, 200).unwrap();
    let (_, later) = src.get("a").unwrap().read_raw(next, 200).unwrap();
    let chunk = |topic: &str, from, next, bytes: &Bytes| RawChunk {
        topic: topic.into(),
        from,
        next,
        bytes: bytes.clone(),
    };
    let mut flipped = bytes.to_vec();
    flipped[9] ^= 1;
    let bad = [
        chunk("b", 0, next, &bytes),
        chunk("a", next, next + 1, &later),
        chunk("a", 0, next + 1, &bytes),
        chunk("a", 0, 0, &Bytes::new()),
        chunk("a", 0, 21, &bytes),
        chunk("a", 0, next, &Bytes::from(flipped)),
    ];
    for c in bad {
        let err = plan.on_chunk(&mut dst, c.clone()).unwrap_err();
        assert!(err.is_refusal(), "{c:?}: {err}");
        assert_eq!(dst.get("a").unwrap().end_offset(), 0);
    }
    plan.on_chunk(&mut dst, chunk("a", 0, next, &bytes)).unwrap();
    assert!(plan.on_chunk(&mut dst, chunk("a", 0, next, &bytes)).unwrap_err().is_refusal(), "a duplicate");
    assert_eq!((plan.chunks(), plan.bytes()), (1, bytes.len() as u64));
}

#[test]
fn a_source_trimmed_by_retention_mid_catch_up_restarts_the_topic_at_its_first_offset() {
    let mut src = set_on(&SimDisk::new(), 300);
    fill(&mut src, "a", 50);
    let target = src.metadata();
    let mut dst = set_on(&SimDisk::new(), 250);
    let mut plan = CatchUp::new(&mut dst, &target).unwrap();
    let serve = |src: &TopicSet, plan: &CatchUp| {
        result(serve_records(src, &request(plan.next_request(1, 120).unwrap())).unwrap())
    };
    let first = serve(&src, &plan);
    plan.on_records(&mut dst, first).unwrap();
    // Retention on the source (a later replicated entry) removes offsets below 30 and deletes files.
    src.get_mut("a").unwrap().trim_before(30).unwrap();
    src.delete_trimmed().unwrap();
    let answer = serve(&src, &plan);
    assert_eq!(answer, RecordsResult::FirstOffset { topic: "a".into(), first: 30 });
    plan.on_records(&mut dst, answer).unwrap();
    assert_eq!(plan.restarts(), 1);
    assert_eq!(dst.get("a").unwrap().first_offset(), 30, "no gap: the local log restarts at 30");
    while !plan.is_done() {
        let r = serve(&src, &plan);
        plan.on_records(&mut dst, r).unwrap();
    }
    assert_eq!(contents(&dst), contents(&src));
    // Trimmed past the target's end: the topic ends empty at the target's end.
    let mut dst2 = set_on(&SimDisk::new(), 250);
    let mut plan2 = CatchUp::new(&mut dst2, &target).unwrap();
    plan2.on_first_offset(&mut dst2, "a", 80).unwrap();
    assert!(plan2.is_done());
    let a = dst2.get("a").unwrap();
    assert_eq!((a.first_offset(), a.end_offset()), (50, 50));
    assert!(plan2.on_first_offset(&mut dst2, "a", 90).unwrap_err().is_refusal(), "nothing wanted now");
}

#[test]
fn a_resumed_install_never_pulls_again_what_is_durable() {
    let mut src = set_on(&SimDisk::new(), 300);
    fill(&mut src, "a", 60);
    fill(&mut src, "b", 10);
    let target = src.metadata();
    let d = SimDisk::new();
    let (mut dst, mut plan) = TopicSet::open_partial(Arc::new(d.clone()), cfg(200), &target).unwrap();
    for _ in 0..4 {
        let r = result(serve_records(&src, &request(plan.next_request(1, 300).unwrap())).unwrap());
        plan.on_records(&mut dst, r).unwrap();
    }
    dst.sync_all().unwrap();
    let durable = dst.get("a").unwrap().end_offset();
    assert!(durable > 0 && durable < 60);
    d.power_fail(None);
    let (mut dst, mut plan) = TopicSet::open_partial(Arc::new(d.clone()), cfg(200), &target).unwrap();
    let Some(Body::RecordsRequest { offset, .. }) = plan.next_request(2, 300) else { panic!("not done") };
    assert_eq!(offset, durable, "the pull resumes where the durable data ends");
    while let Some(req) = plan.next_request(3, 300) {
        let r = result(serve_records(&src, &request(req)).unwrap());
        plan.on_records(&mut dst, r).unwrap();
    }
    dst.sync_all().unwrap();
    assert_eq!(contents(&dst), contents(&src));
    assert_eq!(dst.metadata().next_id, target.next_id);
}

#[test]
fn a_member_behind_serves_what_it_has_and_a_topic_under_another_id_is_pulled_again() {
    let mut full = set_on(&SimDisk::new(), 300);
    fill(&mut full, "a", 30);
    let target = full.metadata();
    let mut behind = set_on(&SimDisk::new(), 300);
    fill(&mut behind, "a", 10);
    let d = SimDisk::new();
    let mut dst = set_on(&d, 200);
    fill(&mut dst, "zz", 1); // id 0, which the target gives to "a"
    fill(&mut dst, "a", 4); // id 1 here: its files cannot stand for the target's "a"
    let mut plan = CatchUp::new(&mut dst, &target).unwrap();
    assert_eq!(dst.get("a").unwrap().end_offset(), 0);
    assert!(d.list("topic-00000001-").unwrap().is_empty());
    let mut not_available = 0;
    while let Some(req) = plan.next_request(1, 100) {
        match result(serve_records(&behind, &request(req)).unwrap()) {
            r @ RecordsResult::NotAvailable { .. } => {
                assert!(plan.on_records(&mut dst, r).unwrap_err().is_refusal());
                not_available += 1;
                break;
            }
            r => plan.on_records(&mut dst, r).unwrap(),
        }
    }
    assert_eq!((not_available, dst.get("a").unwrap().end_offset()), (1, 10), "took what it had");
    while let Some(req) = plan.next_request(2, 100) {
        plan.on_records(&mut dst, result(serve_records(&full, &request(req)).unwrap())).unwrap();
    }
    assert_eq!(contents(&dst), contents(&full));
    assert_eq!(dst.metadata().topics[0].id, 0);
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8, u8),
    Trim(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, 1u8..12).prop_map(|(t, n)| Op::Append(t, n)),
        1 => (0u8..3, 0u8..60).prop_map(|(t, o)| Op::Trim(t, o)),
    ]
}

fn apply(s: &mut TopicSet, op: &Op) {
    match *op {
        Op::Append(t, n) => fill(s, &format!("t{t}"), u64::from(n)),
        Op::Trim(t, o) => {
            if let Some(st) = s.get_mut(&format!("t{t}")) {
                st.trim_before(u64::from(o)).unwrap();
            }
        }
    }
}

/// What happens to one answer on its way back.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Deliver,
    Lose,
    Duplicate,
    /// Held back and delivered after the next answer.
    Delay,
    Corrupt(u16),
    /// The member loses power after this answer was appended (torn write if `Some`).
    Crash(Option<u64>),
    /// Before this answer is delivered, retention trims the source's topic `t{0}` below `{1}`
    /// (a later log entry: the follower replays it after the catch-up).
    SourceTrim(u8, u8),
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        8 => Just(Fate::Deliver),
        2 => Just(Fate::Lose),
        2 => Just(Fate::Duplicate),
        2 => Just(Fate::Delay),
        2 => any::<u16>().prop_map(Fate::Corrupt),
        2 => prop::option::of(any::<u64>()).prop_map(Fate::Crash),
        1 => (0u8..3, 0u8..80).prop_map(|(t, o)| Fate::SourceTrim(t, o)),
    ]
}

/// Hands one answer to the planner; a refused answer is dropped, as the driver does.
fn deliver(plan: &mut CatchUp, dst: &mut TopicSet, r: RecordsResult) {
    if let Err(e) = plan.on_records(dst, r) {
        assert!(e.is_refusal(), "only refusals: {e}");
    }
}

fn corrupt(r: &RecordsResult, at: u16) -> Option<RecordsResult> {
    let RecordsResult::Chunk { topic, from, next, bytes } = r else { return None };
    let mut b = bytes.to_vec();
    let i = usize::from(at) % b.len();
    b[i] ^= 1 << (at % 8);
    Some(RecordsResult::Chunk { topic: topic.clone(), from: *from, next: *next, bytes: Bytes::from(b) })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A follower with an older state (a prefix of the source's history) and another segment
    /// size catches up to the source's metadata through serve_records, whatever happens to the
    /// answers, however often it loses power and however far the source's retention trims
    /// meanwhile: after replaying those trims it ends with identical contents, every chunk
    /// within its byte budget, and a corrupted chunk never lands.
    #[test]
    fn catch_up_converges_through_loss_duplication_reordering_corruption_and_crashes(
        ops in prop::collection::vec(op(), 1..40),
        known in 0usize..40,
        fates in prop::collection::vec(fate(), 0..200),
        max_bytes in 24u32..700,
    ) {
        let mut src = set_on(&SimDisk::new(), 300);
        let d = SimDisk::new();
        let mut dst = set_on(&d, 170);
        for (i, op) in ops.iter().enumerate() {
            apply(&mut src, op);
            if i < known {
                apply(&mut dst, op);
            }
        }
        let target = src.metadata();
        let mut plan = CatchUp::new(&mut dst, &target).unwrap();
        let mut held: VecDeque<RecordsResult> = VecDeque::new();
        let mut replay: Vec<Op> = Vec::new();
        let mut fates = fates.into_iter();
        let mut steps = 0;
        while let Some(req) = plan.next_request(steps, max_bytes) {
            steps += 1;
            prop_assert!(steps < 10_000, "no progress");
            let r = result(serve_records(&src, &request(req)).unwrap());
            if let RecordsResult::Chunk { from, next, bytes, .. } = &r {
                prop_assert!(*next == from + 1 || bytes.len() <= max_bytes as usize, "over budget");
            }
            match fates.next().unwrap_or(Fate::Deliver) {
                Fate::Deliver => deliver(&mut plan, &mut dst, r),
                Fate::Lose => {}
                Fate::Duplicate => {
                    deliver(&mut plan, &mut dst, r.clone());
                    deliver(&mut plan, &mut dst, r);
                }
                Fate::Delay => held.push_back(r),
                Fate::Corrupt(at) => {
                    let before = contents(&dst);
                    if let Some(bad) = corrupt(&r, at) {
                        prop_assert!(plan.on_records(&mut dst, bad).unwrap_err().is_refusal());
                        prop_assert_eq!(contents(&dst), before);
                    }
                }
                Fate::Crash(tear) => {
                    deliver(&mut plan, &mut dst, r);
                    d.power_fail(tear.map(rng_from_seed).as_mut());
                    (dst, plan) = TopicSet::open_partial(Arc::new(d.clone()), cfg(170), &target).unwrap();
                }
                Fate::SourceTrim(t, o) => {
                    let trim = Op::Trim(t, o);
                    apply(&mut src, &trim);
                    src.delete_trimmed().unwrap();
                    replay.push(trim);
                    deliver(&mut plan, &mut dst, r);
                }
            }
            if held.len() > 1 || (held.len() == 1 && steps % 3 == 0) {
                let late = held.pop_front().unwrap();
                deliver(&mut plan, &mut dst, late);
            }
        }
        dst.sync_all().unwrap();
        // The log after the snapshot is replayed: the source's later retention, then nothing else.
        replay.iter().for_each(|op| apply(&mut dst, op));
        prop_assert_eq!(contents(&dst), contents(&src));
        let ids = |m: &StoreMeta| m.topics.iter().map(|t| (t.name.clone(), t.id, t.first, t.end)).collect::<Vec<_>>();
        prop_assert_eq!(dst.metadata().next_id, target.next_id);
        prop_assert_eq!(ids(&dst.metadata()), ids(&src.metadata()));
    }
}
