//! The dedup window at the size of a long single-member run (issue 13): four pipelined producers,
//! each at its default cap of 100,000 keys (400 K keys), 50 keys per producer per batch stamp.
//! Old = main's key-by-key window (`old.rs`), new = the runs of `src/node/dedup.rs`.
//!
//! * `dedup_encode`: the window's part of a snapshot (the runs, serialised as `encode_tail` does),
//!   which the driver does inside its round;
//! * `dedup_rebuild`: restoring the window from those runs (restart and snapshot install);
//! * `dedup_publish`: the per-event work of a publish on the full window — `lookup_at` (a miss),
//!   then `record`, which makes the producer's cap forget its lowest key.
//!
//! Run: `cargo bench --bench dedup -- --warm-up-time 1 --measurement-time 3`

#[cfg(not(madsim))]
mod old;

#[cfg(not(madsim))]
mod bench {
    use std::hint::black_box;
    use std::sync::Arc;

    use bytes::{BufMut, BytesMut};
    use criterion::{Criterion, Throughput};
    use eventstreamcore::node::dedup::DedupRun;
    use eventstreamcore::node::{DedupConfig, DedupWindow};

    use super::old;

    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 100_000;
    const RUN: u64 = 50;

    /// `(producer, seq, offset, stamp)` of every key, in recording order.
    fn keys() -> impl Iterator<Item = (u64, u64, u64, u64)> {
        (0..PER_PRODUCER / RUN).flat_map(|batch| {
            (0..PRODUCERS).flat_map(move |p| {
                (0..RUN).map(move |i| {
                    let seq = batch * RUN + i;
                    (p + 1, seq, (batch * PRODUCERS + p) * RUN + i, 1_000 + batch)
                })
            })
        })
    }

    fn topic() -> Arc<str> {
        Arc::from("bench")
    }

    fn filled_old() -> old::DedupWindow {
        let (t, mut d) = (topic(), old::DedupWindow::new(DedupConfig::default()));
        for (p, s, o, st) in keys() {
            d.record(p, s, t.clone(), o, st);
        }
        d
    }

    fn filled_new() -> DedupWindow {
        let (t, mut d) = (topic(), DedupWindow::new(DedupConfig::default()));
        for (p, s, o, st) in keys() {
            d.record(p, s, t.clone(), o, st);
        }
        d
    }

    /// The window's part of a snapshot, as `EventLogState::encode_tail` writes it.
    fn put_runs<'a>(out: &mut BytesMut, count: usize, runs: impl Iterator<Item = DedupRun<'a>>) {
        out.put_u64(count as u64);
        for r in runs {
            out.put_u64(r.producer);
            out.put_u64(r.first_seq);
            out.put_u64(r.first_offset);
            out.put_u64(r.stamped_ms);
            out.put_u32(r.len as u32);
            out.put_u16(r.topic.len() as u16);
            out.put_slice(r.topic.as_bytes());
        }
    }

    fn old_runs(d: &old::DedupWindow) -> Vec<DedupRun<'_>> {
        d.live_runs()
            .into_iter()
            .map(|r| DedupRun {
                producer: r.producer,
                first_seq: r.first_seq,
                first_offset: r.first_offset,
                stamped_ms: r.stamped_ms,
                len: r.len,
                topic: r.topic,
            })
            .collect()
    }

    pub fn encode(crit: &mut Criterion) {
        let (o, n) = (filled_old(), filled_new());
        assert_eq!(old_runs(&o), n.runs().collect::<Vec<_>>(), "the same runs, the same bytes");
        let mut group = crit.benchmark_group("dedup_encode_400k_keys");
        group.bench_function("old", |b| {
            b.iter(|| {
                let runs = old_runs(&o);
                let mut out = BytesMut::with_capacity(256);
                put_runs(&mut out, runs.len(), runs.into_iter());
                black_box(out)
            })
        });
        group.bench_function("new", |b| {
            b.iter(|| {
                let mut out = BytesMut::with_capacity(256);
                put_runs(&mut out, n.run_count(), n.runs());
                black_box(out)
            })
        });
        group.finish();
    }

    /// Old: each run's keys recorded one by one, as main's `decode_dedup` did.
    fn rebuild_old(runs: &[DedupRun<'_>]) -> old::DedupWindow {
        let mut d = old::DedupWindow::new(DedupConfig::default());
        let cap = d.config().max_keys_per_producer as u64;
        for r in runs {
            for i in r.len.saturating_sub(cap)..r.len {
                assert!(d.can_record(r.producer, r.first_seq + i, r.stamped_ms));
                d.record(r.producer, r.first_seq + i, r.topic.clone(), r.first_offset + i, r.stamped_ms);
            }
        }
        d
    }

    fn rebuild_new(runs: &[DedupRun<'_>]) -> DedupWindow {
        let mut d = DedupWindow::new(DedupConfig::default());
        for r in runs {
            d.restore_run(r).expect("a run of a valid window");
        }
        d
    }

    pub fn rebuild(crit: &mut Criterion) {
        let n = filled_new();
        let runs: Vec<DedupRun<'_>> = n.runs().collect();
        assert_eq!(rebuild_old(&runs).len(), rebuild_new(&runs).len());
        let mut group = crit.benchmark_group("dedup_rebuild_400k_keys");
        group.sample_size(10);
        group.bench_function("old", |b| b.iter(|| black_box(rebuild_old(&runs))));
        group.bench_function("new", |b| b.iter(|| black_box(rebuild_new(&runs))));
        group.finish();
    }

    /// One batch: each producer's next `RUN` keys, looked up (a miss) then recorded.
    macro_rules! publish_batch {
        ($d:expr, $t:expr, $batch:expr) => {{
            let batch: u64 = $batch;
            for p in 1..=PRODUCERS {
                for i in 0..RUN {
                    let (seq, offset, stamp) =
                        (batch * RUN + i, (batch * PRODUCERS + p) * RUN + i, 1_000 + batch);
                    if $d.lookup_at(p, seq, stamp).is_none() {
                        $d.record(p, seq, $t.clone(), offset, stamp);
                    }
                }
            }
        }};
    }

    pub fn publish(crit: &mut Criterion) {
        let mut group = crit.benchmark_group("dedup_publish_at_400k_keys");
        group.throughput(Throughput::Elements(PRODUCERS * RUN));
        let t = topic();
        let (mut o, mut batch) = (filled_old(), PER_PRODUCER / RUN);
        group.bench_function("old", |b| {
            b.iter(|| {
                publish_batch!(o, t, batch);
                batch += 1;
            })
        });
        let (mut n, mut batch) = (filled_new(), PER_PRODUCER / RUN);
        group.bench_function("new", |b| {
            b.iter(|| {
                publish_batch!(n, t, batch);
                batch += 1;
            })
        });
        group.finish();
    }
}

#[cfg(not(madsim))]
criterion::criterion_group!(benches, bench::encode, bench::rebuild, bench::publish);
#[cfg(not(madsim))]
criterion::criterion_main!(benches);

#[cfg(madsim)]
fn main() {}
