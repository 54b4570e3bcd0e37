//! A member that installs a snapshot (metadata only) pulls the topic records it lacks from the
//! others in bounded chunks, refuses reads meanwhile, and resumes the pull after a crash without
//! asking again for what it had made durable. Real runtime, in-memory disks.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // test set-up picks free ports with std sockets

mod common;

use common::cluster::TestCluster;

use std::time::Duration;

use bytes::Bytes;
use eventstreamcore::config::ClusterConfig;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::node::{CatchUpCounters, ClusterNode};
use eventstreamcore::service::{EventService, ServiceError};
use eventstreamcore::store::StoreConfig;

const CHUNK: u32 = 4096;

/// Three members started, then one follower stopped: (cluster, leader, that follower).
async fn with_a_stopped_follower() -> (TestCluster, u64, u64) {
    let mut c = TestCluster::new(3);
    c.secret = "s3cret-catch-up".into();
    // The log behind a snapshot is short: a wiped member needs the snapshot.
    c.keep_entries = 5;
    c.store = StoreConfig { segment_bytes: 16 << 10, ..StoreConfig::default() };
    c.tune = |cfg| {
        cfg.topic_segment_bytes = 16 << 10;
        cfg.catchup_chunk_bytes = CHUNK;
        cfg.segment_bytes = ClusterConfig::default().segment_bytes;
    };
    c.start_all().await;
    let l = c.leader().await;
    let lagger = (1..=3).find(|&i| i != l).unwrap();
    c.stop(lagger, false).await;
    (c, l, lagger)
}

/// Publishes `batches` batches (one log entry each) of 20 events of `size` bytes to topic `t` on
/// the leader.
async fn fill(c: &TestCluster, leader: u64, batches: u64, size: usize) {
    for b in 0..batches {
        let events = (0..20)
            .map(|i| {
                let seq = b * 20 + i;
                let mut e = Event::new("t", Priority::Medium, format!("{seq}"));
                (e.producer_id, e.sequence) = (9, seq);
                e.payload = Bytes::from(vec![b'a' + (seq % 26) as u8; size]);
                e
            })
            .collect();
        c.node(leader).publish(events).await.unwrap();
    }
}

/// The bytes of topic `t` a member holds on disk.
fn topic_bytes(node: &ClusterNode) -> u64 {
    node.state().store().get("t").map_or(0, |s| s.bytes())
}

/// Polls `node`'s counters until `done` holds (or panics after 10 s).
async fn wait_counters(node: &ClusterNode, done: impl Fn(&CatchUpCounters) -> bool) -> CatchUpCounters {
    for _ in 0..10_000 {
        let c = node.catch_up_counters();
        if done(&c) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("catch-up counters never got there: {:?}", node.catch_up_counters());
}

#[tokio::test]
async fn a_wiped_member_catches_up_by_records_in_bounded_chunks() {
    let (mut c, l, lagger) = with_a_stopped_follower().await;
    fill(&c, l, 160, 250).await; // 3,200 events, about 0.9 MB, snapshots every 50 entries
    c.wipe(lagger);
    c.read_max_bytes = 64 << 10;
    c.start(lagger).await;
    let digest = c.converged().await;
    let n = c.node(lagger);
    // The installed state keeps this member's own fetch bound, not the default.
    assert_eq!(n.state().read_max_bytes(), 64 << 10);
    assert_eq!(n.state().digest(), digest, "contents identical to the leader's");
    assert_eq!(n.state().event_count("t"), 3_200);
    let got = n.catch_up_counters();
    assert_eq!((got.installs, got.completed, got.resumed, got.catching_up), (1, 1, 0, false), "{got:?}");
    // Every record before the snapshot came by records requests, each at most CHUNK bytes.
    let held = topic_bytes(n);
    assert!(got.bytes > held / 2 && got.bytes <= held, "pulled {} of {held} bytes", got.bytes);
    assert!(got.chunks >= got.bytes.div_ceil(u64::from(CHUNK)), "{got:?}: chunks over {CHUNK} bytes");
    assert!(n.render_metrics().contains("esc_catchup_installs_total 1\n"));
    assert!(n.render_metrics().contains("esc_catchup_active 0\n"));
    c.stop_all().await;
}

#[tokio::test]
async fn a_crash_in_the_middle_resumes_without_pulling_again_what_is_durable() {
    let (mut c, l, lagger) = with_a_stopped_follower().await;
    fill(&c, l, 200, 1_000).await; // 4,000 events, about 4 MB: a thousand chunks
    let total = topic_bytes(c.node(l));
    c.wipe(lagger);
    c.start(lagger).await;
    let first = wait_counters(c.node(lagger), |k| k.chunks >= 100).await;
    assert!(first.catching_up, "{first:?}: caught up before the test could look");
    // Meanwhile reads are refused, never answered with partial data.
    match c.node(lagger).fetch("t".into(), 0, 10).await {
        Err(ServiceError::Unavailable { reason, .. }) => assert!(reason.contains("catching up"), "{reason}"),
        other => panic!("a read during catch-up got {other:?}"),
    }
    assert!(c.node(lagger).readiness().is_err());
    // The power goes at its next write.
    c.nodes[(lagger - 1) as usize].disk.arm_crash(0);
    let before = wait_counters(c.node(lagger), |_| c.statuses().iter().any(|s| s.failed.is_some())).await;
    c.stop(lagger, true).await;
    c.start(lagger).await;
    // The resumed incarnation refuses reads from its first moment (its files are partial).
    let early = c.node(lagger).fetch("t".into(), 0, 10).await;
    assert!(matches!(early, Err(ServiceError::Unavailable { .. })), "{:?}", early.map(|r| r.events.len()));
    let digest = c.converged().await;
    let n = c.node(lagger);
    assert_eq!(n.state().digest(), digest);
    assert_eq!(n.state().event_count("t"), 4_000);
    let after = n.catch_up_counters();
    assert_eq!((after.resumed, after.completed, after.catching_up), (1, 1, false), "{after:?}");
    // What reached a sealed (synced) segment before the crash is not pulled again.
    assert!(
        after.bytes + before.bytes / 2 <= total,
        "pulled {} after the crash, {} before, of {total}",
        after.bytes,
        before.bytes
    );
    assert!(after.bytes > 0);
    c.stop_all().await;
}

#[tokio::test]
async fn retention_moving_the_source_mid_pull_restarts_that_topic_at_its_new_first_offset() {
    use eventstreamcore::node::{TopicLimits, TopicSettings};
    let (mut c, l, lagger) = with_a_stopped_follower().await;
    fill(&c, l, 200, 1_000).await;
    c.wipe(lagger);
    c.start(lagger).await;
    wait_counters(c.node(lagger), |k| k.chunks >= 20).await;
    // Keep only the last 500 events: the leader trims while the member is pulling from offset ~100.
    let keep = TopicLimits { max_events: Some(500), ..TopicLimits::default() };
    c.node(l).set_topic_settings(TopicSettings { default: keep, ..TopicSettings::default() });
    let digest = c.converged().await;
    let n = c.node(lagger);
    let got = n.catch_up_counters();
    assert!(got.restarts >= 1, "{got:?}: the pull never restarted at the newer first offset");
    assert_eq!((got.completed, got.catching_up), (1, false), "{got:?}");
    assert_eq!(n.state().digest(), digest);
    assert_eq!(n.state().first_offset("t"), c.node(l).state().first_offset("t"));
    assert_eq!(n.state().first_offset("t"), 3_500);
    // The byte count retention keeps is recounted over what the member holds: equal too.
    assert_eq!(n.state().snapshot_digest(), c.node(l).state().snapshot_digest());
    c.stop_all().await;
}

fn metric(node: &ClusterNode, name: &str) -> u64 {
    let text = node.render_metrics();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{text}"));
    line[name.len() + 1..].parse().unwrap()
}

/// Waits until `node` says its storage waits for descriptors, and checks that it is not failed,
/// not ready, and tries again.
async fn assert_waits_for_descriptors(node: &ClusterNode) {
    for _ in 0..500 {
        if metric(node, "esc_storage_stalled") == 1 {
            break;
        }
        assert!(node.status().failed.is_none(), "out of descriptors stopped the member: {:?}", node.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(node, "esc_storage_stalled"), 1, "never waited: {:?}", node.status());
    assert!(node.readiness().unwrap_err().contains("file descriptors"));
    let tries = metric(node, "esc_storage_fd_exhaustion_total");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(metric(node, "esc_storage_fd_exhaustion_total") > tries, "tried again");
    assert!(node.status().failed.is_none(), "{:?}", node.status());
}

#[tokio::test]
async fn out_of_descriptors_while_pulling_records_waits_and_resumes_without_a_restart() {
    let (mut c, l, lagger) = with_a_stopped_follower().await;
    fill(&c, l, 200, 1_000).await; // 4 MB in 16 KiB segments: a new topic file every 4 chunks
    c.wipe(lagger);
    c.start(lagger).await;
    wait_counters(c.node(lagger), |k| k.chunks >= 20).await;
    c.exhaust_topic_fds(lagger, true);
    let n = c.node(lagger);
    assert_waits_for_descriptors(n).await;
    // The chunk that needs a new segment is asked for again and again; none is half-appended.
    let stuck = n.catch_up_counters();
    assert!(stuck.catching_up && stuck.completed == 0, "{stuck:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(n.catch_up_counters().chunks, stuck.chunks);
    c.exhaust_topic_fds(lagger, false);
    let digest = c.converged().await;
    let n = c.node(lagger);
    assert_eq!(n.state().digest(), digest);
    assert_eq!(n.state().event_count("t"), 4_000);
    let got = n.catch_up_counters();
    assert_eq!((got.installs, got.completed, got.catching_up), (1, 1, false), "{got:?}");
    assert_eq!(metric(n, "esc_storage_stalled"), 0);
    assert!(n.readiness().is_ok(), "{:?}", n.readiness());
    c.stop_all().await;
}

#[tokio::test]
async fn out_of_descriptors_opening_an_installed_snapshots_topic_files_waits_and_installs_it() {
    use eventstreamcore::node::{TopicLimits, TopicSettings};
    let (mut c, l, lagger) = with_a_stopped_follower().await;
    // The snapshot's topic starts past 0, so installing it on an empty member writes the empty
    // segment that names the start: a topic file to open.
    let keep = TopicLimits { max_events: Some(500), ..TopicLimits::default() };
    c.node(l).set_topic_settings(TopicSettings { default: keep, ..TopicSettings::default() });
    fill(&c, l, 100, 200).await;
    c.wipe(lagger);
    c.exhaust_topic_fds(lagger, true);
    c.start(lagger).await;
    let n = c.node(lagger);
    assert_waits_for_descriptors(n).await;
    assert_eq!(n.catch_up_counters().installs, 0, "the install waits before it changed anything");
    c.exhaust_topic_fds(lagger, false);
    let digest = c.converged().await;
    let n = c.node(lagger);
    assert_eq!(n.state().digest(), digest);
    assert!(n.state().first_offset("t") > 0);
    assert_eq!(n.state().first_offset("t"), c.node(l).state().first_offset("t"));
    let got = n.catch_up_counters();
    assert_eq!((got.installs, got.completed, got.catching_up), (1, 1, false), "{got:?}");
    assert_eq!(metric(n, "esc_storage_stalled"), 0);
    c.stop_all().await;
}
