"""Policy protocol and connection handling: listeners, pipelining, bad input, timeouts,
connection limits. Every test checks what a client (Postfix) or an operator (the log) sees."""

import os
import pwd
import re
import socket
import stat
import time
import unittest

from harness import (RUN_AS, SystemTestCase, Client, ConnectionClosed, build_request, new_instance, unique_word,
                     ipv6_loopback_available, wait_until)

# Answers here do not depend on timing: greylisting with a long delay gives DEFER for any
# new RCPT triplet and DUNNO for every other protocol state. The text names the recipient
# domain so pipelined replies can be told apart.
BASE = {
    "greylist.delay": "1h",
    "greylist.text": "Greylisted for %r, retry in %s seconds",
    "event_log.flush_interval": "200ms",
}


def deferred_for(domain):
    return "DEFER_IF_PERMIT 4.7.1 Greylisted for %s, retry in 3600 seconds" % domain


class ProtocolTest(SystemTestCase):

    def setUp(self):
        super().setUp()
        self.seq = 0

    def rcpt(self, client, domain=None, **kw):
        """A new RCPT triplet; returns (action, expected)."""
        domain = domain or "d%d-%s.example" % (self.seq, os.getpid())
        self.seq += 1
        sender = "s.%s@sender.example" % unique_word()
        action = client.request(sender=sender, recipient="user@" + domain, **kw)
        return action, deferred_for(domain)

    # -- listeners ----------------------------------------------------------------------
    def test_tcp_and_unix_socket_both_answer(self):
        d = self.policyd(BASE, listen=["inet:127.0.0.1:0", "unix:{dir}/policyd.sock"])
        self.assertTrue(stat.S_ISSOCK(os.stat(d.unix_path).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(d.unix_path).st_mode), 0o660)
        with d.client() as tcp, d.unix_client() as unix:
            a, want = self.rcpt(tcp, "tcp.example")
            self.assertEqual(a, want)
            a, want = self.rcpt(unix, "unix.example")
            self.assertEqual(a, want)
            self.assertEqual(tcp.request(protocol_state="DATA"), "DUNNO")
            self.assertEqual(unix.request(protocol_state="END-OF-MESSAGE"), "DUNNO")
        if RUN_AS:
            # Started as root: the socket was handed to server.user, which cannot remove it from
            # a directory it does not own; the next start replaces it (stale-socket test).
            self.assertEqual(pwd.getpwuid(os.stat(d.unix_path).st_uid).pw_name, RUN_AS)
        self.assertEqual(d.stop(), 0)
        if not RUN_AS:
            self.assertFalse(os.path.exists(d.unix_path), "unix socket left behind after exit")

    def test_comma_separated_listen_list(self):
        d = self.policyd(BASE, listen=["inet:127.0.0.1:0, unix:{dir}/comma.sock"])
        with Client.unix(os.path.join(d.dir, "comma.sock")) as u:
            self.assertEqual(u.request(protocol_state="DATA"), "DUNNO")

    def test_unix_socket_mode_and_stale_socket_file(self):
        # A socket file left behind by a crash is replaced.
        path = os.path.join(self.tmpdir, "stale-%s.sock" % unique_word(5))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
        self.assertTrue(os.path.exists(path))
        d = self.policyd(dict(BASE, **{"server.unix_socket_mode": "0666"}), listen=["unix:" + path])
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o666)
        with Client.unix(path) as c:
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")

    def test_ipv6_listener(self):
        if not ipv6_loopback_available():
            self.skipTest("::1 is not available")
        d = self.policyd(BASE, listen=["inet:[::1]:0"])
        self.assertEqual(d.host, "::1")
        with Client.tcp("::1", d.port) as c:
            a, want = self.rcpt(c, "v6.example", client_address="2001:db8::25")
            self.assertEqual(a, want)
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")

    # -- requests -----------------------------------------------------------------------
    def test_many_requests_on_one_connection(self):
        d = self.policyd(BASE)
        with d.client() as c:
            for i in range(25):
                if i % 2:
                    self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")
                else:
                    a, want = self.rcpt(c, "many%d.example" % i)
                    self.assertEqual(a, want)

    def test_pipelined_requests_answered_in_order(self):
        d = self.policyd(BASE)
        domains = ["pipe%d-%d.example" % (i, os.getpid()) for i in range(8)]
        payload = b""
        expected = []
        for i, dom in enumerate(domains):
            if i % 3 == 2:
                payload += build_request(protocol_state="DATA", recipient="x@" + dom)
                expected.append("DUNNO")
            else:
                payload += build_request(sender="pipe.%s@s.example" % unique_word(), recipient="user@" + dom)
                expected.append(deferred_for(dom))
        with d.client() as c:
            c.send_raw(payload)  # all requests in one send
            got = [c.read_reply() for _ in expected]
            self.assertEqual(got, expected)
            # The connection goes on normally afterwards.
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")

    def test_request_split_in_small_pieces(self):
        d = self.policyd(BASE)
        data = build_request(sender="split.%s@s.example" % unique_word(), recipient="user@split.example")
        with d.client() as c:
            for i in range(0, len(data), 7):
                c.send_raw(data[i:i + 7])
                time.sleep(0.002)
            self.assertEqual(c.read_reply(), deferred_for("split.example"))

    def test_crlf_line_endings_accepted(self):
        d = self.policyd(BASE)
        data = build_request(protocol_state="DATA").replace(b"\n", b"\r\n")
        with d.client() as c:
            c.send_raw(data)
            self.assertEqual(c.read_reply(), "DUNNO")

    def test_unknown_attributes_accepted(self):
        d = self.policyd(BASE)
        with d.client() as c:
            a, want = self.rcpt(c, "unknown-attrs.example", future_attribute="whatever",
                                x_vendor_extension="1", compatibility_level="3.7",
                                mail_version="3.7.11", empty_one="")
            self.assertEqual(a, want)
        self.assertEqual(d.count_log(r"protocol_error"), 0)

    def test_minimal_request_is_answered(self):
        d = self.policyd(BASE)
        with d.client() as c:
            c.send_raw(b"request=smtpd_access_policy\nprotocol_state=DATA\n\n")
            self.assertEqual(c.read_reply(), "DUNNO")

    # -- bad input ----------------------------------------------------------------------
    def _bad_input(self, payload, error_text, settings=None):
        """Sends payload on one connection while another, already connected client is
        mid-session; the bad one must be closed without a reply and logged; the good one
        must still get correct answers; the daemon must survive."""
        cfg = dict(BASE)
        cfg.update(settings or {})
        d = self.policyd(cfg)
        good = self.track(d.client())
        a, want = self.rcpt(good, "before.example")
        self.assertEqual(a, want)
        bad = self.track(d.client())
        bad.send_raw(payload, ignore_errors=True)
        got = bad.wait_closed(timeout=5)
        self.assertEqual(got, b"", "policyd replied to bad input")
        lines = d.wait_for_log(r"protocol_error .*error=\"%s\"" % re.escape(error_text))
        self.assertEqual(len(lines), 1, "expected one log line:\n%s" % "\n".join(lines))
        a, want = self.rcpt(good, "after.example")
        self.assertEqual(a, want)
        self.assertEqual(good.request(protocol_state="DATA"), "DUNNO")
        self.assertTrue(d.running())
        # A new client is served too.
        with d.client() as c:
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")
        self.assertEqual(d.stop(), 0)
        return d

    def test_line_without_equals(self):
        self._bad_input(b"request=smtpd_access_policy\nthis line has no equals sign\n\n",
                        "line without '='")

    def test_nul_byte(self):
        self._bad_input(b"request=smtpd_access_policy\nsender=a\x00b@example.net\n\n",
                        "NUL byte in request")

    def test_nul_byte_in_unfinished_request(self):
        self._bad_input(b"request=smtpd_access_policy\nhelo_name=\x00", "NUL byte in request")

    def test_line_longer_than_max_line_bytes(self):
        self._bad_input(b"request=smtpd_access_policy\nhelo_name=" + b"h" * 5000 + b"\n\n",
                        "line too long")

    def test_too_many_attributes(self):
        attrs = b"".join(b"attr%d=v\n" % i for i in range(101))
        self._bad_input(b"request=smtpd_access_policy\n" + attrs + b"\n", "too many attributes")

    def test_request_over_max_request_bytes(self):
        lines = b"".join(b"a%d=%s\n" % (i, b"x" * 1000) for i in range(40))  # 40 KB, < 100 attrs
        self._bad_input(b"request=smtpd_access_policy\n" + lines + b"\n", "request too large")

    def test_request_without_request_attribute(self):
        self._bad_input(b"protocol_state=RCPT\nsender=a@b.example\n\n",
                        "not an smtpd_access_policy request")

    def test_request_of_another_kind(self):
        self._bad_input(b"request=junk\nprotocol_state=RCPT\n\n", "not an smtpd_access_policy request")

    def test_empty_attribute_name(self):
        self._bad_input(b"request=smtpd_access_policy\n=value\n\n", "empty attribute name")

    def test_bad_request_after_good_ones_on_same_connection(self):
        d = self.policyd(BASE)
        c = self.track(d.client())
        self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")
        c.send_raw(build_request(protocol_state="DATA") + b"garbage\n\n")
        self.assertEqual(c.read_reply(), "DUNNO")  # the good one first, in order
        self.assertEqual(c.wait_closed(5), b"")
        d.wait_for_log(r"protocol_error .*requests=2")

    def test_one_megabyte_line_does_not_crash(self):
        d = self.policyd(BASE)
        good = self.track(d.client())
        bad = self.track(d.client(timeout=10))
        bad.send_raw(b"request=smtpd_access_policy\nhelo_name=" + b"A" * (1 << 20), ignore_errors=True)
        self.assertEqual(bad.wait_closed(10), b"")
        d.wait_for_log(r"protocol_error .*line too long")
        self.assertTrue(d.running())
        self.assertEqual(good.request(protocol_state="DATA"), "DUNNO")
        self.assertEqual(d.stop(), 0)

    def test_ten_thousand_attributes_do_not_crash(self):
        d = self.policyd(BASE)
        good = self.track(d.client())
        bad = self.track(d.client(timeout=10))
        attrs = b"".join(b"attribute_%d=value\n" % i for i in range(10000))
        bad.send_raw(b"request=smtpd_access_policy\n" + attrs + b"\n", ignore_errors=True)
        self.assertEqual(bad.wait_closed(10), b"")
        d.wait_for_log(r"protocol_error")
        self.assertTrue(d.running())
        self.assertEqual(good.request(protocol_state="DATA"), "DUNNO")
        self.assertEqual(d.stop(), 0)

    def test_raised_limits_accept_larger_requests(self):
        d = self.policyd(dict(BASE, **{"protocol.max_line_bytes": "20000",
                                       "protocol.max_request_bytes": "65536"}))
        with d.client() as c:
            self.assertEqual(c.request(protocol_state="DATA", helo_name="h" * 15000), "DUNNO")

    # -- timeouts and limits ------------------------------------------------------------
    def test_stalled_half_request_closed_after_request_timeout(self):
        d = self.policyd(dict(BASE, **{"server.request_timeout": "1s", "policy.request_budget": "500ms"}))
        good = self.track(d.client())
        self.assertEqual(good.request(protocol_state="DATA"), "DUNNO")
        stalled = self.track(d.client())
        half = build_request(protocol_state="DATA")[:60]
        t0 = time.monotonic()
        stalled.send_raw(half)
        self.assertEqual(stalled.wait_closed(6), b"")
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.8, "closed before request_timeout")
        self.assertLess(took, 4.0, "not closed soon after request_timeout")
        d.wait_for_log(r"client_stalled")
        # The other connection, idle all along (idle_timeout is long), still works.
        self.assertEqual(good.request(protocol_state="DATA"), "DUNNO")

    def test_request_arriving_slowly_within_request_timeout(self):
        d = self.policyd(dict(BASE, **{"server.request_timeout": "2s", "policy.request_budget": "500ms"}))
        with d.client() as c:
            data = build_request(protocol_state="DATA")
            chunks = [data[i:i + len(data) // 4 + 1] for i in range(0, len(data), len(data) // 4 + 1)]
            for ch in chunks:
                c.send_raw(ch)
                time.sleep(0.2)
            self.assertEqual(c.read_reply(), "DUNNO")

    def test_idle_connection_closed_after_idle_timeout(self):
        d = self.policyd(dict(BASE, **{"server.idle_timeout": "1s", "policy.request_budget": "500ms"}))
        silent = self.track(d.client())              # never sends anything
        used = self.track(d.client())
        self.assertEqual(used.request(protocol_state="DATA"), "DUNNO")
        busy = self.track(d.client())
        # A client that keeps sending requests more often than idle_timeout stays open.
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            self.assertEqual(busy.request(protocol_state="DATA"), "DUNNO")
            time.sleep(0.3)
        self.assertEqual(silent.wait_closed(3), b"")
        self.assertEqual(used.wait_closed(3), b"")
        self.assertEqual(busy.request(protocol_state="DATA"), "DUNNO")
        # New connections are accepted as usual.
        with d.client() as c:
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")
        self.assertEqual(d.count_log(r"protocol_error|client_stalled"), 0)

    def test_max_connections(self):
        d = self.policyd(dict(BASE, **{"server.max_connections": "3"}))
        clients = [self.track(d.client()) for _ in range(3)]
        for i, c in enumerate(clients):
            a, want = self.rcpt(c, "max%d.example" % i)
            self.assertEqual(a, want)
        fourth = self.track(d.client())  # the kernel accepts; policyd must close it at once
        fourth.send_raw(build_request(protocol_state="DATA"), ignore_errors=True)
        self.assertEqual(fourth.wait_closed(5), b"", "the 4th connection got a reply")
        d.wait_for_log(r"connection_refused .*reason=max_connections")
        for i, c in enumerate(clients):
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")
            a, want = self.rcpt(c, "max-after%d.example" % i)
            self.assertEqual(a, want)
        # Once one leaves, a new connection is served again.
        clients[0].close()

        def served():
            try:
                with d.client() as c:
                    return c.request(protocol_state="DATA") == "DUNNO"
            except (ConnectionClosed, OSError):
                return False
        wait_until(served, 5, interval=0.05, what="a connection slot to free up")
        for c in clients[1:]:
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")

    def test_client_disconnect_mid_request_is_harmless(self):
        d = self.policyd(BASE)
        for _ in range(5):
            c = Client.tcp(d.host, d.port)
            c.send_raw(build_request(protocol_state="DATA")[:40])
            c.close()
        with d.client() as c:
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")
        self.assertTrue(d.running())

    # -- shutdown -----------------------------------------------------------------------
    def test_sigterm_exits_zero_and_closes_clients(self):
        d = self.policyd(BASE)
        c = self.track(d.client())
        self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")
        self.assertEqual(d.stop(), 0)
        self.assertEqual(c.wait_closed(2), b"")
        line = d.wait_for_log(r"shutdown_complete")[0]
        self.assertRegex(line, r"requests=1 ")
        self.assertRegex(line, r"event_rows_lost=0")
        with self.assertRaises(OSError):
            Client.tcp(d.host, d.port, timeout=2).request(protocol_state="DATA")


if __name__ == "__main__":
    unittest.main()
