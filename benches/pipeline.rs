//! Event-pipeline throughput alone (default handlers, no handling cost, an in-memory DLQ disk):
//! one iteration starts a pipeline, submits 30,000 committed events in batches of 100 across the
//! three classes (realtime, transactional, batch — one topic each) and shuts it down, which drains
//! every queue and flushes the batch windows. Measured in events fully handled per second.
//!
//! Run: `cargo bench --bench pipeline -- --warm-up-time 1 --measurement-time 5`

#[cfg(not(madsim))]
mod bench {
    use std::sync::Arc;

    use criterion::{Criterion, Throughput};
    use eventstreamcore::event::{Event, Priority, StoredEvent};
    use eventstreamcore::pipeline::{Class, MemCheckpoint, Pipeline, PipelineConfig, StartOptions};
    use eventstreamcore::rt::{NodeClock, SimDisk};

    const EVENTS: u64 = 30_000;

    async fn run_once() -> u64 {
        let mut cfg = PipelineConfig { default_priority: Priority::Batch, ..PipelineConfig::default() };
        cfg.realtime.capacity = 1 << 20;
        cfg.realtime.deadline_ms = 60_000;
        cfg.transactional.capacity = 1 << 20;
        cfg.batch.capacity = 1 << 20;
        let clock = NodeClock::new();
        let opts =
            StartOptions { checkpoint: Arc::new(MemCheckpoint::new(1 << 20)), ..StartOptions::default() };
        let p = Pipeline::start(cfg, clock.clone(), Arc::new(SimDisk::new()), opts).expect("start");
        let topics =
            [("sensor/temperature", Priority::High), ("orders", Priority::Medium), ("logs", Priority::Batch)];
        let mut batch = Vec::with_capacity(100);
        for i in 0..EVENTS {
            let (topic, priority) = topics[i as usize % 3];
            let mut event = Event::new(topic, priority, vec![20u8]);
            event.producer_id = 1;
            event.sequence = i;
            batch.push(StoredEvent { offset: i / 3, timestamp_ms: clock.wall_unix_ms(), event });
            if batch.len() == 100 {
                p.submit(std::mem::take(&mut batch));
                tokio::task::yield_now().await;
            }
        }
        p.submit(batch);
        p.shutdown().await;
        let m = p.metrics();
        Class::ALL.iter().map(|c| m.class(*c).processed.get()).sum()
    }

    pub fn submit_and_drain(crit: &mut Criterion) {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let mut group = crit.benchmark_group("pipeline_submit_drain");
        group.throughput(Throughput::Elements(EVENTS));
        group.sample_size(20);
        group.bench_function("30k_events_3_classes", |b| {
            b.iter(|| {
                let processed = rt.block_on(run_once());
                assert_eq!(processed, EVENTS, "every event handled");
            })
        });
        group.finish();
    }
}

#[cfg(not(madsim))]
criterion::criterion_group!(benches, bench::submit_and_drain);
#[cfg(not(madsim))]
criterion::criterion_main!(benches);

#[cfg(madsim)]
fn main() {}
