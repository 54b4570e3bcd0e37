//! TCP storms: hostile clients any scenario can aim at one server or at every member of a
//! cluster — connect floods, half-sent frames, malformed bytes, slow readers, clients that vanish
//! mid-stream, and producers that time out early and retry the same idempotency keys.
//!
//! Each storm client runs on its own simulated node ([`spawn_storm`]) with its own RNG split off
//! the caller's, uses only the runtime seam for time, and never panics on I/O errors: a storm is
//! supposed to hit refused connections, resets and crashed members.
//!
//! # What counts as a violation
//!
//! A storm client records a [`History::violation`] only for server behaviour the protocol forbids
//! whatever the server's load, limits or health:
//!
//! - a well-formed publish (after HELLO) answered with an error frame whose code is not
//!   retryable ([`ErrorCode::is_retryable`]: overloaded, not-leader, unavailable, internal), or
//!   an ack with a rejected item, or with a different number of items than events sent;
//! - a reply carrying another request id than the one due next on that connection;
//! - a malformed input answered with a *different* reply than the protocol prescribes (see
//!   [`Malformation::provoke`]): a bad checksum must get `malformed` for its request id, an
//!   oversized header `too_large` (then the close), a reply kind sent as a request `unsupported`;
//!   and a connection that survives the bad input must still answer a ping with a pong.
//!
//! Not violations, only counted in [`StormStats`]: refused or reset connections, no answer
//! within the client's timeout, the server closing a connection (it may close malformed,
//! half-sent, idle and slow connections, and members crash), and retryable errors. Whether the
//! server freed what the storm held (connections, capacity) and timed out half frames is for the
//! caller to check against the server's metrics; whether acked events were stored exactly once
//! at their offsets and in producer order is for the checkers in [`crate::check`], which cover
//! every keyed event a storm client sends (recorded with [`History::published`] before sending;
//! producers that pipeline or vanish are marked [`History::unordered`]).
//!
//! Storm clients say HELLO with an empty token: aim them at servers without authentication.
//! Producer ids are `STORM_PRODUCER_BASE + id`, where [`spawn_storm`] derives `id` from the
//! client's IP, so two storms on different IPs never share a producer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use eventstreamcore::client::{Client, ClientError, ClusterClient};
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::rt::{self, NodeRng};
use eventstreamcore::wire::{AckItem, ErrorCode, ErrorFrame, Request, Response, acked};
use rand::Rng;
use rand::seq::IndexedRandom;

use crate::history::History;

/// Producer ids of storm clients start here (plus the client's id).
pub const STORM_PRODUCER_BASE: u64 = 500_000;

/// Topics storm producers publish to.
pub const STORM_TOPICS: &[&str] = &["storm/retry", "storm/slow", "storm/vanish", "storm/half"];

/// What a storm client does, over and over until the storm ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StormKind {
    /// Opens and drops 40–120 connections in quick bursts, some after half a header or a HELLO.
    ConnectFlood,
    /// Sends a valid header and part of the body, then either waits for the server to time the
    /// connection out or disconnects.
    HalfFrame,
    /// Sends garbage, bad checksums, oversized lengths, reply kinds as requests, empty floods,
    /// bad legacy bodies ([`Malformation`]) and checks the server's reaction.
    Malformed,
    /// Pipelines many valid publishes, then reads the acks very slowly.
    SlowReader,
    /// Pipelines publishes and disconnects before reading any ack.
    Vanisher,
    /// Publishes keyed events with a short client timeout, so it often gives up, then retries the
    /// same keys (on a new connection or another member); records every ack.
    TimeoutRetrier,
}

impl StormKind {
    /// Its name in plans and on the timeline.
    pub fn name(self) -> &'static str {
        match self {
            StormKind::ConnectFlood => "connect_flood",
            StormKind::HalfFrame => "half_frame",
            StormKind::Malformed => "malformed",
            StormKind::SlowReader => "slow_reader",
            StormKind::Vanisher => "vanisher",
            StormKind::TimeoutRetrier => "timeout_retrier",
        }
    }

    /// Every kind.
    pub const ALL: [StormKind; 6] = [
        StormKind::ConnectFlood,
        StormKind::HalfFrame,
        StormKind::Malformed,
        StormKind::SlowReader,
        StormKind::Vanisher,
        StormKind::TimeoutRetrier,
    ];
}

/// A storm to run: how many clients, of which kinds (assigned round-robin), for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormConfig {
    pub clients: usize,
    /// Empty = all kinds.
    pub kinds: Vec<StormKind>,
    pub duration: Duration,
}

impl StormConfig {
    /// The kinds to use (all when none are named).
    pub fn kinds(&self) -> Vec<StormKind> {
        if self.kinds.is_empty() { StormKind::ALL.to_vec() } else { self.kinds.clone() }
    }

    /// Spawns this storm from now (see [`spawn_storm`]).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        &self,
        handle: &madsim::runtime::Handle,
        first_ip: Ipv4Addr,
        addrs: &[SocketAddr],
        rng: &mut NodeRng,
        history: History,
        stats: Arc<Mutex<StormStats>>,
    ) -> Vec<madsim::task::JoinHandle<()>> {
        let until = rt::time::now() + self.duration;
        spawn_storm(handle, first_ip, self.clients, &self.kinds(), addrs, rng, until, history, stats)
    }
}

/// What the storm saw, for the scenario's summary and checkers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StormStats {
    /// TCP connections established (not counting those the retriers' `ClusterClient` opens).
    pub connects: u64,
    /// Connections refused: `connect` failed, or HELLO answered "overloaded" (connection limit).
    pub refused_connects: u64,
    /// Complete frames sent (valid or deliberately malformed).
    pub frames_sent: u64,
    /// Error frames received.
    pub error_frames: u64,
    /// Events acknowledged as stored.
    pub acks: u64,
    /// Of those, acknowledged as duplicates (a retry of something already stored).
    pub duplicate_acks: u64,
    /// Keyed events recorded as published.
    pub events_published: u64,
    /// Frames cut off after part of the header (flood) or body (half frame).
    pub half_frames: u64,
    /// Half-frame connections the server closed while the client waited.
    pub half_frames_closed_by_server: u64,
    /// Malformed inputs sent.
    pub malformed_sent: u64,
    /// Malformed inputs the server reacted to exactly as the protocol prescribes.
    pub malformed_as_expected: u64,
    /// Well-formed connections the server closed (or reset) under the client.
    pub server_closes: u64,
    /// Requests the client stopped waiting for (its timeout).
    pub client_timeouts: u64,
    /// Re-sends of the same idempotency keys after a failed attempt.
    pub retries: u64,
    /// Connections dropped with replies still unread.
    pub vanished: u64,
    /// Replies read slowly by slow readers.
    pub slow_reads: u64,
    /// Error frames with code `internal` (retryable, but worth a look).
    pub internal_errors: u64,
    /// Violations recorded in the history by storm clients.
    pub violations: u64,
    /// Connections per kind.
    pub connects_by_kind: BTreeMap<StormKind, u64>,
}

impl StormStats {
    /// One line for a run summary.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "storm: {} connects ({} refused), {} frames, {} acks ({} duplicate), {} error frames, \
             {} half frames ({} closed by server), {} malformed ({} as expected), {} server closes, \
             {} client timeouts, {} retries, {} vanished, {} slow reads, {} violations; connects by kind:",
            self.connects,
            self.refused_connects,
            self.frames_sent,
            self.acks,
            self.duplicate_acks,
            self.error_frames,
            self.half_frames,
            self.half_frames_closed_by_server,
            self.malformed_sent,
            self.malformed_as_expected,
            self.server_closes,
            self.client_timeouts,
            self.retries,
            self.vanished,
            self.slow_reads,
            self.violations,
        );
        for (k, v) in &self.connects_by_kind {
            let _ = write!(s, " {k:?}×{v}");
        }
        s
    }
}

/// The kinds of bad input a malformed client sends (shared with the `ingest` scenario).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformation {
    /// Legacy frames with a bad priority and a topic length overrunning the body.
    BadLegacyBody,
    /// A ping whose checksum is wrong.
    BadChecksum,
    /// An acked header announcing a frame over the server's limit.
    Oversized,
    /// Random bytes whose length prefix is huge.
    Garbage,
    /// Eleven empty legacy frames in a row.
    EmptyFlood,
    /// A reply kind (pong) sent as a request.
    WrongDirection,
    /// A publish without HELLO on a server that requires a token (scenario-specific check).
    UnauthorizedNoHello,
}

/// How the server reacted to a malformed input ([`Malformation::provoke`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// The bytes could not be sent (connection already gone).
    SendFailed,
    /// As the protocol prescribes; `open` says whether the connection is still usable (false:
    /// the server closed it, as it must after e.g. an oversized frame).
    AsExpected { open: bool },
    /// A reply the protocol forbids: always a server bug.
    Wrong(String),
    /// No reply (closed, reset or timed out) where one was due: a bug on a healthy server, but
    /// also what a crashed or partitioned member looks like.
    NoAnswer(String),
    /// The connection stayed open after input the server must close it for.
    NotClosed(String),
}

impl Reaction {
    /// The description of anything but the expected reaction.
    pub fn problem(&self) -> Option<&str> {
        match self {
            Reaction::SendFailed | Reaction::AsExpected { .. } => None,
            Reaction::Wrong(s) | Reaction::NoAnswer(s) | Reaction::NotClosed(s) => Some(s),
        }
    }
}

impl Malformation {
    /// Every malformation, in the order the `ingest` scenario draws from.
    pub const ALL: [Malformation; 7] = [
        Malformation::BadLegacyBody,
        Malformation::BadChecksum,
        Malformation::Oversized,
        Malformation::Garbage,
        Malformation::EmptyFlood,
        Malformation::WrongDirection,
        Malformation::UnauthorizedNoHello,
    ];

    /// The malformations a storm client picks from (no authentication in storms).
    pub const STORM: [Malformation; 6] = [
        Malformation::BadLegacyBody,
        Malformation::BadChecksum,
        Malformation::Oversized,
        Malformation::Garbage,
        Malformation::EmptyFlood,
        Malformation::WrongDirection,
    ];

    /// Request ids of the deliberately bad acked frames.
    pub const BAD_CHECKSUM_ID: u64 = 77;
    pub const OVERSIZED_ID: u64 = 88;
    pub const WRONG_DIRECTION_ID: u64 = 55;

    /// The bytes to send. `oversized_len` is the body length an oversized header announces (any
    /// value with header + body + checksum over the server's limit). Garbage draws from `rng`.
    pub fn bytes(self, oversized_len: u32, rng: &mut NodeRng) -> Vec<u8> {
        match self {
            // Priority 9, then a topic length overrunning the body: both rejected, framing intact.
            Malformation::BadLegacyBody => vec![0, 0, 0, 4, 9, 0, 1, b'a', 0, 0, 0, 4, 1, 0, 9, b'a'],
            Malformation::BadChecksum => {
                let mut frame = BytesMut::new();
                Request::Ping.encode(Self::BAD_CHECKSUM_ID, &mut frame);
                let n = frame.len();
                frame[n - 1] ^= 0xA5;
                frame.to_vec()
            }
            Malformation::Oversized => {
                // A valid ping header with its length field raised past the limit.
                let mut frame = BytesMut::new();
                Request::Ping.encode(Self::OVERSIZED_ID, &mut frame);
                let mut hdr = frame[..acked::HEADER_LEN].to_vec();
                hdr[5] = 0x02;
                hdr[8..12].copy_from_slice(&oversized_len.to_be_bytes());
                hdr
            }
            Malformation::Garbage => {
                let len = rng.random_range(1..64);
                let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                // Never accidentally a valid legacy frame or the magic: make the length prefix huge.
                if junk.len() >= 4 {
                    junk[0] = 0x7F;
                }
                junk
            }
            Malformation::EmptyFlood => vec![0u8; 4 * 11],
            Malformation::WrongDirection => {
                let mut frame = BytesMut::new();
                Response::Pong.encode(Self::WRONG_DIRECTION_ID, &mut frame);
                frame.to_vec()
            }
            Malformation::UnauthorizedNoHello => Vec::new(),
        }
    }

    /// Sends the malformed input on `c` and checks the server's reaction (waiting at most
    /// `close_wait` for a close the protocol requires). Garbage has no prescribed reaction and
    /// counts as expected with the connection open; `UnauthorizedNoHello` is not handled here.
    pub async fn provoke(
        self,
        c: &mut Client,
        oversized_len: u32,
        close_wait: Duration,
        rng: &mut NodeRng,
    ) -> Reaction {
        let bytes = self.bytes(oversized_len, rng);
        if c.send_raw(&bytes).await.is_err() {
            return Reaction::SendFailed;
        }
        let expect_error = |want_id: u64,
                            code: ErrorCode,
                            what: &str,
                            got: Result<(u64, Response), ClientError>| {
            match got {
                Ok((id, Response::Error(e))) if id == want_id && e.code == code => None,
                Ok(other) => Some(Reaction::Wrong(format!("{what} answered with {:?}", Ok::<_, ()>(other)))),
                Err(e @ (ClientError::Timeout(_) | ClientError::Closed | ClientError::Io(_))) => {
                    Some(Reaction::NoAnswer(format!("{what} answered with {:?}", Err::<(), _>(e))))
                }
                Err(e) => Some(Reaction::Wrong(format!("{what} answered with {:?}", Err::<(), _>(e)))),
            }
        };
        match self {
            Malformation::BadLegacyBody | Malformation::Garbage | Malformation::UnauthorizedNoHello => {
                Reaction::AsExpected { open: true }
            }
            Malformation::BadChecksum => {
                let got = c.recv().await;
                expect_error(Self::BAD_CHECKSUM_ID, ErrorCode::Malformed, "bad checksum", got)
                    .unwrap_or(Reaction::AsExpected { open: true })
            }
            Malformation::WrongDirection => {
                let got = c.recv().await;
                expect_error(
                    Self::WRONG_DIRECTION_ID,
                    ErrorCode::Unsupported,
                    "reply kind sent as request",
                    got,
                )
                .unwrap_or(Reaction::AsExpected { open: true })
            }
            Malformation::Oversized => {
                let got = c.recv().await;
                if let Some(r) = expect_error(Self::OVERSIZED_ID, ErrorCode::TooLarge, "oversized frame", got)
                {
                    return r;
                }
                if !c.wait_closed(close_wait).await {
                    return Reaction::NotClosed("connection not closed after an oversized frame".into());
                }
                Reaction::AsExpected { open: false }
            }
            Malformation::EmptyFlood => {
                if c.wait_closed(close_wait).await {
                    Reaction::AsExpected { open: false }
                } else {
                    Reaction::NotClosed("11 empty frames but the connection stayed open".into())
                }
            }
        }
    }
}

/// Everything one storm client shares with the run.
struct Ctx {
    id: u64,
    kind: StormKind,
    name: String,
    producer: u64,
    addrs: Vec<SocketAddr>,
    until: rt::time::Instant,
    history: History,
    stats: Arc<Mutex<StormStats>>,
    next_seq: u64,
}

impl Ctx {
    fn stat(&self, f: impl FnOnce(&mut StormStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn violation(&self, what: String) {
        self.stat(|s| s.violations += 1);
        self.history.violation(format!("{}: {what}", self.name));
    }

    fn over(&self) -> bool {
        rt::time::now() >= self.until
    }

    /// Time left until the storm ends.
    fn left(&self) -> Duration {
        self.until.saturating_duration_since(rt::time::now())
    }

    fn addr(&self, rng: &mut NodeRng) -> SocketAddr {
        *self.addrs.choose(rng).expect("storm needs at least one address")
    }

    /// Connects to a random member (one attempt); counts the outcome.
    async fn connect(&self, rng: &mut NodeRng) -> Option<rt::net::TcpStream> {
        match rt::net::TcpStream::connect(self.addr(rng)).await {
            Ok(s) => {
                let kind = self.kind;
                self.stat(|s| {
                    s.connects += 1;
                    *s.connects_by_kind.entry(kind).or_default() += 1;
                });
                Some(s)
            }
            Err(_) => {
                self.stat(|s| s.refused_connects += 1);
                None
            }
        }
    }

    /// Connects and says HELLO; `None` (counted) if refused, closed or too slow.
    async fn session(&self, rng: &mut NodeRng, timeout: Duration) -> Option<Client> {
        let stream = self.connect(rng).await?;
        let mut c = Client::from_stream(stream);
        c.set_timeout(timeout);
        self.stat(|s| s.frames_sent += 1);
        match c.hello(&self.name, "").await {
            Ok(_) => Some(c),
            Err(e) => {
                self.note_error(&e, "hello");
                None
            }
        }
    }

    /// Counts a failed call; records a violation where the protocol forbids the answer.
    fn note_error(&self, e: &ClientError, what: &str) {
        match e {
            ClientError::Server(f) => self.note_error_frame(f, what),
            ClientError::Timeout(_) => self.stat(|s| s.client_timeouts += 1),
            ClientError::Io(_) | ClientError::Closed => self.stat(|s| s.server_closes += 1),
            ClientError::OutOfOrder { .. } | ClientError::Protocol(_) | ClientError::Unexpected(_) => {
                self.violation(format!("{what}: {e}"))
            }
            ClientError::Encode(_) | ClientError::Inconsistent(_) => {
                self.violation(format!("{what}: storm workload bug: {e}"))
            }
        }
    }

    fn note_error_frame(&self, f: &ErrorFrame, what: &str) {
        self.stat(|s| {
            s.error_frames += 1;
            if f.code == ErrorCode::Internal {
                s.internal_errors += 1;
            }
        });
        if f.code == ErrorCode::Overloaded && what == "hello" {
            self.stat(|s| s.refused_connects += 1);
        }
        if !f.code.is_retryable() {
            self.violation(format!("{what} refused with a non-retryable error: {f}"));
        }
    }

    /// `n` fresh keyed events on `topic`, recorded as published.
    fn events(&mut self, n: u64, topic: &str, rng: &mut NodeRng) -> Vec<Event> {
        let events: Vec<Event> = (0..n)
            .map(|k| {
                let seq = self.next_seq + k;
                let priority = Priority::from_u8(rng.random_range(0..=4)).expect("0..=4");
                let payload = format!("storm:{}:{seq}:{}", self.producer, rng.random::<u32>());
                let mut e = Event::new(topic, priority, payload.into_bytes());
                e.producer_id = self.producer;
                e.sequence = seq;
                self.history.published(&e);
                e
            })
            .collect();
        self.next_seq += n;
        self.stat(|s| s.events_published += n);
        events
    }

    /// Checks an ack against the events it answers and records it.
    fn record_acks(&self, events: &[Event], items: &[AckItem]) {
        let ok = self.history.record_acks(&self.name, events, items);
        let stored = items.iter().filter(|i| matches!(i, AckItem::Stored { .. })).count() as u64;
        let dups =
            items.iter().filter(|i| matches!(i, AckItem::Stored { duplicate: true, .. })).count() as u64;
        self.stat(|s| {
            s.acks += stored;
            s.duplicate_acks += dups;
            s.violations += u64::from(!ok);
        });
    }
}

/// Runs one storm client of `kind` against the members at `addrs` until `until` (runtime
/// instant), never panicking on I/O errors. `id` names the client and picks its producer id
/// (`STORM_PRODUCER_BASE + id`); give every client of a run its own.
pub async fn storm_client(
    id: u64,
    kind: StormKind,
    addrs: Vec<SocketAddr>,
    mut rng: NodeRng,
    until: rt::time::Instant,
    history: History,
    stats: Arc<Mutex<StormStats>>,
) {
    if addrs.is_empty() {
        return;
    }
    let mut ctx = Ctx {
        id,
        kind,
        name: format!("storm-{kind:?}-{id}"),
        producer: STORM_PRODUCER_BASE + id,
        addrs,
        until,
        history,
        stats,
        next_seq: 1,
    };
    match kind {
        StormKind::ConnectFlood => connect_flood(&ctx, &mut rng).await,
        StormKind::HalfFrame => half_frames(&mut ctx, &mut rng).await,
        StormKind::Malformed => malformed(&ctx, &mut rng).await,
        StormKind::SlowReader => slow_reader(&mut ctx, &mut rng).await,
        StormKind::Vanisher => vanisher(&mut ctx, &mut rng).await,
        StormKind::TimeoutRetrier => timeout_retrier(&mut ctx, &mut rng).await,
    }
    tracing::debug!(client = ctx.id, ?kind, "storm client done");
}

/// Spawns `n` storm clients, each on its own simulated node with its own IP (`first_ip`, then
/// the next addresses up) and RNG split off `rng`; kinds are assigned round-robin from `kinds`
/// (all kinds if empty). Each client starts within its first 500 ms and stops at `until`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_storm(
    handle: &madsim::runtime::Handle,
    first_ip: Ipv4Addr,
    n: usize,
    kinds: &[StormKind],
    addrs: &[SocketAddr],
    rng: &mut NodeRng,
    until: rt::time::Instant,
    history: History,
    stats: Arc<Mutex<StormStats>>,
) -> Vec<madsim::task::JoinHandle<()>> {
    let kinds = if kinds.is_empty() { &StormKind::ALL[..] } else { kinds };
    let first = u32::from(first_ip);
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(first + i as u32);
            let kind = kinds[i % kinds.len()];
            // Unique per IP, so storms on disjoint address ranges never share a producer id.
            let id = u64::from(u32::from(ip) & 0x00FF_FFFF);
            let node = handle.create_node().name(format!("storm-{ip}")).ip(IpAddr::V4(ip)).build();
            let mut crng = rt::rng::split(rng);
            let start = Duration::from_millis(crng.random_range(0..500));
            let (addrs, history, stats) = (addrs.to_vec(), history.clone(), stats.clone());
            node.spawn(async move {
                rt::time::sleep(start).await;
                storm_client(id, kind, addrs, crng, until, history, stats).await;
            })
        })
        .collect()
}

/// A valid ping frame, for cutting short.
fn ping_frame(id: u64) -> BytesMut {
    let mut frame = BytesMut::new();
    Request::Ping.encode(id, &mut frame);
    frame
}

/// Opens 40–120 connections in bursts of 5–15, paced so that on average they spread over the
/// storm: the simulator's listener accepts at most one connection per simulated millisecond (every
/// sleep lasts at least 1 ms, accept included), so an unpaced flood would only measure that
/// queue — new connections, the retriers' included, would wait seconds for their HELLO.
async fn connect_flood(ctx: &Ctx, rng: &mut NodeRng) {
    let total: u32 = rng.random_range(40..=120);
    let mut done = 0;
    while done < total && !ctx.over() {
        let burst = rng.random_range(5..=15).min(total - done);
        for _ in 0..burst {
            flood_one(ctx, rng).await;
        }
        done += burst;
        let share = f64::from(burst) / f64::from(total - done + burst);
        let pause = ctx.left().mul_f64(share * rng.random_range(0.5..1.5));
        rt::time::sleep(pause.min(ctx.left())).await;
    }
}

/// One flood connection: dropped at once, after half a header, or after a HELLO.
async fn flood_one(ctx: &Ctx, rng: &mut NodeRng) {
    let Some(stream) = ctx.connect(rng).await else {
        rt::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
        return;
    };
    let mut c = Client::from_stream(stream);
    c.set_timeout(Duration::from_millis(200));
    match rng.random_range(0..10) {
        // Drop at once.
        0..=4 => {}
        // Half a header, then drop.
        5..=7 => {
            let frame = ping_frame(1);
            let cut = rng.random_range(1..acked::HEADER_LEN);
            if c.send_raw(&frame[..cut]).await.is_ok() {
                ctx.stat(|s| s.half_frames += 1);
            }
        }
        // A HELLO, dropped before (or just after) the answer.
        _ => {
            if c.queue(&Request::Hello { client: ctx.name.clone(), token: String::new() }).is_ok()
                && c.flush().await.is_ok()
            {
                ctx.stat(|s| s.frames_sent += 1);
                if rng.random_bool(0.5) {
                    match c.recv().await {
                        Ok((_, Response::HelloOk { .. })) => {}
                        Ok((_, Response::Error(e))) => ctx.note_error_frame(&e, "hello"),
                        Ok((_, other)) => ctx.violation(format!("hello answered with {other:?}")),
                        Err(e) => ctx.note_error(&e, "hello"),
                    }
                }
            }
        }
    }
}

async fn half_frames(ctx: &mut Ctx, rng: &mut NodeRng) {
    while !ctx.over() {
        let Some(mut c) = ctx.session(rng, Duration::from_secs(2)).await else {
            rt::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
            continue;
        };
        // A valid publish header, then only part of its body: never completed, never stored.
        let events = ctx.events(rng.random_range(1..=3), "storm/half", rng);
        let mut frame = BytesMut::new();
        Request::Publish(events).encode(2, &mut frame);
        let cut = rng.random_range(acked::HEADER_LEN..frame.len() - 1);
        if c.send_raw(&frame[..cut]).await.is_err() {
            ctx.stat(|s| s.server_closes += 1);
            continue;
        }
        ctx.stat(|s| s.half_frames += 1);
        if rng.random_bool(0.7) {
            // Wait for the server to give up on us (its read timeout), or for the storm to end.
            if c.wait_closed(ctx.left()).await && !ctx.over() {
                ctx.stat(|s| s.half_frames_closed_by_server += 1);
            }
        } else {
            rt::time::sleep(Duration::from_millis(rng.random_range(0..500)).min(ctx.left())).await;
        }
    }
}

async fn malformed(ctx: &Ctx, rng: &mut NodeRng) {
    while !ctx.over() {
        let Some(mut c) = ctx.session(rng, Duration::from_secs(2)).await else {
            rt::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
            continue;
        };
        let m = *Malformation::STORM.choose(rng).expect("non-empty");
        let reaction = m.provoke(&mut c, u32::MAX - 64, Duration::from_secs(5), rng).await;
        if reaction != Reaction::SendFailed {
            ctx.stat(|s| s.frames_sent += 1);
        }
        match reaction {
            Reaction::SendFailed => ctx.stat(|s| s.server_closes += 1),
            Reaction::AsExpected { open } => {
                ctx.stat(|s| {
                    s.malformed_sent += 1;
                    s.malformed_as_expected += 1;
                });
                // A connection that survived must still be framed correctly.
                if open && m != Malformation::Garbage {
                    ctx.stat(|s| s.frames_sent += 1);
                    match c.ping().await {
                        Ok(()) => {}
                        Err(e) => ctx.note_error(&e, &format!("ping after {m:?}")),
                    }
                }
            }
            Reaction::Wrong(why) => {
                ctx.stat(|s| s.malformed_sent += 1);
                ctx.violation(format!("{m:?}: {why}"));
            }
            // No answer may be a crashed or partitioned member; not a violation here.
            Reaction::NoAnswer(_) => ctx.stat(|s| {
                s.malformed_sent += 1;
                s.server_closes += 1;
            }),
            Reaction::NotClosed(why) => {
                ctx.stat(|s| s.malformed_sent += 1);
                // A violation only if the member is otherwise alive and answering.
                ctx.stat(|s| s.frames_sent += 1);
                if c.ping().await.is_ok() {
                    ctx.violation(format!("{m:?}: {why}"));
                }
            }
        }
        drop(c);
        rt::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
    }
}

/// Queues `frames` publishes and flushes them in one write; the request ids in order.
async fn pipeline(ctx: &Ctx, c: &mut Client, frames: &[Vec<Event>]) -> Option<Vec<u64>> {
    let mut ids = Vec::with_capacity(frames.len());
    for f in frames {
        match c.queue(&Request::Publish(f.clone())) {
            Ok(id) => ids.push(id),
            Err(e) => {
                ctx.note_error(&e, "queue");
                return None;
            }
        }
    }
    if c.flush().await.is_err() {
        ctx.stat(|s| s.server_closes += 1);
        return None;
    }
    ctx.stat(|s| s.frames_sent += frames.len() as u64);
    Some(ids)
}

/// A drawn number of frames of a drawn number of fresh keyed events each.
fn keyed_frames(
    ctx: &mut Ctx,
    rng: &mut NodeRng,
    frames: std::ops::RangeInclusive<usize>,
    per_frame: std::ops::RangeInclusive<u64>,
    topic: &str,
) -> Vec<Vec<Event>> {
    (0..rng.random_range(frames))
        .map(|_| {
            let n = rng.random_range(per_frame.clone());
            ctx.events(n, topic, rng)
        })
        .collect()
}

async fn slow_reader(ctx: &mut Ctx, rng: &mut NodeRng) {
    ctx.history.unordered(ctx.producer);
    while !ctx.over() {
        let Some(mut c) = ctx.session(rng, Duration::from_secs(5)).await else {
            rt::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
            continue;
        };
        let frames = keyed_frames(ctx, rng, 20..=60, 1..=3, "storm/slow");
        let Some(ids) = pipeline(ctx, &mut c, &frames).await else {
            continue;
        };
        for (events, want) in frames.iter().zip(ids) {
            rt::time::sleep(Duration::from_millis(rng.random_range(50..400)).min(ctx.left())).await;
            if ctx.over() {
                ctx.stat(|s| s.vanished += 1);
                return;
            }
            ctx.stat(|s| s.slow_reads += 1);
            match c.recv().await {
                Ok((got, _)) if got != want => {
                    ctx.violation(format!("reply to request {got} while waiting for {want}"));
                    break;
                }
                Ok((_, Response::Ack(items))) => ctx.record_acks(events, &items),
                Ok((_, Response::Error(e))) => ctx.note_error_frame(&e, "pipelined publish"),
                Ok((_, other)) => {
                    ctx.violation(format!("publish answered with {other:?}"));
                    break;
                }
                Err(e) => {
                    ctx.note_error(&e, "pipelined publish");
                    break;
                }
            }
        }
    }
}

async fn vanisher(ctx: &mut Ctx, rng: &mut NodeRng) {
    ctx.history.unordered(ctx.producer);
    while !ctx.over() {
        let Some(mut c) = ctx.session(rng, Duration::from_secs(2)).await else {
            rt::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
            continue;
        };
        let frames = keyed_frames(ctx, rng, 1..=8, 1..=4, "storm/vanish");
        if pipeline(ctx, &mut c, &frames).await.is_some() {
            // Sometimes half of one more frame, then gone before any ack.
            if rng.random_bool(0.3) {
                let mut frame = BytesMut::new();
                let extra = ctx.events(1, "storm/vanish", rng);
                Request::Publish(extra).encode(999, &mut frame);
                let cut = rng.random_range(1..frame.len());
                if c.send_raw(&frame[..cut]).await.is_ok() {
                    ctx.stat(|s| s.half_frames += 1);
                }
            }
            ctx.stat(|s| s.vanished += 1);
        }
        drop(c);
        rt::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
    }
}

async fn timeout_retrier(ctx: &mut Ctx, rng: &mut NodeRng) {
    let mut addrs = ctx.addrs.clone();
    let first = rng.random_range(0..addrs.len());
    addrs.rotate_left(first);
    let mut client = ClusterClient::new(addrs, ctx.name.clone(), "");
    client.timeout = Duration::from_millis(rng.random_range(100..=400));
    client.backoff = Duration::from_millis(rng.random_range(20..100));
    client.max_attempts = rng.random_range(1..=3);
    // One frame at a time, each retried with the same keys until acked: the per-producer order
    // check applies. If the storm ends first, the producer stops for good (never sends later
    // keys past an unacked frame).
    'frames: while !ctx.over() {
        let n = rng.random_range(1..=4);
        let events = ctx.events(n, "storm/retry", rng);
        let mut first = true;
        loop {
            if !first {
                ctx.stat(|s| s.retries += 1);
            }
            first = false;
            ctx.stat(|s| s.frames_sent += 1);
            match client.publish(events.clone()).await {
                Ok(items) => {
                    ctx.record_acks(&events, &items);
                    break;
                }
                Err(ClientError::Server(e)) if !e.code.is_retryable() => {
                    ctx.note_error_frame(&e, "publish");
                    break 'frames;
                }
                Err(e) => ctx.note_error(&e, "publish"),
            }
            if ctx.over() {
                break 'frames;
            }
            rt::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
        }
        rt::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
    }
}
