//! Scenario `ingest`: one server node and 200+ client nodes in one simulated network.
//!
//! Clients: well-behaved producers (sequential and pipelined), retriers that drop the connection
//! before reading an ack and resend with the same idempotency keys, legacy senders (TCP and UDP),
//! clients sending each kind of malformed input, clients that stall mid-frame, idle clients,
//! clients whose node vanishes mid-stream, and consumers that page through topics. At the end a new
//! client must still be served, the server must shut down gracefully, and the checkers in
//! [`crate::check`] must pass on the server's log and the recorded history.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use eventstreamcore::client::{Client, ClientError};
use eventstreamcore::config::IngestConfig;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::ingest::IngestServer;
use eventstreamcore::node::{DedupConfig, LocalNode};
use eventstreamcore::rt::{self, NodeClock, NodeRng};
use eventstreamcore::service::{Appended, EventService, FetchReply, ServiceError};
use eventstreamcore::wire::{AckItem, ErrorCode, Request, legacy};
use rand::Rng;
use rand::seq::IndexedRandom;

use super::{Options, RunReport};
use crate::check;
use crate::history::History;
use crate::plans::MutantNotApplicable;
use crate::storm::Reaction;

const TOPICS: &[&str] = &["sensor/temperature", "sensor/pressure", "payment", "audit", "orders"];
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PORT: u16 = 7070;
const UDP_PORT: u16 = 7071;
/// A run acks at least this many events (the final client alone acks one; every seed has producers).
const MIN_ACKS: usize = 10;

/// What a client node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientKind {
    Producer { pipelined: bool },
    Retrier,
    Legacy,
    UdpLegacy,
    Malformed(Malformation),
    Staller,
    Idle,
    Vanisher,
    Consumer,
}

/// The kinds of bad input a malformed client sends (shared with the storm clients).
pub use crate::storm::Malformation;

/// The whole plan of a run, drawn from the seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clients: Vec<ClientKind>,
    pub config: IngestConfig,
    /// (client index, kill time) for vanishing clients.
    pub kills: Vec<(usize, Duration)>,
    /// If set, every publish completes after a random delay up to this many ms (commit latency).
    pub service_delay_ms: Option<u64>,
    pub auth_token: String,
}

impl Plan {
    /// Draws a plan.
    pub fn generate(rng: &mut NodeRng) -> Plan {
        let n = rng.random_range(200..=260);
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let roll = rng.random_range(0..100);
            let kind = match roll {
                0..=19 => ClientKind::Producer { pipelined: false },
                20..=34 => ClientKind::Producer { pipelined: true },
                35..=49 => ClientKind::Retrier,
                50..=56 => ClientKind::Legacy,
                57..=59 => ClientKind::UdpLegacy,
                60..=74 => ClientKind::Malformed(*Malformation::ALL.choose(rng).expect("non-empty")),
                75..=79 => ClientKind::Staller,
                80..=83 => ClientKind::Idle,
                84..=93 => ClientKind::Vanisher,
                _ => ClientKind::Consumer,
            };
            clients.push(kind);
        }
        let kills = clients
            .iter()
            .enumerate()
            .filter(|(_, k)| **k == ClientKind::Vanisher)
            .map(|(i, _)| (i, Duration::from_millis(rng.random_range(100..4000))))
            .collect();
        let auth = rng.random_bool(0.3);
        let config = IngestConfig {
            listen: SocketAddr::new(IpAddr::V4(SERVER_IP), PORT),
            udp_listen: Some(SocketAddr::new(IpAddr::V4(SERVER_IP), UDP_PORT)),
            metrics_listen: None,
            max_connections: *[40usize, 120, 10_000].choose(rng).expect("non-empty"),
            max_frame_bytes: 64 * 1024,
            max_events_per_frame: 16,
            max_inflight_per_connection: *[1usize, 4, 64].choose(rng).expect("non-empty"),
            max_inflight_events: *[16usize, 64, 100_000].choose(rng).expect("non-empty"),
            overload_retry_after_ms: 50,
            idle_timeout_ms: 4_000,
            read_timeout_ms: 2_000,
            write_timeout_ms: 3_000,
            shutdown_grace_ms: 2_000,
            auth_token: if auth { "s3cret".to_string() } else { String::new() },
            allowed_topics: Vec::new(),
            max_fetch_events: 7,
            ..IngestConfig::default()
        };
        // Half the seeds: commits take a while; some of those longer than the read timeout.
        let service_delay_ms = rng.random_bool(0.5).then(|| {
            if rng.random_bool(0.2) { rng.random_range(1_000..=3_000) } else { rng.random_range(1..=40) }
        });
        Plan { clients, kills, service_delay_ms, auth_token: config.auth_token.clone(), config }
    }

    /// A readable one-paragraph description.
    pub fn describe(&self) -> String {
        let mut counts = std::collections::BTreeMap::new();
        for c in &self.clients {
            let name = match c {
                ClientKind::Malformed(m) => format!("malformed:{m:?}"),
                other => format!("{other:?}"),
            };
            *counts.entry(name).or_insert(0) += 1;
        }
        let mut s = format!(
            "{} clients; server max_connections={} max_inflight_events={} pipelining={} auth={} commit_delay_ms={:?}; clients:",
            self.clients.len(),
            self.config.max_connections,
            self.config.max_inflight_events,
            self.config.max_inflight_per_connection,
            !self.auth_token.is_empty(),
            self.service_delay_ms,
        );
        for (k, v) in counts {
            let _ = write!(s, " {k}×{v}");
        }
        let _ = write!(
            s,
            "; {} vanish at {:?}",
            self.kills.len(),
            self.kills.iter().map(|k| k.1).collect::<Vec<_>>()
        );
        s
    }
}

/// A node that stores at call time but completes after a seeded delay, as a replicated node
/// whose commit takes a while — so requests are really in flight, capacity fills up, and legacy
/// connections stall.
#[derive(Clone)]
pub struct DelayedNode<S> {
    inner: S,
    rng: Arc<Mutex<NodeRng>>,
    max_delay_ms: u64,
}

impl<S> DelayedNode<S> {
    /// Wraps `inner`; each publish completes after a delay drawn from `rng` up to `max_delay_ms`.
    pub fn new(inner: S, rng: NodeRng, max_delay_ms: u64) -> Self {
        DelayedNode { inner, rng: Arc::new(Mutex::new(rng)), max_delay_ms }
    }
}

impl<S: EventService + Clone> EventService for DelayedNode<S> {
    fn publish(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Appended>, ServiceError>> + Send + 'static + use<S> {
        let delay =
            Duration::from_millis(self.rng.lock().expect("rng lock").random_range(0..=self.max_delay_ms));
        let fut = self.inner.publish(events);
        async move {
            rt::time::sleep(delay).await;
            fut.await
        }
    }

    fn fetch(
        &self,
        topic: String,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<FetchReply, ServiceError>> + Send + 'static + use<S> {
        self.inner.fetch(topic, offset, max)
    }

    fn node_id(&self) -> u64 {
        self.inner.node_id()
    }
}

/// A server that now and then acks an event it never stores (the `AckBeforeStore` mutant).
#[derive(Clone)]
struct FaultyNode {
    inner: LocalNode,
    rng: Arc<Mutex<NodeRng>>,
}

impl EventService for FaultyNode {
    fn publish(
        &self,
        mut events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Appended>, ServiceError>> + Send + 'static + use<> {
        let lose = events.len() > 1 && self.rng.lock().expect("rng lock").random_bool(0.0005);
        let lost = if lose { events.pop() } else { None };
        let inner = self.inner.clone();
        let fut = inner.publish(events);
        async move {
            let mut out = fut.await?;
            if let Some(e) = lost {
                let end = inner.state().topic_log(&e.topic).len() as u64;
                out.push(Appended { topic: e.topic.as_str().into(), offset: end, duplicate: false });
            }
            Ok(out)
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
        self.inner.node_id()
    }
}

/// Shared context of client tasks.
#[derive(Clone)]
struct Ctx {
    server: SocketAddr,
    token: String,
    history: History,
    read_timeout: Duration,
    idle_timeout: Duration,
    max_frame: usize,
}

/// Runs the scenario inside the current simulator runtime. A mutant that does nothing here
/// (only `ack-before-store` breaks this single server) is refused before anything runs.
pub async fn run(opts: Options) -> Result<RunReport, MutantNotApplicable> {
    crate::plans::mutant_applies("ingest", opts.mutant)?;
    let handle = madsim::runtime::Handle::current();
    let mut rng = rt::node_rng();
    let plan = Plan::generate(&mut rng);
    let description = plan.describe();
    *opts.plan_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(description.clone());
    let history = History::new();
    let node = LocalNode::new(1, NodeClock::new(), DedupConfig::default());
    let server_addr = plan.config.listen;

    // --- server -------------------------------------------------------------------------------
    let server_node = handle.create_node().name("server").ip(IpAddr::V4(SERVER_IP)).build();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    let config = plan.config.clone();
    let service_rng = Arc::new(Mutex::new(rt::rng::split(&mut rng)));
    let server_task = match (opts.mutant, plan.service_delay_ms) {
        (None, None) => start_server(&server_node, config, node.clone(), stop_tx),
        (None, Some(max_delay_ms)) => {
            let delayed = DelayedNode { inner: node.clone(), rng: service_rng, max_delay_ms };
            start_server(&server_node, config, delayed, stop_tx)
        }
        // Ack-before-store, the one mutant that applies here (checked above).
        (Some(_), _) => {
            let faulty = FaultyNode { inner: node.clone(), rng: service_rng };
            start_server(&server_node, config, faulty, stop_tx)
        }
    };
    let ctx = Ctx {
        server: server_addr,
        token: plan.auth_token.clone(),
        history: history.clone(),
        read_timeout: Duration::from_millis(plan.config.read_timeout_ms),
        idle_timeout: Duration::from_millis(plan.config.idle_timeout_ms),
        max_frame: plan.config.max_frame_bytes,
    };

    // --- clients ------------------------------------------------------------------------------
    let mut joins = Vec::new();
    let mut vanish_nodes = Vec::new();
    for (i, kind) in plan.clients.iter().copied().enumerate() {
        let ip = Ipv4Addr::new(10, 1, (i / 200) as u8, (i % 200 + 1) as u8);
        let node = handle.create_node().name(format!("client-{i}")).ip(IpAddr::V4(ip)).build();
        let ctx = ctx.clone();
        let start = Duration::from_millis(rng.random_range(0..1500));
        let task = node.spawn(async move {
            rt::time::sleep(start).await;
            client_main(i, kind, ctx).await;
        });
        if kind == ClientKind::Vanisher {
            vanish_nodes.push(node.id());
        } else {
            joins.push((i, kind, task));
        }
    }
    // Vanishing clients: their node disappears mid-stream.
    let mut kills: Vec<(Duration, madsim::task::NodeId)> =
        plan.kills.iter().zip(&vanish_nodes).map(|((_, at), id)| (*at, *id)).collect();
    kills.sort();
    let t0 = rt::time::now();
    for (at, id) in kills {
        rt::time::sleep_until(t0 + at).await;
        handle.kill(id);
        history.count("vanished");
    }
    for (i, kind, task) in joins {
        if task.await.is_err() {
            history.violation(format!("client {i} ({kind:?}) task failed"));
        }
    }

    // --- the server still serves a new client ---------------------------------------------------
    let final_node =
        handle.create_node().name("final-client").ip(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))).build();
    let fctx = ctx.clone();
    let final_ok = final_node.spawn(async move { final_check(fctx).await }).await.unwrap_or(false);
    if !final_ok {
        history.violation("the server did not serve a new client at the end");
    }

    // --- graceful shutdown completes ---------------------------------------------------------
    let metrics = match stop_rx.recv() {
        Ok((stop, metrics)) => {
            stop();
            Some(metrics)
        }
        Err(_) => None,
    };
    match rt::time::timeout(Duration::from_millis(plan.config.shutdown_grace_ms + 5_000), server_task).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => history.violation("server task failed"),
        Err(_) => history.violation("server did not finish a graceful shutdown in time"),
    }
    // Nothing leaks: every connection closed, every unit of capacity given back. Without the
    // server's metrics these checks cannot run: that is a failure, not a pass.
    if metrics.is_none() {
        history.violation("the server never handed over its metrics: the leak and timeout checks cannot run");
    }
    if let Some(m) = metrics {
        check_server_metrics(&history, &m);
    }

    // --- check -------------------------------------------------------------------------------
    let data = history.snapshot();
    let state = node.state().try_clone().expect("a member's topic files copy to memory");
    let failure = check::check_ingest_run(&data, &state, MIN_ACKS).err().map(|mut f| {
        let excerpt = check::history_excerpt(&data, &state, &f.detail);
        if !excerpt.is_empty() {
            f.detail = format!("{}\nhistory excerpt:{excerpt}", f.detail);
        }
        f
    });
    let mut d = eventstreamcore::node::state::Fnv64::default();
    d.write_u64(state.digest());
    d.write_u64(data.acks.len() as u64);
    for (k, v) in &data.counters {
        d.write(k.as_bytes());
        d.write_u64(*v);
    }
    let summary = format!(
        "{description}\nresult: {} events stored in {} topics, {} acks ({} duplicate), {} legacy sent; counters {:?}",
        state.events_stored(),
        state.topics().count(),
        data.acks.len(),
        data.acks.iter().filter(|a| a.duplicate).count(),
        data.legacy_sent.values().sum::<u64>(),
        data.counters,
    );
    Ok(RunReport::plain(d.finish(), summary, failure))
}

/// After shutdown nothing leaked (connections, capacity), and the server timed out only the
/// clients that earned it.
fn check_server_metrics(history: &History, m: &eventstreamcore::metrics::IngestMetrics) {
    if m.connections_active.get() != 0 {
        history.violation(format!(
            "{} connections still counted active after shutdown",
            m.connections_active.get()
        ));
    }
    if m.inflight_events.get() != 0 {
        history.violation(format!("{} events of capacity leaked after shutdown", m.inflight_events.get()));
    }
    // Timeouts only ever hit the clients that earned them: every staller exactly once as
    // stalled; as idle, every idle client and at most the vanished ones (a node that dies
    // sends no FIN) — never a well-behaved client whose frames merely wait behind the
    // server's own backpressure.
    let counters = history.snapshot().counters;
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    let (stalled, idle, vanished) = (get("stalled"), get("idle"), get("vanished"));
    let (read_timeouts, idle_timeouts) = (m.closed_read_timeout.get(), m.closed_idle.get());
    if read_timeouts != stalled || idle_timeouts < idle || idle_timeouts > idle + vanished {
        history.violation(format!(
            "server timed out {read_timeouts} connections as stalled and {idle_timeouts} as idle; \
             clients that stalled: {stalled}, idled: {idle}, vanished: {vanished}"
        ));
    }
}

type StopFn = (Box<dyn FnOnce() + Send>, Arc<eventstreamcore::metrics::IngestMetrics>);

fn start_server<S: EventService>(
    node: &madsim::runtime::NodeHandle,
    config: IngestConfig,
    service: S,
    stop_tx: std::sync::mpsc::Sender<StopFn>,
) -> madsim::task::JoinHandle<()> {
    node.spawn(async move {
        let server = IngestServer::bind(config, service, NodeClock::new(), "sim-server")
            .await
            .expect("the simulated server binds its address");
        let stop = server.shutdown_handle();
        let _ = stop_tx.send((Box::new(move || stop.shutdown()), server.metrics()));
        server.run().await;
    })
}

/// Connects and says HELLO, retrying while the server is unreachable or full. `None` if it
/// never got in.
async fn connect(ctx: &Ctx, rng: &mut NodeRng) -> Option<Client> {
    let mut backoff = Duration::from_millis(20);
    for _ in 0..80 {
        if let Ok(stream) = rt::net::TcpStream::connect(ctx.server).await {
            let mut c = Client::from_stream(stream);
            c.set_timeout(Duration::from_secs(10));
            match c.hello("sim", &ctx.token).await {
                Ok(_) => return Some(c),
                Err(ClientError::Server(e)) if e.code == ErrorCode::Overloaded => {
                    ctx.history.count("refused_full");
                }
                Err(_) => {}
            }
        }
        let jitter = rng.random_range(0..=backoff.as_millis() as u64 / 2);
        rt::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    ctx.history.count("gave_up_connecting");
    None
}

fn keyed_event(producer: u64, seq: u64, rng: &mut NodeRng) -> Event {
    let topic = *TOPICS.choose(rng).expect("non-empty");
    let priority = Priority::from_u8(rng.random_range(0..=4)).expect("0..=4");
    let mut e = Event::new(topic, priority, format!("{producer}:{seq}:{}", rng.random::<u32>()).into_bytes());
    e.producer_id = producer;
    e.sequence = seq;
    e
}

/// Publishes one frame until it is acked, reconnecting and resending the same keys as needed.
/// `drop_prob`: chance of deliberately dropping the connection before reading the ack.
async fn publish_until_acked(
    ctx: &Ctx,
    name: &str,
    conn: &mut Option<Client>,
    events: &[Event],
    rng: &mut NodeRng,
    drop_prob: f64,
) -> bool {
    // Patient like a real producer: keep the same keys and retry for up to two simulated
    // minutes, honouring the server's retry-after and backing off with jitter.
    let give_up = rt::time::now() + Duration::from_secs(120);
    let mut backoff = Duration::from_millis(10);
    while rt::time::now() < give_up {
        if conn.is_none() {
            *conn = connect(ctx, rng).await;
            if conn.is_none() {
                return false;
            }
        }
        let c = conn.as_mut().expect("connected above");
        if drop_prob > 0.0 && rng.random_bool(drop_prob) {
            // Send, then vanish before the ack: the retry must get the same offsets back.
            if c.queue(&Request::Publish(events.to_vec())).is_ok() && c.flush().await.is_ok() {
                ctx.history.count("dropped_before_ack");
            }
            *conn = None;
            rt::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            continue;
        }
        match c.publish(events.to_vec()).await {
            Ok(items) => {
                ctx.history.record_acks(name, events, &items);
                return true;
            }
            Err(ClientError::Server(e)) if e.code == ErrorCode::Overloaded => {
                ctx.history.count("overloaded");
                let jitter = Duration::from_millis(rng.random_range(0..=backoff.as_millis() as u64));
                let wait = Duration::from_millis(u64::from(e.retry_after_ms)).max(backoff) + jitter;
                rt::time::sleep(wait).await;
                // Capped well below the idle timeout: a retrying client is not an idle one.
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(ClientError::Server(e)) => {
                ctx.history.violation(format!("{name}: valid publish refused: {e}"));
                return false;
            }
            Err(_) => {
                ctx.history.count("reconnect");
                *conn = None;
            }
        }
    }
    ctx.history.count("gave_up_publishing");
    false
}

async fn client_main(i: usize, kind: ClientKind, ctx: Ctx) {
    tracing::debug!(client = i, ?kind, "client starts");
    let mut rng = rt::node_rng();
    let name = format!("client-{i}");
    let producer = 1_000 + i as u64;
    match kind {
        ClientKind::Producer { pipelined: false } | ClientKind::Retrier | ClientKind::Vanisher => {
            let drop_prob = if kind == ClientKind::Retrier { 0.4 } else { 0.0 };
            let frames = if kind == ClientKind::Vanisher { 1000 } else { rng.random_range(1..=6) };
            let mut conn = connect(&ctx, &mut rng).await;
            let mut seq = 1;
            for _ in 0..frames {
                let n = rng.random_range(1..=8);
                let events: Vec<Event> = (0..n).map(|k| keyed_event(producer, seq + k, &mut rng)).collect();
                seq += n;
                for e in &events {
                    ctx.history.published(e);
                }
                if !publish_until_acked(&ctx, &name, &mut conn, &events, &mut rng, drop_prob).await {
                    return;
                }
                if kind == ClientKind::Vanisher {
                    rt::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
                }
            }
        }
        ClientKind::Producer { pipelined: true } => {
            let Some(mut c) = connect(&ctx, &mut rng).await else {
                return;
            };
            let mut seq = 1;
            let frames: Vec<Vec<Event>> = (0..rng.random_range(2..=6))
                .map(|_| {
                    let n = rng.random_range(1..=8);
                    let f: Vec<Event> = (0..n).map(|k| keyed_event(producer, seq + k, &mut rng)).collect();
                    seq += n;
                    f
                })
                .collect();
            for e in frames.iter().flatten() {
                ctx.history.published(e);
            }
            // Pipelined producers may see later frames stored before a refused earlier one is
            // resent; they are exempt from the order check (see docs/protocol.md, Ordering).
            ctx.history.count("pipelined_producers");
            ctx.history.unordered(producer);
            let result = c.publish_pipelined(frames.clone()).await;
            let mut conn = Some(c);
            match result {
                Ok(replies) => {
                    for (events, reply) in frames.iter().zip(replies) {
                        match reply {
                            Ok(items) => {
                                ctx.history.record_acks(&name, events, &items);
                            }
                            Err(_) => {
                                ctx.history.count("pipelined_retry");
                                if !publish_until_acked(&ctx, &name, &mut conn, events, &mut rng, 0.0).await {
                                    return;
                                }
                            }
                        }
                    }
                }
                Err(_) => {
                    // Connection trouble: resend every frame with the same keys.
                    conn = None;
                    for events in &frames {
                        if !publish_until_acked(&ctx, &name, &mut conn, events, &mut rng, 0.0).await {
                            return;
                        }
                    }
                }
            }
        }
        ClientKind::Legacy => {
            let Ok(stream) = rt::net::connect_with_retry(
                ctx.server,
                20,
                Duration::from_millis(20),
                Duration::from_secs(1),
            )
            .await
            else {
                return;
            };
            let mut c = Client::from_stream(stream);
            for k in 0..rng.random_range(1..=10) {
                let topic = *TOPICS.choose(&mut rng).expect("non-empty");
                let payload = format!("legacy:{i}:{k}");
                ctx.history.legacy_sent(topic, payload.as_bytes());
                let p = Priority::from_u8(rng.random_range(0..=4)).expect("0..=4");
                if c.send_legacy(p, topic, payload.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        ClientKind::UdpLegacy => {
            let local =
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, (i / 200) as u8, (i % 200 + 1) as u8)), 9000);
            let Ok(sock) = rt::net::UdpSocket::bind(local).await else {
                return;
            };
            let udp = SocketAddr::new(ctx.server.ip(), UDP_PORT);
            for k in 0..rng.random_range(1..=5) {
                let topic = *TOPICS.choose(&mut rng).expect("non-empty");
                let payload = format!("udp:{i}:{k}");
                ctx.history.legacy_sent(topic, payload.as_bytes());
                let frame = legacy::encode_to_vec(Priority::Low, topic, payload.as_bytes());
                let _ = sock.send_to(&frame, udp).await;
                // And one malformed datagram now and then.
                if rng.random_bool(0.3) {
                    let _ = sock.send_to(&[0, 0, 0, 9, 1, 2], udp).await;
                }
                rt::time::sleep(Duration::from_millis(rng.random_range(1..100))).await;
            }
        }
        ClientKind::Malformed(m) => malformed(&ctx, &name, producer, m, &mut rng).await,
        ClientKind::Staller => {
            let Some(mut c) = connect(&ctx, &mut rng).await else {
                return;
            };
            let mut frame = BytesMut::new();
            Request::Publish(vec![keyed_event(producer, 1, &mut rng)]).encode(1, &mut frame);
            let half = frame.len() / 2;
            if c.send_raw(&frame[..half]).await.is_err() {
                return;
            }
            ctx.history.count("stalled");
            if !c.wait_closed(ctx.read_timeout * 2 + Duration::from_secs(1)).await {
                ctx.history.violation(format!("{name}: stalled mid-frame but the server never dropped it"));
            }
        }
        ClientKind::Idle => {
            let Some(mut c) = connect(&ctx, &mut rng).await else {
                return;
            };
            ctx.history.count("idle");
            if !c.wait_closed(ctx.idle_timeout * 2 + Duration::from_secs(1)).await {
                ctx.history.violation(format!("{name}: idle but the server never closed it"));
            }
        }
        ClientKind::Consumer => {
            for _ in 0..5 {
                rt::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
                let Some(mut c) = connect(&ctx, &mut rng).await else {
                    return;
                };
                let topic = *TOPICS.choose(&mut rng).expect("non-empty");
                let mut offset = 0;
                for _page in 0..10 {
                    let page = match c.fetch(topic, offset, 7).await {
                        Ok(p) => p,
                        Err(_) => break,
                    };
                    for (k, s) in page.events.iter().enumerate() {
                        if s.offset != offset + k as u64 {
                            ctx.history.violation(format!(
                                "{name}: fetch from {offset} got offset {} at position {k}",
                                s.offset
                            ));
                        }
                    }
                    if page.events.is_empty() {
                        break;
                    }
                    ctx.history.count("fetched_pages");
                    offset = page.next_offset;
                }
            }
        }
    }
}

/// Sends one kind of bad input and checks the server's reaction, then (where the connection
/// survives) that the same connection still serves a valid publish.
async fn malformed(ctx: &Ctx, name: &str, producer: u64, m: Malformation, rng: &mut NodeRng) {
    let valid = || {
        let mut e = Event::new("audit", Priority::Low, format!("after-{name}").into_bytes());
        e.producer_id = producer;
        e.sequence = 1;
        e
    };
    // The same connection must still answer (framing intact), and a valid publish must get in
    // (patiently: under load the server may say "overloaded" for a while).
    let still_serves = |mut c: Client, ctx: Ctx, name: String| async move {
        if let Err(e) = c.ping().await {
            ctx.history
                .violation(format!("{name}: the connection stopped serving after malformed input: {e}"));
            return;
        }
        let e = valid();
        ctx.history.published(&e);
        let mut conn = Some(c);
        publish_until_acked(&ctx, &name, &mut conn, &[e], &mut rt::node_rng(), 0.0).await;
    };
    match m {
        Malformation::Garbage => {
            let Ok(stream) = rt::net::connect_with_retry(
                ctx.server,
                20,
                Duration::from_millis(20),
                Duration::from_secs(1),
            )
            .await
            else {
                return;
            };
            let mut c = Client::from_stream(stream);
            let _ = c.send_raw(&m.bytes(0, rng)).await;
            ctx.history.count("garbage");
        }
        Malformation::UnauthorizedNoHello => {
            if ctx.token.is_empty() {
                return;
            }
            let Ok(stream) = rt::net::connect_with_retry(
                ctx.server,
                20,
                Duration::from_millis(20),
                Duration::from_secs(1),
            )
            .await
            else {
                return;
            };
            let mut c = Client::from_stream(stream);
            // Publishing without HELLO must be refused, and nothing stored.
            let mut e = valid();
            e.sequence = 999;
            match c.publish(vec![e]).await {
                Err(ClientError::Server(err))
                    if matches!(err.code, ErrorCode::Unauthorized | ErrorCode::Overloaded) => {}
                other => {
                    ctx.history.violation(format!("{name}: publish without HELLO answered with {other:?}"))
                }
            }
            let _ = c.send_legacy(Priority::High, "audit", b"legacy-without-auth").await;
        }
        // The rest have a prescribed reaction: send on a HELLO'd connection, check the answer.
        Malformation::BadLegacyBody
        | Malformation::BadChecksum
        | Malformation::Oversized
        | Malformation::EmptyFlood
        | Malformation::WrongDirection => {
            let Some(mut c) = connect(ctx, rng).await else {
                return;
            };
            match m.provoke(&mut c, ctx.max_frame as u32, Duration::from_secs(5), rng).await {
                Reaction::SendFailed => {}
                Reaction::AsExpected { open } => {
                    if m == Malformation::BadLegacyBody {
                        ctx.history.count("malformed_legacy");
                    }
                    if open {
                        still_serves(c, ctx.clone(), name.to_string()).await;
                    }
                }
                r => ctx.history.violation(format!("{name}: {}", r.problem().unwrap_or_default())),
            }
        }
    }
}

/// A brand-new client at the end: connects, publishes, reads its event back.
async fn final_check(ctx: Ctx) -> bool {
    let mut rng = rt::node_rng();
    let Some(mut c) = connect(&ctx, &mut rng).await else {
        return false;
    };
    let mut e = Event::new("final", Priority::Critical, "still serving");
    e.producer_id = 999_999;
    e.sequence = 1;
    ctx.history.published(&e);
    let items = match c.publish(vec![e.clone()]).await {
        Ok(items) => items,
        Err(_) => return false,
    };
    ctx.history.record_acks("final-client", std::slice::from_ref(&e), &items);
    let Some(AckItem::Stored { offset, .. }) = items.first() else {
        return false;
    };
    match c.fetch("final", *offset, 1).await {
        Ok(page) => page.events.first().is_some_and(|s| s.event.payload == e.payload),
        Err(_) => false,
    }
}
