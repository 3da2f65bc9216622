"""A real, private Postfix instance for the end-to-end tests (Debian's postfix package).

PostfixEnv writes its own main.cf and master.cf into a temp dir and starts Postfix with
`postfix -c DIR start`: its own config, queue and data directories, `maillog_file` (postlogd,
no syslog), loopback only, two smtpd services on free ports:

  mx          inbound mail (port 25's role): relay_domains only, check_policy_service in
              smtpd_recipient_restrictions after reject_unauth_destination, with its own
              per-service settings (`mx_policy`, default `default_action=DUNNO`);
  submission  authenticated mail (587's role), as docs/accounts.md configures it: policyd
              before permit_sasl_authenticated, and again in smtpd_end_of_data_restrictions,
              with main.cf's smtpd_policy_service_default_action (Postfix's 451 4.3.5).

Every message goes to `relayhost` (an SMTP sink on loopback). XCLIENT is allowed from
127.0.0.0/8, so a test claims any client address, name and SASL login (swaks --xclient-*).
Nothing here touches the system Postfix (/etc/postfix, /var/spool/postfix), which need not
be configured or running. Postfix must run as root (tests run as root in CI).
LUPINE_KEEP_POSTFIX=1 keeps each instance's directory (config, queue, maillog) after the test.

`python3 postfixenv.py` starts one against a dummy policy port and prints where it is.
"""

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time

from harness import read_log

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
SWAKS = shutil.which("swaks") or "/usr/bin/swaks"

MX_DOMAIN = "lupine.test"  # the domain the mx service accepts mail for (relay_domains)

_started = []  # every PostfixEnv started in this process, stopped at exit as a last resort


def unavailable_reason():
    """None when a private Postfix can run here, else why not (for skipTest)."""
    if os.geteuid() != 0:
        return "the Postfix end-to-end tests need root (postfix start); CI runs them as root"
    for path, pkg in ((POSTFIX, "postfix"), (POSTCONF, "postfix"), (SWAKS, "swaks")):
        if not os.access(path, os.X_OK):
            return "%s is not installed (scripts/bootstrap.sh installs %s)" % (path, pkg)
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user (the Debian postfix package creates it)"
    # The submission service enables Cyrus SASL (for permit_sasl_authenticated); smtpd dies
    # with "no SASL authentication mechanisms" unless the plugins are installed.
    if not glob.glob("/usr/lib/*/sasl2/libplain.so*") and not glob.glob("/usr/lib/sasl2/libplain.so*"):
        return "Cyrus SASL plugins are not installed (scripts/bootstrap.sh installs libsasl2-modules)"
    return None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class PostfixEnv:
    """One private Postfix. `mx_port` / `submission_port` are where its smtpd services
    listen on 127.0.0.1, `log_path` its maillog."""

    def __init__(self, policy_port, relay_port, mx_policy="timeout=10s, default_action=DUNNO",
                 main_extra=None):
        self.policy = "inet:127.0.0.1:%d" % policy_port
        self.relay_port = relay_port
        self.mx_policy = mx_policy
        self.main_extra = dict(main_extra or {})
        self.dir = tempfile.mkdtemp(prefix="lupine-pfx-", dir="/tmp")  # short: unix socket paths
        os.chmod(self.dir, 0o755)
        self.config_dir = os.path.join(self.dir, "etc")
        self.queue_dir = os.path.join(self.dir, "queue")
        self.data_dir = os.path.join(self.dir, "data")
        # Debian's Cyrus SASL reads $config_directory/sasl/smtpd.conf (not cyrus_sasl_config_path).
        self.sasl_dir = os.path.join(self.config_dir, "sasl")
        self.log_path = os.path.join(self.dir, "log", "maillog")
        self.master_pid = None
        self.mx_port = self.submission_port = None

    # -- configuration ------------------------------------------------------------------
    def main_cf(self):
        policy_mx = "check_policy_service { %s, %s }" % (self.policy, self.mx_policy)
        policy = "check_policy_service %s" % self.policy
        settings = [
            ("compatibility_level", "3.6"),
            ("queue_directory", self.queue_dir),
            ("data_directory", self.data_dir),
            ("mail_owner", "postfix"),
            ("setgid_group", "postdrop"),
            ("syslog_name", "lupine-test-postfix"),
            ("maillog_file", self.log_path),
            ("maillog_file_prefixes", os.path.dirname(self.log_path)),
            ("myhostname", "mx.lupine.test"),
            ("mydomain", "lupine.test"),
            ("myorigin", "$myhostname"),
            ("mydestination", ""),
            ("local_recipient_maps", ""),
            ("alias_maps", ""),
            ("alias_database", ""),
            ("inet_interfaces", "127.0.0.1"),
            ("inet_protocols", "ipv4"),
            ("mynetworks", "127.0.0.0/8"),
            # The test is the client and claims any address, name, HELO and login.
            ("smtpd_authorized_xclient_hosts", "127.0.0.0/8"),
            ("relay_domains", MX_DOMAIN),
            ("relayhost", "[127.0.0.1]:%d" % self.relay_port),
            ("smtp_dns_support_level", "disabled"),
            ("smtp_tls_security_level", "none"),
            ("smtpd_tls_security_level", "none"),
            # Deliver at once, retry the sink fast (a test waits for delivery).
            ("queue_run_delay", "2s"),
            ("minimal_backoff_time", "2s"),
            ("maximal_backoff_time", "4s"),
            ("smtp_connect_timeout", "5s"),
            # Postfix slows down clients that collect errors: not wanted in tests.
            ("smtpd_error_sleep_time", "0"),
            ("smtpd_soft_error_limit", "100"),
            ("smtpd_hard_error_limit", "200"),
            # The policy client as docs/postfix.md recommends: 10 s instead of 100 s per I/O;
            # two tries 1 s apart (Postfix's defaults), so a dead policyd costs ~1 s a request.
            ("smtpd_policy_service_timeout", "10s"),
            ("smtpd_policy_service_try_limit", "2"),
            ("smtpd_policy_service_retry_delay", "1s"),
            # mx: exactly docs/postfix.md's list (policyd after reject_unauth_destination).
            # The tests' claimed clients are not in mynetworks and not authenticated.
            ("mx_recipient_restrictions", "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, "
                                          "reject_unlisted_recipient, %s" % policy_mx),
            # submission: exactly docs/accounts.md's lists.
            ("submission_relay_restrictions",
             "reject_non_fqdn_recipient, %s, permit_sasl_authenticated, reject" % policy),
            ("submission_end_of_data_restrictions", policy),
        ]
        settings += list(self.main_extra.items())
        return "".join("%s = %s\n" % kv for kv in settings)

    def master_cf(self):
        # No chroot anywhere (no copies of /etc files needed); services as in Debian's master.cf.
        lines = [
            "127.0.0.1:%d inet n - n - - smtpd" % self.mx_port,
            "  -o syslog_name=lupine-test-postfix/mx",
            "  -o smtpd_recipient_restrictions=$mx_recipient_restrictions",
            "127.0.0.1:%d inet n - n - - smtpd" % self.submission_port,
            "  -o syslog_name=lupine-test-postfix/submission",
            # permit_sasl_authenticated needs SASL on, even for an XCLIENT LOGIN (smtpd_check.c
            # asks smtpd_sasl_auth_enable). Cyrus with a config of its own; the tests log in
            # with XCLIENT only, so it needs no password database.
            "  -o smtpd_sasl_auth_enable=yes",
            "  -o smtpd_relay_restrictions=$submission_relay_restrictions",
            "  -o smtpd_end_of_data_restrictions=$submission_end_of_data_restrictions",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(lines) + "\n"

    def postconf(self, *args):
        """postconf -c DIR ARGS; returns stdout."""
        p = subprocess.run([POSTCONF, "-c", self.config_dir] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError("postconf %s exited %d: %s" % (" ".join(args), p.returncode, p.stderr))
        return p.stdout

    # -- process ------------------------------------------------------------------------
    def _run_postfix(self, *args, timeout=60):
        env = dict(os.environ)
        env.pop("MAIL_CONFIG", None)
        return subprocess.run([POSTFIX, "-c", self.config_dir] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL)

    def start(self, attempts=3):
        """Writes the configuration, checks it and starts Postfix; returns when both smtpd
        ports accept connections. Retries with new ports if one was taken meanwhile."""
        for d in (self.config_dir, self.queue_dir, self.sasl_dir, os.path.dirname(self.log_path)):
            os.makedirs(d, mode=0o755, exist_ok=True)
        with open(os.path.join(self.sasl_dir, "smtpd.conf"), "w") as f:
            f.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: PLAIN LOGIN\n"
                    % os.path.join(self.sasl_dir, "sasldb2"))
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        last = None
        for _ in range(attempts):
            self.mx_port, self.submission_port = _free_port(), _free_port()
            with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
                f.write(self.main_cf())
            with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
                f.write(self.master_cf())
            # postconf warns about unknown or misspelled parameters: a config typo fails here.
            warn = subprocess.run([POSTCONF, "-c", self.config_dir, "-n"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, universal_newlines=True, timeout=30).stderr
            if warn.strip():
                raise RuntimeError("postconf warnings for %s:\n%s" % (self.config_dir, warn))
            p = self._run_postfix("start")
            if p.returncode != 0:
                raise RuntimeError("postfix -c %s start exited %d:\n%s\nmaillog:\n%s"
                                   % (self.config_dir, p.returncode, p.stdout, self.log_text()))
            _started.append(self)
            self.master_pid = self._read_master_pid()
            try:
                self._wait_listening()
                return self
            except RuntimeError as e:
                last = e
                self.stop()
        raise last

    def _read_master_pid(self, timeout=10.0):
        path = os.path.join(self.queue_dir, "pid", "master.pid")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open(path) as f:
                    text = f.read().strip()
                if text:
                    return int(text.split()[0])
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError("no %s after postfix start; maillog:\n%s" % (path, self.log_text()))

    def _wait_listening(self, timeout=15.0):
        end = time.monotonic() + timeout
        pending = {self.mx_port, self.submission_port}
        while pending:
            for port in list(pending):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        pending.discard(port)
                except OSError:
                    pass
            if not pending:
                return
            if not self.running():
                raise RuntimeError("postfix master exited during start-up; maillog:\n%s" % self.log_text())
            if time.monotonic() > end:
                raise RuntimeError("postfix does not listen on %s after %.0fs; maillog:\n%s"
                                   % (sorted(pending), timeout, self.log_text()))
            time.sleep(0.05)

    def running(self):
        return self.master_pid is not None and _pid_alive(self.master_pid)

    def stop(self, timeout=15.0):
        """`postfix stop`, then waits for the master; kills its process group if it lingers.
        Safe to call twice."""
        if self.master_pid is None:
            return
        pid = self.master_pid
        if _pid_alive(pid):
            try:
                self._run_postfix("stop", timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            end = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if _pid_alive(pid):
                # The master leads its own process group (setsid): that group is ours.
                for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                    try:
                        kill()
                    except OSError:
                        pass
        self.master_pid = None
        if self in _started:
            _started.remove(self)

    def remove_files(self):
        if os.environ.get("LUPINE_KEEP_POSTFIX"):  # debugging: keep config, queue and maillog
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def cleanup(self):
        try:
            self.stop()
        finally:
            self.remove_files()

    # -- log ----------------------------------------------------------------------------
    def log_text(self):
        return read_log(self.log_path)

    def log_lines(self, pattern=None, since=0):
        """Lines of the maillog (from byte offset `since`) matching the regex."""
        lines = self.log_text()[since:].splitlines()
        if pattern is None:
            return lines
        rx = re.compile(pattern)
        return [l for l in lines if rx.search(l)]

    def log_size(self):
        return len(self.log_text())

    def wait_for_log(self, pattern, timeout=10.0, since=0, count=1):
        """Waits (bounded) for `count` maillog lines matching pattern; returns them."""
        end = time.monotonic() + timeout
        while True:
            lines = self.log_lines(pattern, since)
            if len(lines) >= count:
                return lines
            if time.monotonic() > end:
                raise AssertionError("no maillog line /%s/ (x%d) within %.0fs; maillog:\n%s"
                                     % (pattern, count, timeout, self.log_text()[since:]))
            time.sleep(0.05)


class SmtpResult:
    """What swaks saw: the server's replies in order, and the final verdict."""

    def __init__(self, proc, args):
        self.args = args
        self.returncode = proc.returncode
        self.output = proc.stdout + proc.stderr
        # swaks marks server replies "<- " (success) and "<** " (error).
        self.replies = [re.sub(r"^<(?:-|\*\*) +", "", l) for l in self.output.splitlines()
                        if re.match(r"^<(?:-|\*\*) ", l)]

    def reply_to(self, command):
        """The server's (last, possibly multi-line joined) reply to the first client line
        starting with `command` (RCPT, DATA, ...), or None."""
        lines = self.output.splitlines()
        for i, l in enumerate(lines):
            if re.match(r"^ *-> +%s" % re.escape(command), l, re.I):
                out = []
                for r in lines[i + 1:]:
                    if re.match(r"^<(?:-|\*\*) ", r):
                        out.append(re.sub(r"^<(?:-|\*\*) +", "", r))
                        if re.match(r"^\d{3} ", out[-1]):
                            return out[-1]
                    elif re.match(r"^ *-> ", r):
                        break
                return out[-1] if out else None
        return None

    def data_reply(self):
        """The reply to the end of the message data (the line after '-> .')."""
        lines = self.output.splitlines()
        for i, l in enumerate(lines):
            if re.match(r"^ *-> +\.$", l):
                for r in lines[i + 1:]:
                    if re.match(r"^<(?:-|\*\*) ", r):
                        return re.sub(r"^<(?:-|\*\*) +", "", r)
        return None

    def accepted(self):
        """True when the message was queued (250 after the data)."""
        reply = self.data_reply()
        return reply is not None and reply.startswith("250 ")

    def queue_id(self):
        reply = self.data_reply() or ""
        m = re.search(r"queued as ([0-9A-Za-z]+)", reply)
        return m.group(1) if m else None

    def __str__(self):
        return "swaks %s -> exit %d\n%s" % (" ".join(self.args), self.returncode, self.output)


def swaks(port, sender, recipients, addr=None, name=None, helo="mail.sender.example", login=None,
          subject="test", body="Lupine end-to-end test message.", headers=None, timeout=60,
          extra=None):
    """Sends one message with swaks to 127.0.0.1:port, claiming the client with XCLIENT.

    addr/name: XCLIENT ADDR and NAME (NAME also as REVERSE_NAME: a verified name; no name:
    [UNAVAILABLE], which Postfix shows as "unknown");
    login: XCLIENT LOGIN (Postfix then sends sasl_username to the policy server).
    The HELO is swaks' --helo: the EHLO that must follow XCLIENT replaces XCLIENT HELO.
    Returns an SmtpResult; swaks' exit status is not an error (a refusal is a result)."""
    if isinstance(recipients, str):
        recipients = [recipients]
    args = ["--server", "127.0.0.1:%d" % port, "--from", sender, "--to", ",".join(recipients),
            "--helo", helo, "--header", "Subject: %s" % subject, "--body", body,
            "--timeout", "30", "--hide-informational"]
    if addr:
        args += ["--xclient-addr", addr]
        # Without NAME Postfix keeps the name of the real peer (localhost): say "unknown".
        name = name or "[UNAVAILABLE]"
    if name:
        args += ["--xclient-name", name, "--xclient-reverse-name", name]
    if login:
        args += ["--xclient-login", login]
    for h in headers or []:
        args += ["--add-header", h]
    args += list(extra or [])
    p = subprocess.run([SWAKS] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return SmtpResult(p, args)


def smtp_session(port, addr, name=None, login=None, helo="mail.sender.example", timeout=30):
    """An open SMTP session (smtplib) to 127.0.0.1:port after XCLIENT and the EHLO that must
    follow it, for tests that act in the middle of a session (swaks runs whole sessions).
    Replies come as (code, text); the caller closes it (quit/close)."""
    s = smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=timeout)
    try:
        s.ehlo()
        name = name or "[UNAVAILABLE]"
        attrs = ["ADDR=" + addr, "NAME=" + name, "REVERSE_NAME=" + name]
        if login:
            attrs.append("LOGIN=" + login)
        code, text = s.docmd("XCLIENT", " ".join(attrs))
        if code != 220:
            raise AssertionError("XCLIENT refused: %d %s" % (code, text.decode(errors="replace")))
        s.ehlo()
    except BaseException:
        s.close()
        raise
    return s


def _stop_leftovers():
    for env in list(_started):
        try:
            env.stop(timeout=10)
        except Exception:
            pass


# Registered after harness's hook (imported first), so it runs before it: Postfix stops
# before the policyd it talks to is killed.
atexit.register(_stop_leftovers)


if __name__ == "__main__":
    why = unavailable_reason()
    if why:
        raise SystemExit(why)
    env = PostfixEnv(policy_port=_free_port(), relay_port=_free_port())
    env.start()
    print("postfix", env.config_dir, "mx", env.mx_port, "submission", env.submission_port,
          "master", env.master_pid)
    try:
        print(env.postconf("-n"))
        r = swaks(env.mx_port, "a@sender.example", "b@" + MX_DOMAIN, addr="203.0.113.5",
                  name="mail.sender.example")
        print(r)
    finally:
        env.stop()
        print(env.log_text())
        env.remove_files()
