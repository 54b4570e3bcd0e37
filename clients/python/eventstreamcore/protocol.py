"""The acknowledged protocol's frames, encoded and decoded as docs/protocol.md describes them.

Pure functions over bytes: no sockets here. All integers are big-endian.
"""

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import ProtocolError, ServerError, server_error

MAGIC = b"ESCP"
VERSION = 1
HEADER = struct.Struct(">4sBBHIQ")  # magic, version, kind, flags, body length, request id
HEADER_LEN = HEADER.size  # 20
TRAILER_LEN = 4
#: Largest frame the protocol allows at all (servers are configured lower, default 10 MiB).
MAX_FRAME = 1 << 30

# Request kinds.
HELLO, PUBLISH, FETCH, PING, READ, ADMIN = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
COMMIT, CONSUMERS = 0x0C, 0x0D
# Reply kinds.
HELLO_OK, ACK, FETCHED, PONG, ADMIN_OK, ERROR = 0x81, 0x82, 0x83, 0x84, 0x86, 0xFF
COMMITTED, CONSUMER_LIST = 0x8C, 0x8D
COMMIT_RESET = 0x01

ADMIN_STATUS, ADMIN_ADD, ADMIN_REMOVE, ADMIN_TRANSFER, ADMIN_TOPICS = 0, 1, 2, 3, 4
READ_LINEARIZABLE = 0x01
EVENT_HAS_KEY = 0x01
#: Longest long-poll wait the server honours (longer waits are clamped to it).
MAX_WAIT_MS = 30_000


class Priority(enum.IntEnum):
    """Event priority, as in the legacy frame."""

    BATCH = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


def _crc32c_table() -> List[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as the frame trailer uses."""
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass
class Event:
    """An event to publish (or as read back). ``producer_id`` + ``sequence`` is the idempotency
    key; producer 0 is anonymous (never deduplicated). Headers are ``(name, value)`` pairs."""

    topic: str
    payload: bytes = b""
    priority: int = Priority.MEDIUM
    key: Optional[bytes] = None
    headers: Sequence[Tuple[str, bytes]] = field(default_factory=list)
    producer_id: int = 0
    sequence: int = 0


@dataclass
class StoredEvent:
    """An event as stored: its offset in the topic and the time (ms since the Unix epoch) the
    ordering member stamped into it."""

    offset: int
    timestamp_ms: int
    event: Event

    @property
    def topic(self) -> str:
        return self.event.topic

    @property
    def payload(self) -> bytes:
        return self.event.payload

    @property
    def key(self) -> Optional[bytes]:
        return self.event.key

    @property
    def headers(self) -> Sequence[Tuple[str, bytes]]:
        return self.event.headers


@dataclass
class Ack:
    """The outcome of one published event: stored at ``offset`` (``duplicate`` if an earlier
    publish with the same key stored it there), or rejected with ``error``."""

    topic: str = ""
    offset: int = -1
    duplicate: bool = False
    error: Optional[ServerError] = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Fetched:
    """A page of a topic. ``next_offset`` is where to read next (the offset after the last event
    returned, or the requested offset if none was); ``end_offset`` is the topic's end on the
    member that answered (the offset the next stored event will get; 0 for an unknown topic)."""

    topic: str
    next_offset: int
    end_offset: int
    events: List[StoredEvent]


@dataclass
class ServerInfo:
    """The answer to HELLO."""

    server: str
    node_id: int
    max_frame_bytes: int


@dataclass
class Committed:
    """A COMMIT is durable: ``offset`` is the position now recorded (a lower offset than the
    recorded one leaves it unchanged, unless the commit was a reset)."""

    name: str
    topic: str
    offset: int


@dataclass
class ConsumerPosition:
    """A named consumer: the next offset it has not handled (``committed``) and its topic's end."""

    name: str
    topic: str
    committed: int
    end_offset: int

    @property
    def lag(self) -> int:
        return max(0, self.end_offset - self.committed)


@dataclass
class TopicInfo:
    """One topic as ADMIN op 4 (TOPICS) reports it: ``events`` retained, ``bytes`` their size,
    offsets ``first_offset .. end_offset``, and the retention limits that apply (``max_bytes``,
    ``max_age_ms``, ``max_events``: None = unlimited; ``discard``: ``"old"`` or ``"new"``)."""

    topic: str
    events: int
    bytes: int
    first_offset: int
    end_offset: int
    retention: Dict[str, Any] = field(default_factory=dict)


def decode_topics(text: str) -> List[TopicInfo]:
    """The TOPICS JSON document (docs/protocol.md, "Topics") as a list sorted by topic."""
    try:
        doc = json.loads(text)
        return [
            TopicInfo(
                str(t["topic"]),
                int(t["events"]),
                int(t["bytes"]),
                int(t["first_offset"]),
                int(t["end_offset"]),
                dict(t.get("retention") or {}),
            )
            for t in doc["topics"]
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise ProtocolError("TOPICS answer is not the documented JSON document: %s" % e) from e


Reply = Union[ServerInfo, List[Ack], Fetched, str, None, ServerError, Committed, List[ConsumerPosition]]


# --- encoding -----------------------------------------------------------------------------


def _str16(s: str, what: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError("%s is longer than 65535 bytes" % what)
    return struct.pack(">H", len(b)) + b


def _bytes32(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + bytes(b)


def encode_frame(kind: int, request_id: int, body: bytes) -> bytes:
    """A whole frame: header, body, CRC32C over version .. end of body."""
    head = HEADER.pack(MAGIC, VERSION, kind, 0, len(body), request_id)
    crc = crc32c(head[4:] + body)
    return head + body + struct.pack(">I", crc)


def encode_event(e: Event) -> bytes:
    """One event in the PUBLISH layout."""
    if not 0 <= int(e.priority) <= 4:
        raise ValueError("priority %r is not 0-4" % (e.priority,))
    parts = [
        struct.pack(">QQBB", e.producer_id, e.sequence, int(e.priority), EVENT_HAS_KEY if e.key is not None else 0),
        _str16(e.topic, "topic"),
    ]
    if e.key is not None:
        parts.append(_bytes32(e.key))
    headers = list(e.headers)
    if len(headers) > 0xFFFF:
        raise ValueError("more than 65535 headers")
    parts.append(struct.pack(">H", len(headers)))
    for name, value in headers:
        parts.append(_str16(name, "header name"))
        parts.append(_bytes32(value if isinstance(value, bytes) else str(value).encode("utf-8")))
    parts.append(_bytes32(e.payload))
    return b"".join(parts)


def hello(request_id: int, client: str, token: str) -> bytes:
    return encode_frame(HELLO, request_id, _str16(client, "client") + _str16(token, "token"))


def publish(request_id: int, events: Sequence[Event]) -> bytes:
    body = struct.pack(">I", len(events)) + b"".join(encode_event(e) for e in events)
    return encode_frame(PUBLISH, request_id, body)


def fetch(request_id: int, topic: str, offset: int, max_events: int) -> bytes:
    return encode_frame(FETCH, request_id, _str16(topic, "topic") + struct.pack(">QI", offset, max_events))


def read(request_id: int, topic: str, offset: int, max_events: int, linearizable: bool, wait_ms: int) -> bytes:
    flags = READ_LINEARIZABLE if linearizable else 0
    body = _str16(topic, "topic") + struct.pack(">QIBI", offset, max_events, flags, wait_ms)
    return encode_frame(READ, request_id, body)


def ping(request_id: int) -> bytes:
    return encode_frame(PING, request_id, b"")


def admin(request_id: int, op: int, node: int = 0, raft_addr: str = "", client_addr: str = "") -> bytes:
    """ADMIN: every op carries all four fields (the addresses are empty except for op 1)."""
    body = struct.pack(">BQ", op, node) + _str16(raft_addr, "raft address") + _str16(client_addr, "client address")
    return encode_frame(ADMIN, request_id, body)


def commit(request_id: int, name: str, topic: str, offset: int, reset: bool = False) -> bytes:
    """COMMIT: consumer ``name``'s position on ``topic`` (the next offset it has not handled)."""
    body = _str16(name, "consumer name") + _str16(topic, "topic")
    body += struct.pack(">QB", offset, COMMIT_RESET if reset else 0)
    return encode_frame(COMMIT, request_id, body)


def consumers(request_id: int, name: str = "") -> bytes:
    """CONSUMERS: the consumers called ``name`` (empty: all)."""
    return encode_frame(CONSUMERS, request_id, _str16(name, "consumer name"))


# --- decoding -----------------------------------------------------------------------------


class _Body:
    """A cursor over a reply body; running short is a ProtocolError, never an IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("reply body truncated while reading %s" % what)
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack(">H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack(">I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack(">Q", self.take(8, what))[0]

    def str16(self, what: str) -> str:
        raw = self.take(self.u16(what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("%s is not valid UTF-8" % what) from None

    def bytes32(self, what: str) -> bytes:
        return self.take(self.u32(what), what)

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError("%d trailing bytes after the reply body" % (len(self.data) - self.pos))


def _error(r: _Body) -> ServerError:
    code = r.u16("error code")
    retry = r.u32("retry after")
    leader = r.str16("leader")
    message = r.str16("message")
    return server_error(code, message, retry, leader)


def _event(r: _Body) -> Event:
    producer, seq, prio, flags = struct.unpack(">QQBB", r.take(18, "event ids"))
    topic = r.str16("topic")
    key = r.bytes32("key") if flags & EVENT_HAS_KEY else None
    headers = []
    for _ in range(r.u16("header count")):
        headers.append((r.str16("header name"), r.bytes32("header value")))
    payload = r.bytes32("payload")
    return Event(topic, payload, prio, key, headers, producer, seq)


def decode_header(head: bytes) -> Tuple[int, int, int]:
    """(kind, body length, request id) of a 20-byte reply header."""
    magic, version, kind, _flags, length, request_id = HEADER.unpack(head)
    if magic != MAGIC:
        raise ProtocolError("reply does not start with the protocol magic")
    if version != VERSION:
        raise ProtocolError("reply has protocol version %d, this client speaks %d" % (version, VERSION))
    return kind, length, request_id


def decode_reply(head: bytes, body: bytes, trailer: bytes) -> Tuple[int, Reply]:
    """(request id, decoded reply) of a whole reply frame. ERROR frames decode to a ServerError
    instance (returned, not raised)."""
    kind, length, request_id = decode_header(head)
    if len(body) != length:
        raise ProtocolError("reply body is %d bytes, header says %d" % (len(body), length))
    if struct.unpack(">I", trailer)[0] != crc32c(head[4:] + body):
        raise ProtocolError("reply checksum mismatch")
    r = _Body(body)
    out: Reply
    if kind == HELLO_OK:
        out = ServerInfo(r.str16("server"), r.u64("node id"), r.u32("max frame"))
    elif kind == ACK:
        acks = []
        for _ in range(r.u32("ack count")):
            status = r.u8("ack status")
            if status in (0, 1):
                acks.append(Ack(r.str16("topic"), r.u64("offset"), status == 1))
            elif status == 2:
                acks.append(Ack(error=_error(r)))
            else:
                raise ProtocolError("unknown ack status %d" % status)
        out = acks
    elif kind == FETCHED:
        topic = r.str16("topic")
        next_offset = r.u64("next offset")
        end_offset = r.u64("end offset")
        events = []
        for _ in range(r.u32("event count")):
            offset = r.u64("offset")
            ts = r.u64("timestamp")
            events.append(StoredEvent(offset, ts, _event(r)))
        out = Fetched(topic, next_offset, end_offset, events)
    elif kind == PONG:
        out = None
    elif kind == ADMIN_OK:
        try:
            out = r.bytes32("admin text").decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("admin reply is not valid UTF-8") from None
    elif kind == COMMITTED:
        out = Committed(r.str16("consumer name"), r.str16("topic"), r.u64("offset"))
    elif kind == CONSUMER_LIST:
        out = [
            ConsumerPosition(r.str16("consumer name"), r.str16("topic"), r.u64("committed"), r.u64("end offset"))
            for _ in range(r.u32("consumer count"))
        ]
    elif kind == ERROR:
        out = _error(r)
    else:
        raise ProtocolError("unknown reply kind 0x%02x" % kind)
    r.finish()
    return request_id, out
