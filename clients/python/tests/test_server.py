"""Against a real `esc serve` (address in ESC_ADDR, its auth token in ESC_TOKEN).

Run by `cargo test --test python_client`, which starts the server; skipped when ESC_ADDR is
unset (the Rust harness fails on any skip)."""

import os
import socket
import struct
import threading
import time
import unittest
import uuid

from eventstreamcore import Client, Connection, Event, Malformed, OutOfRange, Priority, Unauthorized, Unsupported
from eventstreamcore import protocol as p

ADDR = os.environ.get("ESC_ADDR", "")
TOKEN = os.environ.get("ESC_TOKEN", "")


def topic() -> str:
    return "py/" + uuid.uuid4().hex[:12]


@unittest.skipUnless(ADDR, "ESC_ADDR not set: run `cargo test --test python_client`")
class AgainstServer(unittest.TestCase):
    def setUp(self):
        self.c = Client(ADDR, token=TOKEN, timeout=10)
        self.addCleanup(self.c.close)

    def test_hello_reports_the_server(self):
        with Connection(ADDR, TOKEN) as conn:
            self.assertEqual(conn.info.node_id, 1)
            self.assertGreater(conn.info.max_frame_bytes, 1000)
            conn.ping()

    def test_a_wrong_token_is_unauthorized_and_requests_before_hello_are_refused(self):
        with self.assertRaises(Unauthorized) as cm:
            Connection(ADDR, "wrong-" + TOKEN)
        self.assertEqual(cm.exception.code, 6)
        # Raw socket, no HELLO: FETCH, READ and PUBLISH are all refused with unauthorized.
        host, port = ADDR.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(p.fetch(1, "t", 0, 10) + p.read(2, "t", 0, 10, False, 0) + p.publish(3, [Event("t", b"x")]))
            buf = b""
            codes = []
            while len(codes) < 3:
                while len(buf) < 20:
                    buf += s.recv(4096)
                _, length, _ = p.decode_header(buf[:20])
                while len(buf) < 24 + length:
                    buf += s.recv(4096)
                _, reply = p.decode_reply(buf[:20], buf[20 : 20 + length], buf[20 + length : 24 + length])
                buf = buf[24 + length :]
                codes.append(reply.code)
            self.assertEqual(codes, [6, 6, 6])

    def test_topics_report_retention_and_a_tail_from_0_starts_at_the_first_retained_event(self):
        # The harness configures [topics."pyret-*"] max_events = 3.
        t = "pyret-" + uuid.uuid4().hex[:8]
        for i in range(8):
            self.c.publish(t, b"m%d" % i)
        deadline = time.monotonic() + 20
        while True:  # the leader proposes the trim on its tick
            info = [x for x in self.c.topics() if x.topic == t]
            if info and info[0].first_offset == 5:
                break
            self.assertLess(time.monotonic(), deadline, "not trimmed: %r" % info)
            time.sleep(0.05)
        self.assertEqual((info[0].events, info[0].end_offset, info[0].retention["max_events"]), (3, 8, 3))
        self.assertEqual(info[0].retention["discard"], "old")
        with self.assertRaises(OutOfRange) as cm:
            self.c.fetch(t, 0, 10)
        self.assertEqual(cm.exception.first_available, 5)
        tail = self.c.tail(t, 0, stop_at_end=True)
        self.assertEqual([e.payload for e in tail], [b"m5", b"m6", b"m7"])
        self.assertEqual(tail.skipped, (0, 5))

    def test_publish_and_read_back_binary_payload_key_headers_and_priority(self):
        t = topic()
        ack = self.c.publish(t, b"\xff\x00\x80", key=b"k1", headers={"trace": b"\x01\x02", "kind": "demo"}, priority=Priority.CRITICAL)
        self.assertEqual((ack.topic, ack.offset, ack.duplicate), (t, 0, False))
        page = self.c.fetch(t, 0, 10)
        self.assertEqual((page.next_offset, page.end_offset, len(page.events)), (1, 1, 1))
        ev = page.events[0]
        self.assertEqual(ev.payload, b"\xff\x00\x80")
        self.assertEqual(ev.key, b"k1")
        self.assertEqual(sorted(ev.headers), [("kind", b"demo"), ("trace", b"\x01\x02")])
        self.assertEqual(ev.event.priority, Priority.CRITICAL)
        self.assertEqual((ev.event.producer_id, ev.event.sequence), (self.c.producer_id, 1))
        self.assertLess(abs(ev.timestamp_ms - time.time() * 1000), 60_000, "timestamp is ms since the epoch")

    def test_the_same_key_again_returns_the_original_offset(self):
        t = topic()
        first = self.c.publish_batch([Event(t, b"a"), Event(t, b"b"), Event(t, b"c")])
        self.assertEqual([a.offset for a in first], [0, 1, 2])
        again = self.c.publish(t, b"b-again", sequence=2)
        self.assertEqual((again.offset, again.duplicate), (1, True))
        other = Client(ADDR, token=TOKEN, producer_id=self.c.producer_id, first_sequence=1)
        self.addCleanup(other.close)
        dup = other.publish_batch([Event(t, b"a"), Event(t, b"b"), Event(t, b"c")])
        self.assertEqual([(a.offset, a.duplicate) for a in dup], [(0, True), (1, True), (2, True)])
        self.assertEqual(self.c.fetch(t).end_offset, 3, "no copies stored")

    def test_an_invalid_topic_is_rejected_alone_in_a_batch(self):
        t = topic()
        acks = self.c.publish_batch([Event(t, b"1"), Event("bad\ntopic", b"2"), Event(t, b"3")])
        self.assertEqual([a.ok for a in acks], [True, False, True])
        self.assertIsInstance(acks[1].error, Malformed)
        self.assertEqual(acks[1].error.code, 1)
        self.assertEqual((acks[0].offset, acks[2].offset), (0, 1))

    def test_pipelined_frames_are_stored_in_order(self):
        t = topic()
        batches = [[Event(t, b"%d-%d" % (i, j)) for j in range(3)] for i in range(5)]
        acks = self.c.publish_pipelined(batches)
        self.assertEqual([a.offset for frame in acks for a in frame], list(range(15)))
        got = [e.payload for e in self.c.tail(t, 0, stop_at_end=True)]
        self.assertEqual(got, [b"%d-%d" % (i, j) for i in range(5) for j in range(3)])

    def test_fetch_pages_and_offsets_past_the_end(self):
        t = topic()
        self.c.publish_batch([Event(t, b"%d" % i) for i in range(5)])
        page = self.c.fetch(t, 1, 2)
        self.assertEqual(([e.offset for e in page.events], page.next_offset, page.end_offset), ([1, 2], 3, 5))
        past = self.c.fetch(t, 99, 10)
        self.assertEqual((past.events, past.next_offset, past.end_offset), ([], 99, 5))
        unknown = self.c.fetch(topic(), 0, 10)
        self.assertEqual((unknown.events, unknown.next_offset, unknown.end_offset), ([], 0, 0))
        with self.assertRaises(ValueError):
            self.c.fetch(t, 0, 0)
        lin = self.c.read(t, 0, 100, linearizable=True)
        self.assertEqual(len(lin.events), 5)

    def test_tail_long_polls_for_new_events(self):
        t = topic()
        self.c.publish(t, b"first")
        tail = Client(ADDR, token=TOKEN).tail(t, 0, wait_ms=5000)
        self.addCleanup(tail.client.close)
        self.assertEqual(next(tail).payload, b"first")
        timer = threading.Timer(0.3, lambda: self.c.publish(t, b"second"))
        timer.start()
        started = time.monotonic()
        ev = next(tail)
        timer.join()
        self.assertEqual((ev.offset, ev.payload), (1, b"second"))
        self.assertGreater(time.monotonic() - started, 0.2, "the read waited for the event")
        self.assertEqual(tail.next_offset, 2)

    def test_admin_status(self):
        text = self.c.status()
        self.assertIn("role Leader", text)
        self.assertIn("member 1 voter", text)


def raw_publish_body(*events: bytes) -> bytes:
    return struct.pack(">I", len(events)) + b"".join(events)


@unittest.skipUnless(ADDR, "ESC_ADDR not set: run `cargo test --test python_client`")
class DocumentedBehaviour(unittest.TestCase):
    """Pins what docs/protocol.md says about corner cases, so the doc and the server stay in step."""

    def setUp(self):
        self.conn = Connection(ADDR, TOKEN)
        self.addCleanup(self.conn.close)

    def one(self, build):
        return self.conn.call_many([build])[0]

    def test_an_event_that_does_not_decode_refuses_the_whole_frame(self):
        t = topic()
        good = p.encode_event(Event(t, b"x", 2, None, [], 0, 0))
        bad_priority = bytearray(p.encode_event(Event(t, b"y", 2, None, [], 0, 0)))
        bad_priority[16] = 7
        reply = self.one(lambda rid: p.encode_frame(p.PUBLISH, rid, raw_publish_body(good, bytes(bad_priority))))
        self.assertIsInstance(reply, Malformed)
        bad_utf8 = struct.pack(">QQBB", 0, 0, 2, 0) + b"\0\x02\xff\xfe" + b"\0\0" + b"\0\0\0\x01z"
        reply = self.one(lambda rid: p.encode_frame(p.PUBLISH, rid, raw_publish_body(good, bad_utf8)))
        self.assertIsInstance(reply, Malformed)
        self.assertEqual(self.one(lambda rid: p.fetch(rid, t, 0, 10)).end_offset, 0, "nothing of either frame stored")

    def test_fetched_offsets_as_documented(self):
        t = topic()
        self.one(lambda rid: p.publish(rid, [Event(t, b"a"), Event(t, b"b")]))
        page = self.one(lambda rid: p.fetch(rid, t, 0, 0))
        self.assertEqual((page.events, page.next_offset, page.end_offset), ([], 0, 2), "max_events = 0")
        page = self.one(lambda rid: p.fetch(rid, t, 7, 10))
        self.assertEqual((page.events, page.next_offset, page.end_offset), ([], 7, 2), "past the end")
        page = self.one(lambda rid: p.fetch(rid, topic(), 3, 10))
        self.assertEqual((page.events, page.next_offset, page.end_offset), ([], 3, 0), "unknown topic")

    def test_admin_needs_every_field_and_an_unknown_op_is_unsupported(self):
        short = self.one(lambda rid: p.encode_frame(p.ADMIN, rid, struct.pack(">BQ", 0, 0)))
        self.assertIsInstance(short, Malformed)
        unknown = self.one(lambda rid: p.admin(rid, 42))
        self.assertIsInstance(unknown, Unsupported)
        self.assertIn("unknown admin op 42", str(unknown))
        self.assertIn("role", self.one(lambda rid: p.admin(rid, p.ADMIN_STATUS)))

    def test_a_resent_key_on_another_topic_names_the_original(self):
        t1, t2 = topic(), topic()
        first = self.one(lambda rid: p.publish(rid, [Event(t1, b"1", 2, None, [], 5150, 1)]))[0]
        again = self.one(lambda rid: p.publish(rid, [Event(t2, b"2", 2, None, [], 5150, 1)]))[0]
        self.assertEqual((again.topic, again.offset, again.duplicate), (t1, first.offset, True))
        self.assertEqual(self.one(lambda rid: p.fetch(rid, t2, 0, 10)).end_offset, 0)

    def test_reserved_frame_flags_are_refused(self):
        def flagged(rid):
            f = bytearray(p.ping(rid))
            f[6:8] = b"\xff\xff"
            return bytes(f[:20]) + struct.pack(">I", p.crc32c(bytes(f[4:20])))

        refused = self.one(flagged)
        self.assertIsInstance(refused, Malformed)
        self.assertIn("reserved header flag bits", str(refused))
        self.assertIsNone(self.one(p.ping), "the connection goes on: PONG")


if __name__ == "__main__":
    unittest.main()
