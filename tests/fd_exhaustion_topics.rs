//! Issue 11: a real `esc serve` whose descriptors are all taken by idle client connections cannot
//! open the file of a NEW topic while it applies a committed entry. Storage must not stop until
//! a restart: publishes are told "retry" (never `internal`) meanwhile, and once the connections
//! go, the waiting entry is applied and publishes to new topics succeed again in the same
//! process, every acked event stored once.
//!
//! As in `fd_exhaustion_wal.rs`, the server starts with a normal limit and the test lowers the
//! running server's limit with `prlimit`. The WAL does not roll here (large segments): what runs
//! out is the topic store.
#![cfg(all(target_os = "linux", not(madsim)))]
#![allow(clippy::disallowed_methods)] // real processes, sockets and time

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use common::fd::{self, open_fds, set_fd_limit};
use common::{start_esc, temp_dir};
use eventstreamcore::client::Client;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::wire::ErrorCode;

const PRODUCER: u64 = 78;

/// Event `seq`, alone in its own topic.
fn event(seq: u64) -> Event {
    let mut e = Event::new(topic(seq), Priority::Medium, Bytes::from(vec![b'e'; 100]));
    e.producer_id = PRODUCER;
    e.sequence = seq;
    e
}

fn topic(seq: u64) -> String {
    format!("new-{seq}")
}

/// Publishing event `seq` once (see [`fd::publish_once`]).
async fn publish_once(client: &mut Client, seq: u64) -> Result<(u64, bool), ErrorCode> {
    fd::publish_once(client, event(seq)).await
}

/// Publishing event `seq` until it is taken (see [`fd::publish_retrying`]).
async fn publish_retrying(client: &mut Client, seq: u64) -> (u64, bool) {
    fd::publish_retrying(client, &event(seq)).await
}

#[tokio::test]
async fn new_topics_out_of_descriptors_wait_and_are_applied_without_a_restart() {
    let data = format!("cluster.data_dir={:?}", temp_dir("fd-topics").display().to_string());
    let server = start_esc(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--set",
        "cluster.raft_listen=127.0.0.1:0",
        "--set",
        &data,
        "--set",
        "cluster.commit_timeout_ms=1500",
    ]);
    let addr: SocketAddr = server.addr.parse().unwrap();
    let pid = server.child.id();
    let mut client = Client::connect(addr).await.unwrap();
    client.set_timeout(Duration::from_secs(20));
    let mut acked = Vec::new();
    for seq in 1..=3 {
        acked.push((seq, publish_retrying(&mut client, seq).await)); // a leader is elected first
    }

    // Descriptors to spare, then idle clients take them all.
    set_fd_limit(pid, open_fds(pid) + 32);
    let idle: Vec<TcpStream> = (0..80).map(|_| TcpStream::connect(addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Publish to new topics until their files cannot be created: told to retry, never `internal`.
    let mut refused = Vec::new();
    let mut seq = 4;
    while refused.len() < 3 && seq < 100 {
        match publish_once(&mut client, seq).await {
            Ok(r) => acked.push((seq, r)),
            Err(code) => {
                assert!(
                    matches!(code, ErrorCode::Overloaded | ErrorCode::Unavailable),
                    "publish {seq} while out of descriptors: {code:?} (storage must not fail for good)"
                );
                refused.push(seq);
            }
        }
        seq += 1;
    }
    assert!(!refused.is_empty(), "no topic file ran out of descriptors (the limit was not reached)");

    // The idle clients go: the waiting entry is applied and new topics work again, no restart. A
    // refused publish may have been stored (its outcome was unknown): retried with its key it is
    // found, not stored twice.
    drop(idle);
    for &s in &refused {
        acked.push((s, publish_retrying(&mut client, s).await));
    }
    for s in seq..seq + 8 {
        acked.push((s, publish_once(&mut client, s).await.expect("storage resumed without a restart")));
    }

    // Every acked event is alone in its topic, at offset 0, once.
    for (s, (offset, _)) in &acked {
        assert_eq!(*offset, 0, "event {s} is the first of its topic");
        let page = client.fetch(&topic(*s), 0, 10).await.unwrap();
        let seqs: Vec<u64> = page.events.iter().map(|e| e.event.sequence).collect();
        assert_eq!(seqs, [*s], "topic {} holds its event once", topic(*s));
    }
}
