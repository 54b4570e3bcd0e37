//! The server on real sockets: both protocols, every kind of bad input, limits, shutdown.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // tests read fixtures and use real time
#![allow(clippy::disallowed_types)] // the gated test service runs on real tokio only

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use eventstreamcore::client::{Client, ClientError};
use eventstreamcore::config::IngestConfig;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::ingest::{IngestServer, ShutdownHandle};
use eventstreamcore::metrics::IngestMetrics;
use eventstreamcore::node::{DedupConfig, LocalNode};
use eventstreamcore::rt::NodeClock;
use eventstreamcore::service::{Appended, EventService, FetchReply, ServiceError};
use eventstreamcore::wire::{AckItem, ErrorCode, Request, Response, acked, legacy};
use std::sync::Arc;

struct TestServer {
    addr: SocketAddr,
    udp: Option<SocketAddr>,
    node: LocalNode,
    stop: ShutdownHandle,
    metrics: Arc<IngestMetrics>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(f: impl FnOnce(&mut IngestConfig)) -> TestServer {
    let node = LocalNode::new(1, NodeClock::new(), DedupConfig::default());
    start_with(node.clone(), node, f).await
}

/// Starts a server on loopback in front of `service`, whose log is `node`.
async fn start_with<S: EventService>(
    service: S,
    node: LocalNode,
    f: impl FnOnce(&mut IngestConfig),
) -> TestServer {
    let mut config = IngestConfig { listen: "127.0.0.1:0".parse().unwrap(), ..IngestConfig::default() };
    f(&mut config);
    let server = IngestServer::bind(config, service, NodeClock::new(), "test").await.unwrap();
    let addr = server.local_addr();
    let udp = server.udp_addr();
    let stop = server.shutdown_handle();
    let metrics = server.metrics();
    let task = tokio::spawn(server.run());
    TestServer { addr, udp, node, stop, metrics, task }
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

fn keyed(topic: &str, producer: u64, seq: u64, payload: &str) -> Event {
    let mut e = Event::new(topic, Priority::High, payload.to_string());
    e.producer_id = producer;
    e.sequence = seq;
    e
}

fn stored_offset(item: &AckItem) -> (u64, bool) {
    match item {
        AckItem::Stored { offset, duplicate, .. } => (*offset, *duplicate),
        other => panic!("expected stored, got {other:?}"),
    }
}

#[tokio::test]
async fn acked_publish_returns_offsets_and_retries_get_the_original() {
    let s = start(|_| {}).await;
    let mut c = s.client().await;
    let info = c.hello("t", "").await.unwrap();
    assert_eq!(info.node_id, 1);
    let items =
        c.publish(vec![keyed("a", 7, 1, "x"), keyed("a", 7, 2, "y"), keyed("b", 7, 3, "z")]).await.unwrap();
    assert_eq!(items.iter().map(stored_offset).collect::<Vec<_>>(), vec![(0, false), (1, false), (0, false)]);
    // A retry on a new connection, same keys: original offsets, flagged duplicate, no copies.
    let mut c2 = s.client().await;
    let items = c2.publish(vec![keyed("a", 7, 2, "y"), keyed("a", 7, 4, "w")]).await.unwrap();
    assert_eq!(items.iter().map(stored_offset).collect::<Vec<_>>(), vec![(1, true), (2, false)]);
    assert_eq!(s.node.state().topic_log("a").len(), 3);
    let page = c2.fetch("a", 0, 10).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.event.sequence).collect::<Vec<_>>(), vec![1, 2, 4]);
    assert_eq!((page.next_offset, page.end_offset), (3, 3));
    s.stop().await;
}

#[tokio::test]
async fn pipelined_frames_are_stored_and_acked_in_order() {
    let s = start(|_| {}).await;
    let mut c = s.client().await;
    let frames: Vec<Vec<Event>> =
        (0..50).map(|i| vec![keyed("p", 1, 2 * i, "a"), keyed("p", 1, 2 * i + 1, "b")]).collect();
    let replies = c.publish_pipelined(frames).await.unwrap();
    let offsets: Vec<u64> =
        replies.into_iter().flat_map(|r| r.unwrap()).map(|i| stored_offset(&i).0).collect();
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());
    let log = s.node.state().topic_log("p").to_vec();
    assert!(log.iter().enumerate().all(|(i, e)| e.event.sequence == i as u64));
    s.stop().await;
}

#[tokio::test]
async fn legacy_frames_built_like_the_original_python_tools_are_accepted() {
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/legacy_frames.bin")).unwrap();
    // Our encoder produces exactly the same bytes.
    let mut ours = Vec::new();
    legacy::encode(Priority::Critical, "sensor/temperature", &[105], &mut ours);
    legacy::encode(Priority::High, "sensor/pressure", &[160], &mut ours);
    legacy::encode(Priority::Medium, "payment", &2500u32.to_le_bytes(), &mut ours);
    legacy::encode(Priority::Low, "audit", b"user=alice action=login", &mut ours);
    legacy::encode(Priority::Batch, "batch/metrics", b"", &mut ours);
    assert_eq!(ours, bytes);

    let s = start(|_| {}).await;
    let mut c = s.client().await;
    c.send_raw(&bytes).await.unwrap();
    // Legacy frames get no reply; a ping after them proves they were read first.
    c.ping().await.unwrap();
    let want = [
        ("sensor/temperature", Priority::Critical, vec![105u8]),
        ("sensor/pressure", Priority::High, vec![160]),
        ("payment", Priority::Medium, 2500u32.to_le_bytes().to_vec()),
        ("audit", Priority::Low, b"user=alice action=login".to_vec()),
        ("batch/metrics", Priority::Batch, vec![]),
    ];
    for (topic, prio, payload) in want {
        let page = c.fetch(topic, 0, 10).await.unwrap();
        assert_eq!(page.events.len(), 1, "{topic}");
        assert_eq!(page.events[0].event.priority, prio);
        assert_eq!(&page.events[0].event.payload[..], &payload[..]);
    }
    assert_eq!(s.metrics.legacy_frames.get(), 5);
    s.stop().await;
}

async fn expect_error(c: &mut Client, want_id: u64, code: ErrorCode) {
    match c.recv().await.unwrap() {
        (id, Response::Error(e)) => {
            assert_eq!(id, want_id);
            assert_eq!(e.code, code, "{e}");
        }
        other => panic!("expected {code} error, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_input_gets_an_error_and_the_connection_goes_on() {
    let s = start(|_| {}).await;
    let mut c = s.client().await;
    // Legacy: bad priority, topic length 0, topic overrun, too short — counted, no reply.
    c.send_raw(&[0, 0, 0, 4, 9, 0, 1, b'a']).await.unwrap();
    c.send_raw(&[0, 0, 0, 4, 1, 0, 0, b'a']).await.unwrap();
    c.send_raw(&[0, 0, 0, 4, 1, 0, 5, b'a']).await.unwrap();
    c.send_raw(&[0, 0, 0, 2, 1, 0]).await.unwrap();
    c.ping().await.unwrap();
    assert_eq!(s.metrics.legacy_malformed.get(), 4);

    // Acked: bad checksum.
    let mut f = BytesMut::new();
    Request::Ping.encode(10, &mut f);
    let n = f.len();
    f[n - 1] ^= 1;
    c.send_raw(&f).await.unwrap();
    expect_error(&mut c, 10, ErrorCode::Malformed).await;
    // Unknown kind (valid checksum).
    let mut f = BytesMut::new();
    Request::Ping.encode(11, &mut f);
    f[5] = 0x42;
    let crc = crc32c::crc32c(&f[4..20]);
    f[20..24].copy_from_slice(&crc.to_be_bytes());
    c.send_raw(&f).await.unwrap();
    expect_error(&mut c, 11, ErrorCode::Unsupported).await;
    // Truncated body: a publish claiming one event with nothing after the count.
    let mut f = BytesMut::new();
    f.extend_from_slice(&acked::MAGIC);
    f.extend_from_slice(&[acked::VERSION, 0x02, 0, 0, 0, 0, 0, 4]);
    f.extend_from_slice(&12u64.to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes());
    let crc = crc32c::crc32c(&f[4..]);
    f.extend_from_slice(&crc.to_be_bytes());
    c.send_raw(&f).await.unwrap();
    expect_error(&mut c, 12, ErrorCode::Malformed).await;
    // Bad priority inside an acked event.
    let mut f = BytesMut::new();
    Request::Publish(vec![keyed("a", 1, 1, "x")]).encode(13, &mut f);
    let prio_at = 20 + 4 + 16;
    f[prio_at] = 7;
    let end = f.len() - 4;
    let crc = crc32c::crc32c(&f[4..end]);
    f[end..].copy_from_slice(&crc.to_be_bytes());
    c.send_raw(&f).await.unwrap();
    expect_error(&mut c, 13, ErrorCode::Malformed).await;
    // Invalid topic: rejected per event, the valid one in the same frame is stored.
    let items = c.publish(vec![keyed("", 1, 2, "x"), keyed("ok", 1, 3, "y")]).await.unwrap();
    assert!(matches!(&items[0], AckItem::Rejected(e) if e.code == ErrorCode::Malformed));
    assert_eq!(stored_offset(&items[1]), (0, false));
    // The same connection still works.
    assert_eq!(stored_offset(&c.publish(vec![keyed("ok", 1, 4, "z")]).await.unwrap()[0]), (1, false));
    s.stop().await;
}

#[tokio::test]
async fn too_large_frames_close_the_connection_but_the_server_serves_others() {
    let s = start(|c| c.max_frame_bytes = 1024).await;
    // Acked: error frame, then close.
    let mut c = s.client().await;
    let mut hdr = Vec::from(acked::MAGIC);
    hdr.extend_from_slice(&[acked::VERSION, 0x02, 0, 0]);
    hdr.extend_from_slice(&5000u32.to_be_bytes());
    hdr.extend_from_slice(&21u64.to_be_bytes());
    c.send_raw(&hdr).await.unwrap();
    expect_error(&mut c, 21, ErrorCode::TooLarge).await;
    assert!(c.wait_closed(Duration::from_secs(5)).await);
    // Legacy: closed without a reply.
    let mut c = s.client().await;
    c.send_raw(&2000u32.to_be_bytes()).await.unwrap();
    assert!(c.wait_closed(Duration::from_secs(5)).await);
    // A legacy frame exactly at the limit is fine.
    let mut c = s.client().await;
    let topic = "t";
    let payload = vec![b'x'; 1024 - 3 - topic.len()];
    c.send_legacy(Priority::Low, topic, &payload).await.unwrap();
    c.ping().await.unwrap();
    assert_eq!(s.node.state().topic_log("t").len(), 1);
    assert_eq!(s.metrics.closed_too_large.get(), 2);
    s.stop().await;
}

#[tokio::test]
async fn more_than_ten_empty_frames_in_a_row_close_the_connection() {
    let s = start(|_| {}).await;
    let mut c = s.client().await;
    c.send_raw(&[0u8; 40]).await.unwrap();
    c.ping().await.unwrap();
    c.send_raw(&[0u8; 44]).await.unwrap();
    assert!(c.wait_closed(Duration::from_secs(5)).await);
    assert_eq!(s.metrics.closed_empty_flood.get(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_stalls_mid_frame_is_dropped_and_an_idle_one_closed() {
    let s = start(|c| {
        c.read_timeout_ms = 300;
        c.idle_timeout_ms = 600;
    })
    .await;
    let mut staller = s.client().await;
    let mut f = BytesMut::new();
    Request::Publish(vec![keyed("s", 1, 1, "x")]).encode(1, &mut f);
    staller.send_raw(&f[..f.len() / 2]).await.unwrap();
    let mut idle = s.client().await;
    assert!(staller.wait_closed(Duration::from_secs(3)).await, "stalled client dropped");
    assert!(idle.wait_closed(Duration::from_secs(3)).await, "idle client closed");
    assert_eq!(s.metrics.closed_read_timeout.get(), 1);
    assert_eq!(s.metrics.closed_idle.get(), 1);
    assert!(s.node.state().topic_log("s").is_empty(), "half a frame stores nothing");
    // Still serving.
    let mut c = s.client().await;
    c.ping().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn the_connection_limit_refuses_with_overloaded() {
    let s = start(|c| c.max_connections = 2).await;
    let mut a = s.client().await;
    let mut b = s.client().await;
    a.ping().await.unwrap();
    b.ping().await.unwrap();
    let mut c = s.client().await;
    match c.ping().await {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::Overloaded);
            assert!(e.retry_after_ms > 0);
        }
        other => panic!("expected overloaded, got {other:?}"),
    }
    drop(a);
    // Once a slot frees up, a new client gets in.
    let mut ok = false;
    for _ in 0..50 {
        let mut d = s.client().await;
        if d.ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok);
    assert!(s.metrics.connections_refused.get() >= 1);
    s.stop().await;
}

#[tokio::test]
async fn auth_and_topic_restrictions() {
    let s = start(|c| {
        c.auth_token = "tok".into();
        c.allowed_topics = vec!["sensor/*".into(), "payment".into()];
    })
    .await;
    let mut c = s.client().await;
    match c.publish(vec![keyed("payment", 1, 1, "x")]).await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::Unauthorized),
        other => panic!("{other:?}"),
    }
    match c.hello("t", "wrong").await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::Unauthorized),
        other => panic!("{other:?}"),
    }
    c.hello("t", "tok").await.unwrap();
    let items = c
        .publish(vec![keyed("payment", 1, 2, "x"), keyed("orders", 1, 3, "y"), keyed("sensor/t", 1, 4, "z")])
        .await
        .unwrap();
    assert!(matches!(items[0], AckItem::Stored { .. }));
    assert!(matches!(&items[1], AckItem::Rejected(e) if e.code == ErrorCode::UnknownTopic));
    assert!(matches!(items[2], AckItem::Stored { .. }));
    // Legacy frames cannot authenticate: refused and counted.
    let mut l = s.client().await;
    l.send_legacy(Priority::High, "payment", b"1").await.unwrap();
    l.hello("t", "tok").await.unwrap();
    assert_eq!(s.metrics.legacy_refused.get(), 1);
    assert_eq!(s.node.state().topic_log("payment").len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn too_many_events_in_one_frame_is_malformed() {
    let s = start(|c| {
        c.max_events_per_frame = 3;
        c.max_inflight_events = 3;
    })
    .await;
    let mut c = s.client().await;
    let events: Vec<Event> = (0..4).map(|i| keyed("t", 1, i, "x")).collect();
    match c.publish(events).await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.publish((0..3).map(|i| keyed("t", 1, i, "x")).collect()).await.unwrap().len(), 3);
    s.stop().await;
}

#[tokio::test]
async fn udp_legacy_datagrams_are_stored_and_malformed_ones_counted() {
    let s = start(|c| c.udp_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let udp = s.udp.expect("udp on");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&legacy::encode_to_vec(Priority::High, "u", b"one"), udp).await.unwrap();
    sock.send_to(&[0, 0, 0, 9, 1], udp).await.unwrap(); // truncated
    let mut two = legacy::encode_to_vec(Priority::High, "u", b"a");
    two.extend(legacy::encode_to_vec(Priority::High, "u", b"b")); // two frames: refused
    sock.send_to(&two, udp).await.unwrap();
    sock.send_to(&legacy::encode_to_vec(Priority::Low, "u", b"three"), udp).await.unwrap();
    for _ in 0..100 {
        if s.metrics.udp_datagrams.get() == 4 && s.node.state().topic_log("u").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log: Vec<_> = s.node.state().topic_log("u").iter().map(|e| e.event.payload.clone()).collect();
    assert_eq!(log, vec![&b"one"[..], &b"three"[..]]);
    assert_eq!(s.metrics.udp_malformed.get(), 2);
    s.stop().await;
}

/// A service that stores at once but completes only when the test opens the gate, so requests
/// are genuinely in flight for as long as the test needs.
#[derive(Clone)]
struct GatedNode {
    inner: LocalNode,
    gate: tokio::sync::watch::Receiver<bool>,
}

impl GatedNode {
    fn new() -> (GatedNode, tokio::sync::watch::Sender<bool>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (GatedNode { inner: LocalNode::new(1, NodeClock::new(), DedupConfig::default()), gate: rx }, tx)
    }
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

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn graceful_shutdown_answers_in_flight_requests_then_stops_accepting() {
    let (node, gate) = GatedNode::new();
    let s = start_with(node.clone(), node.inner.clone(), |_| {}).await;
    let (addr, metrics) = (s.addr, s.metrics.clone());
    let mut c = Client::connect(addr).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(c.queue(&Request::Publish(vec![keyed("g", 3, i, "x")])).unwrap());
    }
    c.flush().await.unwrap();
    wait_until("the server read all 20 frames", || metrics.acked_frames.get() == 20).await;
    s.stop.shutdown();
    wait_until("the listener is closed", || std::net::TcpStream::connect(addr).is_err()).await;
    // Every in-flight request is still answered once the service completes.
    gate.send(true).unwrap();
    for want in &ids {
        let (got, resp) = c.recv().await.unwrap();
        assert_eq!(got, *want);
        assert!(matches!(resp, Response::Ack(_)), "{resp:?}");
    }
    assert!(c.wait_closed(Duration::from_secs(5)).await);
    tokio::time::timeout(Duration::from_secs(10), s.task).await.unwrap().unwrap();
    assert_eq!(node.inner.state().topic_log("g").len(), 20);
}

#[tokio::test]
async fn at_capacity_acked_publishes_are_told_to_retry_and_legacy_ones_wait() {
    let (node, gate) = GatedNode::new();
    let s = start_with(node.clone(), node.inner.clone(), |c| {
        c.max_inflight_events = 4;
        c.max_events_per_frame = 4;
        c.overload_retry_after_ms = 25;
    })
    .await;
    let (addr, metrics) = (s.addr, s.metrics.clone());

    // Fill the server: one acked frame of 4 events holds all capacity until the gate opens.
    let mut filler = Client::connect(addr).await.unwrap();
    let fill_id = filler.queue(&Request::Publish((0..4).map(|i| keyed("f", 9, i, "x")).collect())).unwrap();
    filler.flush().await.unwrap();
    wait_until("the filler frame is in flight", || metrics.acked_frames.get() == 1).await;

    // An acked publish now is refused with a retry-after, not queued without bound.
    let mut acked_client = Client::connect(addr).await.unwrap();
    match acked_client.publish(vec![keyed("a", 1, 1, "x")]).await {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::Overloaded);
            assert_eq!(e.retry_after_ms, 25);
        }
        other => panic!("expected overloaded, got {other:?}"),
    }
    // Legacy frames cannot be refused: they wait (backpressure) and are all stored, in order.
    let mut legacy_client = Client::connect(addr).await.unwrap();
    for i in 0..12 {
        legacy_client.send_legacy(Priority::Low, "l", format!("{i}").as_bytes()).await.unwrap();
    }
    wait_until("the legacy frames are read", || metrics.legacy_frames.get() >= 1).await;
    assert!(node.inner.state().topic_log("l").is_empty(), "nothing is stored beyond capacity");
    gate.send(true).unwrap();
    let (id, _) = filler.recv().await.unwrap();
    assert_eq!(id, fill_id);
    wait_until("all 12 legacy frames are stored", || node.inner.state().topic_log("l").len() == 12).await;
    let got: Vec<String> = node
        .inner
        .state()
        .topic_log("l")
        .iter()
        .map(|e| String::from_utf8_lossy(&e.event.payload).into_owned())
        .collect();
    assert_eq!(got, (0..12).map(|i| i.to_string()).collect::<Vec<_>>());
    // Retrying after the hint succeeds once capacity is free.
    let mut stored = false;
    for _ in 0..40 {
        match acked_client.publish(vec![keyed("a", 1, 1, "x")]).await {
            Ok(items) => {
                stored = matches!(items[0], AckItem::Stored { offset: 0, .. });
                break;
            }
            Err(ClientError::Server(e)) if e.code == ErrorCode::Overloaded => {
                tokio::time::sleep(Duration::from_millis(u64::from(e.retry_after_ms))).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(stored, "the retried publish was stored once, at offset 0");
    assert!(metrics.overloaded.get() >= 1);
    s.stop().await;
}

#[tokio::test]
async fn a_slow_service_with_a_full_pipeline_is_not_mistaken_for_a_stalled_client() {
    let (node, gate) = GatedNode::new();
    let s = start_with(node.clone(), node.inner.clone(), |c| {
        c.read_timeout_ms = 150;
        c.idle_timeout_ms = 150;
        c.max_inflight_per_connection = 1;
    })
    .await;
    let (addr, metrics) = (s.addr, s.metrics.clone());
    let mut c = Client::connect(addr).await.unwrap();
    let ids: Vec<u64> =
        (0..3).map(|i| c.queue(&Request::Publish(vec![keyed("slow", 1, i, "x")])).unwrap()).collect();
    c.flush().await.unwrap();
    // The service holds the first frame for 4× the read and idle timeouts; the other two wait,
    // complete, in the server's buffer. That is the server's backpressure, not a stalled client.
    tokio::time::sleep(Duration::from_millis(600)).await;
    gate.send(true).unwrap();
    for want in ids {
        let (got, resp) = c.recv().await.unwrap();
        assert_eq!(got, want);
        assert!(matches!(resp, Response::Ack(_)), "{resp:?}");
    }
    assert_eq!(metrics.closed_read_timeout.get() + metrics.closed_idle.get(), 0);
    assert_eq!(node.inner.state().topic_log("slow").len(), 3);
    s.stop().await;
}
