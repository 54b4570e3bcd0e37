//! One client connection: decode frames, submit publishes in stream order, pipeline replies.
//!
//! Consecutive publishes decoded from one read (legacy frames and acked frames alike) are
//! submitted to the service as one batch, in stream order; replies go back in request order.
//! Backpressure: an acked publish that finds the server full is answered "overloaded, retry
//! after"; a legacy frame (which has no reply) instead stops the connection from reading until
//! capacity frees up, so its bytes wait in the client's socket rather than in server memory.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use futures_util::stream::{FuturesOrdered, StreamExt};

use super::auth::Roles;
use super::convert::{admin_command, check_admin, error_frame};
use super::{InflightGuard, Shared};
use crate::config::{IngestConfig, Role};
use crate::event::{Event, validate_topic};
use crate::rt;
use crate::rt::io::{AsyncReadExt, AsyncWriteExt};
use crate::rt::sync::{Latch, OwnedSemaphorePermit};
use crate::service::{EventService, FetchReply, ReadOptions};
use crate::wire::{
    AckItem, AdminRequest, ErrorCode, ErrorFrame, Inbound, Request, Response, StreamDecoder, StreamError,
    acked,
};

type Replies = Vec<(u64, Response)>;
type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A finished request: its replies, and what it holds until they are written.
struct Done {
    replies: Replies,
    /// The publish's share of the server-wide in-flight capacity, released only once the acks
    /// are written: a client that never reads its acks holds capacity (and so gets "overloaded"
    /// and stops being read) instead of piling unwritten acks up in server memory.
    hold: Option<InflightGuard>,
    /// FETCH/READ replies in `replies` (see [`MAX_PENDING_READS`]).
    reads: usize,
}

impl From<Replies> for Done {
    fn from(replies: Replies) -> Self {
        Done { replies, hold: None, reads: 0 }
    }
}

/// FETCH/READ requests a connection may have outstanding (answered or not, but unwritten); the
/// next one waits. Each holds up to `max_fetch_events` events, so this bounds a connection's
/// share of read replies independently of the pipelining depth.
const MAX_PENDING_READS: usize = 8;

/// First capacity of a connection's read buffer.
const INITIAL_BUF: usize = 16 * 1024;

/// How often a connection waiting for the buffer budget looks again.
const BUDGET_RECHECK: Duration = Duration::from_millis(10);

/// Replies gathered into one write at most (bytes; one reply may exceed it).
const WRITE_BATCH: usize = 256 * 1024;

/// A buffer larger than this is given back when it empties, so one big frame or reply does not
/// pin its memory for the rest of the connection.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Longest long-poll wait a read may ask for.
const MAX_READ_WAIT_MS: u32 = 30_000;

/// Bytes read per read call at most (the buffer also holds at most one frame plus this).
const READ_CHUNK: usize = 64 * 1024;

/// Where each event of an acked publish goes: into the batch, or rejected up front.
#[derive(Debug)]
enum Slot {
    Batch(usize),
    Rejected(ErrorFrame),
}

/// One frame's share of a batch.
#[derive(Debug)]
enum Part {
    Acked { request_id: u64, slots: Vec<Slot> },
    Legacy,
}

/// Publishes collected from consecutive frames, submitted together.
#[derive(Default)]
struct Batch {
    parts: Vec<Part>,
    events: Vec<Event>,
    has_legacy: bool,
    /// Replies to publishes refused before submission, kept in order behind the batch.
    after: Vec<Pending>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.after.is_empty()
    }
}

/// A decoded unit (or fatal stream error) waiting for a stalled batch ahead of it.
#[derive(Debug)]
enum Item {
    Unit(Inbound),
    Fatal(StreamError),
}

struct Conn<S> {
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    id: u64,
    decoder: StreamDecoder,
    pending: FuturesOrdered<Pending>,
    /// FETCH/READ replies in `pending` or gathered and not yet written.
    reads_pending: usize,
    /// What this connection may do now (see `auth`).
    roles: Roles,
    /// The credential a successful HELLO logged in with.
    credential: Option<String>,
    /// Failed HELLOs so far.
    failed_hellos: u32,
    /// False after EOF, a fatal stream error, or shutdown.
    reading: bool,
    /// A batch with legacy frames waiting for capacity.
    stalled: Option<Batch>,
    /// The unit decoded right behind a stalled batch.
    deferred: Option<Item>,
}

/// Serves one connection until the client leaves, a limit is hit, or shutdown completes.
pub(crate) async fn serve<S: EventService, IO: rt::io::AsyncRead + rt::io::AsyncWrite + Send + Unpin>(
    stream: IO,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared<S>>,
    shutdown: Arc<Latch>,
) {
    let cfg = shared.config.clone();
    let clock = shared.clock.clone();
    let (mut rd, mut wr) = rt::io::split(stream);
    let mut conn = Conn::new(shared, peer, id);
    let mut buf = BytesMut::with_capacity(INITIAL_BUF);
    let mut out = BytesMut::new();
    let mut buffered = BufferedBytes { metrics: conn.shared.metrics.clone(), mine: 0 };
    let mut last_read = clock.mono();
    // When the first byte of the partly received frame in `buf` arrived: the whole frame must
    // arrive within `read_timeout_ms` of it (a per-byte timeout lets a trickler hold a buffer for ever).
    let mut frame_start: Option<Duration> = None;
    let mut was_readable = true;
    let mut shutting_down = shutdown.is_set();
    let mut grace_deadline = None;
    if shutting_down {
        conn.reading = false;
        grace_deadline = Some(clock.mono());
    }
    let max_inflight = cfg.max_inflight_per_connection;
    let buf_limit = cfg.max_frame_bytes + READ_CHUNK;
    tracing::debug!(conn = id, %peer, "connection open");

    let reason = loop {
        if (conn.reading || conn.deferred.is_some()) && conn.stalled.is_none() {
            let before = buf.len();
            conn.decode_and_submit(&mut buf, max_inflight);
            frame_start = next_frame_start(frame_start, before, buf.len(), last_read);
            if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
                buf = BytesMut::with_capacity(INITIAL_BUF);
            }
        }
        buffered.set(buf.capacity() + out.capacity());
        if !conn.reading && conn.stalled.is_none() && conn.deferred.is_none() && conn.pending.is_empty() {
            break "done";
        }
        let can_read = conn.may_read(max_inflight) && buf.len() < buf_limit;
        // Over the server-wide buffer budget, a connection holding more than a small buffer
        // waits (its frame deadline still runs, so a trickler cannot hold the budget).
        let over_budget = can_read
            && buffered.mine > KEEP_CAPACITY
            && conn.shared.metrics.buffered_bytes.get() > cfg.max_buffered_bytes as i64;
        // Timeouts measure the client, never our own backpressure: the clock for a stalled or
        // idle client starts when we are ready to read again.
        if can_read && !was_readable {
            last_read = clock.mono();
            frame_start = frame_start.map(|_| last_read);
        }
        was_readable = can_read;
        let deadline = if grace_deadline.is_some() {
            grace_deadline
        } else if can_read {
            read_deadline(&cfg, !buf.is_empty(), conn.pending.is_empty(), frame_start, last_read)
        } else {
            None
        };
        let capacity = conn.stalled.as_ref().map(|b| conn.shared.acquire_capacity(&b.events));
        rt::select! {
            biased;
            _ = shutdown.wait(), if !shutting_down => {
                shutting_down = true;
                conn.reading = false;
                grace_deadline = Some(clock.mono() + Duration::from_millis(cfg.shutdown_grace_ms));
            }
            Some(done) = conn.pending.next(), if !conn.pending.is_empty() => {
                if let Err(reason) = conn.write_replies(done, &mut out, &mut wr, &mut buffered, buf.capacity()).await {
                    break reason;
                }
            }
            permit = async { capacity?.await }, if conn.stalled.is_some() => {
                let batch = conn.stalled.take().expect("guarded by the select condition");
                match permit {
                    Some(permit) => conn.submit_with(batch, Some(permit)),
                    None => break "server closed",
                }
            }
            // Re-check the budget now and then (it frees as other connections drain).
            _ = rt::time::sleep(BUDGET_RECHECK), if over_budget => {}
            // At most one chunk per read, so no connection overshoots the budget by more.
            n = read_chunk(&mut rd, &mut buf), if can_read && !over_budget => {
                if conn.took_read(n, &mut buf) {
                    last_read = clock.mono();
                }
            }
            _ = sleep_until_opt(&clock, deadline) => {
                break conn.deadline_passed(grace_deadline.is_some(), &buf, &mut out, &mut wr).await;
            }
        }
    };
    let _ = wr.shutdown().await;
    tracing::debug!(conn = conn.id, peer = %conn.peer, reason, "connection closed");
}

/// When a connection that may read gives up on its client: the read timeout after the first
/// byte of a partly received frame (everything complete was decoded, so buffered bytes are one),
/// or the idle timeout after the last read if nothing is buffered or pending; else none.
fn read_deadline(
    cfg: &IngestConfig,
    partial_frame: bool,
    nothing_pending: bool,
    frame_start: Option<Duration>,
    last_read: Duration,
) -> Option<Duration> {
    if partial_frame {
        Some(frame_start.unwrap_or(last_read) + Duration::from_millis(cfg.read_timeout_ms))
    } else if nothing_pending {
        Some(last_read + Duration::from_millis(cfg.idle_timeout_ms))
    } else {
        None
    }
}

/// Writes `bytes` and flushes.
async fn write_flush<W: rt::io::AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

/// A request's single reply, ready now.
fn ready_reply(request_id: u64, resp: Response) -> Pending {
    Box::pin(std::future::ready(vec![(request_id, resp)].into()))
}

/// When the partial frame left in the buffer after decoding started: none if the buffer is
/// empty; the last read if decoding consumed something (the frame that completed ended in the last
/// read, so what follows began there); unchanged otherwise (or the last read, for a new partial).
fn next_frame_start(
    current: Option<Duration>,
    len_before: usize,
    len_after: usize,
    last_read: Duration,
) -> Option<Duration> {
    if len_after == 0 {
        None
    } else if len_after < len_before {
        Some(last_read)
    } else {
        Some(current.unwrap_or(last_read))
    }
}

/// The request id of a partly received acked frame, if the buffer holds its whole header (0 if
/// it starts with the magic but the id has not arrived); `None` for legacy bytes.
fn acked_request_id(buf: &[u8]) -> Option<u64> {
    if buf.len() < 4 || !acked::starts_with_magic(buf) {
        return None;
    }
    Some(buf.get(12..20).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes))
}

/// This connection's share of the server-wide buffered-bytes gauge, given back when it ends.
struct BufferedBytes {
    metrics: Arc<crate::metrics::IngestMetrics>,
    mine: usize,
}

impl BufferedBytes {
    fn set(&mut self, now: usize) {
        self.metrics.buffered_bytes.add(now as i64 - self.mine as i64);
        self.mine = now;
    }
}

impl Drop for BufferedBytes {
    fn drop(&mut self) {
        self.metrics.buffered_bytes.add(-(self.mine as i64));
    }
}

/// Reads what is there, at most [`READ_CHUNK`] bytes.
async fn read_chunk<R: rt::io::AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    rd.take(READ_CHUNK as u64).read_buf(buf).await
}

async fn sleep_until_opt(clock: &rt::NodeClock, deadline: Option<Duration>) {
    match deadline {
        Some(d) => clock.sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn encode_replies(replies: &Replies, out: &mut BytesMut) {
    for (request_id, resp) in replies {
        resp.encode(*request_id, out);
    }
}

impl<S: EventService> Conn<S> {
    fn new(shared: Arc<Shared<S>>, peer: SocketAddr, id: u64) -> Self {
        Conn {
            decoder: StreamDecoder::new(shared.config.max_frame_bytes),
            pending: FuturesOrdered::new(),
            reads_pending: 0,
            roles: shared.auth.anonymous(),
            credential: None,
            failed_hellos: 0,
            reading: true,
            stalled: None,
            deferred: None,
            shared,
            peer,
            id,
        }
    }

    /// Whether the connection may read more (the buffer's own bound aside): it is reading,
    /// nothing waits for capacity, and the pipelining bound is not reached.
    fn may_read(&self, max_inflight: usize) -> bool {
        self.reading && self.stalled.is_none() && self.deferred.is_none() && self.pending.len() < max_inflight
    }

    /// Writes `done`'s replies together with others already finished (up to [`WRITE_BATCH`]
    /// bytes) in one write, then gives back what they held; `Err` is why the connection closes.
    async fn write_replies<W: rt::io::AsyncWrite + Unpin>(
        &mut self,
        done: Done,
        out: &mut BytesMut,
        wr: &mut W,
        buffered: &mut BufferedBytes,
        buf_capacity: usize,
    ) -> Result<(), &'static str> {
        let mut held = Vec::new();
        let mut reads = 0;
        let mut take = |done: Done, out: &mut BytesMut| {
            encode_replies(&done.replies, out);
            reads += done.reads;
            held.extend(done.hold);
        };
        take(done, out);
        // Gather other replies that are already done (up to a bound), then write once.
        while out.len() < WRITE_BATCH {
            match self.pending.next().now_or_never() {
                Some(Some(more)) => take(more, out),
                _ => break,
            }
        }
        buffered.set(buf_capacity + out.capacity());
        if !out.is_empty() {
            let limit = Duration::from_millis(self.shared.config.write_timeout_ms);
            match rt::time::timeout(limit, write_flush(wr, out)).await {
                Ok(Ok(())) => {
                    out.clear();
                    if out.capacity() > KEEP_CAPACITY {
                        *out = BytesMut::new();
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(conn = self.id, error = %e, "write failed");
                    return Err("write failed");
                }
                Err(_) => {
                    self.shared.metrics.closed_write_timeout.inc();
                    return Err("write timeout");
                }
            }
        }
        drop(held);
        self.reads_pending -= reads;
        Ok(())
    }

    /// Takes a read's outcome: true if bytes arrived; EOF or an error stops reading (and drops
    /// a partial frame).
    fn took_read(&mut self, n: std::io::Result<usize>, buf: &mut BytesMut) -> bool {
        match n {
            Ok(0) => {
                self.reading = false;
                if !buf.is_empty() {
                    tracing::debug!(
                        conn = self.id,
                        bytes = buf.len(),
                        "EOF inside a frame; partial frame dropped"
                    );
                    buf.clear();
                }
                false
            }
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(conn = self.id, error = %e, "read failed");
                self.reading = false;
                buf.clear();
                false
            }
        }
    }

    /// Why the connection closes now its deadline passed: the shutdown grace ended, the client
    /// idled, or it left a frame unfinished (an acked client is told so, best effort).
    async fn deadline_passed<W: rt::io::AsyncWrite + Unpin>(
        &mut self,
        grace: bool,
        buf: &BytesMut,
        out: &mut BytesMut,
        wr: &mut W,
    ) -> &'static str {
        if grace {
            return "shutdown grace elapsed";
        }
        if buf.is_empty() {
            self.shared.metrics.closed_idle.inc();
            return "idle timeout";
        }
        self.shared.metrics.closed_read_timeout.inc();
        if let Some(request_id) = acked_request_id(buf) {
            // The acked protocol can say why: one error frame, best effort, then close.
            let cfg = &self.shared.config;
            let err = ErrorFrame::new(
                ErrorCode::Malformed,
                format!("frame not completed within {} ms of its first byte", cfg.read_timeout_ms),
            );
            out.clear();
            Response::Error(err).encode(request_id, out);
            let limit = Duration::from_millis(cfg.write_timeout_ms.min(1_000));
            let _ = rt::time::timeout(limit, write_flush(wr, out)).await;
        }
        "read timeout (frame not completed in time)"
    }
}

impl<S: EventService> Conn<S> {
    /// Decodes buffered frames and submits them in stream order, stopping at the pipelining
    /// bound or when a batch stalls for capacity (the unit behind it waits in `deferred`).
    fn decode_and_submit(&mut self, buf: &mut BytesMut, max_inflight: usize) {
        let max_batch = self.shared.config.max_events_per_frame;
        let mut batch = Batch::default();
        while self.pending.len() + usize::from(!batch.is_empty()) < max_inflight {
            let item = match self.deferred.take() {
                Some(item) => item,
                None if !self.reading => break,
                None => match self.decoder.decode(buf) {
                    Ok(Some(unit)) => Item::Unit(unit),
                    Ok(None) => break,
                    Err(e) => {
                        buf.clear();
                        self.reading = false;
                        Item::Fatal(e)
                    }
                },
            };
            // A read beyond the per-connection bound waits (behind the open batch) until an
            // earlier read reply is written.
            let is_read = matches!(
                &item,
                Item::Unit(Inbound::Request { request: Request::Fetch { .. } | Request::Read { .. }, .. })
            );
            if is_read && self.reads_pending >= MAX_PENDING_READS {
                self.deferred = Some(item);
                break;
            }
            // Anything that is not a publish fitting the open batch closes the batch first, so
            // replies and storage keep stream order.
            let fits = match &item {
                Item::Unit(Inbound::Legacy(_)) => batch.events.len() < max_batch,
                Item::Unit(Inbound::Request { request: Request::Publish(ev), .. }) => {
                    batch.events.len() + ev.len() <= max_batch
                }
                Item::Unit(Inbound::LegacyMalformed(_)) => true,
                _ => false,
            };
            if !fits && !batch.is_empty() {
                self.submit(std::mem::take(&mut batch));
                if self.stalled.is_some() {
                    self.deferred = Some(item);
                    return;
                }
            }
            match item {
                Item::Unit(unit) => self.handle(unit, &mut batch),
                Item::Fatal(e) => self.fatal(e),
            }
        }
        self.submit(batch);
    }

    /// Adds a publish to the open batch, or queues the reply to any other request.
    fn handle(&mut self, unit: Inbound, batch: &mut Batch) {
        let m = &self.shared.metrics;
        match unit {
            Inbound::Legacy(event) => {
                m.legacy_frames.inc();
                if !self.roles.has(Role::Publish) || !self.shared.config.topic_allowed(&event.topic) {
                    m.legacy_refused.inc();
                    return;
                }
                batch.has_legacy = true;
                batch.parts.push(Part::Legacy);
                batch.events.push(event);
            }
            Inbound::LegacyMalformed(e) => {
                m.legacy_frames.inc();
                m.legacy_malformed.inc();
                tracing::debug!(conn = self.id, error = %e, "malformed legacy frame");
            }
            Inbound::Request { request_id, request: Request::Publish(events) } => {
                m.acked_frames.inc();
                self.handle_publish(request_id, events, batch);
            }
            Inbound::Request { request_id, request: Request::Hello { client, token } } => {
                m.acked_frames.inc();
                self.handle_hello(request_id, &client, &token);
            }
            Inbound::Request { request_id, request: Request::Ping } => {
                m.acked_frames.inc();
                self.pending.push_back(ready_reply(request_id, Response::Pong));
            }
            Inbound::Request {
                request_id,
                request: req @ (Request::Fetch { .. } | Request::Read { .. } | Request::Admin(_)),
            } => {
                m.acked_frames.inc();
                self.handle_query(request_id, req);
            }
            Inbound::Request {
                request_id,
                request: req @ (Request::Commit(_) | Request::Consumers { .. }),
            } => {
                m.acked_frames.inc();
                self.handle_consumer(request_id, req);
            }
            Inbound::BadRequest { request_id, error } => {
                m.acked_frames.inc();
                m.acked_errors.inc();
                tracing::debug!(conn = self.id, error = %error, "bad acked frame");
                self.pending.push_back(ready_reply(request_id, Response::Error(error)));
            }
        }
    }

    /// Adds an acked publish's events to the open batch (each rejected up front if its topic is
    /// invalid or not allowed), or refuses the whole frame (not allowed to publish, too many events).
    fn handle_publish(&mut self, request_id: u64, events: Vec<Event>, batch: &mut Batch) {
        let m = &self.shared.metrics;
        let cfg = &self.shared.config;
        let max_batch = cfg.max_events_per_frame;
        let error = if let Some(denied) = self.denied(Some(Role::Publish)) {
            Some(denied)
        } else if events.len() > max_batch {
            Some(ErrorFrame::new(
                ErrorCode::Malformed,
                format!("{} events in one frame; the limit is {max_batch}", events.len()),
            ))
        } else {
            None
        };
        if let Some(err) = error {
            m.acked_errors.inc();
            batch.after.push(ready_reply(request_id, Response::Error(err)));
            return;
        }
        let mut slots = Vec::with_capacity(events.len());
        for event in events {
            if let Err(why) = validate_topic(&event.topic) {
                m.events_rejected.inc();
                slots.push(Slot::Rejected(ErrorFrame::new(ErrorCode::Malformed, why)));
            } else if !cfg.topic_allowed(&event.topic) {
                m.events_rejected.inc();
                slots.push(Slot::Rejected(ErrorFrame::new(
                    ErrorCode::UnknownTopic,
                    format!("topic `{}` is not allowed on this server", event.topic),
                )));
            } else {
                slots.push(Slot::Batch(batch.events.len()));
                batch.events.push(event);
            }
        }
        batch.parts.push(Part::Acked { request_id, slots });
    }

    /// Logs the connection in (or, on a wrong token, out: answered late, and too many close it).
    fn handle_hello(&mut self, request_id: u64, client: &str, token: &str) {
        let m = &self.shared.metrics;
        let auth = &self.shared.auth;
        let anonymous = auth.anonymous();
        let login = if token.is_empty() && auth.has_credentials() && anonymous != Roles::NONE {
            // No token where anonymous clients may work: a HELLO, not a failed login.
            Some((None, anonymous))
        } else {
            auth.check(token).map(|(name, roles)| (Some(name), roles))
        };
        if let Some((name, roles)) = login {
            self.roles = roles;
            self.credential = name.map(str::to_string);
            let name = name.unwrap_or("anonymous");
            tracing::debug!(conn = self.id, client = %client, credential = name, "hello");
            let resp = Response::HelloOk {
                server: self.shared.server_name.clone(),
                node_id: self.shared.service.node_id(),
                max_frame_bytes: u32::try_from(self.shared.config.max_frame_bytes).unwrap_or(u32::MAX),
            };
            self.pending.push_back(ready_reply(request_id, resp));
            return;
        }
        self.failed_hellos += 1;
        m.hello_failures.inc();
        m.acked_errors.inc();
        if let Some(was) = self.credential.take() {
            tracing::info!(conn = self.id, peer = %self.peer, credential = %was, "wrong-token HELLO: logged out");
        }
        self.roles = auth.anonymous();
        let delay = auth.failure_delay(self.failed_hellos);
        let mut message = "wrong token".to_string();
        if self.failed_hellos >= auth.max_failures() {
            m.closed_auth_failures.inc();
            tracing::info!(conn = self.id, peer = %self.peer, failures = self.failed_hellos, "closing after failed HELLOs");
            message = format!("wrong token; closing after {} failed HELLOs", self.failed_hellos);
            self.reading = false;
        }
        let err = Response::Error(ErrorFrame::new(ErrorCode::Unauthorized, message));
        self.pending.push_back(Box::pin(async move {
            rt::time::sleep(delay).await;
            vec![(request_id, err)].into()
        }));
    }

    /// Queues the answer to a FETCH, READ or ADMIN request (or its refusal, without the role).
    fn handle_query(&mut self, request_id: u64, req: Request) {
        let need = match &req {
            Request::Admin(AdminRequest::Status) => None,
            Request::Admin(AdminRequest::Topics) => Some(Role::Consume),
            Request::Admin(_) => Some(Role::Admin),
            _ => Some(Role::Consume),
        };
        if let Some(err) = self.denied(need) {
            self.shared.metrics.acked_errors.inc();
            self.pending.push_back(ready_reply(request_id, Response::Error(err)));
            return;
        }
        let (topic, offset, max_events, opts) = match req {
            Request::Fetch { topic, offset, max_events } => {
                (topic, offset, max_events, ReadOptions::default())
            }
            Request::Read { topic, offset, max_events, linearizable, wait_ms } => (
                topic,
                offset,
                max_events,
                ReadOptions { linearizable, wait_ms: wait_ms.min(MAX_READ_WAIT_MS) },
            ),
            Request::Admin(a) => {
                if let Err(e) = check_admin(&a) {
                    self.shared.metrics.acked_errors.inc();
                    self.pending.push_back(ready_reply(request_id, Response::Error(e)));
                    return;
                }
                let fut = self.shared.service.admin(admin_command(a));
                self.pending.push_back(Box::pin(async move {
                    let resp = match fut.await {
                        Ok(text) => Response::AdminOk(text),
                        Err(e) => Response::Error(error_frame(&e)),
                    };
                    vec![(request_id, resp)].into()
                }));
                return;
            }
            _ => unreachable!("matched above"),
        };
        let cfg = &self.shared.config;
        let max = (max_events as usize).min(cfg.max_fetch_events);
        let max_bytes = cfg.max_fetch_bytes;
        let fut = self.shared.service.read(topic.clone(), offset, max, opts);
        self.pending.push_back(Box::pin(async move {
            let resp = match fut.await {
                Ok(mut r) => {
                    cap_reply_bytes(&topic, &mut r, max_bytes);
                    Response::Fetched {
                        topic,
                        next_offset: r.next_offset,
                        end_offset: r.end_offset,
                        events: r.events,
                    }
                }
                Err(e) => Response::Error(error_frame(&e)),
            };
            Done { replies: vec![(request_id, resp)], hold: None, reads: 1 }
        }));
        self.reads_pending += 1;
    }

    /// Queues the answer to a COMMIT (once committed) or CONSUMERS request; both need the
    /// consume role, and a commit a topic this server allows.
    fn handle_consumer(&mut self, request_id: u64, req: Request) {
        let refused = match &req {
            Request::Commit(c) if !self.shared.config.topic_allowed(&c.topic) => Some(ErrorFrame::new(
                ErrorCode::UnknownTopic,
                format!("topic `{}` is not allowed on this server", c.topic),
            )),
            _ => None,
        };
        if let Some(err) = self.denied(Some(Role::Consume)).or(refused) {
            self.shared.metrics.acked_errors.inc();
            self.pending.push_back(ready_reply(request_id, Response::Error(err)));
            return;
        }
        let service = &self.shared.service;
        match req {
            Request::Commit(c) => {
                let (name, topic) = (c.name.clone(), c.topic.clone());
                let fut = service.commit_offset(c);
                self.pending.push_back(Box::pin(async move {
                    let resp = match fut.await {
                        Ok(offset) => Response::Committed { name, topic, offset },
                        Err(e) => Response::Error(error_frame(&e)),
                    };
                    vec![(request_id, resp)].into()
                }));
            }
            Request::Consumers { name } => {
                let resp = match service.consumers((!name.is_empty()).then_some(name)) {
                    Ok(list) => Response::ConsumerList(list),
                    Err(e) => Response::Error(error_frame(&e)),
                };
                self.pending.push_back(ready_reply(request_id, resp));
            }
            _ => unreachable!("only consumer requests are passed here"),
        }
    }

    /// Why this connection may not make a request needing `need` (`None`: only a login when
    /// credentials are configured), or `None` if it may.
    fn denied(&self, need: Option<Role>) -> Option<ErrorFrame> {
        let auth = &self.shared.auth;
        let Some(role) = need else {
            return (auth.has_credentials() && self.credential.is_none())
                .then(|| ErrorFrame::new(ErrorCode::Unauthorized, "send HELLO with a valid token first"));
        };
        if self.roles.has(role) {
            return None;
        }
        let r = role.name();
        if auth.has_credentials() && self.credential.is_none() {
            let msg = format!("send HELLO with a token that has the `{r}` role first");
            return Some(ErrorFrame::new(ErrorCode::Unauthorized, msg));
        }
        self.shared.metrics.forbidden.inc();
        Some(if !auth.has_credentials() {
            ErrorFrame::new(
                ErrorCode::Forbidden,
                format!(
                    "the `{r}` role needs a credential and none is configured \
                     ([[ingest.clients]] with roles = [\"{r}\"], or ingest.auth_token)"
                ),
            )
        } else {
            let name = self.credential.as_deref().unwrap_or("anonymous");
            ErrorFrame::new(ErrorCode::Forbidden, format!("credential `{name}` lacks the `{r}` role"))
        })
    }

    fn fatal(&mut self, e: StreamError) {
        let m = &self.shared.metrics;
        tracing::debug!(conn = self.id, error = %e, "closing connection");
        self.reading = false;
        match e {
            StreamError::AckedTooLarge { request_id, error } => {
                m.acked_frames.inc();
                m.acked_errors.inc();
                m.closed_too_large.inc();
                self.pending.push_back(Box::pin(std::future::ready(
                    vec![(request_id, Response::Error(error))].into(),
                )));
            }
            StreamError::LegacyTooLarge { .. } => m.closed_too_large.inc(),
            StreamError::TooManyEmpty => m.closed_empty_flood.inc(),
        }
    }

    /// Reserves capacity for a batch and submits it, or answers "overloaded", or stalls it.
    fn submit(&mut self, batch: Batch) {
        debug_assert!(self.stalled.is_none());
        if batch.is_empty() {
            return;
        }
        if batch.events.is_empty() {
            self.submit_with(batch, None);
            return;
        }
        match self.shared.try_capacity(&batch.events) {
            Some(permit) => self.submit_with(batch, Some(permit)),
            None if batch.has_legacy => self.stalled = Some(batch),
            None => {
                let m = &self.shared.metrics;
                let mut err = ErrorFrame::new(ErrorCode::Overloaded, "server is at its in-flight limit");
                err.retry_after_ms = self.shared.config.overload_retry_after_ms;
                let mut replies = Vec::new();
                for part in batch.parts {
                    if let Part::Acked { request_id, .. } = part {
                        m.overloaded.inc();
                        m.acked_errors.inc();
                        replies.push((request_id, Response::Error(err.clone())));
                    }
                }
                self.pending.push_back(Box::pin(std::future::ready(replies.into())));
                self.pending.extend(batch.after);
            }
        }
    }

    /// Submits a batch (holding its capacity permit, if it has events). The service fixes the
    /// batch's position in the log at this call, so batches are stored in stream order.
    fn submit_with(&mut self, batch: Batch, permit: Option<Capacity>) {
        let Batch { parts, events, after, .. } = batch;
        let metrics = self.shared.metrics.clone();
        let permit = permit.map(|(p, b)| InflightGuard::new(p, events.len(), metrics).with_bytes(b));
        let shared = self.shared.clone();
        let started = rt::time::now();
        let fut = if events.is_empty() { None } else { Some(shared.service.publish(events)) };
        self.pending.push_back(Box::pin(async move {
            let result = match fut {
                Some(f) => f.await,
                None => Ok(Vec::new()),
            };
            let m = &shared.metrics;
            m.publish_latency_us.record(started.elapsed().as_micros() as u64);
            let mut replies = Vec::new();
            let mut hold = None;
            match result {
                Ok(appended) => {
                    hold = permit;
                    for a in &appended {
                        if a.duplicate { m.events_duplicate.inc() } else { m.events_stored.inc() }
                    }
                    for part in parts {
                        if let Part::Acked { request_id, slots } = part {
                            let items = slots
                                .into_iter()
                                .map(|s| match s {
                                    Slot::Batch(i) => {
                                        match appended.get(if crate::planted!(AckSlotsMixedUp) {
                                            appended.len().saturating_sub(i + 1)
                                        } else {
                                            i
                                        }) {
                                            Some(a) => AckItem::Stored {
                                                topic: a.topic.to_string(),
                                                offset: a.offset,
                                                duplicate: a.duplicate,
                                            },
                                            None => AckItem::Rejected(ErrorFrame::new(
                                                ErrorCode::Internal,
                                                "service returned fewer results than events",
                                            )),
                                        }
                                    }
                                    Slot::Rejected(e) => AckItem::Rejected(e),
                                })
                                .collect();
                            replies.push((request_id, Response::Ack(items)));
                        }
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::debug!(error = %e, "publish failed");
                    let frame = error_frame(&e);
                    for part in parts {
                        if let Part::Acked { request_id, .. } = part {
                            m.acked_errors.inc();
                            replies.push((request_id, Response::Error(frame.clone())));
                        }
                    }
                }
            }
            Done { replies, hold, reads: 0 }
        }));
        self.pending.extend(after);
    }
}

/// A batch's share of the in-flight capacity: its events, and their bytes on the wire.
type Capacity = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl<S> Shared<S> {
    /// What `events` need of the two budgets: their count, and their bytes on the wire (capped
    /// at the whole byte budget, so a lone batch larger than it still goes through when nothing
    /// else is in flight).
    fn capacity_need(&self, events: &[Event]) -> (u32, u32) {
        let bytes: usize = events.iter().map(acked::event_wire_len).sum();
        let bytes = bytes.min(self.config.max_inflight_bytes);
        (u32::try_from(events.len()).unwrap_or(u32::MAX), u32::try_from(bytes).unwrap_or(u32::MAX))
    }

    /// Takes `events`' capacity now, if both budgets have it.
    fn try_capacity(&self, events: &[Event]) -> Option<Capacity> {
        let (n, bytes) = self.capacity_need(events);
        let permit = self.inflight.clone().try_acquire_many_owned(n).ok()?;
        Some((permit, self.inflight_bytes.clone().try_acquire_many_owned(bytes).ok()?))
    }

    /// Waits for `events`' capacity (a stalled batch of legacy frames); `None` once the server
    /// closes.
    fn acquire_capacity(&self, events: &[Event]) -> impl Future<Output = Option<Capacity>> + Send + 'static {
        let (n, bytes) = self.capacity_need(events);
        let (inflight, inflight_bytes) = (self.inflight.clone(), self.inflight_bytes.clone());
        async move {
            let permit = inflight.acquire_many_owned(n).await.ok()?;
            Some((permit, inflight_bytes.acquire_many_owned(bytes).await.ok()?))
        }
    }
}

/// Trims a fetch reply so its frame stays within `max_bytes` (but never below one event, so a
/// consumer gets past an event larger than the cap) and moves `next_offset` back to the first
/// event left out.
pub(crate) fn cap_reply_bytes(topic: &str, r: &mut FetchReply, max_bytes: usize) {
    let mut total = acked::fetched_overhead(topic);
    let mut keep = 0;
    for s in &r.events {
        total = total.saturating_add(acked::stored_event_wire_len(s));
        if keep > 0 && total > max_bytes {
            break;
        }
        keep += 1;
    }
    if let Some(first_left_out) = r.events.get(keep) {
        r.next_offset = first_left_out.offset;
        r.events.truncate(keep);
        r.events.shrink_to_fit();
    }
}
