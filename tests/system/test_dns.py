"""DNS reputation against a real DNS set-up (dnsenv.py: NSD + a logging dnsmasq on
loopback): weighted DNSBL/DNSWL lists and their reject texts, refusal codes, reverse DNS
(forward-confirmed PTR, dynamic names), selective greylisting, the cache and shared
lookups, dead and broken lists within the DNS budget, the circuit breaker, requests that
are never checked, and list syntax errors at start-up."""

import os
import threading
import time
import unittest

from dnsenv import DnsEnv
from harness import (SystemTestCase, EX_CONFIG, build_request, free_port, new_instance, query_rows,
                     run_policyd, sql_quote, unique_word, wait_until)

LISTS = "dnsbl.test=127.0.0.[2..11]*3, bl2.test*1, dnswl.test=127.0.[0..255].[1..3]*-5"
TXT_2 = "Listed by dnsbl.test, see https://dnsbl.test/q?192.0.2.2"
GREYLISTED = r"^DEFER_IF_PERMIT 4\.7\.1 Greylisted, retry in \d+ seconds$"

# A client whose reverse DNS Postfix verified: the rdns part scores 0, so only the lists count.
# (Not "mail.client.example": "client" is one of the default dynamic-name words, +1.)
VERIFIED = dict(client_name="mail.sender.example", reverse_client_name="mail.sender.example")
# What Postfix sends for a client without PTR: rdns=no_ptr (+2), no lookup.
NO_PTR = dict(client_name="unknown", reverse_client_name="unknown")
# Neither attribute sent (not Postfix): policyd looks the PTR up itself.
OMITTED = dict(client_name=None, reverse_client_name=None)


def blocked(client, shown="dnsbl.test", txt=None):
    text = "554 5.7.1 Service unavailable; client [%s] blocked using %s" % (client, shown)
    return text + ("; " + txt if txt else "")


def rcpt():
    return "%s@rcpt.example" % unique_word()


class DnsTestCase(SystemTestCase):
    """One DnsEnv per class; daemons ask it (dns.servers) and nothing else."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env = DnsEnv()

    @classmethod
    def tearDownClass(cls):
        env, cls.env = getattr(cls, "env", None), None
        if env is not None:
            env.stop()
        super().tearDownClass()

    def dns_policyd(self, *opts, name="dns", settings=None):
        """A daemon using the test resolver, with extra -o options (KEY=VALUE)."""
        base = {"greylist.delay": "1h", "event_log.flush_interval": "100ms"}
        base.update(settings or {})
        return self.policyd(base, name=name, extra_opts=["dns.servers=" + self.env.server] + list(opts))

    @classmethod
    def class_dns_policyd(cls, *opts, name="dns"):
        settings = {"greylist.delay": "1h", "event_log.flush_interval": "100ms"}
        return cls.class_policyd(settings, name=name, extra_opts=["dns.servers=" + cls.env.server] + list(opts))

    def ask(self, d, client, **attrs):
        """One RCPT request from client on a new connection; returns the action."""
        attrs.setdefault("sender", "s.%s@sender.example" % unique_word())
        attrs.setdefault("recipient", rcpt())
        with d.client() as c:
            return c.request(client_address=client, **attrs)

    def timed_ask(self, d, client, **attrs):
        with d.client() as c:
            t0 = time.monotonic()
            action = c.request(client_address=client, sender="t.%s@sender.example" % unique_word(),
                               recipient=rcpt(), **attrs)
            return action, time.monotonic() - t0

    # Regression test. The bug it caught, now fixed: event_log.detail is always ''. The decision's detail is
    # computed (the `decision` log line has detail="rdns=no_ptr(+2); wait=3600s") and
    # server.cpp copies it into event_row::detail, but write_event_rows() in
    # policyd/store.cpp leaves "detail" out of the COPY column list and the tuple, so the
    # column added by sql/002_event_log_detail.sql keeps its default. Every assertion on
    # `detail` below fails until it is written; scores and reasons are checked first.
    def event(self, instance, timeout=10.0):
        """(reasons, detail, score) of the event-log row of one request, once flushed."""
        sql = ("SELECT reason, detail, score FROM event_log WHERE postfix_instance = %s"
               % sql_quote(instance))
        rows = wait_until(lambda: query_rows(self.dsn, sql), timeout, interval=0.05,
                          what="event-log row of %s" % instance)
        self.assertEqual(len(rows), 1, rows)
        reason, detail, score = rows[0]
        return reason.split(","), detail, float(score)

    def ask_at_once(self, d, client, n):
        """n requests from one client, each on its own connection, released together;
        returns the n replies (asserting none of them failed)."""
        clients = [self.track(d.client()) for _ in range(n)]
        payloads = [build_request(client_address=client, sender="c%s@s.example" % unique_word(),
                                  recipient=rcpt(), **VERIFIED) for _ in range(n)]
        barrier = threading.Barrier(n)
        actions, errors = [None] * n, []

        def run(i):
            try:
                barrier.wait(5)
                clients[i].send_raw(payloads[i])
                actions[i] = clients[i].read_reply()
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        self.assertEqual(errors, [])
        return actions

    def dns_detail(self, detail):
        """The DNS check's part of the decision detail (checks' parts are joined by '; ')."""
        return detail.split("; ")[0]

    def settle_queries(self, count_fn, settle=0.3, limit=5.0):
        """dnsmasq writes its log asynchronously: waits until count_fn() has not changed
        for `settle` seconds (bounded), returns the count."""
        end = time.monotonic() + limit
        last = count_fn()
        stable_since = time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.05)
            now = count_fn()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= settle:
                break
        return last


class DnsblListTest(DnsTestCase):
    """Lists, weights, filters and reject texts (one shared daemon for the common set-up)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = cls.class_dns_policyd("dnsbl.lists=" + LISTS, name="dnsbl")

    def test_listed_client_is_rejected_naming_the_list_with_its_txt(self):
        self.assertEqual(self.ask(self.d, "192.0.2.2", **VERIFIED), blocked("192.0.2.2", txt=TXT_2))

    def test_listed_ipv6_client_is_rejected(self):
        self.assertEqual(self.ask(self.d, "2001:db8::2", **VERIFIED), blocked("2001:db8::2"))

    def test_ipv4_mapped_client_is_queried_as_ipv4(self):
        self.assertEqual(self.ask(self.d, "::ffff:192.0.2.2", **VERIFIED), blocked("192.0.2.2", txt=TXT_2))

    def test_unlisted_client_is_greylisted_not_rejected(self):
        self.assertRegex(self.ask(self.d, "192.0.2.10", **VERIFIED), GREYLISTED)

    def test_answer_inside_the_filter_range_is_a_listing(self):
        # 192.0.2.3 answers 127.0.0.3, inside 127.0.0.[2..11]; it has no TXT.
        self.assertEqual(self.ask(self.d, "192.0.2.3", **VERIFIED), blocked("192.0.2.3"))

    def test_allow_listed_client_is_trusted_and_not_greylisted(self):
        # Trusted even without reverse DNS: -5 + 2 is still below the trust score.
        for attrs in (VERIFIED, NO_PTR):
            with self.subTest(**attrs):
                inst = new_instance()
                self.assertEqual(self.ask(self.d, "192.0.2.5", instance=inst, **attrs), "DUNNO")
                reasons, detail, score = self.event(inst)
                self.assertIn("dns_trusted", reasons)
                self.assertNotIn("greylist_new", reasons)
                self.assertLessEqual(score, -1)
                self.assertIn("dnswl.test=127.0.10.2(-5)", detail)

    def test_decision_detail_lists_every_hit_with_its_weight(self):
        inst = new_instance()
        self.assertEqual(self.ask(self.d, "192.0.2.2", instance=inst, **NO_PTR),
                         blocked("192.0.2.2", txt=TXT_2))
        reasons, detail, score = self.event(inst)
        self.assertEqual(score, 6)
        self.assertIn("dnsbl", reasons)
        self.assertEqual(self.dns_detail(detail), "dnsbl.test=127.0.0.2(+3) bl2.test=127.0.0.4(+1) rdns=no_ptr(+2)")

    def test_refusal_code_is_not_a_listing_and_is_logged_once(self):
        # 192.0.2.9 answers 127.255.255.254 ("public resolver"): never a listing.
        for _ in range(3):
            self.assertRegex(self.ask(self.d, "192.0.2.9", **VERIFIED), GREYLISTED)
        lines = self.d.wait_for_log(r"dnsbl_refused")
        time.sleep(0.2)
        lines = self.d.log_lines(r"dnsbl_refused")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("list=dnsbl.test", lines[0])
        self.assertIn("code=127.255.255.254", lines[0])


class DnsblConfigVariantsTest(DnsTestCase):
    """Settings that change the verdict or the reply: one daemon per test."""

    def test_exact_filter_does_not_match_another_answer(self):
        d = self.dns_policyd("dnsbl.lists=dnsbl.test=127.0.0.2*3")
        self.assertRegex(self.ask(d, "192.0.2.3", **VERIFIED), GREYLISTED)  # answers 127.0.0.3
        self.assertEqual(self.ask(d, "192.0.2.2", **VERIFIED), blocked("192.0.2.2", txt=TXT_2))

    def test_weights_of_all_lists_are_summed(self):
        d = self.dns_policyd("dnsbl.lists=dnsbl.test*2, bl2.test*1", "dnsbl.reject_score=3")
        self.assertEqual(self.ask(d, "192.0.2.2", **VERIFIED), blocked("192.0.2.2", txt=TXT_2))
        # 2 alone is below the reject score.
        self.assertRegex(self.ask(d, "192.0.2.3", **VERIFIED), GREYLISTED)

    def test_one_light_list_alone_does_not_reject(self):
        d = self.dns_policyd("dnsbl.lists=bl2.test*1", "dnsbl.reject_score=3")
        inst = new_instance()
        self.assertRegex(self.ask(d, "192.0.2.2", instance=inst, **VERIFIED), GREYLISTED)
        reasons, detail, score = self.event(inst)
        self.assertEqual(score, 1)
        self.assertIn("bl2.test=127.0.0.4(+1)", detail)

    def test_lists_may_be_repeated_options(self):
        d = self.dns_policyd("dnsbl.lists=dnsbl.test=127.0.0.2*1", "dnsbl.lists=bl2.test*2")
        self.assertEqual(self.ask(d, "192.0.2.2", **VERIFIED), blocked("192.0.2.2", shown="bl2.test"))

    def test_reject_score_is_configurable(self):
        d = self.dns_policyd("dnsbl.lists=bl2.test*1", "dnsbl.reject_score=1", "dnsbl.trust_score=-1")
        self.assertEqual(self.ask(d, "192.0.2.2", **VERIFIED), blocked("192.0.2.2", shown="bl2.test"))

    def test_reply_names_replace_the_zone_in_the_reply(self):
        d = self.dns_policyd("dnsbl.lists=dnsbl.test*3", "dnsbl.reply_names=dnsbl.test=zen.example")
        self.assertEqual(self.ask(d, "192.0.2.2", **VERIFIED), blocked("192.0.2.2", shown="zen.example", txt=TXT_2))

    def test_hide_names_shows_neither_list_nor_txt(self):
        d = self.dns_policyd("dnsbl.lists=dnsbl.test*3", "dnsbl.hide_names=yes")
        self.assertEqual(self.ask(d, "192.0.2.2", **VERIFIED), blocked("192.0.2.2", shown="a DNS blocklist"))


class ReverseDnsTest(DnsTestCase):
    """Forward-confirmed reverse DNS, looked up only when Postfix did not send it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = cls.class_dns_policyd("dnsbl.lists=dnsbl.test*3", name="rdns")

    def test_reverse_dns_is_looked_up_when_postfix_did_not_send_it(self):
        cases = [
            ("192.0.2.10", "rdns=confirmed", 0),
            ("192.0.2.11", "rdns=unconfirmed(+1)", 1),
            ("192.0.2.12", "rdns=no_ptr(+2)", 2),
            ("192.0.2.13", "rdns=confirmed,dynamic(+1)", 1),
            ("2001:db8::10", "rdns=confirmed", 0),
        ]
        for client, want_detail, want_score in cases:
            with self.subTest(client=client):
                inst = new_instance()
                self.assertRegex(self.ask(self.d, client, instance=inst, **OMITTED), GREYLISTED)
                _, detail, score = self.event(inst)
                self.assertEqual(score, want_score)
                self.assertEqual(self.dns_detail(detail), want_detail)
        self.assertGreater(self.env.queries("12.2.0.192.in-addr.arpa", "PTR"), 0)

    def test_postfix_attributes_are_used_without_a_ptr_lookup(self):
        # 192.0.2.14-16 have no PTR; what Postfix sent decides, nothing is asked.
        cases = [
            ("192.0.2.14", dict(client_name="mail.x.example", reverse_client_name="mail.x.example"),
             "rdns=confirmed", 0),
            ("192.0.2.15", NO_PTR, "rdns=no_ptr(+2)", 2),
            ("192.0.2.16", dict(client_name="unknown", reverse_client_name="fake.x.example"),
             "rdns=unconfirmed(+1)", 1),
        ]
        for client, attrs, want_detail, want_score in cases:
            with self.subTest(client=client):
                inst = new_instance()
                self.assertRegex(self.ask(self.d, client, instance=inst, **attrs), GREYLISTED)
                _, detail, score = self.event(inst)
                self.assertEqual(score, want_score)
                self.assertEqual(self.dns_detail(detail), want_detail)
        # The list was asked (so the resolver works and logs), the PTRs were not.
        self.assertEqual(self.settle_queries(lambda: self.env.queries("14.2.0.192.dnsbl.test")), 1)
        for client in ("14", "15", "16"):
            self.assertEqual(self.env.queries("%s.2.0.192.in-addr.arpa" % client), 0, client)

    def test_no_ptr_alone_can_reject_with_its_score(self):
        d = self.dns_policyd("rdns.no_ptr_score=3", name="noptr")
        action = self.ask(d, "192.0.2.12", **OMITTED)
        self.assertRegex(action, r"^554 5\.7\.1 ")
        self.assertIn("poor reputation", action)
        self.assertIn("[192.0.2.12]", action)
        # A confirmed client is not affected.
        self.assertRegex(self.ask(d, "192.0.2.10", **OMITTED), GREYLISTED)

    def test_selective_greylisting_skips_clean_clients_only(self):
        d = self.dns_policyd("dnsbl.lists=dnsbl.test*3", "dnsbl.selective_greylist=yes", name="selective")
        inst = new_instance()
        self.assertEqual(self.ask(d, "192.0.2.10", instance=inst, **OMITTED), "DUNNO")
        reasons, _, score = self.event(inst)
        self.assertNotIn("greylist_new", reasons)
        self.assertEqual(score, 0)
        self.assertEqual(self.ask(d, "192.0.2.10", **VERIFIED), "DUNNO")
        # No PTR scores 2 >= dnsbl.greylist_score 1: greylisted.
        self.assertRegex(self.ask(d, "192.0.2.12", **OMITTED), GREYLISTED)
        self.assertRegex(self.ask(d, "192.0.2.17", **NO_PTR), GREYLISTED)

    def test_rdns_can_be_disabled(self):
        d = self.dns_policyd("rdns.enable=no", "rdns.no_ptr_score=3", name="nordns")
        inst = new_instance()
        self.assertRegex(self.ask(d, "192.0.2.18", instance=inst, **OMITTED), GREYLISTED)
        _, detail, _ = self.event(inst)
        self.assertNotIn("rdns=", detail)
        self.assertEqual(self.env.queries("18.2.0.192.in-addr.arpa"), 0)


class DnsCacheTest(DnsTestCase):
    """Answers are cached; concurrent requests share one lookup; some requests are never checked."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = cls.class_dns_policyd("dnsbl.lists=dnsbl.test*3", name="cache")

    def test_second_request_is_answered_from_the_cache(self):
        name = "20.2.0.192.dnsbl.test"
        self.assertEqual(self.ask(self.d, "192.0.2.20", **VERIFIED), blocked("192.0.2.20"))
        first = self.settle_queries(lambda: self.env.queries(name))
        # The A query and the TXT query for the reject text.
        self.assertEqual(self.env.queries(name, "A"), 1)
        self.assertEqual(self.env.queries(name, "TXT"), 1)
        self.assertEqual(first, 2)
        self.assertEqual(self.ask(self.d, "192.0.2.20", **VERIFIED), blocked("192.0.2.20"))
        self.assertEqual(self.settle_queries(lambda: self.env.queries(name)), first)

    def test_cache_size_zero_disables_the_cache(self):
        d = self.dns_policyd("dnsbl.lists=dnsbl.test*3", "dns.cache_size=0", name="nocache")
        name = "24.2.0.192.dnsbl.test"
        for i in range(2):
            self.assertEqual(self.ask(d, "192.0.2.24", **VERIFIED), blocked("192.0.2.24"))
            self.assertEqual(self.settle_queries(lambda: self.env.queries(name, "A")), i + 1)

    def test_concurrent_requests_for_one_client_share_one_lookup(self):
        client, name, n = "192.0.2.21", "21.2.0.192.dnsbl.test", 8
        self.assertEqual(self.env.queries(name), 0)
        actions = self.ask_at_once(self.d, client, n)
        self.assertEqual(actions, [blocked(client)] * n)
        self.settle_queries(lambda: self.env.queries(name))
        self.assertEqual(self.env.queries(name, "A"), 1)
        self.assertEqual(self.env.queries(name, "TXT"), 1)

    def test_authenticated_clients_are_never_checked(self):
        inst = new_instance()
        action = self.ask(self.d, "192.0.2.22", instance=inst, sasl_username="alice", sasl_method="PLAIN",
                          **OMITTED)
        self.assertEqual(action, "DUNNO")
        _, detail, score = self.event(inst)
        self.assertEqual(score, 0)
        self.assertEqual(self.settle_queries(lambda: self.env.queries("22.2.0.192.dnsbl.test")), 0)
        self.assertEqual(self.env.queries("22.2.0.192.in-addr.arpa"), 0)
        # The same client unauthenticated is listed: the skip was the authentication.
        self.assertEqual(self.ask(self.d, "192.0.2.22", **VERIFIED), blocked("192.0.2.22"))

    def test_end_of_message_and_data_are_never_checked(self):
        for state in ("END-OF-MESSAGE", "DATA"):
            with self.subTest(state=state):
                self.assertEqual(self.ask(self.d, "192.0.2.23", protocol_state=state, **OMITTED), "DUNNO")
        self.assertEqual(self.settle_queries(lambda: self.env.queries("23.2.0.192.dnsbl.test")), 0)
        self.assertEqual(self.env.queries("23.2.0.192.in-addr.arpa"), 0)
        self.assertEqual(self.ask(self.d, "192.0.2.23", **VERIFIED), blocked("192.0.2.23"))


class DnsFailureTest(DnsTestCase):
    """Lists that never answer or fail: the DNS budget, and the circuit breaker."""

    FAST = ("dns.timeout=300ms", "dns.budget=700ms")

    def test_dead_list_does_not_delay_past_the_budget(self):
        d = self.dns_policyd("dnsbl.lists=dead.test*2, dnsbl.test*3", *self.FAST, name="dead")
        inst = new_instance()
        with d.client() as c:
            t0 = time.monotonic()
            action = c.request(client_address="192.0.2.2", instance=inst, sender="d@s.example",
                               recipient=rcpt(), **VERIFIED)
            took = time.monotonic() - t0
        self.assertEqual(action, blocked("192.0.2.2", txt=TXT_2))
        self.assertLess(took, 1.5)
        _, detail, _ = self.event(inst)
        self.assertIn("dead.test=timeout", detail)
        # An unlisted client is decided within the budget too.
        action, took = self.timed_ask(d, "192.0.2.10", **VERIFIED)
        self.assertRegex(action, GREYLISTED)
        self.assertLess(took, 1.5)

    def test_broken_list_counts_as_not_listed(self):
        d = self.dns_policyd("dnsbl.lists=broken.test*3", *self.FAST, name="broken")
        inst = new_instance()
        action, took = self.timed_ask(d, "192.0.2.2", instance=inst, **VERIFIED)
        self.assertRegex(action, GREYLISTED)
        self.assertLess(took, 1.5)
        _, detail, score = self.event(inst)
        self.assertEqual(score, 0)
        self.assertIn("broken.test=servfail", detail)

    def test_circuit_breaker_skips_a_dead_list(self):
        d = self.dns_policyd("dnsbl.lists=dead.test*2, dnsbl.test*3", "dns.breaker_failures=2", *self.FAST,
                             name="breaker")
        for client in ("192.0.2.40", "192.0.2.41"):
            action, took = self.timed_ask(d, client, **VERIFIED)
            self.assertRegex(action, GREYLISTED)
            self.assertGreater(took, 0.5, "the dead list was not waited for")
        lines = d.wait_for_log(r"dnsbl_list_disabled")
        self.assertIn("list=dead.test", lines[0])
        # Let c-ares's last retries for the dead list reach dnsmasq, then count.
        before = self.settle_queries(lambda: self.env.queries_under("dead.test"), settle=1.0)
        self.assertGreater(before, 0)
        for client in ("192.0.2.42", "192.0.2.43"):
            action, took = self.timed_ask(d, client, **VERIFIED)
            self.assertRegex(action, GREYLISTED)
            self.assertLess(took, 0.1)
        action, took = self.timed_ask(d, "192.0.2.2", **VERIFIED)
        self.assertEqual(action, blocked("192.0.2.2", txt=TXT_2))
        self.assertLess(took, 0.1)
        self.assertEqual(self.settle_queries(lambda: self.env.queries_under("dead.test")), before)
        self.assertEqual(d.count_log(r"dnsbl_list_disabled"), 1)


    def test_one_shared_failed_lookup_counts_once_for_the_breaker(self):
        # Five requests for one client join one lookup of the dead list: one failure, not five.
        d = self.dns_policyd("dnsbl.lists=dead.test*2", "dns.breaker_failures=3", *self.FAST, name="shared")
        for a in self.ask_at_once(d, "192.0.2.44", 5):
            self.assertRegex(a, GREYLISTED)
        self.assertEqual(d.count_log(r"dnsbl_list_disabled"), 0)

    def test_a_failing_list_never_makes_a_client_look_clean(self):
        # Selective greylisting skips clean clients; a list that did not answer proves nothing.
        d = self.dns_policyd("dnsbl.lists=dead.test*2", "dnsbl.selective_greylist=yes", *self.FAST,
                             name="selective-dead")
        inst = new_instance()
        action = self.ask(d, "192.0.2.45", instance=inst, **VERIFIED)
        self.assertRegex(action, GREYLISTED)
        reason, detail, _ = self.event(inst)
        self.assertIn("degraded:dns", reason)
        self.assertIn("dead.test=timeout", detail)


class DnsSelfTestTest(DnsTestCase):
    """RFC 5782 section 5: a list that answers for 127.0.0.1 lists everyone; it is disarmed."""

    def test_a_list_that_lists_everything_is_disarmed(self):
        d = self.dns_policyd("dnsbl.lists=wildcard.test*3, dnsbl.test*3", name="selftest")
        lines = d.wait_for_log(r"dnsbl_self_test_failed")
        self.assertIn("list=wildcard.test", lines[0])
        self.assertIn("action=disarmed", lines[0])
        self.assertEqual(d.count_log(r"dnsbl_self_test_failed.*list=dnsbl\.test"), 0)
        inst = new_instance()
        action = self.ask(d, "192.0.2.10", instance=inst, **VERIFIED)
        self.assertRegex(action, GREYLISTED)  # the wildcard would have rejected it
        _, detail, _ = self.event(inst)
        self.assertIn("wildcard.test=disarmed", detail)
        # The list that passed its self-test still works.
        self.assertEqual(self.ask(d, "192.0.2.2", **VERIFIED), blocked("192.0.2.2", txt=TXT_2))


class DnsConfigTest(SystemTestCase):
    """List and server syntax errors stop policyd at start (EX_CONFIG), naming the key and entry."""

    needs_database = False

    def check(self, *opts):
        path = os.path.join(self.tmpdir, "policyd-%s.conf" % unique_word(6))
        with open(path, "w") as f:
            f.write("listen = inet:127.0.0.1:%d\ndatabase = host=/nonexistent/socket dbname=lupine\n" % free_port())
        args = ["-c", path, "--check-config"]
        for o in opts:
            args += ["-o", o]
        return run_policyd(args)

    def assertRefused(self, p, *words):
        self.assertEqual(p.returncode, EX_CONFIG, "exit %d, stdout %r, stderr %r" % (p.returncode, p.stdout, p.stderr))
        for w in words:
            self.assertIn(w, p.stderr)

    def test_good_lists_are_accepted(self):
        p = self.check("dnsbl.lists=" + LISTS, "dns.servers=127.0.0.1:5353", "dns.servers=[::1]:53")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_bad_filter_is_refused_naming_key_and_entry(self):
        entry = "zen.spamhaus.org=127.0.0.[2..x]*3"
        self.assertRefused(self.check("dnsbl.lists=" + entry), "dnsbl.lists", entry)

    def test_zero_weight_is_refused(self):
        entry = "zen.spamhaus.org*0"
        self.assertRefused(self.check("dnsbl.lists=" + entry), "dnsbl.lists", entry, "weight")

    def test_bad_entry_among_good_ones_is_named(self):
        p = self.check("dnsbl.lists=dnsbl.test*3, bl2.test*x, dnswl.test*-5")
        self.assertRefused(p, "dnsbl.lists", "bl2.test*x: weight")

    def test_server_that_is_not_an_address_is_refused(self):
        self.assertRefused(self.check("dns.servers=notanip"), "dns.servers", "notanip")

    # Regression test. The bug it caught, now fixed: zones with an empty label (".dnsbl.test", "dnsbl..test") are
    # accepted: parse_dnsbl_entry() (policyd/dnsbl.cpp) checks only the characters and that
    # there is a dot. At run time every lookup of such a list fails (decision detail
    # ".dnsbl.test=error"), so the list silently never works and trips the breaker.
    def test_zone_with_an_empty_label_is_refused(self):
        for entry in (".dnsbl.test*3", "dnsbl..test*3"):
            with self.subTest(entry=entry):
                self.assertRefused(self.check("dnsbl.lists=" + entry), "dnsbl.lists", entry)

    # Regression test. The bug it caught, now fixed: dns.servers=127.0.0.1:99999 passes --check-config and start-up
    # (config.cpp validates only the address part); every lookup then fails (servfail).
    def test_server_port_out_of_range_is_refused(self):
        self.assertRefused(self.check("dns.servers=127.0.0.1:99999"), "dns.servers", "99999")

    def test_trust_score_must_be_below_reject_score(self):
        self.assertRefused(self.check("dnsbl.trust_score=3", "dnsbl.reject_score=3"), "dnsbl.trust_score")


if __name__ == "__main__":
    unittest.main()
