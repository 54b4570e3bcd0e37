"""A scripted stand-in for a server, to drive the client's retry paths deterministically."""

import socket
import struct
import threading
from typing import Callable, List, Optional, Tuple

from eventstreamcore import protocol as p

Handler = Callable[[int, bytes, int], Optional[bytes]]


def error_body(code: int, retry_after_ms: int = 0, leader: str = "", message: str = "") -> bytes:
    lb, mb = leader.encode(), message.encode()
    return struct.pack(">HIH", code, retry_after_ms, len(lb)) + lb + struct.pack(">H", len(mb)) + mb


def ack_body(topic: str, offsets: List[int]) -> bytes:
    tb = topic.encode()
    return struct.pack(">I", len(offsets)) + b"".join(b"\0" + struct.pack(">H", len(tb)) + tb + struct.pack(">Q", o) for o in offsets)


class FakeServer:
    """Accepts connections on loopback; answers HELLO itself and every other request with
    ``handler(kind, body, request_number)`` → a whole reply body with its kind, or None for no reply.
    Records every request as (kind, body)."""

    def __init__(self, handler: Callable[[int, bytes, int], Optional[Tuple[int, bytes]]]) -> None:
        self.handler = handler
        self.requests: List[Tuple[int, bytes]] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buf = b""
        try:
            while not self._stop.is_set():
                while len(buf) < 20:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                _, _, kind, _, length, rid = p.HEADER.unpack(buf[:20])
                while len(buf) < 24 + length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[20 : 20 + length], buf[24 + length :]
                if kind == p.HELLO:
                    reply = (p.HELLO_OK, b"\0\x04fake" + struct.pack(">QI", 1, 1 << 20))
                else:
                    self.requests.append((kind, body))
                    reply = self.handler(kind, body, len(self.requests))
                if reply is not None:
                    conn.sendall(p.encode_frame(reply[0], rid, reply[1]))
        except OSError:
            return
        finally:
            conn.close()
