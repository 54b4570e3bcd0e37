//! Real `esc` processes on loopback: a 3-node cluster keeps every acknowledged event, exactly
//! once, while its leader is killed with SIGKILL and restarted; a node whose write-ahead log is
//! corrupt in the middle refuses to start and says where, and `--repair` gets it going again.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes, files and ports

mod common;

use common::{ESC, esc, free_port, temp_dir};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventstreamcore::client::{Client, ClusterClient};
use eventstreamcore::config::Config;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::wire::{AckItem, AdminRequest};

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `esc serve --config FILE` and waits for its "listening" line.
fn start(config: &Path, extra: &[&str]) -> Proc {
    let mut child = Command::new(ESC)
        .args(["serve", "--config"])
        .arg(config)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("esc starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("esc listening on "), "unexpected first line {line:?}");
    Proc { child }
}

/// Writes one config per member and returns (configs, client addresses).
fn cluster_configs(dir: &Path, n: u64) -> (Vec<PathBuf>, Vec<SocketAddr>) {
    let mut paths = Vec::new();
    let mut addrs = Vec::new();
    for mut c in common::member_configs(dir, n, "test-secret") {
        c.cluster.tick_ms = 20;
        c.cluster.snapshot_entries = 200;
        c.cluster.commit_timeout_ms = 2_000;
        let p = dir.join(format!("node{}.toml", c.node.id));
        std::fs::write(&p, toml::to_string(&c).unwrap()).unwrap();
        paths.push(p);
        addrs.push(c.ingest.listen);
    }
    (paths, addrs)
}

/// The member that reports itself leader, if any.
async fn leader(addrs: &[SocketAddr]) -> Option<usize> {
    for (i, a) in addrs.iter().enumerate() {
        if let Ok(mut c) = Client::connect(*a).await {
            c.set_timeout(Duration::from_secs(2));
            if c.hello("test", "").await.is_ok()
                && let Ok(text) = c.admin(AdminRequest::Status).await
                && text.contains("role Leader")
            {
                return Some(i);
            }
        }
    }
    None
}

async fn wait_leader(addrs: &[SocketAddr]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(l) = leader(addrs).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader within 30 s");
}

/// Reads a whole topic from one member, linearizably (it waits for a leader and for this
/// member to have applied everything committed before the read).
async fn read_all(addr: SocketAddr, topic: &str) -> Vec<eventstreamcore::event::StoredEvent> {
    let mut c = ClusterClient::new(vec![addr], "reader", "");
    c.max_attempts = 100;
    c.backoff = Duration::from_millis(100);
    let mut out = Vec::new();
    loop {
        let page = c.read(topic, out.len() as u64, 1000, true, 0).await.unwrap();
        if page.events.is_empty() {
            return out;
        }
        out.extend(page.events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_events_survive_sigkill_of_the_leader_exactly_once() {
    let dir = temp_dir("kill");
    let (configs, addrs) = cluster_configs(&dir, 3);
    let mut procs: Vec<Option<Proc>> = configs.iter().map(|c| Some(start(c, &[]))).collect();
    wait_leader(&addrs).await;

    // One producer, sequential batches, each retried with the same keys until acked.
    let producer = tokio::spawn({
        let addrs = addrs.clone();
        async move {
            let mut client = ClusterClient::new(addrs, "producer", "");
            client.timeout = Duration::from_secs(3);
            client.max_attempts = 200;
            client.backoff = Duration::from_millis(50);
            let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
            let mut seq = 1;
            for _ in 0..150 {
                let events: Vec<Event> = (seq..seq + 4)
                    .map(|s| {
                        let mut e = Event::new("orders", Priority::Medium, format!("order {s}"));
                        e.producer_id = 77;
                        e.sequence = s;
                        e
                    })
                    .collect();
                let items = client.publish(events).await.expect("the cluster acks every batch eventually");
                for (i, item) in items.iter().enumerate() {
                    match item {
                        AckItem::Stored { offset, .. } => {
                            if let Some(old) = acked.insert(seq + i as u64, *offset) {
                                assert_eq!(old, *offset, "an ack changed its offset");
                            }
                        }
                        AckItem::Rejected(e) => panic!("rejected: {e}"),
                    }
                }
                seq += 4;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        }
    });

    // Kill the leader twice while the producer runs; restart it each time.
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let l = wait_leader(&addrs).await;
        let mut p = procs[l].take().unwrap();
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        drop(p);
        tokio::time::sleep(Duration::from_millis(500)).await;
        procs[l] = Some(start(&configs[l], &[]));
        eprintln!("round {round}: killed and restarted leader {}", l + 1);
    }
    let acked =
        tokio::time::timeout(Duration::from_secs(120), producer).await.expect("producer finishes").unwrap();
    assert_eq!(acked.len(), 600);

    // Every member ends up with every acked event, once, at its acked offset.
    let deadline = Instant::now() + Duration::from_secs(30);
    for addr in &addrs {
        let log = loop {
            let log = read_all(*addr, "orders").await;
            if log.len() >= 600 || Instant::now() > deadline {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut seen = BTreeMap::new();
        for s in &log {
            let key = s.event.sequence;
            assert!(seen.insert(key, s.offset).is_none(), "{addr}: seq {key} stored twice");
        }
        for (seq, off) in &acked {
            assert_eq!(seen.get(seq), Some(off), "{addr}: acked seq {seq} not at offset {off}");
        }
        assert_eq!(log.len(), 600, "{addr}: nothing beyond what was published");
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_corrupt_log_refuses_to_start_with_file_and_offset_and_repair_recovers() {
    let dir = temp_dir("corrupt");
    let mut c = Config::default();
    c.ingest.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    c.cluster.raft_listen = "127.0.0.1:0".parse().unwrap();
    c.cluster.data_dir = dir.join("data");
    c.cluster.snapshot_entries = 1_000_000; // keep everything in the log
    let config = dir.join("node.toml");
    std::fs::write(&config, toml::to_string(&c).unwrap()).unwrap();
    let addr = c.ingest.listen;
    {
        let _p = start(&config, &[]);
        let mut client = ClusterClient::new(vec![addr], "t", "");
        for s in 1..=60 {
            let mut e = Event::new("t", Priority::Low, vec![b'x'; 100]);
            e.producer_id = 5;
            e.sequence = s;
            client.publish(vec![e]).await.unwrap();
        }
    } // SIGKILL: everything acked was fsynced
    let data = dir.join("data");
    let seg = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .expect("a WAL segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();

    let out = Command::new(ESC).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success(), "a node with a corrupt log must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "names the file: {err}");
    assert!(err.contains("--repair"), "says how to repair: {err}");

    // --repair truncates at the bad record; what came before is served.
    let _p = start(&config, &["--repair"]);
    let log = read_all(addr, "t").await;
    assert!(!log.is_empty() && log.len() < 60, "kept the prefix before the corruption: {}", log.len());
    for (i, s) in log.iter().enumerate() {
        assert_eq!(s.event.sequence, i as u64 + 1);
    }
    drop(_p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_readme_flow_local_cluster_publish_kill_a_node_read_everything_back() {
    let dir = temp_dir("readme");
    let base = common::free_base_port(20_000, 3);
    let mut cluster = Proc {
        child: Command::new(ESC)
            .args(["cluster", "--nodes", "3", "--base-port", &base.to_string(), "--dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let mut lines = BufReader::new(cluster.child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("publish:");
        printed.push(line);
        if done {
            break;
        }
    }
    let addrs: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    for a in &addrs {
        assert!(printed.iter().any(|l| l.contains(a.as_str())), "prints {a}: {printed:?}");
    }
    let all = addrs.join(",");
    let publish = |from: u64| {
        let first = from.to_string();
        let (ok, out, err) = esc(&[
            "publish",
            "--addr",
            &all,
            "--topic",
            "demo",
            "--count",
            "5",
            "--producer",
            "9",
            "--first-seq",
            &first,
            "hello",
        ]);
        assert!(ok, "{out}{err}");
        out
    };
    let out = publish(1);
    assert!(out.contains("5 stored, 0 duplicate, 0 rejected"), "{out}");
    let (ok, status, _) = esc(&["admin", "--addr", &all, "status"]);
    assert!(ok && status.starts_with("ID "), "{status}");
    assert_eq!(status.lines().filter(|l| l.ends_with(" yes")).count(), 3, "one row per member:\n{status}");
    assert_eq!(status.lines().filter(|l| l.contains(" Leader ")).count(), 1, "{status}");

    // Kill node 1 outright; the other two keep serving.
    let pid = std::fs::read_to_string(dir.join("node1.pid")).unwrap();
    let killed = Command::new("kill").args(["-KILL", pid.trim()]).status().unwrap();
    assert!(killed.success(), "node 1 was running");
    let out = publish(6);
    assert!(out.contains("5 stored"), "{out}");
    let rest = addrs[1..].join(",");
    // Asked only the two live members, status still lists node 1 (named by the others), unreachable.
    let (ok, status, err) = esc(&["admin", "--json", "--addr", &rest, "status"]);
    assert!(ok, "{status}{err}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{status}");
    assert_eq!(members[0]["id"], 1, "{status}");
    assert_eq!(members[0]["reachable"], false, "{status}");
    assert!(members[1..].iter().all(|m| m["reachable"] == true), "{status}");
    let (ok, out, err) = esc(&["tail", "--addr", &rest, "--topic", "demo", "--linearizable", "--to-end"]);
    assert!(ok, "{out}{err}");
    for s in 1..=10 {
        assert!(out.contains(&format!("producer=9 seq={s} ")), "seq {s} missing: {out}");
    }
    assert!(out.contains("end=10"), "{out}");

    // SIGTERM stops the cluster and its nodes.
    let pid = cluster.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "esc cluster did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, _, _) = esc(&["admin", "--addr", &rest, "status"]);
    assert!(!ok, "the nodes stopped with the cluster");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /metrics` from a server's metrics address.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body
}

fn counter(body: &str, series: &str) -> u64 {
    body.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn sighup_reloads_the_pipeline_topic_table_without_a_restart() {
    let dir = temp_dir("sighup");
    let mut c = Config::default();
    c.ingest.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    c.ingest.metrics_listen = Some(metrics.parse().unwrap());
    c.cluster.raft_listen = "127.0.0.1:0".parse().unwrap();
    c.cluster.data_dir = dir.join("data");
    let config = dir.join("node.toml");
    std::fs::write(&config, toml::to_string(&c).unwrap()).unwrap();
    let p = start(&config, &[]);
    let mut client = ClusterClient::new(vec![c.ingest.listen], "t", "");
    let mut seq = 0;
    let mut publish = async || {
        seq += 1;
        let mut e = Event::new("orders", Priority::Medium, "x");
        e.producer_id = 3;
        e.sequence = seq;
        client.publish(vec![e]).await.unwrap();
    };
    let realtime = "esc_pipeline_submitted_total{class=\"realtime\"}";
    let transactional = "esc_pipeline_submitted_total{class=\"transactional\"}";
    publish().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&scrape(&metrics), transactional) < 1 {
        assert!(Instant::now() < deadline, "an unlisted MEDIUM topic goes to the transactional class");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counter(&scrape(&metrics), realtime), 0);
    // List `orders` as CRITICAL in the file and send SIGHUP: new events go to the realtime class.
    c.pipeline.topics.insert("orders".into(), Priority::Critical);
    std::fs::write(&config, toml::to_string(&c).unwrap()).unwrap();
    let pid = p.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&scrape(&metrics), realtime) < 1 {
        assert!(Instant::now() < deadline, "after SIGHUP the table lists orders as CRITICAL");
        publish().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
