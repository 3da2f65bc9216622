"""End to end through a real Postfix (postfixenv.py): a private Postfix instance whose smtpd
asks policyd (check_policy_service), relays to an SMTP sink (smtpsink.py), and is driven by
swaks, which claims client addresses, names and SASL logins with XCLIENT. policyd asks the
test DNS server (dnsenv.py: NSD behind dnsmasq) and a throwaway PostgreSQL.

The checks read what an SMTP client sees (Postfix's replies), Postfix's maillog, what
reached the sink, and policyd's log and tables:
  - a new triplet is greylisted, and accepted after the delay with the X-Greylist header;
  - a DNSBL-listed client is rejected with the list's text;
  - a restricted account is refused outside the webmail networks, accepted from them; a
    terminated one is refused everywhere;
  - a sending limit trips at RCPT, and (bytes) at the end of the data, which is also where
    Postfix lets policyd count what was sent;
  - policyd killed while Postfix uses it: Postfix applies each service's default action
    (DUNNO on mx, 451 4.3.5 on submission), and once policyd is back mail goes through it
    again, with no Postfix restart or reload.

Needs root, postfix and swaks (scripts/bootstrap.sh installs them); skipped with a message
otherwise, except under CI=true where a missing prerequisite is an error."""

import os
import re
import signal
import sys
import time
import unittest

from dnsenv import DnsEnv
from harness import (SystemTestCase, run_abusectl, query_rows, query_value, sql_quote, unique_word, sleep_until,
                     wait_query)
from postfixenv import MX_DOMAIN, PostfixEnv, smtp_session, swaks, unavailable_reason
from smtpsink import SmtpSink

GREYLIST_DELAY = 2                 # seconds (greylist.delay)
WEBMAIL_NET = "198.18.7.0/24"      # abusectl webmail add
WEBMAIL_HOST = "198.18.7.25"
SUBMIT_CLIENT = "198.51.100.20"    # a mail program somewhere on the Internet
LISTED_CLIENT = "192.0.2.2"        # dnsbl.test lists it, with a TXT record (dnsenv.py)
VERIFIED_NAME = "mail.sender.example"
MESSAGE_LIMIT = 3                  # limits.messages = 3/1h
BYTES_LIMIT = 3072                 # abusectl limits set BYTES_LOGIN bytes 3K/1h
BYTES_LOGIN = "bytes.%s@submit.example" % unique_word()
RETRY_AT = r"(?:\d{4}-\d\d-\d\d )?\d\d:\d\d"   # "retry after" time (dated when not today)
PROPAGATION = 3.0                  # seconds an account state change may take to reach policyd

RESTRICTED = ("Account restricted to webmail: sending from mail programs is disabled, "
              "webmail still works")

_SKIP = unavailable_reason()


_dns = None   # DnsEnv and SmtpSink, shared by the classes of this module
_sink = None


def setUpModule():
    global _dns, _sink
    if _SKIP:
        if os.environ.get("CI") == "true":
            raise RuntimeError("CI must run the Postfix end-to-end tests: " + _SKIP)
        raise unittest.SkipTest(_SKIP)
    _dns = DnsEnv()
    _sink = SmtpSink().__enter__()


def tearDownModule():
    if _sink is not None:
        _sink.__exit__(None, None, None)
    if _dns is not None:
        _dns.stop()


def inbound_rcpt():
    return "%s@%s" % (unique_word(), MX_DOMAIN)


def outbound_rcpt():
    return "%s@%s.example" % (unique_word(), unique_word(6))


def new_sender():
    # Letters only: policyd folds digit runs in senders (greylist triplets).
    return "%s@%s.example" % (unique_word(), unique_word(6))


def new_login():
    return "%s@submit.example" % unique_word()


def inbound_client():
    """A client address in 203.0.113.0/24, not listed anywhere."""
    return "203.0.113.%d" % (2 + int.from_bytes(os.urandom(1), "big") % 250)


class PostfixTestCase(SystemTestCase):
    """A database, policyd and Postfix per class (the DNS set-up and the SMTP sink are the
    module's). policyd: greylisting with a short delay, dnsbl.test, 3 messages per hour per
    account, BYTES_LOGIN with 3 KiB per hour (an abusectl override), WEBMAIL_NET as webmail
    network."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dns, cls.sink = _dns, _sink
        cls.abusectl("db", "migrate")
        cls.abusectl("webmail", "add", WEBMAIL_NET, "--comment", "webmail for the postfix tests")
        cls.abusectl("limits", "set", BYTES_LOGIN, "bytes", "3K/1h", "--comment", "postfix tests")
        cls.d = cls.class_policyd({
            "greylist.delay": "%ds" % GREYLIST_DELAY,
            "dnsbl.lists": "dnsbl.test=127.0.0.[2..11]*3",
            "limits.messages": "%d/1h" % MESSAGE_LIMIT,
            "event_log.flush_interval": "100ms",
        }, name="pfx", extra_opts=["dns.servers=" + cls.dns.server])
        cls.pf = PostfixEnv(policy_port=cls.d.port, relay_port=cls.sink.port)
        cls.addClassCleanup(cls.pf.cleanup)
        cls.pf.start()

    @classmethod
    def abusectl(cls, *args):
        p = run_abusectl(["-d", cls.dsn] + list(args))
        if p.returncode != 0:
            raise AssertionError("abusectl %s exited %d: %s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p.stdout

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result is not None else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            pf = getattr(type(self), "pf", None)
            if pf is not None:
                sys.stderr.write("\n----- Postfix maillog (%s) -----\n%s----- end of maillog -----\n"
                                 % (pf.log_path, pf.log_text()))
        return out

    # -- sending ------------------------------------------------------------------------
    def send_inbound(self, sender, rcpt, client, **kw):
        """A message from client (verified name) to the mx service."""
        return swaks(self.pf.mx_port, sender, rcpt, addr=client, name=VERIFIED_NAME, **kw)

    def submit(self, login, rcpt, client=SUBMIT_CLIENT, **kw):
        """A message authenticated as login (XCLIENT LOGIN) to the submission service."""
        return swaks(self.pf.submission_port, login, rcpt, addr=client, login=login, **kw)

    def delivered(self, rcpt, timeout=15.0):
        """The message the sink received for rcpt (waits, bounded), else fails."""
        end = time.monotonic() + timeout
        while True:
            found = [m for m in list(self.sink.messages) if rcpt in m.rcpt_to]
            if found:
                return found[0]
            if time.monotonic() > end:
                self.fail("no message for %s reached the sink within %.0fs; maillog:\n%s"
                          % (rcpt, timeout, self.pf.log_text()))
            time.sleep(0.05)

    def not_delivered(self, rcpt, settle=1.0):
        time.sleep(settle)
        self.assertEqual([m for m in list(self.sink.messages) if rcpt in m.rcpt_to], [],
                         "a message for %s reached the sink" % rcpt)

    # -- assertions ---------------------------------------------------------------------
    def assertRcptReply(self, result, pattern):
        reply = result.reply_to("RCPT TO")
        self.assertIsNotNone(reply, str(result))
        self.assertRegex(reply, pattern, str(result))
        self.assertFalse(result.accepted(), str(result))
        return reply

    def assertAccepted(self, result):
        self.assertTrue(result.accepted(), str(result))
        qid = result.queue_id()
        self.assertTrue(qid, str(result))
        return qid

    def assertSentLogged(self, qid, rcpt):
        """maillog: the queue id was relayed to the sink."""
        return self.pf.wait_for_log(r"%s: to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent"
                                    % (qid, re.escape(rcpt), self.sink.port))


class PostfixPolicyTest(PostfixTestCase):

    def test_greylisted_then_accepted_after_the_delay(self):
        sender, rcpt, client = new_sender(), inbound_rcpt(), inbound_client()
        t0 = time.monotonic()
        first = self.send_inbound(sender, rcpt, client)
        reply = self.assertRcptReply(first, r"^450 4\.7\.1 ")
        self.assertEqual(reply, "450 4.7.1 <%s>: Recipient address rejected: Greylisted, retry in %d seconds"
                         % (rcpt, GREYLIST_DELAY))
        self.pf.wait_for_log(r"NOQUEUE: reject: RCPT from %s\[%s\]: 450 4\.7\.1 <%s>: Recipient address "
                             r"rejected: Greylisted, retry in %d seconds; from=<%s> to=<%s> proto=ESMTP "
                             r"helo=<mail\.sender\.example>"
                             % (re.escape(VERIFIED_NAME), re.escape(client), re.escape(rcpt), GREYLIST_DELAY,
                                re.escape(sender), re.escape(rcpt)))
        # Retrying at once does not help (within the early-retry grace: no penalty). Only a
        # machine too slow to retry within the delay would see this retry pass already.
        ok = self.send_inbound(sender, rcpt, client, subject="greylist retry")
        if not ok.accepted() or time.monotonic() - t0 < GREYLIST_DELAY:
            self.assertRcptReply(ok, r"^450 4\.7\.1 <%s>: Recipient address rejected: Greylisted, retry in \d "
                                 r"seconds$" % re.escape(rcpt))
            # After the delay the same triplet passes; policyd prepends X-Greylist once.
            sleep_until(t0 + GREYLIST_DELAY + 0.3)
            ok = self.send_inbound(sender, rcpt, client, subject="greylist retry")
        qid = self.assertAccepted(ok)
        self.pf.wait_for_log(r"%s: client=%s\[%s\]" % (qid, re.escape(VERIFIED_NAME), re.escape(client)))
        self.assertSentLogged(qid, rcpt)
        m = self.delivered(rcpt)
        self.assertEqual(m.mail_from, sender)
        self.assertRegex(m.headers().get("x-greylist", ""),
                         r"^delayed \d+ seconds by lupine-policyd at pfx; ")
        self.assertEqual(m.headers().get("subject"), "greylist retry")
        self.assertEqual(len([x for x in self.sink.messages if rcpt in x.rcpt_to]), 1)

    def test_dnsbl_listed_client_rejected(self):
        sender, rcpt = new_sender(), inbound_rcpt()
        r = self.send_inbound(sender, rcpt, LISTED_CLIENT)
        text = ("Service unavailable; client [192.0.2.2] blocked using dnsbl.test; "
                "Listed by dnsbl.test, see https://dnsbl.test/q?192.0.2.2")
        reply = self.assertRcptReply(r, r"^554 5\.7\.1 ")
        self.assertEqual(reply, "554 5.7.1 <%s>: Recipient address rejected: %s" % (rcpt, text))
        self.pf.wait_for_log(r"NOQUEUE: reject: RCPT from %s\[192\.0\.2\.2\]: 554 5\.7\.1 <%s>: Recipient "
                             r"address rejected: %s; from=<%s> to=<%s>"
                             % (re.escape(VERIFIED_NAME), re.escape(rcpt), re.escape(text), re.escape(sender),
                                re.escape(rcpt)))
        # policyd asked the test DNS server, and logged the verdict for that client.
        self.assertGreaterEqual(self.dns.queries("2.2.0.192.dnsbl.test", "A"), 1)
        self.d.wait_for_log(r"decision verdict=reject reason=dnsbl .*client=192\.0\.2\.2 .*rcpt=%s"
                            % re.escape(rcpt))
        self.not_delivered(rcpt, settle=0.2)

    def test_restricted_account_refused_outside_webmail_only(self):
        login = new_login()
        # Active: accepted from anywhere (XCLIENT LOGIN counts as authenticated).
        first = outbound_rcpt()
        qid = self.assertAccepted(self.submit(login, first))
        self.pf.wait_for_log(r"%s: client=unknown\[%s\], sasl_method=XCLIENT, sasl_username=%s"
                             % (qid, re.escape(SUBMIT_CLIENT), re.escape(login)))
        self.delivered(first)
        # The abuse desk restricts it (the SQL function abusectl uses; NOTIFY reaches policyd).
        since = self.pf.log_size()
        query_value(self.dsn, "SELECT lupine_set_account_state(%s, 'restricted', 'tester', 'postfix test')"
                    % sql_quote(login))
        self.d.wait_for_log(r"account_state_seen login=%s state=restricted" % re.escape(login),
                            timeout=PROPAGATION)
        refused_rcpt = outbound_rcpt()
        r = self.submit(login, refused_rcpt)
        self.assertRcptReply(r, r"^550 5\.7\.1 <%s>: Recipient address rejected: %s$"
                             % (re.escape(refused_rcpt), re.escape(RESTRICTED)))
        self.pf.wait_for_log(r"NOQUEUE: reject: RCPT from unknown\[%s\]: 550 5\.7\.1 <%s>: Recipient address "
                             r"rejected: %s; from=<%s> to=<%s>"
                             % (re.escape(SUBMIT_CLIENT), re.escape(refused_rcpt), re.escape(RESTRICTED),
                                re.escape(login), re.escape(refused_rcpt)), since=since)
        # From the webmail host the same account still sends.
        webmail_rcpt = outbound_rcpt()
        qid = self.assertAccepted(self.submit(login, webmail_rcpt, client=WEBMAIL_HOST))
        self.pf.wait_for_log(r"%s: client=unknown\[%s\], sasl_method=XCLIENT, sasl_username=%s"
                             % (qid, re.escape(WEBMAIL_HOST), re.escape(login)))
        self.assertSentLogged(qid, webmail_rcpt)
        self.assertEqual(self.delivered(webmail_rcpt).mail_from, login)
        self.not_delivered(refused_rcpt, settle=0)

    def test_terminated_account_refused_everywhere(self):
        login = new_login()
        query_value(self.dsn, "SELECT lupine_set_account_state(%s, 'terminated', 'tester', 'postfix test')"
                    % sql_quote(login))
        self.d.wait_for_log(r"account_state_seen login=%s state=terminated" % re.escape(login),
                            timeout=PROPAGATION)
        for client in (SUBMIT_CLIENT, WEBMAIL_HOST):
            rcpt = outbound_rcpt()
            self.assertRcptReply(self.submit(login, rcpt, client=client),
                                 r"^550 5\.7\.1 <%s>: Recipient address rejected: Account closed$" % re.escape(rcpt))
            self.pf.wait_for_log(r"NOQUEUE: reject: RCPT from unknown\[%s\]: 550 5\.7\.1 <%s>: "
                                 r"Recipient address rejected: Account closed;" % (re.escape(client), re.escape(rcpt)))

    def test_message_limit_tripped_at_rcpt(self):
        login = new_login()
        rcpts = [outbound_rcpt() for _ in range(MESSAGE_LIMIT + 1)]
        qids = []
        for rcpt in rcpts[:MESSAGE_LIMIT]:
            qids.append(self.assertAccepted(self.submit(login, rcpt)))
        # Counted at END-OF-MESSAGE, which only smtpd_end_of_data_restrictions asks about.
        self.assertEqual(query_value(self.dsn, "SELECT coalesce(sum(messages), 0) FROM send_volume WHERE login = %s"
                                     % sql_quote(login)), str(MESSAGE_LIMIT))
        over = rcpts[MESSAGE_LIMIT]
        r = self.submit(login, over)
        self.assertRcptReply(r, r"^452 4\.7\.1 <%s>: Recipient address rejected: Sending limit reached: %d messages "
                             r"per 1h; retry after %s UTC$" % (re.escape(over), MESSAGE_LIMIT, RETRY_AT))
        self.pf.wait_for_log(r"NOQUEUE: reject: RCPT from unknown\[%s\]: 452 4\.7\.1 <%s>: Recipient address "
                             r"rejected: Sending limit reached: %d messages per 1h; retry after %s UTC; "
                             r"from=<%s> to=<%s>" % (re.escape(SUBMIT_CLIENT), re.escape(over), MESSAGE_LIMIT,
                                                     RETRY_AT, re.escape(login), re.escape(over)))
        self.d.wait_for_log(r"limit_tripped login=%s measure=messages value=%d max=%d window=1h"
                            % (re.escape(login), MESSAGE_LIMIT + 1, MESSAGE_LIMIT))
        rows = query_rows(self.dsn, "SELECT kind, measure FROM account_flag WHERE login = %s" % sql_quote(login))
        self.assertEqual(rows, [["limit", "messages"]])
        for qid, rcpt in zip(qids, rcpts):
            self.assertSentLogged(qid, rcpt)
            self.assertEqual(self.delivered(rcpt).mail_from, login)
        self.not_delivered(over, settle=0)
        self.assertEqual(query_value(self.dsn, "SELECT coalesce(sum(messages), 0) FROM send_volume WHERE login = %s"
                                     % sql_quote(login)), str(MESSAGE_LIMIT))

    def test_bytes_limit_tripped_at_end_of_data(self):
        # 3 KiB per hour for BYTES_LOGIN; swaks announces no SIZE, so only the end of the data
        # (smtpd_end_of_data_restrictions) knows that the second message does not fit.
        body = "x" * 1600
        first, second = outbound_rcpt(), outbound_rcpt()
        qid = self.assertAccepted(self.submit(BYTES_LOGIN, first, body=body))
        self.assertSentLogged(qid, first)
        size = int(query_value(self.dsn, "SELECT coalesce(sum(bytes), 0) FROM send_volume WHERE login = %s"
                                         % sql_quote(BYTES_LOGIN)))
        self.assertGreater(size, 1600)
        self.assertLess(size, BYTES_LIMIT)
        r = self.submit(BYTES_LOGIN, second, body=body)
        self.assertRegex(r.reply_to("RCPT TO") or "", r"^250 ", str(r))
        reply = r.data_reply()
        self.assertRegex(reply or "", r"^452 4\.7\.1 <END-OF-MESSAGE>: End-of-data rejected: Sending limit reached: "
                         r"%d bytes per 1h; retry after %s UTC$" % (BYTES_LIMIT, RETRY_AT), str(r))
        self.assertFalse(r.accepted())
        self.pf.wait_for_log(r"reject: END-OF-MESSAGE from unknown\[%s\]: 452 4\.7\.1 <END-OF-MESSAGE>: "
                             r"End-of-data rejected: Sending limit reached: %d bytes per 1h"
                             % (re.escape(SUBMIT_CLIENT), BYTES_LIMIT))
        self.not_delivered(second)
        self.assertEqual(int(query_value(self.dsn, "SELECT coalesce(sum(bytes), 0) FROM send_volume WHERE login = %s"
                                                   % sql_quote(BYTES_LOGIN))), size)

    def test_event_log_joins_postfix_queue_id(self):
        # The END-OF-MESSAGE request carries Postfix's queue id: the event log and the maillog
        # join on it (abusectl verify relies on that).
        login, rcpt = new_login(), outbound_rcpt()
        qid = self.assertAccepted(self.submit(login, rcpt))
        self.pf.wait_for_log(r"%s: client=unknown\[%s\], sasl_method=XCLIENT, sasl_username=%s"
                             % (qid, re.escape(SUBMIT_CLIENT), re.escape(login)))
        self.delivered(rcpt)
        sql = ("SELECT protocol_state, queue_id <> '', sender, sasl_username, sasl_method, client_address, "
               "recipient_count FROM event_log WHERE sasl_username = %s ORDER BY ts" % sql_quote(login))
        end = time.monotonic() + 5
        while True:
            rows = query_rows(self.dsn, sql)
            if len(rows) >= 2 or time.monotonic() > end:
                break
            time.sleep(0.1)
        self.assertEqual([r[0] for r in rows], ["RCPT", "END-OF-MESSAGE"], rows)
        eom = rows[1]
        self.assertEqual(eom[2:], [login, login, "XCLIENT", SUBMIT_CLIENT, "1"])
        self.assertEqual(query_value(self.dsn, "SELECT queue_id FROM event_log WHERE sasl_username = %s AND "
                                               "protocol_state = 'END-OF-MESSAGE'" % sql_quote(login)), qid)


class PolicydDownTest(PostfixTestCase):
    """policyd dies while Postfix uses it. mx has `default_action=DUNNO` (fail open), submission
    main.cf's default `451 4.3.5` (fail closed): docs/postfix.md says why."""

    def setUp(self):
        super().setUp()
        if not self.d.running():  # a test that failed half-way left it dead
            self.d.restart()
        self.addCleanup(self._revive)

    def _revive(self):
        if not self.d.running():
            self.d.restart()

    def kill_policyd(self):
        self.d.kill()  # SIGKILL: no goodbye, connections just break
        self.assertEqual(self.d.returncode, -signal.SIGKILL)

    def test_killed_mid_session_each_service_applies_its_default_action(self):
        # Two sessions in progress, each has already asked policyd (its connection is open).
        mx_sender, greylisted, second = new_sender(), inbound_rcpt(), inbound_rcpt()
        mx = smtp_session(self.pf.mx_port, inbound_client(), name=VERIFIED_NAME)
        self.addCleanup(mx.close)
        self.assertEqual(mx.mail(mx_sender)[0], 250)
        code, text = mx.rcpt(greylisted)
        self.assertEqual((code, text.decode()), (450, "4.7.1 <%s>: Recipient address rejected: Greylisted, "
                                                      "retry in %d seconds" % (greylisted, GREYLIST_DELAY)))
        login, sub_rcpt = new_login(), outbound_rcpt()
        sub = smtp_session(self.pf.submission_port, SUBMIT_CLIENT, login=login)
        self.addCleanup(sub.close)
        self.assertEqual(sub.mail(login)[0], 250)
        self.assertEqual(sub.rcpt(sub_rcpt)[0], 250)

        since = self.pf.log_size()
        self.kill_policyd()

        # mx: the next recipient's request fails twice (on the broken connection, silently;
        # then a refused reconnect 1 s later, logged) and DUNNO applies: accepted, not greylisted.
        t0 = time.monotonic()
        code, text = mx.rcpt(second)
        took = time.monotonic() - t0
        self.assertEqual((code, text.decode()), (250, "2.1.5 Ok"))
        self.assertGreater(took, 0.8, "Postfix did not retry (smtpd_policy_service_retry_delay = 1s)")
        self.assertLess(took, 5, "Postfix took %.1fs to give up on policyd" % took)
        code, text = mx.data(b"Subject: policyd died\r\n\r\nmid-session\r\n")
        self.assertEqual(code, 250, text)
        qid = re.search(r"queued as (\w+)", text.decode()).group(1)
        mx.quit()
        self.pf.wait_for_log(r"/mx/smtpd\[\d+\]: warning: problem talking to server 127\.0\.0\.1:%d: "
                             r"Connection refused" % self.d.port, since=since)
        self.assertSentLogged(qid, second)
        m = self.delivered(second)
        self.assertEqual(m.rcpt_to, [second])  # the greylisted recipient stays out
        self.assertNotIn("x-greylist", m.headers())

        # submission: END-OF-MESSAGE cannot be asked (nor counted); 451 4.3.5, the client retries.
        code, text = sub.data(b"Subject: policyd died\r\n\r\nmid-session\r\n")
        self.assertEqual((code, text.decode()), (451, "4.3.5 <END-OF-MESSAGE>: End-of-data rejected: "
                                                      "Server configuration problem"))
        sub.quit()
        self.pf.wait_for_log(r"/submission/smtpd\[\d+\]: warning: problem talking to server 127\.0\.0\.1:%d"
                             % self.d.port, since=since)
        self.pf.wait_for_log(r"reject: END-OF-MESSAGE from unknown\[%s\]: 451 4\.3\.5 <END-OF-MESSAGE>: "
                             r"End-of-data rejected: Server configuration problem; from=<%s>"
                             % (re.escape(SUBMIT_CLIENT), re.escape(login)), since=since)
        self.not_delivered(sub_rcpt, settle=0.5)

        # New sessions while policyd is down: the same two outcomes.
        down_rcpt = inbound_rcpt()
        qid = self.assertAccepted(self.send_inbound(new_sender(), down_rcpt, inbound_client()))
        self.assertSentLogged(qid, down_rcpt)
        refused = outbound_rcpt()
        self.assertRcptReply(self.submit(login, refused),
                             r"^451 4\.3\.5 <%s>: Recipient address rejected: Server configuration problem$"
                             % re.escape(refused))
        self.pf.wait_for_log(r"NOQUEUE: reject: RCPT from unknown\[%s\]: 451 4\.3\.5 <%s>: Recipient address "
                             r"rejected: Server configuration problem;" % (re.escape(SUBMIT_CLIENT),
                                                                          re.escape(refused)), since=since)

    def test_policyd_back_mail_flows_without_postfix_restart(self):
        master = self.pf.master_pid
        sender, rcpt, client = new_sender(), inbound_rcpt(), inbound_client()
        self.assertRcptReply(self.send_inbound(sender, rcpt, client), r"^450 4\.7\.1 .*Greylisted")
        t_greylisted = time.monotonic()
        # Greylist writes are batched (greylist.write_behind): a crash loses the last interval's.
        wait_query(self.dsn, "SELECT count(*) FROM greylist WHERE sender = %s" % sql_quote(sender), "1")
        login = new_login()
        self.assertAccepted(self.submit(login, outbound_rcpt()))
        since = self.pf.log_size()
        self.kill_policyd()
        refused = outbound_rcpt()
        self.assertRcptReply(self.submit(login, refused), r"^451 4\.3\.5 ")

        # policyd comes back on the same port; Postfix reconnects by itself.
        self.d.restart()
        back_rcpt, back_client = inbound_rcpt(), inbound_client()
        self.assertRcptReply(self.send_inbound(new_sender(), back_rcpt, back_client),
                             r"^450 4\.7\.1 <%s>: Recipient address rejected: Greylisted, retry in %d seconds$"
                             % (re.escape(back_rcpt), GREYLIST_DELAY))
        self.d.wait_for_log(r"decision verdict=defer_if_permit reason=greylist_new .*client=%s .*rcpt=%s"
                            % (re.escape(back_client), re.escape(back_rcpt)))
        again = outbound_rcpt()
        qid = self.assertAccepted(self.submit(login, again))
        self.assertSentLogged(qid, again)
        self.d.wait_for_log(r"decision verdict=\w+ .*state=END-OF-MESSAGE .*queue_id=%s" % qid)
        # The triplet greylisted before the crash is in PostgreSQL: after its delay it passes.
        sleep_until(t_greylisted + GREYLIST_DELAY + 0.3)
        self.assertAccepted(self.send_inbound(sender, rcpt, client))
        self.assertIn("x-greylist", self.delivered(rcpt).headers())
        # The same Postfix all along: no restart, no reload.
        self.assertEqual(self.pf.master_pid, master)
        self.assertTrue(self.pf.running())
        self.assertEqual(self.pf.log_lines(r"daemon started|reload|stopping the Postfix", since=since), [])


if __name__ == "__main__":
    unittest.main()
