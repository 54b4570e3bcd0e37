//! SIGTERM on the leader of a 3-member process cluster: it hands leadership to a caught-up voter
//! (Raft TimeoutNow) before it exits, so a new leader is there well before any election timeout
//! could have elected one, and no acknowledged event is lost.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes, files, ports and time

mod common;

use common::{ESC, temp_dir};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventstreamcore::client::{Client, ClusterClient};
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::wire::{AckItem, AdminRequest};

/// Ticks of 20 ms: the election timeout is 2–4 s, so a leader within 1.5 s can only come from a
/// handover.
const TICK_MS: u64 = 20;
const ELECTION_TICKS: u32 = 100;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path, log: &Path) -> Proc {
    let mut child = Command::new(ESC)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("esc starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("esc listening on "), "unexpected first line {line:?}");
    Proc(child)
}

fn configs(dir: &Path) -> (Vec<PathBuf>, Vec<SocketAddr>) {
    let mut paths = Vec::new();
    let mut addrs = Vec::new();
    for mut c in common::member_configs(dir, 3, "test-secret-handover") {
        c.cluster.tick_ms = TICK_MS;
        c.cluster.election_ticks = ELECTION_TICKS;
        c.cluster.heartbeat_ticks = 5;
        let p = dir.join(format!("node{}.toml", c.node.id));
        std::fs::write(&p, toml::to_string(&c).unwrap()).unwrap();
        paths.push(p);
        addrs.push(c.ingest.listen);
    }
    (paths, addrs)
}

/// (index, term) of the member that reports itself leader, among `which`.
async fn leader(addrs: &[SocketAddr], which: &[usize]) -> Option<(usize, u64)> {
    for &i in which {
        if let Ok(mut c) = Client::connect(addrs[i]).await {
            c.set_timeout(Duration::from_secs(1));
            if c.hello("test", "").await.is_ok()
                && let Ok(text) = c.admin(AdminRequest::Status).await
                && text.contains("role Leader")
            {
                let term =
                    text.split_whitespace().skip_while(|w| *w != "term").nth(1).unwrap().parse().unwrap();
                return Some((i, term));
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over_and_loses_no_acked_event() {
    let dir = temp_dir("handover");
    let (configs, addrs) = configs(&dir);
    let logs: Vec<PathBuf> = (1..=3).map(|i| dir.join(format!("node{i}.log"))).collect();
    let mut procs: Vec<Option<Proc>> = (0..3).map(|i| Some(start(&configs[i], &logs[i]))).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (old, old_term) = loop {
        if let Some(l) = leader(&addrs, &[0, 1, 2]).await {
            break l;
        }
        assert!(Instant::now() < deadline, "no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // A producer publishes throughout, retrying each batch with the same keys until acked.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = tokio::spawn({
        let (addrs, stop) = (addrs.clone(), stop.clone());
        async move {
            let mut client = ClusterClient::new(addrs, "producer", "");
            client.timeout = Duration::from_secs(3);
            client.max_attempts = 200;
            client.backoff = Duration::from_millis(20);
            let mut acked = BTreeMap::new();
            let mut seq = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let events: Vec<Event> = (seq..seq + 3)
                    .map(|s| {
                        let mut e = Event::new("orders", Priority::Medium, format!("order {s}"));
                        (e.producer_id, e.sequence) = (5, s);
                        e
                    })
                    .collect();
                // A client that ran out of redirects retries the same keys: never a loss, never a copy.
                let items = match client.publish(events).await {
                    Ok(items) => items,
                    Err(e) => {
                        eprintln!("publish of seq {seq} failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                for (i, item) in items.iter().enumerate() {
                    match item {
                        AckItem::Stored { offset, .. } => drop(acked.insert(seq + i as u64, *offset)),
                        AckItem::Rejected(e) => panic!("rejected: {e}"),
                    }
                }
                seq += 3;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pid = procs[old].as_ref().unwrap().0.id().to_string();
    let sent = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let (new, new_term) = loop {
        if let Some(l) = leader(&addrs, &rest).await {
            break l;
        }
        assert!(sent.elapsed() < Duration::from_secs(20), "no new leader within 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = sent.elapsed();
    let mut p = procs[old].take().unwrap();
    let exit = loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            break st;
        }
        assert!(sent.elapsed() < Duration::from_secs(20), "the old leader did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}");
    let log = std::fs::read_to_string(&logs[old]).unwrap();
    assert!(log.contains("leadership handed over"), "{log}");
    assert!(new_term > old_term, "{new_term} {old_term}");
    assert!(
        took < Duration::from_millis(TICK_MS * u64::from(ELECTION_TICKS) * 3 / 4),
        "new leader node {} after {took:?}: not faster than an election timeout",
        new + 1
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = tokio::time::timeout(Duration::from_secs(60), producer).await.unwrap().unwrap();
    assert!(acked.len() >= 30, "{}", acked.len());
    let mut reader = ClusterClient::new(vec![addrs[new]], "reader", "");
    let mut stored = BTreeMap::new();
    loop {
        let page = reader.read("orders", stored.len() as u64, 1000, true, 0).await.unwrap();
        if page.events.is_empty() {
            break;
        }
        for s in page.events {
            assert!(stored.insert(s.event.sequence, s.offset).is_none(), "seq {} twice", s.event.sequence);
        }
    }
    for (seq, off) in &acked {
        assert_eq!(stored.get(seq), Some(off), "acked seq {seq} lost or moved");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
