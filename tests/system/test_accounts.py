"""Accounts, outbound limits and inbound flood control, through the policy protocol against a
real PostgreSQL: account states (webmail-only, terminated) and how fast a change reaches
running instances, the Dovecot view, per-account sending limits (each measure at its
threshold, refused messages not counted, rolling windows, live overrides, review flags,
automatic restriction, exactness across instances), flood control (rate, sessions,
exemptions) and the greylist early-retry penalty.

Windows are rolled with testing.clock_offset (a restart), never by waiting."""

import os
import re
import threading
import time
import unittest
from datetime import date, datetime, timedelta, timezone

from harness import (SystemTestCase, EX_CONFIG, run_policyd, free_port, new_instance, unique_word, psql,
                     query_rows, query_value, sql_quote, sleep_until)

RESTRICTED = ("550 5.7.1 Account restricted to webmail: sending from mail programs is disabled, "
              "webmail still works")
TERMINATED = "550 5.7.1 Account closed"

WEBMAIL_NET = "192.0.2.0/24"
WEBMAIL_HOST = "192.0.2.25"        # a webmail host, inside WEBMAIL_NET
SUBMIT_CLIENT = "198.51.100.20"    # a mail program somewhere on the Internet
PROPAGATION = 2.0                  # seconds a state / network / override change may take

# Every limit measure set explicitly (the defaults would apply otherwise); tests override some.
NO_LIMITS = {
    "limits.messages": "none",
    "limits.recipients": "none",
    "limits.bytes": "none",
    "limits.distinct_recipients": "none",
    "limits.distinct_domains": "none",
}
QUIET = {"greylist.enable": "no", "flood.enable": "no", "rdns.enable": "no"}

LIMIT_RX = (r"^452 4\.7\.1 Sending limit reached: %s; "
            r"retry after (?:(\d{4}-\d\d-\d\d) )?(\d\d):(\d\d) UTC$")


def new_login():
    """A unique SASL login (letters only: see unique_word)."""
    return "%s@%s.example" % (unique_word(), unique_word(6))


def new_address(domain=None):
    return "%s@%s" % (unique_word(), domain or "%s.example" % unique_word(6))


def limit_settings(**limits):
    """QUIET, every measure unlimited, then limits.KEY = value for each keyword."""
    s = dict(QUIET)
    s.update(NO_LIMITS)
    for key, value in limits.items():
        s["limits." + key] = value
    return s


# ---------------------------------------------------------------------------------------
# Authenticated submission as Postfix sends it
# ---------------------------------------------------------------------------------------

def submit_attrs(login, client):
    return dict(sasl_method="PLAIN", sasl_username=login, sender=login, client_address=client)


def rcpt(c, login, recipient, instance, client=SUBMIT_CLIENT, size=0):
    """The RCPT request of one recipient (size: what MAIL FROM announced, 0 if nothing)."""
    return c.request(protocol_state="RCPT", recipient=recipient, instance=instance, size=str(size),
                     recipient_count="0", **submit_attrs(login, client))


def eom(c, login, instance, recipients, size, client=SUBMIT_CLIENT):
    """END-OF-MESSAGE for the accepted recipients (Postfix leaves `recipient` empty when
    there are several)."""
    return c.request(protocol_state="END-OF-MESSAGE", recipient=recipients[0] if len(recipients) == 1 else "",
                     instance=instance, size=str(size), recipient_count=str(len(recipients)),
                     **submit_attrs(login, client))


def send_message(c, login, recipients, size=1000, client=SUBMIT_CLIENT):
    """One transaction: RCPT per recipient, then END-OF-MESSAGE with the accepted ones (when
    none was accepted Postfix never reaches END-OF-MESSAGE). Returns (RCPT replies, EOM
    reply or None)."""
    inst = new_instance()
    replies = [rcpt(c, login, r, inst, client) for r in recipients]
    accepted = [r for r, a in zip(recipients, replies) if a == "DUNNO"]
    end = eom(c, login, inst, accepted, size, client) if accepted else None
    return replies, end


def sent_ok():
    return (["DUNNO"], "DUNNO")


def volume(dsn, login):
    """(messages, recipients, bytes) counted for login."""
    row = query_rows(dsn, "SELECT coalesce(sum(messages), 0), coalesce(sum(recipients), 0), "
                          "coalesce(sum(bytes), 0) FROM send_volume WHERE login = %s" % sql_quote(login))[0]
    return tuple(int(x) for x in row)


def set_state(dsn, login, state, reason="systest"):
    return query_value(dsn, "SELECT lupine_set_account_state(%s, %s, 'tester', %s)"
                       % (sql_quote(login), sql_quote(state), sql_quote(reason)))


def poll(ask, want, timeout=PROPAGATION, interval=0.02):
    """Asks until want(reply) holds; returns (elapsed seconds, reply), or (None, last reply)
    after timeout."""
    t0 = time.monotonic()
    while True:
        reply = ask()
        if want(reply):
            return time.monotonic() - t0, reply
        if time.monotonic() - t0 > timeout:
            return None, reply
        time.sleep(interval)


class AccountsTestCase(SystemTestCase):

    def assertLimitReply(self, action, what, frees_in=3600, offset=0, slack=90):
        """action is the defer reply for limit `what` ("3 messages per 1h"), and its "retry
        after" time is about frees_in seconds after policyd's clock (now + offset seconds)."""
        m = re.match(LIMIT_RX % re.escape(what), action)
        self.assertTrue(m, "expected a 452 reply for %r, got %r" % (what, action))
        policyd_now = datetime.now(timezone.utc) + timedelta(seconds=offset)
        if m.group(1):
            day = date.fromisoformat(m.group(1))
            self.assertNotEqual(day, policyd_now.date(), "a date is shown only when it is not today: %r" % action)
        else:
            day = policyd_now.date()
        at = datetime(day.year, day.month, day.day, int(m.group(2)), int(m.group(3)), tzinfo=timezone.utc)
        expected = policyd_now + timedelta(seconds=frees_in)
        self.assertLessEqual(abs((at - expected).total_seconds()), slack,
                             "retry time %s in %r is not about %s" % (at, action, expected))

    def limits_policyd(self, name="limits", offset=None, **limits):
        return self.policyd(limit_settings(**limits), name=name,
                            extra_opts=["testing.clock_offset=%s" % offset] if offset else None)


# ---------------------------------------------------------------------------------------
# Account states
# ---------------------------------------------------------------------------------------

class AccountStateTest(AccountsTestCase):
    """One instance; the webmail network WEBMAIL_NET exists from the start."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = dict(QUIET)
        s["limits.enable"] = "no"
        cls.d = cls.class_policyd(s, name="acct")
        psql(cls.dsn, "INSERT INTO webmail_network (net, comment) VALUES ('%s', 'webmail')" % WEBMAIL_NET)
        cls.d.restart()
        cls.d.wait_for_log(r"accounts_loaded not_active=0 webmail_networks=1")

    def setUp(self):
        super().setUp()
        self.c = self.track(self.d.client())

    def ask(self, login, client, **kw):
        attrs = submit_attrs(login, client)
        attrs.update(kw)
        attrs.setdefault("recipient", new_address())
        return self.c.request(**attrs)

    def wait_refused(self, login, expected):
        took, reply = poll(lambda: self.ask(login, SUBMIT_CLIENT), lambda a: a != "DUNNO")
        self.assertIsNotNone(took, "state change not seen within %.0fs (last reply %r)" % (PROPAGATION, reply))
        self.assertEqual(reply, expected)

    def test_unknown_and_active_accounts_pass(self):
        login = new_login()
        for client in (SUBMIT_CLIENT, WEBMAIL_HOST, "2001:db8:77::5"):
            self.assertEqual(self.ask(login, client), "DUNNO", client)
        self.assertEqual(set_state(self.dsn, login, "active"), "active")
        time.sleep(0.3)  # nothing to wait for: the state is already active
        for client in (SUBMIT_CLIENT, WEBMAIL_HOST):
            self.assertEqual(self.ask(login, client), "DUNNO", client)
            self.assertEqual(self.ask(login, client, protocol_state="END-OF-MESSAGE", recipient=""), "DUNNO")

    def test_restricted_account_may_send_from_webmail_only(self):
        login = new_login()
        self.assertEqual(set_state(self.dsn, login, "restricted"), "active")
        self.wait_refused(login, RESTRICTED)
        self.assertRegex(self.ask(login, SUBMIT_CLIENT), r"^550 5\.7\.1 .*webmail")  # permanent, says why
        for client in ("203.0.113.9", "192.0.3.1", "2001:db8::1"):
            self.assertEqual(self.ask(login, client), RESTRICTED, client)
        for client in (WEBMAIL_HOST, "192.0.2.1", "192.0.2.254"):
            self.assertEqual(self.ask(login, client), "DUNNO", client)
        # Not authenticated: not this check's business, even with the same envelope sender.
        self.assertEqual(self.c.request(sender=login, client_address=SUBMIT_CLIENT, recipient=new_address()),
                         "DUNNO")

    def test_terminated_account_refused_everywhere(self):
        login = new_login()
        set_state(self.dsn, login, "terminated")
        self.wait_refused(login, TERMINATED)
        for client in (WEBMAIL_HOST, "192.0.2.1", SUBMIT_CLIENT, "2001:db8::1"):
            self.assertEqual(self.ask(login, client), TERMINATED, client)

    def test_login_matching_is_case_insensitive(self):
        user, domain = unique_word(), unique_word(6)
        set_state(self.dsn, "%s@%s.org" % (user, domain), "restricted")
        # Set with a mixed-case login: stored lower-cased.
        other = unique_word()
        set_state(self.dsn, "%s@%s.ORG" % (other.upper(), domain.capitalize()), "terminated")
        self.assertEqual(query_value(self.dsn, "SELECT state FROM account WHERE login = %s"
                                     % sql_quote("%s@%s.org" % (other, domain))), "terminated")
        mixed = "%s@%s.ORG" % (user.capitalize(), domain.capitalize())
        _, reply = poll(lambda: self.ask(mixed, SUBMIT_CLIENT), lambda a: a != "DUNNO")
        self.assertEqual(reply, RESTRICTED)
        self.assertEqual(self.ask(mixed, WEBMAIL_HOST), "DUNNO")
        upper = "%s@%s.org" % (other.upper(), domain.upper())
        _, reply = poll(lambda: self.ask(upper, WEBMAIL_HOST), lambda a: a != "DUNNO")
        self.assertEqual(reply, TERMINATED)

    def test_deleting_the_account_row_makes_it_active(self):
        login = new_login()
        set_state(self.dsn, login, "terminated")
        self.wait_refused(login, TERMINATED)
        psql(self.dsn, "DELETE FROM account WHERE login = %s" % sql_quote(login))
        took, reply = poll(lambda: self.ask(login, SUBMIT_CLIENT), lambda a: a == "DUNNO")
        self.assertIsNotNone(took, "deletion not seen within %.0fs (last reply %r)" % (PROPAGATION, reply))

    # Bug (open): the account table's notify trigger is FOR EACH ROW (INSERT, UPDATE, DELETE)
    # with no statement-level TRUNCATE trigger, unlike webmail_network and send_limit, so
    # TRUNCATE account sends no NOTIFY and policyd keeps refusing the accounts until its next
    # full reload (accounts.refresh_interval, 5 min by default). sql/003 promises "every
    # change to those tables sends NOTIFY lupine_directory".
    def test_truncating_the_account_table_reaches_policyd(self):
        login = new_login()
        set_state(self.dsn, login, "restricted")
        self.wait_refused(login, RESTRICTED)
        psql(self.dsn, "TRUNCATE account")
        took, reply = poll(lambda: self.ask(login, SUBMIT_CLIENT), lambda a: a == "DUNNO")
        self.assertIsNotNone(took, "TRUNCATE account not seen within %.0fs (last reply %r)" % (PROPAGATION, reply))


class LiveChangesTest(AccountsTestCase):
    """Two instances on one database: changes reach both, without a restart."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = dict(QUIET)
        s["limits.enable"] = "no"
        cls.a = cls.class_policyd(s, name="live-a")
        cls.b = cls.class_policyd(s, name="live-b")

    def setUp(self):
        super().setUp()
        self.ca = self.track(self.a.client())
        self.cb = self.track(self.b.client())

    def both(self, login, client, want, what, timeout=PROPAGATION):
        """Polls both instances (one request each per round) until want(reply) holds for each;
        each must get there within timeout seconds of now. Returns {name: seconds}."""
        t0 = time.monotonic()
        took, last = {}, {}
        conns = {"live-a": self.ca, "live-b": self.cb}
        while True:
            for name, c in conns.items():
                if name in took:
                    continue
                last[name] = c.request(recipient=new_address(), **submit_attrs(login, client))
                if want(last[name]):
                    took[name] = time.monotonic() - t0
            if len(took) == len(conns):
                return took
            if time.monotonic() - t0 > timeout:
                self.fail("%s: not seen by every instance within %.0fs: seen %r, last replies %r"
                          % (what, timeout, took, last))
            time.sleep(0.02)

    def test_state_change_reaches_both_instances_within_2s(self):
        login = new_login()
        self.assertEqual(self.ca.request(**submit_attrs(login, SUBMIT_CLIENT)), "DUNNO")
        self.assertEqual(self.cb.request(**submit_attrs(login, SUBMIT_CLIENT)), "DUNNO")
        set_state(self.dsn, login, "restricted")
        self.both(login, SUBMIT_CLIENT, lambda a: a == RESTRICTED, "restricted")
        set_state(self.dsn, login, "terminated")
        self.both(login, WEBMAIL_HOST, lambda a: a == TERMINATED, "terminated")
        set_state(self.dsn, login, "active")
        self.both(login, SUBMIT_CLIENT, lambda a: a == "DUNNO", "active again")
        # Stays accepted (no late reload flips it back).
        time.sleep(0.3)
        self.assertEqual(self.ca.request(**submit_attrs(login, SUBMIT_CLIENT)), "DUNNO")
        self.assertEqual(self.cb.request(**submit_attrs(login, SUBMIT_CLIENT)), "DUNNO")

    def test_webmail_network_change_reaches_both_instances_within_2s(self):
        login = new_login()
        net, host = "203.0.113.0/24", "203.0.113.77"
        set_state(self.dsn, login, "restricted")
        self.both(login, host, lambda a: a == RESTRICTED, "restricted")
        psql(self.dsn, "INSERT INTO webmail_network (net) VALUES ('%s')" % net)
        try:
            self.both(login, host, lambda a: a == "DUNNO", "webmail network added")
            self.assertEqual(self.ca.request(**submit_attrs(login, SUBMIT_CLIENT)), RESTRICTED)
        finally:
            psql(self.dsn, "DELETE FROM webmail_network WHERE net = '%s'" % net)
        self.both(login, host, lambda a: a == RESTRICTED, "webmail network removed")

    def test_change_while_the_listen_connection_is_down_is_not_missed(self):
        login = new_login()
        for d in (self.a, self.b):  # "ready" comes a moment before the LISTEN connection is up
            d.wait_for_log(r"directory_listening", timeout=5)
        before = {d: d.count_log(r"directory_listening") for d in (self.a, self.b)}
        pids = query_rows(self.dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                    "datname = current_database() AND application_name = 'lupine-policyd-directory'")
        self.assertEqual(pids, [["t"], ["t"]])
        set_state(self.dsn, login, "terminated")  # most likely before either has reconnected
        # Reconnected within about a second, then everything reloaded.
        self.both(login, SUBMIT_CLIENT, lambda a: a == TERMINATED, "terminated", timeout=3.0)
        for d, n in before.items():
            d.wait_for_log(r"directory_listening", count=n + 1, timeout=2)


# ---------------------------------------------------------------------------------------
# The Dovecot view
# ---------------------------------------------------------------------------------------

# The queries of the brief (docs/accounts.md draft), with %u and %{rip} filled in as Dovecot does.
DOVECOT_ALLOW_NETS = "SELECT allow_nets FROM dovecot_account WHERE username = lower('%u')"
DOVECOT_DENY = ("SELECT username AS user FROM dovecot_account WHERE username = lower('%u') "
                "AND (deny OR NOT ('%{rip}'::inet <<= ANY (nets)))")
# The deny passdb and the extra-field query exactly as docs/accounts.md shows them (read from
# the file, so the documentation cannot drift from what is tested).
def _docs_queries():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "accounts.md")
    with open(path) as f:
        lines = [ln.strip() for ln in f if ln.strip().startswith("password_query = ")]
    queries = [ln[len("password_query = "):] for ln in lines]
    deny = [q for q in queries if "FROM dovecot_account" in q and "nopassword" in q]
    users = [q for q in queries if "FROM users u" in q]
    assert len(deny) == 1 and len(users) == 1, "docs/accounts.md: expected one deny and one users query"
    return deny[0], users[0]


DOCS_DENY, DOCS_USERS = _docs_queries()


def dovecot_sql(query, user, rip=""):
    return query.replace("%{rip}", rip.replace("'", "''")).replace("%u", user.replace("'", "''"))


class DovecotViewTest(AccountsTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = dict(QUIET)
        s["limits.enable"] = "no"
        cls.d = cls.class_policyd(s, name="dovecot")  # applies the migrations
        psql(cls.dsn, "CREATE TABLE users (username text PRIMARY KEY, password text NOT NULL)")

    def setUp(self):
        super().setUp()
        psql(self.dsn, "DELETE FROM webmail_network")

    def allow_nets(self, user):
        """[] (no row), [None] (NULL) or [text]."""
        rows = query_rows(self.dsn, "SELECT q.allow_nets IS NULL, coalesce(q.allow_nets, '') FROM (%s) AS q"
                          % dovecot_sql(DOVECOT_ALLOW_NETS, user))
        return [None if isnull == "t" else text for isnull, text in rows]

    def denied(self, user, rip, query=DOVECOT_DENY):
        return self.denials([(user, rip, query)])[0]

    def denials(self, cases):
        """For each (user, rip, query): does the deny query return a row? One psql run; the
        query runs verbatim as a subquery and must return the lower-cased login, once."""
        parts = ["SELECT %d, (SELECT count(*) FROM (%s) AS q), (SELECT min(q.\"user\") FROM (%s) AS q)"
                 % (i, dovecot_sql(query, user, rip), dovecot_sql(query, user, rip))
                 for i, (user, rip, query) in enumerate(cases)]
        rows = query_rows(self.dsn, " UNION ALL ".join(parts) + " ORDER BY 1")
        self.assertEqual(len(rows), len(cases))
        out = []
        for (user, rip, query), (_, count, who) in zip(cases, rows):
            self.assertIn(count, ("0", "1"), (user, rip, query))
            if count == "1":
                self.assertEqual(who, user.lower(), (user, rip, query))
            out.append(count == "1")
        return out

    def accounts(self):
        w = unique_word(6)
        logins = {s: "%s.%s@example.org" % (s, w) for s in ("restricted", "terminated", "active", "unknown")}
        for state in ("restricted", "terminated", "active"):
            set_state(self.dsn, logins[state], state)
        return logins

    def test_allow_nets_and_deny_queries(self):
        psql(self.dsn, "INSERT INTO webmail_network (net) VALUES ('2001:db8:1::/48'), ('%s')" % WEBMAIL_NET)
        acc = self.accounts()
        r, t = acc["restricted"], acc["terminated"]
        # %u as the user typed it.
        self.assertEqual(self.allow_nets(r.upper()), ["192.0.2.0/24,2001:db8:1::/48"])
        self.assertEqual(self.allow_nets(r), ["192.0.2.0/24,2001:db8:1::/48"])
        self.assertEqual(self.allow_nets(t), [None])
        self.assertEqual(self.allow_nets(acc["active"]), [])
        self.assertEqual(self.allow_nets(acc["unknown"]), [])
        inside = ("192.0.2.5", "192.0.2.255", "2001:db8:1::5", "2001:db8:1:ffff::1")
        outside = ("198.51.100.7", "192.0.3.1", "2001:db8:2::5", "::1")
        cases = []  # (user, rip, query, denied?)
        for query in (DOVECOT_DENY, DOCS_DENY):
            for rip in inside + outside:
                cases += [(t, rip, query, True), (t.upper(), rip, query, True),
                          (acc["active"], rip, query, False), (acc["unknown"], rip, query, False),
                          (r, rip, query, rip in outside), (r.upper(), rip, query, rip in outside)]
        got = self.denials([c[:3] for c in cases])
        wrong = [(c, g) for c, g in zip(cases, got) if g != c[3]]
        self.assertEqual(wrong, [])
        # The docs' query: a login over a local socket (no %{rip}) is denied only if terminated.
        self.assertFalse(self.denied(r, "", DOCS_DENY))
        self.assertTrue(self.denied(t, "", DOCS_DENY))
        # policyd agrees with Dovecot on the same rows.
        with self.d.client() as c:
            took, reply = poll(lambda: c.request(**submit_attrs(r, "2001:db8:1::5")), lambda a: a == "DUNNO")
            self.assertIsNotNone(took, reply)
            self.assertEqual(c.request(**submit_attrs(r, "2001:db8:2::5")), RESTRICTED)

    def test_users_table_query_with_allow_nets(self):
        psql(self.dsn, "INSERT INTO webmail_network (net) VALUES ('%s')" % WEBMAIL_NET)
        acc = self.accounts()
        for login in acc.values():
            psql(self.dsn, "INSERT INTO users VALUES (%s, 'secret')" % sql_quote(login))

        def rows(user):
            return query_rows(self.dsn, "SELECT q.user, q.password, q.allow_nets IS NULL, coalesce(q.allow_nets, '')"
                                        " FROM (%s) AS q" % dovecot_sql(DOCS_USERS, user))
        self.assertEqual(rows(acc["restricted"]), [[acc["restricted"], "secret", "f", WEBMAIL_NET]])
        self.assertEqual(rows(acc["terminated"]), [])
        self.assertEqual(rows(acc["active"]), [[acc["active"], "secret", "t", ""]])
        self.assertEqual(rows(acc["unknown"]), [[acc["unknown"], "secret", "t", ""]])

    def test_restricted_without_webmail_networks_gets_empty_allow_nets(self):
        acc = self.accounts()
        self.assertEqual(self.allow_nets(acc["restricted"]), [""])  # '' lets no address in; not NULL
        self.assertEqual(self.allow_nets(acc["terminated"]), [None])
        for rip in ("192.0.2.5", "198.51.100.7", "2001:db8:1::5"):
            self.assertTrue(self.denied(acc["restricted"], rip), rip)
            self.assertTrue(self.denied(acc["restricted"], rip, DOCS_DENY), rip)
        self.assertFalse(self.denied(acc["active"], "192.0.2.5"))


# ---------------------------------------------------------------------------------------
# Outbound limits
# ---------------------------------------------------------------------------------------

class LimitsTest(AccountsTestCase):

    def test_messages_limit_trips_at_threshold(self):
        d = self.limits_policyd(messages="3/1h")
        login = new_login()
        with d.client() as c:
            for i in range(3):
                self.assertEqual(send_message(c, login, [new_address()]), sent_ok(), "message %d" % (i + 1))
            # The 4th message is refused at its first RCPT already, and every later RCPT too.
            replies, end = send_message(c, login, [new_address(), new_address()])
            self.assertIsNone(end)
            for a in replies:
                self.assertLimitReply(a, "3 messages per 1h")
        self.assertEqual(volume(self.dsn, login), (3, 3, 3000))

    def test_absurd_counts_are_clamped_not_wrapped(self):
        # A hostile or broken client: sizes and counts past 64 bits or past int32. The
        # daemon answers, counts sane clamped values and stays up.
        d = self.limits_policyd(messages="100/1h", recipients="none", bytes="none")
        login = new_login()
        with d.client() as c:
            inst, r = new_instance(), new_address()
            self.assertEqual(rcpt(c, login, r, inst, size=10 ** 30), "DUNNO")
            end = c.request(protocol_state="END-OF-MESSAGE", recipient=r, instance=inst, size=str(2 ** 64 - 1),
                            recipient_count=str(2 ** 40), **submit_attrs(login, SUBMIT_CLIENT))
            self.assertEqual(end, "DUNNO")
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
        self.assertEqual(volume(self.dsn, login), (2, 1000000 + 1, 2 ** 50 + 1000))
        self.assertTrue(d.running())

    def test_retry_time_is_dated_when_not_today(self):
        d = self.limits_policyd(messages="1/24h")
        login = new_login()
        with d.client() as c:
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            replies, _ = send_message(c, login, [new_address()])
        self.assertRegex(replies[0], r"; retry after \d{4}-\d\d-\d\d \d\d:\d\d UTC$")
        self.assertLimitReply(replies[0], "1 message per 24h", frees_in=86400)

    def test_recipients_limit_sums_recipient_counts(self):
        d = self.limits_policyd(recipients="5/1h")
        login = new_login()
        with d.client() as c:
            self.assertEqual(send_message(c, login, [new_address(), new_address()]), (["DUNNO"] * 2, "DUNNO"))
            self.assertEqual(send_message(c, login, [new_address(), new_address()]), (["DUNNO"] * 2, "DUNNO"))
            # 4 counted: the third message's first recipient fits (5), its second would be 6.
            replies, end = send_message(c, login, [new_address(), new_address()])
            self.assertEqual(replies[0], "DUNNO")
            self.assertLimitReply(replies[1], "5 recipients per 1h")
            self.assertEqual(end, "DUNNO")  # sent to the one accepted recipient
            self.assertEqual(volume(self.dsn, login), (3, 5, 3000))
            replies, end = send_message(c, login, [new_address()])
            self.assertLimitReply(replies[0], "5 recipients per 1h")
            self.assertIsNone(end)
        self.assertEqual(volume(self.dsn, login), (3, 5, 3000))

    def test_distinct_recipients_limit(self):
        d = self.limits_policyd(distinct_recipients="3/1h")
        login = new_login()
        a, b, cc, x = (new_address() for _ in range(4))
        with d.client() as c:
            self.assertEqual(send_message(c, login, [a]), sent_ok())
            # The same address again (any case) is not a new one.
            self.assertEqual(send_message(c, login, [a]), sent_ok())
            self.assertEqual(send_message(c, login, [a.upper()]), sent_ok())
            self.assertEqual(send_message(c, login, [b, cc]), (["DUNNO"] * 2, "DUNNO"))
            # Three distinct: a 4th new address is refused at RCPT, known ones still go.
            replies, end = send_message(c, login, [a, x, b])
            self.assertEqual(replies[0], "DUNNO")
            self.assertLimitReply(replies[1], "3 distinct recipients per 1h")
            self.assertEqual(replies[2], "DUNNO")
            self.assertEqual(end, "DUNNO")
            self.assertEqual(send_message(c, login, [cc.upper()]), sent_ok())
            replies, _ = send_message(c, login, [new_address(domain=b.split("@")[1])])
            self.assertLimitReply(replies[0], "3 distinct recipients per 1h")
        self.assertEqual(query_value(self.dsn, "SELECT string_agg(recipient, ',' ORDER BY recipient) "
                                               "FROM send_recipient WHERE login = %s" % sql_quote(login)),
                         ",".join(sorted([a, b, cc])))

    def test_distinct_recipients_within_one_transaction(self):
        d = self.limits_policyd(distinct_recipients="2/1h")
        login = new_login()
        with d.client() as c:
            # Three new addresses in one message: the third is the one over the limit.
            replies, end = send_message(c, login, [new_address(), new_address(), new_address()])
            self.assertEqual(replies[:2], ["DUNNO", "DUNNO"])
            # This transaction could never hold it (3 new addresses > 2): nothing to wait for.
            self.assertEqual(replies[2], "452 4.7.1 Sending limit reached: 2 distinct recipients per 1h; retry later")
            self.assertEqual(end, "DUNNO")
            # Once those two are counted a new address waits for the older one to leave the window.
            self.assertLimitReply(send_message(c, login, [new_address()])[0][0], "2 distinct recipients per 1h")
        self.assertEqual(query_value(self.dsn, "SELECT count(*) FROM send_recipient WHERE login = %s"
                                     % sql_quote(login)), "2")

    def test_distinct_domains_limit(self):
        d = self.limits_policyd(distinct_domains="2/1h")
        login = new_login()
        d1, d2, d3 = ("%s.example" % unique_word(6) for _ in range(3))
        with d.client() as c:
            self.assertEqual(send_message(c, login, [new_address(d1)]), sent_ok())
            self.assertEqual(send_message(c, login, [new_address(d2), new_address(d2)]), (["DUNNO"] * 2, "DUNNO"))
            replies, end = send_message(c, login, [new_address(d3), new_address(d1), new_address(d2.upper())])
            self.assertLimitReply(replies[0], "2 recipient domains per 1h")
            self.assertEqual(replies[1:], ["DUNNO", "DUNNO"])  # new addresses in known domains
            self.assertEqual(end, "DUNNO")
            replies, end = send_message(c, login, [new_address(d3)])
            self.assertLimitReply(replies[0], "2 recipient domains per 1h")
        self.assertEqual(query_value(self.dsn, "SELECT string_agg(domain, ',' ORDER BY domain) FROM send_domain "
                                               "WHERE login = %s" % sql_quote(login)), ",".join(sorted([d1, d2])))

    def test_bytes_limit(self):
        d = self.limits_policyd(bytes="10K/1h")
        login = new_login()
        with d.client() as c:
            self.assertEqual(send_message(c, login, [new_address()], size=4000), sent_ok())
            self.assertEqual(send_message(c, login, [new_address()], size=4000), sent_ok())
            # 8000 used: a message of 4000 passes RCPT (size unknown there) but not END-OF-MESSAGE.
            replies, end = send_message(c, login, [new_address()], size=4000)
            self.assertEqual(replies, ["DUNNO"])
            self.assertLimitReply(end, "10240 bytes per 1h")
            self.assertEqual(volume(self.dsn, login), (2, 2, 8000))
            # A SIZE announced at MAIL FROM that cannot fit is refused at RCPT already.
            self.assertLimitReply(rcpt(c, login, new_address(), new_instance(), size=3000), "10240 bytes per 1h")
            # Exactly up to the limit is fine.
            self.assertEqual(send_message(c, login, [new_address()], size=2240), sent_ok())
            self.assertEqual(volume(self.dsn, login), (3, 3, 10240))
            # Nothing left, not even for a message of unknown size.
            self.assertLimitReply(rcpt(c, login, new_address(), new_instance()), "10240 bytes per 1h")

    def test_reply_names_the_limit_that_frees_last(self):
        d = self.limits_policyd(messages="2/10m 2/1h", bytes="3000/1h")
        login = new_login()
        with d.client() as c:
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            # Both message windows are full: the hour frees last.
            self.assertLimitReply(rcpt(c, login, new_address(), new_instance()), "2 messages per 1h")
            # A SIZE that can never fit (over the bytes limit itself) is named before any window,
            # and refused for good: retrying cannot help.
            self.assertEqual(rcpt(c, login, new_address(), new_instance(), size=5000),
                             "552 5.3.4 Message too big for the sending limit: 3000 bytes per 1h")

    def test_hold_and_reject_actions(self):
        login = new_login()
        d = self.limits_policyd(name="hold", messages="1/1h", action="hold")
        with d.client() as c:
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            inst, r = new_instance(), new_address()
            held = "HOLD Sending limit reached: 1 message per 1h; held for review"
            self.assertEqual(rcpt(c, login, r, inst), held)
            # Postfix accepts a held message; it reaches END-OF-MESSAGE and is not counted.
            self.assertEqual(eom(c, login, inst, [r], 1000), held)
        self.assertEqual(volume(self.dsn, login), (1, 1, 1000))
        self.assertEqual(d.stop(), 0)
        d = self.limits_policyd(name="reject", messages="1/1h", action="reject")
        with d.client() as c:
            self.assertEqual(send_message(c, login, [new_address()]),
                             (["550 5.7.1 Sending limit reached: 1 message per 1h"], None))
        self.assertEqual(volume(self.dsn, login), (1, 1, 1000))

    def test_refused_messages_are_not_counted(self):
        d = self.limits_policyd(messages="3/1h", bytes="5000/1h")
        login = new_login()
        known = new_address()
        with d.client() as c:
            self.assertEqual(send_message(c, login, [known], size=1000), sent_ok())
            before = (volume(self.dsn, login),
                      query_rows(self.dsn, "SELECT recipient, last_seen FROM send_recipient WHERE login = %s"
                                 % sql_quote(login)),
                      query_rows(self.dsn, "SELECT domain, last_seen FROM send_domain WHERE login = %s"
                                 % sql_quote(login)))
            self.assertEqual(before[0], (1, 1, 1000))
            # Refused at END-OF-MESSAGE: no message, recipient, byte or address counted. Too big
            # for what is left of the window, then too big for the limit itself (never fits).
            fresh = new_address()
            replies, end = send_message(c, login, [fresh, known], size=4500)
            self.assertEqual(replies, ["DUNNO", "DUNNO"])
            self.assertLimitReply(end, "5000 bytes per 1h")
            replies, end = send_message(c, login, [fresh, known], size=6000)
            self.assertEqual(replies, ["DUNNO", "DUNNO"])
            self.assertEqual(end, "552 5.3.4 Message too big for the sending limit: 5000 bytes per 1h")
            after = (volume(self.dsn, login),
                     query_rows(self.dsn, "SELECT recipient, last_seen FROM send_recipient WHERE login = %s"
                                % sql_quote(login)),
                     query_rows(self.dsn, "SELECT domain, last_seen FROM send_domain WHERE login = %s"
                                % sql_quote(login)))
            self.assertEqual(after, before)
            # The refused message did not use up the messages limit: two more fit.
            self.assertEqual(send_message(c, login, [new_address()], size=100), sent_ok())
            self.assertEqual(send_message(c, login, [new_address()], size=100), sent_ok())
            self.assertEqual(volume(self.dsn, login), (3, 3, 1200))
            # Refused at RCPT: nothing counted either.
            replies, end = send_message(c, login, [new_address()])
            self.assertLimitReply(replies[0], "3 messages per 1h")
            self.assertIsNone(end)
        self.assertEqual(volume(self.dsn, login), (3, 3, 1200))
        self.assertEqual(query_value(self.dsn, "SELECT count(*) FROM send_recipient WHERE login = %s AND recipient = %s"
                                     % (sql_quote(login), sql_quote(fresh))), "0")

    def test_window_rolls_with_the_clock(self):
        login = new_login()
        d = self.limits_policyd(name="roll0", messages="2/1h")
        with d.client() as c:
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            self.assertLimitReply(send_message(c, login, [new_address()])[0][0], "2 messages per 1h")
        self.assertEqual(d.stop(), 0)
        # 30 minutes later: the messages are still within the hour; it frees 30 minutes on.
        d30 = self.limits_policyd(name="roll30", offset="30m", messages="2/1h")
        with d30.client() as c:
            self.assertLimitReply(send_message(c, login, [new_address()])[0][0], "2 messages per 1h",
                                  frees_in=1800, offset=1800)
        self.assertEqual(d30.stop(), 0)
        # 61 minutes later: the window has rolled past them.
        d61 = self.limits_policyd(name="roll61", offset="61m", messages="2/1h")
        with d61.client() as c:
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            self.assertLimitReply(send_message(c, login, [new_address()])[0][0], "2 messages per 1h",
                                  offset=61 * 60)
        self.assertEqual(volume(self.dsn, login), (4, 4, 4000))


class OverridesTest(AccountsTestCase):
    """send_limit rows, read live (NOTIFY), default messages limit 3/1h."""

    def setUp(self):
        super().setUp()
        self.d = self.limits_policyd(name="over", messages="3/1h")
        self.c = self.track(self.d.client())

    def send_n(self, login, n):
        for i in range(n):
            self.assertEqual(send_message(self.c, login, [new_address()]), sent_ok(), "%s message %d" % (login, i + 1))

    def refused(self, login, what):
        replies, end = send_message(self.c, login, [new_address()])
        self.assertIsNone(end)
        self.assertLimitReply(replies[0], what)

    def wait_rcpt(self, login, want, what):
        took, reply = poll(lambda: rcpt(self.c, login, new_address(), new_instance()), want)
        self.assertIsNotNone(took, "%s not in effect within %.0fs (last reply %r)" % (what, PROPAGATION, reply))

    def test_account_override_raises_and_lowers_live(self):
        login = new_login()
        self.send_n(login, 3)
        self.refused(login, "3 messages per 1h")
        psql(self.dsn, "INSERT INTO send_limit (scope, subject, measure, window_s, max_value) "
                       "VALUES ('account', %s, 'messages', 3600, 5)" % sql_quote(login))
        self.wait_rcpt(login, lambda a: a == "DUNNO", "raised limit")
        self.send_n(login, 2)
        self.refused(login, "5 messages per 1h")
        # Removing the row brings the default back.
        psql(self.dsn, "DELETE FROM send_limit WHERE scope = 'account' AND subject = %s" % sql_quote(login))
        self.wait_rcpt(login, lambda a: a != "DUNNO", "default limit")
        self.refused(login, "3 messages per 1h")

    def test_override_adds_a_window_the_defaults_lack(self):
        login = new_login()
        # A 10-minute window (the defaults have 1h only); max 0 first: nothing at all.
        psql(self.dsn, "INSERT INTO send_limit (scope, subject, measure, window_s, max_value) "
                       "VALUES ('account', %s, 'messages', 600, 0)" % sql_quote(login))
        self.wait_rcpt(login, lambda a: a != "DUNNO", "10-minute window")
        self.assertEqual(rcpt(self.c, login, new_address(), new_instance()),
                         "452 4.7.1 Sending limit reached: 0 messages per 10min; retry later")
        psql(self.dsn, "UPDATE send_limit SET max_value = 1 WHERE scope = 'account' AND subject = %s"
             % sql_quote(login))
        self.wait_rcpt(login, lambda a: a == "DUNNO", "raised 10-minute window")
        self.send_n(login, 1)
        replies, end = send_message(self.c, login, [new_address()])
        self.assertIsNone(end)
        self.assertLimitReply(replies[0], "1 message per 10min", frees_in=600)

    def test_domain_override_account_precedence_and_null(self):
        domain = "%s.example" % unique_word(6)
        a, b, acct, unlimited = ("%s@%s" % (unique_word(), domain) for _ in range(4))
        other, other_unlimited = new_login(), new_login()
        self.send_n(a, 1)
        psql(self.dsn, "INSERT INTO send_limit (scope, subject, measure, window_s, max_value) VALUES "
                       "('domain', %s, 'messages', 3600, 1), "
                       "('account', %s, 'messages', 3600, 2), "
                       "('account', %s, 'messages', 3600, NULL), "
                       "('account', %s, 'messages', 3600, NULL)"
                       % (sql_quote(domain), sql_quote(acct), sql_quote(unlimited), sql_quote(other_unlimited)))
        self.wait_rcpt(a, lambda x: x != "DUNNO", "domain override")
        self.refused(a, "1 message per 1h")
        # Every login of the domain.
        self.send_n(b, 1)
        self.refused(b, "1 message per 1h")
        # An account row beats its domain's row.
        self.send_n(acct, 2)
        self.refused(acct, "2 messages per 1h")
        # max_value NULL: no messages limit at all for that account (not the domain's, not the default).
        self.send_n(unlimited, 6)
        self.send_n(other_unlimited, 6)
        # Other domains keep the default.
        self.send_n(other, 3)
        self.refused(other, "3 messages per 1h")


class ReviewFlagTest(AccountsTestCase):

    def flags(self, login):
        return query_rows(self.dsn, "SELECT kind, measure, window_s, max_value, value, hits, policyd, "
                                    "reviewed_at IS NULL FROM account_flag WHERE login = %s ORDER BY id"
                          % sql_quote(login))

    def test_one_flag_per_trip(self):
        login = new_login()
        d = self.limits_policyd(name="flag1", messages="2/1h")
        with d.client() as c:
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            self.assertEqual(self.flags(login), [])
            for _ in range(4):
                self.assertLimitReply(send_message(c, login, [new_address()])[0][0], "2 messages per 1h")
        self.assertEqual(self.flags(login), [["limit", "messages", "3600", "2", "3", "4", "flag1", "t"]])
        self.assertEqual(len(d.log_lines(r"limit_tripped .*login=%s" % re.escape(login))), 1, d.log_text())
        self.assertEqual(d.stop(), 0)
        # Two hours later the trip is over: the next one opens a second flag.
        d2 = self.limits_policyd(name="flag2", offset="2h", messages="2/1h")
        with d2.client() as c:
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            self.assertEqual(send_message(c, login, [new_address()]), sent_ok())
            for _ in range(2):
                self.assertLimitReply(send_message(c, login, [new_address()])[0][0], "2 messages per 1h",
                                      offset=7200)
        self.assertEqual(self.flags(login), [["limit", "messages", "3600", "2", "3", "4", "flag1", "t"],
                                             ["limit", "messages", "3600", "2", "3", "2", "flag2", "t"]])
        self.assertEqual(len(d2.log_lines(r"limit_tripped .*login=%s" % re.escape(login))), 1, d2.log_text())
        # A reviewed flag is closed: the next refusal of the same trip opens a new one.
        psql(self.dsn, "UPDATE account_flag SET reviewed_at = now(), reviewed_by = 'tester' WHERE login = %s"
             % sql_quote(login))
        with d2.client() as c:
            self.assertLimitReply(send_message(c, login, [new_address()])[0][0], "2 messages per 1h", offset=7200)
        flags = self.flags(login)
        self.assertEqual(len(flags), 3, flags)
        self.assertEqual(flags[2], ["limit", "messages", "3600", "2", "3", "1", "flag2", "t"])


class AutoRestrictTest(AccountsTestCase):

    def check_restricted(self, d, login, name, threshold, value):
        reason = "automatic: %d distinct recipients within 1h is over the threshold of %d" % (value, threshold)
        self.assertEqual(query_rows(self.dsn, "SELECT state, changed_by, reason FROM account WHERE login = %s"
                                    % sql_quote(login)), [["restricted", "policyd:%s" % name, reason]])
        self.assertEqual(query_rows(self.dsn, "SELECT actor, old_value, new_value, reason FROM audit "
                                              "WHERE login = %s AND action = 'auto_restrict'" % sql_quote(login)),
                         [["policyd:%s" % name, "active", "restricted", reason]])
        self.assertEqual(query_rows(self.dsn, "SELECT kind, measure, window_s, max_value, value, policyd "
                                              "FROM account_flag WHERE login = %s AND kind = 'auto_restrict'"
                                    % sql_quote(login)),
                         [["auto_restrict", "distinct_recipients", "3600", str(threshold), str(value), name]])
        d.wait_for_log(r"account_auto_restricted .*login=%s" % re.escape(login), timeout=2)

    def run_case(self, name, **limits):
        d = self.limits_policyd(name=name, auto_restrict="distinct_recipients=3/1h", **limits)
        login = new_login()
        rs = [new_address() for _ in range(4)]
        with d.client() as c:
            for r in rs[:3]:
                self.assertEqual(send_message(c, login, [r]), sent_ok())
            self.assertEqual(send_message(c, login, [rs[0]]), sent_ok())  # not a new address
            self.assertEqual(query_rows(self.dsn, "SELECT state FROM account WHERE login = %s" % sql_quote(login)),
                             [])
            # The 4th distinct address: restricted on the spot, and answered as restricted.
            replies, end = send_message(c, login, [rs[3]])
            self.assertEqual(replies, [RESTRICTED])
            self.assertIsNone(end)
            self.check_restricted(d, login, name, 3, 4)
            # From now on the account is restricted, also for known addresses; no second restriction.
            self.assertEqual(send_message(c, login, [rs[0]]), ([RESTRICTED], None))
            self.assertEqual(send_message(c, login, [new_address()]), ([RESTRICTED], None))
        self.check_restricted(d, login, name, 3, 4)
        self.assertEqual(volume(self.dsn, login), (4, 4, 4000))

    def test_auto_restrict_without_limit(self):
        self.run_case("autoa")

    def test_auto_restrict_with_limit_equal_to_threshold(self):
        self.run_case("autob", distinct_recipients="3/1h")

    def test_unreachable_threshold_is_a_config_error(self):
        path = os.path.join(self.tmpdir, "auto.conf")
        with open(path, "w") as f:
            f.write("listen = inet:127.0.0.1:%d\ndatabase = %s\n" % (free_port(), self.dsn))
        p = run_policyd(["-c", path, "-o", "limits.auto_restrict=distinct_recipients=10/1h",
                         "-o", "limits.distinct_recipients=5/1h", "--check-config"])
        self.assertEqual(p.returncode, EX_CONFIG, "exit %d: %s%s" % (p.returncode, p.stdout, p.stderr))
        self.assertIn("limits.auto_restrict", p.stderr)
        # Reachable: the same window with a limit at least as high, or another window.
        for limit in ("10/1h", "20/1h", "5/10m", "none"):
            p = run_policyd(["-c", path, "-o", "limits.auto_restrict=distinct_recipients=10/1h",
                             "-o", "limits.distinct_recipients=%s" % limit, "--check-config"])
            self.assertEqual(p.returncode, 0, "%s: %s%s" % (limit, p.stdout, p.stderr))


class MultiInstanceLimitsTest(AccountsTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = limit_settings(messages="4/1h")
        cls.a = cls.class_policyd(s, name="lim-a")
        cls.b = cls.class_policyd(s, name="lim-b")

    def test_alternating_instances_share_the_count(self):
        login = new_login()
        with self.a.client() as ca, self.b.client() as cb:
            conns = [ca, cb]
            for i in range(4):
                self.assertEqual(send_message(conns[i % 2], login, [new_address()]), sent_ok(), i)
            for c in conns:
                replies, end = send_message(c, login, [new_address()])
                self.assertIsNone(end)
                self.assertLimitReply(replies[0], "4 messages per 1h")
        self.assertEqual(volume(self.dsn, login), (4, 4, 4000))

    def test_concurrent_senders_on_both_instances_exact(self):
        login = new_login()
        results = []
        lock = threading.Lock()
        errors = []

        def run(d):
            try:
                with d.client() as c:
                    for _ in range(6):
                        out = send_message(c, login, [new_address()])
                        with lock:
                            results.append(out)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(d,)) for d in (self.a, self.b, self.a, self.b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 24)
        accepted = [r for r in results if r == sent_ok()]
        self.assertEqual(len(accepted), 4, results)
        for replies, end in results:
            if (replies, end) == sent_ok():
                continue
            # Refused at RCPT, or (a race at RCPT) at END-OF-MESSAGE.
            refusal = end if replies == ["DUNNO"] else replies[0]
            self.assertLimitReply(refusal, "4 messages per 1h")
        self.assertEqual(volume(self.dsn, login), (4, 4, 4000))


# ---------------------------------------------------------------------------------------
# Inbound flood control
# ---------------------------------------------------------------------------------------

RATE_RX = r"^450 4\.7\.1 Too many requests from %s, slow down; retry in [12] seconds$"
SESSIONS_RX = r"^421 4\.7\.0 Too many concurrent sessions from %s, try again later$"


def flood_settings(**kw):
    s = {"greylist.enable": "no", "rdns.enable": "no", "flood.enable": "yes",
         "flood.client_rate": "1000/2s", "flood.subnet_rate": "1000/2s",
         "flood.client_sessions": "0", "flood.subnet_sessions": "0"}
    for k, v in kw.items():
        s["flood." + k] = v
    return s


def inbound(c, client, **kw):
    kw.setdefault("recipient", new_address())
    kw.setdefault("sender", new_address())
    return c.request(client_address=client, **kw)


class FloodTest(SystemTestCase):

    def test_client_rate_defers_then_recovers(self):
        d = self.policyd(flood_settings(client_rate="5/2s"), name="rate")
        client = "198.51.100.7"
        with d.client() as c:
            t0 = time.monotonic()
            for i in range(5):
                self.assertEqual(inbound(c, client), "DUNNO", i)
            refused = inbound(c, client)
            self.assertLess(time.monotonic() - t0, 0.3, "requests too slow for this test")
            self.assertRegex(refused, RATE_RX % re.escape(client))
            self.assertRegex(inbound(c, client), RATE_RX % re.escape(client))  # refusals do not count
            # Another address of the same network is not that client.
            self.assertEqual(inbound(c, "198.51.100.8"), "DUNNO")
            # A quiet window later the allowance is full again: 5 at once.
            sleep_until(t0 + 2.1)
            for i in range(5):
                self.assertEqual(inbound(c, client), "DUNNO", "after the window, %d" % i)
            self.assertRegex(inbound(c, client), RATE_RX % re.escape(client))

    def test_subnet_rate(self):
        d = self.policyd(flood_settings(subnet_rate="8/2s", client_rate="100/2s"), name="subnet")
        with d.client() as c:
            for i in range(1, 9):
                self.assertEqual(inbound(c, "203.0.113.%d" % i), "DUNNO", i)
            self.assertRegex(inbound(c, "203.0.113.9"), RATE_RX % re.escape("203.0.113.0/24"))
            self.assertRegex(inbound(c, "203.0.113.1"), RATE_RX % re.escape("203.0.113.0/24"))
            for i in range(1, 9):
                self.assertEqual(inbound(c, "198.51.100.%d" % i), "DUNNO", i)
            # IPv6 networks are /64s.
            for i in range(1, 9):
                self.assertEqual(inbound(c, "2001:db8:5:6::%x" % i), "DUNNO", i)
            self.assertRegex(inbound(c, "2001:db8:5:6:ffff::1"), RATE_RX % re.escape("2001:db8:5:6::/64"))
            self.assertEqual(inbound(c, "2001:db8:5:7::1"), "DUNNO")

    def test_concurrent_sessions(self):
        d = self.policyd(flood_settings(client_sessions="2"), name="sessions")
        client = "198.51.100.30"
        c1, c2, c3 = (self.track(d.client()) for _ in range(3))
        self.assertEqual(inbound(c1, client), "DUNNO")
        self.assertEqual(inbound(c2, client), "DUNNO")
        self.assertRegex(inbound(c3, client), SESSIONS_RX % re.escape(client))
        # The open sessions go on.
        self.assertEqual(inbound(c1, client), "DUNNO")
        self.assertEqual(inbound(c2, client), "DUNNO")
        # The refused connection serves another client next (one smtpd, a new SMTP session).
        self.assertEqual(inbound(c3, "198.51.100.31"), "DUNNO")
        # Closing a connection ends its session: a new one is accepted.
        c1.close()
        c4 = self.track(d.client())
        took, reply = poll(lambda: inbound(c4, client), lambda a: a == "DUNNO", timeout=1.0)
        self.assertIsNotNone(took, "session not freed by the close (last reply %r)" % reply)
        self.assertRegex(inbound(self.track(d.client()), client), SESSIONS_RX % re.escape(client))

    def test_concurrent_sessions_per_network(self):
        d = self.policyd(flood_settings(subnet_sessions="2"), name="netsessions")
        c1, c2, c3 = (self.track(d.client()) for _ in range(3))
        self.assertEqual(inbound(c1, "198.51.100.51"), "DUNNO")
        self.assertEqual(inbound(c2, "198.51.100.52"), "DUNNO")
        self.assertRegex(inbound(c3, "198.51.100.53"), SESSIONS_RX % re.escape("198.51.100.0/24"))
        self.assertEqual(inbound(c3, "198.51.101.53"), "DUNNO")  # another network

    def test_idle_connection_no_longer_counts(self):
        d = self.policyd(flood_settings(client_sessions="1", session_idle="1s"), name="idle")
        client = "198.51.100.33"
        c1, c2 = self.track(d.client()), self.track(d.client())
        self.assertEqual(inbound(c1, client), "DUNNO")
        self.assertRegex(inbound(c2, client), SESSIONS_RX % re.escape(client))
        time.sleep(1.3)
        self.assertEqual(inbound(c2, client), "DUNNO")  # c1 was idle for longer than 1 s
        self.assertRegex(inbound(c1, client), SESSIONS_RX % re.escape(client))

    # Bug (open): a policy connection keeps counting as the session of the last
    # unauthenticated, non-exempt client it served even after its latest request came from
    # another client (an exempt relay, or an authenticated user at another address). In
    # Postfix that smtpd process has moved on to another SMTP session, but the old client's
    # session is only forgotten after flood.session_idle (60 s) or when the connection
    # closes; until then the old client gets 421 for sessions it no longer holds.
    # flood_check.hpp: "a policy connection whose latest request came from a client within
    # flood.session_idle is one open session of that client".
    def test_connection_serving_another_client_ends_the_session(self):
        d = self.policyd(flood_settings(client_sessions="1", exempt="127.0.0.0/8 ::1 203.0.113.128/25"),
                         name="moved")
        c1, c2, c3, c4 = (self.track(d.client()) for _ in range(4))
        x, y = "198.51.100.34", "198.51.100.35"
        self.assertEqual(inbound(c1, x), "DUNNO")
        self.assertRegex(inbound(c2, x), SESSIONS_RX % re.escape(x))
        self.assertEqual(inbound(c1, "203.0.113.200"), "DUNNO")  # c1 now serves an exempt relay
        self.assertEqual(inbound(c2, x), "DUNNO")
        self.assertEqual(inbound(c3, y), "DUNNO")
        self.assertEqual(inbound(c3, "198.51.100.99", sasl_method="PLAIN", sasl_username=new_login()), "DUNNO")
        self.assertEqual(inbound(c4, y), "DUNNO")  # c3 now serves an authenticated user elsewhere

    def test_exempt_and_authenticated_are_never_limited(self):
        d = self.policyd(flood_settings(client_rate="5/2s", client_sessions="1",
                                        exempt="127.0.0.0/8 ::1 203.0.113.128/25"), name="exempt")
        conns = [self.track(d.client()) for _ in range(3)]
        for i in range(20):
            self.assertEqual(inbound(conns[i % 3], "203.0.113.200"), "DUNNO", i)
        # Authenticated submission from an address that is not exempt.
        login = new_login()
        for i in range(20):
            self.assertEqual(inbound(conns[i % 3], "198.51.100.40", sasl_method="PLAIN", sasl_username=login),
                             "DUNNO", i)
        # ... and none of that was counted for the address: its own allowance and its session
        # cap are untouched (and apply to its unauthenticated requests).
        for i in range(5):
            self.assertEqual(inbound(conns[0], "198.51.100.40"), "DUNNO", i)
        self.assertRegex(inbound(conns[0], "198.51.100.40"), RATE_RX % re.escape("198.51.100.40"))
        self.assertRegex(inbound(conns[1], "198.51.100.40"), SESSIONS_RX % re.escape("198.51.100.40"))
        # Control: just outside the exempt /25 the limits apply.
        for i in range(5):
            self.assertEqual(inbound(conns[2], "203.0.113.20"), "DUNNO", i)
        self.assertRegex(inbound(conns[2], "203.0.113.20"), RATE_RX % re.escape("203.0.113.20"))


class EarlyRetryPenaltyTest(SystemTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = cls.class_policyd({"greylist.delay": "2s", "greylist.early_retry_grace": "2",
                                   "greylist.early_retry_penalty": "3s", "greylist.max_delay": "1m",
                                   "greylist.retry_window": "10m", "flood.enable": "no", "rdns.enable": "no"},
                                  name="penalty")

    def test_hammering_grows_the_delay_patience_does_not(self):
        hammer = dict(client_address="198.51.100.60", sender="h.%s@s.example" % unique_word(),
                      recipient=new_address())
        patient = dict(client_address="203.0.113.61", sender="p.%s@s.example" % unique_word(),
                       recipient=new_address())
        wait_rx = r"^DEFER_IF_PERMIT 4\.7\.1 Greylisted, retry in (\d+) seconds$"
        with self.d.client() as c:
            t0 = time.monotonic()
            self.assertEqual(c.request(**hammer), "DEFER_IF_PERMIT 4.7.1 Greylisted, retry in 2 seconds")
            self.assertEqual(c.request(**patient), "DEFER_IF_PERMIT 4.7.1 Greylisted, retry in 2 seconds")
            waits = []
            for _ in range(24):
                m = re.match(wait_rx, c.request(**hammer))
                self.assertTrue(m)
                waits.append(int(m.group(1)))
            self.assertLess(time.monotonic() - t0, 0.9, "requests too slow for exact waits")
            # Retries 1 and 2 are free; from the 3rd each adds 3 s, up to greylist.max_delay (60 s).
            self.assertEqual(waits[:6], [2, 2, 5, 8, 11, 14])
            self.assertEqual(waits, [min(60, 2 + 3 * max(0, k - 2)) for k in range(1, 25)])
            # The patient client retries within the grace, then after the delay: it passes.
            self.assertEqual(c.request(**patient), "DEFER_IF_PERMIT 4.7.1 Greylisted, retry in 2 seconds")
            sleep_until(t0 + 2.3)
            self.assertRegex(c.request(**patient), r"^PREPEND X-Greylist: delayed [23] seconds by lupine-policyd")
            # The hammering one is still held back.
            m = re.match(wait_rx, c.request(**hammer))
            self.assertTrue(m)
            self.assertIn(int(m.group(1)), (57, 58))
        lines = self.d.wait_for_log(r"greylist_early_retry_penalty .*198\.51\.100\.60", timeout=2)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("early_retries=3", lines[0])
        self.assertEqual(self.d.count_log(r"greylist_early_retry_penalty .*203\.0\.113\.61"), 0)


if __name__ == "__main__":
    unittest.main()
