"""The client's retry paths against scripted servers: redirects, unavailable, timeouts — always
resending the same idempotency keys. No real server needed."""

import struct
import time
import unittest

from eventstreamcore import Client, ConnectionLost, Event, Malformed, Unauthorized
from eventstreamcore import protocol as p

from .fake_server import FakeServer, ack_body, error_body


def keys_of(publish_body: bytes):
    """(producer, sequence) of each event of a PUBLISH body with empty keys/headers."""
    (n,) = struct.unpack(">I", publish_body[:4])
    out, pos = [], 4
    for _ in range(n):
        producer, seq, _prio, _flags, tlen = struct.unpack(">QQBBH", publish_body[pos : pos + 20])
        pos += 20 + tlen + 2  # topic, header count (0)
        (plen,) = struct.unpack(">I", publish_body[pos : pos + 4])
        pos += 4 + plen
        out.append((producer, seq))
    return out


class Retries(unittest.TestCase):
    def setUp(self):
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.close()

    def client(self, *args, **kw):
        c = Client(*args, **kw)
        self.addCleanup(c.close)
        return c

    def server(self, handler):
        s = FakeServer(handler)
        self.servers.append(s)
        return s

    def test_not_leader_is_followed_and_unavailable_is_retried_with_the_same_keys(self):
        leader = self.server(
            lambda kind, body, n: (p.ERROR, error_body(9, 10, "", "no quorum")) if n == 1 else (p.ACK, ack_body("t", [5, 6]))
        )
        follower = self.server(lambda kind, body, n: (p.ERROR, error_body(5, 0, leader.address, "not the leader")))
        c = self.client([follower.address], producer_id=77, max_attempts=10, backoff=0.01)
        acks = c.publish_batch([Event("t", b"a"), Event("t", b"b")])
        self.assertEqual([a.offset for a in acks], [5, 6])
        self.assertEqual(len(leader.requests), 2, "one unavailable, one retry")
        self.assertEqual(leader.requests[0], leader.requests[1], "the retry is the same frame body")
        self.assertEqual(keys_of(leader.requests[1][1]), [(77, 1), (77, 2)])
        self.assertGreaterEqual(len(follower.requests), 1)
        self.assertEqual(c.next_sequence, 3, "a retry does not consume new sequences")

    def test_a_timeout_reconnects_and_resends_the_same_keys(self):
        s = self.server(lambda kind, body, n: None if n == 1 else (p.ACK, ack_body("t", [0])))
        c = self.client(s.address, producer_id=9, timeout=0.3, backoff=0.01)
        ack = c.publish("t", b"x")
        self.assertEqual(ack.offset, 0)
        self.assertEqual(len(s.requests), 2)
        self.assertEqual(s.requests[0], s.requests[1])

    def test_unreachable_members_are_skipped(self):
        s = self.server(lambda kind, body, n: (p.ACK, ack_body("t", [3])))
        dead = "127.0.0.1:1"
        c = self.client([dead, s.address], backoff=0.01)
        self.assertEqual(c.publish("t", b"x").offset, 3)
        self.assertEqual(c.connected_to, s.address)

    def test_final_errors_are_raised_at_once_and_attempts_are_bounded(self):
        s = self.server(lambda kind, body, n: (p.ERROR, error_body(1, 0, "", "bad")))
        with self.assertRaises(Malformed) as cm:
            self.client(s.address).publish("t", b"x")
        self.assertEqual(cm.exception.code, 1)
        self.assertEqual(len(s.requests), 1, "malformed is not retried")
        started = time.monotonic()
        with self.assertRaises(ConnectionLost):
            self.client("127.0.0.1:1", max_attempts=3, backoff=0.01).publish("t", b"x")
        self.assertLess(time.monotonic() - started, 5)

    def test_a_rejected_single_publish_raises_its_error(self):
        body = struct.pack(">I", 1) + b"\x02" + error_body(6, 0, "", "topic not allowed")
        s = self.server(lambda kind, b, n: (p.ACK, body))
        with self.assertRaises(Unauthorized):
            self.client(s.address).publish("t", b"x")


if __name__ == "__main__":
    unittest.main()
