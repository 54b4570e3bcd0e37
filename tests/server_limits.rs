//! Resource limits and authorization of the client port, on real sockets: what an attacker
//! controls (reply sizes, trickled frames, unread replies, connection counts, HELLO guessing)
//! stays bounded by the configuration.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // tests use real time
#![allow(clippy::disallowed_types)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use eventstreamcore::client::{Client, ClientError};
use eventstreamcore::config::IngestConfig;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::ingest::{IngestServer, ShutdownHandle};
use eventstreamcore::metrics::IngestMetrics;
use eventstreamcore::node::{DedupConfig, LocalNode};
use eventstreamcore::rt::NodeClock;
use eventstreamcore::wire::{ErrorCode, Request, Response, acked};

struct TestServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    node: LocalNode,
    stop: ShutdownHandle,
    metrics: Arc<IngestMetrics>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(f: impl FnOnce(&mut IngestConfig)) -> TestServer {
    let node = LocalNode::new(1, NodeClock::new(), DedupConfig::default());
    let mut config = IngestConfig { listen: "127.0.0.1:0".parse().unwrap(), ..IngestConfig::default() };
    f(&mut config);
    let server = IngestServer::bind(config, node.clone(), NodeClock::new(), "test").await.unwrap();
    let addr = server.local_addr();
    let metrics_addr = server.metrics_addr();
    let stop = server.shutdown_handle();
    let metrics = server.metrics();
    let task = tokio::spawn(server.run());
    TestServer { addr, metrics_addr, node, stop, metrics, task }
}

impl TestServer {
    async fn client(&self) -> Client {
        let mut c = Client::connect(self.addr).await.unwrap();
        c.set_timeout(Duration::from_secs(5));
        c
    }
    async fn stop(self) {
        self.stop.shutdown();
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("shutdown finishes").unwrap();
    }
}

fn big(topic: &str, seq: u64, bytes: usize) -> Event {
    let mut e = Event::new(topic, Priority::High, vec![b'x'; bytes]);
    e.producer_id = 1;
    e.sequence = seq;
    e
}

#[tokio::test]
async fn a_fetch_reply_stays_under_the_byte_cap_and_a_consumer_still_progresses() {
    let cap = 1 << 20;
    let s = start(|c| c.max_fetch_bytes = cap).await;
    let mut c = s.client().await;
    // 40 events of 200 KiB: 8 MB in the topic, 8x the cap.
    for i in 0..8 {
        c.publish((0..5).map(|j| big("big", i * 5 + j, 200 << 10)).collect()).await.unwrap();
    }
    // One event larger than the cap.
    c.publish(vec![big("big", 100, 3 << 20)]).await.unwrap();
    let mut offset = 0;
    let mut seen = 0;
    let mut pages = 0;
    while offset < 41 {
        let page = c.fetch("big", offset, 10_000).await.unwrap();
        let size = acked::fetched_overhead("big")
            + page.events.iter().map(acked::stored_event_wire_len).sum::<usize>();
        assert!(!page.events.is_empty(), "a consumer always progresses");
        assert!(size <= cap || page.events.len() == 1, "reply of {size} bytes over the {cap}-byte cap");
        assert_eq!(page.events[0].offset, offset);
        assert_eq!(
            page.next_offset,
            offset + page.events.len() as u64,
            "next_offset is the first event left out"
        );
        assert_eq!(page.end_offset, 41);
        seen += page.events.len();
        offset = page.next_offset;
        pages += 1;
    }
    assert_eq!(seen, 41);
    assert!(pages >= 9, "8 MB in pages of at most 1 MiB, plus the big one ({pages} pages)");
    s.stop().await;
}

/// Reads everything the server sends until it closes (or `limit` passes); returns the bytes and
/// how long after `t0` the close came.
async fn read_until_closed(
    mut rd: impl tokio::io::AsyncRead + Unpin,
    t0: tokio::time::Instant,
    limit: Duration,
) -> (BytesMut, Option<Duration>) {
    use tokio::io::AsyncReadExt;
    let mut got = BytesMut::new();
    let deadline = t0 + limit;
    loop {
        match tokio::time::timeout_at(deadline, rd.read_buf(&mut got)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(t0.elapsed())),
            Ok(Ok(_)) => {}
            Err(_) => return (got, None),
        }
    }
}

#[tokio::test]
async fn a_trickling_client_is_cut_off_by_a_total_frame_deadline() {
    use tokio::io::AsyncWriteExt;
    let s = start(|c| {
        c.read_timeout_ms = 600;
        c.idle_timeout_ms = 60_000;
    })
    .await;
    let mut frame = BytesMut::new();
    Request::Publish(vec![big("t", 1, 2_000)]).encode(77, &mut frame);
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (rd, mut wr) = tokio::io::split(stream);
    let t0 = tokio::time::Instant::now();
    // One byte every 25 ms: each byte comes well within the read timeout, the frame never does.
    let trickle = tokio::spawn(async move {
        for b in frame.iter().take(frame.len() - 1) {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    let (got, closed_after) = read_until_closed(rd, t0, Duration::from_secs(5)).await;
    trickle.abort();
    let closed_after = closed_after.expect("a trickler must be disconnected");
    assert!(closed_after < Duration::from_secs(3), "closed after {closed_after:?}");
    let mut got = got;
    let raw = acked::decode_frame(&mut got, 1 << 20).unwrap().expect("an error frame before the close");
    match Response::decode(&raw).unwrap() {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::Malformed);
            assert!(e.message.contains("600 ms"), "{e}");
            assert_eq!(raw.request_id, 77);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(s.metrics.closed_read_timeout.get(), 1);
    assert!(s.node.state().topic_log("t").is_empty());
    s.stop().await;
}
