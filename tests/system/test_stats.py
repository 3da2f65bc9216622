"""abusectl stats: an account's outbound traffic from the event log, against its own baseline
and every other account. The event_log rows come from a real policyd driven through the
policy protocol (authenticated submissions: RCPT per recipient, then END-OF-MESSAGE), never
from INSERTs; testing.clock_offset places traffic in later hours and days, and each check
passes explicit --since/--until windows accordingly.

Timeline (D0 = the UTC day of the first row, P = 6h, S = D0 + 24h, U = S + P):
  phase A  now          ordinary accounts o1..o6 (4 messages each), the spammer (1 message)
                        and the limited account (1 message): the baseline [D0, S) = 4 x P
  phase B  S + 1h       o1..o6 (2 messages each), the limited account (2 sent, then 2
                        recipients refused with 452), the spammer's first burst
  phase C  S + 3h       the spammer's second burst, from another client, login in upper case;
                        a newcomer's burst (an account with no traffic before)
  phase D  S + 26h      one more spammer message, on the next UTC day (outside [S, U)), and
                        one from a login with non-ASCII letters, spelled in capitals
"""

import contextlib
import json
import re
import time
import unittest

from harness import SystemTestCase, new_instance, psql, query_value, run_abusectl, sql_quote, unique_word

P = 6 * 3600
QUIET = {
    "greylist.enable": "no", "flood.enable": "no", "rdns.enable": "no",
    "limits.messages": "none", "limits.recipients": "none", "limits.bytes": "none",
    "limits.distinct_recipients": "none", "limits.distinct_domains": "none",
}
ORDINARY_CLIENT = "198.51.100.7"
SPAM_CLIENT_B = "203.0.113.50"
SPAM_CLIENT_C = "2001:db8::66"


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def day(t):
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def one_line(text):
    return text.endswith("\n") and "\n" not in text[:-1]


class Traffic:
    """What the test sent, per login and phase, to compare with abusectl's figures."""

    def __init__(self):
        self.sent = {}  # (login, phase) -> list of (recipients, size, client)

    def add(self, login, phase, recipients, size, client):
        self.sent.setdefault((login, phase), []).append((list(recipients), size, client))

    def figures(self, login, phases):
        msgs = [m for ph in phases for m in self.sent.get((login, ph), [])]
        rcpts = [r.lower() for m in msgs for r in m[0]]
        clients = {}
        for m in msgs:
            clients[m[2]] = clients.get(m[2], 0) + 1
        return {"messages": len(msgs), "recipients": len(rcpts), "bytes": sum(m[1] for m in msgs),
                "distinct_recipients": len(set(rcpts)),
                "distinct_domains": len({r.rsplit("@", 1)[1] for r in rcpts}), "clients": clients}


class StatsTest(SystemTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.traffic = Traffic()
        w = unique_word(6)
        cls.ordinary = ["o%d.%s@customers.example" % (i, w) for i in range(1, 7)]
        cls.spammer = "spam.%s@customers.example" % w
        cls.limited = "lim.%s@customers.example" % w
        cls.newcomer = "new.%s@customers.example" % w
        cls.umlaut = "jörg.%s@customers.example" % w
        cls.contacts = ["friend%s@family%s.example" % (c, c) for c in "abcd"]

        # Phase A: now. Everyone's baseline.
        with cls.phase("a", 0) as c:
            for login in cls.ordinary:
                for i in range(4):
                    cls.send(c, "a", login, [cls.contacts[i % 4]], 1000 + i)
            cls.send(c, "a", cls.spammer, ["someone@family.example"], 2000)
            cls.send(c, "a", cls.limited, [cls.contacts[0]], 500)
        first = int(float(query_value(cls.dsn, "SELECT extract(epoch FROM min(ts)) FROM event_log")))
        cls.d0 = first - first % 86400
        cls.S = cls.d0 + 86400
        cls.U = cls.S + P

        # The limited account may send 2 messages per hour from phase B on.
        psql(cls.dsn, "INSERT INTO send_limit (scope, subject, measure, window_s, max_value)"
                      " VALUES ('account', %s, 'messages', 3600, 2)" % sql_quote(cls.limited))

        # Phase B: S + 1h.
        with cls.phase("b", cls.S + 3600 + 60) as c:
            for login in cls.ordinary:
                for i in range(2):
                    cls.send(c, "b", login, [cls.contacts[i], cls.contacts[i + 1]], 3000 + i)
            for i in range(2):
                cls.send(c, "b", cls.limited, [cls.contacts[i]], 700)
            inst = new_instance()
            for r in ("x1@elsewhere.example", "x2@elsewhere.example"):
                reply = cls.rcpt(c, cls.limited, r, inst, ORDINARY_CLIENT)
                assert reply.startswith("452 4.7.1 Sending limit reached"), reply
            # The spammer: 20 messages of 6 recipients on 15 domains (some addresses twice,
            # some domains spelled in capitals).
            for i in range(20):
                rcpts = ["u%d@Victims%d.example" % (n % 100, n % 100 % 15) for n in range(i * 6, i * 6 + 6)]
                cls.send(c, "b", cls.spammer, rcpts, 10000 + i, SPAM_CLIENT_B)

        # Phase C: S + 3h, another client; the login as the client typed it, in capitals.
        with cls.phase("c", cls.S + 3 * 3600 + 60) as c:
            for i in range(10):
                rcpts = ["v%d@victims%d.example" % (i * 4 + k, k) for k in range(4)]
                cls.send(c, "c", cls.spammer, rcpts, 20000 + i, SPAM_CLIENT_C, as_login=cls.spammer.upper())
            # More than the spammer in this hour, on every figure.
            for i in range(12):
                rcpts = ["fresh%d@new%d.example" % (i * 5 + k, (i * 5 + k) % 7) for k in range(5)]
                cls.send(c, "c", cls.newcomer, rcpts, 30000, ORDINARY_CLIENT)

        # Phase D: the next UTC day, outside [S, U).
        with cls.phase("d", cls.S + 26 * 3600 + 60) as c:
            cls.send(c, "d", cls.spammer, ["late@victims0.example"], 999, SPAM_CLIENT_B)
            cls.send(c, "d", cls.umlaut, ["oma@family.example", "opa@family.example"], 4321,
                     as_login=cls.umlaut.upper())

    # -- traffic ---------------------------------------------------------------------------
    @classmethod
    def phase(cls, name, at):
        """A policyd whose clock reads `at` (epoch seconds; 0: the real clock), as a context
        manager yielding a client; the daemon is stopped (event log flushed) on exit."""

        @contextlib.contextmanager
        def run():
            opts = None
            if at:
                offset = int(at - time.time())
                assert offset > 0, offset
                opts = ["testing.clock_offset=%ds" % offset]
            d = cls.class_policyd(dict(QUIET), name="stats-" + name, extra_opts=opts)
            c = d.client()
            try:
                yield c
            finally:
                c.close()
                assert d.stop() == 0, d.log_text()

        return run()

    @classmethod
    def rcpt(cls, c, login, recipient, inst, client):
        return c.request(protocol_state="RCPT", recipient=recipient, instance=inst, size="0", recipient_count="0",
                         sasl_method="PLAIN", sasl_username=login, sender=login, client_address=client)

    @classmethod
    def send(cls, c, phase, login, recipients, size, client=ORDINARY_CLIENT, as_login=None):
        """One accepted message: RCPT per recipient, then END-OF-MESSAGE (same instance)."""
        inst = new_instance()
        who = as_login or login
        for r in recipients:
            reply = cls.rcpt(c, who, r, inst, client)
            assert reply == "DUNNO", (login, r, reply)
        reply = c.request(protocol_state="END-OF-MESSAGE", recipient=recipients[0] if len(recipients) == 1 else "",
                          instance=inst, size=str(size), recipient_count=str(len(recipients)), sasl_method="PLAIN",
                          sasl_username=who, sender=who, client_address=client)
        assert reply == "DUNNO", (login, reply)
        cls.traffic.add(login, phase, recipients, size, client)

    # -- abusectl --------------------------------------------------------------------------
    def ctl(self, *args, env=None):
        return run_abusectl(["-d", self.dsn, "stats"] + list(args), env=env)

    def stats(self, login, since, until, *more):
        p = self.ctl(login, "--since", iso(since), "--until", iso(until), "--json", *more)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        self.assertTrue(one_line(p.stdout), p.stdout)
        return json.loads(p.stdout)

    def assertTotals(self, st, login, phases):
        want = self.traffic.figures(login, phases)
        t = st["totals"]
        self.assertEqual({k: t[k] for k in ("messages", "recipients", "bytes", "distinct_recipients",
                                            "distinct_domains")},
                         {k: want[k] for k in ("messages", "recipients", "bytes", "distinct_recipients",
                                               "distinct_domains")})
        self.assertEqual({c["address"]: c["messages"] for c in st["clients"]}, want["clients"])
        self.assertEqual(t["clients"], len(want["clients"]))
        return want

    # -- tests -----------------------------------------------------------------------------
    def test_spammer_figures_are_exact(self):
        st = self.stats(self.spammer, self.S, self.U)
        self.assertEqual((st["account"], st["since"], st["until"], st["days"]), (self.spammer, iso(self.S),
                                                                                iso(self.U), 0.25))
        want = self.assertTotals(st, self.spammer, "bc")
        self.assertEqual((want["messages"], want["recipients"], want["distinct_domains"]), (30, 160, 15))
        self.assertEqual(want["distinct_recipients"], 140)  # 20 addresses twice
        self.assertEqual(st["totals"]["refused"], 0)
        self.assertEqual(st["totals"]["peak_messages_per_hour"], 20)
        self.assertEqual(st["figures"]["messages_per_day"], 30 / 0.25)
        self.assertEqual(st["figures"]["bytes_per_day"], want["bytes"] / 0.25)
        # Per UTC hour and day: phase B in hour S+1h, phase C in hour S+3h.
        b, c = self.traffic.figures(self.spammer, "b"), self.traffic.figures(self.spammer, "c")
        self.assertEqual([(h["hour"], h["messages"], h["recipients"], h["bytes"], h["distinct_recipients"],
                           h["distinct_domains"], h["refused"]) for h in st["per_hour"]],
                         [(iso(self.S + 3600), 20, b["recipients"], b["bytes"], b["distinct_recipients"],
                           b["distinct_domains"], 0),
                          (iso(self.S + 3 * 3600), 10, c["recipients"], c["bytes"], c["distinct_recipients"],
                           c["distinct_domains"], 0)])
        self.assertEqual([(d["day"], d["messages"], d["distinct_recipients"]) for d in st["per_day"]],
                         [(day(self.S), 30, want["distinct_recipients"])])
        # Clients, busiest first, seen within their hour.
        self.assertEqual([c["address"] for c in st["clients"]], [SPAM_CLIENT_B, SPAM_CLIENT_C])
        for cl, hour in zip(st["clients"], (self.S + 3600, self.S + 3 * 3600)):
            self.assertTrue(iso(hour) <= cl["first_seen"] <= cl["last_seen"] < iso(hour + 3600), cl)

    def test_baseline_is_the_mean_of_the_four_periods_before(self):
        st = self.stats(self.spammer, self.S, self.U)
        base = st["baseline"]
        self.assertEqual((base["since"], base["until"], base["periods"], base["periods_covered"],
                          base["log_first_day"]), (iso(self.d0), iso(self.S), 4, 4, day(self.d0)))
        # One message of 2000 bytes to one address in 4 periods of 6h: 1 message/day.
        self.assertEqual(base["values"], {"messages_per_day": 1, "recipients_per_day": 1, "bytes_per_day": 2000,
                                          "distinct_recipients": 0.25, "distinct_domains": 0.25,
                                          "peak_messages_per_hour": 0.25})
        self.assertEqual(base["ratios"]["messages_per_day"], 120)
        self.assertEqual(base["ratios"]["distinct_domains"], 60)
        # An ordinary account: 4 messages in the baseline (1 per period), 2 now.
        st = self.stats(self.ordinary[0], self.S, self.U)
        self.assertEqual(st["baseline"]["values"]["messages_per_day"], 4)
        self.assertEqual(st["baseline"]["ratios"]["messages_per_day"], 2)
        # Periods before the event log's first day are not counted as quiet ones.
        st = self.stats(self.spammer, self.S, self.U, "--baseline", "8")
        self.assertEqual((st["baseline"]["periods"], st["baseline"]["periods_covered"]), (8, 4))
        self.assertEqual(st["baseline"]["values"]["messages_per_day"], 1)
        st = self.stats(self.spammer, self.d0, self.S)
        self.assertEqual(st["baseline"]["periods_covered"], 0)
        self.assertEqual(set(st["baseline"]["values"].values()), {None})
        self.assertEqual(set(st["baseline"]["ratios"].values()), {None})

    def test_spammer_is_unusual_on_volume_and_breadth(self):
        st = self.stats(self.spammer, self.S, self.U)
        self.assertEqual(st["population"]["accounts"], 9)
        self.assertEqual(st["population"]["percentiles"], {k: 100 for k in st["figures"]})
        self.assertEqual(st["unusual"], ["messages_per_day", "recipients_per_day", "bytes_per_day",
                                         "distinct_recipients", "distinct_domains", "peak_messages_per_hour"])
        self.assertEqual(len(st["findings"]), 6)
        self.assertEqual(st["findings"][0], "messages per day: 120, 120× its own baseline (1/day), "
                                            "above all 8 other accounts — unusual")
        self.assertRegex(st["findings"][3], r"^distinct recipients: \d+, \d+× its own baseline "
                                            r"\(0\.25 per 6h\), above all 8 other accounts — unusual$")
        self.assertEqual(st["population"]["medians"]["messages_per_day"], 8)  # 2 messages in 6h

    def test_without_a_baseline_the_percentile_decides(self):
        # In [S+2h, U) the newcomer outsends the spammer. Its baseline (4 periods of 4h
        # before) holds nothing: zero is no yardstick, so the percentile alone decides.
        st = self.stats(self.newcomer, self.S + 2 * 3600, self.U)
        self.assertTotals(st, self.newcomer, "c")
        self.assertEqual((st["baseline"]["periods_covered"], st["baseline"]["values"]["messages_per_day"],
                          st["baseline"]["ratios"]["messages_per_day"]), (4, 0, None))
        self.assertEqual(st["population"]["accounts"], 2)
        self.assertEqual(len(st["unusual"]), 6)
        self.assertEqual(st["findings"][0], "messages per day: 72, none in its baseline, above the only other "
                                            "account — unusual")
        # The spammer, second there, is above none; over [d0, S) the newcomer has no rows at
        # all, and no baseline is covered: nothing is unusual without a high percentile.
        st = self.stats(self.spammer, self.S + 2 * 3600, self.U)
        self.assertEqual((st["population"]["percentiles"]["messages_per_day"], st["unusual"]), (0, []))
        st = self.stats(self.spammer, self.d0, self.S)
        self.assertEqual((st["baseline"]["periods_covered"], st["unusual"], st["findings"]),
                         (0, [], ["nothing unusual"]))

    def test_ordinary_account_is_not_unusual(self):
        for login in self.ordinary:
            st = self.stats(login, self.S, self.U)
            self.assertTotals(st, login, "b")
            self.assertEqual(st["unusual"], [], login)
            self.assertEqual(st["findings"], ["nothing unusual"], login)
            for fig, pct in st["population"]["percentiles"].items():
                self.assertLess(pct, 95, (login, fig))

    def test_refused_attempts_are_counted_apart(self):
        st = self.stats(self.limited, self.S, self.U)
        self.assertTotals(st, self.limited, "b")
        self.assertEqual((st["totals"]["messages"], st["totals"]["refused"]), (2, 2))
        self.assertEqual([(h["messages"], h["refused"]) for h in st["per_hour"]], [(2, 2)])
        self.assertIn("refused requests: 2 (deferred, rejected or held: the account hit a limit or was blocked)",
                      st["findings"])
        self.assertNotIn("nothing unusual", st["findings"])

    def test_windows_select_hours_and_days(self):
        h = 3600
        st = self.stats(self.spammer, self.S, self.S + 2 * h)
        self.assertTotals(st, self.spammer, "b")
        st = self.stats(self.spammer, self.S + 2 * h, self.U)
        self.assertTotals(st, self.spammer, "c")
        st = self.stats(self.spammer, self.S + 2 * h, self.S + 3 * h)
        self.assertEqual((st["totals"]["messages"], st["per_hour"], st["clients"]), (0, [], []))
        st = self.stats(self.spammer, self.S, self.S + 2 * 86400)
        self.assertTotals(st, self.spammer, "bcd")
        self.assertEqual([(d["day"], d["messages"]) for d in st["per_day"]],
                         [(day(self.S), 30), (day(self.S + 86400), 1)])
        # The baseline window itself, and the default window (the last 7 days up to now),
        # which holds phase A only: phases B to D lie in the future.
        st = self.stats(self.ordinary[1], self.d0, self.S)
        self.assertTotals(st, self.ordinary[1], "a")
        for args in ([], ["--since", "1h", "--until", "now"], ["--since", "7d"]):
            p = self.ctl(self.ordinary[1], "--json", *args)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTotals(json.loads(p.stdout), self.ordinary[1], "a")

    def test_login_and_times_in_any_spelling(self):
        st = self.stats(self.spammer.upper(), self.S, self.U)
        self.assertEqual((st["account"], st["totals"]["messages"]), (self.spammer, 30))
        for login in (self.umlaut, self.umlaut.upper(), self.umlaut.title()):
            st = self.stats(login, self.S + 86400, self.S + 2 * 86400)
            self.assertEqual(st["account"], self.umlaut)
            self.assertTotals(st, self.umlaut, "d")
        s = time.gmtime(self.S)
        local = time.strftime("%Y-%m-%dT01:%M", s) + "+01:00"  # S is midnight UTC
        for since in (local, time.strftime("%Y-%m-%d", s), time.strftime("%Y-%m-%dT%H:%M", s),
                      time.strftime("%Y-%m-%d %H:%M:%S", s), iso(self.S).lower()):
            p = self.ctl(self.spammer, "--since", since, "--until", iso(self.U), "--json")
            self.assertEqual(p.returncode, 0, (since, p.stderr))
            self.assertEqual(json.loads(p.stdout)["since"], iso(self.S), since)

    def test_text_report_and_chart(self):
        args = [self.spammer, "--since", iso(self.S), "--until", iso(self.U)]
        p = self.ctl(*args, env={"LANG": "C"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")  # stderr is not a terminal: no progress notes
        self.assertTrue(p.stdout.startswith(
            "%s: %s to %s (6h)\nbaseline: 4 periods of 6h before, from %s\npopulation: 9 accounts sent in the period\n"
            % (self.spammer, iso(self.S), iso(self.U), iso(self.d0))), p.stdout)
        self.assertRegex(p.stdout, r"(?m)^FIGURE\s+VALUE\s+BASELINE\s+RATIO\s+ABOVE\s+MEDIAN\s+P95\s+NOTE$")
        self.assertRegex(p.stdout, r"(?m)^messages per day\s+120\s+1\s+120×\s+100%\s+8\s+\S+\s+unusual$")
        self.assertIn("findings:\n  messages per day: 120, 120×", p.stdout)
        self.assertRegex(p.stdout, r"(?m)^%s\s+20\s" % re.escape(SPAM_CLIENT_B))
        # Not a terminal: no chart unless asked for.
        self.assertNotIn("per hour (UTC)", p.stdout)
        p = self.ctl(self.spammer, "--since", iso(self.S), "--until", iso(self.U), "--baseline", "8")
        self.assertIn("\nbaseline: 4 periods of 6h before, from %s (8 asked for; the event log starts %s)\n"
                      % (iso(self.d0), day(self.d0)), p.stdout)
        p = self.ctl(self.spammer, "--since", iso(self.d0), "--until", iso(self.S))
        self.assertIn("\nbaseline: none (the event log does not reach back to %s)\n" % iso(self.d0 - 4 * 86400),
                      p.stdout)
        p = self.ctl(*args, "--no-chart", env={"LANG": "C"})
        self.assertNotIn("per hour (UTC)", p.stdout)
        p = self.ctl(*args, "--chart", env={"LANG": "C", "COLUMNS": "60"})
        self.assertEqual(p.returncode, 0, p.stderr)
        chart = p.stdout[p.stdout.index("messages per hour (UTC)"):]
        h1, h3 = time_label(self.S + 3600), time_label(self.S + 3 * 3600)
        lines = chart.splitlines()
        self.assertEqual(lines[1], "%s  %s 20" % (h1, "#" * (60 - 16 - 2 - 1 - 2)))
        self.assertEqual(lines[2], "%s  %s 10" % (h3, "#" * 20))
        self.assertEqual(lines[3], "")
        self.assertEqual(lines[4], "distinct recipients per hour (UTC)")
        self.assertRegex(lines[5], r"^%s  #+ \d+$" % h1)
        for line in lines:
            self.assertLessEqual(len(line), 60, line)
        p = self.ctl(*args, "--chart", env={"LANG": "C.UTF-8", "COLUMNS": "60"})
        self.assertIn("%s  %s 20\n" % (h1, "█" * 39), p.stdout)
        self.assertIn("%s  %s▌ 10\n" % (h3, "█" * 19), p.stdout)

    def test_account_without_traffic_in_the_period(self):
        # Known from the account table alone: zeros, exit 0.
        quiet = "quiet.%s@customers.example" % unique_word(6)
        query_value(self.dsn, "SELECT lupine_set_account_state(%s, 'restricted', 'tester', 'x')" % sql_quote(quiet))
        st = self.stats(quiet, self.S, self.U)
        self.assertEqual((st["totals"]["messages"], st["per_hour"], st["findings"]), (0, [], ["nothing unusual"]))
        self.assertEqual(st["population"]["accounts"], 9)

    def test_unknown_account_exits_1(self):
        for login in ("nobody@customers.example", self.spammer + ".x"):
            p = self.ctl(login)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertEqual(p.stdout, "")
            self.assertEqual(p.stderr, "abusectl stats: no activity recorded for %s\n" % login)

    def test_bad_arguments_exit_2(self):
        cases = [(["--since", "yesterday"], "bad --since 'yesterday'"),
                 (["--since", "2026-13-01"], "bad --since '2026-13-01': no such date"),
                 (["--since", "2026-02-29"], "no such date"),
                 (["--until", "2026-11-20T24:00"], "bad --until '2026-11-20T24:00': no such time"),
                 (["--until", "2026-11-20T14:00+01:00x"], "bad offset"),
                 (["--since", "2026-11-20T14:00:00.5Z"], "fractions"),
                 (["--since", "7x"], "bad --since '7x': unknown unit"),
                 (["--since", "7"], "needs a unit"),
                 (["--since", ""], "bad --since ''"),
                 (["--since", "99999999999w"], "too far back"),
                 (["--since", "now", "--until", "1h"], "is not before --until"),
                 (["--baseline", "53"], "bad --baseline"),
                 (["--chart", "--no-chart"], "exclude each other"),
                 (["--bogus"], ""),
                 (["a", "b"], "")]
        for args, text in cases:
            args = args if args[0] == "a" else ["u@customers.example"] + args
            p = run_abusectl(["-d", "host=%s/no-server dbname=x" % self.tmpdir, "stats"] + args)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertEqual(p.stdout, "", args)
            self.assertTrue(one_line(p.stderr) and p.stderr.startswith("abusectl stats: "), (args, p.stderr))
            self.assertIn(text, p.stderr, args)
        p = run_abusectl(["stats"])
        self.assertEqual(p.returncode, 2, p.stderr)

    def test_database_down_is_one_line_and_exit_1(self):
        p = run_abusectl(["-d", "host=%s/no-server dbname=x" % self.tmpdir, "stats", self.spammer])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertTrue(one_line(p.stderr), repr(p.stderr))
        self.assertTrue(p.stderr.startswith("abusectl stats: cannot connect to the database"), p.stderr)


def time_label(t):
    return time.strftime("%Y-%m-%d %H:00", time.gmtime(t))


if __name__ == "__main__":
    unittest.main()
