//! Resource limits and authorization of the client port, on real sockets: what an attacker
//! controls (reply sizes, trickled frames, unread replies, connection counts, HELLO guessing)
//! stays bounded by the configuration.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // tests use real time
#![allow(clippy::disallowed_types)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use eventstreamcore::client::{Client, ClientError};
use eventstreamcore::config::{ClientCredential, IngestConfig, Role};
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::ingest::{IngestServer, ShutdownHandle};
use eventstreamcore::metrics::IngestMetrics;
use eventstreamcore::node::{DedupConfig, LocalNode};
use eventstreamcore::rt::NodeClock;
use eventstreamcore::service::{Appended, EventService, FetchReply, ServiceError};
use eventstreamcore::wire::{AdminRequest, ErrorCode, ErrorFrame, Request, Response, acked};

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
    let _serial = MEMORY_TESTS.lock().await;
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
    let _serial = MEMORY_TESTS.lock().await;
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

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tests that measure this process's memory run one at a time (so every test here takes this).
static MEMORY_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resident set size of this process (Linux).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn pipelined_fetches_never_read_hold_bounded_memory() {
    let _serial = MEMORY_TESTS.lock().await;
    let s = start(|c| c.write_timeout_ms = 3_000).await;
    let mut c = s.client().await;
    c.publish((0..10_000).map(|i| big("m", i, 100)).collect()).await.unwrap();
    // 128 FETCHes of the whole topic (1.4 MB each on the wire), never read.
    let mut frames = BytesMut::new();
    for id in 0..128 {
        Request::Fetch { topic: "m".into(), offset: 0, max_events: 10_000 }.encode(id, &mut frames);
    }
    let before = rss_bytes();
    let mut attacker = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut attacker, &frames).await.unwrap();
    let mut peak = before;
    let mut peak_buffered = 0;
    for _ in 0..150 {
        peak = peak.max(rss_bytes());
        peak_buffered = peak_buffered.max(s.metrics.buffered_bytes.get());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let grew = peak.saturating_sub(before);
    // Bound: 8 read replies of at most 10,000 events' structs each, plus one write batch.
    assert!(grew < 48 << 20, "RSS grew by {} MiB", grew >> 20);
    assert!(peak_buffered < 4 << 20, "connection buffers held {peak_buffered} bytes");
    drop(attacker);
    s.stop().await;
}

/// A service that stores at once but completes only when the test opens the gate.
#[derive(Clone)]
struct GatedNode {
    inner: LocalNode,
    gate: tokio::sync::watch::Receiver<bool>,
}

impl EventService for GatedNode {
    fn publish(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Appended>, ServiceError>> + Send + 'static + use<> {
        let f = self.inner.publish(events);
        let mut gate = self.gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            f.await
        }
    }
    fn fetch(
        &self,
        topic: String,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<FetchReply, ServiceError>> + Send + 'static + use<> {
        self.inner.fetch(topic, offset, max)
    }
    fn node_id(&self) -> u64 {
        1
    }
}

#[tokio::test]
async fn a_client_that_never_reads_its_acks_is_closed_with_bounded_buffers() {
    let _serial = MEMORY_TESTS.lock().await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let node = GatedNode { inner: LocalNode::new(1, NodeClock::new(), DedupConfig::default()), gate: rx };
    let mut config = IngestConfig { listen: "127.0.0.1:0".parse().unwrap(), ..IngestConfig::default() };
    config.max_events_per_frame = 1_000;
    config.write_timeout_ms = 800;
    let server = IngestServer::bind(config, node.clone(), NodeClock::new(), "test").await.unwrap();
    let (addr, m, stop) = (server.local_addr(), server.metrics(), server.shutdown_handle());
    let task = tokio::spawn(server.run());
    // 128 pipelined frames of 1,000 events with long topics: 27 MB of acks once they complete.
    let topic = "t".repeat(200);
    let mut frames = BytesMut::new();
    for f in 0..128u64 {
        Request::Publish((0..1_000).map(|i| big(&topic, f * 1_000 + i, 10)).collect()).encode(f, &mut frames);
    }
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let (_rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut wr, &frames).await;
        wr
    });
    wait_until("every frame is in flight", || m.acked_frames.get() == 128).await;
    // All complete at once; the client reads nothing.
    tx.send(true).unwrap();
    let mut peak = 0;
    while m.closed_write_timeout.get() == 0 {
        peak = peak.max(m.buffered_bytes.get());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(peak < 2 << 20, "connection buffers reached {peak} bytes (one write batch plus one reply)");
    wait_until("its capacity is free", || m.inflight_events.get() == 0 && m.buffered_bytes.get() == 0).await;
    writer.abort();
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}

/// `ingest.max_inflight_bytes`: events in flight are bounded in bytes as well as in count, so a
/// publish beyond it is told "overloaded" at once instead of adding its events to memory.
#[tokio::test]
async fn events_in_flight_are_bounded_in_bytes_too() {
    let _serial = MEMORY_TESTS.lock().await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let node = GatedNode { inner: LocalNode::new(1, NodeClock::new(), DedupConfig::default()), gate: rx };
    let mut config = IngestConfig { listen: "127.0.0.1:0".parse().unwrap(), ..IngestConfig::default() };
    config.max_inflight_bytes = 100_000;
    let server = IngestServer::bind(config, node, NodeClock::new(), "test").await.unwrap();
    let (addr, m, stop) = (server.local_addr(), server.metrics(), server.shutdown_handle());
    let task = tokio::spawn(server.run());
    let events = |seqs: std::ops::Range<u64>| seqs.map(|i| big("t", i, 10_000)).collect::<Vec<_>>();
    // 8 events of 10 KB, held at the gate: 80 KB in flight.
    let first = tokio::spawn(async move {
        let mut c = Client::connect(addr).await.unwrap();
        c.set_timeout(Duration::from_secs(10));
        c.publish(events(0..8)).await
    });
    wait_until("the first publish is in flight", || m.inflight_events.get() == 8).await;
    // 30 KB more would pass the 100 KB budget (8 events are far below the count budget).
    let mut c = Client::connect(addr).await.unwrap();
    c.set_timeout(Duration::from_secs(2));
    match c.publish(events(8..11)).await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::Overloaded, "{e:?}"),
        other => panic!("a publish past the byte budget got {other:?}"),
    }
    assert_eq!(m.inflight_events.get(), 8, "the refused events took no capacity");
    // Once the first is answered its bytes are free again.
    tx.send(true).unwrap();
    assert_eq!(first.await.unwrap().unwrap().len(), 8);
    assert_eq!(c.publish(events(8..11)).await.unwrap().len(), 3);
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_metrics_port_has_a_connection_limit() {
    let _serial = MEMORY_TESTS.lock().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.metrics_max_connections = 2;
    })
    .await;
    let maddr = s.metrics_addr.unwrap();
    // Two silent connections take both slots (each may wait up to 5 s for its request).
    let _a = tokio::net::TcpStream::connect(maddr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(maddr).await.unwrap();
    let m = s.metrics.clone();
    let mut third = tokio::net::TcpStream::connect(maddr).await.unwrap();
    let _ = third.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the third connection is closed at once");
    assert!(got.is_empty(), "and not served: {}", String::from_utf8_lossy(&got));
    wait_until("the refusal is counted", || m.metrics_connections_refused.get() >= 1).await;
    // Once a slot frees, the page is served, and it shows the refusal.
    drop(_a);
    let mut served = String::new();
    for _ in 0..100 {
        let mut c = tokio::net::TcpStream::connect(maddr).await.unwrap();
        let _ = c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let mut page = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut page)).await;
        if !page.is_empty() {
            served = String::from_utf8_lossy(&page).into_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served.contains("esc_metrics_connections_refused_total"), "{served}");
    s.stop().await;
}

mod common;

/// Runs `sh -c script` for at most `limit`; returns (exited, success, first stdout line, stderr).
fn run_limited(script: &str, limit: Duration) -> (bool, bool, String, String) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let first = rx.recv_timeout(limit).unwrap_or_default();
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if !first.is_empty() || std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status.is_some(), status.is_some_and(|s| s.success()), first, err)
}

#[test]
fn serve_checks_its_fd_limit_against_its_connection_limits() {
    let _serial = MEMORY_TESTS.blocking_lock();
    let serve = |ulimit: &str| {
        format!(
            "{ulimit} && exec {} serve --listen 127.0.0.1:0 --set cluster.raft_listen=127.0.0.1:0 \
             --set cluster.data_dir={} --set ingest.max_connections=1000",
            common::ESC,
            common::temp_dir("fds").display()
        )
    };
    // Hard limit below the need: refused, saying what to change.
    let (exited, ok, _, err) =
        run_limited(&serve("ulimit -Sn 256 && ulimit -Hn 1256"), Duration::from_secs(20));
    assert!(exited && !ok, "must refuse to start: {err}");
    // 1,000 connections + 1,000 topics (cluster.max_topics) + 64 reserved.
    for want in [
        "file descriptor limit too low",
        "2064",
        "ingest.max_connections",
        "cluster.max_topics 1000",
        "ulimit -n 2064",
        "at most 192",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    // Only the soft limit low, the hard one high enough: raised, and the server starts.
    let (exited, _, first, err) =
        run_limited(&serve("ulimit -Sn 256 && ulimit -Hn 4096"), Duration::from_secs(20));
    assert!(!exited && first.starts_with("esc listening on"), "must start: {first:?} {err}");
}

/// `esc serve` on embedded defaults (max_connections 10,000) starts on a machine whose hard limit
/// is 4,096: the unset connection limit is lowered to fit, with a warning that says so.
#[test]
fn serve_on_defaults_fits_its_connection_limit_under_a_low_hard_limit() {
    let _serial = MEMORY_TESTS.blocking_lock();
    let cmd = format!(
        "ulimit -Sn 1024 && ulimit -Hn 4096 && exec {} serve --listen 127.0.0.1:0 \
         --set cluster.raft_listen=127.0.0.1:0 --set cluster.data_dir={}",
        common::ESC,
        common::temp_dir("fds-default").display()
    );
    let (exited, _, first, err) = run_limited(&cmd, Duration::from_secs(20));
    assert!(!exited && first.starts_with("esc listening on"), "must start: {first:?} {err}");
    // 4,096 less 1,000 topics (cluster.max_topics) and 64 reserved.
    assert!(err.contains("lowered to 3032"), "the warning names the fitted limit: {err}");
}

fn credential(name: &str, token: &str, roles: &[Role]) -> ClientCredential {
    ClientCredential { name: name.into(), token: token.into(), roles: roles.to_vec() }
}

fn server_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorFrame {
    match r {
        Err(ClientError::Server(e)) => e,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

const ADD: fn() -> AdminRequest =
    || AdminRequest::AddNode { id: 9, raft_addr: "127.0.0.1:1".into(), client_addr: "127.0.0.1:2".into() };

#[tokio::test]
async fn each_request_needs_its_role() {
    let _serial = MEMORY_TESTS.lock().await;
    let s = start(|c| {
        c.clients = vec![
            credential("writer", "writer-token", &[Role::Publish]),
            credential("reader", "reader-token", &[Role::Consume]),
            credential("ops", "ops-token-x", &[Role::Admin]),
        ];
    })
    .await;
    let mut anon = s.client().await;
    assert_eq!(server_error(anon.publish(vec![big("a", 1, 1)]).await).code, ErrorCode::Unauthorized);
    assert_eq!(server_error(anon.admin(AdminRequest::Status).await).code, ErrorCode::Unauthorized);

    let mut w = s.client().await;
    w.hello("w", "writer-token").await.unwrap();
    w.publish(vec![big("a", 1, 1)]).await.unwrap();
    let e = server_error(w.fetch("a", 0, 10).await);
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(e.message.contains("`writer` lacks the `consume` role"), "{e}");
    assert_eq!(server_error(w.admin(ADD()).await).code, ErrorCode::Forbidden);

    let mut r = s.client().await;
    r.hello("r", "reader-token").await.unwrap();
    assert_eq!(r.fetch("a", 0, 10).await.unwrap().events.len(), 1);
    assert_eq!(server_error(r.publish(vec![big("a", 2, 1)]).await).code, ErrorCode::Forbidden);
    // Status needs a login but no role.
    assert_eq!(server_error(r.admin(AdminRequest::Status).await).code, ErrorCode::Unsupported);

    let mut o = s.client().await;
    o.hello("o", "ops-token-x").await.unwrap();
    // Past the role check: this single node answers that it is not in a cluster.
    assert_eq!(server_error(o.admin(ADD()).await).code, ErrorCode::Unsupported);
    assert_eq!(s.metrics.forbidden.get(), 3);
    s.stop().await;
}

#[tokio::test]
async fn an_open_port_refuses_membership_changes() {
    let _serial = MEMORY_TESTS.lock().await;
    let s = start(|_| {}).await;
    let mut c = s.client().await;
    c.publish(vec![big("a", 1, 1)]).await.unwrap();
    assert_eq!(c.fetch("a", 0, 10).await.unwrap().events.len(), 1);
    let e = server_error(c.admin(ADD()).await);
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(e.message.contains("none is configured"), "{e}");
    c.hello("c", "").await.unwrap();
    assert_eq!(server_error(c.admin(ADD()).await).code, ErrorCode::Forbidden);
    // Status stays open.
    assert_eq!(server_error(c.admin(AdminRequest::Status).await).code, ErrorCode::Unsupported);
    s.stop().await;
}

#[tokio::test]
async fn failed_hellos_are_slowed_counted_log_out_and_close_the_connection() {
    let _serial = MEMORY_TESTS.lock().await;
    let s = start(|c| {
        c.clients = vec![credential("app", "app-token", &[Role::Publish, Role::Consume])];
        c.hello_failure_delay_ms = 100;
        c.hello_failure_max_delay_ms = 250;
        c.max_failed_hellos = 4;
    })
    .await;
    let mut c = s.client().await;
    c.hello("c", "app-token").await.unwrap();
    c.publish(vec![big("a", 1, 1)]).await.unwrap();
    let mut waited = Vec::new();
    for n in 1..=3 {
        let t = tokio::time::Instant::now();
        let e = server_error(c.hello("c", "guess").await);
        waited.push(t.elapsed());
        assert_eq!(e.code, ErrorCode::Unauthorized);
        if n == 1 {
            // A wrong token after a good one logs the connection out.
            assert_eq!(server_error(c.publish(vec![big("a", 2, 1)]).await).code, ErrorCode::Unauthorized);
        }
    }
    for (got, min_ms) in waited.iter().zip([100, 200, 250]) {
        assert!(*got >= Duration::from_millis(min_ms), "answered after {got:?}, want ≥ {min_ms} ms");
    }
    let e = server_error(c.hello("c", "guess").await);
    assert!(e.message.contains("closing after 4 failed HELLOs"), "{e}");
    assert!(c.wait_closed(Duration::from_secs(3)).await, "closed after the 4th failure");
    assert_eq!(s.metrics.hello_failures.get(), 4);
    assert_eq!(s.metrics.closed_auth_failures.get(), 1);
    // Counted on the metrics page too.
    assert!(s.metrics.render_prometheus().contains("esc_hello_failures_total 4"));
    s.stop().await;
}
