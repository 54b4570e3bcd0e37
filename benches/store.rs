//! Topic store throughput on real files: `TopicStore::append` of 128-byte events in batches of 1
//! and 100 (no fsync: the Raft log is the durability point; one `sync` per 64 Ki events, as a
//! snapshot would), and `read` of 100 events at offsets spread over sealed segments (a seek
//! through the sparse index, then the page cache). On a `FileDisk` in a fresh directory under the
//! system temp dir, 8 MiB segments; the topic is trimmed and its old segments deleted every
//! 1 Mi events so disk use stays bounded. Measured in events per second.
//!
//! Run: `cargo bench --bench store -- --warm-up-time 1 --measurement-time 3`

#[cfg(not(madsim))]
mod bench {
    use std::sync::Arc;

    use criterion::{BenchmarkId, Criterion, Throughput};
    use eventstreamcore::event::{Event, Priority};
    use eventstreamcore::rt::FileDisk;
    use eventstreamcore::store::{StoreConfig, TopicStore};

    const SYNC_EVERY: u64 = 64 * 1024;
    const TRIM_EVERY: u64 = 1024 * 1024;

    fn cfg() -> StoreConfig {
        StoreConfig { segment_bytes: 8 << 20, ..StoreConfig::default() }
    }

    fn events(n: u64) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut e = Event::new("bench", Priority::Medium, vec![0x5a; 128]);
                e.producer_id = 1;
                e.sequence = i;
                e
            })
            .collect()
    }

    fn open(name: &str) -> (std::path::PathBuf, TopicStore) {
        let dir = std::env::temp_dir().join(format!("esc-bench-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let disk = Arc::new(FileDisk::open(&dir).expect("temp dir"));
        (dir, TopicStore::open(disk, "topic-bench-", cfg(), 0).expect("open"))
    }

    pub fn append(crit: &mut Criterion) {
        let mut group = crit.benchmark_group("topic_store_append");
        for batch in [1u64, 100] {
            group.throughput(Throughput::Elements(batch));
            group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
                let (dir, mut st) = open(&format!("append-{batch}"));
                let evs = events(batch);
                b.iter(|| {
                    let before = st.end_offset();
                    let end = st.append(evs.iter().map(|e| (1, e))).expect("append");
                    if end / SYNC_EVERY != before / SYNC_EVERY {
                        st.sync().expect("sync");
                    }
                    if end / TRIM_EVERY != before / TRIM_EVERY {
                        st.trim_before(end - 1).expect("trim");
                        st.delete_trimmed().expect("delete");
                    }
                });
                drop(st);
                let _ = std::fs::remove_dir_all(&dir);
            });
        }
        group.finish();
    }

    pub fn read(crit: &mut Criterion) {
        let (dir, mut st) = open("read");
        let evs = events(1000);
        for _ in 0..500 {
            st.append(evs.iter().map(|e| (1, e))).expect("append");
        }
        st.sync().expect("sync");
        let end = st.end_offset();
        let mut group = crit.benchmark_group("topic_store_read");
        group.throughput(Throughput::Elements(100));
        let mut at = 0u64;
        group.bench_function("100_events_at_spread_offsets", |b| {
            b.iter(|| {
                at = (at + 7919 * 13) % (end - 100);
                let got = st.read(at, 100, usize::MAX).expect("read");
                assert_eq!(got.len(), 100);
            });
        });
        group.finish();
        drop(st);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(not(madsim))]
criterion::criterion_group!(benches, bench::append, bench::read);
#[cfg(not(madsim))]
criterion::criterion_main!(benches);

#[cfg(madsim)]
fn main() {}
