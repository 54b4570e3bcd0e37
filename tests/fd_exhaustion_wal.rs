//! Issue 11: a real `esc serve` whose descriptors are all taken by idle client connections cannot
//! open its next WAL segment. It must not stop storage until a restart: publishes are told
//! "retry" (never `internal`) meanwhile, and once the connections go, publishes succeed again in
//! the same process with no acked event lost.
//!
//! The server starts with a normal limit (its start-up check compares the limit with its
//! connection limits); the test then lowers the running server's limit with `prlimit`, so idle
//! connections can exhaust it, as they can on a server whose own files outgrow its reserve.
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

const PRODUCER: u64 = 77;

fn event(seq: u64) -> Event {
    let mut e = Event::new("t", Priority::Medium, Bytes::from(vec![b'e'; 1_000]));
    e.producer_id = PRODUCER;
    e.sequence = seq;
    e
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
async fn a_wal_segment_roll_out_of_descriptors_recovers_without_a_restart_and_loses_no_acked_event() {
    let data = format!("cluster.data_dir={:?}", temp_dir("fd-wal").display().to_string());
    let server = start_esc(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--set",
        "cluster.raft_listen=127.0.0.1:0",
        "--set",
        &data,
        "--set",
        "cluster.segment_bytes=4096",
        "--set",
        "cluster.commit_timeout_ms=1500",
    ]);
    let addr: SocketAddr = server.addr.parse().unwrap();
    let pid = server.child.id();
    let mut client = Client::connect(addr).await.unwrap();
    client.set_timeout(Duration::from_secs(20));
    let mut acked = Vec::new();
    for seq in 1..=5 {
        acked.push((seq, publish_retrying(&mut client, seq).await)); // a leader is elected first
    }

    // A few descriptors to spare, then idle clients take them all.
    set_fd_limit(pid, open_fds(pid) + 16);
    let idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Publish until the WAL cannot open a segment: told to retry, never `internal`.
    let mut refused = Vec::new();
    let mut seq = 6;
    while refused.len() < 3 && seq < 200 {
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
    assert!(!refused.is_empty(), "no segment roll ran out of descriptors (the limit was not reached)");

    // The idle clients go: publishes succeed again, no restart. A refused publish may have been
    // stored (its outcome was unknown): retried with its key it is found, not stored twice.
    drop(idle);
    for &s in &refused {
        acked.push((s, publish_retrying(&mut client, s).await));
    }
    for s in seq..seq + 20 {
        acked.push((s, publish_once(&mut client, s).await.expect("storage resumed without a restart")));
    }

    // Every acked event is in the topic at its acked offset, once.
    let mut stored = Vec::new();
    let mut next = 0;
    loop {
        let page = client.fetch("t", next, 500).await.unwrap();
        if page.events.is_empty() {
            break;
        }
        next = page.next_offset;
        stored.extend(page.events);
    }
    for (s, (offset, _)) in &acked {
        let e = stored.iter().find(|e| e.offset == *offset).unwrap_or_else(|| panic!("acked {s} lost"));
        assert_eq!(e.event.sequence, *s, "offset {offset}");
    }
    let mut seqs: Vec<u64> = stored.iter().map(|e| e.event.sequence).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), stored.len(), "no event stored twice");
}
