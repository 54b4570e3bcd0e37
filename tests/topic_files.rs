//! Topic data in files on a member's disk (issue 13): a failed topic-file write stops the member
//! the way a WAL failure does and a restart recovers from disk; an old data directory is refused
//! with a message naming its format.
#![cfg(not(madsim))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eventstreamcore::config::ClusterConfig;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::node::{ClusterNode, ClusterOptions, ClusterTask, DedupConfig};
use eventstreamcore::rt::{Disk, DiskError, NodeClock, SimDisk, rng_from_seed};
use eventstreamcore::service::{EventService, ServiceError};

/// A disk whose topic-file writes fail while `fail` is set (the WAL's keep working).
#[derive(Debug)]
struct TopicFaults {
    inner: SimDisk,
    fail: AtomicBool,
}

impl TopicFaults {
    fn check(&self, name: &str) -> Result<(), DiskError> {
        if self.fail.load(Ordering::SeqCst) && name.starts_with("topic-") {
            return Err(DiskError::Io {
                op: "append",
                path: name.to_string(),
                source: std::io::Error::other("injected topic-file failure"),
            });
        }
        Ok(())
    }
}

impl Disk for TopicFaults {
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        self.inner.read(name)
    }
    fn size(&self, name: &str) -> Result<Option<u64>, DiskError> {
        self.inner.size(name)
    }
    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        self.inner.read_range(name, offset, len)
    }
    fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.check(name)?;
        self.inner.append(name, data)
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.check(name)?;
        self.inner.write(name, data)
    }
    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
        self.inner.truncate(name, len)
    }
    fn sync(&self, name: &str) -> Result<(), DiskError> {
        self.inner.sync(name)
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.inner.remove(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, DiskError> {
        self.inner.list(prefix)
    }
    fn sync_dir(&self) -> Result<(), DiskError> {
        self.inner.sync_dir()
    }
}

fn opts(snapshot_entries: u64) -> ClusterOptions {
    ClusterOptions {
        node_id: 1,
        cluster: ClusterConfig {
            raft_listen: "127.0.0.1:0".parse().unwrap(),
            tick_ms: 10,
            snapshot_entries,
            snapshot_keep_entries: 2,
            topic_segment_bytes: 4096,
            ..ClusterConfig::default()
        },
        dedup: DedupConfig::default(),
        client_addr: "127.0.0.1:1".into(),
        repair: false,
        pipeline: None,
        observer: None,
        store: eventstreamcore::store::StoreConfig { segment_bytes: 4096, ..Default::default() },
        read_max_bytes: 1 << 20,
    }
}

fn keyed(seq: u64) -> Event {
    let mut e = Event::new("t", Priority::Medium, vec![b'x'; 100]);
    e.producer_id = 9;
    e.sequence = seq;
    e
}

async fn start(disk: Arc<dyn Disk>, snapshot_entries: u64) -> (ClusterNode, ClusterTask) {
    start_with(disk, opts(snapshot_entries)).await
}

async fn start_with(disk: Arc<dyn Disk>, opts: ClusterOptions) -> (ClusterNode, ClusterTask) {
    let (node, task) = ClusterNode::start(opts, disk, NodeClock::new(), rng_from_seed(1)).await.unwrap();
    for _ in 0..500 {
        if node.status().role == eventstreamcore::raft::Role::Leader {
            return (node, task);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("a single member elects itself");
}

#[tokio::test]
async fn a_failed_topic_write_stops_the_member_and_a_restart_recovers_from_disk() {
    let disk = Arc::new(TopicFaults { inner: SimDisk::new(), fail: AtomicBool::new(false) });
    let (node, task) = start(disk.clone(), 10_000).await;
    for s in 0..5 {
        node.publish(vec![keyed(s)]).await.unwrap();
    }
    disk.fail.store(true, Ordering::SeqCst);
    // The entry is durable in the WAL, but applying it cannot write the topic file.
    let err = node.publish(vec![keyed(5)]).await.unwrap_err();
    match &err {
        ServiceError::Internal(why) => assert!(why.contains("topic files"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(node.status().failed.is_some(), "the member stopped replicating");
    let again = node.publish(vec![keyed(6)]).await.unwrap_err();
    assert!(matches!(again, ServiceError::Internal(_)), "{again:?}");
    node.shutdown();
    task.wait().await;
    // Restart: the committed entry is applied from the WAL; its retry is a duplicate.
    disk.fail.store(false, Ordering::SeqCst);
    let (node, task) = start(disk.clone(), 10_000).await;
    let a = node.publish(vec![keyed(5)]).await.unwrap();
    assert_eq!((a[0].offset, a[0].duplicate), (5, true));
    assert_eq!(node.state().event_count("t"), 6);
    node.shutdown();
    task.wait().await;
}

/// Entries carrying many events must not pile up in memory until `snapshot_entries` of them
/// were applied: a snapshot (and a compaction) comes once they hold `snapshot_log_bytes`.
#[tokio::test]
async fn a_snapshot_is_taken_once_the_entries_since_the_last_hold_snapshot_log_bytes() {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
    let mut o = opts(1_000_000);
    o.cluster.snapshot_log_bytes = 4096;
    let (node, task) = start_with(disk.clone(), o).await;
    assert!(disk.size("snapshot").unwrap().is_none(), "no snapshot before anything was applied");
    for s in 0..10 {
        node.publish((0..10).map(|i| keyed(s * 10 + i)).collect()).await.unwrap();
    }
    // 10 entries of 10 events of ~150 bytes: ~15 KiB of log, three or more snapshots by bytes.
    assert!(disk.size("snapshot").unwrap().is_some(), "a snapshot by log bytes");
    node.shutdown();
    task.wait().await;
    let (node, task) = start_with(disk.clone(), opts(1_000_000)).await;
    assert_eq!(node.state().event_count("t"), 100, "restarted from the snapshot and the log after it");
    node.shutdown();
    task.wait().await;
}

#[tokio::test]
async fn reads_come_from_the_files_with_the_byte_cap() {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
    let (node, task) = start(disk.clone(), 10_000).await;
    for s in 0..100 {
        node.publish(vec![keyed(s)]).await.unwrap();
    }
    assert!(disk.list("topic-").unwrap().len() > 1, "100 events of ~140 bytes roll 4 KiB segments");
    {
        let mut st = node.state();
        st.set_read_max_bytes(1000);
        let page = st.read("t", 10, 1000).unwrap();
        assert!((5..=8).contains(&page.events.len()), "about 1000 bytes: {}", page.events.len());
        assert_eq!(page.events[0].offset, 10);
        assert_eq!(page.next_offset, 10 + page.events.len() as u64);
    }
    node.shutdown();
    task.wait().await;
}

#[tokio::test]
async fn a_data_dir_of_the_previous_snapshot_format_is_refused_naming_it() {
    use eventstreamcore::raft::{ConfState, Snapshot, SnapshotMeta};
    use eventstreamcore::wal::{RaftStorage, StorageOptions};
    let disk = Arc::new(SimDisk::new());
    let (mut storage, _) =
        RaftStorage::open(disk.clone(), StorageOptions { segment_bytes: 8 << 20, repair: false }).unwrap();
    // Format 2: an empty address book, then "ESCS", version 2 and a body this build cannot read.
    let mut data = vec![0, 0, 0, 0];
    data.extend_from_slice(b"ESCS\x02");
    data.extend_from_slice(&[0; 40]);
    let meta = SnapshotMeta { index: 5, term: 1, conf_state: ConfState::with_voters([1]) };
    storage.save_snapshot(&Snapshot { meta, data: data.into() }).unwrap();
    drop(storage);
    let err = ClusterNode::start(opts(10_000), disk, NodeClock::new(), rng_from_seed(1)).await.err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    let this = format!("format {}", eventstreamcore::node::state::SNAPSHOT_VERSION);
    assert!(msg.contains("snapshot format 2") && msg.contains(&this), "{msg}");
}

#[tokio::test]
async fn snapshots_hold_metadata_and_a_restart_reopens_the_files_at_them() {
    let disk = Arc::new(SimDisk::new());
    let (node, task) = start(disk.clone(), 20).await;
    let mut saved = 0;
    for s in 0..200 {
        node.publish(vec![keyed(s)]).await.unwrap();
        if s % 50 == 49 {
            // Snapshots are taken (every 20 entries) and hold no event: no payload bytes in them.
            let snap = disk.read("snapshot").unwrap();
            assert!(!snap.windows(100).any(|w| w.iter().all(|&b| b == b'x')), "a snapshot holds events");
            saved += 1;
        }
    }
    assert_eq!(saved, 4);
    let before = node.state().digest();
    node.shutdown();
    task.wait().await;
    // A power failure drops what was not synced; the WAL after the snapshot is replayed.
    disk.power_fail(None);
    let (node, task) = start(disk.clone(), 20).await;
    assert_eq!(node.state().digest(), before);
    let a = node.publish(vec![keyed(200)]).await.unwrap();
    assert_eq!(a[0].offset, 200);
    node.shutdown();
    task.wait().await;
}

/// `cluster.max_topics`: the leader refuses a publish that would create one topic too many
/// (nothing of it is stored), existing topics take events, and a restart with a lower limit
/// replays the log the same (the limit is checked before proposing, never when applying).
#[tokio::test]
async fn a_publish_creating_a_topic_beyond_max_topics_is_refused_and_a_lower_limit_replays_the_same() {
    let on = |topic: &str, seq: u64| Event { topic: topic.into(), ..keyed(seq) };
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
    let mut o = opts(10_000);
    o.cluster.max_topics = 2;
    let (node, task) = start_with(disk.clone(), o.clone()).await;
    node.publish(vec![on("a", 0), on("b", 1)]).await.unwrap();
    let err = node.publish(vec![on("a", 2), on("c", 3)]).await.unwrap_err();
    match &err {
        ServiceError::OutOfRange(why) => assert!(why.contains("cluster.max_topics"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    let counts = {
        let st = node.state();
        (st.event_count("a"), st.event_count("c"))
    };
    assert_eq!(counts, (1, 0), "refused whole");
    assert_eq!(node.publish(vec![on("a", 2)]).await.unwrap()[0].offset, 1);
    let digest = node.state().digest();
    node.shutdown();
    task.wait().await;
    o.cluster.max_topics = 1;
    let (node, task) = start_with(disk.clone(), o).await;
    assert_eq!(node.state().digest(), digest, "the lower limit refuses nothing already in the log");
    assert!(matches!(node.publish(vec![on("d", 4)]).await, Err(ServiceError::OutOfRange(_))));
    node.shutdown();
    task.wait().await;
}

/// What a restart of the member on `disk` would find: the snapshot's index and the entries after it.
fn recovered_log(disk: &Arc<SimDisk>) -> (u64, usize) {
    use eventstreamcore::wal::{RaftStorage, StorageOptions};
    let opts = StorageOptions { segment_bytes: 8 << 20, repair: false };
    let (_, r) = RaftStorage::open(disk.clone(), opts).unwrap();
    (r.snapshot.map_or(0, |s| s.meta.index), r.entries.len())
}

/// Issue 13: a clean stop records a snapshot of everything applied, so a restart replays no
/// entry (no snapshot is due by count here: before, the 40 entries were all replayed) and
/// serves the same data, offsets running on.
#[tokio::test]
async fn a_clean_shutdown_snapshots_so_a_restart_replays_nothing_and_serves_the_same_data() {
    let disk = Arc::new(SimDisk::new());
    let (node, task) = start(disk.clone(), 10_000).await;
    for s in 0..40 {
        node.publish(vec![keyed(s)]).await.unwrap();
    }
    let (before, last) = (node.state().digest(), node.status().last_index);
    node.shutdown();
    task.wait().await;
    assert_eq!(recovered_log(&disk), (last, 0), "snapshot at the last entry, nothing after it");
    let (node, task) = start(disk.clone(), 10_000).await;
    assert_eq!(node.state().digest(), before);
    let page = node.state().read("t", 0, 100).unwrap();
    assert_eq!(page.events.iter().map(|e| e.event.sequence).collect::<Vec<_>>(), (0..40).collect::<Vec<_>>());
    let a = node.publish(vec![keyed(3), keyed(40)]).await.unwrap();
    assert_eq!((a[0].offset, a[0].duplicate, a[1].offset), (3, true, 40), "the dedup window survived");
    node.shutdown();
    task.wait().await;
}

/// A power failure at any point of the shutdown snapshot (the topic sync, the snapshot file, the
/// compaction), or after it once more was applied, converges: a restart holds every acked event.
#[tokio::test]
async fn a_crash_during_or_after_the_shutdown_snapshot_converges() {
    let mut struck = 0;
    for after_ops in 0..16 {
        let disk = Arc::new(SimDisk::new());
        let (node, task) = start(disk.clone(), 10_000).await;
        for s in 0..30 {
            node.publish(vec![keyed(s)]).await.unwrap();
        }
        let before = node.state().digest();
        let _ = disk.arm_crash(after_ops);
        node.shutdown();
        task.wait().await;
        struck += usize::from(disk.disarm_crash());
        disk.power_fail(Some(&mut rng_from_seed(after_ops)));
        let (node, task) = start(disk.clone(), 10_000).await;
        assert_eq!(node.state().digest(), before, "crash at op {after_ops} of the shutdown snapshot");
        // After a clean shutdown: more applied, then a crash (no snapshot) before the next stop.
        for s in 30..40 {
            node.publish(vec![keyed(s)]).await.unwrap();
        }
        let before = node.state().digest();
        let _ = disk.arm_crash(0);
        node.shutdown();
        task.wait().await;
        disk.power_fail(Some(&mut rng_from_seed(after_ops)));
        let (node, task) = start(disk.clone(), 10_000).await;
        assert_eq!(
            node.state().digest(),
            before,
            "crash after a restart from the shutdown snapshot ({after_ops})"
        );
        assert_eq!(node.publish(vec![keyed(40)]).await.unwrap()[0].offset, 40);
        node.shutdown();
        task.wait().await;
    }
    assert!(struck >= 8, "the crash struck inside the shutdown snapshot in {struck} of 16 runs");
}

/// Issue 13: a restarted single member campaigns at once rather than at its first tick (here a
/// minute away): `start` waits at most 2.5 s for it to lead.
#[tokio::test]
async fn a_restarted_single_member_leads_without_waiting_for_a_tick() {
    let disk = Arc::new(SimDisk::new());
    let (node, task) = start(disk.clone(), 10_000).await;
    node.publish(vec![keyed(0)]).await.unwrap();
    node.shutdown();
    task.wait().await;
    let mut slow = opts(10_000);
    slow.cluster.tick_ms = 60_000;
    let (node, task) = start_with(disk.clone(), slow).await;
    assert_eq!(node.publish(vec![keyed(1)]).await.unwrap()[0].offset, 1);
    node.shutdown();
    task.wait().await;
}

/// A disk whose topic-file fsyncs wait while `gate` is closed, or fail while `fail` is set
/// (counted in `failed`); everything else goes straight to the simulated disk.
#[derive(Debug, Default)]
struct TopicSyncs {
    inner: SimDisk,
    gate_closed: AtomicBool,
    waiting: AtomicBool,
    fail: AtomicBool,
    failed: std::sync::atomic::AtomicU64,
}

impl TopicSyncs {
    #[allow(clippy::disallowed_methods)] // a test disk: holds its caller's thread, as a slow fsync does
    fn before_sync(&self, name: &str) -> Result<(), DiskError> {
        if !name.starts_with("topic-") {
            return Ok(());
        }
        // Bounded, so that a failing test ends rather than holding a worker thread for ever.
        for _ in 0..10_000 {
            if !self.gate_closed.load(Ordering::SeqCst) {
                break;
            }
            self.waiting.store(true, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if self.fail.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(DiskError::Io {
                op: "fsync",
                path: name.to_string(),
                source: std::io::Error::other("injected topic-file fsync failure"),
            });
        }
        Ok(())
    }
}

impl Disk for TopicSyncs {
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        self.inner.read(name)
    }
    fn size(&self, name: &str) -> Result<Option<u64>, DiskError> {
        self.inner.size(name)
    }
    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        self.inner.read_range(name, offset, len)
    }
    fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.inner.append(name, data)
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.inner.write(name, data)
    }
    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
        self.inner.truncate(name, len)
    }
    fn sync(&self, name: &str) -> Result<(), DiskError> {
        self.before_sync(name)?;
        self.inner.sync(name)
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.inner.remove(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, DiskError> {
        self.inner.list(prefix)
    }
    fn sync_dir(&self) -> Result<(), DiskError> {
        self.inner.sync_dir()
    }
}

/// Options with topic segments too big to roll in these tests: the only topic fsyncs are a
/// snapshot's.
fn unrolled(snapshot_entries: u64) -> ClusterOptions {
    let mut o = opts(snapshot_entries);
    o.cluster.topic_segment_bytes = 1 << 20;
    o.store.segment_bytes = 1 << 20;
    o
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Issue 13: a snapshot's topic fsyncs and file write run in a task off the driver's round.
/// While they are held up, publishes are still applied and acked (on the old code the round
/// itself waited: these publishes timed out), and the snapshot is not recorded before its topic
/// data is durable; once they run it is, and a power failure after it loses nothing acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_acked_while_a_snapshots_topic_fsyncs_wait_and_the_snapshot_waits_for_them() {
    let disk = Arc::new(TopicSyncs::default());
    disk.gate_closed.store(true, Ordering::SeqCst);
    let (node, task) = start_with(disk.clone(), unrolled(20)).await;
    let acked_soon = |seq: u64| {
        let publish = node.publish(vec![keyed(seq)]);
        async move {
            let acked = tokio::time::timeout(std::time::Duration::from_secs(5), publish).await;
            assert!(matches!(acked, Ok(Ok(_))), "publish {seq} while the topic fsync waits: {acked:?}");
        }
    };
    for seq in 0..25 {
        acked_soon(seq).await;
    }
    until("the snapshot after 20 entries waits for its topic fsync", || disk.waiting.load(Ordering::SeqCst))
        .await;
    let mut seq = 25;
    for _ in 0..60 {
        acked_soon(seq).await;
        seq += 1;
    }
    assert!(disk.inner.size("snapshot").unwrap().is_none(), "a snapshot recorded before its topic fsyncs");
    disk.gate_closed.store(false, Ordering::SeqCst);
    until("the snapshot is saved", || disk.inner.size("snapshot").unwrap().is_some()).await;
    node.publish(vec![keyed(seq)]).await.unwrap();
    let before = node.state().digest();
    node.shutdown();
    task.wait().await;
    disk.inner.power_fail(None);
    let (node, task) = start_with(disk.clone(), unrolled(20)).await;
    assert_eq!(node.state().event_count("t"), seq + 1);
    assert_eq!(node.state().digest(), before);
    node.shutdown();
    task.wait().await;
}

/// A failed topic fsync for a snapshot is never retried and pretended durable (fsyncgate): the
/// snapshot is not recorded, the member stops replicating and says so, and a restart recovers
/// every acked event from the WAL.
#[tokio::test]
async fn a_failed_topic_fsync_refuses_the_snapshot_and_stops_the_member() {
    let disk = Arc::new(TopicSyncs::default());
    disk.fail.store(true, Ordering::SeqCst);
    let (node, task) = start_with(disk.clone(), unrolled(20)).await;
    let mut acked = 0;
    for seq in 0..200 {
        match node.publish(vec![keyed(seq)]).await {
            Ok(_) => acked += 1,
            Err(ServiceError::Internal(why)) => {
                assert!(why.contains("storage failed") && why.contains("fsync"), "{why}");
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!((10..40).contains(&acked), "the member stopped at its first snapshot (20 entries): {acked}");
    let failed = node.status().failed.unwrap_or_default();
    assert!(failed.contains("topic files"), "{failed}");
    assert!(disk.inner.size("snapshot").unwrap().is_none(), "the snapshot was recorded");
    assert_eq!(disk.failed.load(Ordering::SeqCst), 1, "the failed fsync was tried again");
    node.shutdown();
    task.wait().await;
    disk.fail.store(false, Ordering::SeqCst);
    disk.inner.power_fail(None);
    let (node, task) = start_with(disk.clone(), unrolled(20)).await;
    assert_eq!(node.state().event_count("t"), acked);
    node.shutdown();
    task.wait().await;
}
