"""A client of a whole cluster: leader redirects, failover, retries with the same idempotency keys."""

import secrets
import ssl
import time
from collections import deque
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

from . import protocol as p
from .connection import Address, Connection, format_address, parse_address, tls_context
from .errors import (
    INTERNAL,
    NOT_LEADER,
    OVERLOADED,
    UNAVAILABLE,
    ConnectionLost,
    EscError,
    OutOfRange,
    ProtocolError,
    ServerError,
)

T = TypeVar("T")


class Client:
    """Talks to a cluster given as a member list (``"a:7070,b:7071"`` or a list of addresses).

    * Publishes carry idempotency keys: this client's ``producer_id`` (random unless given) and
      a sequence number it counts up from ``first_sequence``. A retry resends the very same
      keys, so an event that was in fact stored before a failure is answered with its original
      offset (``Ack.duplicate``) instead of being stored twice.
    * ``not_leader`` is followed to the leader it names; ``unavailable``, a lost connection or a
      timeout move to the next member; ``overloaded`` and ``internal`` wait ``retry_after_ms``.
      After ``max_attempts`` the last error is raised.
    * Reads (fetch, read, tail) are served by whichever member answers.

    Usable as a context manager; :meth:`close` closes the connection in use.
    """

    def __init__(
        self,
        members: Union[str, Address, Sequence[Address]] = "127.0.0.1:7070",
        token: str = "",
        client_name: str = "esc-python",
        producer_id: Optional[int] = None,
        first_sequence: int = 1,
        timeout: float = 10.0,
        max_attempts: int = 20,
        backoff: float = 0.2,
        ssl_context: Optional[ssl.SSLContext] = None,
        tls_ca: Optional[str] = None,
        server_hostname: Optional[str] = None,
    ) -> None:
        if isinstance(members, str):
            members = [m for m in members.split(",") if m.strip()]
        elif isinstance(members, tuple):
            members = [members]
        self.members: List[Tuple[str, int]] = [parse_address(m) for m in members]
        if not self.members:
            raise ValueError("a client needs at least one member address")
        self.token = token
        self.client_name = client_name
        #: Producer half of every idempotency key this client assigns (0 would mean anonymous).
        self.producer_id = secrets.randbits(63) + 1 if producer_id is None else producer_id
        #: Sequence the next assigned event gets.
        self.next_sequence = first_sequence
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        #: TLS settings for every connection (see :class:`Connection`); built once, so a bad
        #: ``tls_ca`` fails here rather than on the first request.
        self.ssl_context = tls_context(ssl_context, tls_ca)
        self.server_hostname = server_hostname
        self._next = 0
        self._conn: Optional[Connection] = None

    # -- connection management -----------------------------------------------------------

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected_to(self) -> Optional[str]:
        """``host:port`` of the member in use, if connected."""
        return format_address(self._conn.address) if self._conn and not self._conn.closed else None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            addr = self.members[self._next % len(self.members)]
            self._next = (self._next + 1) % len(self.members)
            self._conn = None
            self._conn = Connection(
                addr,
                self.token,
                self.client_name,
                self.timeout,
                ssl_context=self.ssl_context,
                server_hostname=self.server_hostname,
            )
        return self._conn

    def _go_to(self, leader: str) -> bool:
        try:
            addr = parse_address(leader)
        except ValueError:
            return False
        if addr not in self.members:
            self.members.append(addr)
        self._next = self.members.index(addr)
        return True

    def _with_retry(self, op: Callable[[Connection], T]) -> T:
        last: Optional[EscError] = None
        for _ in range(max(1, self.max_attempts)):
            try:
                return op(self._connection())
            except ServerError as e:
                last = e
                if e.code == NOT_LEADER:
                    self.close()
                    if e.leader and self._go_to(e.leader):
                        continue
                    time.sleep(self.backoff)
                elif e.code == UNAVAILABLE:
                    # This member cannot commit now: ask another, after the pause it asked for.
                    self.close()
                    time.sleep(max(e.retry_after_ms / 1000.0, 0.01))
                elif e.code in (OVERLOADED, INTERNAL):
                    time.sleep(max(e.retry_after_ms / 1000.0, 0.01) if e.retry_after_ms else self.backoff)
                else:
                    raise
            except ConnectionLost as e:
                last = e
                self.close()
                time.sleep(self.backoff)
        assert last is not None
        raise last

    # -- publishing ----------------------------------------------------------------------

    def _assign_keys(self, events: Iterable[p.Event]) -> List[p.Event]:
        out = []
        for e in events:
            if e.producer_id == 0 and self.producer_id != 0:
                e.producer_id = self.producer_id
                e.sequence = self.next_sequence
                self.next_sequence += 1
            out.append(e)
        return out

    def publish(
        self,
        topic: str,
        payload: Union[bytes, str],
        key: Optional[Union[bytes, str]] = None,
        headers: Optional[Dict[str, Union[bytes, str]]] = None,
        priority: int = p.Priority.MEDIUM,
        sequence: Optional[int] = None,
    ) -> p.Ack:
        """Publishes one event and returns its ack once it is committed. A rejected event raises
        its :class:`ServerError`. ``sequence`` overrides the client's counter (to resend a known key)."""
        event = p.Event(
            topic,
            _b(payload),
            priority,
            None if key is None else _b(key),
            [(k, _b(v)) for k, v in (headers or {}).items()],
        )
        if sequence is not None:
            event.producer_id, event.sequence = self.producer_id, sequence
        ack = self.publish_batch([event])[0]
        if ack.error is not None:
            raise ack.error
        return ack

    def publish_batch(self, events: Sequence[p.Event]) -> List[p.Ack]:
        """Publishes events in one frame; one :class:`Ack` per event, in order (a rejected event
        has ``ack.error`` set, the others are stored). Events with ``producer_id == 0`` get this
        client's keys. Retries resend the same frame, keys and all."""
        events = self._assign_keys(events)
        if not events:
            return []

        def op(c: Connection) -> List[p.Ack]:
            acks = c.call(lambda rid: p.publish(rid, events))
            if not isinstance(acks, list) or len(acks) != len(events):
                c.close()
                raise ProtocolError("PUBLISH of %d events was not answered with %d acks" % (len(events), len(events)))
            return acks

        return self._with_retry(op)

    def publish_pipelined(self, batches: Sequence[Sequence[p.Event]]) -> List[List[p.Ack]]:
        """Sends several PUBLISH frames back to back on one connection, then reads the replies.
        A frame refused with a retryable error is resent alone afterwards with the same keys
        (so it may be stored after frames sent later: see "Ordering" in docs/protocol.md)."""
        frames = [self._assign_keys(b) for b in batches]
        frames_to_send = [f for f in frames if f]

        def op(c: Connection) -> List[p.Reply]:
            return c.call_many([(lambda rid, f=f: p.publish(rid, f)) for f in frames_to_send])

        replies = self._with_retry(op)
        out: List[List[p.Ack]] = []
        it = iter(replies)
        for f in frames:
            if not f:
                out.append([])
                continue
            reply = next(it)
            if isinstance(reply, ServerError):
                if not reply.retryable:
                    raise reply
                out.append(self.publish_batch(f))
            elif isinstance(reply, list) and len(reply) == len(f):
                out.append(reply)
            else:
                raise ProtocolError("a PUBLISH was not answered with one ack per event")
        return out

    # -- reading -------------------------------------------------------------------------

    def fetch(self, topic: str, offset: int = 0, max_events: int = 100) -> p.Fetched:
        """Up to ``max_events`` events of ``topic`` from ``offset``, as committed on the member
        that answers. The server also caps a page at its ``ingest.max_fetch_events``."""
        _check_max(max_events)
        return self._read_op(lambda rid: p.fetch(rid, topic, offset, max_events), None)

    def read(
        self, topic: str, offset: int = 0, max_events: int = 100, linearizable: bool = False, wait_ms: int = 0
    ) -> p.Fetched:
        """A fetch with options: ``linearizable`` confirms with the leader first (sees every event
        acked before the call); ``wait_ms`` (at most 30 000) holds an empty answer until an event
        arrives (long poll)."""
        _check_max(max_events)
        if not 0 <= wait_ms <= p.MAX_WAIT_MS:
            raise ValueError("wait_ms must be 0..%d (the server clamps longer waits)" % p.MAX_WAIT_MS)
        return self._read_op(
            lambda rid: p.read(rid, topic, offset, max_events, linearizable, wait_ms), self.timeout + wait_ms / 1000.0
        )

    def _read_op(self, build: Callable[[int], bytes], timeout: Optional[float]) -> p.Fetched:
        def op(c: Connection) -> p.Fetched:
            page = c.call(build, timeout)
            if not isinstance(page, p.Fetched):
                c.close()
                raise ProtocolError("a read was not answered with FETCHED")
            return page

        return self._with_retry(op)

    def tail(
        self,
        topic: str,
        offset: int = 0,
        linearizable: bool = False,
        wait_ms: int = 10_000,
        max_events: int = 1000,
        stop_at_end: bool = False,
    ) -> "Tail":
        """An iterator over the events of ``topic`` from ``offset``, following new ones as they are
        committed (long-poll READs). With ``stop_at_end`` it stops at the topic's end instead.
        An ``offset`` below what retention kept starts at the first retained event (``Tail.skipped``
        says what was gone); events removed later, while it follows, raise :class:`OutOfRange`."""
        return Tail(self, topic, offset, linearizable, wait_ms, max_events, stop_at_end)

    # -- durable consumers ---------------------------------------------------------------

    def commit(self, name: str, topic: str, offset: int, reset: bool = False) -> int:
        """Records consumer ``name``'s position on ``topic`` (the next offset it has not handled)
        once it is committed; returns the position now recorded. Positions never move back
        unless ``reset``; a commit past the topic's end raises :class:`InvalidCommit`.
        Retrying is safe (committing the same offset twice changes nothing)."""

        def op(c: Connection) -> int:
            reply = c.call(lambda rid: p.commit(rid, name, topic, offset, reset))
            if not isinstance(reply, p.Committed):
                c.close()
                raise ProtocolError("COMMIT was not answered with COMMITTED")
            return reply.offset

        return self._with_retry(op)

    def consumers(self, name: str = "") -> List[p.ConsumerPosition]:
        """Named consumers (``name`` empty: all) with committed offset, topic end and lag, as
        the member that answers knows them."""

        def op(c: Connection) -> List[p.ConsumerPosition]:
            reply = c.call(lambda rid: p.consumers(rid, name))
            if not isinstance(reply, list):
                c.close()
                raise ProtocolError("CONSUMERS was not answered with CONSUMER_LIST")
            return reply

        return self._with_retry(op)

    def committed(self, name: str, topic: str) -> Optional[int]:
        """Consumer ``name``'s committed position on ``topic``, or None if it never committed."""
        for c in self.consumers(name):
            if c.topic == topic:
                return c.committed
        return None

    def consume(
        self,
        name: str,
        topic: str,
        commit_every: int = 100,
        from_offset: int = 0,
        wait_ms: int = 10_000,
        stop_at_end: bool = False,
    ) -> "Consumer":
        """A durable :class:`Consumer` called ``name`` on ``topic``: resumes at its committed
        position (``from_offset`` if it has none) and commits as it goes (at-least-once)."""
        return Consumer(self, name, topic, commit_every, from_offset, wait_ms, stop_at_end)

    # -- administration ------------------------------------------------------------------

    def _admin(self, op: int, node: int = 0, raft_addr: str = "", client_addr: str = "") -> str:
        def run(c: Connection) -> str:
            text = c.call(lambda rid: p.admin(rid, op, node, raft_addr, client_addr), max(self.timeout, 90.0))
            if not isinstance(text, str):
                c.close()
                raise ProtocolError("ADMIN was not answered with ADMIN_OK")
            return text

        return self._with_retry(run)

    def status(self) -> str:
        """The answering member's view: role, term, leader, commit/applied indexes, members."""
        return self._admin(p.ADMIN_STATUS)

    def add_node(self, node_id: int, raft_addr: str, client_addr: str) -> str:
        """Adds a node (started with ``cluster.join = true``): learner first, voter once caught up."""
        if not raft_addr or not client_addr:
            raise ValueError("add_node needs the new node's Raft and client addresses")
        return self._admin(p.ADMIN_ADD, node_id, raft_addr, client_addr)

    def remove_node(self, node_id: int) -> str:
        """Removes a node (the leader included)."""
        return self._admin(p.ADMIN_REMOVE, node_id)

    def topics(self) -> List[p.TopicInfo]:
        """Every topic the answering member holds, sorted by name (ADMIN op 4, the data of
        ``esc topics``): retained events and bytes, first and end offsets, retention limits."""
        return p.decode_topics(self._admin(p.ADMIN_TOPICS))

    def transfer_leader(self, node_id: int) -> str:
        """Hands leadership to another voter."""
        return self._admin(p.ADMIN_TRANSFER, node_id)

    def ping(self) -> None:
        """Round trip to the member in use."""
        self._with_retry(lambda c: c.ping())


class Tail:
    """Iterator of :class:`StoredEvent` in offset order, from any member; survives member
    failures (moves on and resumes at ``next_offset``), so it yields no gap and no repeat."""

    def __init__(
        self, client: Client, topic: str, offset: int, linearizable: bool, wait_ms: int, max_events: int, stop_at_end: bool
    ) -> None:
        self.client = client
        self.topic = topic
        #: Offset of the next event this iterator yields.
        self.next_offset = offset
        #: The topic's end as last reported.
        self.end_offset = 0
        self.linearizable = linearizable
        self.wait_ms = 0 if stop_at_end else wait_ms
        self.max_events = max_events
        self.stop_at_end = stop_at_end
        self._page: "deque[p.StoredEvent]" = deque()
        self._polled = False
        self._yielded = False
        #: ``(requested, first retained)`` when the start offset was below retention, else None.
        self.skipped: Optional[Tuple[int, int]] = None

    def __iter__(self) -> Iterator[p.StoredEvent]:
        return self

    def __next__(self) -> p.StoredEvent:
        while not self._page:
            if self.stop_at_end and self.next_offset >= self.end_offset and self._polled:
                raise StopIteration
            try:
                page = self.client.read(self.topic, self.next_offset, self.max_events, self.linearizable, self.wait_ms)
            except OutOfRange as e:
                first = e.first_available
                if self._yielded or first is None or first <= self.next_offset:
                    raise  # a gap while following is never skipped silently
                self.skipped = (self.next_offset, first)
                self.next_offset = first
                continue
            self._polled = True
            if page.events and page.events[0].offset != self.next_offset:
                raise ProtocolError("asked for offset %d, got %d" % (self.next_offset, page.events[0].offset))
            self.end_offset = page.end_offset
            self._page = deque(page.events)
            if self._page:
                self.next_offset = max(page.next_offset, self._page[-1].offset + 1)
            elif self.stop_at_end:
                raise StopIteration
        self._yielded = True
        return self._page.popleft()


class Consumer:
    """Iterator of a named consumer's events. An event counts as handled once the next one is
    asked for; every ``commit_every`` handled events the position is committed, and again when
    the iteration ends at the topic's end or the consumer is closed (``with`` block exited
    without an exception: the last event counts as handled too). A crash loses at most the
    events since the last commit, which the next incarnation gets again (at-least-once)."""

    def __init__(
        self, client: Client, name: str, topic: str, commit_every: int, from_offset: int, wait_ms: int, stop_at_end: bool
    ) -> None:
        if commit_every < 1:
            raise ValueError("commit_every must be at least 1")
        self.client = client
        self.name = name
        self.topic = topic
        self.commit_every = commit_every
        committed = client.committed(name, topic)
        #: Where this incarnation started: the committed position, or ``from_offset``.
        self.start_offset = from_offset if committed is None else committed
        self._tail = Tail(client, topic, self.start_offset, False, wait_ms, 1000, stop_at_end)
        self._last: Optional[int] = None  # offset of the last event yielded
        self._handled: Optional[int] = None  # one past the last handled event
        self._since = 0

    def __iter__(self) -> Iterator[p.StoredEvent]:
        return self

    def __next__(self) -> p.StoredEvent:
        if self._last is not None:
            self._handled, self._last = self._last + 1, None
            self._since += 1
            if self._since >= self.commit_every:
                self._commit(self._handled)
        try:
            ev = next(self._tail)
        except StopIteration:
            self._commit(self._handled)
            raise
        self._last = ev.offset
        return ev

    def _commit(self, upto: Optional[int]) -> None:
        if upto is not None and self._since > 0:
            self.client.commit(self.name, self.topic, upto)
            self._since = 0

    def commit(self) -> None:
        """Commits every event yielded so far (the last one included) now."""
        if self._last is not None:
            self._handled, self._last = self._last + 1, None
            self._since += 1
        self._commit(self._handled)

    def close(self) -> None:
        """Commits everything yielded (see :meth:`commit`)."""
        self.commit()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._commit(self._handled)


def _b(v: Union[bytes, str]) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def _check_max(max_events: int) -> None:
    if max_events < 1:
        raise ValueError("max_events must be at least 1 (0 returns nothing and the offset never advances)")
