"""Faults with nothing lost: PostgreSQL stopped while traffic flows, SIGTERM and kill -9
while it is away, a full disk under the spill directory, a damaged spill segment.

The suite runs its own PostgreSQL cluster (scripts/pg_up.sh in a temp dir) because it
stops and starts it; the other suites share the one scripts/test.sh started. Every test
counts the requests policyd answered and the event_log rows stored: equal, or the
difference is exactly what policyd reported as lost.
"""

import os
import re
import shutil
import subprocess
import time
import unittest

from harness import (ROOT, SystemTestCase, free_port, make_tmpdir, query_rows, query_value, run_policyd,
                     sql_quote, unique_word, wait_query, wait_until, EX_CONFIG)

PG_UP = os.path.join(ROOT, "scripts", "pg_up.sh")


def pg(cmd_dir, stop=False):
    args = [PG_UP, "--stop", cmd_dir] if stop else [PG_UP, cmd_dir, "faults"]
    env = dict(os.environ, LUPINE_PG_FSYNC="off")
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    if out.returncode != 0:
        raise AssertionError("pg_up.sh failed: %s" % out.stderr)
    return out.stdout.strip()


# Settings that make an outage visible within a test's time: quick flushes and retries,
# time-based spilling after 300 ms, and a small memory bound.
FAST = {"greylist.delay": "1h", "event_log.flush_interval": "100ms", "event_log.spill_after": "300ms",
        "event_log.max_buffer_rows": "100", "server.shutdown_grace": "2s", "accounts.refresh_interval": "1h",
        "greylist.on_db_error": "dunno", "flood.enable": "no"}


class FaultTest(SystemTestCase):
    needs_database = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pgdir = os.path.join(make_tmpdir(), "pg")
        cls.addClassCleanup(lambda: (pg(cls.pgdir, stop=True), shutil.rmtree(os.path.dirname(cls.pgdir), True)))
        cls.dsn = pg(cls.pgdir)

    def setUp(self):
        super().setUp()
        pg(self.pgdir)  # up at the start of every test, whatever the last one did

    def db_stop(self):
        pg(self.pgdir, stop=True)

    def db_start(self):
        pg(self.pgdir)

    def count_for(self, prefix, distinct=False):
        what = "count(DISTINCT postfix_instance)" if distinct else "count(*)"
        return int(query_value(self.dsn, "SELECT %s FROM event_log WHERE postfix_instance LIKE %s"
                               % (what, sql_quote(prefix + "%"))))

    def wait_rows(self, prefix, n, timeout=40.0):
        # The flusher backs off up to 30 s while the database is away; after it returns, the
        # next attempt comes within the current back-off.
        wait_until(lambda: self.count_for(prefix) >= n, timeout, interval=0.1,
                   what="%d event_log rows for %s" % (n, prefix))
        time.sleep(0.3)  # nothing more may arrive (no duplicates)
        return self.count_for(prefix)

    def send(self, d, prefix, start, n, state="RCPT", helo="mail.example.net"):
        """n requests on one connection; returns (actions, worst latency in s)."""
        actions, worst = [], 0.0
        with d.client() as c:
            for i in range(start, start + n):
                t = time.monotonic()
                actions.append(c.request(instance="%s%d" % (prefix, i), protocol_state=state, helo_name=helo,
                                         sender="s%s@x.example" % unique_word(6)))
                worst = max(worst, time.monotonic() - t)
        return actions, worst

    def spill_files(self, d, ext=".spill"):
        if not os.path.isdir(d.spill_dir):
            return []
        return sorted(f for f in os.listdir(d.spill_dir) if f.endswith(ext))

    def shutdown_counts(self, d):
        line = d.wait_for_log(r"shutdown_complete")[0]
        m = re.search(r"requests=(\d+) event_rows_written=(\d+) event_rows_lost=(\d+) event_rows_spilled=(\d+)", line)
        self.assertIsNotNone(m, line)
        return dict(zip(["requests", "written", "lost", "spilled"], map(int, m.groups())))

    # -----------------------------------------------------------------------------------
    def test_database_outage_while_traffic_flows(self):
        # Memory bound 1000 (twice that while a segment is being fsync'd): the bound, not
        # the clock, sends rows to disk here.
        d = self.policyd(dict(FAST, **{"event_log.max_buffer_rows": "1000", "event_log.spill_after": "5s"}),
                         name="fault-outage")
        p = "f1-%s-" % unique_word(6)
        before, _ = self.send(d, p, 0, 50)
        self.assertEqual(self.wait_rows(p, 50), 50)
        self.assertTrue(all(a.startswith("DEFER_IF_PERMIT") for a in before), before[:3])

        self.db_stop()
        # Decisions follow greylist.on_db_error = dunno, within the request budget, and
        # every row is kept: in memory up to 100, then on disk.
        during, worst = self.send(d, p, 50, 2500)
        self.assertEqual(set(during), {"DUNNO"})
        self.assertLess(worst, 5.0, "a decision took longer than policy.request_budget")
        d.wait_for_log(r"event_log_spilled", timeout=10)
        self.assertTrue(self.spill_files(d), "no spill segment on disk")

        self.db_start()
        self.assertEqual(self.wait_rows(p, 2550), 2550)
        self.assertEqual(self.count_for(p, distinct=True), 2550, "a row was stored twice")
        wait_until(lambda: not self.spill_files(d), 10, what="spill segments removed after replay")
        replayed = [re.search(r"segment=(\S+)", line).group(1) for line in d.log_lines(r"event_log_replayed")]
        self.assertTrue(replayed)
        self.assertEqual(replayed, sorted(replayed), "segments replayed out of order")
        recorded = query_rows(self.dsn, "SELECT segment, rows FROM event_log_spill WHERE policyd = 'fault-outage' "
                                        "ORDER BY segment")
        self.assertEqual(["fault-outage/" + s for s in replayed], [r[0] for r in recorded])
        self.assertEqual(d.stop(), 0)
        counts = self.shutdown_counts(d)
        self.assertEqual(counts["requests"], 2550)
        self.assertEqual(counts["lost"], 0)
        self.assertEqual(counts["written"], 2550)

    def test_sigterm_while_database_down_spills_and_next_start_replays_once(self):
        d = self.policyd(FAST, name="fault-term")
        p = "f2-%s-" % unique_word(6)
        self.db_stop()
        self.send(d, p, 0, 30, state="DATA")
        t = time.monotonic()
        self.assertEqual(d.stop(), 0)
        self.assertLess(time.monotonic() - t, 6.0, "shutdown waited too long for a dead database")
        counts = self.shutdown_counts(d)
        self.assertEqual((counts["requests"], counts["lost"], counts["spilled"]), (30, 0, 30))
        segments = self.spill_files(d)
        self.assertTrue(segments)
        keep = os.path.join(d.dir, "copy-of-" + segments[0])
        shutil.copy(os.path.join(d.spill_dir, segments[0]), keep)

        self.db_start()
        d.start()  # the same spill directory: the segments are found and replayed
        self.assertEqual(self.wait_rows(p, 30), 30)
        d.wait_for_log(r"event_log_spill_found segments=\d+ rows=30")
        # The same segment again (as if policyd died between the commit and the unlink):
        # recognised, not stored twice.
        self.assertEqual(d.stop(), 0)
        shutil.copy(keep, os.path.join(d.spill_dir, segments[0]))
        d.start()
        d.wait_for_log(r"event_log_replay_skipped segment=%s reason=already_stored" % re.escape(segments[0]))
        self.assertEqual(self.count_for(p), 30)
        self.assertEqual(self.spill_files(d), [])

    def test_kill_9_while_database_down_loses_only_unspilled_rows(self):
        d = self.policyd(FAST, name="fault-kill")
        p = "f3-%s-" % unique_word(6)
        self.db_stop()
        self.send(d, p, 0, 40, state="DATA")
        # spill_after (300 ms) after the first failed write, the rows go to disk.
        wait_until(lambda: sum(int(m) for m in re.findall(r"event_log_spilled rows=(\d+)", d.log_text())) >= 40,
                   10, what="40 rows spilled")
        d.kill()
        self.db_start()
        d.start()
        self.assertEqual(self.wait_rows(p, 40), 40)

    def test_greylist_writes_wait_out_an_outage(self):
        # A 10 s write-behind interval: the first flush comes after the database is stopped.
        d = self.policyd(dict(FAST, **{"greylist.write_behind": "10s"}), name="fault-grey")
        w = unique_word(6)
        triplets = [("g%d.%s@s.example" % (i, w), "r%d.%s@rcpt.example" % (i, w)) for i in range(20)]
        with d.client() as c:
            for s, r in triplets:
                self.assertRegex(c.request(sender=s, recipient=r), r"^DEFER_IF_PERMIT 4\.7\.1 Greylisted")
            self.db_stop()
            # Pending triplets answer from memory: early retries are deferred, not failed open.
            for s, r in triplets:
                self.assertRegex(c.request(sender=s, recipient=r), r"^DEFER_IF_PERMIT 4\.7\.1 Greylisted")
            # A triplet the database must be asked about follows greylist.on_db_error.
            self.assertEqual(c.request(sender="new.%s@s.example" % w, recipient="new@rcpt.example"), "DUNNO")
        d.wait_for_log(r"greylist_write_failed rows=20", timeout=20)
        self.db_start()
        wait_query(self.dsn, "SELECT count(*) FROM greylist WHERE sender LIKE 'g%%.%s@s.example' AND attempts = 2"
                   % w, "20", timeout=20)
        self.assertEqual(d.stop(), 0)
        self.assertIn("greylist_rows_lost=0", d.wait_for_log(r"shutdown_complete")[0])

    def test_full_disk_is_a_clear_error_and_the_loss_is_counted(self):
        mnt = os.path.join(make_tmpdir(), "small")
        os.makedirs(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", mnt], capture_output=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a small tmpfs here (needs root): %s" % r.stderr.decode().strip())
        self.addCleanup(lambda: subprocess.run(["umount", "-l", mnt]))
        d = self.policyd(dict(FAST, **{"event_log.spill_dir": mnt}), name="fault-full")
        p = "f4-%s-" % unique_word(6)
        self.db_stop()
        long_helo = "h" * 1000 + ".example"
        actions, _ = self.send(d, p, 0, 300, state="DATA", helo=long_helo)
        self.assertEqual(set(actions), {"DUNNO"}, "decisions must go on when the disk is full")
        line = d.wait_for_log(r"event_log_spill_failed", timeout=15)[0]
        self.assertIn("No space left on device", line)
        self.assertTrue(d.running())
        self.assertEqual(d.stop(), 0)
        counts = self.shutdown_counts(d)
        self.assertGreater(counts["lost"], 0)
        self.db_start()
        d.start()
        stored = self.wait_rows(p, counts["spilled"]) if counts["spilled"] else 0
        # Every request is either stored or reported lost: nothing unaccounted for.
        self.assertEqual(stored + counts["lost"], 300)

    def test_damaged_segment_is_kept_aside_and_the_log_goes_on(self):
        tmp = make_tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        os.makedirs(os.path.join(tmp, "spill"), mode=0o700)
        with open(os.path.join(tmp, "spill", "00000000000000000001-000001.spill"), "w") as f:
            f.write("LUPINE-SPILL 1 2\nnot a row\n")
        d = self.policyd(FAST, name="fault-bad", tmpdir=tmp)
        d.wait_for_log(r"event_log_spill_damaged", timeout=10)
        self.assertEqual(self.spill_files(d, ".bad"), ["00000000000000000001-000001.bad"])
        p = "f5-%s-" % unique_word(6)
        self.send(d, p, 0, 5, state="DATA")
        self.assertEqual(self.wait_rows(p, 5), 5)

    def test_unusable_spill_directory_is_refused_at_start(self):
        tmp = make_tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        blocker = os.path.join(tmp, "a-file")
        open(blocker, "w").close()
        conf = os.path.join(tmp, "p.conf")
        with open(conf, "w") as f:
            f.write("database = %s\nlisten = inet:127.0.0.1:%d\nevent_log.spill_dir = %s/sub\n"
                    % (self.dsn, free_port(), blocker))
        r = run_policyd(["-c", conf])
        self.assertEqual(r.returncode, EX_CONFIG, r.stderr)
        self.assertIn("event_log.spill_dir", r.stderr)


if __name__ == "__main__":
    unittest.main()
