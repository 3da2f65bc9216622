"""Database roles (sql/005_roles.sql). policyd connected as a member of lupine_policyd and
abusectl as a member of lupine_abusectl do their real work: greylisting, the event log,
sending limits and automatic restriction at END-OF-MESSAGE, the directory sync, the
maintenance task's partitions (within the owner's minimum retention); an investigation from
case open to restore, stats, limits, webmail, the review queue. What the roles must not do
is refused by PostgreSQL: neither rewrites the audit trail or the event log, policyd changes
no account by hand, lupine_dovecot reads dovecot_account only. A role that may not migrate
is told to run `abusectl db migrate` as the owner, and a non-superuser owner without
CREATEROLE is told which roles a superuser must create (on a private cluster, where the
roles do not exist yet).

Login roles are created per class (CREATE ROLE x LOGIN IN ROLE lupine_...) and dropped at
the end; the group roles are cluster-wide and stay."""

import datetime
import os
import re
import secrets
import shutil
import subprocess
import unittest

from harness import (ROOT, Policyd, SystemTestCase, _psql_binary, dsn_with_db, make_tmpdir,
                     migrate, new_instance, psql, query_rows, query_value, run_abusectl, run_policyd, sql_quote,
                     unique_word, wait_query, wait_until)

RESTRICTED = ("550 5.7.1 Account restricted to webmail: sending from mail programs is disabled, "
              "webmail still works")
TERMINATED = "550 5.7.1 Account closed"
WEBMAIL_NET = "192.0.2.0/24"
SUBMIT_CLIENT = "198.51.100.20"
DENIED = r"permission denied|must be owner"
ACTOR = "investigator"
EML = os.path.join(ROOT, "tests", "data", "eml", "spam_plain.eml")

QUIET = {"rdns.enable": "no", "flood.enable": "no"}
LIMITS = {"limits.messages": "2/1h", "limits.recipients": "none", "limits.bytes": "none",
          "limits.distinct_recipients": "none", "limits.distinct_domains": "none",
          "limits.auto_restrict": "distinct_recipients=5/1h"}


def dsn_with_user(dsn, user):
    """The same DSN with user replaced (or added)."""
    if re.search(r"(^|\s)user\s*=", dsn):
        return re.sub(r"(^|\s)user\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", lambda m: m.group(1) + "user=" + user, dsn,
                      count=1)
    return (dsn + " user=" + user).strip()


def run_sql(dsn, sql):
    """psql as whoever dsn names; returns (exit code, stdout, stderr)."""
    p = subprocess.run([_psql_binary(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, universal_newlines=True)
    return p.returncode, p.stdout, p.stderr


def utc_today():
    return datetime.datetime.now(datetime.timezone.utc).date()


def partition(day):
    return "event_log_" + day.strftime("%Y%m%d")


def create_partition(dsn, day):
    nxt = day + datetime.timedelta(days=1)
    psql(dsn, "CREATE TABLE %s PARTITION OF event_log FOR VALUES FROM ('%s 00:00:00+00') TO ('%s 00:00:00+00')"
         % (partition(day), day.isoformat(), nxt.isoformat()))


def exists(dsn, relname):
    return query_value(dsn, "SELECT to_regclass(%s) IS NOT NULL" % sql_quote(relname)) == "t"


def submit(c, login, recipients, size=1000, client=SUBMIT_CLIENT):
    """One authenticated transaction: RCPT per recipient, END-OF-MESSAGE with the accepted
    ones. Returns (RCPT replies, END-OF-MESSAGE reply or None)."""
    inst = new_instance()
    auth = dict(sasl_method="PLAIN", sasl_username=login, sender=login, client_address=client)
    replies = [c.request(protocol_state="RCPT", recipient=r, instance=inst, size=str(size), **auth)
               for r in recipients]
    accepted = [r for r, a in zip(recipients, replies) if a == "DUNNO"]
    end = None
    if accepted:
        end = c.request(protocol_state="END-OF-MESSAGE", recipient=accepted[0] if len(accepted) == 1 else "",
                        instance=inst, size=str(size), recipient_count=str(len(accepted)), **auth)
    return replies, end


def new_login():
    return "%s@%s.example" % (unique_word(), unique_word(6))


def new_address():
    return "%s@%s.example" % (unique_word(), unique_word(6))


class RoleTestCase(SystemTestCase):
    """Login roles for this class, dropped at the end (after the daemons stop)."""

    @classmethod
    def make_roles(cls, dsn, **groups):
        """For each name=group, a LOGIN role in that group (None: in none); sets cls.<name>
        to the role name and cls.<name>_dsn to dsn as that role."""
        cls._roles = getattr(cls, "_roles", [])
        tag = secrets.token_hex(4)
        for name, group in groups.items():
            role = "lupine_t%s_%s" % (tag, name)
            psql(dsn, "CREATE ROLE %s LOGIN%s" % (role, " IN ROLE " + group if group else ""))
            cls._roles.append((dsn, role))
            setattr(cls, name, role)
            setattr(cls, name + "_dsn", dsn_with_user(dsn, role))

    @classmethod
    def _cleanup_class(cls):
        try:
            super()._cleanup_class()
        finally:
            for dsn, role in reversed(getattr(cls, "_roles", [])):
                run_sql(dsn, "DROP ROLE IF EXISTS %s" % role)
            cls._roles = []

    def assertDenied(self, dsn, sql):
        rc, out, err = run_sql(dsn, sql)
        self.assertNotEqual(rc, 0, "%r was allowed (%s)" % (sql, out.strip()))
        self.assertRegex(err, DENIED, sql)

    def assertAllowed(self, dsn, sql):
        rc, out, err = run_sql(dsn, sql)
        self.assertEqual(rc, 0, "%r: %s" % (sql, err))
        return out


# ---------------------------------------------------------------------------------------
# policyd, abusectl and Dovecot as their roles, on a database migrated by the superuser
# ---------------------------------------------------------------------------------------

class RolesTest(RoleTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        migrate(cls.dsn)
        cls.make_roles(cls.dsn, mx="lupine_policyd", desk="lupine_abusectl", imap="lupine_dovecot", nobody=None)
        psql(cls.dsn, "INSERT INTO webmail_network (net, comment) VALUES ('%s', 'webmail')" % WEBMAIL_NET)
        # For the maintenance task: an expired partition, one inside the owner's minimum
        # retention (30 days, while policyd asks for 1), and the day after tomorrow missing.
        today = utc_today()
        cls.expired_day = datetime.date(2000, 1, 3)
        cls.kept_day = today - datetime.timedelta(days=10)
        cls.made_day = today + datetime.timedelta(days=2)
        create_partition(cls.dsn, cls.expired_day)
        create_partition(cls.dsn, cls.kept_day)
        psql(cls.dsn, "INSERT INTO event_log (ts, policyd, protocol_state, verdict, action)"
                      " VALUES ('%s 12:00:00+00', 'old', 'RCPT', 'dunno', 'DUNNO')" % cls.kept_day.isoformat())
        psql(cls.dsn, "DROP TABLE %s" % partition(cls.made_day))
        psql(cls.dsn, "UPDATE event_log_policy SET min_retention = interval '30 days'")
        settings = dict(QUIET)
        settings.update(LIMITS)
        settings.update({"event_log.flush_interval": "100ms", "event_log.retention": "1d",
                         "maintenance.interval": "1s"})
        cls.d = Policyd(cls.mx_dsn, settings, start=False, name="mxrole")
        cls._class_daemons.append(cls.d)  # tracked first: stopped even if the start fails
        cls.d.start()

    def setUp(self):
        super().setUp()
        self.c = self.track(self.d.client())

    def wait_event_rows(self, instance, n):
        return wait_until(lambda: int(query_value(self.dsn, "SELECT count(*) FROM event_log WHERE postfix_instance = %s"
                                                  % sql_quote(instance))) >= n,
                          5, interval=0.05, what="%d event-log rows of %s" % (n, instance))

    def ctl(self, *args):
        return run_abusectl(["-d", self.desk_dsn] + list(args), env={"SUDO_USER": ACTOR})

    def ok(self, *args):
        p = self.ctl(*args)
        self.assertEqual(p.returncode, 0, "abusectl %s: %s%s" % (" ".join(args), p.stdout, p.stderr))
        self.assertNotRegex(p.stderr, DENIED)
        return p

    # -- policyd ------------------------------------------------------------------------
    def test_policyd_starts_without_migrating(self):
        self.assertEqual(self.d.count_log(r"migration_applied"), 0)
        self.assertEqual(self.d.count_log(r"\bready\b"), 1)
        self.assertEqual(query_rows(self.dsn, "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname ="
                                              " current_database() AND application_name LIKE 'lupine-policyd%'"),
                         [[self.mx]])

    def test_greylisting_and_the_event_log(self):
        inst = new_instance()
        sender = "%s@%s.example" % (unique_word(), unique_word(5))
        self.assertDeferred(self.c.request(client_address="203.0.113.5", sender=sender, instance=inst))
        wait_query(self.dsn, "SELECT attempts FROM greylist WHERE sender = %s" % sql_quote(sender), "1")
        self.assertDeferred(self.c.request(client_address="203.0.113.5", sender=sender, instance=inst))
        wait_query(self.dsn, "SELECT attempts FROM greylist WHERE sender = %s" % sql_quote(sender), "2")
        self.wait_event_rows(inst, 2)
        rows = query_rows(self.dsn, "SELECT tableoid::regclass, verdict, reason FROM event_log"
                                    " WHERE postfix_instance = %s" % sql_quote(inst))
        for part, verdict, reason in rows:
            self.assertRegex(part, r"^event_log_\d{8}$")
            self.assertEqual(verdict, "defer_if_permit")
            self.assertRegex(reason, r"^greylist_")

    def test_limits_at_end_of_message(self):
        login = new_login()
        for _ in range(2):
            self.assertEqual(submit(self.c, login, [new_address()]), (["DUNNO"], "DUNNO"))
        replies, end = submit(self.c, login, [new_address()])
        self.assertRegex(replies[0], r"^452 4\.7\.1 Sending limit reached: 2 messages per 1h; retry after ")
        self.assertIsNone(end)
        self.assertEqual(query_rows(self.dsn, "SELECT sum(messages), sum(recipients) FROM send_volume WHERE login = %s"
                                    % sql_quote(login)), [["2", "2"]])
        self.assertEqual(query_rows(self.dsn, "SELECT kind, measure, max_value, policyd FROM account_flag"
                                              " WHERE login = %s" % sql_quote(login)),
                         [["limit", "messages", "2", "mxrole"]])

    def test_automatic_restriction_is_audited_under_policyds_login(self):
        login = new_login()
        replies, _ = submit(self.c, login, [new_address() for _ in range(6)])
        self.assertEqual(replies, ["DUNNO"] * 5 + [RESTRICTED])
        self.assertEqual(query_value(self.dsn, "SELECT state FROM account WHERE login = %s" % sql_quote(login)),
                         "restricted")
        self.assertEqual(query_rows(self.dsn, "SELECT actor, action, new_value, db_user FROM audit WHERE login = %s"
                                    % sql_quote(login)), [["policyd:mxrole", "auto_restrict", "restricted", self.mx]])
        self.d.wait_for_log(r"account_state_seen .*login=%s" % re.escape(login), timeout=3)
        self.assertEqual(submit(self.c, login, [new_address()])[0], [RESTRICTED])

    def test_directory_sync_sees_a_state_change(self):
        login = new_login()
        self.assertEqual(submit(self.c, login, [new_address()])[0], ["DUNNO"])
        self.assertAllowed(self.desk_dsn, "SELECT lupine_set_account_state(%s, 'terminated', 'tester', 'systest')"
                           % sql_quote(login))
        self.d.wait_for_log(r"account_state_seen .*login=%s .*state=terminated" % re.escape(login), timeout=3)
        self.assertEqual(submit(self.c, login, [new_address()])[0], [TERMINATED])

    def test_maintenance_creates_and_drops_partitions_within_the_minimum_retention(self):
        self.d.wait_for_log(r"maintenance .*partitions_created=[1-9]", timeout=5)
        self.assertTrue(exists(self.dsn, partition(self.made_day)))
        self.assertFalse(exists(self.dsn, partition(self.expired_day)))
        self.assertTrue(exists(self.dsn, partition(self.kept_day)), "dropped inside event_log_policy.min_retention")
        self.assertEqual(query_value(self.dsn, "SELECT count(*) FROM %s" % partition(self.kept_day)), "1")
        # The new partition is the owner's, with no grants: rows reach it through event_log.
        self.assertEqual(query_rows(self.dsn, "SELECT pg_get_userbyid(relowner), relacl IS NULL FROM pg_class"
                                              " WHERE oid = %s::regclass" % sql_quote(partition(self.made_day))),
                         [[query_value(self.dsn, "SELECT current_user"), "t"]])
        self.assertEqual(self.d.count_log(r"maintenance_failed|permission denied"), 0)
        # Asked directly for no retention at all, the function still keeps the owner's minimum.
        self.assertAllowed(self.mx_dsn, "SELECT * FROM lupine_event_log_maintain(0, interval '0')")
        self.assertTrue(exists(self.dsn, partition(self.kept_day)))
        rc, _, err = run_sql(self.mx_dsn, "SELECT * FROM lupine_event_log_maintain(1000, interval '1 day')")
        self.assertNotEqual(rc, 0)
        self.assertIn("days ahead must be 0 to 31", err)

    def test_policyd_role_cannot_rewrite_the_trail_or_change_accounts(self):
        today = partition(utc_today())
        for sql in ("UPDATE audit SET reason = 'x'", "DELETE FROM audit", "TRUNCATE audit",
                    "INSERT INTO audit (actor, action) VALUES ('x', 'y')",
                    "UPDATE event_log SET verdict = 'x'", "DELETE FROM event_log", "TRUNCATE event_log",
                    "SELECT count(*) FROM event_log",
                    "DELETE FROM %s" % today, "UPDATE %s SET verdict = 'x'" % today, "DROP TABLE %s" % today,
                    "ALTER TABLE event_log DETACH PARTITION %s" % today,
                    "UPDATE account SET state = 'active'", "DELETE FROM account",
                    "INSERT INTO account (login, state, changed_by) VALUES ('a@b', 'active', 'x')",
                    "SELECT lupine_set_account_state('a@b', 'active', 'x', 'y')",
                    "SELECT lupine_lock_account('a@b')",
                    "SELECT event_log_prune(interval '0')", "SELECT event_log_ensure_partitions(5)",
                    "UPDATE event_log_policy SET min_retention = interval '1 day'",
                    "UPDATE account_flag SET reviewed_at = now()", "DELETE FROM send_volume",
                    "DELETE FROM schema_migrations", "SELECT count(*) FROM case_message",
                    "INSERT INTO webmail_network (net) VALUES ('10.0.0.0/8')",
                    "CREATE TABLE lupine_probe (a int)"):
            with self.subTest(sql=sql):
                self.assertDenied(self.mx_dsn, sql)

    def test_a_temporary_table_cannot_stand_in_for_audit(self):
        # SECURITY DEFINER functions search their own schema, then pg_temp: the caller's
        # temporary "audit" is not where lupine_send_check's restriction is recorded.
        login = new_login()
        self.assertAllowed(self.mx_dsn,
                           "CREATE TEMP TABLE audit (LIKE pg_class); CREATE TEMP TABLE account (login text);"
                           " SELECT restricted FROM lupine_send_check(%s, now(), 'rcpt', ARRAY['a@x.example',"
                           " 'b@y.example'], ARRAY['x.example', 'y.example'], 0, 0, 0::bigint, '{}', '{}', '{}',"
                           " ARRAY['distinct_recipients'], ARRAY[3600], ARRAY[1::bigint], 'probe')" % sql_quote(login))
        self.assertEqual(query_rows(self.dsn, "SELECT action, db_user FROM audit WHERE login = %s" % sql_quote(login)),
                         [["auto_restrict", self.mx]])

    # -- abusectl -----------------------------------------------------------------------
    def test_investigation_as_abusectl(self):
        self.assertRegex(self.ok("db", "status").stdout, r"; 0 pending")
        self.assertRegex(self.ok("db", "migrate").stdout, r"^schema is current")
        login = new_login()
        p = self.ok("case", "open", "--reporter", "abuse@victim.example", "--account", login, EML)
        case = re.search(r"^case (\d+) opened", p.stdout).group(1)
        self.ok("restrict", login, "--case", case, "--no-notify")
        self.assertEqual(query_value(self.dsn, "SELECT state FROM account WHERE login = %s" % sql_quote(login)),
                         "restricted")
        self.d.wait_for_log(r"account_state_seen .*login=%s .*state=restricted" % re.escape(login), timeout=3)
        self.ok("stats", login)
        self.assertRegex(self.ok("case", "show", case).stdout, r"restricted")
        self.ok("case", "list")
        out = make_tmpdir()
        try:
            self.ok("case", "export", case, "--out", out)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        p = self.ctl("verify", case)
        self.assertNotRegex(p.stderr, DENIED)
        self.assertRegex(p.stdout, r"\d+ of 1 copies matched")
        # A second operator restricting the same case is refused on the locked rows.
        p = self.ctl("restrict", login, "--case", case, "--no-notify")
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"already restricted")
        self.ok("restore", login, "--case", case)
        self.assertEqual(query_value(self.dsn, "SELECT state FROM account WHERE login = %s" % sql_quote(login)),
                         "active")
        self.assertEqual(query_value(self.dsn, "SELECT state FROM abuse_case WHERE id = %s" % case), "restored")
        actions = query_rows(self.dsn, "SELECT action, actor, db_user FROM audit WHERE case_id = %s ORDER BY id" % case)
        self.assertEqual([a[0] for a in actions], ["case_open", "state", "case", "verify", "state", "case"])
        for action, actor, db_user in actions:
            self.assertEqual((actor, db_user), (ACTOR, self.desk), action)

    def test_limits_webmail_and_review_as_abusectl(self):
        login = new_login()
        self.ok("limits", "set", login, "messages", "10/1h", "--comment", "trusted sender")
        self.assertIn(login, self.ok("limits", "list").stdout)
        self.ok("limits", "clear", login)
        self.ok("webmail", "add", "198.51.100.0/28", "--comment", "new webmail host")
        self.assertIn("198.51.100.0/28", self.ok("webmail", "list").stdout)
        self.ok("webmail", "remove", "198.51.100.0/28")
        flag = query_value(self.dsn, "INSERT INTO account_flag (login, kind, measure, window_s, max_value, value,"
                                     " first_at, last_at, policyd) VALUES (%s, 'limit', 'messages', 3600, 2, 3, now(),"
                                     " now(), 'mx') RETURNING id" % sql_quote(login))
        self.assertIn(login, self.ok("accounts", "--state", "flagged").stdout)
        self.ok("accounts", "review", flag, "--note", "newsletter, fine")
        self.ok("accounts")
        self.assertEqual(query_rows(self.dsn, "SELECT DISTINCT actor, db_user FROM audit WHERE action IN ('limit',"
                                              " 'webmail', 'flag_review') AND (login = %s OR login IS NULL)"
                                    % sql_quote(login)), [[ACTOR, self.desk]])

    def test_abusectl_role_cannot_rewrite_the_trail(self):
        for sql in ("DELETE FROM event_log", "UPDATE event_log SET verdict = 'x'", "TRUNCATE event_log",
                    "INSERT INTO event_log (ts, policyd, protocol_state, verdict, action)"
                    " VALUES (now(), 'x', 'RCPT', 'dunno', 'DUNNO')",
                    "DELETE FROM %s" % partition(utc_today()),
                    "DELETE FROM audit", "UPDATE audit SET reason = 'x'", "TRUNCATE audit",
                    "INSERT INTO audit (actor, action, at) VALUES ('x', 'y', '2000-01-01')",
                    "INSERT INTO audit (actor, action, db_user) VALUES ('x', 'y', 'someone')",
                    "UPDATE account SET state = 'active'", "DELETE FROM account",
                    "INSERT INTO account (login, state, changed_by) VALUES ('a@b', 'active', 'x')",
                    "DELETE FROM case_message", "UPDATE case_message SET notes = 'x'",
                    "DELETE FROM abuse_case", "UPDATE abuse_case SET reporter = 'x'",
                    "UPDATE account_flag SET value = 0", "SELECT count(*) FROM greylist",
                    "SELECT * FROM lupine_event_log_maintain(2, interval '1 day')",
                    "SELECT lupine_send_prune(now(), interval '0', 1000)",
                    "UPDATE event_log_policy SET min_retention = interval '1 day'",
                    "CREATE TABLE lupine_probe (a int)"):
            with self.subTest(sql=sql):
                self.assertDenied(self.desk_dsn, sql)
        # What abusectl needs, directly: reading the log and the trail, adding to the trail.
        self.assertAllowed(self.desk_dsn, "SELECT count(*) FROM event_log; SELECT count(*) FROM audit")
        self.assertAllowed(self.desk_dsn, "INSERT INTO audit (actor, action, reason) VALUES ('x', 'probe', 'test')")
        self.assertEqual(query_rows(self.dsn, "SELECT db_user, at > now() - interval '1 minute' FROM audit"
                                              " WHERE action = 'probe'"), [[self.desk, "t"]])

    # -- Dovecot and roles without a group ------------------------------------------------
    def test_dovecot_reads_its_view_only(self):
        login = new_login()
        psql(self.dsn, "SELECT lupine_set_account_state(%s, 'restricted', 'tester', 'systest')" % sql_quote(login))
        out = self.assertAllowed(self.imap_dsn, "SELECT username, allow_nets, deny FROM dovecot_account"
                                                " WHERE username = %s" % sql_quote(login))
        self.assertEqual(out.strip(), "%s|%s|f" % (login, WEBMAIL_NET))
        for sql in ("SELECT count(*) FROM account", "SELECT count(*) FROM webmail_network",
                    "SELECT count(*) FROM event_log", "SELECT count(*) FROM audit",
                    "SELECT count(*) FROM schema_migrations",
                    "SELECT lupine_set_account_state('a@b', 'active', 'x', 'y')",
                    "INSERT INTO webmail_network (net) VALUES ('10.0.0.0/8')",
                    "UPDATE account SET state = 'active'"):
            with self.subTest(sql=sql):
                self.assertDenied(self.imap_dsn, sql)

    def test_a_role_in_no_group_is_told_what_to_do(self):
        p = run_abusectl(["-d", self.nobody_dsn, "db", "status"])
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r'role "%s" may not read schema_migrations' % self.nobody)
        self.assertIn("lupine_policyd", p.stderr)


# ---------------------------------------------------------------------------------------
# Migrations by roles that may not apply them
# ---------------------------------------------------------------------------------------

def policyd_once(tmpdir, dsn):
    """Runs policyd against dsn with the harness's config (user, spill directory); returns
    the CompletedProcess: it exits at start-up when the database refuses it."""
    d = Policyd(dsn, {}, start=False, name="once", tmpdir=tmpdir)
    d._write_config(d._endpoints())
    return run_policyd(["-c", d.config_path], timeout=10)


class MigrationRightsTest(RoleTestCase):
    """A schema one migration behind: the restricted roles may not apply it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        migrate(cls.dsn)
        cls.latest = query_value(cls.dsn, "SELECT name FROM schema_migrations ORDER BY version DESC LIMIT 1")
        psql(cls.dsn, "DELETE FROM schema_migrations WHERE name = %s" % sql_quote(cls.latest))
        cls.owner = query_value(cls.dsn, "SELECT current_user")
        cls.make_roles(cls.dsn, mx="lupine_policyd", desk="lupine_abusectl")

    def assertClearRefusal(self, stderr, role):
        self.assertIn("%s is pending" % self.latest, stderr)
        self.assertIn('database role "%s" may not apply migrations' % role, stderr)
        self.assertIn('run `abusectl db migrate` as "%s"' % self.owner, stderr)

    def test_policyd_stops_with_a_clear_message(self):
        p = policyd_once(self.tmpdir, self.mx_dsn)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertClearRefusal(p.stderr, self.mx)
        self.assertEqual(query_value(self.dsn, "SELECT count(*) FROM schema_migrations WHERE name = %s"
                                     % sql_quote(self.latest)), "0")

    def test_abusectl_db_migrate_says_the_same_and_status_works(self):
        p = run_abusectl(["-d", self.desk_dsn, "db", "migrate"])
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertClearRefusal(p.stderr, self.desk)
        p = run_abusectl(["-d", self.desk_dsn, "db", "status"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"; 1 pending")


# ---------------------------------------------------------------------------------------
# A private cluster, where the group roles do not exist yet
# ---------------------------------------------------------------------------------------

class OwnerWithoutCreateroleTest(RoleTestCase):
    """The schema owner is an ordinary login role owning its database. Without CREATEROLE
    005 stops and names the CREATE ROLE statements; with it (or after a superuser made the
    roles) it succeeds, and policyd and abusectl work through functions that this
    non-superuser owns."""

    needs_database = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pgdir = os.path.join(cls.tmpdir, "pg")
        cls.addClassCleanup(cls._stop_cluster)
        p = subprocess.run([os.path.join(ROOT, "scripts", "pg_up.sh"), cls.pgdir, "postgres"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
        if p.returncode != 0:
            raise unittest.SkipTest("cannot start a private PostgreSQL cluster: %s" % p.stderr.strip())
        cls.super_dsn = p.stdout.strip()
        psql(cls.super_dsn, "CREATE ROLE lupine_owner LOGIN")
        psql(cls.super_dsn, "CREATE DATABASE lupine OWNER lupine_owner")
        cls.owner_dsn = dsn_with_user(dsn_with_db(cls.super_dsn, "lupine"), "lupine_owner")
        cls.db_super_dsn = dsn_with_db(cls.super_dsn, "lupine")

    @classmethod
    def _stop_cluster(cls):
        subprocess.run([os.path.join(ROOT, "scripts", "pg_up.sh"), "--stop", cls.pgdir],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def test_roles_are_created_only_by_a_role_that_may(self):
        self.assertEqual(query_value(self.super_dsn, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'lupine\\_%'"
                                                     " AND rolname <> 'lupine_owner'"), "0")
        p = run_abusectl(["-d", self.owner_dsn, "db", "migrate"])
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("migration 005_roles.sql failed, rolled back", p.stderr)
        self.assertIn("lupine_policyd, lupine_abusectl, lupine_dovecot missing", p.stderr)
        self.assertIn("role lupine_owner may not create roles", p.stderr)
        self.assertIn("CREATE ROLE lupine_policyd NOLOGIN; CREATE ROLE lupine_abusectl NOLOGIN;"
                      " CREATE ROLE lupine_dovecot NOLOGIN;", p.stderr)
        self.assertRegex(run_abusectl(["-d", self.owner_dsn, "db", "status"]).stdout, r"^schema version 4 ")
        self.assertEqual(query_value(self.db_super_dsn, "SELECT to_regclass('event_log_policy') IS NULL"), "t")

        psql(self.super_dsn, "ALTER ROLE lupine_owner CREATEROLE")
        p = run_abusectl(["-d", self.owner_dsn, "db", "migrate"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        psql(self.super_dsn, "ALTER ROLE lupine_owner NOCREATEROLE")
        self.assertEqual(query_rows(self.super_dsn, "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN"
                                                    " ('lupine_policyd', 'lupine_abusectl', 'lupine_dovecot')"
                                                    " ORDER BY 1"),
                         [["lupine_abusectl", "f"], ["lupine_dovecot", "f"], ["lupine_policyd", "f"]])
        self.assertEqual(query_value(self.db_super_dsn, "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc"
                                                        " WHERE proname LIKE 'lupine\\_%' AND prosecdef"),
                         "lupine_owner")

        # policyd and abusectl as members, through the non-superuser owner's functions.
        self.make_roles(self.db_super_dsn, mx="lupine_policyd", desk="lupine_abusectl")
        tomorrow2 = partition(utc_today() + datetime.timedelta(days=2))
        psql(self.owner_dsn, "DROP TABLE %s" % tomorrow2)
        settings = dict(QUIET)
        settings.update(LIMITS)
        settings.update({"event_log.flush_interval": "100ms", "maintenance.interval": "1s"})
        d = self.policyd(settings, dsn=self.mx_dsn, name="owned")
        d.wait_for_log(r"maintenance .*partitions_created=[1-9]", timeout=5)
        self.assertTrue(exists(self.owner_dsn, tomorrow2))
        login = new_login()
        with d.client() as c:
            inst = new_instance()
            self.assertDeferred(c.request(client_address="203.0.113.9", instance=inst))
            replies, _ = submit(c, login, [new_address() for _ in range(6)])
            self.assertEqual(replies[5], RESTRICTED)
        wait_until(lambda: query_value(self.owner_dsn, "SELECT count(*) FROM event_log WHERE postfix_instance = %s"
                                       % sql_quote(inst)) == "1", 5, interval=0.05, what="the event-log row")
        self.assertEqual(query_rows(self.owner_dsn, "SELECT action, db_user FROM audit WHERE login = %s"
                                    % sql_quote(login)), [["auto_restrict", self.mx]])
        case = query_value(self.owner_dsn, "INSERT INTO abuse_case (account, reporter, opened_by) VALUES (%s, 'r',"
                                           " 'o') RETURNING id" % sql_quote(login))
        p = run_abusectl(["-d", self.desk_dsn, "restore", login, "--case", case], env={"SUDO_USER": ACTOR})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(d.count_log(r"maintenance_failed|permission denied"), 0)


if __name__ == "__main__":
    unittest.main()
