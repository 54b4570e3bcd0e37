//! Codec and state-machine throughput: legacy decode, acked publish encode/decode, and applying
//! batches to the event log. Run: `cargo bench --bench wire`.
#![cfg_attr(madsim, allow(unused))]

#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
fn main() {
    benches::main();
}

#[cfg(not(madsim))]
mod benches {
    use bytes::BytesMut;
    use criterion::{BatchSize, Criterion, Throughput, criterion_group};
    use eventstreamcore::event::{Event, Priority};
    use eventstreamcore::node::{DedupConfig, EventLogState};
    use eventstreamcore::wire::{Inbound, Request, StreamDecoder, legacy};

    fn events(n: u64, payload: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut e = Event::new("sensor/temperature", Priority::High, vec![b'x'; payload]);
                e.producer_id = 7;
                e.sequence = i;
                e
            })
            .collect()
    }

    fn codec(c: &mut Criterion) {
        let mut g = c.benchmark_group("codec");
        let n = 1000u64;
        g.throughput(Throughput::Elements(n));

        let mut legacy_stream = Vec::new();
        for _ in 0..n {
            legacy::encode(Priority::High, "sensor/temperature", &[b'x'; 128], &mut legacy_stream);
        }
        g.bench_function("legacy_decode_1000x128B", |b| {
            b.iter_batched(
                || BytesMut::from(&legacy_stream[..]),
                |mut buf| {
                    let mut d = StreamDecoder::new(1 << 20);
                    let mut k = 0;
                    while let Ok(Some(Inbound::Legacy(_))) = d.decode(&mut buf) {
                        k += 1;
                    }
                    assert_eq!(k, n);
                },
                BatchSize::SmallInput,
            )
        });

        let req = Request::Publish(events(n, 128));
        g.bench_function("acked_publish_encode_1000x128B", |b| {
            b.iter(|| {
                let mut out = BytesMut::with_capacity(200_000);
                req.encode(1, &mut out);
                out
            })
        });
        let mut frame = BytesMut::new();
        req.encode(1, &mut frame);
        g.bench_function("acked_publish_decode_1000x128B", |b| {
            b.iter_batched(
                || frame.clone(),
                |mut buf| {
                    let mut d = StreamDecoder::new(1 << 20);
                    match d.decode(&mut buf) {
                        Ok(Some(Inbound::Request { request: Request::Publish(ev), .. })) => {
                            assert_eq!(ev.len() as u64, n)
                        }
                        other => panic!("{other:?}"),
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }

    fn state(c: &mut Criterion) {
        let mut g = c.benchmark_group("event_log");
        let n = 1000u64;
        g.throughput(Throughput::Elements(n));
        g.bench_function("apply_batch_1000_keyed", |b| {
            let mut s = EventLogState::new(DedupConfig::default());
            let mut base = 0u64;
            b.iter_batched(
                || {
                    let mut ev = events(n, 128);
                    for e in &mut ev {
                        e.sequence += base;
                    }
                    base += n;
                    ev
                },
                |ev| s.apply_batch(ev, 1),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }

    criterion_group!(all, codec, state);

    pub fn main() {
        all();
        criterion::Criterion::default().configure_from_args().final_summary();
    }
}
