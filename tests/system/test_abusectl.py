"""abusectl: help and usage errors, `db migrate` / `db status` (text and JSON), where the
database comes from (-d, $LUPINE_DATABASE, -c FILE), and its interplay with policyd."""

import json
import os
import unittest

from harness import (SystemTestCase, run_abusectl, run_policyd, create_database, drop_database,
                     query_value, free_port, unique_word, migrations)

# Derived from sql/ so that a new migration does not break these tests.
MIGRATIONS = migrations()
NAMES = [name for _, name in MIGRATIONS]
LATEST = MIGRATIONS[-1][0]


class AbusectlUsageTest(SystemTestCase):
    needs_database = False

    def test_help(self):
        p = run_abusectl(["--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("Usage: abusectl", p.stdout)
        self.assertRegex(p.stdout, r"(?m)^\s+db\s+")

    # Regression test. The bug it caught, now fixed: `abusectl db --help` (and `db -h`) exits 2 with "abusectl db:
    # expected migrate or status" on stderr. abusectl/main.cpp declares --help as a global
    # option, so the global parser swallows it (vm["help"] set, never looked at once a
    # command is named) and cmd_db gets an empty argument list. Intended: the db usage on
    # stdout, exit 0.
    def test_db_help(self):
        p = run_abusectl(["db", "--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("migrate", p.stdout)
        self.assertIn("status", p.stdout)
        self.assertIn("--json", p.stdout)

    def test_unknown_command(self):
        p = run_abusectl(["frobnicate"])
        self.assertEqual(p.returncode, 2)
        self.assertIn("frobnicate", p.stderr)
        self.assertEqual(p.stdout, "")

    def test_no_command(self):
        p = run_abusectl([])
        self.assertEqual(p.returncode, 2)
        self.assertIn("Usage", p.stderr)

    def test_db_without_action(self):
        p = run_abusectl(["-d", "dbname=x", "db"])
        self.assertEqual(p.returncode, 2)
        p = run_abusectl(["-d", "dbname=x", "db", "explode"])
        self.assertEqual(p.returncode, 2)

    def test_cannot_connect(self):
        dsn = "host=%s/no-server dbname=x" % self.tmpdir
        for args in (["-d", dsn, "db", "status"], ["-d", dsn, "db", "migrate"]):
            p = run_abusectl(args)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertTrue(p.stderr.startswith("abusectl db: cannot connect to the database"), p.stderr)

    def test_missing_config_file(self):
        p = run_abusectl(["-c", os.path.join(self.tmpdir, "nope.conf"), "db", "status"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("nope.conf", p.stderr)


class AbusectlDbTest(SystemTestCase):
    needs_database = False  # each test makes its own

    def fresh(self):
        name, dsn = create_database()
        self.addCleanup(drop_database, name)
        return dsn

    def test_migrate_then_current(self):
        dsn = self.fresh()
        p = run_abusectl(["-d", dsn, "db", "migrate"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.splitlines(),
                         ["applied " + n for n in NAMES] + ["schema version 0 -> %d" % LATEST])
        p = run_abusectl(["-d", dsn, "db", "migrate"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "schema is current (version %d)" % LATEST)
        rows = query_value(dsn, "SELECT string_agg(version || ' ' || name, ',' ORDER BY version) "
                                "FROM schema_migrations")
        self.assertEqual(rows, ",".join("%d %s" % m for m in MIGRATIONS))
        for table in ("greylist", "greylist_awl", "allowlist", "event_log", "event_log_default"):
            self.assertEqual(query_value(dsn, "SELECT to_regclass('%s') IS NOT NULL" % table), "t", table)

    def test_status(self):
        dsn = self.fresh()
        p = run_abusectl(["-d", dsn, "db", "status", "--json"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout),
                         {"schema_version": 0, "latest": LATEST, "pending": len(MIGRATIONS)})
        self.assertEqual(run_abusectl(["-d", dsn, "db", "migrate"]).returncode, 0)
        p = run_abusectl(["-d", dsn, "db", "status", "--json"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), '{"schema_version":%d,"latest":%d,"pending":0}' % (LATEST, LATEST))
        p = run_abusectl(["-d", dsn, "db", "status"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("schema version %d" % LATEST, p.stdout)
        self.assertIn("0 pending", p.stdout)

    def test_migrate_json(self):
        dsn = self.fresh()
        p = run_abusectl(["-d", dsn, "db", "migrate", "--json"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {"from": 0, "to": LATEST, "applied": NAMES})
        p = run_abusectl(["-d", dsn, "db", "migrate", "--json"])
        self.assertEqual(json.loads(p.stdout), {"from": LATEST, "to": LATEST, "applied": []})

    def test_database_from_environment(self):
        dsn = self.fresh()
        p = run_abusectl(["db", "status", "--json"], env={"LUPINE_DATABASE": dsn})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["schema_version"], 0)
        p = run_abusectl(["db", "migrate"], env={"LUPINE_DATABASE": dsn})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("applied %s" % NAMES[0], p.stdout)

    def test_d_wins_over_environment(self):
        dsn = self.fresh()
        p = run_abusectl(["-d", dsn, "db", "status", "--json"],
                         env={"LUPINE_DATABASE": "host=%s/nothing dbname=x" % self.tmpdir})
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_password_in_d_is_refused_and_password_file_is_used(self):
        secret = "pw-" + unique_word(10)
        p = run_abusectl(["-d", "%s password=%s" % (self.fresh(), secret), "db", "status"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("-d holds a password", p.stderr)
        self.assertNotIn(secret, p.stdout + p.stderr)
        # From the config file, with db.password_file (trust authentication ignores the value,
        # but a loose file is refused before connecting).
        dsn = self.fresh()
        pw = os.path.join(self.tmpdir, "pw-%s" % unique_word(5))
        with open(pw, "w") as f:
            f.write(secret + "\n")
        conf = os.path.join(self.tmpdir, "policyd-%s.conf" % unique_word(5))
        with open(conf, "w") as f:
            f.write("database = %s\ndb.password_file = %s\n" % (dsn, pw))
        os.chmod(pw, 0o644)
        p = run_abusectl(["-c", conf, "db", "status"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("chmod 0600", p.stderr)
        os.chmod(pw, 0o600)
        p = run_abusectl(["-c", conf, "db", "status"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(secret, p.stdout + p.stderr)

    def test_database_from_policyd_config_file(self):
        dsn = self.fresh()
        path = os.path.join(self.tmpdir, "policyd-%s.conf" % unique_word(5))
        with open(path, "w") as f:
            f.write("# a full policyd file: abusectl reads only `database`\n"
                    "name = mx1\nlisten = inet:127.0.0.1:10031\ndatabase = %s\n\n"
                    "[greylist]\ndelay = 300s\n\n[event_log]\nretention = 180d\n" % dsn)
        p = run_abusectl(["-c", path, "db", "migrate"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("schema version 0 -> %d" % LATEST, p.stdout)
        p = run_abusectl(["-c", path, "db", "status", "--json"])
        self.assertEqual(json.loads(p.stdout), {"schema_version": LATEST, "latest": LATEST, "pending": 0})

    def test_policyd_after_abusectl_migrate_and_vice_versa(self):
        # policyd with db.migrate = no refuses an unmigrated database, with a hint...
        dsn = self.fresh()
        path = os.path.join(self.tmpdir, "nomig-%s.conf" % unique_word(5))
        with open(path, "w") as f:
            f.write("listen = inet:127.0.0.1:%d\ndatabase = %s\ndb.migrate = no\n" % (free_port(), dsn))
        p = run_policyd(["-c", path], timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("abusectl db migrate", p.stderr)
        # ... and starts once abusectl migrated it.
        self.assertEqual(run_abusectl(["-d", dsn, "db", "migrate"]).returncode, 0)
        d = self.policyd({"db.migrate": "no", "greylist.delay": "1h"}, dsn=dsn, name="nomig")
        with d.client() as c:
            self.assertRegex(c.request(sender="m.%s@s.example" % unique_word()), r"^DEFER_IF_PERMIT ")
        self.assertEqual(d.stop(), 0)
        # A database migrated by policyd is current for abusectl.
        dsn2 = self.fresh()
        d2 = self.policyd({"greylist.delay": "1h"}, dsn=dsn2, name="mig")
        p = run_abusectl(["-d", dsn2, "db", "migrate"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "schema is current (version %d)" % LATEST)
        self.assertEqual(d2.stop(), 0)


if __name__ == "__main__":
    unittest.main()
