"""The abuse desk's procedure end to end, with real parts: a real policyd logs a spammer's
and some ordinary accounts' authenticated submissions (through the policy protocol) into
PostgreSQL; the complaint's spam copies are written as .eml files carrying the real queue
ids and times of those messages; then abusectl opens the case, restricts the account (the
notification goes to an SMTP sink), shows the account's statistics, verifies the copies
against the event log, terminates or restores, shows, lists and exports the case, and
every change is in the append-only audit trail. policyd enforces each state change.

The steps share one database, one policyd and one config file (policyd's settings and the
[abusectl] section in the same file) and run in order (test_01 ... test_13); a step whose
prerequisite failed is skipped and names it."""

import base64
import email
import email.policy
import email.utils
import hashlib
import json
import os
import pty
import re
import secrets
import subprocess
import time
import unittest
from datetime import datetime, timedelta, timezone

from harness import (ABUSECTL, Policyd, SystemTestCase, new_instance, psql, query_rows, query_value,
                     run_policyd, sql_quote, unique_word)
from smtpsink import SmtpSink

ACTOR = "investigator"
OUR_HOSTS = "smtp.ourmail.example out1.ourmail.example"
NOTIFY_FROM = "abuse@ourmail.example"
MAIL_DOMAIN = "ourmail.example"
REPORTER = "abuse@victim.example"

WEBMAIL_NET = "192.0.2.10/32"
WEBMAIL_HOST = "192.0.2.10"
SPAM_CLIENT = "198.51.100.7"       # the spammer's mail program (the hop's client address)
HOME_CLIENT = "203.0.113.20"       # the ordinary accounts' mail programs

RESTRICTED = ("550 5.7.1 Account restricted to webmail: sending from mail programs is disabled, "
              "webmail still works")
TERMINATED = "550 5.7.1 Account closed"
PROPAGATION = 3.0                  # seconds a state change may take to reach policyd

SPAM_MESSAGES = 24                 # each to 3 new addresses; the last also repeats the first address
HIGH = "100000/1h"
SETTINGS = {"greylist.enable": "no", "flood.enable": "no", "rdns.enable": "no",
            "limits.messages": HIGH, "limits.recipients": HIGH, "limits.bytes": "none",
            "limits.distinct_recipients": HIGH, "limits.distinct_domains": HIGH}

TABLES = ("account", "abuse_case", "case_message", "audit", "webmail_network")


def one_line(text):
    return text.endswith("\n") and "\n" not in text[:-1]


def rfc5322(dt):
    return email.utils.format_datetime(dt)


def iso(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def new_queue_id(taken):
    while True:
        qid = "4X%08X" % secrets.randbits(32)
        if qid not in taken:
            taken.add(qid)
            return qid


class SharedConfigPolicyd(Policyd):
    """policyd whose config file also holds abusectl's [abusectl] section (policyd skips it)."""

    def __init__(self, dsn, settings, section, **kw):
        self.section = section
        super().__init__(dsn, settings, **kw)

    def _write_config(self, endpoints):
        super()._write_config(endpoints)
        with open(self.config_path, "a") as f:
            f.write(self.section)


# ---------------------------------------------------------------------------------------
# Spam copies as a complaint carries them
# ---------------------------------------------------------------------------------------

def submission_hop(sasl, qid, rcpt, at):
    """Our submission hop, as Postfix writes it for an authenticated client."""
    return ("Received: from [192.168.1.2] (client.example.net [%s])\n"
            "\t(Authenticated sender: %s)\n"
            "\tby smtp.ourmail.example (Postfix) with ESMTPSA id %s\n"
            "\tfor <%s>; %s\n" % (SPAM_CLIENT, sasl, qid, rcpt, rfc5322(at)))


def spam_copy(msg, rcpt, sasl=None, qid=None, forged=False, tz=timezone.utc, eol="\n"):
    """A copy of sent message msg as the victim rcpt received it: the victim's MX's hop (from
    our outbound relay), then our submission hop. sasl/qid override what that hop says;
    forged: the hop sits below a foreign relay's hops, as a forger writes it. tz: the zone
    of the dates written (the same instants)."""
    at = msg["at"].astimezone(tz)
    sasl = sasl or msg["login"]
    qid = qid or msg["qid"]
    if forged:
        top = ("Received: from relay.bulk-mailer.example (relay.bulk-mailer.example [203.0.113.66])\n"
               "\tby mx.victim.example (Postfix) with ESMTP id 4Z1Fz0Kp2Qz7vWx\n"
               "\tfor <%s>; %s\n"
               "Received: from localhost (localhost [127.0.0.1])\n"
               "\tby relay.bulk-mailer.example (Postfix) with ESMTP id 9C1E2A0431\n"
               "\tfor <%s>; %s\n" % (rcpt, rfc5322(at + timedelta(seconds=3)), rcpt,
                                     rfc5322(at + timedelta(seconds=2))))
    else:
        top = ("Received: from out1.ourmail.example (out1.ourmail.example [192.0.2.25])\n"
               "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\n"
               "\tby mx.victim.example (Postfix) with ESMTPS id 4Z%08X\n"
               "\tfor <%s>; %s\n" % (secrets.randbits(32), rcpt, rfc5322(at + timedelta(seconds=2))))
    text = ("Return-Path: <%s>\n"
            "Delivered-To: %s\n"
            "%s%s"
            "Message-ID: <%s@client.example.net>\n"
            "Date: %s\n"
            "From: \"Parcel Service\" <%s>\n"
            "To: %s\n"
            "Subject: Your parcel is waiting - confirm delivery\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=us-ascii\n"
            "Content-Transfer-Encoding: 7bit\n"
            "\n"
            "Dear customer,\n"
            "\n"
            "your parcel could not be delivered. Pay the customs fee here:\n"
            "https://parcel-track.example.net/c/%s\n"
            % (msg["login"], rcpt, top, submission_hop(sasl, qid, rcpt, at), msg["msgid"],
               rfc5322(at - timedelta(seconds=1)), msg["login"], rcpt, qid.lower()))
    return text.replace("\n", eol).encode()


def forwarded_complaint(copy_7bit, copy_b64):
    """The reporter's complaint (CRLF): a text part and two message/rfc822 attachments, the
    second base64-encoded. Each copy must end with CRLF (the CRLF before a boundary belongs
    to the boundary, RFC 2046 5.1.1)."""
    b = "=_complaint_%s" % secrets.token_hex(4)
    b64 = base64.encodebytes(copy_b64).decode().replace("\n", "\r\n")
    head = ("Return-Path: <%s>\r\n"
            "Received: from desk.victim.example (desk.victim.example [203.0.113.40])\r\n"
            "\tby mx1.ourmail.example (Postfix) with ESMTPS id 4Y0Hk21Rt7zcqLp\r\n"
            "\tfor <abuse@ourmail.example>; %s\r\n"
            "From: Victim Abuse Desk <%s>\r\n"
            "To: abuse@ourmail.example\r\n"
            "Subject: [Abuse #88231] Spam from your network (2 samples)\r\n"
            "Date: %s\r\n"
            "Message-ID: <abuse-88231@desk.victim.example>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"%s\"\r\n"
            "\r\n"
            "This is a multi-part message in MIME format.\r\n"
            "\r\n"
            "--%s\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n"
            "Hello, our users received the two attached messages from your network.\r\n"
            "\r\n"
            "--%s\r\n"
            "Content-Type: message/rfc822\r\n"
            "Content-Disposition: attachment; filename=\"spam-1.eml\"\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n" % (REPORTER, rfc5322(datetime.now(timezone.utc)), REPORTER,
                      rfc5322(datetime.now(timezone.utc)), b, b, b)).encode()
    mid = ("\r\n--%s\r\n"
           "Content-Type: message/rfc822; name=\"spam-2.eml\"\r\n"
           "Content-Disposition: attachment; filename=\"spam-2.eml\"\r\n"
           "Content-Transfer-Encoding: base64\r\n"
           "\r\n" % b).encode()
    tail = ("%s\r\n--%s--\r\n" % (b64.rstrip("\r\n"), b)).encode()
    return head + copy_7bit + mid + tail


# ---------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------

class InvestigationTest(SystemTestCase):

    # -- set-up: policyd, the traffic, the complaint's copies ------------------------------

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.done = set()
        cls.sink = SmtpSink().__enter__()
        cls.addClassCleanup(cls.sink.__exit__, None, None, None)
        word = unique_word(8)
        cls.spammer = "spam.%s@example.org" % word
        cls.ordinary = ["anna.%s@example.net" % word, "ben.%s@example.net" % word,
                        "carol%s" % word]                   # a bare login: mail_domain applies
        cls.quiet = "dave.%s@example.net" % word            # no traffic; its notification fails
        section = ("\n[abusectl]\n"
                   "our_hosts = %s\n"
                   "notify_from = %s\n"
                   "smtp_url = smtp://127.0.0.1:%d\n"
                   "mail_domain = %s\n" % (OUR_HOSTS, NOTIFY_FROM, cls.sink.port, MAIL_DOMAIN))
        cls.d = SharedConfigPolicyd(cls.dsn, SETTINGS, section, name="inv", start=False)
        cls._class_daemons.append(cls.d)
        cls.d.start()
        cls.conf = cls.d.config_path
        p = cls.run_ctl(["webmail", "add", WEBMAIL_NET, "--comment", "roundcube"])
        if p.returncode != 0:
            raise AssertionError("webmail add: %s" % p.stderr)
        cls.t_start = datetime.now(timezone.utc)
        cls.send_traffic()
        cls.t_end = time.time()
        # SIGTERM flushes the event log; the class's policyd is started again where needed.
        cls.stop_rc = cls.d.stop()
        cls.copies_dir = os.path.join(cls.tmpdir, "complaint")
        os.mkdir(cls.copies_dir)
        cls.write_copies()

    @classmethod
    def send_traffic(cls):
        taken = set()
        cls.spam = []
        c = cls.d.client()
        try:
            first = None
            for i in range(SPAM_MESSAGES):
                word = unique_word(6)
                rcpts = ["%s%d@%s%d.example" % (unique_word(5), j, word, j % 2) for j in range(3)]
                if first is None:
                    first = rcpts[0]
                elif i == SPAM_MESSAGES - 1:
                    rcpts.append(first)     # an address seen before: counted, not distinct
                msg = {"login": cls.spammer, "qid": new_queue_id(taken), "rcpts": rcpts, "size": 2000 + i,
                       "msgid": "%s.%d" % (secrets.token_hex(8), i)}
                msg["at"] = cls.transaction(c, cls.spammer, SPAM_CLIENT, msg["qid"], rcpts, msg["size"])
                cls.spam.append(msg)
            # Ordinary users: a few messages to people they know.
            cls.ordinary_sent = []
            plans = [[["mum@family.example"], ["dad@family.example"], ["mum@family.example"]],
                     [["boss@work.example"], ["boss@work.example", "team@work.example"]],
                     [["friend@club.example"]]]
            for login, plan in zip(cls.ordinary, plans):
                for n, rcpts in enumerate(plan):
                    qid = new_queue_id(taken)
                    cls.transaction(c, login, HOME_CLIENT, qid, rcpts, 3000 + n)
                    cls.ordinary_sent.append((login, qid, rcpts, 3000 + n))
        finally:
            c.close()
        cls.unknown_qid = new_queue_id(taken)

    @staticmethod
    def transaction(c, login, client, qid, rcpts, size):
        """One authenticated SMTP transaction as Postfix asks: RCPT per recipient, then
        END-OF-MESSAGE with recipient_count and size; returns the time the message was
        accepted (what our Received header says, to the second)."""
        inst = new_instance()
        attrs = dict(sasl_method="PLAIN", sasl_username=login, sender=login, client_address=client,
                     client_name="client.example.net", reverse_client_name="client.example.net",
                     helo_name="[192.168.1.2]", queue_id=qid, instance=inst, server_port="587")
        for r in rcpts:
            a = c.request(protocol_state="RCPT", recipient=r, recipient_count="0", size=str(size), **attrs)
            if a != "DUNNO":
                raise AssertionError("RCPT %s for %s refused: %r" % (r, login, a))
        at = datetime.now(timezone.utc).replace(microsecond=0)
        a = c.request(protocol_state="END-OF-MESSAGE", recipient=rcpts[0] if len(rcpts) == 1 else "",
                      recipient_count=str(len(rcpts)), size=str(size), **attrs)
        if a != "DUNNO":
            raise AssertionError("END-OF-MESSAGE for %s refused: %r" % (login, a))
        return at

    @classmethod
    def write_copies(cls):
        s = cls.spam
        cls.files = {}
        cls.expected_raw = {}   # (file, part) -> the copy's bytes as abusectl must store them

        def put(name, data):
            path = os.path.join(cls.copies_dir, name)
            with open(path, "wb") as f:
                f.write(data)
            cls.files[name] = path
            return path

        # 1. A plain copy, saved by the victim (LF line ends).
        plain = spam_copy(s[3], s[3]["rcpts"][1])
        put("plain.eml", plain)
        cls.expected_raw[("plain.eml", 0)] = plain
        # 2. A forwarded complaint: two attached copies, one base64. The first is the message of
        # the plain copy as another of its recipients received it, with CRLF and dates in +0100.
        c1 = spam_copy(s[3], s[3]["rcpts"][0], eol="\r\n", tz=timezone(timedelta(hours=1)))
        c2 = spam_copy(s[7], s[7]["rcpts"][2])
        put("complaint.eml", forwarded_complaint(c1, c2))
        cls.expected_raw[("complaint.eml", 1)] = c1
        cls.expected_raw[("complaint.eml", 2)] = c2
        # 3. A queue id that is not in our logs.
        unknown = spam_copy(dict(s[10], qid=cls.unknown_qid), s[10]["rcpts"][0])
        put("unknown.eml", unknown)
        cls.expected_raw[("unknown.eml", 0)] = unknown
        # 4. Forged: our hop (with a real queue id) below a foreign relay's hops.
        forged = spam_copy(s[11], s[11]["rcpts"][0], forged=True)
        put("forged.eml", forged)
        cls.expected_raw[("forged.eml", 0)] = forged
        # 5. Our hop names another authenticated sender than the log (imported separately:
        # with it, the copies would not name one account).
        wrong = spam_copy(s[9], s[9]["rcpts"][1], sasl=cls.ordinary[0])
        put("wrong-sender.eml", wrong)
        cls.expected_raw[("wrong-sender.eml", 0)] = wrong

    # -- helpers -----------------------------------------------------------------------------

    @classmethod
    def run_ctl(cls, args, conf=None, env=None, stdin=subprocess.DEVNULL, timeout=60):
        e = dict(os.environ)
        e.pop("LUPINE_DATABASE", None)
        e["SUDO_USER"] = ACTOR
        e.update(env or {})
        return subprocess.run([ABUSECTL, "-c", conf or cls.conf] + list(args), stdin=stdin,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, timeout=timeout,
                              universal_newlines=True)

    def ctl(self, *args, **kw):
        return self.run_ctl(list(args), **kw)

    def ok(self, *args, **kw):
        p = self.ctl(*args, **kw)
        self.assertEqual(p.returncode, 0, "abusectl %s:\n%s%s" % (" ".join(args), p.stdout, p.stderr))
        return p

    def assertRefused(self, p, code, pattern):
        self.assertEqual(p.returncode, code, p.stdout + p.stderr)
        self.assertTrue(one_line(p.stderr), "not one line: %r" % p.stderr)
        self.assertRegex(p.stderr, pattern)

    def need(self, *steps):
        missing = [s for s in steps if s not in type(self).done]
        if missing:
            self.skipTest("needs the earlier step(s) %s, which failed" % ", ".join(missing))

    def finished(self, step):
        type(self).done.add(step)

    def snapshot(self):
        return {t: psql(self.dsn, "SELECT * FROM %s ORDER BY 1" % t) for t in TABLES}

    def count(self, table):
        return int(query_value(self.dsn, "SELECT count(*) FROM %s" % table))

    def case_row(self, case_id):
        return query_rows(self.dsn, "SELECT state, coalesce(account, ''), coalesce(closed_by, ''),"
                                    " closed_at IS NOT NULL FROM abuse_case WHERE id = %d" % case_id)[0]

    def account_state(self, login):
        return query_value(self.dsn, "SELECT coalesce((SELECT state FROM account WHERE login = %s), 'active')"
                           % sql_quote(login.lower()))

    def open_case(self, *args):
        p = self.ok("case", "open", "--reporter", REPORTER, *args)
        m = re.match(r"^case (\d+) opened: ", p.stdout)
        self.assertTrue(m, p.stdout)
        return int(m.group(1)), p

    def policyd_up(self):
        if not self.d.running():
            self.d.start()
        return self.track(self.d.client())

    def ask(self, c, login, client, recipient):
        return c.request(protocol_state="RCPT", sasl_method="PLAIN", sasl_username=login, sender=login,
                         client_address=client, recipient=recipient, queue_id=new_queue_id(set()))

    def expect_reply(self, c, login, client, recipient, want):
        """Asks until policyd's reply is want (a state change takes effect within a moment)."""
        deadline = time.monotonic() + PROPAGATION
        while True:
            reply = self.ask(c, login, client, recipient)
            if reply == want or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(reply, want, "%s from %s" % (login, client))

    def sink_message(self, index):
        self.assertTrue(self.sink.wait_for(index + 1, timeout=10), "no notification reached the sink")
        return self.sink.messages[index]

    def audit_rows(self, where):
        return query_rows(self.dsn, "SELECT actor, action, coalesce(login, ''), coalesce(case_id::text, ''),"
                                    " coalesce(old_value, ''), coalesce(new_value, ''), reason FROM audit"
                                    " WHERE %s ORDER BY id" % where)

    # -- 1. the traffic is in the event log ---------------------------------------------------

    def test_01_traffic_is_logged_and_policyd_reads_the_shared_config(self):
        self.assertEqual(self.stop_rc, 0, "policyd's exit code after SIGTERM")
        with open(self.conf) as f:
            text = f.read()
        self.assertIn("[abusectl]", text)
        self.assertIn("database = ", text)
        p = run_policyd(["-c", self.conf, "--check-config"])
        self.assertEqual(p.returncode, 0, "policyd refuses the shared config file:\n%s%s" % (p.stdout, p.stderr))
        # Every accepted message has its END-OF-MESSAGE row with our queue id, client and login.
        rows = query_rows(self.dsn, "SELECT queue_id, host(client_address), sender, recipient_count, size,"
                                    " postfix_instance <> '' FROM event_log WHERE lower(sasl_username) = %s"
                                    " AND protocol_state = 'END-OF-MESSAGE' ORDER BY ts"
                                    % sql_quote(self.spammer))
        want = sorted([m["qid"], SPAM_CLIENT, self.spammer, str(len(m["rcpts"])), str(m["size"]), "t"]
                      for m in self.spam)
        self.assertEqual(sorted(rows), want)
        n_rcpt = query_value(self.dsn, "SELECT count(*) FROM event_log WHERE lower(sasl_username) = %s"
                                       " AND protocol_state = 'RCPT'" % sql_quote(self.spammer))
        self.assertEqual(int(n_rcpt), sum(len(m["rcpts"]) for m in self.spam))
        for login in self.ordinary:
            n = query_value(self.dsn, "SELECT count(*) FROM event_log WHERE lower(sasl_username) = %s"
                                      " AND protocol_state = 'END-OF-MESSAGE'" % sql_quote(login))
            self.assertEqual(int(n), len([o for o in self.ordinary_sent if o[0] == login]), login)
        self.assertEqual(query_value(self.dsn, "SELECT count(*) FROM event_log WHERE queue_id = %s"
                                               % sql_quote(self.unknown_qid)), "0")
        self.finished("traffic")

    # -- 3. the complaint becomes a case --------------------------------------------------------

    def test_02_case_open_finds_the_account_and_imports_the_copies(self):
        self.need("traffic")
        names = ["plain.eml", "complaint.eml", "unknown.eml", "forged.eml"]
        case_id, p = self.open_case("--summary", "parcel spam", *[self.files[n] for n in names])
        self.assertEqual(p.stdout.splitlines()[0],
                         "case %d opened: 5 copies imported; account %s (from the copies)" % (case_id, self.spammer))
        self.assertIn("plain.eml: queue id %s from %s by %s" % (self.spam[3]["qid"], SPAM_CLIENT, self.spammer),
                      p.stdout)
        self.assertRegex(p.stdout, r"forged\.eml: no Received header by our hosts|forged\.eml: .*forged")
        type(self).case_a = case_id
        self.assertEqual(self.case_row(case_id), ["open", self.spammer, "", "f"])
        # The wrong-sender copy names another account: added to the case afterwards.
        p = self.ok("case", "import", str(case_id), self.files["wrong-sender.eml"])
        self.assertTrue(p.stdout.startswith("case %d: 1 copy imported" % case_id), p.stdout)
        self.assertEqual(self.case_row(case_id)[1], self.spammer, "import must not change the case's account")

        rows = query_rows(self.dsn, "SELECT file_name, part, sha256, encode(sha256(raw), 'hex'),"
                                    " coalesce(queue_id, ''), coalesce(sasl_user, ''), coalesce(client_ip, ''),"
                                    " coalesce(to_char(received_at AT TIME ZONE 'UTC',"
                                    " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), imported_by,"
                                    " replace(replace(notes, E'\\n', ' / '), '|', '/'), id"
                                    " FROM case_message WHERE case_id = %d ORDER BY id" % case_id)
        got = {(r[0], int(r[1])): r for r in rows}
        self.assertEqual(sorted(got), sorted(self.expected_raw))
        self.assertEqual([(r[0], int(r[1])) for r in rows],
                         [("plain.eml", 0), ("complaint.eml", 1), ("complaint.eml", 2), ("unknown.eml", 0),
                          ("forged.eml", 0), ("wrong-sender.eml", 0)], "import order")
        type(self).copy_ids = {(r[0], int(r[1])): int(r[10]) for r in rows}
        for key, raw in self.expected_raw.items():
            r = got[key]
            self.assertEqual(r[2], sha256(raw), "%s: sha256 is not that of the copy's bytes" % (key,))
            self.assertEqual(r[3], r[2], "%s: sha256 is not that of the stored bytes" % (key,))
            self.assertEqual(r[8], ACTOR)
        self.assertEqual(sha256(read(self.files["plain.eml"])), got[("plain.eml", 0)][2])
        s = self.spam
        parsed = {k: got[k][4:8] for k in got}
        self.assertEqual(parsed[("plain.eml", 0)], [s[3]["qid"], self.spammer, SPAM_CLIENT, iso(s[3]["at"])])
        self.assertEqual(parsed[("complaint.eml", 1)], [s[3]["qid"], self.spammer, SPAM_CLIENT, iso(s[3]["at"])])
        self.assertEqual(parsed[("complaint.eml", 2)], [s[7]["qid"], self.spammer, SPAM_CLIENT, iso(s[7]["at"])])
        self.assertEqual(parsed[("unknown.eml", 0)],
                         [self.unknown_qid, self.spammer, SPAM_CLIENT, iso(s[10]["at"])])
        self.assertEqual(parsed[("forged.eml", 0)], ["", "", "", ""], "a forged hop must not be trusted")
        self.assertIn("forged", got[("forged.eml", 0)][9])
        self.assertEqual(parsed[("wrong-sender.eml", 0)],
                         [s[9]["qid"], self.ordinary[0], SPAM_CLIENT, iso(s[9]["at"])])
        rows = self.audit_rows("case_id = %d" % case_id)
        self.assertEqual(rows[0], [ACTOR, "case_open", self.spammer, str(case_id), "", "5 copies", REPORTER])
        self.assertEqual(len(rows), 2, rows)
        self.assertEqual([rows[1][i] for i in (0, 1, 3, 4, 5, 6)],
                         [ACTOR, "case_import", str(case_id), "", "1 copy", self.files["wrong-sender.eml"]])
        self.finished("open")
        # The import's audit row names the case's account, so a per-account audit lookup finds it.
        with self.subTest("the import's audit row names the case's account"):
            self.assertEqual(rows[1][2], self.spammer)

    # -- 4. restrict: notification, enforcement -------------------------------------------------

    def test_03_restrict_notifies_the_user_and_policyd_enforces_it(self):
        self.need("open")
        case_id = self.case_a
        n = len(self.sink.messages)
        before = datetime.now(timezone.utc)
        p = self.ok("restrict", self.spammer, "--case", str(case_id), "--reason", "spam complaint from victim")
        self.assertIn("%s: active -> restricted (case %d restricted)" % (self.spammer, case_id), p.stdout)
        self.assertIn("notified %s" % self.spammer, p.stdout)
        m = self.sink_message(n)
        self.assertEqual(m.mail_from, NOTIFY_FROM)
        self.assertEqual(m.rcpt_to, [self.spammer])
        self.assertNotIn(b"\n", m.data.replace(b"\r\n", b""), "bare LF in the message")
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        self.assertIn("webmail", msg["Subject"].lower())
        self.assertIn(self.spammer, msg["Subject"])
        self.assertEqual(msg["To"], self.spammer)
        self.assertEqual(msg["From"], NOTIFY_FROM)
        self.assertEqual(msg["Auto-Submitted"], "auto-generated")
        self.assertRegex(msg["Message-ID"], r"^<[^<>@\s]+@ourmail\.example>$")
        sent = email.utils.parsedate_to_datetime(msg["Date"])
        self.assertLess(abs((sent - before).total_seconds()), 120, msg["Date"])
        body = msg.get_content()
        self.assertRegex(body, r"\bcase %d\b" % case_id)
        self.assertIn("webmail", body)
        self.assertIn("spam complaint from victim", body)
        self.assertRegex(body, r"still .*webmail|webmail.* still")
        self.assertEqual(self.case_row(case_id)[0], "restricted")
        self.assertEqual(self.account_state(self.spammer), "restricted")
        self.assertEqual(query_rows(self.dsn, "SELECT changed_by, reason, case_id FROM account WHERE login = %s"
                                    % sql_quote(self.spammer)),
                         [[ACTOR, "spam complaint from victim", str(case_id)]])
        self.assertEqual(self.audit_rows("case_id = %d AND action IN ('state', 'case', 'notify')" % case_id),
                         [[ACTOR, "state", self.spammer, str(case_id), "active", "restricted",
                           "spam complaint from victim"],
                          [ACTOR, "case", self.spammer, str(case_id), "open", "restricted",
                           "spam complaint from victim"],
                          [ACTOR, "notify", self.spammer, str(case_id), "", "sent", "to " + self.spammer]])
        # policyd, started again, refuses the account's mail programs but not the webmail.
        c = self.policyd_up()
        known = self.spam[0]["rcpts"][0]   # no new address: the statistics stay exact
        self.expect_reply(c, self.spammer, SPAM_CLIENT, known, RESTRICTED)
        self.assertEqual(self.ask(c, self.spammer, "203.0.113.99", known), RESTRICTED)
        self.assertEqual(self.ask(c, self.spammer, WEBMAIL_HOST, known), "DUNNO")
        self.assertEqual(self.ask(c, self.ordinary[0], HOME_CLIENT, "mum@family.example"), "DUNNO")
        self.finished("restrict")

    def test_04_restrict_uses_the_notify_template_and_mail_domain(self):
        self.need("traffic")
        login = self.ordinary[2]   # no '@': LOGIN@mail_domain
        case_id, _ = self.open_case("--account", login, "--summary", "one complaint, unclear")
        type(self).case_c = case_id
        tmpl = os.path.join(self.tmpdir, "restricted.txt")
        with open(tmpl, "w") as f:
            f.write("From: Abuse Desk <{from}>\nTo: {to}\nSubject: Custom notice: {login} webmail-only (case {case})\n"
                    "Date: {date}\nMessage-ID: {message_id}\nAuto-Submitted: auto-generated\n\n"
                    "CUSTOM TEMPLATE: {login} restricted for case {case} because {reason}.\n")
        conf = os.path.join(self.tmpdir, "with-template.conf")
        with open(self.conf) as f, open(conf, "w") as out:
            out.write(f.read() + "notify_template = %s\n" % tmpl)
        n = len(self.sink.messages)
        p = self.ok("restrict", login, "--case", str(case_id), "--reason", "under review", conf=conf)
        to = "%s@%s" % (login, MAIL_DOMAIN)
        self.assertIn("notified %s" % to, p.stdout)
        m = self.sink_message(n)
        self.assertEqual((m.mail_from, m.rcpt_to), (NOTIFY_FROM, [to]))
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        self.assertEqual(msg["Subject"], "Custom notice: %s webmail-only (case %d)" % (login, case_id))
        self.assertEqual(msg["To"], to)
        self.assertEqual(msg.get_content().strip(),
                         "CUSTOM TEMPLATE: %s restricted for case %d because under review." % (login, case_id))
        self.assertEqual(self.account_state(login), "restricted")
        c = self.policyd_up()
        self.expect_reply(c, login, HOME_CLIENT, "friend@club.example", RESTRICTED)
        self.assertEqual(self.ask(c, login, WEBMAIL_HOST, "friend@club.example"), "DUNNO")
        self.finished("restrict_c")

    def test_05_failed_notification_keeps_the_restriction(self):
        self.need("traffic")
        case_id, _ = self.open_case("--account", self.quiet)
        type(self).case_d = case_id
        n = len(self.sink.messages)
        self.sink.fail_data = True
        try:
            p = self.ctl("restrict", self.quiet, "--case", str(case_id))
        finally:
            self.sink.fail_data = False
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertTrue(one_line(p.stderr), repr(p.stderr))
        self.assertRegex(p.stderr, r"^abusectl restrict: %s is restricted, but the notification to %s failed: "
                         % (re.escape(self.quiet), re.escape(self.quiet)))
        self.assertIn("%s: active -> restricted" % self.quiet, p.stdout)
        self.assertEqual(len(self.sink.messages), n)
        self.assertEqual(self.account_state(self.quiet), "restricted")
        self.assertEqual(self.case_row(case_id)[0], "restricted")
        rows = self.audit_rows("case_id = %d AND action = 'notify'" % case_id)
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(rows[0][:6], [ACTOR, "notify", self.quiet, str(case_id), "", "failed"])
        self.assertNotEqual(rows[0][6], "", "the failure's reason is audited")
        c = self.policyd_up()
        self.expect_reply(c, self.quiet, HOME_CLIENT, "x@elsewhere.example", RESTRICTED)

    # -- 5. statistics --------------------------------------------------------------------------

    def stats(self, login):
        p = self.ok("stats", login, "--since", iso(self.t_start - timedelta(minutes=1)), "--json")
        return json.loads(p.stdout)

    def test_06_stats_show_the_spammer_unusual_and_an_ordinary_account_not(self):
        self.need("traffic")
        if self.ctl("stats", "--help").returncode != 0:
            self.skipTest("abusectl stats is not available (stats --help failed)")
        # The period ends now, in whole seconds: let the second of the last message pass.
        time.sleep(max(0.0, min(1.0, int(self.t_end) + 1.05 - time.time())))
        st = self.stats(self.spammer)
        self.assertEqual(st["account"], self.spammer)
        t = st["totals"]
        all_rcpts = [r for m in self.spam for r in m["rcpts"]]
        want = {"messages": SPAM_MESSAGES, "recipients": len(all_rcpts),
                "bytes": sum(m["size"] for m in self.spam), "distinct_recipients": len(set(all_rcpts)),
                "distinct_domains": len({r.split("@")[1] for r in all_rcpts})}
        self.assertEqual({k: t[k] for k in want}, want)
        self.assertEqual(len(set(all_rcpts)), len(all_rcpts) - 1)   # the check above sees the repeat
        self.assertEqual(t["clients"], 1)
        self.assertEqual([c["address"] for c in st["clients"]], [SPAM_CLIENT])
        self.assertEqual(st["clients"][0]["messages"], SPAM_MESSAGES)
        self.assertTrue(st["unusual"], "the spammer's figures are not marked unusual: %r" % st)
        self.assertIn("distinct_recipients", st["unusual"])
        self.assertNotIn("nothing unusual", st["findings"])
        self.assertTrue(any("unusual" in f for f in st["findings"]), st["findings"])

        login = self.ordinary[0]
        st = self.stats(login)
        sent = [o for o in self.ordinary_sent if o[0] == login]
        rcpts = [r for o in sent for r in o[2]]
        want = {"messages": len(sent), "recipients": len(rcpts), "bytes": sum(o[3] for o in sent),
                "distinct_recipients": len(set(rcpts)), "distinct_domains": len({r.split("@")[1] for r in rcpts})}
        self.assertEqual({k: st["totals"][k] for k in want}, want)
        self.assertEqual(st["unusual"], [])
        self.assertEqual(st["findings"], ["nothing unusual"])

    # -- 6. verify ------------------------------------------------------------------------------

    def test_07_verify_matches_the_real_copies_only(self):
        self.need("open")
        case_id = self.case_a
        ids = self.copy_ids
        audit_before = len(self.audit_rows("action = 'verify'"))
        p = self.ctl("verify", str(case_id))
        self.assertEqual(p.returncode, 1, "not every copy matched: exit 1\n" + p.stdout + p.stderr)
        self.assertEqual(p.stderr, "")
        out = p.stdout
        self.assertIn("3 of 6 copies matched", out)

        def line(key):
            m = re.search(r"(?m)^copy #%d \(([^)]*)\): (MATCHED|NOT MATCHED) - (.*)$" % ids[key], out)
            self.assertTrue(m, "no verdict line for %s in:\n%s" % (key, out))
            return m.group(2), m.group(3)

        for key in [("plain.eml", 0), ("complaint.eml", 1), ("complaint.eml", 2)]:
            verdict, why = line(key)
            self.assertEqual(verdict, "MATCHED", (key, why))
            self.assertIn(self.spammer, why)
        verdict, why = line(("unknown.eml", 0))
        self.assertEqual(verdict, "NOT MATCHED")
        self.assertIn("no message with queue id %s" % self.unknown_qid, why)
        verdict, why = line(("forged.eml", 0))
        self.assertEqual(verdict, "NOT MATCHED")
        self.assertIn("no trustworthy Received header", why)
        verdict, why = line(("wrong-sender.eml", 0))
        self.assertEqual(verdict, "NOT MATCHED")

        p = self.ctl("verify", str(case_id), "--json")
        self.assertEqual(p.returncode, 1, p.stderr)
        v = {(x["file"], x["part"]): x for x in json.loads(p.stdout)}
        self.assertEqual(sorted(v), sorted(ids))
        for key, x in v.items():
            self.assertEqual(x["copy"], ids[key])
        checks = {k: {c["check"]: c for c in x["checks"]} for k, x in v.items()}
        for key, msg in [(("plain.eml", 0), self.spam[3]), (("complaint.eml", 1), self.spam[3]),
                         (("complaint.eml", 2), self.spam[7])]:
            self.assertTrue(v[key]["matched"], v[key])
            ch = checks[key]
            for what in ("queue id", "sender account", "case account", "client address", "envelope sender",
                         "time", "recipients"):
                self.assertEqual(ch[what]["status"], "ok", (key, what, ch))
            self.assertTrue(ch["queue id"]["detail"].startswith(msg["qid"]), ch["queue id"])
        x = v[("unknown.eml", 0)]
        self.assertFalse(x["matched"])
        self.assertEqual(checks[("unknown.eml", 0)]["queue id"]["status"], "mismatch")
        self.assertIn(self.unknown_qid, x["why"])
        x = v[("forged.eml", 0)]
        self.assertFalse(x["matched"])
        self.assertIn("no trustworthy", x["why"])
        self.assertNotEqual(checks[("forged.eml", 0)]["queue id"]["status"], "ok")
        x = v[("wrong-sender.eml", 0)]
        ch = checks[("wrong-sender.eml", 0)]
        self.assertFalse(x["matched"])
        self.assertEqual(ch["queue id"]["status"], "ok", "its queue id is a real one")
        self.assertEqual(ch["sender account"]["status"], "mismatch", ch)
        self.assertEqual(ch["sender account"]["detail"],
                         "copy says %s, log says %s" % (self.ordinary[0], self.spammer))
        self.assertEqual([k for k, c in ch.items() if c["status"] == "mismatch"], ["sender account"])
        rows = self.audit_rows("action = 'verify'")
        self.assertEqual(len(rows), audit_before + 2)
        self.assertEqual(rows[-1][:6], [ACTOR, "verify", self.spammer, str(case_id), "", "3 of 6 matched"])
        self.finished("verify")

    # -- 7. terminate, restore, the moves the procedure refuses -----------------------------

    def test_08_terminate_asks_then_closes_the_case_and_policyd_refuses_everywhere(self):
        self.need("restrict")
        case_id = self.case_a
        before = self.snapshot()
        p = self.ctl("terminate", self.spammer, "--case", str(case_id))   # stdin: /dev/null
        self.assertRefused(p, 1, r"^abusectl terminate: not a terminal and no --yes: nothing changed$")
        self.assertEqual(self.snapshot(), before)
        # At a terminal, anything but "yes" changes nothing.
        try:
            master, slave = pty.openpty()
        except OSError:
            master = None   # no pseudo-terminals here: that part is left out
        if master is not None:
            try:
                os.write(master, b"no\n")
                p = self.ctl("terminate", self.spammer, "--case", str(case_id), stdin=slave)
            finally:
                os.close(slave)
                os.close(master)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("not confirmed: nothing changed", p.stderr)
            self.assertEqual(self.snapshot(), before)

        p = self.ok("terminate", self.spammer, "--case", str(case_id), "--yes", "--reason", "3 copies matched the log")
        self.assertIn("%s: restricted -> terminated (case %d terminated)" % (self.spammer, case_id), p.stdout)
        self.assertEqual(self.case_row(case_id), ["terminated", self.spammer, ACTOR, "t"])
        self.assertEqual(self.account_state(self.spammer), "terminated")
        self.assertEqual(self.audit_rows("case_id = %d AND action IN ('state', 'case')" % case_id)[-2:],
                         [[ACTOR, "state", self.spammer, str(case_id), "restricted", "terminated",
                           "3 copies matched the log"],
                          [ACTOR, "case", self.spammer, str(case_id), "restricted", "terminated",
                           "3 copies matched the log"]])
        c = self.policyd_up()
        known = self.spam[0]["rcpts"][0]
        self.expect_reply(c, self.spammer, WEBMAIL_HOST, known, TERMINATED)
        self.assertEqual(self.ask(c, self.spammer, SPAM_CLIENT, known), TERMINATED)

        # A terminated account is never restored: not through its closed case, nor a new one.
        before = self.snapshot()
        p = self.ctl("restore", self.spammer, "--case", str(case_id))
        self.assertRefused(p, 1, r"^abusectl restore: case %d is closed \(terminated\): nothing changed$" % case_id)
        case_e, _ = self.open_case("--account", self.spammer, "--summary", "a second complaint")
        before = self.snapshot()
        p = self.ctl("restore", self.spammer, "--case", str(case_e))
        self.assertRefused(p, 1, r"^abusectl restore: %s is terminated; a terminated account is not restored"
                           % re.escape(self.spammer))
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.account_state(self.spammer), "terminated")
        self.finished("terminate")

    def test_09_terminating_a_case_never_restricted_needs_force(self):
        self.need("traffic")
        login = self.ordinary[1]
        case_id, _ = self.open_case("--account", login)
        type(self).case_b = case_id
        before = self.snapshot()
        p = self.ctl("terminate", login, "--case", str(case_id), "--yes")
        self.assertRefused(p, 1, r"^abusectl terminate: case %d never restricted .*--force.*: nothing changed$"
                           % case_id)
        self.assertEqual(self.snapshot(), before)
        p = self.ok("terminate", login, "--case", str(case_id), "--yes", "--force", "--reason", "confirmed by phone")
        self.assertIn("%s: active -> terminated (case %d terminated)" % (login, case_id), p.stdout)
        self.assertEqual(self.case_row(case_id), ["terminated", login, ACTOR, "t"])
        self.assertEqual(self.account_state(login), "terminated")
        c = self.policyd_up()
        self.expect_reply(c, login, HOME_CLIENT, "boss@work.example", TERMINATED)
        self.assertEqual(self.ask(c, login, WEBMAIL_HOST, "boss@work.example"), TERMINATED)

    def test_10_restore_closes_the_case_and_reactivates_the_account(self):
        self.need("restrict_c")
        login, case_id = self.ordinary[2], self.case_c
        p = self.ok("restore", login, "--case", str(case_id), "--reason", "not confirmed")
        self.assertIn("%s: restricted -> active (case %d restored)" % (login, case_id), p.stdout)
        self.assertEqual(self.case_row(case_id), ["restored", login, ACTOR, "t"])
        self.assertEqual(self.account_state(login), "active")
        c = self.policyd_up()
        self.expect_reply(c, login, HOME_CLIENT, "friend@club.example", "DUNNO")
        # A closed case takes no further move.
        p = self.ctl("restrict", login, "--case", str(case_id), "--no-notify")
        self.assertRefused(p, 1, r"case %d is closed \(restored\)" % case_id)

    # -- 8. show, list, export -------------------------------------------------------------

    def test_11_case_show_list_and_export(self):
        self.need("terminate", "verify")
        case_id, ids = self.case_a, self.copy_ids
        p = self.ok("case", "show", str(case_id))
        out = p.stdout
        self.assertTrue(out.startswith("case %d  terminated  account %s\n" % (case_id, self.spammer)), out)
        self.assertIn("reported by %s; opened by %s" % (REPORTER, ACTOR), out)
        self.assertIn("closed by %s" % ACTOR, out)
        self.assertIn("copies (6):", out)
        self.assertEqual(len(re.findall(r"(?m)^  #\d+ .*: matched - ", out)), 3, out)
        self.assertEqual(len(re.findall(r"(?m)^  #\d+ .*: not matched - ", out)), 3, out)
        for action in ("case_open", "case_import", "state", "case", "notify", "verify"):
            self.assertRegex(out, r"(?m)^  \S+ %s %s: " % (ACTOR, action))

        p = self.ok("case", "show", str(case_id), "--json")
        shown = json.loads(p.stdout)
        self.assertEqual((shown["id"], shown["state"], shown["account"]), (case_id, "terminated", self.spammer))
        self.assertEqual(sorted((c["file"], c["part"]) for c in shown["copies"] if c["matched"]),
                         [("complaint.eml", 1), ("complaint.eml", 2), ("plain.eml", 0)])

        p = self.ok("case", "list", "--json")
        cases = {c["id"]: c for c in json.loads(p.stdout)}
        self.assertIn(case_id, cases)
        a = cases[case_id]
        self.assertEqual((a["state"], a["account"], a["reporter"], a["opened_by"], a["copies"], a["summary"]),
                         ("terminated", self.spammer, REPORTER, ACTOR, 6, "parcel spam"))
        self.assertRegex(a["opened_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(len(cases), int(query_value(self.dsn, "SELECT count(*) FROM abuse_case")))
        p = self.ok("case", "list", "--state", "terminated", "--account", self.spammer, "--json")
        self.assertEqual([c["id"] for c in json.loads(p.stdout)], [case_id])

        out_dir = os.path.join(self.tmpdir, "evidence")
        p = self.ok("case", "export", str(case_id), "--out", out_dir)
        bundle = os.path.join(out_dir, "case-%d" % case_id)
        self.assertIn(bundle, p.stdout)
        names = sorted(os.listdir(bundle))
        self.assertEqual(names, sorted(["case.json", "SHA256SUMS"] + ["copy-%d.eml" % i for i in ids.values()]))
        for key, copy_id in ids.items():
            self.assertEqual(read(os.path.join(bundle, "copy-%d.eml" % copy_id)), self.expected_raw[key],
                             "copy-%d.eml (%s)" % (copy_id, key))
        for name in ("plain.eml", "unknown.eml", "forged.eml", "wrong-sender.eml"):
            self.assertEqual(read(os.path.join(bundle, "copy-%d.eml" % ids[(name, 0)])), read(self.files[name]),
                             "the exported copy is not the reporter's file %s" % name)
        sums = {}
        with open(os.path.join(bundle, "SHA256SUMS")) as f:
            for l in f.read().splitlines():
                m = re.match(r"^([0-9a-f]{64})  (copy-\d+\.eml)$", l)
                self.assertTrue(m, "bad SHA256SUMS line %r" % l)
                sums[m.group(2)] = m.group(1)
        self.assertEqual(sorted(sums), sorted("copy-%d.eml" % i for i in ids.values()))
        for name, digest in sums.items():
            self.assertEqual(sha256(read(os.path.join(bundle, name))), digest, name)

        with open(os.path.join(bundle, "case.json")) as f:
            cj = json.load(f)
        self.assertEqual((cj["id"], cj["state"], cj["account"], cj["reporter"], cj["closed_by"]),
                         (case_id, "terminated", self.spammer, REPORTER, ACTOR))
        self.assertEqual(cj["exported_by"], ACTOR)
        # The account's statistics are in the bundle: all of the spammer's messages, unusual.
        st = cj["statistics"]
        self.assertEqual(st["account"], self.spammer)
        self.assertEqual(st["totals"]["messages"], SPAM_MESSAGES)
        self.assertTrue(st["unusual"], st["findings"])
        copies = {(c["file"], c["part"]): c for c in cj["copies"]}
        self.assertEqual(sorted(copies), sorted(ids))
        matched = {k for k, c in copies.items() if c["matched"]}
        self.assertEqual(matched, {("plain.eml", 0), ("complaint.eml", 1), ("complaint.eml", 2)})
        for key, c in copies.items():
            self.assertEqual(c["id"], ids[key])
            self.assertEqual(c["sha256"], sha256(self.expected_raw[key]))
            self.assertTrue(c["verdict"], key)
            self.assertTrue(c["checks"], key)
            self.assertIn("Received:", c["headers"])
        self.assertEqual(copies[("plain.eml", 0)]["queue_id"], self.spam[3]["qid"])
        actions = [a["action"] for a in cj["audit"]]
        for action in ("case_open", "case_import", "state", "case", "notify", "verify"):
            self.assertIn(action, actions)
        self.assertTrue(all(a["actor"] == ACTOR for a in cj["audit"]), cj["audit"])
        # The event-log rows of the matched transactions (two: two copies are of one message),
        # each RCPT and END-OF-MESSAGE once; nothing of the copies that did not match.
        # Each RCPT and END-OF-MESSAGE of a matched transaction once; nothing of copies that did
        # not match; event_log's column names as keys.
        log = cj["event_log"]
        matched_msgs = [self.spam[3], self.spam[7]]
        for m in matched_msgs:
            with self.subTest("event_log rows of matched transaction %s" % m["qid"]):
                rows = [r for r in log if r["queue_id"] == m["qid"]]
                self.assertEqual(sorted(r["protocol_state"] for r in rows),
                                 sorted(["RCPT"] * len(m["rcpts"]) + ["END-OF-MESSAGE"]),
                                 "each row of the transaction once")
                self.assertEqual(sorted(r["recipient"] for r in rows if r["protocol_state"] == "RCPT"),
                                 sorted(m["rcpts"]))
                for r in rows:   # (the client address under either key: see the next check)
                    self.assertEqual((r["sasl_username"], r.get("client_address", r.get("host"))),
                                     (self.spammer, SPAM_CLIENT))
                    self.assertEqual(r["postfix_instance"], rows[0]["postfix_instance"])
        with self.subTest("event_log rows keyed by event_log's column names"):
            columns = set(query_value(self.dsn, "SELECT string_agg(column_name, ' ') FROM information_schema.columns"
                                                " WHERE table_name = 'event_log'").split())
            for r in log:
                self.assertEqual(set(r) - columns, set(), "keys that are not event_log columns")
                self.assertIn("client_address", r)
        with self.subTest("no event_log rows of copies that did not match"):
            self.assertEqual(sorted({r["queue_id"] for r in log}), sorted(m["qid"] for m in matched_msgs),
                             "the wrong-sender copy (%s) did not match" % self.spam[9]["qid"])

        # Exporting again: the bundle exists, so nothing is written or overwritten.
        stamp = {n: (os.stat(os.path.join(bundle, n)).st_mtime_ns,
                     read(os.path.join(bundle, n))) for n in names}
        p = self.ctl("case", "export", str(case_id), "--out", out_dir)
        self.assertRefused(p, 1, r"^abusectl case export: .*case-%d exists: nothing written$" % case_id)
        self.assertEqual(sorted(os.listdir(bundle)), names)
        for n in names:
            self.assertEqual((os.stat(os.path.join(bundle, n)).st_mtime_ns,
                              read(os.path.join(bundle, n))), stamp[n], n)
        other = os.path.join(self.tmpdir, "evidence2")
        os.makedirs(os.path.join(other, "case-%d" % case_id))
        with open(os.path.join(other, "case-%d" % case_id, "case.json"), "w") as f:
            f.write("keep me\n")
        p = self.ctl("case", "export", str(case_id), "--out", other)
        self.assertRefused(p, 1, r"exists: nothing written$")
        self.assertEqual(os.listdir(os.path.join(other, "case-%d" % case_id)), ["case.json"])
        with open(os.path.join(other, "case-%d" % case_id, "case.json")) as f:
            self.assertEqual(f.read(), "keep me\n")

    # -- 9. the audit trail --------------------------------------------------------------------

    def test_12_every_change_is_audited_and_the_audit_is_append_only(self):
        self.need("terminate", "verify")
        rows = query_rows(self.dsn, "SELECT actor, action, coalesce(login, ''), coalesce(case_id::text, ''),"
                                    " coalesce(old_value, ''), coalesce(new_value, ''), reason FROM audit ORDER BY id")
        self.assertTrue(rows)
        for r in rows:
            self.assertEqual(r[0], ACTOR, "actor of %r" % r)
            if r[1] != "webmail":
                self.assertNotEqual(r[3], "", "audit row without its case: %r" % r)
            if r[1] != "verify":   # verify changes nothing; its row records that it was run
                self.assertNotEqual(r[6], "", "audit row without a reason: %r" % r)
        have = {(r[1], r[2], r[3], r[4], r[5]) for r in rows}
        a, c, d = str(self.case_a), str(getattr(self, "case_c", "")), str(getattr(self, "case_d", ""))
        sp, o2 = self.spammer, self.ordinary[2]
        want = [("webmail", "", "", "", WEBMAIL_NET),
                ("case_open", sp, a, "", "5 copies"),
                ("state", sp, a, "active", "restricted"), ("case", sp, a, "open", "restricted"),
                ("notify", sp, a, "", "sent"),
                ("verify", sp, a, "", "3 of 6 matched"),
                ("state", sp, a, "restricted", "terminated"), ("case", sp, a, "restricted", "terminated")]
        if "restrict_c" in self.done:
            want += [("state", o2, c, "active", "restricted"), ("case", o2, c, "open", "restricted"),
                     ("notify", o2, c, "", "sent"),
                     ("state", o2, c, "restricted", "active"), ("case", o2, c, "restricted", "restored")]
        if hasattr(self, "case_d"):
            want += [("state", self.quiet, d, "active", "restricted"), ("notify", self.quiet, d, "", "failed")]
        if hasattr(self, "case_b"):
            b, o1 = str(self.case_b), self.ordinary[1]
            want += [("case_open", o1, b, "", "0 copies"),
                     ("state", o1, b, "active", "terminated"), ("case", o1, b, "open", "terminated")]
        for w in want:
            self.assertIn(w, have)
        imports = [r for r in rows if r[1] == "case_import"]
        self.assertEqual([(r[3], r[5]) for r in imports], [(a, "1 copy")])

        n = self.count("audit")
        for sql in ("UPDATE audit SET reason = 'x'", "DELETE FROM audit", "TRUNCATE audit"):
            with self.assertRaises(AssertionError) as cm:
                psql(self.dsn, sql)
            self.assertIn("append-only", str(cm.exception), sql)
        self.assertEqual(self.count("audit"), n)
        self.assertEqual(query_rows(self.dsn, "SELECT actor, action, coalesce(login, ''), coalesce(case_id::text, ''),"
                                              " coalesce(old_value, ''), coalesce(new_value, ''), reason FROM audit"
                                              " ORDER BY id"), rows)

    # -- 10. bad input ---------------------------------------------------------------------------

    def test_13_bad_input_changes_nothing(self):
        malformed = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "eml", "malformed.eml")
        missing = os.path.join(self.tmpdir, "no-such-copy.eml")
        before = self.snapshot()
        cases = self.count("abuse_case")
        p = self.ctl("case", "open", "--reporter", REPORTER, self.files["plain.eml"], missing)
        self.assertRefused(p, 1, r"^abusectl case open: .*no-such-copy\.eml.*: nothing changed$")
        self.assertEqual(p.stdout, "")
        p = self.ctl("case", "open", "--reporter", REPORTER, self.files["plain.eml"], malformed)
        self.assertRefused(p, 1, r"^abusectl case open: .*malformed\.eml.*: nothing changed$")
        if hasattr(self, "case_a"):
            p = self.ctl("case", "import", str(self.case_a), malformed)
            self.assertRefused(p, 1, r"^abusectl case import: .*malformed\.eml")
        self.assertEqual(self.count("abuse_case"), cases, "a case was created")
        self.assertEqual(self.snapshot(), before)

        unknown = str(int(query_value(self.dsn, "SELECT coalesce(max(id), 0) FROM abuse_case")) + 1000)
        for args, name in [(["case", "show", unknown], "case show"), (["case", "export", unknown, "--out",
                                                                       os.path.join(self.tmpdir, "x")], "case export"),
                           (["case", "import", unknown, self.files["plain.eml"]], "case import"),
                           (["verify", unknown], "verify"),
                           (["restrict", self.ordinary[0], "--case", unknown, "--no-notify"], "restrict"),
                           (["terminate", self.ordinary[0], "--case", unknown, "--yes"], "terminate"),
                           (["restore", self.ordinary[0], "--case", unknown], "restore")]:
            p = self.ctl(*args)
            self.assertRefused(p, 1, r"^abusectl %s: no case %s" % (name, unknown))
        self.assertFalse(os.path.exists(os.path.join(self.tmpdir, "x")))
        self.assertEqual(self.snapshot(), before)

        down = "host=%s/no-server dbname=lupine" % self.tmpdir
        for args, name in [(["case", "list"], "case list"),
                           (["case", "open", "--reporter", REPORTER, self.files["plain.eml"]], "case open"),
                           (["case", "show", "1"], "case show"), (["verify", "1"], "verify"),
                           (["restrict", self.ordinary[0], "--case", "1", "--no-notify"], "restrict"),
                           (["terminate", self.ordinary[0], "--case", "1", "--yes"], "terminate")]:
            p = self.ctl("-d", down, *args)
            self.assertRefused(p, 1, r"^abusectl %s: cannot connect to the database" % name)

        for verb in ("restrict", "terminate", "restore"):
            p = self.ctl(verb, self.ordinary[0])
            self.assertRefused(p, 2, r"^abusectl %s: --case N is required" % verb)
            p = self.ctl(verb, self.ordinary[0], "--case", "x1")
            self.assertRefused(p, 2, r"^abusectl %s: bad --case" % verb)
        p = self.ctl("case", "open", self.files["plain.eml"])
        self.assertRefused(p, 2, r"^abusectl case open: --reporter is required")
        self.assertEqual(self.snapshot(), before)


if __name__ == "__main__":
    unittest.main()
