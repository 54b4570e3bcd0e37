//! Raft storage throughput on real files: `RaftStorage::append` of a batch of 100-byte entries
//! followed by one `sync()` (group commit: one fsync of the active segment), on a `FileDisk` in a
//! fresh directory under the system temp dir, at batch sizes 1, 64 and 1024. Measured in entries
//! made durable per second. Every 256 Ki entries the bench saves a snapshot and compacts the log so
//! the disk use stays bounded (that cost is included, amortised).
//!
//! Run: `cargo bench --bench storage -- --warm-up-time 1 --measurement-time 5`

#[cfg(not(madsim))]
mod bench {
    use std::sync::Arc;

    use bytes::Bytes;
    use criterion::{BenchmarkId, Criterion, Throughput};
    use eventstreamcore::raft::{ConfState, Entry, EntryKind, Snapshot, SnapshotMeta};
    use eventstreamcore::rt::FileDisk;
    use eventstreamcore::wal::{RaftStorage, StorageOptions};

    const COMPACT_EVERY: u64 = 256 * 1024;

    /// Appends `batch` entries after the last one and makes them durable.
    fn round(st: &mut RaftStorage, batch: u64, payload: &Bytes) {
        let first = st.last_index() + 1;
        let entries: Vec<Entry> = (first..first + batch)
            .map(|index| Entry { term: 1, index, kind: EntryKind::Normal, data: payload.clone() })
            .collect();
        st.append(&entries).expect("append");
        st.sync().expect("sync");
        let last = st.last_index();
        let snap_index = st.snapshot_meta().map_or(0, |m| m.index);
        if last - snap_index >= COMPACT_EVERY {
            let meta = SnapshotMeta { index: last, term: 1, conf_state: ConfState::with_voters([1]) };
            st.save_snapshot(&Snapshot { meta, data: Bytes::from_static(b"bench") }).expect("snapshot");
            st.compact(last).expect("compact");
        }
    }

    pub fn append_sync(crit: &mut Criterion) {
        let payload = Bytes::from(vec![0x5a; 100]);
        let mut group = crit.benchmark_group("raft_storage_append_sync");
        for batch in [1u64, 64, 1024] {
            group.throughput(Throughput::Elements(batch));
            group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
                let dir =
                    std::env::temp_dir().join(format!("esc-bench-storage-{}-{batch}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let disk = Arc::new(FileDisk::open(&dir).expect("temp dir"));
                let (mut st, _) = RaftStorage::open(disk, StorageOptions::default()).expect("open");
                b.iter(|| round(&mut st, batch, &payload));
                let stats = st.stats();
                assert!(stats.fsyncs > 0 && stats.entries_appended > 0);
                drop(st);
                let _ = std::fs::remove_dir_all(&dir);
            });
        }
        group.finish();
    }
}

#[cfg(not(madsim))]
criterion::criterion_group!(benches, bench::append_sync);
#[cfg(not(madsim))]
criterion::criterion_main!(benches);

#[cfg(madsim)]
fn main() {}
