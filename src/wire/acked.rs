//! The acknowledged protocol: framed, checksummed requests and replies on the legacy port.
//!
//! Every frame starts with the magic `ESCP` (0x45534350), which read as a legacy big-endian
//! length is 1,163,084,624 — above the largest frame limit the server accepts (1 GiB) — so the
//! two protocols are told apart by their first four bytes. Byte tables: `docs/protocol.md`.
//!
//! ```text
//! 0   4  magic "ESCP"
//! 4   1  version (1)
//! 5   1  kind
//! 6   2  flags (0; reserved: a frame with any bit set is refused `malformed`)
//! 8   4  body length N (u32 BE)
//! 12  8  request id (u64 BE, echoed in the reply)
//! 20  N  body
//! 20+N 4 CRC32C (Castagnoli) of bytes 4 .. 20+N, u32 BE
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::consumers::{ConsumerPosition, OffsetCommit};
use crate::event::{Event, Header, Priority, StoredEvent};

/// First four bytes of every acknowledged-protocol frame.
pub const MAGIC: [u8; 4] = *b"ESCP";
/// Protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Fixed header bytes before the body.
pub const HEADER_LEN: usize = 20;
/// Checksum bytes after the body.
pub const TRAILER_LEN: usize = 4;
/// Largest frame limit a server may be configured with; MAGIC as a legacy length is above it.
pub const MAX_FRAME_LIMIT: usize = 1 << 30;

const _: () = assert!(u32::from_be_bytes(MAGIC) as usize > MAX_FRAME_LIMIT);

/// Frame kinds. Requests have the high bit clear, replies have it set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 0x01,
    Publish = 0x02,
    Fetch = 0x03,
    Ping = 0x04,
    Read = 0x05,
    Admin = 0x06,
    Commit = 0x0C,
    Consumers = 0x0D,
    HelloOk = 0x81,
    Ack = 0x82,
    Fetched = 0x83,
    Pong = 0x84,
    AdminOk = 0x86,
    Committed = 0x8C,
    ConsumerList = 0x8D,
    Error = 0xFF,
}

impl Kind {
    /// Parses a kind byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Hello,
            0x02 => Kind::Publish,
            0x03 => Kind::Fetch,
            0x04 => Kind::Ping,
            0x05 => Kind::Read,
            0x06 => Kind::Admin,
            0x0C => Kind::Commit,
            0x0D => Kind::Consumers,
            0x8C => Kind::Committed,
            0x8D => Kind::ConsumerList,
            0x81 => Kind::HelloOk,
            0x82 => Kind::Ack,
            0x83 => Kind::Fetched,
            0x84 => Kind::Pong,
            0x86 => Kind::AdminOk,
            0xFF => Kind::Error,
            _ => return None,
        })
    }
}

/// Error codes carried by error frames and rejected acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame or event is not well formed (bad checksum, truncated body, bad priority, bad topic…).
    Malformed = 1,
    /// The frame exceeds the server's limit; the connection is closed after this error.
    TooLarge = 2,
    /// Topics are restricted and this topic is not allowed.
    UnknownTopic = 3,
    /// The server is overloaded; retry after `retry_after_ms`.
    Overloaded = 4,
    /// This node is not the leader; `leader` holds the leader's client address when known.
    NotLeader = 5,
    /// Authentication is required (HELLO with the right token) or failed.
    Unauthorized = 6,
    /// The server failed internally; the request may be retried with the same idempotency key.
    Internal = 7,
    /// Unknown frame kind or protocol version.
    Unsupported = 8,
    /// The cluster could not commit (no leader, no quorum, commit timeout); the outcome is unknown,
    /// so retry after `retry_after_ms` with the same idempotency key.
    Unavailable = 9,
    /// The client is authenticated (or anonymous) but its credential lacks the role the request
    /// needs (publish, consume or admin). Not retryable with the same credential.
    Forbidden = 10,
    /// Out of range: a FETCH/READ below the topic's first retained offset (the message ends
    /// "first available is N"), or a PUBLISH into a full topic whose discard policy is "new".
    /// Not retryable as is.
    OutOfRange = 11,
    /// A COMMIT the server refuses: a bad consumer name or topic, an offset past the topic's
    /// end, or a new consumer when the cluster already has the most it keeps.
    InvalidCommit = 12,
}

impl ErrorCode {
    /// Parses a code.
    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        Some(match v {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::TooLarge,
            3 => ErrorCode::UnknownTopic,
            4 => ErrorCode::Overloaded,
            5 => ErrorCode::NotLeader,
            6 => ErrorCode::Unauthorized,
            7 => ErrorCode::Internal,
            8 => ErrorCode::Unsupported,
            9 => ErrorCode::Unavailable,
            10 => ErrorCode::Forbidden,
            11 => ErrorCode::OutOfRange,
            12 => ErrorCode::InvalidCommit,
            _ => return None,
        })
    }

    /// Stable lower-case name (logs, metrics labels, CLI output).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Internal => "internal",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::InvalidCommit => "invalid_commit",
        }
    }

    /// True if retrying the same request later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Overloaded | ErrorCode::NotLeader | ErrorCode::Internal | ErrorCode::Unavailable
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Introduces the client; carries the auth token when the server requires one.
    Hello { client: String, token: String },
    /// Publishes one or more events; each carries its own idempotency key.
    Publish(Vec<Event>),
    /// Reads up to `max_events` events of `topic` from `offset`.
    Fetch { topic: String, offset: u64, max_events: u32 },
    /// Liveness check.
    Ping,
    /// A fetch with options: `linearizable` confirms through the leader (ReadIndex) that nothing
    /// newer was committed before answering; `wait_ms > 0` holds an empty answer until an event
    /// arrives or the wait ends (long poll — what a subscription is built on).
    Read { topic: String, offset: u64, max_events: u32, linearizable: bool, wait_ms: u32 },
    /// A cluster administration request, answered with [`Response::AdminOk`].
    Admin(AdminRequest),
    /// Records a named consumer's position, answered with [`Response::Committed`] once committed.
    Commit(OffsetCommit),
    /// Lists named consumers (`name` empty: all), answered with [`Response::ConsumerList`].
    Consumers { name: String },
}

/// Cluster administration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    /// Role, term, leader, commit/applied indexes and members, as text.
    Status,
    /// Adds a node: first as a learner, promoted to voter once it has caught up.
    AddNode { id: u64, raft_addr: String, client_addr: String },
    /// Removes a node (the leader included).
    RemoveNode { id: u64 },
    /// Hands leadership to another voter.
    TransferLeader { id: u64 },
    /// Lists topics (events, bytes, first/end offset, retention) as a JSON document; needs the
    /// consume role.
    Topics,
}

const ADMIN_STATUS: u8 = 0;
const ADMIN_ADD: u8 = 1;
const ADMIN_REMOVE: u8 = 2;
const ADMIN_TRANSFER: u8 = 3;
const ADMIN_TOPICS: u8 = 4;
const READ_LINEARIZABLE: u8 = 0x01;
const COMMIT_RESET: u8 = 0x01;

/// The outcome of one event of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckItem {
    /// Stored at `offset`; `duplicate` if an earlier publish with the same key stored it there.
    Stored { topic: String, offset: u64, duplicate: bool },
    /// Not stored.
    Rejected(ErrorFrame),
}

/// An error reply (whole frame) or a rejected event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    /// For `Overloaded`: how long to wait before retrying.
    pub retry_after_ms: u32,
    /// For `NotLeader`: the leader's client address, empty if unknown.
    pub leader: String,
    pub message: String,
}

impl ErrorFrame {
    /// An error with just a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame { code, retry_after_ms: 0, leader: String::new(), message: message.into() }
    }
}

impl std::fmt::Display for ErrorFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if self.retry_after_ms > 0 {
            write!(f, " (retry after {} ms)", self.retry_after_ms)?;
        }
        if !self.leader.is_empty() {
            write!(f, " (leader at {})", self.leader)?;
        }
        Ok(())
    }
}

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    HelloOk {
        server: String,
        node_id: u64,
        max_frame_bytes: u32,
    },
    /// One item per published event, in order.
    Ack(Vec<AckItem>),
    /// Events of `topic` from the requested offset; `next_offset` is where to continue and
    /// `end_offset` the topic's current end.
    Fetched {
        topic: String,
        next_offset: u64,
        end_offset: u64,
        events: Vec<StoredEvent>,
    },
    Pong,
    /// An admin request succeeded; human-readable outcome.
    AdminOk(String),
    /// A commit is durable; `offset` is the position now recorded (a lower one leaves it as it was).
    Committed {
        name: String,
        topic: String,
        offset: u64,
    },
    /// Named consumers with their committed positions and their topic's end.
    ConsumerList(Vec<ConsumerPosition>),
    Error(ErrorFrame),
}

/// A frame whose header and checksum are valid; its body is not yet parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: u8,
    pub request_id: u64,
    pub body: Bytes,
}

/// A frame-level problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared size exceeds the limit. Fatal: the stream cannot be resynchronised cheaply.
    #[error("frame of {size} bytes exceeds the {max}-byte limit")]
    TooLarge { request_id: u64, size: usize, max: usize },
    /// Checksum mismatch; the frame was skipped.
    #[error("checksum mismatch (frame skipped)")]
    BadChecksum { request_id: u64 },
    /// Unknown version; the frame was skipped.
    #[error("unsupported protocol version {version} (this server speaks {VERSION})")]
    BadVersion { request_id: u64, version: u8 },
    /// Reserved header flag bits set; the frame was skipped.
    #[error("reserved header flag bits 0x{flags:04x} set (send 0)")]
    ReservedFlags { request_id: u64, flags: u16 },
}

impl FrameError {
    /// The request id from the header (echoed in the error reply).
    pub fn request_id(&self) -> u64 {
        match *self {
            FrameError::TooLarge { request_id, .. }
            | FrameError::BadChecksum { request_id }
            | FrameError::BadVersion { request_id, .. }
            | FrameError::ReservedFlags { request_id, .. } => request_id,
        }
    }

    /// True if the connection must be closed after replying.
    pub fn is_fatal(&self) -> bool {
        matches!(self, FrameError::TooLarge { .. })
    }

    /// The error reply for this problem.
    pub fn to_error_frame(&self) -> ErrorFrame {
        let code = match self {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::BadChecksum { .. } | FrameError::ReservedFlags { .. } => ErrorCode::Malformed,
            FrameError::BadVersion { .. } => ErrorCode::Unsupported,
        };
        ErrorFrame::new(code, self.to_string())
    }
}

/// A body that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body truncated while reading {0}")]
    Truncated(&'static str),
    #[error("{0} is not valid UTF-8")]
    BadUtf8(&'static str),
    #[error("priority {0} is not 0-4")]
    BadPriority(u8),
    #[error("unknown error code {0}")]
    BadErrorCode(u16),
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("frame kind 0x{0:02x} is not valid in this direction")]
    WrongDirection(u8),
    #[error("count {count} of {what} cannot fit in the body")]
    BadCount { what: &'static str, count: usize },
    #[error("unknown admin op {0}")]
    UnknownAdminOp(u8),
    #[error("reserved bits 0x{bits:02x} set in {what} (send 0)")]
    ReservedBits { what: &'static str, bits: u8 },
    #[error("reserved flag bits set (flags 0x{0:02x})")]
    ReservedFlags(u8),
}

impl BodyError {
    /// The error reply for this problem.
    pub fn to_error_frame(&self) -> ErrorFrame {
        let code = match self {
            BodyError::UnknownKind(_) | BodyError::WrongDirection(_) | BodyError::UnknownAdminOp(_) => {
                ErrorCode::Unsupported
            }
            _ => ErrorCode::Malformed,
        };
        ErrorFrame::new(code, self.to_string())
    }
}

/// True if `buf` starts with the magic (needs at least 4 bytes; see [`maybe_acked`]).
pub fn starts_with_magic(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf[..4] == MAGIC
}

/// Whether the buffered prefix could still be the start of an acked frame.
pub fn maybe_acked(buf: &[u8]) -> bool {
    let n = buf.len().min(4);
    buf[..n] == MAGIC[..n]
}

/// Takes one frame off the front of `buf` if a whole one is there. `buf` must start with the
/// magic. Frames over `max_frame` bytes (header + body + checksum) are refused before buffering.
pub fn decode_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<RawFrame>, FrameError> {
    debug_assert!(maybe_acked(buf));
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let version = buf[4];
    let kind = buf[5];
    let body_len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let request_id = u64::from_be_bytes(buf[12..20].try_into().expect("8 bytes"));
    let size = HEADER_LEN + body_len + TRAILER_LEN;
    if size > max_frame {
        return Err(FrameError::TooLarge { request_id, size, max: max_frame });
    }
    if buf.len() < size {
        // One allocation of the frame's size (checked against the limit above) rather than a
        // chain of doublings: untouched pages cost no memory, while every doubling copies and
        // leaves the old block to the allocator. The server counts the capacity against
        // `ingest.max_buffered_bytes`.
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(size).freeze();
    let want = u32::from_be_bytes(frame[size - 4..].try_into().expect("4 bytes"));
    let got = crc32c::crc32c(&frame[4..size - 4]);
    if want != got {
        return Err(FrameError::BadChecksum { request_id });
    }
    if version != VERSION {
        return Err(FrameError::BadVersion { request_id, version });
    }
    let flags = u16::from_be_bytes([frame[6], frame[7]]);
    if flags != 0 {
        return Err(FrameError::ReservedFlags { request_id, flags });
    }
    Ok(Some(RawFrame { kind, request_id, body: frame.slice(HEADER_LEN..size - 4) }))
}

/// Appends a frame around a body written by `body`.
fn encode_frame(kind: Kind, request_id: u64, out: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(kind as u8);
    out.put_u16(0);
    out.put_u32(0); // patched below
    out.put_u64(request_id);
    body(out);
    let body_len = out.len() - start - HEADER_LEN;
    let len = u32::try_from(body_len).expect("frame body fits in u32");
    out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + 4..]);
    out.put_u32(crc);
}

// --- body primitives ------------------------------------------------------------------------

fn put_str16(out: &mut BytesMut, s: &str) {
    let len = u16::try_from(s.len()).expect("string field fits in u16 (checked by caller)");
    out.put_u16(len);
    out.put_slice(s.as_bytes());
}

fn put_bytes32(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(u32::try_from(b.len()).expect("bytes field fits in u32"));
    out.put_slice(b);
}

type Reader = crate::cursor::Reader<BodyError>;
crate::cursor::cursor_error!(BodyError);

const KEY_PRESENT: u8 = 0x01;
/// Smallest encoded event: ids, priority, flags, empty topic, no headers, empty payload.
const MIN_EVENT: usize = 8 + 8 + 1 + 1 + 2 + 2 + 4;

/// Bytes [`put_event`] writes for `e` (its size inside PUBLISH and FETCHED bodies).
pub fn event_wire_len(e: &Event) -> usize {
    MIN_EVENT
        + e.topic.len()
        + e.key.as_ref().map_or(0, |k| 4 + k.len())
        + e.headers.iter().map(|h| 2 + h.name.len() + 4 + h.value.len()).sum::<usize>()
        + e.payload.len()
}

/// Bytes one stored event takes in a FETCHED body (offset, timestamp, event).
pub fn stored_event_wire_len(s: &StoredEvent) -> usize {
    16 + event_wire_len(&s.event)
}

/// Bytes of a FETCHED frame for `topic` before its events (header, topic, offsets, count, CRC).
pub fn fetched_overhead(topic: &str) -> usize {
    HEADER_LEN + 2 + topic.len() + 8 + 8 + 4 + TRAILER_LEN
}

fn put_event(out: &mut BytesMut, e: &Event) {
    out.put_u64(e.producer_id);
    out.put_u64(e.sequence);
    out.put_u8(e.priority.as_u8());
    out.put_u8(if e.key.is_some() { KEY_PRESENT } else { 0 });
    put_str16(out, &e.topic);
    if let Some(k) = &e.key {
        put_bytes32(out, k);
    }
    out.put_u16(u16::try_from(e.headers.len()).expect("at most 65535 headers"));
    for h in &e.headers {
        put_str16(out, &h.name);
        put_bytes32(out, &h.value);
    }
    put_bytes32(out, &e.payload);
}

fn read_event(r: &mut Reader) -> Result<Event, BodyError> {
    let producer_id = r.u64("producer id")?;
    let sequence = r.u64("sequence")?;
    let p = r.u8("priority")?;
    let priority = Priority::from_u8(p).ok_or(BodyError::BadPriority(p))?;
    let flags = r.u8("event flags")?;
    if flags & !KEY_PRESENT != 0 {
        return Err(BodyError::ReservedBits { what: "event flags", bits: flags & !KEY_PRESENT });
    }
    let topic = r.str16("topic")?;
    let key = if flags & KEY_PRESENT != 0 { Some(r.bytes32("key")?) } else { None };
    let n = r.count("headers", 2 + 4, false)?;
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str16("header name")?;
        let value = r.bytes32("header value")?;
        headers.push(Header { name, value });
    }
    let payload = r.bytes32("payload")?;
    Ok(Event { topic, priority, producer_id, sequence, key, headers, payload })
}

/// Appends `events` in the PUBLISH body layout (u32 count, then each event). Used by the cluster
/// to put a batch into a Raft entry; call [`check_encodable`] on untrusted events first.
pub fn encode_events(out: &mut BytesMut, events: &[Event]) {
    out.put_u32(u32::try_from(events.len()).expect("event count fits in u32"));
    for e in events {
        put_event(out, e);
    }
}

/// Parses what [`encode_events`] wrote, which must fill `buf` exactly. Never panics.
pub fn decode_events(buf: Bytes) -> Result<Vec<Event>, BodyError> {
    let mut r = Reader::new(buf);
    let n = r.count("events", MIN_EVENT, true)?;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(read_event(&mut r)?);
    }
    r.finish()?;
    Ok(events)
}

fn put_error(out: &mut BytesMut, e: &ErrorFrame) {
    out.put_u16(e.code as u16);
    out.put_u32(e.retry_after_ms);
    put_str16(out, truncate_utf8(&e.leader, u16::MAX as usize));
    put_str16(out, truncate_utf8(&e.message, u16::MAX as usize));
}

fn read_error(r: &mut Reader) -> Result<ErrorFrame, BodyError> {
    let c = r.u16("error code")?;
    let code = ErrorCode::from_u16(c).ok_or(BodyError::BadErrorCode(c))?;
    let retry_after_ms = r.u32("retry after")?;
    let leader = r.str16("leader")?;
    let message = r.str16("message")?;
    Ok(ErrorFrame { code, retry_after_ms, leader, message })
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// --- requests -------------------------------------------------------------------------------

/// Why an event cannot be encoded (the client checks before sending).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} is longer than 65535 bytes")]
    TooLong(&'static str),
    #[error("more than 65535 headers")]
    TooManyHeaders,
    #[error("more than 4294967295 events or a field longer than 4 GiB")]
    TooBig,
}

/// Checks that an event fits the wire format's field widths.
pub fn check_encodable(e: &Event) -> Result<(), EncodeError> {
    if e.topic.len() > u16::MAX as usize {
        return Err(EncodeError::TooLong("topic"));
    }
    if e.headers.len() > u16::MAX as usize {
        return Err(EncodeError::TooManyHeaders);
    }
    for h in &e.headers {
        if h.name.len() > u16::MAX as usize {
            return Err(EncodeError::TooLong("header name"));
        }
        if h.value.len() > u32::MAX as usize {
            return Err(EncodeError::TooBig);
        }
    }
    if e.payload.len() > u32::MAX as usize || e.key.as_ref().is_some_and(|k| k.len() > u32::MAX as usize) {
        return Err(EncodeError::TooBig);
    }
    Ok(())
}

impl Request {
    /// The frame kind of this request.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Hello { .. } => Kind::Hello,
            Request::Publish(_) => Kind::Publish,
            Request::Fetch { .. } => Kind::Fetch,
            Request::Ping => Kind::Ping,
            Request::Read { .. } => Kind::Read,
            Request::Admin(_) => Kind::Admin,
            Request::Commit(_) => Kind::Commit,
            Request::Consumers { .. } => Kind::Consumers,
        }
    }

    /// Appends this request as a frame. Panics if a field exceeds its width; use
    /// [`check_encodable`] on untrusted events first.
    pub fn encode(&self, request_id: u64, out: &mut BytesMut) {
        encode_frame(self.kind(), request_id, out, |out| match self {
            Request::Hello { client, token } => {
                put_str16(out, client);
                put_str16(out, token);
            }
            Request::Publish(events) => {
                out.put_u32(u32::try_from(events.len()).expect("event count fits in u32"));
                for e in events {
                    put_event(out, e);
                }
            }
            Request::Fetch { topic, offset, max_events } => {
                put_str16(out, topic);
                out.put_u64(*offset);
                out.put_u32(*max_events);
            }
            Request::Ping => {}
            Request::Read { topic, offset, max_events, linearizable, wait_ms } => {
                put_str16(out, topic);
                out.put_u64(*offset);
                out.put_u32(*max_events);
                out.put_u8(if *linearizable { READ_LINEARIZABLE } else { 0 });
                out.put_u32(*wait_ms);
            }
            Request::Admin(a) => {
                let (op, id, raft, client) = match a {
                    AdminRequest::Status => (ADMIN_STATUS, 0, "", ""),
                    AdminRequest::AddNode { id, raft_addr, client_addr } => {
                        (ADMIN_ADD, *id, raft_addr.as_str(), client_addr.as_str())
                    }
                    AdminRequest::RemoveNode { id } => (ADMIN_REMOVE, *id, "", ""),
                    AdminRequest::TransferLeader { id } => (ADMIN_TRANSFER, *id, "", ""),
                    AdminRequest::Topics => (ADMIN_TOPICS, 0, "", ""),
                };
                out.put_u8(op);
                out.put_u64(id);
                put_str16(out, raft);
                put_str16(out, client);
            }
            Request::Commit(c) => {
                put_str16(out, &c.name);
                put_str16(out, &c.topic);
                out.put_u64(c.offset);
                out.put_u8(if c.reset { COMMIT_RESET } else { 0 });
            }
            Request::Consumers { name } => put_str16(out, name),
        });
    }

    /// Parses a request body.
    pub fn decode(frame: &RawFrame) -> Result<Request, BodyError> {
        let kind = Kind::from_u8(frame.kind).ok_or(BodyError::UnknownKind(frame.kind))?;
        let mut r = Reader::new(frame.body.clone());
        let req = match kind {
            Kind::Hello => Request::Hello { client: r.str16("client")?, token: r.str16("token")? },
            Kind::Publish => {
                let n = r.count("events", MIN_EVENT, true)?;
                let mut events = Vec::with_capacity(n);
                for _ in 0..n {
                    events.push(read_event(&mut r)?);
                }
                Request::Publish(events)
            }
            Kind::Fetch => Request::Fetch {
                topic: r.str16("topic")?,
                offset: r.u64("offset")?,
                max_events: r.u32("max events")?,
            },
            Kind::Ping => Request::Ping,
            Kind::Read => {
                let (topic, offset, max_events) = (r.str16("topic")?, r.u64("offset")?, r.u32("max events")?);
                let flags = r.u8("read flags")?;
                if flags & !READ_LINEARIZABLE != 0 {
                    return Err(BodyError::ReservedBits {
                        what: "read flags",
                        bits: flags & !READ_LINEARIZABLE,
                    });
                }
                let linearizable = flags & READ_LINEARIZABLE != 0;
                Request::Read { topic, offset, max_events, linearizable, wait_ms: r.u32("wait")? }
            }
            Kind::Admin => {
                let op = r.u8("admin op")?;
                let id = r.u64("node id")?;
                let raft_addr = r.str16("raft address")?;
                let client_addr = r.str16("client address")?;
                Request::Admin(match op {
                    ADMIN_STATUS => AdminRequest::Status,
                    ADMIN_ADD => AdminRequest::AddNode { id, raft_addr, client_addr },
                    ADMIN_REMOVE => AdminRequest::RemoveNode { id },
                    ADMIN_TRANSFER => AdminRequest::TransferLeader { id },
                    ADMIN_TOPICS => AdminRequest::Topics,
                    other => return Err(BodyError::UnknownAdminOp(other)),
                })
            }
            Kind::Commit => {
                let (name, topic, offset) = (r.str16("consumer name")?, r.str16("topic")?, r.u64("offset")?);
                let flags = r.u8("commit flags")?;
                if flags & !COMMIT_RESET != 0 {
                    return Err(BodyError::ReservedFlags(flags));
                }
                Request::Commit(OffsetCommit { name, topic, offset, reset: flags & COMMIT_RESET != 0 })
            }
            Kind::Consumers => Request::Consumers { name: r.str16("consumer name")? },
            _ => return Err(BodyError::WrongDirection(frame.kind)),
        };
        r.finish()?;
        Ok(req)
    }
}

// --- responses ------------------------------------------------------------------------------

const ACK_STORED: u8 = 0;
const ACK_DUPLICATE: u8 = 1;
const ACK_REJECTED: u8 = 2;

impl Response {
    /// The frame kind of this reply.
    pub fn kind(&self) -> Kind {
        match self {
            Response::HelloOk { .. } => Kind::HelloOk,
            Response::Ack(_) => Kind::Ack,
            Response::Fetched { .. } => Kind::Fetched,
            Response::Pong => Kind::Pong,
            Response::AdminOk(_) => Kind::AdminOk,
            Response::Committed { .. } => Kind::Committed,
            Response::ConsumerList(_) => Kind::ConsumerList,
            Response::Error(_) => Kind::Error,
        }
    }

    /// Appends this reply as a frame.
    pub fn encode(&self, request_id: u64, out: &mut BytesMut) {
        encode_frame(self.kind(), request_id, out, |out| match self {
            Response::HelloOk { server, node_id, max_frame_bytes } => {
                put_str16(out, truncate_utf8(server, u16::MAX as usize));
                out.put_u64(*node_id);
                out.put_u32(*max_frame_bytes);
            }
            Response::Ack(items) => {
                out.put_u32(u32::try_from(items.len()).expect("ack count fits in u32"));
                for item in items {
                    match item {
                        AckItem::Stored { topic, offset, duplicate } => {
                            out.put_u8(if *duplicate { ACK_DUPLICATE } else { ACK_STORED });
                            put_str16(out, topic);
                            out.put_u64(*offset);
                        }
                        AckItem::Rejected(e) => {
                            out.put_u8(ACK_REJECTED);
                            put_error(out, e);
                        }
                    }
                }
            }
            Response::Fetched { topic, next_offset, end_offset, events } => {
                put_str16(out, topic);
                out.put_u64(*next_offset);
                out.put_u64(*end_offset);
                out.put_u32(u32::try_from(events.len()).expect("event count fits in u32"));
                for s in events {
                    out.put_u64(s.offset);
                    out.put_u64(s.timestamp_ms);
                    put_event(out, &s.event);
                }
            }
            Response::Pong => {}
            Response::AdminOk(text) => put_bytes32(out, text.as_bytes()),
            Response::Committed { name, topic, offset } => {
                put_str16(out, name);
                put_str16(out, topic);
                out.put_u64(*offset);
            }
            Response::ConsumerList(list) => {
                out.put_u32(u32::try_from(list.len()).expect("consumer count fits in u32"));
                for c in list {
                    put_str16(out, &c.name);
                    put_str16(out, &c.topic);
                    out.put_u64(c.committed);
                    out.put_u64(c.end_offset);
                }
            }
            Response::Error(e) => put_error(out, e),
        });
    }

    /// Parses a reply body.
    pub fn decode(frame: &RawFrame) -> Result<Response, BodyError> {
        let kind = Kind::from_u8(frame.kind).ok_or(BodyError::UnknownKind(frame.kind))?;
        let mut r = Reader::new(frame.body.clone());
        let resp = match kind {
            Kind::HelloOk => Response::HelloOk {
                server: r.str16("server")?,
                node_id: r.u64("node id")?,
                max_frame_bytes: r.u32("max frame")?,
            },
            Kind::Ack => {
                let n = r.count("acks", 1 + 2 + 8, true)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let item = match r.u8("ack status")? {
                        s @ (ACK_STORED | ACK_DUPLICATE) => AckItem::Stored {
                            topic: r.str16("topic")?,
                            offset: r.u64("offset")?,
                            duplicate: s == ACK_DUPLICATE,
                        },
                        ACK_REJECTED => AckItem::Rejected(read_error(&mut r)?),
                        _ => return Err(BodyError::Truncated("ack status")),
                    };
                    items.push(item);
                }
                Response::Ack(items)
            }
            Kind::Fetched => {
                let topic = r.str16("topic")?;
                let next_offset = r.u64("next offset")?;
                let end_offset = r.u64("end offset")?;
                let n = r.count("events", 16 + MIN_EVENT, true)?;
                let mut events = Vec::with_capacity(n);
                for _ in 0..n {
                    let offset = r.u64("offset")?;
                    let timestamp_ms = r.u64("timestamp")?;
                    events.push(StoredEvent { offset, timestamp_ms, event: read_event(&mut r)? });
                }
                Response::Fetched { topic, next_offset, end_offset, events }
            }
            Kind::Pong => Response::Pong,
            Kind::AdminOk => {
                let b = r.bytes32("admin reply")?;
                Response::AdminOk(
                    String::from_utf8(b.to_vec()).map_err(|_| BodyError::BadUtf8("admin reply"))?,
                )
            }
            Kind::Committed => Response::Committed {
                name: r.str16("consumer name")?,
                topic: r.str16("topic")?,
                offset: r.u64("offset")?,
            },
            Kind::ConsumerList => {
                let n = r.count("consumers", 2 + 2 + 8 + 8, true)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    let (name, topic) = (r.str16("consumer name")?, r.str16("topic")?);
                    let (committed, end_offset) = (r.u64("committed offset")?, r.u64("end offset")?);
                    list.push(ConsumerPosition { name, topic, committed, end_offset });
                }
                Response::ConsumerList(list)
            }
            Kind::Error => Response::Error(read_error(&mut r)?),
            _ => return Err(BodyError::WrongDirection(frame.kind)),
        };
        r.finish()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(req: &Request) -> BytesMut {
        let mut b = BytesMut::new();
        req.encode(42, &mut b);
        b
    }

    #[test]
    fn header_layout_is_as_documented() {
        let b = one(&Request::Ping);
        assert_eq!(&b[0..4], b"ESCP");
        assert_eq!(b[4], VERSION);
        assert_eq!(b[5], Kind::Ping as u8);
        assert_eq!(&b[6..8], &[0, 0]);
        assert_eq!(&b[8..12], &[0, 0, 0, 0]);
        assert_eq!(u64::from_be_bytes(b[12..20].try_into().unwrap()), 42);
        assert_eq!(b.len(), HEADER_LEN + TRAILER_LEN);
        assert_eq!(u32::from_be_bytes(b[20..24].try_into().unwrap()), crc32c::crc32c(&b[4..20]));
    }

    #[test]
    fn magic_is_never_a_valid_legacy_length() {
        assert!(u32::from_be_bytes(MAGIC) as usize > MAX_FRAME_LIMIT);
    }

    #[test]
    fn a_flipped_bit_is_a_checksum_error_and_the_frame_is_skipped() {
        let mut b = one(&Request::Fetch { topic: "t".into(), offset: 3, max_events: 10 });
        b.extend_from_slice(&one(&Request::Ping));
        b[22] ^= 1;
        assert_eq!(decode_frame(&mut b, 1 << 20), Err(FrameError::BadChecksum { request_id: 42 }));
        let next = decode_frame(&mut b, 1 << 20).unwrap().unwrap();
        assert_eq!(Request::decode(&next).unwrap(), Request::Ping);
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[VERSION, Kind::Publish as u8, 0, 0]);
        b.extend_from_slice(&(10_000_000u32).to_be_bytes());
        b.extend_from_slice(&7u64.to_be_bytes());
        let err = decode_frame(&mut b, 1 << 20).unwrap_err();
        assert!(err.is_fatal());
        assert_eq!(err.request_id(), 7);
        assert_eq!(err.to_error_frame().code, ErrorCode::TooLarge);
    }

    #[test]
    fn unknown_version_is_skipped_with_unsupported() {
        let mut b = one(&Request::Ping);
        b[4] = 9;
        let crc = crc32c::crc32c(&b[4..20]);
        b[20..24].copy_from_slice(&crc.to_be_bytes());
        let err = decode_frame(&mut b, 1 << 20).unwrap_err();
        assert_eq!(err.to_error_frame().code, ErrorCode::Unsupported);
        assert!(b.is_empty());
    }

    #[test]
    fn wire_lengths_match_the_encoding() {
        let mut e = Event::new("topic/x", Priority::High, vec![7u8; 100]);
        e.key = Some(Bytes::from_static(b"key"));
        e.headers.push(Header { name: "h".into(), value: Bytes::from_static(b"vvvv") });
        let s = StoredEvent { offset: 3, timestamp_ms: 9, event: e.clone() };
        let mut b = BytesMut::new();
        Response::Fetched { topic: "topic/x".into(), next_offset: 4, end_offset: 4, events: vec![s.clone()] }
            .encode(1, &mut b);
        assert_eq!(b.len(), fetched_overhead("topic/x") + stored_event_wire_len(&s));
        let mut b = BytesMut::new();
        encode_events(&mut b, &[e.clone()]);
        assert_eq!(b.len(), 4 + event_wire_len(&e));
    }

    #[test]
    fn a_huge_event_count_does_not_allocate() {
        let frame = RawFrame {
            kind: Kind::Publish as u8,
            request_id: 1,
            body: Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xFF]),
        };
        assert!(matches!(Request::decode(&frame), Err(BodyError::BadCount { .. })));
    }

    #[test]
    fn replies_in_the_wrong_direction_are_refused() {
        let mut b = BytesMut::new();
        Response::Pong.encode(1, &mut b);
        let f = decode_frame(&mut b, 1 << 20).unwrap().unwrap();
        assert_eq!(Request::decode(&f), Err(BodyError::WrongDirection(Kind::Pong as u8)));
        assert_eq!(BodyError::WrongDirection(0x84).to_error_frame().code, ErrorCode::Unsupported);
    }
}
