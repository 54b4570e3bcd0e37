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

use super::convert::{admin_command, error_frame};
use super::{InflightGuard, Shared};
use crate::event::{Event, validate_topic};
use crate::rt::io::{AsyncReadExt, AsyncWriteExt};
use crate::rt::sync::{Latch, OwnedSemaphorePermit};
use crate::rt::{self, net::TcpStream};
use crate::service::{EventService, ReadOptions};
use crate::wire::{AckItem, ErrorCode, ErrorFrame, Inbound, Request, Response, StreamDecoder, StreamError};

type Replies = Vec<(u64, Response)>;
type Pending = Pin<Box<dyn Future<Output = Replies> + Send>>;

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
    authed: bool,
    /// False after EOF, a fatal stream error, or shutdown.
    reading: bool,
    /// A batch with legacy frames waiting for capacity.
    stalled: Option<Batch>,
    /// The unit decoded right behind a stalled batch.
    deferred: Option<Item>,
}

/// Serves one connection until the client leaves, a limit is hit, or shutdown completes.
pub(crate) async fn serve<S: EventService>(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared<S>>,
    shutdown: Arc<Latch>,
) {
    let cfg = shared.config.clone();
    let clock = shared.clock.clone();
    let (mut rd, mut wr) = rt::io::split(stream);
    let mut conn = Conn {
        decoder: StreamDecoder::new(cfg.max_frame_bytes),
        pending: FuturesOrdered::new(),
        authed: cfg.auth_token.is_empty(),
        reading: true,
        stalled: None,
        deferred: None,
        shared,
        peer,
        id,
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::new();
    let mut last_read = clock.mono();
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
            conn.decode_and_submit(&mut buf, max_inflight);
        }
        if !conn.reading && conn.stalled.is_none() && conn.deferred.is_none() && conn.pending.is_empty() {
            break "done";
        }
        let can_read = conn.reading
            && conn.stalled.is_none()
            && conn.deferred.is_none()
            && conn.pending.len() < max_inflight
            && buf.len() < buf_limit;
        // Timeouts measure the client, never our own backpressure: the clock for a stalled or
        // idle client starts when we are ready to read again.
        if can_read && !was_readable {
            last_read = clock.mono();
        }
        was_readable = can_read;
        let deadline = if let Some(d) = grace_deadline {
            Some(d)
        } else if !can_read {
            None
        } else if !buf.is_empty() {
            // Everything complete was decoded, so this is part of a frame: the client must finish it.
            Some(last_read + Duration::from_millis(cfg.read_timeout_ms))
        } else if conn.pending.is_empty() {
            Some(last_read + Duration::from_millis(cfg.idle_timeout_ms))
        } else {
            None
        };
        let stalled_need = conn.stalled.as_ref().map_or(0, |b| b.events.len() as u32);
        let inflight = conn.shared.inflight.clone();
        rt::select! {
            biased;
            _ = shutdown.wait(), if !shutting_down => {
                shutting_down = true;
                conn.reading = false;
                grace_deadline = Some(clock.mono() + Duration::from_millis(cfg.shutdown_grace_ms));
            }
            Some(replies) = conn.pending.next(), if !conn.pending.is_empty() => {
                encode_replies(&replies, &mut out);
                // Gather every other reply that is already done, then write once.
                while let Some(Some(more)) = conn.pending.next().now_or_never() {
                    encode_replies(&more, &mut out);
                }
                if !out.is_empty() {
                    let write = async {
                        wr.write_all(&out).await?;
                        wr.flush().await
                    };
                    match rt::time::timeout(Duration::from_millis(cfg.write_timeout_ms), write).await {
                        Ok(Ok(())) => out.clear(),
                        Ok(Err(e)) => {
                            tracing::debug!(conn = id, error = %e, "write failed");
                            break "write failed";
                        }
                        Err(_) => {
                            conn.shared.metrics.closed_write_timeout.inc();
                            break "write timeout";
                        }
                    }
                }
            }
            permit = inflight.acquire_many_owned(stalled_need), if conn.stalled.is_some() => {
                let batch = conn.stalled.take().expect("guarded by the select condition");
                match permit {
                    Ok(permit) => conn.submit_with(batch, Some(permit)),
                    Err(_) => break "server closed",
                }
            }
            n = rd.read_buf(&mut buf), if can_read => match n {
                Ok(0) => {
                    conn.reading = false;
                    if !buf.is_empty() {
                        tracing::debug!(conn = id, bytes = buf.len(), "EOF inside a frame; partial frame dropped");
                        buf.clear();
                    }
                }
                Ok(_) => last_read = clock.mono(),
                Err(e) => {
                    tracing::debug!(conn = id, error = %e, "read failed");
                    conn.reading = false;
                    buf.clear();
                }
            },
            _ = sleep_until_opt(&clock, deadline) => {
                if grace_deadline.is_some() {
                    break "shutdown grace elapsed";
                }
                if buf.is_empty() {
                    conn.shared.metrics.closed_idle.inc();
                    break "idle timeout";
                }
                conn.shared.metrics.closed_read_timeout.inc();
                break "read timeout (stalled mid-frame)";
            }
        }
    };
    let _ = wr.shutdown().await;
    tracing::debug!(conn = conn.id, peer = %conn.peer, reason, "connection closed");
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
        let cfg = &self.shared.config;
        let reply = |request_id, resp| -> Pending { Box::pin(std::future::ready(vec![(request_id, resp)])) };
        match unit {
            Inbound::Legacy(event) => {
                m.legacy_frames.inc();
                if !self.authed || !cfg.topic_allowed(&event.topic) {
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
                let max_batch = cfg.max_events_per_frame;
                let error = if !self.authed {
                    Some(ErrorFrame::new(ErrorCode::Unauthorized, "send HELLO with the server's token first"))
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
                    batch.after.push(reply(request_id, Response::Error(err)));
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
            Inbound::Request { request_id, request: Request::Hello { client, token } } => {
                m.acked_frames.inc();
                let resp = if cfg.auth_token.is_empty()
                    || constant_time_eq(token.as_bytes(), cfg.auth_token.as_bytes())
                {
                    self.authed = true;
                    tracing::debug!(conn = self.id, client = %client, "hello");
                    Response::HelloOk {
                        server: self.shared.server_name.clone(),
                        node_id: self.shared.service.node_id(),
                        max_frame_bytes: u32::try_from(cfg.max_frame_bytes).unwrap_or(u32::MAX),
                    }
                } else {
                    m.acked_errors.inc();
                    Response::Error(ErrorFrame::new(ErrorCode::Unauthorized, "wrong token"))
                };
                self.pending.push_back(reply(request_id, resp));
            }
            Inbound::Request { request_id, request: Request::Ping } => {
                m.acked_frames.inc();
                self.pending.push_back(reply(request_id, Response::Pong));
            }
            Inbound::Request {
                request_id,
                request: req @ (Request::Fetch { .. } | Request::Read { .. } | Request::Admin(_)),
            } => {
                m.acked_frames.inc();
                if !self.authed {
                    m.acked_errors.inc();
                    let err =
                        ErrorFrame::new(ErrorCode::Unauthorized, "send HELLO with the server's token first");
                    self.pending.push_back(reply(request_id, Response::Error(err)));
                    return;
                }
                let service = &self.shared.service;
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
                        let fut = service.admin(admin_command(a));
                        self.pending.push_back(Box::pin(async move {
                            let resp = match fut.await {
                                Ok(text) => Response::AdminOk(text),
                                Err(e) => Response::Error(error_frame(&e)),
                            };
                            vec![(request_id, resp)]
                        }));
                        return;
                    }
                    _ => unreachable!("matched above"),
                };
                let max = (max_events as usize).min(cfg.max_fetch_events);
                let fut = service.read(topic.clone(), offset, max, opts);
                self.pending.push_back(Box::pin(async move {
                    let resp = match fut.await {
                        Ok(r) => Response::Fetched {
                            topic,
                            next_offset: r.next_offset,
                            end_offset: r.end_offset,
                            events: r.events,
                        },
                        Err(e) => Response::Error(error_frame(&e)),
                    };
                    vec![(request_id, resp)]
                }));
            }
            Inbound::BadRequest { request_id, error } => {
                m.acked_frames.inc();
                m.acked_errors.inc();
                tracing::debug!(conn = self.id, error = %error, "bad acked frame");
                self.pending.push_back(reply(request_id, Response::Error(error)));
            }
        }
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
                self.pending
                    .push_back(Box::pin(std::future::ready(vec![(request_id, Response::Error(error))])));
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
        let need = u32::try_from(batch.events.len()).unwrap_or(u32::MAX);
        match self.shared.inflight.clone().try_acquire_many_owned(need) {
            Ok(permit) => self.submit_with(batch, Some(permit)),
            Err(_) if batch.has_legacy => self.stalled = Some(batch),
            Err(_) => {
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
                self.pending.push_back(Box::pin(std::future::ready(replies)));
                self.pending.extend(batch.after);
            }
        }
    }

    /// Submits a batch (holding its capacity permit, if it has events). The service fixes the
    /// batch's position in the log at this call, so batches are stored in stream order.
    fn submit_with(&mut self, batch: Batch, permit: Option<OwnedSemaphorePermit>) {
        let Batch { parts, events, after, .. } = batch;
        let permit = permit.map(|p| InflightGuard::new(p, events.len(), self.shared.metrics.clone()));
        let shared = self.shared.clone();
        let started = rt::time::now();
        let fut = if events.is_empty() { None } else { Some(shared.service.publish(events)) };
        self.pending.push_back(Box::pin(async move {
            let result = match fut {
                Some(f) => f.await,
                None => Ok(Vec::new()),
            };
            drop(permit);
            let m = &shared.metrics;
            m.publish_latency_us.record(started.elapsed().as_micros() as u64);
            let mut replies = Vec::new();
            match result {
                Ok(appended) => {
                    for a in &appended {
                        if a.duplicate { m.events_duplicate.inc() } else { m.events_stored.inc() }
                    }
                    for part in parts {
                        if let Part::Acked { request_id, slots } = part {
                            let items = slots
                                .into_iter()
                                .map(|s| match s {
                                    Slot::Batch(i) => match appended.get(i) {
                                        Some(a) => AckItem::Stored {
                                            topic: a.topic.to_string(),
                                            offset: a.offset,
                                            duplicate: a.duplicate,
                                        },
                                        None => AckItem::Rejected(ErrorFrame::new(
                                            ErrorCode::Internal,
                                            "service returned fewer results than events",
                                        )),
                                    },
                                    Slot::Rejected(e) => AckItem::Rejected(e),
                                })
                                .collect();
                            replies.push((request_id, Response::Ack(items)));
                        }
                    }
                }
                Err(e) => {
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
            replies
        }));
        self.pending.extend(after);
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
