"""Against a real 3-member cluster (ESC_CLUSTER = client addresses, ESC_CLUSTER_PIDS = their
process ids, same order): redirects to the leader, failover when the leader is killed, the
same keys after failover answered with the original offsets. Run by
`cargo test --test python_client`; skipped when ESC_CLUSTER is unset."""

import os
import signal
import time
import unittest

from eventstreamcore import Client, ConnectionLost, Event, ServerError

MEMBERS = [m for m in os.environ.get("ESC_CLUSTER", "").split(",") if m]
PIDS = [int(x) for x in os.environ.get("ESC_CLUSTER_PIDS", "").split(",") if x]


def leader_index(members, deadline_s=30.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for i, m in enumerate(members):
            try:
                with Client(m, max_attempts=1, timeout=2) as c:
                    if "role Leader" in c.status():
                        return i
            except (ConnectionLost, ServerError):
                pass
        time.sleep(0.05)
    raise AssertionError("no leader within %.0f s" % deadline_s)


@unittest.skipUnless(len(MEMBERS) == 3 and len(PIDS) == 3, "ESC_CLUSTER/ESC_CLUSTER_PIDS not set: run `cargo test --test python_client`")
class ThreeMembers(unittest.TestCase):
    def test_redirect_failover_and_the_same_keys_after_failover(self):
        lead = leader_index(MEMBERS)
        # Start at a follower: the first publish is redirected.
        order = [MEMBERS[(lead + 1) % 3], MEMBERS[(lead + 2) % 3], MEMBERS[lead]]
        c = Client(order, producer_id=4242, max_attempts=200, backoff=0.05, timeout=3)
        self.addCleanup(c.close)
        first = c.publish_batch([Event("orders", b"o%d" % i) for i in range(10)])
        self.assertEqual([a.offset for a in first], list(range(10)))
        self.assertEqual(c.connected_to, MEMBERS[lead], "followed the redirect to the leader")

        os.kill(PIDS[lead], signal.SIGKILL)
        second = c.publish_batch([Event("orders", b"o%d" % i) for i in range(10, 20)])
        self.assertEqual([a.offset for a in second], list(range(10, 20)))
        self.assertNotEqual(c.connected_to, MEMBERS[lead])

        # The first batch again, same keys, on the new leader: original offsets, no copies.
        again = Client(order, producer_id=4242, max_attempts=200, backoff=0.05, timeout=3)
        self.addCleanup(again.close)
        dup = again.publish_batch([Event("orders", b"o%d" % i) for i in range(10)])
        self.assertEqual([(a.offset, a.duplicate) for a in dup], [(i, True) for i in range(10)])

        survivors = [m for i, m in enumerate(MEMBERS) if i != lead]
        for m in survivors:
            reader = Client([m], max_attempts=200, backoff=0.05)
            self.addCleanup(reader.close)
            got = list(reader.tail("orders", 0, linearizable=True, stop_at_end=True))
            self.assertEqual([e.offset for e in got], list(range(20)), m)
            self.assertEqual([e.event.sequence for e in got], list(range(1, 21)), m)
            self.assertEqual([e.payload for e in got], [b"o%d" % i for i in range(20)], m)


if __name__ == "__main__":
    unittest.main()
