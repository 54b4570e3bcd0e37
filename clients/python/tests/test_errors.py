"""Typed errors 10-12, the TOPICS answer and a tail that starts below retention, against
scripted servers (the real-server side is in test_server.py)."""

import json
import struct
import unittest

from eventstreamcore import Client, Event, Forbidden, InvalidCommit, OutOfRange, ProtocolError, TopicInfo
from eventstreamcore import protocol as p
from eventstreamcore.errors import server_error

from .fake_server import FakeServer, error_body


def fetched_body(topic: str, offsets, end: int) -> bytes:
    tb = topic.encode()
    nxt = offsets[-1] + 1 if offsets else 0
    out = struct.pack(">H", len(tb)) + tb + struct.pack(">QQI", nxt, end, len(offsets))
    for o in offsets:
        out += struct.pack(">QQ", o, 1_700_000_000_000) + p.encode_event(Event(topic, b"e%d" % o))
    return out


def read_offset(body: bytes) -> int:
    (tlen,) = struct.unpack(">H", body[:2])
    (offset,) = struct.unpack(">Q", body[2 + tlen : 10 + tlen])
    return offset


class TypedErrors(unittest.TestCase):
    def test_codes_10_11_12_are_their_own_exceptions(self):
        e = server_error(11, "offset 0 of `t` was removed by retention; first available is 1200")
        self.assertIsInstance(e, OutOfRange)
        self.assertEqual((e.code, e.name, e.first_available, e.retryable), (11, "out_of_range", 1200, False))
        full = server_error(11, "topic `t` is full (3 events, max_events 3, discard new)")
        self.assertIsInstance(full, OutOfRange)
        self.assertIsNone(full.first_available, "a refused publish names no offset")
        self.assertIsInstance(server_error(10, "needs the admin role"), Forbidden)
        self.assertIsInstance(server_error(12, "offset 9 is past the end 3"), InvalidCommit)
        self.assertFalse(server_error(12, "x").retryable)

    def test_an_out_of_range_read_raises_at_once_with_the_first_offset(self):
        s = FakeServer(lambda kind, body, n: (p.ERROR, error_body(11, 0, "", "gone; first available is 7")))
        self.addCleanup(s.close)
        c = Client(s.address, backoff=0.01)
        self.addCleanup(c.close)
        with self.assertRaises(OutOfRange) as cm:
            c.fetch("t", 0, 10)
        self.assertEqual(cm.exception.first_available, 7)
        self.assertEqual(len(s.requests), 1, "not retried")


class TailBelowRetention(unittest.TestCase):
    def server(self, first: int, end: int) -> FakeServer:
        def handler(kind, body, n):
            at = read_offset(body)
            if at < first:
                return (p.ERROR, error_body(11, 0, "", "offset %d was removed by retention; first available is %d" % (at, first)))
            return (p.FETCHED, fetched_body("t", list(range(at, end)), end))

        s = FakeServer(handler)
        self.addCleanup(s.close)
        return s

    def test_a_tail_from_0_starts_at_the_first_retained_offset(self):
        s = self.server(3, 6)
        c = Client(s.address, backoff=0.01)
        self.addCleanup(c.close)
        tail = c.tail("t", 0, stop_at_end=True)
        self.assertEqual([e.offset for e in tail], [3, 4, 5])
        self.assertEqual(tail.skipped, (0, 3))

    def test_events_removed_while_following_are_not_skipped_silently(self):
        calls = []

        def handler(kind, body, n):
            at = read_offset(body)
            calls.append(at)
            if len(calls) == 1:
                return (p.FETCHED, fetched_body("t", [at], 10))
            return (p.ERROR, error_body(11, 0, "", "first available is 8"))

        s = FakeServer(handler)
        self.addCleanup(s.close)
        c = Client(s.address, backoff=0.01)
        self.addCleanup(c.close)
        tail = c.tail("t", 2)
        self.assertEqual(next(tail).offset, 2)
        with self.assertRaises(OutOfRange) as cm:
            next(tail)
        self.assertEqual(cm.exception.first_available, 8)
        self.assertIsNone(tail.skipped)


class Topics(unittest.TestCase):
    def test_topics_sends_admin_op_4_and_decodes_the_document(self):
        doc = {
            "topics": [
                {
                    "topic": "a",
                    "events": 2,
                    "bytes": 70,
                    "first_offset": 3,
                    "end_offset": 5,
                    "retention": {"max_bytes": None, "max_age_ms": None, "max_events": 2, "discard": "old"},
                }
            ]
        }
        text = json.dumps(doc).encode()
        s = FakeServer(lambda kind, body, n: (p.ADMIN_OK, struct.pack(">I", len(text)) + text))
        self.addCleanup(s.close)
        c = Client(s.address)
        self.addCleanup(c.close)
        self.assertEqual(
            c.topics(), [TopicInfo("a", 2, 70, 3, 5, {"max_bytes": None, "max_age_ms": None, "max_events": 2, "discard": "old"})]
        )
        kind, body = s.requests[0]
        self.assertEqual((kind, body[0]), (p.ADMIN, p.ADMIN_TOPICS))
        with self.assertRaises(ProtocolError):
            p.decode_topics('{"topics": [{"topic": "a"}]}')


if __name__ == "__main__":
    unittest.main()
