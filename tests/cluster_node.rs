//! The replicated node in one process on the real runtime: election, replication, redirects,
//! failover with idempotent retries, restart from disk, membership changes.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // test set-up picks free ports with std sockets

mod common;

use common::cluster::TestCluster;
use common::free_port;

use std::sync::Arc;
use std::time::Duration;

use eventstreamcore::event::{Event, Priority};
use eventstreamcore::node::cluster::ClusterError;
use eventstreamcore::node::{ClusterNode, ClusterOptions, DedupConfig};
use eventstreamcore::pipeline::PipelineSetup;
use eventstreamcore::rt::{Disk, NodeClock, SimDisk, rng_from_seed};
use eventstreamcore::service::{AdminCommand, EventService, ReadOptions, ServiceError};
use eventstreamcore::store::StoreConfig;

fn keyed(topic: &str, producer: u64, seq: u64) -> Event {
    let mut e = Event::new(topic, Priority::Medium, format!("{producer}:{seq}"));
    e.producer_id = producer;
    e.sequence = seq;
    e
}

#[tokio::test]
async fn single_node_acks_after_commit_and_recovers_from_disk() {
    let mut c = TestCluster::new(1);
    c.start_all().await;
    let l = c.leader().await;
    assert_eq!(l, 1);
    let acks = c.node(1).publish((1..=3).map(|s| keyed("t", 9, s)).collect()).await.unwrap();
    assert_eq!(acks.iter().map(|a| a.offset).collect::<Vec<_>>(), vec![0, 1, 2]);
    let before = c.node(1).state().digest();
    c.stop(1, true).await;
    c.start(1).await;
    c.leader().await;
    assert_eq!(c.node(1).state().digest(), before, "acked events survive a power failure");
    let again = c.node(1).publish(vec![keyed("t", 9, 2)]).await.unwrap();
    assert!(again[0].duplicate && again[0].offset == 1, "a retry after restart gets its original offset");
    c.stop(1, false).await;
}

#[tokio::test]
async fn three_nodes_replicate_redirect_and_fail_over_without_duplicates() {
    let mut c = TestCluster::new(3);
    c.segment_bytes = 4096;
    c.start_all().await;
    let l = c.leader().await;
    let follower = (1..=3).find(|&i| i != l).unwrap();
    match c.node(follower).publish(vec![keyed("t", 1, 1)]).await {
        Err(ServiceError::NotLeader { leader: Some(addr) }) => {
            assert_eq!(addr, c.members[(l - 1) as usize].client_addr)
        }
        other => panic!("follower answered {other:?}"),
    }
    for s in 1..=120 {
        let a = c.node(l).publish(vec![keyed("t", 1, s)]).await.unwrap();
        assert_eq!(a[0].offset, s - 1);
    }
    c.converged().await;
    // Every node serves committed reads, linearizable ones too.
    let r = c
        .node(follower)
        .read("t".into(), 0, 1000, ReadOptions { linearizable: true, wait_ms: 0 })
        .await
        .unwrap();
    assert_eq!(r.events.len(), 120);
    // Kill the leader with a power failure; the others elect a new one.
    c.stop(l, true).await;
    let l2 = c.leader().await;
    assert_ne!(l2, l);
    // A producer that never saw its ack retries with the same key: original offset, no copy.
    let a = c.node(l2).publish(vec![keyed("t", 1, 120), keyed("t", 1, 121)]).await.unwrap();
    assert_eq!((a[0].offset, a[0].duplicate), (119, true));
    assert_eq!((a[1].offset, a[1].duplicate), (120, false));
    c.start(l).await;
    c.converged().await;
    for m in &c.nodes {
        let n = &m.node.as_ref().unwrap().0;
        assert_eq!(n.state().topic_log("t").len(), 121, "node {}", m.id);
    }
    for id in 1..=3 {
        c.stop(id, false).await;
    }
}

#[tokio::test]
async fn long_poll_read_wakes_on_commit() {
    let mut c = TestCluster::new(1);
    c.start_all().await;
    c.leader().await;
    let n = c.node(1).clone();
    let reader = tokio::spawn({
        let n = n.clone();
        async move { n.read("t".into(), 0, 10, ReadOptions { linearizable: false, wait_ms: 5_000 }).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!reader.is_finished(), "an empty topic holds the read");
    n.publish(vec![keyed("t", 3, 1)]).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), reader).await.unwrap().unwrap().unwrap();
    assert_eq!(r.events.len(), 1);
    c.stop(1, false).await;
}

#[tokio::test]
async fn membership_add_a_joining_node_then_remove_the_leader() {
    let mut c = TestCluster::new(3);
    c.segment_bytes = 4096;
    c.start_all().await;
    let l = c.leader().await;
    for s in 1..=30 {
        c.node(l).publish(vec![keyed("t", 4, s)]).await.unwrap();
    }
    // Node 4 starts empty with `join = true` and waits to be added.
    let raft4 = format!("127.0.0.1:{}", free_port());
    let mut cfg4 = c.cluster_config(1);
    cfg4.raft_listen = raft4.parse().unwrap();
    cfg4.join = true;
    let disk4: Arc<dyn Disk> = Arc::new(SimDisk::new());
    let opts = ClusterOptions {
        node_id: 4,
        cluster: cfg4,
        dedup: DedupConfig::default(),
        client_addr: "127.0.0.1:17004".into(),
        repair: false,
        pipeline: None,
        observer: None,
        store: Default::default(),
        read_max_bytes: 1 << 20,
    };
    let (n4, t4) = ClusterNode::start(opts, disk4, NodeClock::new(), rng_from_seed(4)).await.unwrap();
    assert!(n4.status().voters.is_empty(), "a joining node knows no configuration");
    // Admin requests go to the leader; a follower redirects.
    let follower = (1..=3).find(|&i| i != l).unwrap();
    let add =
        AdminCommand::AddNode { id: 4, raft_addr: raft4.clone(), client_addr: "127.0.0.1:17004".into() };
    assert!(matches!(c.node(follower).admin(add.clone()).await, Err(ServiceError::NotLeader { .. })));
    let out = c.node(l).admin(add).await.unwrap();
    assert!(out.contains("node 4 is a voter"), "{out}");
    // The new voter catches up with everything committed before it joined.
    for _ in 0..500 {
        if n4.state().topic_log("t").len() == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(n4.state().digest(), c.node(l).state().digest());
    assert_eq!(n4.status().voters, vec![1, 2, 3, 4]);
    // Remove the leader itself: it steps down and the rest elect a new one and keep committing.
    let out = c.node(l).admin(AdminCommand::RemoveNode { id: l }).await.unwrap();
    assert!(out.contains(&format!("node {l} removed")), "{out}");
    c.stop(l, false).await;
    let l2 = c.leader().await;
    assert_ne!(l2, l);
    let a = c.node(l2).publish(vec![keyed("t", 4, 31)]).await.unwrap();
    assert_eq!(a[0].offset, 30);
    let status = c.node(l2).admin(AdminCommand::Status).await.unwrap();
    assert!(status.contains("member 4 voter") && !status.contains(&format!("member {l} ")), "{status}");
    n4.shutdown();
    t4.wait().await;
    for id in 1..=3 {
        c.stop(id, false).await;
    }
}

#[tokio::test]
async fn a_follower_behind_the_compacted_log_installs_a_snapshot_with_the_topic_files() {
    let mut c = TestCluster::new(3);
    c.keep_entries = 5;
    c.start_all().await;
    let l = c.leader().await;
    let lagger = (1..=3).find(|&i| i != l).unwrap();
    c.stop(lagger, false).await;
    for s in 1..=150 {
        c.node(l).publish(vec![keyed("t", 6, s)]).await.unwrap();
    }
    // Saved snapshots are metadata only: no event payload is in them.
    let saved = c.nodes[(l - 1) as usize].disk.read("snapshot").unwrap();
    assert!(!saved.windows(5).any(|w| w == b"6:140"), "the saved snapshot holds events");
    c.start(lagger).await;
    let digest = c.converged().await;
    let n = c.node(lagger);
    assert_eq!(n.state().digest(), digest);
    assert_eq!(n.state().event_count("t"), 150);
    assert!(n.state().store().metadata().topics[0].segments.iter().all(|s| s.bytes > 0));
    for id in 1..=3 {
        c.stop(id, false).await;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_acked_data_and_recovers_after_restart() {
    use eventstreamcore::rt::DiskFault;
    let mut c = TestCluster::new(1);
    c.start_all().await;
    c.leader().await;
    for s in 1..=10 {
        c.node(1).publish(vec![keyed("t", 8, s)]).await.unwrap();
    }
    let before = c.node(1).state().digest();
    let disk = c.nodes[0].disk.clone();
    disk.inject(DiskFault::Capacity(disk.used_bytes()));
    // The write that does not fit is refused with an error that says why; nothing crashes.
    let err = c.node(1).publish(vec![keyed("t", 8, 11)]).await.unwrap_err();
    match &err {
        ServiceError::Internal(why) => assert!(why.contains("storage failed"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    // The node stays up for readers, with everything acked before.
    assert_eq!(c.node(1).state().digest(), before);
    assert!(c.node(1).status().failed.is_some());
    let again = c.node(1).publish(vec![keyed("t", 8, 12)]).await.unwrap_err();
    assert!(matches!(again, ServiceError::Internal(_)), "{again:?}");
    // Free space, restart: acked data is there and writes work again.
    disk.clear_faults();
    c.stop(1, true).await;
    c.start(1).await;
    c.leader().await;
    assert_eq!(c.node(1).state().topic_log("t").len(), 10);
    let a = c.node(1).publish(vec![keyed("t", 8, 11)]).await.unwrap();
    assert_eq!((a[0].offset, a[0].duplicate), (10, false));
    c.stop(1, false).await;
}

#[tokio::test]
async fn the_leader_processes_committed_events_and_a_new_leader_resumes_from_the_checkpoint() {
    let mut c = TestCluster::new(3);
    // Each member's dead-letter queue on its own disk (shared here: the test reads it afterwards).
    let mut pcfg = eventstreamcore::pipeline::PipelineConfig::default();
    pcfg.control.interval_ms = 20;
    c.pipeline = Some(Arc::new(PipelineSetup { config: pcfg, dlq_disk: Arc::new(SimDisk::new()) }));
    c.start_all().await;
    let l = c.leader().await;
    let payment = |seq: u64, amount: u32| {
        let mut e = Event::new("payment", Priority::Medium, amount.to_le_bytes().to_vec());
        e.producer_id = 6;
        e.sequence = seq;
        e
    };
    for s in 1..=20 {
        // Every fifth payment has amount 0: invalid, so it is dead-lettered rather than processed.
        c.node(l).publish(vec![payment(s, if s % 5 == 0 { 0 } else { 100 })]).await.unwrap();
    }
    // The replicated checkpoint reaches the end of the topic on every member.
    let caught_up = |c: &TestCluster, end: u64| {
        c.nodes
            .iter()
            .filter_map(|m| m.node.as_ref())
            .all(|(n, _)| n.state().processing().positions.get("payment").copied() == Some(end))
    };
    for _ in 0..500 {
        if caught_up(&c, 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(caught_up(&c, 20), "checkpoint did not reach offset 20");
    // Transactional effects are recorded per idempotency key in the replicated state.
    assert!(c.node(l).state().processing().is_handled((6, 1)));
    // A handler alert (temperature above 100) becomes an event on `_alerts`, readable by consumers.
    c.node(l).publish(vec![Event::new("sensor/temperature", Priority::High, vec![120u8])]).await.unwrap();
    let mut alerts = 0;
    for _ in 0..500 {
        alerts = c.node(l).state().topic_log("_alerts").len();
        if alerts > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(alerts, 1, "one critical temperature alert on _alerts");
    // Fail over: the new leader resumes after the checkpoint and processes new events.
    c.stop(l, false).await;
    let l2 = c.leader().await;
    for s in 21..=30 {
        c.node(l2).publish(vec![payment(s, 7)]).await.unwrap();
    }
    for _ in 0..500 {
        let p = c.node(l2).state().processing().positions.get("payment").copied();
        if p == Some(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.node(l2).state().processing().positions.get("payment").copied(), Some(30));
    assert!(c.node(l2).state().processing().is_handled((6, 30)));
    for id in 1..=3 {
        c.stop(id, false).await;
    }
}

/// Issue 11: an insider that knows the secret sends terms and indexes no node can have. Each is
/// refused at the transport (the connection closes); no member adopts the term, the cluster keeps
/// committing, and the targeted follower restarts cleanly. Before the boundary checks, one
/// heartbeat at term 2^64-1 made the follower adopt it and panic on its next campaign, for good.
#[tokio::test]
async fn absurd_terms_and_indexes_from_an_authenticated_peer_change_nothing() {
    use eventstreamcore::raft::{Body, Message};
    use eventstreamcore::transport::frame::encode_frame;
    use eventstreamcore::transport::handshake::{self, Local};
    use tokio::io::AsyncWriteExt;

    let mut c = TestCluster::new(3);
    c.segment_bytes = 4096;
    c.start_all().await;
    let l = c.leader().await;
    for s in 1..=5 {
        c.node(l).publish(vec![keyed("t", 5, s)]).await.unwrap();
    }
    let f = (1..=3).find(|&i| i != l).unwrap();
    let term = c.node(l).status().term;
    let absurd = [
        Message { from: l, to: f, term: u64::MAX, body: Body::Heartbeat { commit: u64::MAX, round: 1 } },
        Message {
            from: l,
            to: f,
            term,
            body: Body::Append {
                prev_index: u64::MAX - 1,
                prev_term: term,
                entries: vec![],
                commit: u64::MAX,
            },
        },
        Message {
            from: l,
            to: f,
            term: u64::MAX,
            body: Body::Vote { pre_vote: false, last_index: u64::MAX, last_term: u64::MAX, transfer: true },
        },
    ];
    let f_addr = c.members[(f - 1) as usize].raft_addr.clone();
    for m in &absurd {
        // The insider: knows cluster id and secret, claims to be the leader.
        let mut s = tokio::net::TcpStream::connect(&f_addr).await.unwrap();
        let local = Local {
            node_id: l,
            cluster_id: b"esc",
            secret: c.secret.as_bytes(),
            nonce: [7; 32],
            pake_seed: [7; 32],
        };
        handshake::dial(&mut s, &local, f).await.unwrap();
        let mut frame = Vec::new();
        encode_frame(m, 1 << 20, &mut frame).unwrap();
        let _ = s.write_all(&frame).await;
        let _ = s.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several election timeouts: a node that had taken the term would campaign (and overflow).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let metrics = c.node(f).render_metrics();
    assert!(metrics.contains("esc_peer_invalid_messages_total 3"), "{metrics}");
    for st in c.statuses() {
        assert!(st.term < 1_000 && st.commit < 1_000, "node took an absurd value: {st:?}");
    }
    let l = c.leader().await;
    for s in 6..=10 {
        c.node(l).publish(vec![keyed("t", 5, s)]).await.unwrap();
    }
    c.converged().await;
    c.stop(f, false).await;
    c.start(f).await;
    c.converged().await;
    assert_eq!(c.node(f).state().topic_log("t").len(), 10);
    for id in 1..=3 {
        c.stop(id, false).await;
    }
}

/// Issue 11: without a secret nobody can be authenticated, so a lone member keeps its peer port
/// closed and refuses to grow; a member that has (or would have) peers refuses to start.
#[tokio::test]
async fn without_a_secret_a_single_member_does_not_listen_and_a_multi_member_one_does_not_start() {
    let mut c = TestCluster::new(1);
    c.secret = String::new();
    c.start_all().await;
    c.leader().await;
    assert_eq!(c.node(1).raft_addr(), None);
    let raft = c.members[0].raft_addr.clone();
    assert!(tokio::net::TcpStream::connect(&raft).await.is_err(), "nothing listens on {raft}");
    c.node(1).publish(vec![keyed("t", 1, 1)]).await.unwrap();
    let add =
        AdminCommand::AddNode { id: 2, raft_addr: "127.0.0.1:1".into(), client_addr: "127.0.0.1:2".into() };
    match c.node(1).admin(add).await {
        Err(ServiceError::Unsupported(msg)) => assert!(msg.contains("cluster.secret"), "{msg}"),
        other => panic!("admin add without a secret answered {other:?}"),
    }
    assert_eq!(c.node(1).status().voters, vec![1]);
    c.stop(1, false).await;

    let mut three = TestCluster::new(3);
    three.secret = String::new();
    let mut join = three.cluster_config(1);
    join.members.clear();
    join.join = true;
    for cfg in [three.cluster_config(2), join] {
        let opts = ClusterOptions {
            node_id: 2,
            cluster: cfg,
            dedup: DedupConfig::default(),
            client_addr: "127.0.0.1:17002".into(),
            repair: false,
            pipeline: None,
            observer: None,
            store: Default::default(),
            read_max_bytes: 1 << 20,
        };
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        match ClusterNode::start(opts, disk, NodeClock::new(), rng_from_seed(2)).await {
            Err(e @ ClusterError::NoSecret { .. }) => {
                assert!(e.to_string().contains("cluster.secret"), "{e}")
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a member with peers started without a secret"),
        }
    }
}

/// An event big enough that a few of them fill a 4 KiB WAL segment.
fn big(seq: u64) -> Event {
    let mut e = keyed("t", 7, seq);
    e.payload = bytes::Bytes::from(vec![b'p'; 1_000]);
    e
}

/// Publishes `seq` until the server takes it (it may answer "overloaded, retry" meanwhile).
async fn publish_until_taken(node: &ClusterNode, seq: u64) -> eventstreamcore::service::Appended {
    for _ in 0..500 {
        match node.publish(vec![big(seq)]).await {
            Ok(mut a) => return a.remove(0),
            Err(ServiceError::Overloaded { .. } | ServiceError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("publish {seq}: {e:?}"),
        }
    }
    panic!("publish {seq} never taken");
}

fn metric(node: &ClusterNode, name: &str) -> u64 {
    let text = node.render_metrics();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{text}"));
    line[name.len() + 1..].parse().unwrap()
}

#[tokio::test]
async fn out_of_descriptors_at_a_wal_segment_roll_waits_and_resumes_without_a_restart() {
    use eventstreamcore::rt::DiskFault;
    let mut c = TestCluster::new(1);
    c.segment_bytes = 4096; // every few events the WAL opens a new file
    c.start_all().await;
    c.leader().await;
    let disk = c.nodes[0].disk.clone();
    let node = c.node(1).clone();
    for s in 1..=3 {
        node.publish(vec![big(s)]).await.unwrap();
    }
    disk.inject(DiskFault::TooManyOpenFiles(u32::MAX));
    // Publish until one's round cannot open the next segment: it waits, un-persisted, un-acked.
    let mut stalled = None;
    for s in 4..=40 {
        let n = node.clone();
        let p = tokio::spawn(async move { n.publish(vec![big(s)]).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !p.is_finished() {
            stalled = Some((s, p));
            break;
        }
        p.await.unwrap().expect("published before any roll was needed");
    }
    let (stuck, pending) = stalled.expect("a segment roll was needed");
    // Every request meanwhile is told to retry (not `internal`), and nothing is marked failed.
    let err = node.publish(vec![big(1_000)]).await.unwrap_err();
    assert!(matches!(err, ServiceError::Overloaded { .. }), "{err:?}");
    assert!(node.status().failed.is_none());
    assert!(node.readiness().unwrap_err().contains("file descriptors"));
    assert_eq!(metric(&node, "esc_storage_stalled"), 1);
    let tries = metric(&node, "esc_storage_fd_exhaustion_total");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(metric(&node, "esc_storage_fd_exhaustion_total") > tries, "the round is retried");
    // Descriptors free up: the waiting round is persisted and its publish acked, no restart.
    disk.clear_faults();
    let first = tokio::time::timeout(Duration::from_secs(5), pending).await.unwrap().unwrap().unwrap();
    assert_eq!(first[0].offset, stuck - 1);
    assert_eq!(metric(&node, "esc_storage_stalled"), 0);
    assert!(node.readiness().is_ok());
    for s in stuck + 1..=stuck + 20 {
        assert_eq!(publish_until_taken(&node, s).await.offset, s - 1);
    }
    // Every acked event survives a power failure, once each.
    let acked = stuck + 20;
    c.stop(1, true).await;
    c.start(1).await;
    c.leader().await;
    let log = c.node(1).state().topic_log("t").to_vec();
    assert_eq!(log.len() as u64, acked);
    assert!(log.iter().enumerate().all(|(i, e)| e.event.sequence == i as u64 + 1), "in order, once each");
    c.stop(1, false).await;
}

#[tokio::test]
async fn a_follower_out_of_descriptors_catches_up_once_they_free() {
    use eventstreamcore::rt::DiskFault;
    let mut c = TestCluster::new(3);
    c.segment_bytes = 4096;
    c.start_all().await;
    let l = c.leader().await;
    let f = if l == 1 { 2 } else { 1 };
    c.nodes[(f - 1) as usize].disk.inject(DiskFault::TooManyOpenFiles(u32::MAX));
    // Hard state, WAL segment and topic files cannot be opened on the follower (its first topic
    // file included): the other two commit.
    for s in 1..=30 {
        c.node(l).publish(vec![big(s)]).await.unwrap();
    }
    assert!(metric(c.node(f), "esc_storage_fd_exhaustion_total") > 0, "the follower had to wait");
    assert!(c.node(f).status().failed.is_none(), "a stalled follower is not failed");
    c.nodes[(f - 1) as usize].disk.clear_faults();
    let digest = c.converged().await;
    assert_eq!(c.node(f).state().topic_log("t").len(), 30);
    assert_eq!(c.node(l).state().digest(), digest);
    for id in 1..=3 {
        c.stop(id, false).await;
    }
}

/// A cluster whose topic segments roll every few `big` events.
async fn small_topic_segments() -> TestCluster {
    let mut c = TestCluster::new(3);
    c.store = StoreConfig { segment_bytes: 4096, ..StoreConfig::default() };
    c.start_all().await;
    c
}

/// Publishes through whichever member leads, until one takes it (members out of descriptors
/// answer "overloaded, retry"; leadership may move meanwhile).
async fn publish_to_leader(c: &TestCluster, e: Event) -> eventstreamcore::service::Appended {
    for _ in 0..500 {
        let l = c.leader().await;
        match c.node(l).publish(vec![e.clone()]).await {
            Ok(mut a) => return a.remove(0),
            Err(
                ServiceError::Overloaded { .. }
                | ServiceError::Unavailable { .. }
                | ServiceError::NotLeader { .. },
            ) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(err) => panic!("publish {e:?}: {err:?}"),
        }
    }
    panic!("never taken: {e:?}");
}

/// Out of descriptors on member `id`, which is asked to publish `e` (it leads): the entry
/// commits but cannot be applied there, so the publish waits; everything a waiting member is
/// asked meanwhile is told to retry, and it is not failed. Returns the waiting publish.
async fn publish_into_a_stall(
    c: &TestCluster,
    id: u64,
    e: Event,
) -> tokio::task::JoinHandle<Result<Vec<eventstreamcore::service::Appended>, ServiceError>> {
    let node = c.node(id).clone();
    let p = tokio::spawn(async move { node.publish(vec![e]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!p.is_finished(), "the entry's topic file could not be opened: its publish waits");
    assert_stalled_at_apply(c.node(id));
    p
}

fn assert_stalled_at_apply(node: &ClusterNode) {
    let st = node.status();
    assert!(st.failed.is_none(), "a member out of descriptors is not failed: {:?}", st.failed);
    assert!(st.applied < st.commit, "applying waits behind the commit index: {st:?}");
    assert_eq!(metric(node, "esc_storage_stalled"), 1);
    assert!(node.readiness().unwrap_err().contains("file descriptors"));
}

#[tokio::test]
async fn a_leader_that_cannot_open_a_topic_file_waits_and_applies_the_entry_once_descriptors_free() {
    use eventstreamcore::rt::DiskFault;
    let mut c = small_topic_segments().await;
    let l = c.leader().await;
    let disk = c.nodes[(l - 1) as usize].disk.clone();
    c.node(l).publish(vec![big(1)]).await.unwrap();
    disk.inject(DiskFault::TooManyOpenFiles(u32::MAX));
    // A new topic: its first segment cannot be created.
    let p = publish_into_a_stall(&c, l, keyed("new", 8, 1)).await;
    let err = c.node(l).publish(vec![big(2)]).await.unwrap_err();
    assert!(matches!(err, ServiceError::Overloaded { .. }), "{err:?}");
    disk.clear_faults();
    let got = tokio::time::timeout(Duration::from_secs(5), p).await.unwrap().unwrap().unwrap();
    assert_eq!((got[0].offset, got[0].duplicate), (0, false));
    assert_eq!(metric(c.node(l), "esc_storage_stalled"), 0);
    // A segment roll: "t" takes 3 events of 1 KB per 4 KB segment, the fourth needs a new file.
    for s in 2..=3 {
        assert_eq!(publish_to_leader(&c, big(s)).await.offset, s - 1);
    }
    let l = c.leader().await;
    let disk = c.nodes[(l - 1) as usize].disk.clone();
    disk.inject(DiskFault::TooManyOpenFiles(u32::MAX));
    let p = publish_into_a_stall(&c, l, big(4)).await;
    disk.clear_faults();
    let got = tokio::time::timeout(Duration::from_secs(5), p).await.unwrap().unwrap().unwrap();
    assert_eq!(got[0].offset, 3);
    for s in 5..=12 {
        assert_eq!(publish_to_leader(&c, big(s)).await.offset, s - 1);
    }
    assert_every_acked_event_once_everywhere(&mut c, 12).await;
}

#[tokio::test]
async fn a_follower_that_cannot_open_topic_files_waits_and_catches_up_once_descriptors_free() {
    use eventstreamcore::rt::DiskFault;
    let mut c = small_topic_segments().await;
    let l = c.leader().await;
    let f = if l == 1 { 2 } else { 1 };
    c.node(l).publish(vec![big(1)]).await.unwrap();
    c.converged().await;
    // Only topic files are new on the follower (its WAL segment and hard state exist): a new
    // topic and segment rolls of "t" stop its applying, not its replication.
    c.nodes[(f - 1) as usize].disk.inject(DiskFault::TooManyOpenFiles(u32::MAX));
    assert_eq!(c.node(l).publish(vec![keyed("new", 8, 1)]).await.unwrap()[0].offset, 0);
    for s in 2..=12 {
        assert_eq!(c.node(l).publish(vec![big(s)]).await.unwrap()[0].offset, s - 1);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_stalled_at_apply(c.node(f));
    assert!(c.node(f).state().event_count("new") == 0, "the entry that stopped applying changed nothing");
    c.nodes[(f - 1) as usize].disk.clear_faults();
    assert_every_acked_event_once_everywhere(&mut c, 12).await;
}

/// Every member holds events 1..=n of "t" in order, once each, and the one of "new"; the same
/// after a power failure of every member.
async fn assert_every_acked_event_once_everywhere(c: &mut TestCluster, n: u64) {
    for round in 0..2 {
        // After a restart a member's commit index starts where it was last written (commit-only
        // changes are deferred): wait for the new leader's first commit to reach everything.
        for _ in 0..500 {
            if (1..=3).all(|id| c.node(id).state().event_count("t") >= n) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let digest = c.converged().await;
        for id in 1..=3 {
            let st = c.node(id).state();
            let log = st.topic_log("t");
            assert_eq!(log.len() as u64, n, "member {id}, round {round}");
            assert!(
                log.iter().enumerate().all(|(i, e)| e.event.sequence == i as u64 + 1),
                "in order, once each"
            );
            assert_eq!(st.topic_log("new").len(), 1);
            assert_eq!(st.digest(), digest);
        }
        if round == 0 {
            for id in 1..=3 {
                c.stop(id, true).await;
            }
            c.start_all().await;
            c.leader().await;
        }
    }
    for id in 1..=3 {
        c.stop(id, false).await;
    }
}
