"""Shared helpers for Lupine's system tests (Python 3 standard library only).

Environment:
  LUPINE_POLICYD   path to the policyd binary (set by ctest)
  LUPINE_ABUSECTL  path to the abusectl binary (set by ctest)
  LUPINE_TEST_DSN  libpq DSN of a PostgreSQL server where databases may be created
                   (scripts/test.sh starts a throwaway cluster and exports it)

Each test class gets its own database (fresh_database()), each daemon its own temp dir,
loopback port and unix socket, so suites can run in parallel (ctest -j2).
"""

import atexit
import errno
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def _binary(env, default_rel):
    path = os.environ.get(env) or os.path.join(ROOT, default_rel)
    return os.path.abspath(path)


POLICYD = _binary("LUPINE_POLICYD", "build/policyd/policyd")
ABUSECTL = _binary("LUPINE_ABUSECTL", "build/abusectl/abusectl")
TEST_DSN = os.environ.get("LUPINE_TEST_DSN", "")

EX_CONFIG = 78
START_TIMEOUT = 20.0   # seconds a daemon may take to log "ready"
STOP_TIMEOUT = 20.0    # seconds a daemon may take to exit after SIGTERM
IO_TIMEOUT = 5.0       # socket timeout for any single reply


# ---------------------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------------------

def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or timeout passes (raises)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def sleep_until(t_monotonic):
    """Sleeps until the monotonic clock reaches t (a short, computed wait)."""
    left = t_monotonic - time.monotonic()
    if left > 0:
        time.sleep(left)


# Started as root (CI), policyd refuses to keep root: it binds, then runs as this user, which
# must be able to read what the tests write (allow-list files, reloaded on SIGHUP).
RUN_AS = "nobody" if os.geteuid() == 0 else None


def make_tmpdir():
    """A temp dir, short enough for unix socket paths (108 bytes at most), that policyd can
    still read after dropping root to RUN_AS."""
    base = None if len(tempfile.gettempdir()) <= 40 else "/tmp"
    path = tempfile.mkdtemp(prefix="lupine-sys-", dir=base)
    os.chmod(path, 0o755)
    return path


# ---------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------

def _psql_binary():
    found = shutil.which("psql")
    if found:
        return found
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))
    if cands:
        return cands[-1]
    raise RuntimeError("psql not found")


def require_dsn():
    if not TEST_DSN:
        raise RuntimeError("LUPINE_TEST_DSN is not set (scripts/test.sh sets it; "
                                "or: export LUPINE_TEST_DSN=$(scripts/pg_up.sh /tmp/pg postgres))")
    return TEST_DSN


def dsn_with_db(dsn, dbname):
    """The same DSN with dbname replaced (or added)."""
    if re.search(r"(^|\s)dbname\s*=", dsn):
        return re.sub(r"(^|\s)dbname\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", r"\1dbname=" + dbname, dsn, count=1)
    return (dsn + " dbname=" + dbname).strip()


def psql(dsn, sql, check=True, timeout=30):
    """Runs SQL with psql; returns stdout (unaligned, tuples only, '|' separated)."""
    p = subprocess.run([_psql_binary(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                        "-d", dsn, "-c", sql],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("psql failed (%d) for %r:\n%s" % (p.returncode, sql,
                                                               p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


def query_rows(dsn, sql):
    """Rows as lists of strings (empty string for NULL)."""
    out = psql(dsn, sql)
    return [line.split("|") for line in out.splitlines() if line != ""]


def query_value(dsn, sql):
    out = psql(dsn, sql).strip()
    return out


def wait_query(dsn, sql, expected, timeout=5.0):
    """Polls a one-value query until it returns expected (greylist writes are batched:
    greylist.write_behind, 200 ms by default); returns it or raises."""
    wait_until(lambda: query_value(dsn, sql) == expected, timeout, interval=0.05,
               what="%s = %s" % (sql, expected))
    return expected


def sql_quote(text):
    return "'" + text.replace("'", "''") + "'"


def create_database():
    """Creates a fresh empty database t_<random>; returns (name, dsn)."""
    base = require_dsn()
    name = "t_" + secrets.token_hex(6)
    psql(base, 'CREATE DATABASE "%s"' % name)
    return name, dsn_with_db(base, name)


def drop_database(name):
    if not TEST_DSN or not name:
        return
    psql(TEST_DSN, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name, check=False)


def migrations():
    """The shipped migrations, sorted: [(version, file name)] from sql/NNN_*.sql (the
    version is the number; policyd and abusectl embed the same files)."""
    out = []
    for path in glob.glob(os.path.join(ROOT, "sql", "*.sql")):
        name = os.path.basename(path)
        m = re.match(r"^(\d{3})_.+\.sql$", name)
        if m:
            out.append((int(m.group(1)), name))
    out.sort()
    if not out:
        raise RuntimeError("no migrations found in %s" % os.path.join(ROOT, "sql"))
    return out


def migration_names():
    return [name for _, name in migrations()]


def latest_migration():
    return migrations()[-1][0]


# ---------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------

def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port the kernel just handed out on host (free at the time of the call)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# policyd
# ---------------------------------------------------------------------------------------

def run_policyd(args, timeout=30, cwd=None):
    """Runs policyd to completion (for --check-config etc.); returns CompletedProcess (text)."""
    return subprocess.run([POLICYD] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, cwd=cwd, universal_newlines=True)


def run_abusectl(args, timeout=60, env=None):
    e = dict(os.environ)
    e.pop("LUPINE_DATABASE", None)
    if env:
        e.update(env)
    return subprocess.run([ABUSECTL] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, env=e, universal_newlines=True)


def read_log(path):
    """A log file's text so far ("" before it exists); bad bytes shown, not fatal."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def migrate(dsn):
    """Applies every migration with `abusectl db migrate`; raises when it fails."""
    p = run_abusectl(["-d", dsn, "db", "migrate"])
    if p.returncode != 0:
        raise AssertionError("db migrate failed: %s" % p.stderr)


class Policyd:
    """One policyd process with its own temp dir, config file and log.

    settings: dict of key -> value (or list of values, written as repeated lines).
    listen:   None: one inet:127.0.0.1:<free port>; else a list of endpoints; the
              first inet one sets self.port / self.host. unix endpoints may use
              "{dir}" which is replaced by the temp dir.
    """

    instances = []  # every Policyd ever created in this process (for log dumps)

    def __init__(self, dsn, settings=None, listen=None, name="systest", extra_opts=None,
                 tmpdir=None, start=True):
        self.dsn = dsn
        self.settings = dict(settings or {})
        self.name = name
        self.extra_opts = list(extra_opts or [])
        self.own_tmpdir = tmpdir is None
        self.dir = tmpdir or make_tmpdir()
        self.listen_spec = listen
        self.proc = None
        self.log_path = os.path.join(self.dir, "policyd-%s.log" % secrets.token_hex(3))
        self.config_path = os.path.join(self.dir, "policyd-%s.conf" % secrets.token_hex(3))
        self.spill_dir = os.path.join(self.dir, "spill")
        self.returncode = None
        self.host = None
        self.port = None
        self.unix_path = None
        Policyd.instances.append(self)
        if start:
            self.start()

    # -- configuration ------------------------------------------------------------------
    def _endpoints(self):
        if self.listen_spec is None:
            return ["inet:127.0.0.1:%d" % free_port()]
        out = []
        for ep in self.listen_spec:
            parts = []
            for part in re.split(r"(\s*,\s*)", ep.replace("{dir}", self.dir)):
                if part.startswith("inet:") and part.endswith(":0"):
                    host = part[5:-2]
                    bare = host.strip("[]")
                    fam = socket.AF_INET6 if ":" in bare else socket.AF_INET
                    part = "inet:%s:%d" % (host, free_port(fam, bare))
                parts.append(part)
            out.append("".join(parts))
        return out

    def _write_config(self, endpoints):
        lines = ["# written by tests/system/harness.py", "name = %s" % self.name,
                 "database = %s" % self.dsn]
        if "event_log.spill_dir" not in self.settings:
            lines.append("event_log.spill_dir = %s" % self.spill_dir)
        if RUN_AS and "server.user" not in self.settings:
            lines.append("server.user = %s" % RUN_AS)
        for ep in endpoints:
            lines.append("listen = %s" % ep)
        for key, value in self.settings.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                lines.append("%s = %s" % (key, v))
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.host = self.port = self.unix_path = None
        for ep in [e for item in endpoints for e in re.split(r"[,\s]+", item) if e]:
            if ep.startswith("inet:") and self.port is None:
                host, port = ep[5:].rsplit(":", 1)
                self.host, self.port = host.strip("[]"), int(port)
            elif ep.startswith("unix:") and self.unix_path is None:
                self.unix_path = ep[5:]
        self.endpoints = endpoints

    # -- process ------------------------------------------------------------------------
    def start(self, attempts=3):
        """Writes the config, checks it (--check-config must exit 0), starts, waits for ready."""
        last_error = None
        for _ in range(attempts):
            self._write_config(self._endpoints())
            chk = run_policyd(["-c", self.config_path, "--check-config"] + self._o_args())
            if chk.returncode != 0:
                raise AssertionError("policyd --check-config exited %d:\n%s%s\nconfig:\n%s" % (
                    chk.returncode, chk.stdout, chk.stderr, open(self.config_path).read()))
            log_start = len(self.log_text())
            logf = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen([POLICYD, "-c", self.config_path] + self._o_args(),
                                             stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                             cwd=self.dir)
            finally:
                logf.close()
            self.returncode = None
            try:
                self.wait_ready(log_start=log_start)
                return self
            except AssertionError as e:
                last_error = e
                if self.proc.poll() is None:
                    self.kill()
                # A port grabbed by someone else between free_port() and bind: try another.
                auto_port = self.listen_spec is None or any(
                    re.search(r":0(,|\s|$)", ep) for ep in self.listen_spec)
                if auto_port and "cannot listen" in self.log_text()[log_start:]:
                    continue
                raise
        raise last_error

    def _o_args(self):
        out = []
        for o in self.extra_opts:
            out += ["-o", o]
        return out

    def wait_ready(self, timeout=START_TIMEOUT, log_start=0):
        start_len = log_start

        def ready():
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise AssertionError("policyd exited with %d during start-up; log:\n%s"
                                     % (rc, self.log_text()))
            text = self.log_text()[start_len:]
            if " ready " in text or text.rstrip().endswith(" ready"):
                return True
            return False

        try:
            wait_until(ready, timeout, what="policyd to log 'ready'")
        except AssertionError as e:
            if "during start-up" in str(e):
                raise
            raise AssertionError("%s; log:\n%s" % (e, self.log_text()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait (bounded); returns the exit code. Kills it if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.returncode = self.proc.returncode
                raise AssertionError("policyd did not exit within %.0fs of SIGTERM; log:\n%s"
                                     % (timeout, self.log_text()))
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.returncode = self.proc.returncode

    def restart(self):
        """Stops (SIGTERM) and starts again on the same endpoints and config."""
        rc = self.stop()
        spec = self.listen_spec
        self.listen_spec = list(self.endpoints)  # keep the same port / socket
        try:
            self.start(attempts=1)
        finally:
            self.listen_spec = spec
        return rc

    def cleanup(self):
        try:
            if self.running():
                self.stop(timeout=10)
        except AssertionError:
            pass
        finally:
            self.kill()

    def remove_files(self):
        if self.own_tmpdir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- log ----------------------------------------------------------------------------
    def log_text(self):
        return read_log(self.log_path)

    def log_lines(self, pattern=None):
        lines = self.log_text().splitlines()
        if pattern is None:
            return lines
        rx = re.compile(pattern)
        return [l for l in lines if rx.search(l)]

    def count_log(self, pattern):
        return len(self.log_lines(pattern))

    def wait_for_log(self, pattern, timeout=10.0, count=1):
        """Waits until at least `count` log lines match the regex; returns those lines."""
        def have():
            lines = self.log_lines(pattern)
            return lines if len(lines) >= count else None
        try:
            return wait_until(have, timeout, what="log line /%s/ x%d" % (pattern, count))
        except AssertionError as e:
            raise AssertionError("%s; log:\n%s" % (e, self.log_text()))

    # -- clients ------------------------------------------------------------------------
    def client(self, timeout=IO_TIMEOUT):
        return Client.tcp(self.host, self.port, timeout=timeout)

    def unix_client(self, timeout=IO_TIMEOUT):
        return Client.unix(self.unix_path, timeout=timeout)


def _kill_leftovers():
    """Last resort at interpreter exit: no daemon outlives the test process."""
    for d in Policyd.instances:
        try:
            d.kill()
        except Exception:
            pass


atexit.register(_kill_leftovers)


# ---------------------------------------------------------------------------------------
# Policy protocol client
# ---------------------------------------------------------------------------------------

DEFAULT_ATTRS = [
    ("request", "smtpd_access_policy"),
    ("protocol_state", "RCPT"),
    ("protocol_name", "ESMTP"),
    ("client_address", "192.0.2.10"),
    ("client_name", "unknown"),
    ("reverse_client_name", "unknown"),
    ("helo_name", "mail.example.net"),
    ("sender", "alice@example.net"),
    ("recipient", "bob@example.org"),
    ("recipient_count", "0"),
    ("queue_id", ""),
    ("instance", ""),
    ("size", "0"),
    ("sasl_method", ""),
    ("sasl_username", ""),
    ("sasl_sender", ""),
    ("ccert_subject", ""),
    ("ccert_issuer", ""),
    ("ccert_fingerprint", ""),
    ("encryption_protocol", ""),
    ("encryption_cipher", ""),
    ("encryption_keysize", "0"),
    ("etrn_domain", ""),
    ("stress", ""),
    ("client_port", ""),
    ("policy_context", ""),
    ("server_address", "127.0.0.1"),
    ("server_port", "25"),
]

_instance_counter = [0]


def unique_word(n=10):
    """Random lower-case letters. Senders are normalized (digit runs and hex tags fold to
    '#'), so anything meant to make a sender unique must be letters only."""
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_instance():
    """A fresh Postfix-like 'instance' value (one per SMTP transaction)."""
    _instance_counter[0] += 1
    return "%x.%s.%d" % (os.getpid(), secrets.token_hex(4), _instance_counter[0])


def build_request(**attrs):
    """Bytes of a full Postfix 3.7-like request; kwargs override or add attributes.

    Values may be str or bytes (bytes are sent verbatim, for hostile input). A value of
    None removes the attribute. If no instance is given, a fresh one is used.
    """
    attrs = dict(attrs)
    if "instance" not in attrs:
        attrs["instance"] = new_instance()
    out = []
    seen = set()
    for name, default in DEFAULT_ATTRS:
        seen.add(name)
        value = attrs.get(name, default)
        if value is None:
            continue
        out.append(_line(name, value))
    for name, value in attrs.items():
        if name in seen or value is None:
            continue
        out.append(_line(name, value))
    return b"".join(out) + b"\n"


def _line(name, value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    return name.encode("utf-8") + b"=" + value + b"\n"


class ConnectionClosed(Exception):
    pass


class Client:
    """A policy client on one connection (TCP or unix socket)."""

    def __init__(self, sock, timeout=IO_TIMEOUT):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""

    @classmethod
    def tcp(cls, host, port, timeout=IO_TIMEOUT):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.connect((host, port))
        except OSError:
            s.close()
            raise
        return cls(s, timeout)

    @classmethod
    def unix(cls, path, timeout=IO_TIMEOUT):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.connect(path)
        except OSError:
            s.close()
            raise
        return cls(s, timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data, ignore_errors=False):
        try:
            self.sock.sendall(data)
        except OSError:
            if not ignore_errors:
                raise

    def read_reply(self):
        """Reads one reply (up to the blank line); returns the action string."""
        while b"\n\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError("no reply within %.1fs (got %r)" % (self.sock.gettimeout(), self.buf))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionClosed("connection closed by policyd (partial reply %r)" % self.buf)
            self.buf += chunk
        reply, self.buf = self.buf.split(b"\n\n", 1)
        text = reply.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if not lines[0].startswith("action="):
            raise AssertionError("reply without action=: %r" % text)
        return lines[0][len("action="):]

    def request(self, **attrs):
        """Sends a full request (defaults overridden by kwargs); returns the action."""
        self.send_raw(build_request(**attrs))
        return self.read_reply()

    def wait_closed(self, timeout=5.0):
        """Waits until the peer closes. Returns the bytes received before the close (normally
        b''); raises AssertionError if the connection is still open after timeout."""
        deadline = time.monotonic() + timeout
        got = self.buf
        self.buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection still open after %.1fs (received %r)" % (timeout, got))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return got
            except OSError as e:
                if e.errno in (errno.ECONNRESET, errno.EPIPE):
                    return got
                raise
            if not chunk:
                return got
            got += chunk

    def is_open(self, wait=0.2):
        """True if the peer has not closed within `wait` seconds (no data expected)."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            return True
        except OSError:
            return False
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        return bool(chunk)


# ---------------------------------------------------------------------------------------
# Test case base class
# ---------------------------------------------------------------------------------------

class SystemTestCase(unittest.TestCase):
    """Fresh database per class (cls.dsn); daemons started with self.policyd(...) are
    stopped after each test (and their logs printed when the test failed)."""

    needs_database = True
    dbname = None
    dsn = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._class_daemons = []
        cls.dbname = None
        cls.tmpdir = make_tmpdir()
        # A class cleanup runs even when setUpClass fails half-way (tearDownClass does not).
        cls.addClassCleanup(cls._cleanup_class)
        if cls.needs_database:
            cls.dbname, cls.dsn = create_database()

    @classmethod
    def _cleanup_class(cls):
        for d in cls._class_daemons:
            d.cleanup()
        if cls.dbname:
            drop_database(cls.dbname)
        shutil.rmtree(cls.tmpdir, ignore_errors=True)
        for d in cls._class_daemons:
            d.remove_files()

    @classmethod
    def class_policyd(cls, settings=None, **kw):
        """A daemon shared by every test of the class (stopped in tearDownClass)."""
        d = Policyd(cls.dsn, settings, start=False, **kw)
        cls._class_daemons.append(d)  # tracked first: cleaned up even if the start fails
        return d.start()

    def setUp(self):
        super().setUp()
        self._daemons = []
        self._clients = []

    def policyd(self, settings=None, dsn=None, **kw):
        d = Policyd(dsn or self.dsn, settings, start=False, **kw)
        self._daemons.append(d)  # tracked first: log shown and files removed even if the start fails
        return d.start()

    def track(self, client):
        self._clients.append(client)
        return client

    def tearDown(self):
        for c in self._clients:
            c.close()
        for d in self._daemons:
            d.cleanup()
        super().tearDown()

    def run(self, result=None):
        before = _problem_count(result)
        out = super().run(result)
        if result is not None and _problem_count(result) > before:
            daemons = list(getattr(self, "_daemons", [])) + list(getattr(type(self), "_class_daemons", []))
            for d in daemons:
                sys.stderr.write("\n----- policyd log (%s, %s) -----\n%s----- end of log -----\n"
                                 % (self.id(), d.log_path, d.log_text()))
        for d in getattr(self, "_daemons", []):
            d.remove_files()
        return out

    # -- assertions ---------------------------------------------------------------------
    def assertDeferred(self, action, msg=None):
        self.assertRegex(action, r"^DEFER_IF_PERMIT 4\.7\.1 Greylisted, retry in \d+ seconds$", msg)

    def assertDunno(self, action, msg=None):
        self.assertEqual(action, "DUNNO", msg)


def _problem_count(result):
    if result is None:
        return 0
    return len(result.failures) + len(result.errors) + len(getattr(result, "unexpectedSuccesses", []))
