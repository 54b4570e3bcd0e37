"""Durable consumers against a real `esc serve` (ESC_ADDR, ESC_TOKEN): commit, resume after a
crash with no gap, positions that never move back, typed refusals.

Run by `cargo test --test python_client`; skipped when ESC_ADDR is unset."""

import os
import unittest
import uuid

from eventstreamcore import Client, Event, InvalidCommit
from eventstreamcore import protocol as p

ADDR = os.environ.get("ESC_ADDR", "")
TOKEN = os.environ.get("ESC_TOKEN", "")


@unittest.skipUnless(ADDR, "ESC_ADDR not set: run `cargo test --test python_client`")
class Consumers(unittest.TestCase):
    def setUp(self):
        self.c = Client(ADDR, token=TOKEN, timeout=10)
        self.addCleanup(self.c.close)
        self.topic = "py-consumers/" + uuid.uuid4().hex[:12]
        self.name = "py-" + uuid.uuid4().hex[:8]
        self.c.publish_batch([Event(self.topic, b"e%d" % i) for i in range(25)])

    def test_a_crashed_consumer_resumes_at_its_commit_with_no_gap(self):
        first = self.c.consume(self.name, self.topic, commit_every=10, stop_at_end=True)
        self.assertEqual(first.start_offset, 0)
        seen = [next(first).offset for _ in range(15)]
        # Crash: no close, no final commit. 10 were handled and committed (the 11th commit comes
        # when the 21st event is asked for).
        self.assertEqual(self.c.committed(self.name, self.topic), 10)
        second = self.c.consume(self.name, self.topic, commit_every=10, stop_at_end=True)
        self.assertEqual(second.start_offset, 10)
        rest = [ev.offset for ev in second]
        self.assertEqual(rest, list(range(10, 25)))
        self.assertEqual(sorted(set(seen + rest)), list(range(25)), "a gap")
        self.assertEqual(self.c.committed(self.name, self.topic), 25, "committed at the end")
        [pos] = self.c.consumers(self.name)
        self.assertEqual((pos.topic, pos.committed, pos.end_offset, pos.lag), (self.topic, 25, 25, 0))

    def test_with_block_commits_the_last_event_and_positions_never_move_back(self):
        with self.c.consume(self.name, self.topic, commit_every=1000) as cons:
            for ev in cons:
                if ev.offset == 4:
                    break
        self.assertEqual(self.c.committed(self.name, self.topic), 5)
        self.assertEqual(self.c.commit(self.name, self.topic, 2), 5)
        self.assertEqual(self.c.commit(self.name, self.topic, 2, reset=True), 2)

    def test_refusals_are_typed(self):
        with self.assertRaises(InvalidCommit) as cm:
            self.c.commit(self.name, self.topic, 26)
        self.assertEqual(cm.exception.code, 12)
        self.assertIn("past the end", str(cm.exception))
        with self.assertRaises(InvalidCommit):
            self.c.commit("has space", self.topic, 1)
        self.assertIsNone(self.c.committed(self.name, self.topic))


class Frames(unittest.TestCase):
    def test_commit_frame_layout(self):
        frame = p.commit(7, "w", "t", 3, reset=True)
        kind, length, rid = p.decode_header(frame[:20])
        self.assertEqual((kind, rid), (0x0C, 7))
        self.assertEqual(frame[20 : 20 + length], b"\x00\x01w\x00\x01t" + (3).to_bytes(8, "big") + b"\x01")
