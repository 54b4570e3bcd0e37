use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn w(window_ms: u64, per: usize, max: usize) -> DedupWindow {
    DedupWindow::new(DedupConfig { window_ms, max_keys_per_producer: per, max_keys: max })
}

/// Every remembered key as `(producer, sequence, topic, offset, stamped_ms)`, oldest first.
fn keys(d: &DedupWindow) -> Vec<(u64, u64, Arc<str>, u64, u64)> {
    d.runs()
        .flat_map(|r| {
            (0..r.len).map(move |i| {
                (r.producer, r.first_seq + i, r.topic.clone(), r.first_offset + i, r.stamped_ms)
            })
        })
        .collect()
}

/// `(producer, first_seq, first_offset, stamped_ms, len)` of each run, oldest first.
fn run_list(d: &DedupWindow) -> Vec<(u64, u64, u64, u64, u64)> {
    d.runs().map(|r| (r.producer, r.first_seq, r.first_offset, r.stamped_ms, r.len)).collect()
}

/// A window rebuilt from `d`'s runs, as a snapshot restores it.
fn restored(d: &DedupWindow, cfg: DedupConfig) -> DedupWindow {
    let mut r = DedupWindow::new(cfg);
    for run in d.runs() {
        r.restore_run(&run).unwrap();
    }
    r
}

#[test]
fn remembers_where_a_key_went() {
    let mut d = w(1000, 10, 100);
    d.record(7, 1, "a".into(), 5, 0);
    assert_eq!(d.lookup(7, 1), Some(DedupHit { topic: "a".into(), offset: 5 }));
    assert_eq!(d.lookup(7, 2), None);
    assert_eq!(d.lookup(8, 1), None);
}

#[test]
fn expires_by_stamped_time_only() {
    let mut d = w(1000, 10, 100);
    d.record(1, 1, "a".into(), 0, 100);
    d.record(1, 2, "a".into(), 1, 600);
    d.expire(1100);
    assert!(d.lookup(1, 1).is_some(), "exactly at the window edge it is still remembered");
    d.expire(1101);
    assert!(d.lookup(1, 1).is_none());
    assert!(d.lookup(1, 2).is_some());
    d.expire(5000);
    assert!(d.is_empty());
}

#[test]
fn per_producer_cap_forgets_lowest_sequences() {
    let mut d = w(u64::MAX / 2, 2, 100);
    for s in 0..4 {
        d.record(1, s, "a".into(), s, 0);
    }
    assert_eq!(d.len(), 2);
    assert!(d.lookup(1, 0).is_none() && d.lookup(1, 1).is_none());
    assert!(d.lookup(1, 3).is_some());
    assert_eq!(run_list(&d), vec![(1, 2, 2, 0, 2)], "trimmed at the front, one run");
    d.expire(u64::MAX);
    assert_eq!(d.len(), 0);
}

#[test]
fn runs_rebuild_the_same_window() {
    let mut d = w(1000, 2, 100);
    for s in 0..4 {
        d.record(1, s, "a".into(), s, s * 10);
    }
    d.record(2, 0, "b".into(), 0, 50);
    d.expire(1025);
    let r = restored(&d, d.config());
    assert_eq!(r.len(), d.len());
    assert_eq!(r.len(), 2, "keys 0,1 evicted by the per-producer cap, 2 expired");
    for (p, s) in [(1, 3), (2, 0)] {
        assert_eq!(r.lookup(p, s), d.lookup(p, s));
    }
    assert_eq!(r.lookup(1, 2), None);
    assert_eq!(keys(&r), keys(&d));
}

#[test]
fn global_cap_forgets_oldest() {
    let mut d = w(u64::MAX / 2, 10, 3);
    for p in 1..=5 {
        d.record(p, 0, "a".into(), p, p);
    }
    assert_eq!(d.len(), 3);
    assert!(d.lookup(1, 0).is_none() && d.lookup(2, 0).is_none());
    assert!(d.lookup(5, 0).is_some());
}

/// Keys a producer's cap forgets must not pile up for the whole window (an earlier queue held
/// an item per key published in the last 10 minutes): freed run slots are reused, so memory
/// follows the runs remembered. Producer 1's key stays live at the oldest end throughout.
#[test]
fn memory_follows_the_live_keys_not_the_published_ones() {
    let mut d = w(u64::MAX / 2, 10, 1_000_000);
    d.record(1, 0, "a".into(), 0, 0);
    for s in 0..100_000 {
        // A new stamp each: every key is its own run.
        d.record(2, s, "a".into(), s + 1, s + 1);
    }
    assert_eq!((d.len(), d.run_count()), (11, 11));
    assert!(d.slots.len() <= 12, "{} slots for {} runs", d.slots.len(), d.run_count());
    let live: Vec<_> = keys(&d).into_iter().map(|(p, s, ..)| (p, s)).collect();
    let want: Vec<_> = std::iter::once((1, 0)).chain((99_990..100_000).map(|s| (2, s))).collect();
    assert_eq!(live, want, "oldest first, each once");
}

/// A key evicted by the cap and recorded again is one live key, listed once, expired once.
#[test]
fn a_key_recorded_again_after_eviction_is_listed_once() {
    let mut d = w(1000, 1, 100);
    d.record(1, 5, "a".into(), 0, 10);
    d.record(1, 6, "a".into(), 1, 10); // evicts 5
    d.record(1, 5, "a".into(), 2, 10); // 5 is lowest again: evicted at once
    d.record(2, 1, "a".into(), 3, 10);
    d.record(2, 0, "a".into(), 4, 20); // evicts 0 itself
    assert_eq!(d.len(), 2);
    assert_eq!(keys(&d).len(), 2);
    d.expire(1011);
    assert!(d.is_empty(), "{:?}", keys(&d));
    assert_eq!((d.run_count(), d.slots.len()), (0, 0));
}

/// A pipelined producer's keys are written as a few runs, not key by key (a snapshot wrote
/// ~47 bytes per remembered key: 18 MB at 400 K keys, rewritten at every snapshot).
#[test]
fn consecutive_keys_of_a_producer_make_one_run() {
    let mut d = w(u64::MAX / 2, 100, 1000);
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    for s in 0..10 {
        d.record(1, s, a.clone(), 100 + s, 5);
    }
    d.record(2, 0, a.clone(), 110, 5); // another producer breaks the run
    d.record(1, 10, a.clone(), 111, 5); // offset gap: a new run
    d.record(1, 11, a.clone(), 112, 6); // new stamp: a new run
    d.record(1, 12, b.clone(), 113, 6); // other topic: a new run
    assert_eq!(
        run_list(&d),
        vec![
            (1, 0, 100, 5, 10),
            (2, 0, 110, 5, 1),
            (1, 10, 111, 5, 1),
            (1, 11, 112, 6, 1),
            (1, 12, 113, 6, 1)
        ]
    );
    assert_eq!(d.runs().map(|r| r.len).sum::<u64>(), d.len() as u64);
}

/// When the run between two runs that continue each other is forgotten, they become one: the
/// runs depend on the keys remembered, not on the history (a restored replica, which never saw
/// the middle run, writes the same snapshot as one that did).
#[test]
fn neighbours_merge_when_the_run_between_them_is_forgotten() {
    let mut d = w(u64::MAX / 2, 1, 1000);
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    d.record(1, 0, a.clone(), 0, 5);
    d.record(2, 0, b.clone(), 0, 5);
    d.record(1, 1, a.clone(), 1, 5); // producer 1's cap forgets (1, 0)
    assert_eq!(run_list(&d), vec![(2, 0, 0, 5, 1), (1, 1, 1, 5, 1)]);
    let mut d = w(u64::MAX / 2, 2, 1000);
    d.record(1, 0, a.clone(), 0, 5);
    d.record(2, 7, b.clone(), 0, 5);
    d.record(1, 1, a.clone(), 1, 5);
    d.record(2, 8, b.clone(), 1, 5);
    d.record(2, 0, b.clone(), 2, 5); // producer 2's cap forgets its lowest: (2, 0) itself
    d.record(2, 9, b.clone(), 3, 5); // forgets (2, 7): the run between producer 1's keys
    assert_eq!(run_list(&d), vec![(1, 0, 0, 5, 2), (2, 8, 1, 5, 1), (2, 9, 3, 5, 1)]);
    assert_eq!(d.run_count(), 3);
    assert_eq!(run_list(&restored(&d, d.config())), run_list(&d));
}

/// A snapshot's run is restored whole, in O(log runs): a run of `u32::MAX` keys costs no more
/// than one of a single key, and the member's caps trim it at the front.
#[test]
fn a_restored_run_is_not_expanded_key_by_key() {
    let t: Arc<str> = "a".into();
    let long = |len| DedupRun { producer: 3, first_seq: 10, first_offset: 0, stamped_ms: 1, len, topic: &t };
    let mut d = w(1000, usize::MAX, usize::MAX);
    d.restore_run(&long(u64::from(u32::MAX))).unwrap();
    assert_eq!((d.len(), d.run_count()), (u32::MAX as usize, 1));
    assert_eq!(d.lookup(3, 10 + u64::from(u32::MAX) - 1).map(|h| h.offset), Some(u64::from(u32::MAX) - 1));
    let mut small = w(1000, 5, usize::MAX);
    small.restore_run(&long(u64::from(u32::MAX))).unwrap();
    let first = 10 + u64::from(u32::MAX) - 5;
    assert_eq!(run_list(&small), vec![(3, first, first - 10, 1, 5)]);
}

#[test]
fn damaged_runs_are_refused() {
    let t: Arc<str> = "a".into();
    let run = |first_seq, first_offset, stamped_ms, len| DedupRun {
        producer: 1,
        first_seq,
        first_offset,
        stamped_ms,
        len,
        topic: &t,
    };
    let mut d = w(1000, 100, 100);
    assert_eq!(d.restore_run(&run(0, 0, 5, 0)), Err(RestoreError::OutOfRange));
    assert_eq!(d.restore_run(&run(u64::MAX, 0, 5, 2)), Err(RestoreError::OutOfRange));
    assert_eq!(d.restore_run(&run(0, u64::MAX, 5, 2)), Err(RestoreError::OutOfRange));
    assert_eq!(d.restore_run(&run(0, 0, 5, u64::from(u32::MAX) + 1)), Err(RestoreError::OutOfRange));
    // The last sequence and offset are keys like any other.
    d.restore_run(&run(u64::MAX, u64::MAX, 5, 1)).unwrap();
    d.restore_run(&run(10, 0, 6, 5)).unwrap();
    assert_eq!(d.restore_run(&run(20, 5, 4, 1)), Err(RestoreError::OutOfOrder));
    for (first, len) in [(10, 1), (14, 3), (8, 3), (5, 20)] {
        assert_eq!(d.restore_run(&run(first, 100, 6, len)), Err(RestoreError::Repeated), "{first}+{len}");
    }
    d.restore_run(&run(15, 5, 6, 1)).unwrap(); // continues the run
    d.restore_run(&run(7, 100, 6, 3)).unwrap(); // just below it
    assert_eq!(run_list(&d), vec![(1, u64::MAX, u64::MAX, 5, 1), (1, 10, 0, 6, 6), (1, 7, 100, 6, 3)]);
}

/// A model key's topic, offset, stamp and place in recording order.
type ModelEntry = (Arc<str>, u64, u64, u64);
/// `(producer, first_seq, first_offset, stamped_ms, len)` and the topic of a model run.
type ModelRun<'a> = (u64, u64, u64, u64, u64, &'a Arc<str>);

/// The key-by-key table the runs replaced, as plainly as it can be said: the model the window
/// must answer exactly like.
struct Model {
    cfg: DedupConfig,
    /// `(producer, seq)` → (topic, offset, stamp, recording order).
    keys: HashMap<(u64, u64), ModelEntry>,
    next: u64,
}

impl Model {
    fn record(&mut self, p: u64, s: u64, topic: Arc<str>, offset: u64, stamp: u64) {
        self.keys.insert((p, s), (topic, offset, stamp, self.next));
        self.next += 1;
        let mine: Vec<u64> = self.keys.keys().filter(|k| k.0 == p).map(|k| k.1).collect();
        if mine.len() > self.cfg.max_keys_per_producer {
            self.keys.remove(&(p, *mine.iter().min().unwrap()));
        }
        while self.keys.len() > self.cfg.max_keys {
            let oldest = *self.keys.iter().min_by_key(|(_, e)| e.3).unwrap().0;
            self.keys.remove(&oldest);
        }
    }

    fn expire(&mut self, now: u64) {
        let window = self.cfg.window_ms;
        self.keys.retain(|_, e| e.2.saturating_add(window) >= now);
    }

    fn lookup(&self, p: u64, s: u64) -> Option<(Arc<str>, u64, u64)> {
        self.keys.get(&(p, s)).map(|e| (e.0.clone(), e.1, e.2))
    }

    /// The longest runs of the live keys in recording order.
    fn runs(&self) -> Vec<(u64, u64, u64, u64, u64)> {
        let mut live: Vec<_> = self.keys.iter().collect();
        live.sort_by_key(|(_, e)| e.3);
        let mut runs: Vec<ModelRun<'_>> = Vec::new();
        for (&(p, s), (t, o, st, _)) in live {
            if let Some(r) = runs.last_mut()
                && (r.0, r.3, r.1 + r.4, r.2 + r.4) == (p, *st, s, *o)
                && r.5 == t
            {
                r.4 += 1;
                continue;
            }
            runs.push((p, s, *o, *st, 1, t));
        }
        runs.into_iter().map(|r| (r.0, r.1, r.2, r.3, r.4)).collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Producer, its next sequence or `seq`, topic, stamp step.
    Record { p: u64, next: bool, seq: u64, topic: usize, dt: u64 },
    /// Expiry at the current stamp plus `extra`.
    Expire { extra: u64 },
    /// Replace the window with one restored from its runs.
    Restore,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3u64, prop::bool::weighted(0.7), 0..40u64, 0..2usize, prop_oneof![3 => Just(0u64), 1 => 1..4u64])
            .prop_map(|(p, next, seq, topic, dt)| Op::Record { p, next, seq, topic, dt }),
        2 => (0..3u64).prop_map(|extra| Op::Expire { extra }),
        1 => Just(Op::Restore),
    ]
}

/// Runs every op on the window and the model; after each, both answer every lookup alike and
/// the window's runs are the model's longest runs.
fn check_against_model(cfg: DedupConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let topics: [Arc<str>; 2] = ["a".into(), "b".into()];
    let (mut d, mut m) = (DedupWindow::new(cfg), Model { cfg, keys: HashMap::new(), next: 0 });
    let (mut stamp, mut ends, mut next_seq) = (0u64, [0u64; 2], [0u64; 3]);
    for op in ops {
        match op {
            Op::Record { p, next, seq, topic, dt } => {
                stamp += dt;
                let s = if next { next_seq[p as usize] } else { seq };
                next_seq[p as usize] = s + 1;
                if m.lookup(p, s).is_some() {
                    continue; // the state machine never records a remembered key
                }
                d.record(p, s, topics[topic].clone(), ends[topic], stamp);
                m.record(p, s, topics[topic].clone(), ends[topic], stamp);
                ends[topic] += 1;
            }
            Op::Expire { extra } => {
                d.expire(stamp + extra);
                m.expire(stamp + extra);
            }
            Op::Restore => d = restored(&d, cfg),
        }
        prop_assert_eq!(d.len(), m.keys.len());
        prop_assert_eq!(run_list(&d), m.runs());
        for p in 0..3 {
            for s in 0..45 {
                let want = m.lookup(p, s);
                prop_assert_eq!(
                    d.lookup(p, s),
                    want.clone().map(|(topic, offset, _)| DedupHit { topic, offset })
                );
                let now = stamp + 1;
                let live = want.filter(|w| w.2.saturating_add(cfg.window_ms) >= now);
                prop_assert_eq!(
                    d.lookup_at(p, s, now),
                    live.map(|(topic, offset, _)| DedupHit { topic, offset })
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn answers_exactly_as_the_key_by_key_table(
        window_ms in 0..12u64,
        per in 0..8usize,
        max in 0..30usize,
        ops in prop::collection::vec(op(), 1..150),
    ) {
        check_against_model(DedupConfig { window_ms, max_keys_per_producer: per, max_keys: max }, ops)?;
    }
}
