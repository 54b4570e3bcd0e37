//! A client for the acknowledged protocol (and for sending legacy frames), on the runtime seam
//! so the same client drives real servers, tests and simulated workloads.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;

use crate::consumers::{ConsumerPosition, OffsetCommit};
use crate::event::{Event, Priority, StoredEvent};
use crate::rt::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use crate::rt::{self, net::TcpStream};
use crate::tls::{ClientStream, ClientTls};
use crate::wire::{
    self, AckItem, AdminRequest, ErrorFrame, ReplyDecoder, ReplyError, Request, Response, legacy,
};

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the connection")]
    Closed,
    #[error("bad reply: {0}")]
    Protocol(#[from] ReplyError),
    #[error("{}", describe(.0))]
    Server(ErrorFrame),
    #[error("unexpected reply {0:?}")]
    Unexpected(Box<Response>),
    #[error("reply to request {got} while waiting for {want}")]
    OutOfOrder { want: u64, got: u64 },
    #[error("event cannot be encoded: {0}")]
    Encode(#[from] wire::acked::EncodeError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("inconsistent reply: {0}")]
    Inconsistent(String),
}

impl ClientError {
    /// For an "out of range" answer to a read below the first retained offset: the first
    /// offset the topic still holds (the error message ends "first available is N").
    pub fn first_available(&self) -> Option<u64> {
        let ClientError::Server(f) = self else { return None };
        if f.code != wire::ErrorCode::OutOfRange {
            return None;
        }
        let (_, tail) = f.message.rsplit_once("first available is ")?;
        tail.trim().parse().ok()
    }
}

/// An error frame as a person reads it: the code name, the message, and the retry hint and
/// leader when the message does not already say them (servers often put the code name and
/// "retry after" into the message text, which read twice as "unavailable: unavailable: …").
pub fn describe(e: &ErrorFrame) -> String {
    let name = e.code.name();
    let mut out =
        if e.message.starts_with(name) { e.message.clone() } else { format!("{name}: {}", e.message) };
    if e.retry_after_ms > 0 && !e.message.contains("retry after") {
        out += &format!(" (retry after {} ms)", e.retry_after_ms);
    }
    if !e.leader.is_empty() && !e.message.contains(e.leader.as_str()) {
        out += &format!(" (leader at {})", e.leader);
    }
    out
}

/// The server's answer to HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub server: String,
    pub node_id: u64,
    pub max_frame_bytes: u32,
}

/// A page of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub events: Vec<StoredEvent>,
    pub next_offset: u64,
    pub end_offset: u64,
}

/// One connection to a server.
pub struct Client {
    rd: ReadHalf<ClientStream>,
    wr: WriteHalf<ClientStream>,
    buf: BytesMut,
    out: BytesMut,
    decoder: ReplyDecoder,
    next_id: u64,
    timeout: Duration,
}

impl Client {
    /// Connects (one attempt).
    pub async fn connect(addr: SocketAddr) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        Ok(Self::from_stream(stream))
    }

    /// Connects (one attempt), over TLS if `tls` is given (the handshake is bounded by the
    /// reply timeout, 30 s).
    pub async fn connect_with(addr: SocketAddr, tls: Option<&ClientTls>) -> Result<Client, ClientError> {
        let Some(tls) = tls else { return Self::connect(addr).await };
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let timeout = Duration::from_secs(30);
        let stream = rt::time::timeout(timeout, tls.connect(addr, tcp))
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        Ok(Self::from_client_stream(stream))
    }

    /// Wraps an open stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        let _ = stream.set_nodelay(true);
        Self::from_client_stream(ClientStream::Plain(stream))
    }

    /// Wraps an open plain or TLS stream.
    pub fn from_client_stream(stream: ClientStream) -> Client {
        let (rd, wr) = rt::io::split(stream);
        Client {
            rd,
            wr,
            buf: BytesMut::with_capacity(8 * 1024),
            out: BytesMut::new(),
            decoder: ReplyDecoder::new(wire::acked::MAX_FRAME_LIMIT),
            next_id: 1,
            timeout: Duration::from_secs(30),
        }
    }

    /// Sets how long to wait for each reply (default 30 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Queues a request without sending it; returns its request id. Call [`Client::flush`].
    pub fn queue(&mut self, req: &Request) -> Result<u64, ClientError> {
        if let Request::Publish(events) = req {
            for e in events {
                wire::acked::check_encodable(e)?;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        req.encode(id, &mut self.out);
        Ok(id)
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out).await?;
            self.out.clear();
        }
        self.wr.flush().await?;
        Ok(())
    }

    /// Reads the next reply.
    pub async fn recv(&mut self) -> Result<(u64, Response), ClientError> {
        let timeout = self.timeout;
        let fut = async {
            loop {
                if !self.buf.is_empty()
                    && let Some(r) = self.decoder.decode(&mut self.buf)?
                {
                    return Ok(r);
                }
                if self.rd.read_buf(&mut self.buf).await? == 0 {
                    return Err(ClientError::Closed);
                }
            }
        };
        rt::time::timeout(timeout, fut).await.map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Takes a reply that is already buffered, without reading from the socket.
    pub fn try_recv_buffered(&mut self) -> Result<Option<(u64, Response)>, ClientError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        Ok(self.decoder.decode(&mut self.buf)?)
    }

    async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let id = self.queue(req)?;
        self.flush().await?;
        let (got, resp) = self.recv().await?;
        if got != id {
            // Connection-level errors (e.g. "too many connections") carry request id 0.
            if let Response::Error(e) = resp {
                return Err(ClientError::Server(e));
            }
            return Err(ClientError::OutOfOrder { want: id, got });
        }
        Ok(resp)
    }

    /// Introduces the client (with the server's token if it requires one).
    pub async fn hello(&mut self, client: &str, token: &str) -> Result<ServerInfo, ClientError> {
        match self.call(&Request::Hello { client: client.into(), token: token.into() }).await? {
            Response::HelloOk { server, node_id, max_frame_bytes } => {
                Ok(ServerInfo { server, node_id, max_frame_bytes })
            }
            Response::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Publishes events in one frame; one [`AckItem`] per event.
    pub async fn publish(&mut self, events: Vec<Event>) -> Result<Vec<AckItem>, ClientError> {
        match self.call(&Request::Publish(events)).await? {
            Response::Ack(items) => Ok(items),
            Response::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Sends several publish frames back to back, then reads every reply (pipelining).
    pub async fn publish_pipelined(
        &mut self,
        frames: Vec<Vec<Event>>,
    ) -> Result<Vec<Result<Vec<AckItem>, ErrorFrame>>, ClientError> {
        let mut ids = Vec::with_capacity(frames.len());
        for f in frames {
            ids.push(self.queue(&Request::Publish(f))?);
        }
        self.flush().await?;
        let mut out = Vec::with_capacity(ids.len());
        for want in ids {
            let (got, resp) = self.recv().await?;
            if got != want {
                return Err(ClientError::OutOfOrder { want, got });
            }
            out.push(match resp {
                Response::Ack(items) => Ok(items),
                Response::Error(e) => Err(e),
                other => return Err(ClientError::Unexpected(Box::new(other))),
            });
        }
        Ok(out)
    }

    /// Reads up to `max_events` of `topic` from `offset`.
    pub async fn fetch(&mut self, topic: &str, offset: u64, max_events: u32) -> Result<Fetched, ClientError> {
        match self.call(&Request::Fetch { topic: topic.into(), offset, max_events }).await? {
            Response::Fetched { events, next_offset, end_offset, .. } => {
                Ok(Fetched { events, next_offset, end_offset })
            }
            Response::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// A fetch with options: `linearizable` confirms with the leader first; `wait_ms` makes the
    /// server hold an empty answer until an event arrives (long poll, at most 30 s).
    pub async fn read(
        &mut self,
        topic: &str,
        offset: u64,
        max_events: u32,
        linearizable: bool,
        wait_ms: u32,
    ) -> Result<Fetched, ClientError> {
        let saved = self.timeout;
        self.timeout = saved.max(Duration::from_millis(u64::from(wait_ms)) + Duration::from_secs(10));
        let req = Request::Read { topic: topic.into(), offset, max_events, linearizable, wait_ms };
        let resp = self.call(&req).await;
        self.timeout = saved;
        match resp? {
            Response::Fetched { events, next_offset, end_offset, .. } => {
                Ok(Fetched { events, next_offset, end_offset })
            }
            Response::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// A cluster administration request; the server's answer as text.
    pub async fn admin(&mut self, req: AdminRequest) -> Result<String, ClientError> {
        let saved = self.timeout;
        self.timeout = saved.max(Duration::from_secs(90));
        let resp = self.call(&Request::Admin(req)).await;
        self.timeout = saved;
        match resp? {
            Response::AdminOk(text) => Ok(text),
            Response::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Records consumer `name`'s position on `topic` (the next offset it has not handled);
    /// returns the position now recorded, once committed. `reset` lets it move back.
    pub async fn commit(
        &mut self,
        name: &str,
        topic: &str,
        offset: u64,
        reset: bool,
    ) -> Result<u64, ClientError> {
        let c = OffsetCommit { name: name.into(), topic: topic.into(), offset, reset };
        match self.call(&Request::Commit(c)).await? {
            Response::Committed { offset, .. } => Ok(offset),
            Response::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Named consumers (`name` empty: all) with their committed positions, as the server knows them.
    pub async fn consumers(&mut self, name: &str) -> Result<Vec<ConsumerPosition>, ClientError> {
        match self.call(&Request::Consumers { name: name.into() }).await? {
            Response::ConsumerList(list) => Ok(list),
            Response::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Round trip.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        match self.call(&Request::Ping).await? {
            Response::Pong => Ok(()),
            Response::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Sends one legacy frame (no reply comes back).
    pub async fn send_legacy(
        &mut self,
        priority: Priority,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        legacy::encode(priority, topic, payload, &mut self.out);
        self.flush().await
    }

    /// Sends raw bytes (tests and fault injection).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.wr.write_all(bytes).await?;
        self.wr.flush().await?;
        Ok(())
    }

    /// Waits until the server closes the connection (or `timeout`); true if it closed.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        let fut = async {
            loop {
                match self.rd.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => self.buf.clear(),
                }
            }
        };
        rt::time::timeout(timeout, fut).await.is_ok()
    }
}

/// Runs one client call on a connection to some member until it succeeds or its failure is final
/// (a macro rather than a function taking an async closure: the futures must stay `Send`).
macro_rules! with_retry {
    ($self:ident, $c:ident => $call:expr) => {{
        let mut attempt = 0;
        $self.redirects = 0;
        loop {
            attempt += 1;
            let r = match $self.conn().await {
                Ok($c) => $call.await,
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => break Ok(v),
                Err(e) => {
                    if let Err(e) = $self.recover(e, attempt).await {
                        break Err(e);
                    }
                }
            }
        }
    }};
}

/// A client of a whole cluster: it follows "not leader" redirects, moves to another member when
/// one is unreachable, and waits out "overloaded" / "unavailable". Retried publishes carry the
/// same idempotency keys, so a retry of something that was in fact stored gets its original
/// offset back (see the dedup window).
pub struct ClusterClient {
    addrs: Vec<SocketAddr>,
    next: usize,
    conn: Option<Client>,
    token: String,
    name: String,
    /// Connect over TLS with these settings (none = plain TCP).
    pub tls: Option<ClientTls>,
    /// Attempts per request before giving up.
    pub max_attempts: u32,
    /// Pause after a failed attempt that gave no retry-after.
    pub backoff: Duration,
    /// Per-request timeout of each connection.
    pub timeout: Duration,
    /// Longest pause between two redirects of one request (see [`redirect_pause`]).
    pub max_redirect_pause: Duration,
    /// "Not leader" redirects in a row in the current request.
    redirects: u32,
    /// Jitter for redirect pauses; drawn from the runtime only once a pause is needed, so a
    /// client that is never bounced draws nothing.
    rng: Option<rt::NodeRng>,
}

/// First pause between two redirects in a row; doubled per further redirect.
const FIRST_REDIRECT_PAUSE: Duration = Duration::from_millis(10);

/// The pause before following the `n`-th "not leader" redirect in a row of one request: none for
/// the first (the common single hop), then 10 ms doubling up to `max`, each drawn uniformly from
/// its upper half, so members that disagree about the leader (an election in progress, a stale
/// view) do not bounce a client in a tight loop and clients bounced together spread out.
pub fn redirect_pause(n: u32, max: Duration, rng: &mut impl rand::Rng) -> Duration {
    if n <= 1 || max.is_zero() {
        return Duration::ZERO;
    }
    let ceiling = FIRST_REDIRECT_PAUSE.saturating_mul(1 << (n - 2).min(16)).min(max);
    let ceiling_us = ceiling.as_micros() as u64;
    Duration::from_micros(rng.random_range(ceiling_us / 2..=ceiling_us))
}

impl ClusterClient {
    /// A client that tries `addrs` in order.
    pub fn new(addrs: Vec<SocketAddr>, name: impl Into<String>, token: impl Into<String>) -> Self {
        assert!(!addrs.is_empty(), "a cluster client needs at least one address");
        ClusterClient {
            addrs,
            next: 0,
            conn: None,
            token: token.into(),
            name: name.into(),
            tls: None,
            max_attempts: 30,
            backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
            max_redirect_pause: Duration::from_millis(200),
            redirects: 0,
            rng: None,
        }
    }

    /// The address of the connection in use, if any.
    pub fn connected_to(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|_| self.addrs[(self.next + self.addrs.len() - 1) % self.addrs.len()])
    }

    async fn conn(&mut self) -> Result<&mut Client, ClientError> {
        if self.conn.is_none() {
            let addr = self.addrs[self.next % self.addrs.len()];
            self.next = (self.next + 1) % self.addrs.len();
            let mut c = Client::connect_with(addr, self.tls.as_ref()).await?;
            c.set_timeout(self.timeout);
            c.hello(&self.name, &self.token).await?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// What to do after a failed attempt; `Err` ends the request.
    async fn recover(&mut self, e: ClientError, attempt: u32) -> Result<(), ClientError> {
        if !matches!(e, ClientError::Server(_) | ClientError::Encode(_)) {
            // Broken or out of step (e.g. timed out with the reply still on its way): useless even
            // after the last attempt, since that late reply would answer the next request.
            self.conn = None;
        }
        if attempt >= self.max_attempts {
            return Err(e);
        }
        let pause = match &e {
            ClientError::Server(f) if f.code == wire::ErrorCode::NotLeader => {
                self.conn = None;
                if let Some(i) = f.leader.parse::<SocketAddr>().ok().and_then(|l| {
                    if !self.addrs.contains(&l) {
                        self.addrs.push(l);
                    }
                    self.addrs.iter().position(|a| *a == l)
                }) {
                    self.next = i;
                    self.redirects += 1;
                    if self.redirects > 1 {
                        let rng = self.rng.get_or_insert_with(rt::node_rng);
                        redirect_pause(self.redirects, self.max_redirect_pause, rng)
                    } else {
                        Duration::ZERO
                    }
                } else {
                    self.backoff
                }
            }
            ClientError::Server(f) if f.code.is_retryable() => {
                if f.code == wire::ErrorCode::Unavailable {
                    // This member cannot commit now (no leader it knows of, or it was removed
                    // from the cluster and will never learn one): ask the next member.
                    self.conn = None;
                }
                Duration::from_millis(u64::from(f.retry_after_ms)).max(Duration::from_millis(10))
            }
            ClientError::Server(_) | ClientError::Encode(_) => return Err(e),
            _ => {
                // The connection is broken or out of step: drop it and try the next member.
                self.conn = None;
                self.backoff
            }
        };
        if !pause.is_zero() {
            rt::time::sleep(pause).await;
        }
        Ok(())
    }

    /// Publishes one frame, retrying (same keys) until acknowledged or out of attempts.
    pub async fn publish(&mut self, events: Vec<Event>) -> Result<Vec<AckItem>, ClientError> {
        with_retry!(self, c => c.publish(events.clone()))
    }

    /// Reads from whichever member answers (see [`Client::fetch`]).
    pub async fn fetch(&mut self, topic: &str, offset: u64, max_events: u32) -> Result<Fetched, ClientError> {
        with_retry!(self, c => c.fetch(topic, offset, max_events))
    }

    /// The member list this client tries (redirect targets are added to it).
    pub fn members(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Reads from whichever member answers (see [`Client::read`]).
    pub async fn read(
        &mut self,
        topic: &str,
        offset: u64,
        max_events: u32,
        linearizable: bool,
        wait_ms: u32,
    ) -> Result<Fetched, ClientError> {
        with_retry!(self, c => c.read(topic, offset, max_events, linearizable, wait_ms))
    }

    /// An admin request, sent to the leader (status: to whichever member answers).
    pub async fn admin(&mut self, req: AdminRequest) -> Result<String, ClientError> {
        with_retry!(self, c => c.admin(req.clone()))
    }

    /// Commits a consumer position through the leader (see [`Client::commit`]); a retry is safe:
    /// a position never moves back, so committing the same offset twice changes nothing.
    pub async fn commit(
        &mut self,
        name: &str,
        topic: &str,
        offset: u64,
        reset: bool,
    ) -> Result<u64, ClientError> {
        with_retry!(self, c => c.commit(name, topic, offset, reset))
    }

    /// Named consumers from whichever member answers (see [`Client::consumers`]).
    pub async fn consumers(&mut self, name: &str) -> Result<Vec<ConsumerPosition>, ClientError> {
        with_retry!(self, c => c.consumers(name))
    }

    /// The committed position of consumer `name` on `topic`, if it ever committed one.
    pub async fn committed(&mut self, name: &str, topic: &str) -> Result<Option<u64>, ClientError> {
        let list = self.consumers(name).await?;
        Ok(list.iter().find(|p| p.topic == topic).map(|p| p.committed))
    }
}

/// A subscription to one topic: yields committed events in offset order, from any member,
/// waiting (long poll) when there is nothing new. Survives member failures (it moves to
/// another member and resumes at its next offset), so a consumer sees no gap and no repeat.
pub struct Subscription {
    client: ClusterClient,
    topic: String,
    next_offset: u64,
    linearizable: bool,
    /// How long one poll waits on the server for new events.
    pub wait_ms: u32,
}

impl Subscription {
    /// Follows `topic` from `from` on the cluster at `addrs`.
    pub fn new(client: ClusterClient, topic: impl Into<String>, from: u64, linearizable: bool) -> Self {
        Subscription { client, topic: topic.into(), next_offset: from, linearizable, wait_ms: 10_000 }
    }

    /// The offset of the next event this subscription will return.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Continues from `offset` (e.g. the first retained offset after an out-of-range answer).
    pub fn seek(&mut self, offset: u64) {
        self.next_offset = offset;
    }

    /// The next events (at least one, unless the wait ran out: then empty), and the topic's end
    /// offset as the answering member knows it.
    pub async fn next_batch(&mut self, max: u32) -> Result<(Vec<StoredEvent>, u64), ClientError> {
        let page =
            self.client.read(&self.topic, self.next_offset, max, self.linearizable, self.wait_ms).await?;
        if let Some(first) = page.events.first()
            && first.offset != self.next_offset
        {
            return Err(ClientError::Inconsistent(format!(
                "asked for offset {}, got {}",
                self.next_offset, first.offset
            )));
        }
        self.next_offset = page.next_offset.max(self.next_offset);
        Ok((page.events, page.end_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ErrorCode;

    #[test]
    fn an_error_says_its_code_and_retry_hint_once() {
        let mut e = ErrorFrame::new(
            ErrorCode::Unavailable,
            "unavailable: no leader elected yet; retry after 200 ms with the same idempotency key",
        );
        e.retry_after_ms = 200;
        let text = ClientError::Server(e).to_string();
        assert_eq!(text.matches("unavailable").count(), 1, "{text}");
        assert_eq!(text.matches("retry after").count(), 1, "{text}");
        let mut e = ErrorFrame::new(ErrorCode::Overloaded, "server is at its in-flight limit");
        e.retry_after_ms = 50;
        assert_eq!(describe(&e), "overloaded: server is at its in-flight limit (retry after 50 ms)");
        let mut e = ErrorFrame::new(ErrorCode::NotLeader, "not the leader");
        e.leader = "10.0.0.1:7070".into();
        assert_eq!(describe(&e), "not_leader: not the leader (leader at 10.0.0.1:7070)");
    }

    #[test]
    fn redirects_in_a_row_pause_longer_with_jitter_up_to_a_bound() {
        let max = Duration::from_millis(200);
        let mut rng = crate::rt::rng_from_seed(7);
        assert_eq!(redirect_pause(1, max, &mut rng), Duration::ZERO, "the first hop is at once");
        for (n, ceiling_ms) in [(2, 10), (3, 20), (4, 40), (5, 80), (6, 160), (7, 200), (30, 200)] {
            let ceiling = Duration::from_millis(ceiling_ms);
            for _ in 0..50 {
                let p = redirect_pause(n, max, &mut rng);
                assert!(
                    p >= ceiling / 2 && p <= ceiling,
                    "redirect {n}: {p:?} outside {:?}..={ceiling:?}",
                    ceiling / 2
                );
            }
        }
        let draws: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| redirect_pause(6, max, &mut rng)).collect();
        assert!(draws.len() > 10, "jittered: {draws:?}");
        assert_eq!(redirect_pause(5, Duration::ZERO, &mut rng), Duration::ZERO, "a zero bound turns it off");
    }

    #[test]
    fn an_out_of_range_read_says_the_first_available_offset() {
        let msg = "offset 0 of topic `a` is out of range, first available is 1200";
        let e = ClientError::Server(ErrorFrame::new(ErrorCode::OutOfRange, msg));
        assert_eq!(e.first_available(), Some(1200));
        assert_eq!(e.to_string(), format!("out_of_range: {msg}"));
        let full = ClientError::Server(ErrorFrame::new(ErrorCode::OutOfRange, "topic `a` is full"));
        assert_eq!(full.first_available(), None);
        assert_eq!(ClientError::Server(ErrorFrame::new(ErrorCode::Internal, msg)).first_available(), None);
    }
}
