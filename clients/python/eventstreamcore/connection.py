"""One TCP connection to one member: HELLO, requests, pipelined requests."""

import socket
import ssl
from typing import Callable, List, Optional, Sequence, Tuple, Union

from . import protocol as p
from .errors import ConnectionLost, ProtocolError, RequestTimeout, ServerError

Address = Union[str, Tuple[str, int]]


def parse_address(addr: Address) -> Tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``(host, port)`` → ``(host, port)``."""
    if isinstance(addr, tuple):
        return addr[0], int(addr[1])
    text = addr.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError("address %r is not host:port" % addr)
    return host.strip("[]"), int(port)


def format_address(addr: Tuple[str, int]) -> str:
    host, port = addr
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def tls_context(ssl_context: Optional[ssl.SSLContext], tls_ca: Optional[str]) -> Optional[ssl.SSLContext]:
    """The context to wrap connections in: ``ssl_context`` as given, or one trusting only the CA
    certificate(s) in the PEM file ``tls_ca``, or None (plain TCP)."""
    if ssl_context is not None and tls_ca is not None:
        raise ValueError("give ssl_context or tls_ca, not both")
    if tls_ca is not None:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_ca)
    return ssl_context


class Connection:
    """A connection to one server, introduced with HELLO (and the token, if the server needs one).

    Requests are answered in order; :meth:`call_many` pipelines several. A request that times
    out or breaks closes the connection: a late reply would otherwise answer the next request.
    Usable as a context manager.

    TLS (a server with ``[ingest.tls]``): pass ``tls_ca`` (a PEM file of the CA to trust) or a
    ready ``ssl_context``; the server's certificate must name ``server_hostname`` (default: the
    host connected to, a DNS name or an IP address)."""

    def __init__(
        self,
        address: Address,
        token: str = "",
        client_name: str = "esc-python",
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        ssl_context: Optional[ssl.SSLContext] = None,
        tls_ca: Optional[str] = None,
        server_hostname: Optional[str] = None,
    ) -> None:
        self.address = parse_address(address)
        self.timeout = timeout
        self._next_id = 1
        self._sock: Optional[socket.socket] = None
        ctx = tls_context(ssl_context, tls_ca)
        try:
            sock = socket.create_connection(self.address, timeout=connect_timeout)
            if ctx is not None:
                try:
                    sock = ctx.wrap_socket(sock, server_hostname=server_hostname or self.address[0])
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
        except OSError as e:
            # ssl.SSLError (e.g. a certificate that does not verify) is an OSError too.
            raise ConnectionLost("cannot connect to %s: %s" % (format_address(self.address), e)) from e
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        try:
            info = self.call(lambda rid: p.hello(rid, client_name, token))
        except BaseException:
            self.close()
            raise
        if not isinstance(info, p.ServerInfo):
            self.close()
            raise ProtocolError("HELLO was not answered with HELLO_OK")
        self.info: p.ServerInfo = info

    # -- plumbing ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        """Closes the socket (idempotent)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, err: Exception) -> Exception:
        self.close()
        return err

    def _recv_exact(self, n: int, timeout: float) -> bytes:
        assert self._sock is not None
        self._sock.settimeout(timeout)
        while len(self._buf) < n:
            try:
                chunk = self._sock.recv(max(65536, n - len(self._buf)))
            except socket.timeout:
                raise self._fail(RequestTimeout("no reply from %s within %.1f s" % (format_address(self.address), timeout)))
            except OSError as e:
                raise self._fail(ConnectionLost("connection to %s failed: %s" % (format_address(self.address), e)))
            if not chunk:
                raise self._fail(ConnectionLost("%s closed the connection" % format_address(self.address)))
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _recv_reply(self, timeout: float) -> Tuple[int, p.Reply]:
        head = self._recv_exact(p.HEADER_LEN, timeout)
        try:
            _, length, _ = p.decode_header(head)
            if length > p.MAX_FRAME:
                raise ProtocolError("reply of %d bytes is above the protocol limit" % length)
            body = self._recv_exact(length, timeout)
            trailer = self._recv_exact(p.TRAILER_LEN, timeout)
            return p.decode_reply(head, body, trailer)
        except ProtocolError as e:
            raise self._fail(e)

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise ConnectionLost("connection to %s is closed" % format_address(self.address))
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)
        except socket.timeout:
            raise self._fail(RequestTimeout("sending to %s timed out" % format_address(self.address)))
        except OSError as e:
            raise self._fail(ConnectionLost("connection to %s failed: %s" % (format_address(self.address), e)))

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    # -- requests ------------------------------------------------------------------------

    def call_many(self, builders: Sequence[Callable[[int], bytes]], timeout: Optional[float] = None) -> List[p.Reply]:
        """Sends every request in one write, then reads every reply (pipelining). ERROR replies are
        returned in place as :class:`ServerError` instances, not raised."""
        ids = [self._take_id() for _ in builders]
        self._send(b"".join(build(rid) for rid, build in zip(ids, builders)))
        wait = self.timeout if timeout is None else timeout
        out: List[p.Reply] = []
        for want in ids:
            got, reply = self._recv_reply(wait)
            if got != want:
                self.close()
                if got == 0 and isinstance(reply, ServerError):
                    # Connection-level refusal (e.g. the server's connection limit): request id 0.
                    raise reply
                raise ProtocolError("reply to request %d while waiting for %d" % (got, want))
            out.append(reply)
        return out

    def call(self, build: Callable[[int], bytes], timeout: Optional[float] = None) -> p.Reply:
        """One request and its reply; an ERROR reply is raised as its :class:`ServerError` subclass."""
        reply = self.call_many([build], timeout)[0]
        if isinstance(reply, ServerError):
            if reply.code == 2:  # too_large: the server closes the connection after it
                self.close()
            raise reply
        return reply

    def ping(self) -> None:
        """Round trip."""
        self.call(p.ping)
