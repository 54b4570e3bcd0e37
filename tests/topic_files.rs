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
