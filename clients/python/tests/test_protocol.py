"""Codec checks against docs/protocol.md; no server needed."""

import struct
import unittest

from eventstreamcore import protocol as p
from eventstreamcore.errors import Malformed, NotLeader, ProtocolError, ServerError, Unavailable


def reply_frame(kind: int, request_id: int, body: bytes) -> bytes:
    return p.encode_frame(kind, request_id, body)


def split(frame: bytes):
    return frame[:20], frame[20:-4], frame[-4:]


class Crc32c(unittest.TestCase):
    def test_known_vector(self):
        self.assertEqual(p.crc32c(b"123456789"), 0xE3069283)
        self.assertEqual(p.crc32c(b""), 0)


class Frames(unittest.TestCase):
    def test_header_layout_is_as_documented(self):
        f = p.ping(42)
        self.assertEqual(f[0:4], b"ESCP")
        self.assertEqual(f[4], 1)
        self.assertEqual(f[5], 0x04)
        self.assertEqual(f[6:8], b"\0\0")
        self.assertEqual(struct.unpack(">I", f[8:12])[0], 0)
        self.assertEqual(struct.unpack(">Q", f[12:20])[0], 42)
        self.assertEqual(struct.unpack(">I", f[20:24])[0], p.crc32c(f[4:20]))

    def test_event_layout(self):
        e = p.Event("t", b"pay", 3, b"k", [("h", b"v")], 7, 9)
        b = p.encode_event(e)
        want = (
            struct.pack(">QQBB", 7, 9, 3, 1)
            + b"\0\x01t"
            + b"\0\0\0\x01k"
            + b"\0\x01"
            + b"\0\x01h\0\0\0\x01v"
            + b"\0\0\0\x03pay"
        )
        self.assertEqual(b, want)

    def test_admin_always_carries_the_address_fields(self):
        f = p.admin(1, p.ADMIN_STATUS)
        self.assertEqual(f[20:-4], b"\0" + b"\0" * 8 + b"\0\0" + b"\0\0")

    def test_a_bad_priority_is_refused_before_sending(self):
        with self.assertRaises(ValueError):
            p.encode_event(p.Event("t", b"", 5))


class Replies(unittest.TestCase):
    def error_body(self, code, retry, leader, msg):
        return struct.pack(">HI", code, retry) + struct.pack(">H", len(leader)) + leader + struct.pack(">H", len(msg)) + msg

    def test_error_frames_become_typed_exceptions(self):
        rid, err = p.decode_reply(*split(reply_frame(p.ERROR, 5, self.error_body(5, 0, b"10.0.0.1:7070", b"not the leader"))))
        self.assertEqual(rid, 5)
        self.assertIsInstance(err, NotLeader)
        self.assertEqual((err.code, err.name, err.leader), (5, "not_leader", "10.0.0.1:7070"))
        self.assertTrue(err.retryable)
        _, err = p.decode_reply(*split(reply_frame(p.ERROR, 1, self.error_body(9, 200, b"", b"unavailable: no leader"))))
        self.assertIsInstance(err, Unavailable)
        self.assertEqual(err.retry_after_ms, 200)
        self.assertEqual(str(err), "unavailable: no leader", "the code name is said once")
        _, err = p.decode_reply(*split(reply_frame(p.ERROR, 1, self.error_body(77, 0, b"", b"new"))))
        self.assertEqual(type(err), ServerError)
        self.assertEqual(err.code, 77)

    def test_acks_and_rejections(self):
        body = struct.pack(">I", 2) + b"\0" + b"\0\x01t" + struct.pack(">Q", 4) + b"\x02" + self.error_body(1, 0, b"", b"bad topic")
        _, acks = p.decode_reply(*split(reply_frame(p.ACK, 1, body)))
        self.assertEqual((acks[0].topic, acks[0].offset, acks[0].ok), ("t", 4, True))
        self.assertIsInstance(acks[1].error, Malformed)

    def test_fetched_round_trip(self):
        ev = p.encode_event(p.Event("t", b"\xff\x00", 4, None, [], 1, 2))
        body = b"\0\x01t" + struct.pack(">QQI", 8, 8, 1) + struct.pack(">QQ", 7, 1700000000000) + ev
        _, page = p.decode_reply(*split(reply_frame(p.FETCHED, 3, body)))
        self.assertEqual((page.next_offset, page.end_offset, len(page.events)), (8, 8, 1))
        s = page.events[0]
        self.assertEqual((s.offset, s.timestamp_ms, s.payload, s.event.priority), (7, 1700000000000, b"\xff\x00", 4))

    def test_corrupt_replies_are_protocol_errors_never_index_errors(self):
        good = reply_frame(p.ADMIN_OK, 1, struct.pack(">I", 2) + b"ok")
        h, b, t = split(good)
        with self.assertRaises(ProtocolError):
            p.decode_reply(h, b, b"\0\0\0\0")  # checksum
        short = reply_frame(p.ADMIN_OK, 1, struct.pack(">I", 9) + b"ok")
        with self.assertRaises(ProtocolError):
            p.decode_reply(*split(short))  # truncated
        with self.assertRaises(ProtocolError):
            p.decode_reply(b"XXXX" + h[4:], b, t)  # magic


if __name__ == "__main__":
    unittest.main()
