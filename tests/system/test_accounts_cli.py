"""abusectl accounts, webmail and limits: listings (text and JSON), the review queue, the
webmail networks and the sending-limit overrides, checked against the rows and audit rows
they leave in PostgreSQL; usage errors (exit 2) and refusals (exit 1) change nothing; the
actor is $SUDO_USER, else the login name."""

import json
import os
import pwd
import re
import subprocess
import unittest

from harness import ABUSECTL, SystemTestCase, migrate, run_abusectl, psql, query_rows, query_value, sql_quote

ACTOR = "test-operator"
ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
TABLES = "send_limit, webmail_network, audit, account, account_flag, case_message, abuse_case"


def one_line(text):
    return text.endswith("\n") and "\n" not in text[:-1]


class CliTestCase(SystemTestCase):
    """A migrated database per class; every test starts from empty tables."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        migrate(cls.dsn)

    def setUp(self):
        super().setUp()
        # The audit trail is append-only (a trigger refuses TRUNCATE for every role); a test
        # starting from scratch switches triggers off for its own session, which only a
        # superuser such as the test cluster's owner may do.
        psql(self.dsn, "SET session_replication_role = replica; TRUNCATE %s RESTART IDENTITY" % TABLES)

    def ctl(self, *args, env=None):
        e = {"SUDO_USER": ACTOR}
        e.update(env or {})
        return run_abusectl(["-d", self.dsn] + list(args), env=e)

    def ok(self, *args, env=None):
        p = self.ctl(*args, env=env)
        self.assertEqual(p.returncode, 0, "abusectl %s: %s" % (" ".join(args), p.stderr))
        return p

    def snapshot(self):
        """Every row of the tables these commands write, to show that nothing changed."""
        return {t: psql(self.dsn, "SELECT * FROM %s ORDER BY 1, 2, 3" % t) for t in TABLES.split(", ")}

    def audit(self, action):
        return query_rows(self.dsn, "SELECT actor, coalesce(login, '<null>'), coalesce(old_value, '<null>'),"
                                    " coalesce(new_value, '<null>'), reason FROM audit"
                                    " WHERE action = %s ORDER BY id" % sql_quote(action))

    def assertRefused(self, p, code, pattern):
        self.assertEqual(p.returncode, code, p.stdout + p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertTrue(one_line(p.stderr), repr(p.stderr))
        self.assertRegex(p.stderr, pattern)

    def table(self, stdout):
        """A text table as (header words, rows of words); cells hold no spaces in these tests."""
        lines = stdout.splitlines()
        return lines[0].split(), [l.split() for l in lines[1:]]


class UsageTest(SystemTestCase):
    needs_database = False

    def test_top_level_help_lists_the_commands(self):
        p = run_abusectl(["--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        for name in ("db", "accounts", "webmail", "limits"):
            self.assertRegex(p.stdout, r"(?m)^  %s\s+\S" % name)

    def test_each_help_exits_0_and_lists_its_flags(self):
        want = {"accounts": ["--state", "--json", "--note", "review FLAG_ID", "flagged"],
                "webmail": ["--json", "--comment", "list", "add NET", "remove NET"],
                "limits": ["--json", "--comment", "list", "set", "clear", "MAX/WINDOW", "distinct_domains"]}
        for cmd, words in want.items():
            for flag in ("--help", "-h"):
                p = run_abusectl([cmd, flag])
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("Usage: abusectl %s" % cmd, p.stdout)
                for w in words:
                    self.assertIn(w, p.stdout, (cmd, w))
        # --help wins over anything else on the line, even a bad value.
        p = run_abusectl(["limits", "set", "u@example.org", "bogus", "1/1s", "--help"])
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_usage_errors_exit_2_without_a_database(self):
        dsn = "host=%s/no-server dbname=x" % self.tmpdir
        cases = [["accounts", "--bogus"], ["accounts", "frob"], ["accounts", "--state", "gone"],
                 ["accounts", "review"], ["accounts", "review", "1"], ["accounts", "review", "0", "--note", "n"],
                 ["accounts", "review", "x1", "--note", "n"], ["accounts", "--note", "n"],
                 ["accounts", "review", "1", "--note", "n", "--json"],
                 ["webmail"], ["webmail", "frob"], ["webmail", "add"], ["webmail", "add", "a", "b"],
                 ["webmail", "list", "x"], ["webmail", "add", "192.0.2.0/24", "--json"],
                 ["limits"], ["limits", "set", "u"], ["limits", "set", "u", "messages"],
                 ["limits", "clear"], ["limits", "list", "a", "b"], ["limits", "list", "--comment", "x"],
                 ["limits", "set", "u", "messages", "1/1h", "--bogus"]]
        for args in cases:
            p = run_abusectl(["-d", dsn] + args)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertEqual(p.stdout, "", args)
            self.assertIn("abusectl %s:" % args[0], p.stderr)

    def test_cannot_connect_is_one_line_and_exit_1(self):
        dsn = "host=%s/no-server dbname=x" % self.tmpdir
        for args in (["accounts"], ["accounts", "--state", "flagged"], ["accounts", "review", "1", "--note", "n"],
                     ["webmail", "list"], ["webmail", "add", "192.0.2.0/24"], ["limits", "list"],
                     ["limits", "set", "u@example.org", "messages", "1/1h"], ["limits", "clear", "u@example.org"]):
            p = run_abusectl(["-d", dsn] + args)
            self.assertEqual(p.returncode, 1, (args, p.stderr))
            self.assertTrue(one_line(p.stderr), repr(p.stderr))
            self.assertTrue(p.stderr.startswith("abusectl %s: cannot connect to the database" % args[0]), p.stderr)


class OperatorTest(CliTestCase):
    def run_without_sudo_user(self, *args):
        env = {k: v for k, v in os.environ.items() if k not in ("SUDO_USER", "LUPINE_DATABASE")}
        return subprocess.run([ABUSECTL, "-d", self.dsn] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, universal_newlines=True, timeout=60)

    def test_actor_is_sudo_user_else_login_name(self):
        me = pwd.getpwuid(os.geteuid()).pw_name
        self.ok("webmail", "add", "192.0.2.1", env={"SUDO_USER": "alice"})
        self.ok("webmail", "add", "192.0.2.2", env={"SUDO_USER": ""})
        p = self.run_without_sudo_user("webmail", "add", "192.0.2.3")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(query_rows(self.dsn, "SELECT actor FROM audit ORDER BY id"), [["alice"], [me], [me]])
        self.assertEqual(query_rows(self.dsn, "SELECT created_by FROM webmail_network ORDER BY net"),
                         [["alice"], [me], [me]])


class LimitsTest(CliTestCase):
    def rows(self):
        return query_rows(self.dsn, "SELECT scope, subject, measure, window_s, coalesce(max_value::text, '<null>'),"
                                    " comment, changed_by FROM send_limit ORDER BY scope, subject, measure, window_s")

    def test_set_list_update_clear(self):
        p = self.ok("limits", "set", "U@Example.ORG", "messages", "100/1h", "--comment", "case 12")
        self.assertEqual(p.stdout, "u@example.org: messages 100/1h (was not set)\n")
        self.assertEqual(self.rows(), [["account", "u@example.org", "messages", "3600", "100", "case 12", ACTOR]])
        self.assertEqual(self.audit("limit"), [[ACTOR, "u@example.org", "<null>", "messages 100/1h", "case 12"]])

        p = self.ok("limits", "list")
        header, rows = self.table(p.stdout)
        self.assertEqual(header, ["SCOPE", "SUBJECT", "MEASURE", "MAX_VALUE", "WINDOW", "COMMENT", "CHANGED_BY",
                                  "CHANGED_AT"])
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][:5], ["account", "u@example.org", "messages", "100", "1h"])
        got = json.loads(self.ok("limits", "list", "--json").stdout)
        self.assertEqual(len(got), 1)
        self.assertRegex(got[0].pop("changed_at"), ISO_UTC)
        self.assertEqual(got[0], {"scope": "account", "subject": "u@example.org", "measure": "messages",
                                  "max_value": 100, "window": "1h", "comment": "case 12", "changed_by": ACTOR})

        # Same measure and window (60m is 1h): replaced, not added; the comment is the new one.
        p = self.ok("limits", "set", "u@example.org", "messages", "200/60m")
        self.assertEqual(p.stdout, "u@example.org: messages 200/1h (was 100/1h)\n")
        self.assertEqual(self.rows(), [["account", "u@example.org", "messages", "3600", "200", "", ACTOR]])
        # Another window of the same measure is another row.
        self.ok("limits", "set", "u@example.org", "messages", "1000/24h")
        self.assertEqual([r[3:5] for r in self.rows()], [["3600", "200"], ["86400", "1000"]])

        p = self.ok("limits", "clear", "u@example.org", "messages", "1h", "--comment", "lifted")
        self.assertEqual(p.stdout, "u@example.org: cleared messages 200/1h\n")
        self.assertEqual([r[3:5] for r in self.rows()], [["86400", "1000"]])
        self.assertEqual(self.audit("limit"), [
            [ACTOR, "u@example.org", "<null>", "messages 100/1h", "case 12"],
            [ACTOR, "u@example.org", "100/1h", "messages 200/1h", ""],
            [ACTOR, "u@example.org", "<null>", "messages 1000/24h", ""],
            [ACTOR, "u@example.org", "messages 200/1h", "<null>", "lifted"]])

    def test_none_is_stored_as_null(self):
        p = self.ok("limits", "set", "u@example.org", "recipients", "none/10m")
        self.assertEqual(p.stdout, "u@example.org: recipients none/10min (was not set)\n")
        self.assertEqual(self.rows(), [["account", "u@example.org", "recipients", "600", "<null>", "", ACTOR]])
        self.assertEqual(query_value(self.dsn, "SELECT count(*) FROM send_limit WHERE max_value IS NULL"), "1")
        got = json.loads(self.ok("limits", "list", "u@example.org", "--json").stdout)
        self.assertIsNone(got[0]["max_value"])
        self.assertEqual(got[0]["window"], "10min")
        header, rows = self.table(self.ok("limits", "list").stdout)
        self.assertEqual(rows[0][3:5], ["none", "10min"])
        # "10min", as listed, is accepted back.
        self.ok("limits", "set", "u@example.org", "recipients", "5/10min")
        self.assertEqual(self.rows()[0][3:5], ["600", "5"])
        self.assertEqual(self.audit("limit")[1], [ACTOR, "u@example.org", "none/10min", "recipients 5/10min", ""])

    def test_domain_scope_and_bytes_suffixes(self):
        self.ok("limits", "set", "@Example.ORG", "bytes", "25M/24h", "--comment", "all of it")
        self.ok("limits", "set", "@example.org", "bytes", "2G/7d")
        self.ok("limits", "set", "@example.org", "bytes", "10k/1m")
        self.ok("limits", "set", "u@example.org", "distinct_domains", "0/1h")
        self.assertEqual(self.rows(), [
            ["account", "u@example.org", "distinct_domains", "3600", "0", "", ACTOR],
            ["domain", "example.org", "bytes", "60", "10240", "", ACTOR],
            ["domain", "example.org", "bytes", "86400", "26214400", "all of it", ACTOR],
            ["domain", "example.org", "bytes", "604800", "2147483648", "", ACTOR]])
        self.assertEqual(self.audit("limit")[0], [ACTOR, "@example.org", "<null>", "bytes 26214400/24h", "all of it"])
        # One subject only: the domain's rows, not the account's.
        got = json.loads(self.ok("limits", "list", "@EXAMPLE.org", "--json").stdout)
        self.assertEqual([(g["scope"], g["subject"], g["window"]) for g in got],
                         [("domain", "example.org", "1min"), ("domain", "example.org", "24h"),
                          ("domain", "example.org", "7d")])
        self.assertEqual(len(json.loads(self.ok("limits", "list", "u@example.org", "--json").stdout)), 1)
        self.assertEqual(self.ok("limits", "list", "nobody@example.org").stdout, "no overrides for nobody@example.org\n")

    def test_bad_values_exit_2_and_change_nothing(self):
        self.ok("limits", "set", "u@example.org", "messages", "100/1h")
        before = self.snapshot()
        cases = [
            (["u@example.org", "mesages", "100/1h"], r"bad measure 'mesages'"),
            (["u@example.org", "Messages", "100/1h"], r"bad measure"),
            (["u@example.org", "messages", "100/30s"], r"bad window '30s': must be between 1 minute and 7 days"),
            (["u@example.org", "messages", "100/8d"], r"bad window '8d': must be between 1 minute and 7 days"),
            (["u@example.org", "messages", "100/90s"], r"bad window '90s': must be a whole number of minutes"),
            (["u@example.org", "messages", "100/0m"], r"bad window '0m'"),
            (["u@example.org", "messages", "100/1"], r"bad window '1': expected a number and a unit"),
            (["u@example.org", "messages", "100/1x"], r"bad window '1x'"),
            (["u@example.org", "messages", "100/"], r"bad window ''"),
            (["u@example.org", "messages", "100"], r"bad limit '100': expected MAX/WINDOW"),
            (["u@example.org", "messages", "1/1h/2h"], r"bad limit"),
            (["u@example.org", "messages", "x/1h"], r"bad maximum 'x'"),
            (["u@example.org", "messages", "1.5/1h"], r"bad maximum '1.5'"),
            (["u@example.org", "messages", "/1h"], r"bad maximum ''"),
            (["u@example.org", "messages", "10K/1h"], r"bad maximum '10K': K, M and G are for bytes only"),
            (["u@example.org", "bytes", "10T/1h"], r"bad maximum '10T'"),
            (["u@example.org", "bytes", "99999999999G/1h"], r"bad maximum .*too large"),
            (["u@example.org", "messages", "-1/1h"], r"-1/1h"),  # an unknown option to the parser
            (["@", "messages", "1/1h"], r"bad subject '@'"),
            (["@a@b", "messages", "1/1h"], r"bad subject"),
            (["a b", "messages", "1/1h"], r"bad subject"),
            (["", "messages", "1/1h"], r"bad subject"),
        ]
        for args, pattern in cases:
            p = self.ctl("limits", "set", *args)
            self.assertRefused(p, 2, r"^abusectl limits: .*" + pattern)
        for args, pattern in [(["u@example.org", "nope"], r"bad measure"),
                              (["u@example.org", "messages", "90s"], r"whole number of minutes")]:
            self.assertRefused(self.ctl("limits", "clear", *args), 2, pattern)
        self.assertEqual(self.snapshot(), before)

    def test_clear_variants_and_no_override(self):
        for spec in (("messages", "10/1h"), ("messages", "100/24h"), ("recipients", "50/1h"), ("bytes", "1M/1h")):
            self.ok("limits", "set", "u@example.org", *spec)
        self.ok("limits", "set", "@example.org", "messages", "5/1h")
        before = self.snapshot()
        self.assertRefused(self.ctl("limits", "clear", "u@example.org", "distinct_domains"), 1,
                           r"^abusectl limits: no override for u@example.org distinct_domains$")
        self.assertRefused(self.ctl("limits", "clear", "u@example.org", "messages", "2h"), 1,
                           r"no override for u@example.org messages 2h")
        self.assertRefused(self.ctl("limits", "clear", "v@example.org"), 1, r"no override for v@example.org")
        self.assertEqual(self.snapshot(), before)

        p = self.ok("limits", "clear", "U@example.org", "messages")  # both windows
        self.assertEqual(p.stdout, "u@example.org: cleared messages 10/1h\nu@example.org: cleared messages 100/24h\n")
        p = self.ok("limits", "clear", "u@example.org", "--comment", "case closed")  # the rest of the account
        self.assertEqual(p.stdout, "u@example.org: cleared bytes 1048576/1h\nu@example.org: cleared recipients 50/1h\n")
        self.assertEqual(self.rows(), [["domain", "example.org", "messages", "3600", "5", "", ACTOR]])
        cleared = [r for r in self.audit("limit") if r[3] == "<null>"]
        self.assertEqual(cleared, [[ACTOR, "u@example.org", "messages 10/1h", "<null>", ""],
                                   [ACTOR, "u@example.org", "messages 100/24h", "<null>", ""],
                                   [ACTOR, "u@example.org", "bytes 1048576/1h", "<null>", "case closed"],
                                   [ACTOR, "u@example.org", "recipients 50/1h", "<null>", "case closed"]])
        self.ok("limits", "clear", "@example.org")
        self.assertEqual(self.ok("limits", "list").stdout, "no overrides\n")
        self.assertEqual(self.ok("limits", "list", "--json").stdout, "[]\n")


class WebmailTest(CliTestCase):
    def nets(self):
        return query_rows(self.dsn, "SELECT net, comment, created_by FROM webmail_network ORDER BY net")

    def test_add_list_remove(self):
        self.assertEqual(self.ok("webmail", "list").stdout, "no webmail networks\n")
        self.assertEqual(self.ok("webmail", "list", "--json").stdout, "[]\n")
        p = self.ok("webmail", "add", "192.0.2.0/24", "--comment", "roundcube")
        self.assertEqual(p.stdout, "added 192.0.2.0/24\n")
        self.assertEqual(self.ok("webmail", "add", "2001:DB8::/32").stdout, "added 2001:db8::/32\n")
        self.assertEqual(self.ok("webmail", "add", "198.51.100.7").stdout, "added 198.51.100.7/32\n")
        self.assertEqual(self.nets(), [["192.0.2.0/24", "roundcube", ACTOR], ["198.51.100.7/32", "", ACTOR],
                                       ["2001:db8::/32", "", ACTOR]])
        header, rows = self.table(self.ok("webmail", "list").stdout)
        self.assertEqual(header, ["NET", "COMMENT", "CREATED_BY", "CREATED_AT"])
        self.assertEqual([r[:3] for r in rows], [["192.0.2.0/24", "roundcube", ACTOR], ["198.51.100.7/32", "-", ACTOR],
                                                 ["2001:db8::/32", "-", ACTOR]])
        got = json.loads(self.ok("webmail", "list", "--json").stdout)
        for g in got:
            self.assertRegex(g.pop("created_at"), ISO_UTC)
        self.assertEqual(got, [{"net": "192.0.2.0/24", "comment": "roundcube", "created_by": ACTOR},
                               {"net": "198.51.100.7/32", "comment": "", "created_by": ACTOR},
                               {"net": "2001:db8::/32", "comment": "", "created_by": ACTOR}])
        p = self.ok("webmail", "remove", "198.51.100.7", "--comment", "decommissioned")
        self.assertEqual(p.stdout, "removed 198.51.100.7/32\n")
        self.assertEqual([n[0] for n in self.nets()], ["192.0.2.0/24", "2001:db8::/32"])
        self.assertEqual(self.audit("webmail"), [
            [ACTOR, "<null>", "<null>", "192.0.2.0/24", "roundcube"],
            [ACTOR, "<null>", "<null>", "2001:db8::/32", ""],
            [ACTOR, "<null>", "<null>", "198.51.100.7/32", ""],
            [ACTOR, "<null>", "198.51.100.7/32", "<null>", "decommissioned"]])
        # The view Dovecot reads sees the change.
        psql(self.dsn, "SELECT lupine_set_account_state('r@example.org', 'restricted', 'tester', 'why')")
        self.assertEqual(query_value(self.dsn, "SELECT allow_nets FROM dovecot_account WHERE username = 'r@example.org'"),
                         "192.0.2.0/24,2001:db8::/32")

    def test_invalid_networks_exit_2_and_change_nothing(self):
        self.ok("webmail", "add", "192.0.2.0/24")
        before = self.snapshot()
        cases = [("192.0.2.1/24", r"host bits are set; the network is 192\.0\.2\.0/24"),
                 ("2001:db8::1/32", r"host bits are set; the network is 2001:db8::/32"),
                 ("10.1", r"abbreviated"),
                 ("foo", None), ("300.1.2.3", None), ("192.0.2.0/33", None), ("", None)]
        for net, detail in cases:
            for action in ("add", "remove"):
                p = self.ctl("webmail", action, net)
                self.assertRefused(p, 2, r"^abusectl webmail: not a network: %s" % re.escape(net))
                if detail is None:
                    self.assertEqual(p.stderr, "abusectl webmail: not a network: %s\n" % net)
                else:
                    self.assertRegex(p.stderr, detail)
        self.assertEqual(self.snapshot(), before)

    def test_duplicate_and_missing_are_refused(self):
        self.ok("webmail", "add", "192.0.2.7")
        before = self.snapshot()
        for same in ("192.0.2.7", "192.0.2.7/32"):
            self.assertRefused(self.ctl("webmail", "add", same, "--comment", "again"), 1,
                               r"^abusectl webmail: 192\.0\.2\.7/32 is already listed$")
        self.assertRefused(self.ctl("webmail", "remove", "198.51.100.0/24"), 1,
                           r"^abusectl webmail: 198\.51\.100\.0/24 is not listed$")
        self.assertEqual(self.snapshot(), before)
        # Removing the last network says what that means for restricted accounts.
        p = self.ok("webmail", "remove", "192.0.2.7")
        self.assertIn("warning: no webmail networks left", p.stderr)


class AccountsTest(CliTestCase):
    def set_state(self, login, state, reason, case_id="NULL"):
        psql(self.dsn, "SELECT lupine_set_account_state(%s, %s, 'tester', %s, %s)"
             % (sql_quote(login), sql_quote(state), sql_quote(reason), case_id))

    def add_flag(self, login, kind, measure, window_s, max_value, value, hits=1, reviewed=False):
        return query_value(self.dsn,
                           "INSERT INTO account_flag (login, kind, measure, window_s, max_value, value, first_at,"
                           " last_at, hits, policyd, reviewed_at, reviewed_by, review_note)"
                           " VALUES (%s, %s, %s, %d, %d, %d, '2026-01-02 03:04:05+00', '2026-01-02 03:34:05+00',"
                           " %d, 'mx1', %s) RETURNING id"
                           % (sql_quote(login), sql_quote(kind), sql_quote(measure), window_s, max_value, value, hits,
                              "now(), 'earlier', 'done'" if reviewed else "NULL, NULL, NULL"))

    def test_empty(self):
        self.assertEqual(self.ok("accounts").stdout, "no accounts\n")
        self.assertEqual(self.ok("accounts", "--json").stdout, "[]\n")
        self.assertEqual(self.ok("accounts", "--state", "flagged").stdout, "no open flags\n")
        self.assertEqual(self.ok("accounts", "--state", "flagged", "--json").stdout, "[]\n")

    def test_list_after_state_changes(self):
        self.set_state("U@example.org", "restricted", "why")
        # A state names its case (the account row refers to abuse_case).
        psql(self.dsn, "INSERT INTO abuse_case (id, account, reporter, opened_by) "
                       "VALUES (42, 't@example.org', 'abuse@example.net', 'tester')")
        self.set_state("t@example.org", "terminated", "spam run", case_id="42")
        self.set_state("a@example.org", "restricted", "x")
        self.set_state("a@example.org", "active", "restored")
        p = self.ok("accounts")
        header, rows = self.table(p.stdout)
        self.assertEqual(header, ["LOGIN", "STATE", "CHANGED_AT", "CHANGED_BY", "REASON", "CASE_ID"])
        self.assertEqual([r[:2] for r in rows], [["a@example.org", "active"], ["t@example.org", "terminated"],
                                                 ["u@example.org", "restricted"]])
        self.assertEqual(rows[2][3:], ["tester", "why", "-"])
        got = json.loads(self.ok("accounts", "--json").stdout)
        stamps = query_rows(self.dsn, "SELECT to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                                      " FROM account ORDER BY login")
        self.assertEqual([g["changed_at"] for g in got], [s[0] for s in stamps])
        for g in got:
            self.assertRegex(g.pop("changed_at"), ISO_UTC)
        self.assertEqual(got, [
            {"login": "a@example.org", "state": "active", "changed_by": "tester", "reason": "restored", "case_id": None},
            {"login": "t@example.org", "state": "terminated", "changed_by": "tester", "reason": "spam run",
             "case_id": 42},
            {"login": "u@example.org", "state": "restricted", "changed_by": "tester", "reason": "why",
             "case_id": None}])
        got = json.loads(self.ok("accounts", "--state", "restricted", "--json").stdout)
        self.assertEqual([g["login"] for g in got], ["u@example.org"])
        _, rows = self.table(self.ok("accounts", "--state", "terminated").stdout)
        self.assertEqual([r[0] for r in rows], ["t@example.org"])
        self.assertEqual(self.ok("accounts", "--state", "active", "--json").stdout.count('"login"'), 1)
        psql(self.dsn, "DELETE FROM account WHERE state = 'active'")
        self.assertEqual(self.ok("accounts", "--state", "active").stdout, "no accounts in state active\n")

    def test_text_needing_escapes(self):
        reason = 'said "stop"\nnew line\ttab \\ back \u00e9t\u00e9 \u2603 \x01'
        self.set_state("q@example.org", "restricted", reason)
        got = json.loads(self.ok("accounts", "--json").stdout)
        self.assertEqual(got[0]["reason"], reason)
        out = self.ok("accounts").stdout
        self.assertEqual(len(out.splitlines()), 2, out)  # the newline in the reason stays in its row
        self.assertIn(r'said "stop"\nnew line\ttab \ back', out)

    def test_flag_queue_and_review(self):
        f1 = self.add_flag("u@example.org", "limit", "messages", 3600, 100, 130, hits=7)
        f2 = self.add_flag("v@example.org", "auto_restrict", "distinct_domains", 600, 50, 51)
        f3 = self.add_flag("w@example.org", "limit", "recipients", 86400, 500, 501)
        self.add_flag("x@example.org", "limit", "messages", 3600, 1, 2, reviewed=True)
        header, rows = self.table(self.ok("accounts", "--state", "flagged").stdout)
        self.assertEqual(header, ["ID", "LOGIN", "KIND", "MEASURE", "WINDOW", "MAX_VALUE", "VALUE", "FIRST_AT", "LAST_AT",
                                  "HITS", "POLICYD"])
        self.assertEqual([r[:7] for r in rows], [[f1, "u@example.org", "limit", "messages", "1h", "100", "130"],
                                                 [f2, "v@example.org", "auto_restrict", "distinct_domains", "10min",
                                                  "50", "51"],
                                                 [f3, "w@example.org", "limit", "recipients", "24h", "500", "501"]])
        got = json.loads(self.ok("accounts", "--state", "flagged", "--json").stdout)
        self.assertEqual(got[0], {"id": int(f1), "login": "u@example.org", "kind": "limit", "measure": "messages",
                                  "window": "1h", "max_value": 100, "value": 130, "first_at": "2026-01-02T03:04:05Z",
                                  "last_at": "2026-01-02T03:34:05Z", "hits": 7, "policyd": "mx1"})

        p = self.ok("accounts", "review", f1, "--note", "newsletter, fine")
        self.assertEqual(p.stdout, "flag %s (u@example.org) reviewed\n" % f1)
        self.assertEqual(query_rows(self.dsn, "SELECT reviewed_by, review_note, reviewed_at IS NOT NULL"
                                              " FROM account_flag WHERE id = %s" % f1),
                         [[ACTOR, "newsletter, fine", "t"]])
        self.assertEqual(self.audit("flag_review"), [[ACTOR, "u@example.org", "<null>", "reviewed", "newsletter, fine"]])
        # Same transaction: the audit row carries the review's own timestamp.
        self.assertEqual(query_value(self.dsn, "SELECT (SELECT at FROM audit WHERE action = 'flag_review')"
                                               " = (SELECT reviewed_at FROM account_flag WHERE id = %s)" % f1), "t")
        got = json.loads(self.ok("accounts", "--state", "flagged", "--json").stdout)
        self.assertEqual([g["id"] for g in got], [int(f2), int(f3)])

        before = self.snapshot()
        p = self.ctl("accounts", "review", f1, "--note", "second opinion", env={"SUDO_USER": "other"})
        self.assertRefused(p, 1, r"^abusectl accounts: flag %s was already reviewed by %s at \S+Z$" % (f1, ACTOR))
        self.assertRefused(self.ctl("accounts", "review", "999", "--note", "n"), 1, r"^abusectl accounts: no flag 999$")
        self.assertRefused(self.ctl("accounts", "review", f2), 2, r"--note")
        self.assertRefused(self.ctl("accounts", "review", f2, "--note", ""), 2, r"--note")
        self.assertRefused(self.ctl("accounts", "review", "-1", "--note", "n"), 2, r"'-1'")
        self.assertRefused(self.ctl("accounts", "review", "abc", "--note", "n"), 2, r"bad flag id 'abc'")
        self.assertEqual(self.snapshot(), before)


if __name__ == "__main__":
    unittest.main()


class CaseOpenJsonTest(CliTestCase):
    """`case open --json` for scripts: the case number and what each copy's headers say."""

    def test_case_open_json(self):
        conf = os.path.join(self.tmpdir, "abusectl.conf")
        with open(conf, "w") as f:
            f.write("database = %s\n[abusectl]\nour_hosts = smtp.ourmail.example\n" % self.dsn)
        samples = os.path.join(os.path.dirname(__file__), "..", "data", "eml")
        p = run_abusectl(["-c", conf, "case", "open", "--json", "--reporter", "abuse@example.com",
                          os.path.join(samples, "spam_plain.eml"), os.path.join(samples, "spam_forged.eml")],
                         env={"SUDO_USER": ACTOR})
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual(out["case"], int(query_value(self.dsn, "SELECT max(id) FROM abuse_case")))
        self.assertEqual(out["account"], "bob@example.org")
        plain, forged = out["copies"]
        self.assertEqual((plain["file"], plain["our_hop"], plain["queue_id"], plain["client_ip"]),
                         ("spam_plain.eml", True, "4XABCDEF12", "198.51.100.7"))
        self.assertFalse(forged["our_hop"])
        self.assertTrue(any("forged" in n for n in forged["notes"]), forged["notes"])
