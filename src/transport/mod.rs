//! The peer transport: carries Raft [`Message`]s between nodes over authenticated TCP.
//!
//! * **One outbound connection per peer.** This node sends to a peer only on the connection it
//!   opened; the peer's messages to us arrive on the connection *it* opened, which we accept.
//! * **Sending never blocks.** [`PeerTransport::send`] queues on the peer's bounded queue; when it
//!   is full, or the peer is unknown, the message is dropped and counted (Raft retransmits).
//! * **Pipelining.** A peer's sender task drains everything queued into one buffer of frames,
//!   writes it and flushes (simulated TCP sends nothing before a flush), within
//!   `write_timeout_ms`; a stuck peer loses the connection and is redialled.
//! * **Reconnects** use jittered exponential backoff (`connect_backoff_min_ms` doubling up to
//!   `connect_backoff_max_ms`, each sleep drawn uniformly from the upper half of the current step,
//!   jitter from the node's RNG).
//! * **Authentication**: a mutual SPAKE2 handshake with key confirmation (see [`handshake`]) within
//!   `handshake_timeout_ms`; nothing from an unauthenticated connection reaches the [`Inbox`], and a
//!   message whose `from` is not the authenticated peer is dropped.
//! * **Boundary checks**: a message with values no honest node sends (a term or index beyond
//!   [`super::types::MAX_TERM`]/[`super::types::MAX_INDEX`], entries out of sequence; see
//!   [`Message::check_bounds`]) is logged, counted in `invalid_messages`, and closes the connection.
//! * **Frames** (see [`frame`]): one [`crate::record`] each (`u32` length, `u32` CRC32C, both
//!   little-endian), holding the [`Message`] codec bytes. A bad frame
//!   closes that connection and is counted; it never panics.
//!
//! All timers (backoff, handshake and write timeouts) sleep on the node's [`NodeClock`] (its
//! monotonic reading, never the wall clock), so a simulated clock drift slows or speeds the
//! transport exactly like the node's other protocol timers. Shutdown is explicit
//! ([`PeerTransport::shutdown`]); dropping the last handle also stops every task.

pub mod frame;
pub mod handshake;
#[cfg(madsim)]
pub mod lossy;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rand::Rng;

use self::frame::{FrameError, decode_frame, encode_frame};
use self::handshake::{HandshakeError, Local, MAX_CLUSTER_ID_LEN, NONCE_LEN};
use crate::raft::message::Message;
use crate::raft::types::NodeId;
use crate::rt::io::{AsyncReadExt, AsyncWriteExt};
use crate::rt::net::{TcpListener, TcpStream};
use crate::rt::sync::{Latch, Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use crate::rt::{self, NodeClock, NodeRng};
use crate::tls::MaybeTls;

/// Inbound connections (authenticated or still in the handshake) served at once; more are closed
/// on accept. Unauthenticated ones last at most `handshake_timeout_ms`.
pub const MAX_INBOUND_CONNECTIONS: usize = 256;

/// Bytes read from a peer connection per read call.
const READ_CHUNK: usize = 64 * 1024;

/// The inbox holds this many messages per `queue_per_peer`; when it is full, connections stop
/// reading (TCP backpressure) until the driver catches up.
const INBOX_FACTOR: usize = 4;

/// Transport settings. Build with [`TransportConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Peers must present the same cluster id (at most 255 bytes).
    pub cluster_id: String,
    /// Shared secret every node of the cluster knows; proves membership in the handshake.
    pub secret: String,
    /// First reconnect backoff step.
    pub connect_backoff_min_ms: u64,
    /// Largest reconnect backoff step.
    pub connect_backoff_max_ms: u64,
    /// Limit for TCP connect, and separately for the handshake, of one attempt.
    pub handshake_timeout_ms: u64,
    /// Limit for writing and flushing one batch to a peer.
    pub write_timeout_ms: u64,
    /// Messages queued per peer before `send` drops.
    pub queue_per_peer: usize,
    /// Largest frame payload accepted or sent.
    pub max_frame_bytes: usize,
    /// TLS under the handshake on every peer connection (`[cluster.tls]`); none = plain TCP.
    pub tls: Option<crate::tls::PeerTls>,
}

impl TransportConfig {
    /// Defaults: backoff 20 ms → 1 s, handshake and write timeouts 2 s, 1024 queued messages per
    /// peer, 16 MiB frames.
    pub fn new(node_id: NodeId, cluster_id: impl Into<String>, secret: impl Into<String>) -> Self {
        TransportConfig {
            node_id,
            cluster_id: cluster_id.into(),
            secret: secret.into(),
            connect_backoff_min_ms: 20,
            connect_backoff_max_ms: 1_000,
            handshake_timeout_ms: 2_000,
            write_timeout_ms: 2_000,
            queue_per_peer: 1024,
            max_frame_bytes: 16 << 20,
            tls: None,
        }
    }

    /// Checks the settings; `bind` refuses invalid ones.
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return Err(format!(
                "cluster_id is {} bytes; at most {MAX_CLUSTER_ID_LEN}",
                self.cluster_id.len()
            ));
        }
        if self.connect_backoff_min_ms == 0 || self.connect_backoff_min_ms > self.connect_backoff_max_ms {
            return Err(format!(
                "connect backoff must satisfy 0 < min ({}) <= max ({})",
                self.connect_backoff_min_ms, self.connect_backoff_max_ms
            ));
        }
        if self.handshake_timeout_ms == 0 || self.write_timeout_ms == 0 {
            return Err("handshake_timeout_ms and write_timeout_ms must be positive".into());
        }
        if self.queue_per_peer == 0 {
            return Err("queue_per_peer must be positive".into());
        }
        if self.max_frame_bytes < 64 || u32::try_from(self.max_frame_bytes).is_err() {
            return Err(format!("max_frame_bytes {} outside 64..=u32::MAX", self.max_frame_bytes));
        }
        Ok(())
    }
}

/// Counters since `bind`. Read with [`PeerTransport::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages written and flushed to a peer.
    pub sent: u64,
    /// Messages from authenticated peers handed to the inbox.
    pub received: u64,
    /// Outgoing messages dropped: queue full, unknown peer, too large, or lost with a failed write.
    pub dropped: u64,
    /// Incoming messages dropped because `from` was not the authenticated peer or `to` not us.
    pub rejected: u64,
    /// Incoming messages with values no honest node sends (a term or index beyond the ceiling,
    /// entries out of sequence: [`Message::check_bounds`]); each closed its connection.
    pub invalid_messages: u64,
    /// Outbound connections established (handshake done).
    pub connects: u64,
    /// Of those, the ones after a peer's first.
    pub reconnects: u64,
    /// TCP connects that failed or timed out.
    pub connect_failures: u64,
    /// Handshakes that failed, either direction (wrong secret or cluster, garbage, timeout).
    pub handshake_failures: u64,
    /// Frames refused (bad length, checksum or message); each closed its connection.
    pub bad_frames: u64,
    /// Outbound batches that did not flush within `write_timeout_ms`.
    pub write_timeouts: u64,
    /// Inbound connections that authenticated.
    pub accepted: u64,
    /// Inbound connections closed on accept because [`MAX_INBOUND_CONNECTIONS`] were open.
    pub refused: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    invalid_messages: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    handshake_failures: AtomicU64,
    bad_frames: AtomicU64,
    write_timeouts: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> TransportStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            sent: g(&self.sent),
            received: g(&self.received),
            dropped: g(&self.dropped),
            rejected: g(&self.rejected),
            invalid_messages: g(&self.invalid_messages),
            connects: g(&self.connects),
            reconnects: g(&self.reconnects),
            connect_failures: g(&self.connect_failures),
            handshake_failures: g(&self.handshake_failures),
            bad_frames: g(&self.bad_frames),
            write_timeouts: g(&self.write_timeouts),
            accepted: g(&self.accepted),
            refused: g(&self.refused),
        }
    }
}

/// Reads a transport's counters; unlike a [`PeerTransport`] handle it does not keep the
/// transport running.
#[derive(Clone)]
pub struct StatsReader(Arc<Shared>);

impl StatsReader {
    /// The counters so far.
    pub fn stats(&self) -> TransportStats {
        self.0.counters.snapshot()
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A known peer: where to dial it and its sender task's queue.
struct Peer {
    addr: String,
    tx: mpsc::Sender<Message>,
    stop: Arc<Latch>,
}

/// An authenticated inbound connection, so a newer one from the same peer can retire it.
struct Inbound {
    conn: u64,
    stop: Arc<Latch>,
}

struct Shared {
    cfg: TransportConfig,
    clock: NodeClock,
    local_addr: SocketAddr,
    counters: Counters,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    inbound: Mutex<BTreeMap<NodeId, Inbound>>,
    unreachable: Mutex<BTreeSet<NodeId>>,
    rng: Mutex<NodeRng>,
    shutdown: Latch,
    /// Tasks still running (sender, accept and connection tasks).
    live: AtomicU64,
    all_done: Notify,
}

/// A poisoned lock only means a task panicked mid-update of plain data; keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn id(&self) -> NodeId {
        self.cfg.node_id
    }

    fn mark_unreachable(&self, peer: NodeId) {
        lock(&self.unreachable).insert(peer);
    }

    fn fresh(&self) -> Fresh {
        Fresh::draw(&mut lock(&self.rng))
    }

    fn local<'a>(&'a self, fresh: Fresh) -> Local<'a> {
        Local {
            node_id: self.cfg.node_id,
            cluster_id: self.cfg.cluster_id.as_bytes(),
            secret: self.cfg.secret.as_bytes(),
            nonce: fresh.nonce,
            pake_seed: fresh.pake_seed,
        }
    }

    /// Runs `fut` for at most `ms` on the node's clock.
    async fn within<F: Future>(&self, ms: u64, fut: F) -> Option<F::Output> {
        rt::select! {
            biased;
            out = fut => Some(out),
            _ = self.clock.sleep(Duration::from_millis(ms)) => None,
        }
    }

    /// Completes when the transport shuts down or `stop` is set.
    async fn stopped(&self, stop: &Latch) {
        rt::select! {
            biased;
            _ = self.shutdown.wait() => {}
            _ = stop.wait() => {}
        }
    }
}

/// The randomness of one handshake, drawn from the node RNG.
#[derive(Clone, Copy)]
struct Fresh {
    nonce: [u8; NONCE_LEN],
    pake_seed: [u8; 32],
}

impl Fresh {
    /// One 32-byte draw, as the nonce alone took before SPAKE2 (so the node RNG's stream, and
    /// with it every simulated run's backoff jitter, stays as it was). The public nonce and the
    /// secret scalar seed are derived from it with SHA-256 under distinct labels: seeing the
    /// nonce reveals nothing about the seed.
    fn draw(rng: &mut NodeRng) -> Fresh {
        use sha2::{Digest, Sha256};
        let mut draw = [0u8; 32];
        rng.fill(&mut draw);
        let derive = |label: &[u8]| -> [u8; 32] {
            Sha256::new().chain_update(label).chain_update(draw).finalize().into()
        };
        Fresh {
            nonce: derive(b"esc-raft-transport/v2/nonce"),
            pake_seed: derive(b"esc-raft-transport/v2/pake-seed"),
        }
    }
}

/// Spawns a task counted in `live`, so `shutdown` can wait for it to be gone.
fn spawn_tracked<F: Future<Output = ()> + Send + 'static>(shared: &Arc<Shared>, fut: F) {
    shared.live.fetch_add(1, Ordering::SeqCst);
    let guard = LiveGuard(shared.clone());
    rt::spawn(async move {
        let _guard = guard;
        fut.await;
    });
}

struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.all_done.notify_waiters();
        }
    }
}

/// Stops everything when the last [`PeerTransport`] handle is dropped.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shutdown.set();
    }
}

/// Handle to a node's peer transport. Cheap to clone.
#[derive(Clone)]
pub struct PeerTransport {
    owner: Arc<Owner>,
}

/// Messages from authenticated peers, in arrival order per peer.
pub struct Inbox {
    rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
}

impl Inbox {
    /// The next message; `None` once the transport has shut down and the inbox is drained.
    pub async fn recv(&mut self) -> Option<Message> {
        rt::select! {
            biased;
            m = self.rx.recv() => m,
            _ = self.shared.shutdown.wait() => self.rx.try_recv().ok(),
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

impl PeerTransport {
    /// Binds the peer listener and starts accepting; incoming messages (from authenticated peers
    /// only) go to the [`Inbox`]. The RNG provides handshake nonces and backoff jitter.
    pub async fn bind(
        cfg: TransportConfig,
        listen: SocketAddr,
        clock: NodeClock,
        rng: NodeRng,
    ) -> std::io::Result<(PeerTransport, Inbox)> {
        cfg.validate().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let (inbox_tx, inbox_rx) = mpsc::channel(cfg.queue_per_peer.saturating_mul(INBOX_FACTOR));
        let shared = Arc::new(Shared {
            cfg,
            clock,
            local_addr,
            counters: Counters::default(),
            peers: Mutex::new(BTreeMap::new()),
            inbound: Mutex::new(BTreeMap::new()),
            unreachable: Mutex::new(BTreeSet::new()),
            rng: Mutex::new(rng),
            shutdown: Latch::new(),
            live: AtomicU64::new(0),
            all_done: Notify::new(),
        });
        tracing::info!(node = shared.id(), addr = %local_addr, "peer transport listening");
        spawn_tracked(&shared, accept_loop(shared.clone(), listener, inbox_tx));
        Ok((
            PeerTransport { owner: Arc::new(Owner { shared: shared.clone() }) },
            Inbox { rx: inbox_rx, shared },
        ))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// The address the peer listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// Adds or re-addresses a peer (address `"host:port"`) and starts its sender task. A new
    /// address replaces the connection and drops what was queued for the old one.
    pub fn set_peer(&self, id: NodeId, addr: String) {
        let shared = self.shared();
        if id == shared.id() || shared.shutdown.is_set() {
            return;
        }
        let mut peers = lock(&shared.peers);
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        if let Some(old) = peers.remove(&id) {
            old.stop.set();
        }
        let (tx, rx) = mpsc::channel(shared.cfg.queue_per_peer);
        let stop = Arc::new(Latch::new());
        let rng = rt::rng::split(&mut lock(&shared.rng));
        tracing::debug!(node = shared.id(), peer = id, addr = %addr, "peer set");
        spawn_tracked(shared, run_peer(shared.clone(), id, addr.clone(), rx, stop.clone(), rng));
        peers.insert(id, Peer { addr, tx, stop });
    }

    /// Forgets a peer: stops its sender task and drops what was queued for it.
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(old) = lock(&self.shared().peers).remove(&id) {
            old.stop.set();
        }
    }

    /// Never blocks: queues `msg` for `msg.to`. When that peer's queue is full or the peer is
    /// unknown the message is dropped and counted (Raft retransmits).
    pub fn send(&self, msg: Message) {
        let shared = self.shared();
        let queued = match lock(&shared.peers).get(&msg.to) {
            Some(p) if !shared.shutdown.is_set() => match p.tx.try_send(msg) {
                Ok(()) => true,
                Err(_full_or_closed) => {
                    #[cfg(madsim)]
                    if matches!(_full_or_closed, mpsc::error::TrySendError::Full(_)) {
                        lossy::note_queue_full();
                    }
                    false
                }
            },
            _ => false,
        };
        if !queued {
            bump(&shared.counters.dropped, 1);
        }
    }

    /// Peers whose connection failed since the last call (for `Raft::report_unreachable`), in id
    /// order.
    pub fn take_unreachable(&self) -> Vec<NodeId> {
        std::mem::take(&mut *lock(&self.shared().unreachable)).into_iter().collect()
    }

    /// The counters so far.
    pub fn stats(&self) -> TransportStats {
        self.shared().counters.snapshot()
    }

    /// Reads the counters later without keeping the transport running (for `/metrics`).
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.shared().clone())
    }

    /// Tasks (sender, accept and connection tasks) still running; 0 after `shutdown`.
    pub fn live_tasks(&self) -> u64 {
        self.shared().live.load(Ordering::SeqCst)
    }

    /// Stops all tasks and closes every socket (the listener included); returns when they are
    /// gone. Later `send`s are dropped; the inbox yields what it holds, then `None`.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.shutdown.set();
        lock(&shared.peers).clear();
        loop {
            let done = shared.all_done.notified();
            let mut done = std::pin::pin!(done);
            done.as_mut().enable();
            if shared.live.load(Ordering::SeqCst) == 0 {
                break;
            }
            done.await;
        }
        tracing::info!(node = shared.id(), "peer transport stopped");
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound: one sender task per peer
// ---------------------------------------------------------------------------------------------

/// Why a dial failed.
enum DialError {
    Connect(String),
    Handshake(HandshakeError),
}

async fn dial(shared: &Shared, peer: NodeId, addr: &str, fresh: Fresh) -> Result<MaybeTls, DialError> {
    let connect = TcpStream::connect(addr);
    let tcp = match shared.within(shared.cfg.handshake_timeout_ms, connect).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(DialError::Connect(e.to_string())),
        None => return Err(DialError::Connect("connect timed out".into())),
    };
    let _ = tcp.set_nodelay(true);
    let mut stream = match &shared.cfg.tls {
        None => MaybeTls::Plain(tcp),
        Some(tls) => match shared.within(shared.cfg.handshake_timeout_ms, tls.connect(addr, tcp)).await {
            Some(Ok(s)) => s,
            // `[cluster.tls]`: the TLS handshake under ours failed (certificate, name).
            Some(Err(e)) => return Err(DialError::Handshake(HandshakeError::Io(e))),
            None => return Err(DialError::Handshake(HandshakeError::Timeout)),
        },
    };
    let local = shared.local(fresh);
    match shared.within(shared.cfg.handshake_timeout_ms, handshake::dial(&mut stream, &local, peer)).await {
        Some(Ok(())) => Ok(stream),
        Some(Err(e)) => Err(DialError::Handshake(e)),
        None => Err(DialError::Handshake(HandshakeError::Timeout)),
    }
}

/// How a connection's pump ended.
enum PumpEnd {
    /// The peer was removed or re-addressed, or the transport shut down.
    Stopped,
    /// The connection broke; redial.
    Broken(String),
}

/// A uniformly drawn sleep from the upper half of `step_ms` ("equal jitter").
fn jittered(rng: &mut NodeRng, step_ms: u64) -> Duration {
    let lo = step_ms.div_ceil(2);
    Duration::from_millis(rng.random_range(lo..=step_ms.max(lo)))
}

async fn run_peer(
    shared: Arc<Shared>,
    peer: NodeId,
    addr: String,
    mut rx: mpsc::Receiver<Message>,
    stop: Arc<Latch>,
    mut rng: NodeRng,
) {
    let cfg = &shared.cfg;
    let c = &shared.counters;
    let node = shared.id();
    let mut step = cfg.connect_backoff_min_ms;
    let mut ever_connected = false;
    let mut failures_in_row = 0u32;
    let mut buf = Vec::new();
    loop {
        if shared.shutdown.is_set() || stop.is_set() {
            break;
        }
        let fresh = Fresh::draw(&mut rng);
        let dialed = rt::select! {
            biased;
            _ = shared.stopped(&stop) => break,
            r = dial(&shared, peer, &addr, fresh) => r,
        };
        let pause = match dialed {
            Ok(mut stream) => {
                bump(&c.connects, 1);
                if ever_connected {
                    bump(&c.reconnects, 1);
                }
                ever_connected = true;
                failures_in_row = 0;
                step = cfg.connect_backoff_min_ms;
                tracing::debug!(node, peer, addr = %addr, "connected to peer");
                match pump(&shared, peer, &mut stream, &mut rx, &stop, &mut buf).await {
                    PumpEnd::Stopped => break,
                    PumpEnd::Broken(why) => {
                        shared.mark_unreachable(peer);
                        tracing::info!(node, peer, addr = %addr, reason = %why, "peer connection lost");
                        // Do not spin on a peer that accepts and drops at once.
                        jittered(&mut rng, cfg.connect_backoff_min_ms)
                    }
                }
            }
            Err(e) => {
                let (kind, reason) = match e {
                    DialError::Connect(e) => {
                        bump(&c.connect_failures, 1);
                        ("connect", e)
                    }
                    DialError::Handshake(e) => {
                        bump(&c.handshake_failures, 1);
                        ("handshake", e.to_string())
                    }
                };
                shared.mark_unreachable(peer);
                if failures_in_row == 0 {
                    tracing::warn!(node, peer, addr = %addr, kind, reason = %reason, "cannot reach peer; retrying with backoff");
                } else {
                    tracing::debug!(node, peer, addr = %addr, kind, reason = %reason, attempt = failures_in_row + 1, "peer still unreachable");
                }
                failures_in_row = failures_in_row.saturating_add(1);
                let pause = jittered(&mut rng, step);
                step = step.saturating_mul(2).min(cfg.connect_backoff_max_ms);
                pause
            }
        };
        rt::select! {
            biased;
            _ = shared.stopped(&stop) => break,
            _ = shared.clock.sleep(pause) => {}
        }
    }
    // Whatever is still queued is lost with the task.
    rx.close();
    let mut lost = 0;
    while rx.try_recv().is_ok() {
        lost += 1;
    }
    bump(&c.dropped, lost);
}

/// Sends queued messages on an established connection until it breaks or the task is stopped.
async fn pump(
    shared: &Shared,
    peer: NodeId,
    stream: &mut MaybeTls,
    rx: &mut mpsc::Receiver<Message>,
    stop: &Latch,
    buf: &mut Vec<u8>,
) -> PumpEnd {
    let cfg = &shared.cfg;
    let c = &shared.counters;
    let mut probe = [0u8; 64];
    loop {
        // The peer never writes on our connection after the handshake: a read completes only on
        // close, error or a protocol violation, which all end the connection.
        let first = rt::select! {
            biased;
            _ = shared.stopped(stop) => return PumpEnd::Stopped,
            r = stream.read(&mut probe) => {
                return PumpEnd::Broken(match r {
                    Ok(0) => "closed by peer".into(),
                    Ok(_) => "peer wrote on an outbound connection".into(),
                    Err(e) => e.to_string(),
                });
            }
            m = rx.recv() => match m {
                Some(m) => m,
                None => return PumpEnd::Stopped,
            },
        };
        let batch = encode_batch(shared, peer, first, rx, buf);
        if batch == 0 {
            continue;
        }
        let write = async {
            #[cfg(madsim)]
            lossy::stall(shared.id(), peer).await;
            stream.write_all(buf).await?;
            stream.flush().await
        };
        let written = rt::select! {
            biased;
            _ = shared.stopped(stop) => {
                bump(&c.dropped, batch);
                return PumpEnd::Stopped;
            }
            r = shared.within(cfg.write_timeout_ms, write) => r,
        };
        match written {
            Some(Ok(())) => bump(&c.sent, batch),
            Some(Err(e)) => {
                bump(&c.dropped, batch);
                return PumpEnd::Broken(format!("write failed: {e}"));
            }
            None => {
                bump(&c.dropped, batch);
                bump(&c.write_timeouts, 1);
                #[cfg(madsim)]
                lossy::note_write_timeout();
                return PumpEnd::Broken(format!("write not flushed within {} ms", cfg.write_timeout_ms));
            }
        }
    }
}

/// Encodes `first` and whatever else is queued (at most `queue_per_peer` messages) into `buf` as
/// frames; a message too large for a frame is dropped and counted. How many were encoded.
fn encode_batch(
    shared: &Shared,
    peer: NodeId,
    first: Message,
    rx: &mut mpsc::Receiver<Message>,
    buf: &mut Vec<u8>,
) -> u64 {
    let cfg = &shared.cfg;
    buf.clear();
    let mut batch = 0u64;
    let mut next = Some(first);
    while let Some(m) = next {
        match encode_frame(&m, cfg.max_frame_bytes, buf) {
            Ok(_) => batch += 1,
            Err(len) => {
                bump(&shared.counters.dropped, 1);
                tracing::warn!(
                    node = shared.id(),
                    peer,
                    kind = m.body.name(),
                    len,
                    max = cfg.max_frame_bytes,
                    "message too large for a frame; dropped"
                );
            }
        }
        next = if batch < cfg.queue_per_peer as u64 { rx.try_recv().ok() } else { None };
    }
    batch
}

// ---------------------------------------------------------------------------------------------
// Inbound: accept loop and one task per connection
// ---------------------------------------------------------------------------------------------

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, inbox: mpsc::Sender<Message>) {
    let slots = Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS));
    let mut backoff = Duration::from_millis(1);
    let mut conn_ids = 0u64;
    loop {
        let accepted = rt::select! {
            biased;
            _ = shared.shutdown.wait() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => {
                backoff = Duration::from_millis(1);
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    bump(&shared.counters.refused, 1);
                    tracing::warn!(node = shared.id(), %remote, "peer connection refused: too many inbound connections");
                    continue;
                };
                conn_ids += 1;
                let fresh = shared.fresh();
                let task =
                    serve_inbound(shared.clone(), stream, remote, conn_ids, fresh, inbox.clone(), permit);
                spawn_tracked(&shared, task);
            }
            Err(e) => {
                tracing::warn!(node = shared.id(), error = %e, "peer accept failed");
                rt::select! {
                    biased;
                    _ = shared.shutdown.wait() => break,
                    _ = shared.clock.sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::debug!(node = shared.id(), "peer listener closed");
}

/// Registers an authenticated inbound connection; unregisters it on drop.
struct InboundReg<'a> {
    shared: &'a Shared,
    peer: NodeId,
    conn: u64,
}

impl Drop for InboundReg<'_> {
    fn drop(&mut self) {
        let mut inbound = lock(&self.shared.inbound);
        if inbound.get(&self.peer).is_some_and(|i| i.conn == self.conn) {
            inbound.remove(&self.peer);
        }
    }
}

/// The inbound connection as our handshake will see it: plain, or after a TLS handshake
/// (`[cluster.tls]`) bounded like ours; none if that failed (logged and counted).
async fn inbound_stream(shared: &Shared, tcp: TcpStream, remote: SocketAddr) -> Option<MaybeTls> {
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &shared.cfg.tls else { return Some(MaybeTls::Plain(tcp)) };
    let accepted = rt::select! {
        biased;
        _ = shared.shutdown.wait() => return None,
        r = shared.within(shared.cfg.handshake_timeout_ms, tls.accept(tcp)) => r,
    };
    let failure = match accepted {
        Some(Ok(s)) => return Some(s),
        Some(Err(e)) => e.to_string(),
        None => "timed out".to_string(),
    };
    bump(&shared.counters.handshake_failures, 1);
    tracing::warn!(node = shared.id(), %remote, reason = %failure, "inbound peer TLS handshake failed");
    None
}

async fn serve_inbound(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    conn: u64,
    fresh: Fresh,
    inbox: mpsc::Sender<Message>,
    _permit: OwnedSemaphorePermit,
) {
    let node = shared.id();
    let c = &shared.counters;
    let Some(mut stream) = inbound_stream(&shared, tcp, remote).await else { return };
    let local = shared.local(fresh);
    let hs = rt::select! {
        biased;
        _ = shared.shutdown.wait() => return,
        r = shared.within(shared.cfg.handshake_timeout_ms, handshake::accept(&mut stream, &local)) => r,
    };
    let peer = match hs.unwrap_or(Err(HandshakeError::Timeout)) {
        Ok(peer) => peer,
        Err(e) => {
            bump(&c.handshake_failures, 1);
            tracing::warn!(node, %remote, reason = %e, "inbound peer handshake refused");
            return;
        }
    };
    bump(&c.accepted, 1);
    tracing::debug!(node, peer, %remote, "peer connected");
    // The peer keeps one connection to us: a newer one means this one's sender is gone.
    let stop = Arc::new(Latch::new());
    if let Some(old) = lock(&shared.inbound).insert(peer, Inbound { conn, stop: stop.clone() }) {
        old.stop.set();
    }
    let _reg = InboundReg { shared: &shared, peer, conn };

    let max = shared.cfg.max_frame_bytes;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        // Deliver every complete frame in the buffer.
        loop {
            let (msg, used) = match decode_frame(&buf, max) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    bad_frame(&shared, peer, remote, &e);
                    return;
                }
            };
            buf.advance(used);
            if !deliver(&shared, peer, remote, &stop, &inbox, msg).await {
                return;
            }
        }
        buf.reserve(READ_CHUNK);
        let read = rt::select! {
            biased;
            _ = shared.stopped(&stop) => return,
            r = stream.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => {
                if !buf.is_empty() {
                    tracing::debug!(node, peer, %remote, pending = buf.len(), "peer closed mid-frame");
                } else {
                    tracing::debug!(node, peer, %remote, "peer closed its connection");
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(node, peer, %remote, error = %e, "peer connection failed");
                return;
            }
        }
    }
}

/// Checks one message read from `peer` and hands it to the inbox; false when the connection
/// must close (an impossible message, the inbox gone, the connection stopped).
async fn deliver(
    shared: &Arc<Shared>,
    peer: NodeId,
    remote: SocketAddr,
    stop: &Latch,
    inbox: &mpsc::Sender<Message>,
    msg: Message,
) -> bool {
    let (node, c) = (shared.id(), &shared.counters);
    if let Err(reason) = msg.check_bounds() {
        // Only a peer that knows the secret gets here: a forgery or a broken node. Close.
        bump(&c.invalid_messages, 1);
        tracing::warn!(
            node,
            peer,
            %remote,
            term = msg.term,
            kind = msg.body.name(),
            reason,
            "impossible peer message refused; closing its connection"
        );
        return false;
    }
    if msg.from != peer || msg.to != node {
        bump(&c.rejected, 1);
        tracing::debug!(node, peer, from = msg.from, to = msg.to, "misaddressed peer message dropped");
        return true;
    }
    #[cfg(madsim)]
    let msg = match lossy_fate(shared, peer, inbox, msg) {
        Ok(Some(msg)) => msg,
        Ok(None) => return true,
        Err(Reset) => return false,
    };
    rt::select! {
        biased;
        _ = shared.stopped(stop) => false,
        r = inbox.send(msg) => {
            if r.is_ok() {
                bump(&c.received, 1);
            }
            r.is_ok() // else the inbox is gone
        }
    }
}

/// The simulated fault layer closes the connection.
#[cfg(madsim)]
struct Reset;

/// The simulated fault layer's say on a message read from `peer` ([`lossy::fate`]): the message
/// to deliver now, if any. A delayed message or a duplicate's copy reaches the inbox later, from
/// a task of its own; a reset closes the connection (the message is lost).
#[cfg(madsim)]
fn lossy_fate(
    shared: &Arc<Shared>,
    peer: NodeId,
    inbox: &mpsc::Sender<Message>,
    msg: Message,
) -> Result<Option<Message>, Reset> {
    let later = |msg: Message, after: Duration| {
        let (shared2, inbox) = (shared.clone(), inbox.clone());
        spawn_tracked(shared, async move {
            rt::select! {
                biased;
                _ = shared2.shutdown.wait() => {}
                _ = rt::time::sleep(after) => {
                    if inbox.send(msg).await.is_ok() {
                        bump(&shared2.counters.received, 1);
                    }
                }
            }
        });
    };
    use crate::raft::message::Body as B;
    let sender = match msg.body {
        B::Append { .. } | B::Heartbeat { .. } | B::Snapshot { .. } | B::TimeoutNow => lossy::Sender::Leader,
        B::Vote { .. } => lossy::Sender::Candidate,
        _ => lossy::Sender::Other,
    };
    Ok(match lossy::fate_of(peer, shared.id(), sender) {
        lossy::Fate::Deliver => Some(msg),
        lossy::Fate::Drop => None,
        lossy::Fate::Duplicate(after) => {
            later(msg.clone(), after);
            Some(msg)
        }
        lossy::Fate::Delay(after) => {
            later(msg, after);
            None
        }
        lossy::Fate::Reset => {
            tracing::debug!(node = shared.id(), peer, "simulated connection reset");
            return Err(Reset);
        }
    })
}

fn bad_frame(shared: &Shared, peer: NodeId, remote: SocketAddr, e: &FrameError) {
    bump(&shared.counters.bad_frames, 1);
    tracing::warn!(node = shared.id(), peer, %remote, error = %e, "bad frame from peer; closing its connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_bad_ones_are_refused() {
        let cfg = TransportConfig::new(1, "c", "s");
        cfg.validate().unwrap();
        let bad = [
            TransportConfig { cluster_id: "x".repeat(256), ..cfg.clone() },
            TransportConfig { connect_backoff_min_ms: 0, ..cfg.clone() },
            TransportConfig { connect_backoff_min_ms: 5, connect_backoff_max_ms: 4, ..cfg.clone() },
            TransportConfig { handshake_timeout_ms: 0, ..cfg.clone() },
            TransportConfig { write_timeout_ms: 0, ..cfg.clone() },
            TransportConfig { queue_per_peer: 0, ..cfg.clone() },
            TransportConfig { max_frame_bytes: 10, ..cfg.clone() },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
    }

    #[test]
    fn handles_can_move_between_tasks() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<PeerTransport>();
        send::<Inbox>();
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_the_step() {
        let mut rng = rt::rng_from_seed(3);
        let mut seen = BTreeSet::new();
        for _ in 0..1000 {
            let d = jittered(&mut rng, 100).as_millis() as u64;
            assert!((50..=100).contains(&d), "{d}");
            seen.insert(d);
        }
        assert!(seen.len() > 20, "jitter must actually vary: {seen:?}");
        assert_eq!(jittered(&mut rng, 1), Duration::from_millis(1));
    }
}
