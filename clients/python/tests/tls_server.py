"""Against a real `esc serve` with TLS on its client port (address in ESC_TLS_ADDR, the CA that
signed its certificate in ESC_TLS_CA): the client speaks TLS through Python's standard ``ssl``.

Run by `cargo test --test python_client`, which makes the certificates and starts the server;
skipped when ESC_TLS_ADDR is unset (the Rust harness fails on any skip)."""

import os
import ssl
import unittest
import uuid

from eventstreamcore import Client, Connection, ConnectionLost, EscError

ADDR = os.environ.get("ESC_TLS_ADDR", "")
CA = os.environ.get("ESC_TLS_CA", "")


@unittest.skipUnless(ADDR and CA, "ESC_TLS_ADDR/ESC_TLS_CA not set: run `cargo test --test python_client`")
class OverTls(unittest.TestCase):
    def test_publish_and_fetch_with_tls_ca(self):
        t = "py-tls/" + uuid.uuid4().hex[:12]
        with Client(ADDR, tls_ca=CA, timeout=10) as c:
            ack = c.publish(t, b"over tls")
            self.assertEqual((ack.offset, ack.duplicate), (0, False))
            page = c.fetch(t, 0, 10)
            self.assertEqual([e.payload for e in page.events], [b"over tls"])

    def test_a_caller_built_ssl_context_works_and_the_session_is_really_tls(self):
        ctx = ssl.create_default_context(cafile=CA)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with Connection(ADDR, ssl_context=ctx) as conn:
            conn.ping()
            self.assertIsInstance(conn._sock, ssl.SSLSocket)
            self.assertIn(conn._sock.version(), ("TLSv1.2", "TLSv1.3"))
            self.assertIsNotNone(conn._sock.getpeercert())

    def test_a_plain_client_gets_no_service(self):
        with self.assertRaises(EscError):
            Connection(ADDR, timeout=5)

    def test_a_server_certificate_that_does_not_verify_is_refused(self):
        # The system's default trust store does not know the test CA.
        with self.assertRaises(ConnectionLost) as cm:
            Connection(ADDR, ssl_context=ssl.create_default_context(), timeout=5)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(cm.exception))
        # The right CA but a name the certificate does not carry.
        with self.assertRaises(ConnectionLost) as cm:
            Connection(ADDR, tls_ca=CA, server_hostname="esc.example", timeout=5)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(cm.exception))

    def test_ssl_context_and_tls_ca_together_are_refused(self):
        with self.assertRaises(ValueError):
            Client(ADDR, tls_ca=CA, ssl_context=ssl.create_default_context())


if __name__ == "__main__":
    unittest.main()
