"""The event log: one row per request, the right fields, written in batches, flushed at
SIGTERM, robust against hostile envelope values, stored in day partitions."""

import datetime
import re
import time
import unittest

from harness import (SystemTestCase, build_request, new_instance, unique_word, query_rows, query_value,
                     sql_quote, wait_until)

COLUMNS = ["policyd", "postfix_instance", "queue_id", "protocol_state", "coalesce(host(client_address), '')",
           "client_name", "reverse_client_name", "helo_name", "sender", "recipient", "recipient_count", "size",
           "sasl_username", "sasl_method", "policy_context", "verdict", "action", "reason"]


class EventLogTest(SystemTestCase):

    def rows_for(self, prefix):
        return query_rows(self.dsn, "SELECT %s FROM event_log WHERE postfix_instance LIKE %s ORDER BY queue_id"
                          % (", ".join(COLUMNS), sql_quote(prefix + "%")))

    def count_for(self, prefix):
        return int(query_value(self.dsn, "SELECT count(*) FROM event_log WHERE postfix_instance LIKE %s"
                               % sql_quote(prefix + "%")))

    def wait_count(self, prefix, n, timeout=10.0):
        wait_until(lambda: self.count_for(prefix) >= n, timeout, interval=0.05,
                   what="%d event_log rows for %s (have %d)" % (n, prefix, self.count_for(prefix)))
        return self.count_for(prefix)

    def test_rows_have_the_request_fields(self):
        d = self.policyd({"greylist.delay": "1h", "event_log.flush_interval": "100ms",
                          "allowlist.recipient_files": self.write_file("rcpts", "postmaster@\n")},
                         name="evlog-mx")
        p = "ev1-" + unique_word(6) + "-"
        w = unique_word()
        sent = [
            dict(instance=p + "1", queue_id="Q1AAAA", client_address="192.0.2.44", client_name="mx.sender.example",
                 reverse_client_name="mx.sender.example", helo_name="mx.sender.example",
                 sender="news.%s@sender.example" % w, recipient="Bob.%s@Rcpt.Example" % w,
                 recipient_count="1", size="12345", policy_context="submission"),
            dict(instance=p + "2", queue_id="Q2BBBB", client_address="2001:db8::44", helo_name="[2001:db8::44]",
                 sender="me.%s@sender.example" % w, recipient="you.%s@rcpt.example" % w,
                 sasl_method="PLAIN", sasl_username="me@sender.example"),
            dict(instance=p + "3", queue_id="Q3CCCC", protocol_state="DATA", client_address="192.0.2.45",
                 sender="d.%s@sender.example" % w, recipient="e.%s@rcpt.example" % w, recipient_count="3"),
            dict(instance=p + "4", queue_id="Q4DDDD", client_address="192.0.2.46",
                 sender="f.%s@sender.example" % w, recipient="postmaster@rcpt.example"),
            dict(instance=p + "5", queue_id="Q5EEEE", protocol_state="END-OF-MESSAGE", client_address="192.0.2.45",
                 sender="d.%s@sender.example" % w, recipient="", size="999"),
        ]
        with d.client() as c:
            actions = [c.request(**a) for a in sent]
        self.assertRegex(actions[0], r"^DEFER_IF_PERMIT 4\.7\.1 ")
        self.assertEqual(actions[1:], ["DUNNO"] * 4)
        self.assertEqual(self.wait_count(p, len(sent)), len(sent))
        rows = self.rows_for(p)
        got = [dict(zip(["policyd", "postfix_instance", "queue_id", "protocol_state", "client_address",
                         "client_name", "reverse_client_name", "helo_name", "sender", "recipient",
                         "recipient_count", "size", "sasl_username", "sasl_method", "policy_context",
                         "verdict", "action", "reason"], r)) for r in rows]
        self.assertEqual(len(got), 5)
        r1, r2, r3, r4, r5 = got
        self.assertEqual(r1, {
            "policyd": "evlog-mx", "postfix_instance": p + "1", "queue_id": "Q1AAAA", "protocol_state": "RCPT",
            "client_address": "192.0.2.44", "client_name": "mx.sender.example",
            "reverse_client_name": "mx.sender.example", "helo_name": "mx.sender.example",
            "sender": "news.%s@sender.example" % w, "recipient": "Bob.%s@Rcpt.Example" % w,
            "recipient_count": "1", "size": "12345", "sasl_username": "", "sasl_method": "",
            "policy_context": "submission", "verdict": "defer_if_permit", "action": actions[0],
            "reason": "greylist_new"})
        self.assertEqual((r2["client_address"], r2["helo_name"], r2["sasl_username"], r2["sasl_method"],
                          r2["verdict"], r2["action"]),
                         ("2001:db8::44", "[2001:db8::44]", "me@sender.example", "PLAIN", "dunno", "DUNNO"))
        self.assertEqual((r3["protocol_state"], r3["recipient_count"], r3["action"]), ("DATA", "3", "DUNNO"))
        self.assertEqual((r4["verdict"], r4["action"], r4["reason"]), ("pass", "DUNNO", "allowlist"))
        self.assertEqual((r5["protocol_state"], r5["size"], r5["recipient"]), ("END-OF-MESSAGE", "999", ""))
        # Timestamps are now-ish and elapsed time is recorded.
        ok = query_value(self.dsn, "SELECT bool_and(ts BETWEEN now() - interval '1 minute' AND now() "
                                   "+ interval '5 seconds' AND elapsed_us >= 0) FROM event_log "
                                   "WHERE postfix_instance LIKE %s" % sql_quote(p + "%"))
        self.assertEqual(ok, "t")
        # Exactly one row per request: no duplicates after further flushes.
        time.sleep(0.4)
        self.assertEqual(self.count_for(p), len(sent))
        self.assertEqual(d.stop(), 0)
        self.assertRegex(d.wait_for_log(r"shutdown_complete")[0], r"requests=5 .*event_rows_lost=0")
        self.assertEqual(self.count_for(p), len(sent))

    def write_file(self, name, text):
        path = "%s/%s-%s" % (self.tmpdir, name, unique_word(5))
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_count_equals_requests_sent(self):
        d = self.policyd({"greylist.delay": "1h", "event_log.flush_interval": "100ms",
                          "event_log.flush_rows": "7"}, name="evcount")
        p = "ev2-" + unique_word(6) + "-"
        n = 60
        with d.client() as c1, d.client() as c2:
            payload = b"".join(build_request(instance=p + str(i), queue_id="Q%03d" % i,
                                             sender="s%s@x.example" % unique_word(), recipient="r@y.example")
                               for i in range(0, n, 2))
            c1.send_raw(payload)
            for i in range(1, n, 2):
                c2.request(instance=p + str(i), protocol_state="DATA")
            for _ in range(0, n, 2):
                c1.read_reply()
        self.assertEqual(self.wait_count(p, n), n)
        time.sleep(0.4)
        self.assertEqual(self.count_for(p), n)
        self.assertEqual(sorted(int(r[0][len(p):]) for r in query_rows(
            self.dsn, "SELECT postfix_instance FROM event_log WHERE postfix_instance LIKE %s"
            % sql_quote(p + "%"))), list(range(n)))

    def test_flush_rows_triggers_a_write_before_the_interval(self):
        d = self.policyd({"greylist.delay": "1h", "event_log.flush_interval": "10m",
                          "event_log.flush_rows": "5"}, name="evrows")
        p = "ev3-" + unique_word(6) + "-"
        with d.client() as c:
            for i in range(5):
                c.request(instance=p + str(i), protocol_state="DATA")
        self.assertEqual(self.wait_count(p, 5, timeout=5), 5)

    def test_rows_written_at_sigterm(self):
        # The longest flush interval there is (10m; 1h is rejected) and a large flush_rows:
        # nothing is written before SIGTERM, everything at SIGTERM.
        d = self.policyd({"greylist.delay": "1h", "event_log.flush_interval": "10m",
                          "event_log.flush_rows": "100000"}, name="evterm")
        p = "ev4-" + unique_word(6) + "-"
        n = 40
        with d.client() as c:
            for i in range(n):
                state = "RCPT" if i % 2 else "DATA"
                c.request(instance=p + str(i), protocol_state=state, sender="t%s@x.example" % unique_word())
        time.sleep(0.3)
        self.assertEqual(self.count_for(p), 0, "rows written before SIGTERM: flush_interval not honoured")
        self.assertEqual(d.stop(), 0)
        self.assertEqual(self.count_for(p), n)
        line = d.wait_for_log(r"shutdown_complete")[0]
        self.assertRegex(line, r"requests=%d event_rows_written=%d event_rows_lost=0( |$)" % (n, n))

    def test_sigterm_with_open_connections_still_flushes(self):
        d = self.policyd({"greylist.delay": "1h", "event_log.flush_interval": "10m",
                          "event_log.flush_rows": "100000"}, name="evterm2")
        p = "ev5-" + unique_word(6) + "-"
        clients = [self.track(d.client()) for _ in range(4)]
        for i, c in enumerate(clients):
            c.request(instance=p + str(i), protocol_state="DATA")
        # Half a request on one of them: it is not a request and must not count.
        clients[0].send_raw(build_request(protocol_state="DATA")[:50])
        self.assertEqual(d.stop(), 0)
        self.assertEqual(self.count_for(p), 4)
        self.assertRegex(d.wait_for_log(r"shutdown_complete")[0], r"requests=4 .*event_rows_lost=0")
        for c in clients:
            self.assertEqual(c.wait_closed(2), b"")

    def test_sigterm_during_traffic_every_answer_is_logged(self):
        # SIGTERM while requests are pipelined: every request policyd counted as answered has
        # its row written; nothing is lost. (The client may see fewer replies than were sent:
        # closing a socket with unread pipelined input resets it, dropping data in flight.)
        d = self.policyd({"greylist.delay": "1h", "event_log.flush_interval": "50ms",
                          "event_log.flush_rows": "10"}, name="evbusy")
        p = "ev10-" + unique_word(6) + "-"
        clients = [self.track(d.client()) for _ in range(3)]
        n = 300
        for k, c in enumerate(clients):
            c.send_raw(b"".join(build_request(instance="%s%d-%d" % (p, k, i),
                                              sender="b%s@x.example" % unique_word(6), recipient="r@y.example")
                                for i in range(n)))
        time.sleep(0.05)
        self.assertEqual(d.stop(), 0)
        answered = 0
        for c in clients:
            while True:
                try:
                    action = c.read_reply()
                except Exception:
                    break
                self.assertRegex(action, r"^DEFER_IF_PERMIT 4\.7\.1 ")
                answered += 1
        line = d.wait_for_log(r"shutdown_complete")[0]
        m = re.search(r"requests=(\d+) event_rows_written=(\d+) event_rows_lost=(\d+)", line)
        self.assertIsNotNone(m, line)
        requests, written, lost = map(int, m.groups())
        self.assertEqual(lost, 0)
        self.assertEqual(written, requests)
        self.assertEqual(self.count_for(p), requests)
        self.assertLessEqual(answered, requests)
        self.assertLessEqual(requests, 3 * n)

    # -- hostile values -----------------------------------------------------------------
    HOSTILE = [
        ("helo_latin1", dict(helo_name=b"caf\xe9.example")),
        ("helo_ff_fe", dict(helo_name=b"\xff\xfe\xfd")),
        ("helo_truncated_utf8", dict(helo_name=b"abc\xe2\x82")),
        ("helo_overlong", dict(helo_name=b"\xc0\xaf\xe0\x80\xaf")),
        ("helo_surrogate", dict(helo_name=b"x\xed\xa0\x80y")),
        ("helo_above_10ffff", dict(helo_name=b"x\xf4\x90\x80\x80y")),
        ("helo_f5_lead", dict(helo_name=b"x\xf5\x80\x80\x80y")),
        ("sender_bad_utf8", dict(sender=b"\xff@\xfe.example", recipient=b"r\xc3@x.example")),
        ("copy_specials", dict(helo_name="back\\slash\\N", sender="\\N", client_name="tab\there",
                               policy_context="\\.")),
        ("client_not_ip", dict(client_address="not-an-ip")),
        ("client_empty", dict(client_address="")),
        ("client_bad_octet", dict(client_address="999.1.1.1")),
        ("client_scoped_v6", dict(client_address="fe80::1%1")),
        ("client_v4_mapped", dict(client_address="::ffff:192.0.2.9")),
        ("huge_numbers", dict(size="99999999999999999999999", recipient_count="-5")),
        ("long_values", dict(helo_name="h" * 3000, sender="s" * 3000 + "@x.example")),
    ]

    # Regression test. The bug it caught, now fixed: the helo_overlong, helo_surrogate, helo_above_10ffff,
    # helo_f5_lead and client_scoped_v6 cases fail. to_valid_utf8() (policyd/store.cpp) lets
    # through byte sequences PostgreSQL rejects: 3/4-byte overlongs (E0 80..9F, F0 80..8F),
    # UTF-16 surrogates (ED A0..BF), code points above U+10FFFF (F4 90.., lead bytes F5..F7).
    # And write_event_rows() sends client_address to the inet column whenever parse_ip()
    # accepts it, which includes an IPv6 scope id ("fe80::1%1") that inet refuses. COPY then
    # fails ("invalid byte sequence for encoding UTF8" / "invalid input syntax for type
    # inet"), the whole batch goes back to the buffer and is retried forever: every row of
    # it is never written, and at SIGTERM they are counted in event_rows_lost.
    def test_hostile_values_do_not_lose_the_batch(self):
        for label, attrs in self.HOSTILE:
            with self.subTest(case=label):
                self._hostile(label, attrs)

    def _hostile(self, label, attrs):
        d = self.policyd({"greylist.delay": "1h", "event_log.flush_interval": "200ms",
                          "server.shutdown_grace": "1s"}, name="evhostile")
        p = "ev6-%s-%s-" % (label, unique_word(5))
        payload = (build_request(instance=p + "a", protocol_state="DATA", queue_id="QA")
                   + build_request(instance=p + "b", **attrs)
                   + build_request(instance=p + "c", protocol_state="DATA", queue_id="QC"))
        with d.client() as c:
            c.send_raw(payload)  # one send: the three rows land in one batch
            actions = [c.read_reply() for _ in range(3)]
        self.assertEqual(actions[0], "DUNNO")
        self.assertEqual(actions[2], "DUNNO")
        try:
            self.wait_count(p, 3, timeout=3)
        finally:
            rc = d.stop()
        self.assertEqual(rc, 0)
        self.assertEqual(self.count_for(p), 3)
        self.assertRegex(d.wait_for_log(r"shutdown_complete")[0], r"event_rows_lost=0( |$)")
        valid = query_value(self.dsn, "SELECT count(*) FROM event_log WHERE postfix_instance = %s"
                            % sql_quote(p + "b"))
        self.assertEqual(valid, "1")
        if label in ("client_not_ip", "client_empty", "client_bad_octet"):
            self.assertEqual(query_value(self.dsn, "SELECT client_address IS NULL FROM event_log "
                                                   "WHERE postfix_instance = %s" % sql_quote(p + "b")), "t")
        if label == "copy_specials":
            got = query_rows(self.dsn, "SELECT helo_name, sender, client_name, policy_context FROM event_log "
                                       "WHERE postfix_instance = %s" % sql_quote(p + "b"))
            self.assertEqual(got, [["back\\slash\\N", "\\N", "tab\there", "\\."]])

    # Regression test. The bug it caught (same cause), now fixed: the rejected row stays at the front of the buffer and every
    # later batch includes it, so after one such request NO further event rows are written
    # until the daemon stops (and then they are all counted as lost).
    def test_later_rows_written_after_a_hostile_one(self):
        d = self.policyd({"greylist.delay": "1h", "event_log.flush_interval": "100ms",
                          "server.shutdown_grace": "1s"}, name="evlater")
        p = "ev9-" + unique_word(6) + "-"
        with d.client() as c:
            c.request(instance=p + "bad", protocol_state="DATA", helo_name=b"\xed\xa0\x80")
            time.sleep(0.5)  # several flush intervals
            for i in range(3):
                self.assertEqual(c.request(instance=p + "ok%d" % i, protocol_state="DATA"), "DUNNO")
        wait_until(lambda: int(query_value(self.dsn, "SELECT count(*) FROM event_log WHERE postfix_instance "
                                                     "LIKE %s" % sql_quote(p + "ok%"))) == 3,
                   5, interval=0.05, what="the later, well-formed rows")

    # -- partitions ---------------------------------------------------------------------
    def test_day_partitions(self):
        d = self.policyd({"greylist.delay": "1h", "event_log.flush_interval": "100ms"}, name="evpart")
        parts = set(r[0] for r in query_rows(
            self.dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                      "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'event_log'"))
        today = datetime.datetime.now(datetime.timezone.utc).date()
        self.assertIn("event_log_default", parts)
        for k in range(3):
            day = today + datetime.timedelta(days=k)
            self.assertIn("event_log_" + day.strftime("%Y%m%d"), parts)
        for name in parts - {"event_log_default"}:
            self.assertRegex(name, r"^event_log_\d{8}$")
        p = "ev7-" + unique_word(6) + "-"
        with d.client() as c:
            c.request(instance=p + "1", protocol_state="DATA")
        self.wait_count(p, 1)
        where = query_value(self.dsn, "SELECT tableoid::regclass FROM event_log WHERE postfix_instance = %s"
                            % sql_quote(p + "1"))
        # A row written a few ms before midnight UTC may land in the next day's partition.
        self.assertRegex(where, r"^event_log_\d{8}$")
        self.assertIn(where, parts)
        self.assertEqual(query_value(self.dsn, "SELECT count(*) FROM ONLY event_log_default"), "0")

    def test_event_log_disabled(self):
        d = self.policyd({"greylist.delay": "1h", "event_log.enable": "no"}, name="evoff")
        p = "ev8-" + unique_word(6) + "-"
        with d.client() as c:
            self.assertEqual(c.request(instance=p + "1", protocol_state="DATA"), "DUNNO")
        self.assertEqual(d.stop(), 0)
        self.assertEqual(self.count_for(p), 0)


if __name__ == "__main__":
    unittest.main()
