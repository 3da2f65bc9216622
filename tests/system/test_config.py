"""policyd's command line and configuration file: --check-config, error messages naming
the key, -o overrides, --print-config (secrets masked), --help, start-up failures."""

import os
import pwd
import re
import socket
import subprocess
import unittest

from harness import (Policyd, SystemTestCase, POLICYD, EX_CONFIG, run_policyd, free_port, unique_word)


class ConfigTest(SystemTestCase):
    needs_database = False  # nothing here connects

    def write(self, text, name=None):
        path = os.path.join(self.tmpdir, name or "policyd-%s.conf" % unique_word(6))
        with open(path, "w") as f:
            f.write(text)
        return path

    def minimal(self, extra="", dsn="host=/nonexistent/socket dbname=lupine"):
        return self.write("listen = inet:127.0.0.1:%d\ndatabase = %s\n%s" % (free_port(), dsn, extra))

    def check(self, path, *opts):
        args = ["-c", path]
        for o in opts:
            args += ["-o", o]
        return run_policyd(args + ["--check-config"])

    def print_config(self, path, *opts):
        args = ["-c", path]
        for o in opts:
            args += ["-o", o]
        p = run_policyd(args + ["--print-config"])
        self.assertEqual(p.returncode, 0, p.stderr)
        values = {}
        for line in p.stdout.splitlines():
            key, _, value = line.partition(" = ")
            values.setdefault(key, []).append(value)
        return p, values

    def assertConfigError(self, p, *needles):
        self.assertEqual(p.returncode, EX_CONFIG, "exit %d, stdout %r, stderr %r" % (p.returncode, p.stdout, p.stderr))
        self.assertIn("policyd: configuration error:", p.stderr)
        for n in needles:
            self.assertIn(n, p.stderr)

    # -- --check-config -----------------------------------------------------------------
    def test_check_config_ok(self):
        path = self.minimal("[greylist]\ndelay = 1s\nretry_window = 1h\n\n[event_log]\nflush_interval = 100ms\n")
        p = self.check(path)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("configuration OK", p.stdout)
        self.assertEqual(p.stderr, "")

    def test_check_config_does_not_need_the_database(self):
        # The DSN points nowhere; checking must not try to connect.
        p = self.check(self.minimal(dsn="host=/nonexistent/dir port=1 dbname=x connect_timeout=30"))
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_sample_config_file_with_database_override(self):
        root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        sample = os.path.join(root, "etc", "policyd.conf")
        if not os.path.exists(sample):
            self.skipTest("no etc/policyd.conf")
        p = run_policyd(["-c", sample, "-o", "database=dbname=x", "--check-config"], cwd=root)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_bad_duration_names_the_key(self):
        path = self.minimal("[greylist]\ndelay = 5x\n")
        p = self.check(path)
        self.assertConfigError(p, "greylist.delay = 5x", "expected a duration with a unit", path)
        self.assertRegex(p.stderr, r"greylist\.delay = 5x: expected a duration with a unit \(250ms, 30s, 5m, 2h, "
                                   r"35d, 1w\) \(from %s\)" % re.escape(path))

    def test_bad_value_from_o_names_the_key(self):
        p = self.check(self.minimal(), "greylist.delay=soon")
        self.assertConfigError(p, "greylist.delay = soon", "(from -o)")

    def test_each_bad_value_reported(self):
        path = self.minimal("greylist.delay = 5x\nserver.max_connections = 0\ngreylist.prepend_header = maybe\n"
                            "listen = tcp:whatever\n")
        p = self.check(path)
        self.assertConfigError(p, "greylist.delay = 5x", "server.max_connections = 0",
                               "greylist.prepend_header = maybe", "listen")

    def test_unknown_key_in_file(self):
        path = self.minimal("[foo]\nbar = 1\n")
        p = self.check(path)
        self.assertConfigError(p, "%s: unknown key foo.bar" % path)

    def test_unknown_o_key(self):
        p = self.check(self.minimal(), "foo=1")
        self.assertConfigError(p, "-o foo=1: unknown key foo")

    def test_o_without_equals(self):
        p = self.check(self.minimal(), "greylist.delay")
        self.assertEqual(p.returncode, EX_CONFIG)
        self.assertIn("greylist.delay", p.stderr)

    def test_missing_database(self):
        path = self.write("listen = inet:127.0.0.1:%d\n" % free_port())
        p = self.check(path)
        self.assertConfigError(p, "database")

    def test_missing_config_file(self):
        p = run_policyd(["-c", os.path.join(self.tmpdir, "nope.conf"), "--check-config"])
        self.assertConfigError(p, "nope.conf")

    def test_missing_allowlist_file(self):
        missing = os.path.join(self.tmpdir, "no-such-allowlist")
        p = self.check(self.minimal("allowlist.client_files = %s\n" % missing))
        self.assertConfigError(p, missing)

    def test_bad_allowlist_entry_names_file_and_line(self):
        f = self.write("192.0.2.0/24\n# comment\n\nnot a valid entry!\n", "clients-%s" % unique_word(5))
        p = self.check(self.minimal("allowlist.client_files = %s\n" % f))
        self.assertConfigError(p, "%s:4" % f)

    def test_inconsistent_durations(self):
        p = self.check(self.minimal("greylist.delay = 2h\ngreylist.retry_window = 1h\n"))
        self.assertConfigError(p, "greylist.retry_window")

    # -- overrides and --print-config ---------------------------------------------------
    def test_o_overrides_file_value(self):
        path = self.minimal("[greylist]\ndelay = 5s\nawl_clients = 3\n")
        _, values = self.print_config(path)
        self.assertEqual(values["greylist.delay"], ["5s"])
        self.assertEqual(values["greylist.awl_clients"], ["3"])
        _, values = self.print_config(path, "greylist.delay=7s")
        self.assertEqual(values["greylist.delay"], ["7s"])
        self.assertEqual(values["greylist.awl_clients"], ["3"])  # untouched keys keep the file value

    def test_section_and_dotted_keys_are_the_same(self):
        a = self.minimal("[greylist]\ndelay = 42s\n")
        b = self.minimal("greylist.delay = 42s\n")
        _, va = self.print_config(a)
        _, vb = self.print_config(b)
        self.assertEqual(va["greylist.delay"], ["42s"])
        self.assertEqual(vb["greylist.delay"], ["42s"])

    def test_print_config_masks_database(self):
        secret = "s3cr3t-" + unique_word()
        path = self.minimal(dsn="host=/tmp dbname=lupine user=u password=%s" % secret)
        p, values = self.print_config(path)
        self.assertEqual(values["database"], ["********"])
        self.assertNotIn(secret, p.stdout + p.stderr)
        self.assertNotIn("password=", p.stdout)
        # With -o a password is refused (every local user can read a command line), and not echoed.
        p = run_policyd(["-c", path, "--print-config", "-o", "database=password=%s-o" % secret])
        self.assertEqual(p.returncode, EX_CONFIG)
        self.assertIn("db.password_file", p.stderr)
        self.assertNotIn(secret, p.stdout + p.stderr)

    def test_print_config_lists_every_key(self):
        keys = run_policyd(["--help-keys"])
        self.assertEqual(keys.returncode, 0)
        documented = [l.split(" = ")[0] for l in keys.stdout.splitlines() if l and not l.startswith(" ")]
        self.assertIn("greylist.delay", documented)
        _, values = self.print_config(self.minimal())
        for k in documented:
            self.assertIn(k, values)
        self.assertEqual(values["greylist.delay"], ["300s"])  # the default

    def test_several_listen_values(self):
        p1, p2 = free_port(), free_port()
        path = self.write("database = dbname=x\nlisten = inet:127.0.0.1:%d\nlisten = unix:%s/a.sock\n"
                          % (p1, self.tmpdir))
        _, values = self.print_config(path)
        self.assertEqual(values["listen"], ["inet:127.0.0.1:%d" % p1, "unix:%s/a.sock" % self.tmpdir])
        path2 = self.write("database = dbname=x\nlisten = inet:127.0.0.1:%d, inet:[::1]:%d\n" % (p1, p2))
        self.assertEqual(self.check(path2).returncode, 0)

    # -- help ---------------------------------------------------------------------------
    def test_help(self):
        p = run_policyd(["--help"])
        self.assertEqual(p.returncode, 0)
        for word in ("--check-config", "--print-config", "-o", "-c"):
            self.assertIn(word, p.stdout)

    def test_help_keys_and_version(self):
        p = run_policyd(["--help-keys"])
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"(?m)^greylist\.delay = 300s$")
        v = run_policyd(["--version"])
        self.assertEqual(v.returncode, 0)
        self.assertIn("policyd", v.stdout)

    def test_unknown_option_is_a_usage_error(self):
        p = run_policyd(["--no-such-option"])
        self.assertEqual(p.returncode, 2)
        self.assertIn("policyd", p.stderr)


class StartupFailureTest(SystemTestCase):
    """Failures only seen when really starting (these need the database)."""

    def test_unreachable_database_exits_1(self):
        path = os.path.join(self.tmpdir, "unreach.conf")
        with open(path, "w") as f:
            f.write("listen = inet:127.0.0.1:%d\ndatabase = host=%s/none dbname=x\n" % (free_port(), self.tmpdir))
        p = run_policyd(["-c", path], timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("cannot connect to the database", p.stderr)

    def test_port_in_use_exits_with_config_error(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            path = os.path.join(self.tmpdir, "busy.conf")
            with open(path, "w") as f:
                f.write("listen = inet:127.0.0.1:%d\ndatabase = %s\n" % (port, self.dsn))
            p = run_policyd(["-c", path], timeout=30)
        self.assertEqual(p.returncode, EX_CONFIG, p.stderr)
        self.assertIn("cannot listen", p.stderr)
        self.assertIn(str(port), p.stderr)

    def test_o_overrides_apply_to_the_running_daemon(self):
        d = self.policyd({"greylist.delay": "1h"}, extra_opts=["greylist.text=Overridden %s"], name="ovr")
        with d.client() as c:
            self.assertEqual(c.request(sender="o.%s@s.example" % unique_word()),
                             "DEFER_IF_PERMIT 4.7.1 Overridden 3600")


if __name__ == "__main__":
    unittest.main()


class SecurityTest(SystemTestCase):
    """Secrets from files, never logged; root dropped after binding."""

    def write_secret(self, text, mode):
        path = os.path.join(self.tmpdir, "pw-" + unique_word(6))
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_password_file_is_read_checked_and_never_shown(self):
        secret = "pw-" + unique_word(12)
        good = self.write_secret(secret + "\n", 0o600)
        d = self.policyd({"db.password_file": good, "greylist.delay": "1h"}, name="sec-pw")
        with d.client() as c:
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")
        self.assertEqual(d.stop(), 0)
        self.assertNotIn(secret, d.log_text())
        # Anyone else able to read it: refused before anything starts, naming the fix.
        loose = self.write_secret(secret + "\n", 0o644)
        conf = os.path.join(self.tmpdir, "loose.conf")
        with open(conf, "w") as f:
            f.write("database = %s\nlisten = inet:127.0.0.1:%d\ndb.password_file = %s\n" % (self.dsn, free_port(), loose))
        r = run_policyd(["-c", conf, "--check-config"])
        self.assertEqual(r.returncode, EX_CONFIG)
        self.assertIn("chmod 0600", r.stderr)
        self.assertNotIn(secret, r.stdout + r.stderr)

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_root_is_refused_without_server_user(self):
        d = Policyd(self.dsn, {"server.user": ""}, start=False)
        self.addCleanup(d.cleanup)
        d._write_config(d._endpoints())
        with open(d.config_path) as f:
            text = f.read().replace("server.user = \n", "")
        with open(d.config_path, "w") as f:
            f.write(text)
        r = run_policyd(["-c", d.config_path])
        self.assertEqual(r.returncode, EX_CONFIG)
        self.assertIn("refusing to serve as root: set server.user", r.stderr)

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_serves_as_server_user_after_binding(self):
        d = self.policyd({"server.user": "nobody", "greylist.delay": "1h"},
                         listen=["inet:127.0.0.1:0", "unix:{dir}/p.sock"], name="sec-user")
        with open("/proc/%d/status" % d.proc.pid) as f:
            ids = dict(line.split(":", 1) for line in f if line.startswith(("Uid", "Gid", "Groups")))
        nobody = pwd.getpwnam("nobody")
        self.assertEqual(ids["Uid"].split(), [str(nobody.pw_uid)] * 4)
        self.assertEqual(ids["Gid"].split(), [str(nobody.pw_gid)] * 4)
        self.assertNotIn("0", ids["Groups"].split())
        self.assertEqual(os.stat(d.spill_dir).st_uid, nobody.pw_uid)
        self.assertEqual(os.stat(d.unix_path).st_uid, nobody.pw_uid)
        with d.unix_client() as c:
            self.assertEqual(c.request(protocol_state="DATA"), "DUNNO")
        d.wait_for_log(r"privileges_dropped user=nobody")
