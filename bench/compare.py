#!/usr/bin/env python3
"""policyd side by side with postgrey, sqlgrey and a trivial DUNNO server, in one run on one
machine, with one load generator and one workload. Usage:

    bench/compare.py [--requests 30000] [--seconds 15] [--concurrency 1,8,64] [--scale]
                     [--servers dunno,policyd,postgrey,sqlgrey,postgrey-tmpfs,sqlgrey-async]
                     [--build DIR] [--policyd PATH] [--json FILE]

It installs nothing: it checks for what it needs and says what is missing (Debian 12:
`apt-get install -y postgrey sqlgrey libdbd-pg-perl`; the rest comes with scripts/bootstrap.sh,
and `cmake --build build --target loadgen dunno_server` builds the bench tools).

Servers, each on its own loopback port, all started before the first measurement:
  dunno           bench/dunno_server: answers DUNNO to everything, one thread (the ceiling of
                  the machine and of the generator)
  policyd         the full pipeline: greylisting on PostgreSQL, event log on, account limits
                  on, flood control on, three DNS lists (tests/system/dnsenv.py's NSD behind
                  dnsmasq), reverse DNS scoring from Postfix's attributes
  postgrey        Debian's postgrey, its own BerkeleyDB in a temp dir (on disk)
  sqlgrey         Debian's sqlgrey on the same PostgreSQL cluster (database sqlgrey), greymethod
                  classc (a /24 per client, as postgrey and policyd)
  postgrey-tmpfs  postgrey with its BerkeleyDB on tmpfs (/dev/shm): its per-request fdatasync
                  costs nothing, like policyd's synchronous_commit = off
  sqlgrey-async   sqlgrey on a database with synchronous_commit = off, like policyd's connections

Workload: bench/loadgen (Postfix 3.7 attribute set, clients over 5,000 /24s, 30% retries of
earlier triplets), the same seed for every server at a given concurrency. Before each measured
run every server gets a warm-up run of the same seed with `--sender-tag warm`: the same
clients (so policyd's DNS cache holds every client the measured run sends) but other
triplets, so the measured run's triplets are still new to every server (first attempt:
greylisted and written; retries: early, greylisted again).

Per run: decisions/s, p50/p99 latency, CPU of the server and of PostgreSQL (every backend and
helper process of the cluster), of the generator and of the whole machine (% of one core:
this machine's 100% is one core busy), the server's resident memory. Then the ratios
policyd/postgrey, policyd/sqlgrey and policyd/ceiling, and the targets of the performance
issue, met or not.

--scale: afterwards, 1,000,000 greylist triplets and 10,000,000 event-log rows (10 day
partitions) are loaded into policyd's database, VACUUM ANALYZE runs, a fresh policyd is started
and measured again in the same way (other seeds: new triplets), and both rows are printed."""
import argparse
import datetime
import json
import os
import grp
import platform
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root / "bench"))
import dns_bench as bench  # noqa: E402  (throwaway PostgreSQL, policyd command, test DNS)

CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_SERVERS = ["dunno", "policyd", "postgrey", "sqlgrey", "postgrey-tmpfs", "sqlgrey-async"]
SAMPLE_REQUEST = ("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
                  "client_address=10.254.254.7\nclient_name=unknown\nreverse_client_name=unknown\n"
                  "helo_name=mail.example.net\nsender=probe@sample.example\nrecipient=rcpt1@example.org\n"
                  "queue_id=\nrecipient_count=0\ninstance=1.2.0\nsize=0\nsasl_method=\nsasl_username=\n\n")


# ----------------------------------------------------------------------------------------
# /proc accounting
# ----------------------------------------------------------------------------------------

def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def proc_ticks(pid):
    """utime + stime of one process, in clock ticks (0 if it is gone)."""
    try:
        f = _stat_fields(pid)
        return int(f[11]) + int(f[12])
    except (OSError, ValueError, IndexError):
        return 0


def tree_ticks(pid):
    """utime + stime of pid and of its live children (PostgreSQL: the postmaster and every
    backend and helper process)."""
    total = proc_ticks(pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            f = _stat_fields(entry)
        except OSError:
            continue
        if f[1] == str(pid):
            total += int(f[11]) + int(f[12])
    return total


def proc_memory(pid):
    """(VmRSS, VmHWM) in MiB."""
    out = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out["VmRSS"], out["VmHWM"]


def machine_ticks():
    """(busy, total) ticks of all CPUs since boot (/proc/stat; iowait counts as idle)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    total = sum(v[:8])
    return total - v[3] - v[4], total


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------------------
# Tools and servers
# ----------------------------------------------------------------------------------------

def which(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


def check_tools(servers, build, policyd_bin):
    """Every missing tool with how to get it; an empty list when all is there."""
    missing = []
    need = {"loadgen": build / "bench/loadgen"}
    if "dunno" in servers:
        need["dunno_server"] = build / "bench/dunno_server"
    for name, path in need.items():
        if not os.access(path, os.X_OK):
            missing.append((str(path), f"cmake --build {build} --target loadgen dunno_server"))
    if os.access(need["loadgen"], os.X_OK):
        helptext = subprocess.run([str(need["loadgen"]), "--help"], capture_output=True, text=True).stdout
        if "--sender-tag" not in helptext:
            missing.append((f"{need['loadgen']} with --sender-tag (older build)", f"cmake --build {build} --target loadgen"))
    if "policyd" in servers and not os.access(policyd_bin, os.X_OK):
        missing.append((str(policyd_bin), "scripts/bootstrap.sh (builds policyd)"))
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        missing.append(("PostgreSQL server", "apt-get install -y postgresql"))
    if "policyd" in servers:
        for tool in ("nsd", "dnsmasq"):
            if not which(tool):
                missing.append((tool, f"apt-get install -y {tool}"))
    if any(s.startswith("postgrey") for s in servers):
        if not which("postgrey"):
            missing.append(("postgrey", "apt-get install -y postgrey"))
    if any(s.startswith("sqlgrey") for s in servers):
        if not which("sqlgrey"):
            missing.append(("sqlgrey", "apt-get install -y sqlgrey libdbd-pg-perl"))
        elif subprocess.run(["perl", "-MDBD::Pg", "-e", "1"], capture_output=True).returncode != 0:
            missing.append(("perl DBD::Pg (for sqlgrey)", "apt-get install -y libdbd-pg-perl"))
    return missing


def daemon_user(name):
    """(user, group) a Perl daemon switches to: its own system user as root, else ourselves."""
    u = pwd.getpwnam(name) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    return u.pw_name, grp.getgrgid(u.pw_gid).gr_name


class Server:
    def __init__(self, name, label):
        self.name = name
        self.label = label
        self.port = bench.free_port()
        self.proc = None
        self.log_path = None
        self.uses_db = False

    def launch(self, cmd, workdir):
        self.log_path = os.path.join(workdir, f"{self.name}.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            bench.wait_port(self.port, self.proc)
        except RuntimeError as e:
            raise RuntimeError(f"{self.label} did not start: {e}; log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, n=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_dunno(build, workdir):
    s = Server("dunno", "ceiling (DUNNO server)")
    s.launch([str(build / "bench/dunno_server"), "--port", str(s.port)], workdir)
    return s


def start_policyd(policyd_bin, dsn, dns_server, workdir, requests, name="policyd", label="policyd"):
    s = Server(name, label)
    s.uses_db = True
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    # The default configuration (event log, limits, flood control, greylisting) plus the DNS
    # lists; a DNS cache large enough that the warm-up's answers are all still there.
    extra = ["name=bench-mx", f"dns.cache_size={max(100000, 4 * requests)}"]
    s.launch(bench.policyd_command(policyd_bin, dsn, s.port, dns_server, d, extra), workdir)
    return s


def start_postgrey(workdir, tmpfs=False):
    name = "postgrey-tmpfs" if tmpfs else "postgrey"
    s = Server(name, "postgrey (db on tmpfs)" if tmpfs else "postgrey")
    dbdir = tempfile.mkdtemp(prefix="lupine-postgrey.", dir="/dev/shm" if tmpfs else workdir)
    user, gid = daemon_user("postgrey")
    shutil.chown(dbdir, user, gid)
    s.dbdir = dbdir
    s.launch([which("postgrey"), f"--inet=127.0.0.1:{s.port}", f"--dbdir={dbdir}", f"--user={user}",
              f"--group={gid}"], workdir)
    return s


def start_sqlgrey(pgdir, workdir, async_commit=False):
    name = "sqlgrey-async" if async_commit else "sqlgrey"
    s = Server(name, "sqlgrey (synchronous_commit=off)" if async_commit else "sqlgrey")
    s.uses_db = True
    db = "sqlgrey_async" if async_commit else "sqlgrey"
    dsn = bench.create_db(pgdir, db)
    user_db = re.search(r"user=(\S+)", dsn).group(1)
    if async_commit:
        psql(dsn, f"ALTER DATABASE {db} SET synchronous_commit = off")
    user, gid = daemon_user("sqlgrey")
    conf = os.path.join(workdir, f"{name}.conf")
    with open(conf, "w") as f:
        f.write("\n".join([
            "conf_dir = /etc/sqlgrey",
            f"user = {user}",
            f"group = {gid}",
            f"inet = 127.0.0.1:{s.port}",
            "db_type = Pg",
            f"db_dsn = DBI:Pg:dbname={db};host={pgdir}/run",
            f"db_user = {user_db}",
            "db_pass =",
            "greymethod = classc",
            "admin_mail =",
        ]) + "\n")
    os.chmod(conf, 0o644)
    s.launch([which("sqlgrey"), "-f", conf], workdir)
    return s


def psql_binary():
    found = shutil.which("psql")
    if found:
        return found
    return str(sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))[-1])


def psql(dsn, sql, timeout=3600):
    p = subprocess.run([psql_binary(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"psql failed for {sql[:200]!r}: {p.stderr}")
    return p.stdout.strip()


def sample_reply(port):
    """The first reply line of a server to one fixed request (what Postfix would be told)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(SAMPLE_REQUEST.encode())
            data = b""
            while b"\n\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.decode(errors="replace").split("\n", 1)[0]
    except OSError as e:
        return f"(no reply: {e})"


# ----------------------------------------------------------------------------------------
# Load and measurement
# ----------------------------------------------------------------------------------------

def run_loadgen(loadgen, port, conns, requests, seconds, seed, tag=None):
    cmd = [str(loadgen), "--port", str(port), "--connections", str(conns), "--requests", str(requests),
           "--seconds", str(seconds), "--seed", str(seed)]
    if tag:
        cmd += ["--sender-tag", tag]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
    out = p.stdout
    r = {"cmd": " ".join(cmd[1:]), "rc": p.returncode, "stderr": p.stderr.strip()}
    m = re.search(r"requests=(\d+) seconds=([\d.]+) decisions/s=(\d+)", out)
    if not m:
        raise RuntimeError(f"loadgen printed no result (rc {p.returncode}): {out}{p.stderr}")
    r["requests"], r["elapsed"], r["rate"] = int(m.group(1)), float(m.group(2)), float(m.group(3))
    m = re.search(r"p50=([\d.]+) p90=([\d.]+) p99=([\d.]+) max=([\d.]+)", out)
    r["p50"], r["p90"], r["p99"], r["max"] = (float(x) for x in m.groups())
    r["actions"] = {a: int(n) for a, n in re.findall(r"^action (\S+) (\d+)$", out, re.M)}
    m = re.search(r"errors=(\d+) failed_connections=(\d+)", out)
    r["errors"], r["failed_connections"] = int(m.group(1)), int(m.group(2))
    return r


class Meter:
    """CPU and memory of one measured run."""

    def __init__(self, server, postmaster):
        self.server = server
        self.postmaster = postmaster if server.uses_db else None

    def __enter__(self):
        self.t0 = time.monotonic()
        self.srv0 = proc_ticks(self.server.proc.pid)
        self.db0 = tree_ticks(self.postmaster) if self.postmaster else 0
        self.busy0, self.total0 = machine_ticks()
        self.lg0 = children_cpu()
        self.load0 = os.getloadavg()[0]
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        self.busy1, self.total1 = machine_ticks()
        self.lg1 = children_cpu()
        # Let the server finish what the run left (policyd flushes the event log every second)
        # and count that too: it is part of what the run cost.
        time.sleep(1.5)
        self.srv1 = proc_ticks(self.server.proc.pid)
        self.db1 = tree_ticks(self.postmaster) if self.postmaster else 0
        self.rss, self.hwm = proc_memory(self.server.proc.pid)

    def result(self):
        ncpu = os.cpu_count() or 1
        pct = lambda ticks: 100.0 * ticks / CLK_TCK / self.wall  # noqa: E731
        srv = pct(self.srv1 - self.srv0)
        db = pct(self.db1 - self.db0) if self.postmaster else 0.0
        lg = 100.0 * (self.lg1 - self.lg0) / self.wall
        busy = 100.0 * ncpu * (self.busy1 - self.busy0) / max(1, self.total1 - self.total0)
        return {"server_cpu": srv, "db_cpu": db, "loadgen_cpu": lg, "machine_busy": busy,
                "rest_cpu": max(0.0, busy - srv - db - lg), "rss_mb": self.rss, "hwm_mb": self.hwm,
                "load_before": self.load0, "wall": self.wall}


def measure(server, args, loadgen, conns, seed, postmaster, dns=None):
    """Warm-up run (same clients, other triplets), then the measured run."""
    warm_seconds = 4 * args.seconds if server.name.startswith("policyd") else min(args.seconds, 5)
    if server.name != "dunno":
        w = run_loadgen(loadgen, server.port, conns, args.requests, warm_seconds, seed, tag="warm")
        print(f"   warm-up {server.label:<34} c={conns:<3} {w['requests']:>6} requests {w['rate']:>8.0f}/s",
              flush=True)
        time.sleep(1.5)
    q0 = dns_queries(dns)
    # The ceiling gets ten times the requests (the same stream, longer) so that its run is
    # not over in a fraction of a second; --seconds bounds it like every other run.
    requests = 10 * args.requests if server.name == "dunno" else args.requests
    with Meter(server, postmaster) as m:
        r = run_loadgen(loadgen, server.port, conns, requests, args.seconds, seed)
    r.update(m.result())
    r["server"], r["label"], r["conns"], r["seed"] = server.name, server.label, conns, seed
    r["dns_queries"] = dns_queries(dns) - q0 if dns else None
    acts = ", ".join(f"{a} {n}" for a, n in sorted(r["actions"].items()))
    print(f"   {server.label:<42} c={conns:<3} {r['rate']:>8.0f}/s p50 {r['p50']:.3f} p99 {r['p99']:.3f} ms "
          f"cpu {r['server_cpu']:.0f}% db {r['db_cpu']:.0f}% machine {r['machine_busy']:.0f}% "
          f"rss {r['rss_mb']:.1f} MB | {acts} | errors {r['errors']} failed {r['failed_connections']}"
          + (f" | DNS queries {r['dns_queries']}" if dns else ""), flush=True)
    return r


def dns_queries(env):
    if env is None:
        return 0
    try:
        with open(env.query_log) as f:
            return sum(1 for line in f if "query[" in line)
    except OSError:
        return 0


# ----------------------------------------------------------------------------------------
# Scaling: preloaded data
# ----------------------------------------------------------------------------------------

def preload(dsn, triplets=1_000_000, events=10_000_000, days=10):
    """Distinct greylist triplets (90% passed over the last 30 days, 10% pending from the last
    day: nothing the expiry task would delete) and event-log rows in day partitions before
    today (80% inbound RCPT, 20% authenticated END-OF-MESSAGE), then VACUUM ANALYZE."""
    t0 = time.monotonic()
    psql(dsn, f"""
        INSERT INTO greylist (client_net, sender, recipient, first_seen, last_seen, passed_at, attempts)
        SELECT network(set_masklen('100.64.0.0'::inet + (i % 65536) * 256, 24)),
               'bulk' || i || '@s' || (i % 5000) || '.example',
               'r' || (i % 20000) || '@example.org',
               CASE WHEN i % 10 = 0 THEN now() - (i % 1440) * interval '1 minute'
                    ELSE now() - (i % 30) * interval '1 day' - interval '1 hour' END,
               CASE WHEN i % 10 = 0 THEN now() - (i % 1440) * interval '1 minute'
                    ELSE now() - (i % 30) * interval '1 day' END,
               CASE WHEN i % 10 = 0 THEN NULL
                    ELSE now() - (i % 30) * interval '1 day' - interval '50 minutes' END,
               CASE WHEN i % 10 = 0 THEN 1 ELSE 2 END
        FROM generate_series(1::bigint, {triplets}) AS i""")
    t_grey = time.monotonic() - t0
    print(f"   {triplets:,} greylist triplets loaded in {t_grey:.0f} s", flush=True)
    per_day = events // days
    today = datetime.datetime.now(datetime.timezone.utc).date()
    cols = ("ts, policyd, postfix_instance, queue_id, protocol_state, client_address, client_name, "
            "reverse_client_name, helo_name, sender, recipient, recipient_count, size, sasl_username, "
            "sasl_method, policy_context, verdict, action, reason, score, elapsed_us")
    t1 = time.monotonic()
    for k in range(1, days + 1):
        day = today - datetime.timedelta(days=k)
        part = f"event_log_{day:%Y%m%d}"
        start, end = f"{day} 00:00:00+00", f"{day + datetime.timedelta(days=1)} 00:00:00+00"
        # Filled before it is attached: the indexes are then built once, not row by row.
        psql(dsn, f"""
            SET maintenance_work_mem = '256MB';
            CREATE TABLE {part} (LIKE event_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
            INSERT INTO {part} ({cols})
            SELECT '{start}'::timestamptz + ((i - 1) * 86400.0 / {per_day}) * interval '1 second',
                   'bench-mx', to_hex(i) || '.{k:x}.0',
                   CASE WHEN i % 5 = 0 THEN 'Q' || upper(to_hex(i * 16 + {k})) ELSE '' END,
                   CASE WHEN i % 5 = 0 THEN 'END-OF-MESSAGE' ELSE 'RCPT' END,
                   CASE WHEN i % 5 = 0 THEN '172.16.0.0'::inet + (i % 60000)
                        ELSE '100.64.0.0'::inet + (i * 7919 % 16000000) END,
                   CASE WHEN i % 3 = 0 THEN 'unknown' ELSE 'mail' || (i % 50000) || '.example.net' END,
                   CASE WHEN i % 3 = 0 THEN 'unknown' ELSE 'mail' || (i % 50000) || '.example.net' END,
                   'mail' || (i % 50000) || '.example.net',
                   'user' || (i % 100000) || '@sender' || (i % 3000) || '.example',
                   'rcpt' || (i % 200000) || '@example.org',
                   CASE WHEN i % 5 = 0 THEN 1 + i % 4 ELSE 0 END,
                   CASE WHEN i % 5 = 0 THEN 2000 + i % 60000 ELSE 0 END,
                   CASE WHEN i % 5 = 0 THEN 'user' || (i % 10000) || '@example.org' ELSE '' END,
                   CASE WHEN i % 5 = 0 THEN 'PLAIN' ELSE '' END,
                   '',
                   CASE WHEN i % 5 = 0 OR i % 7 = 0 THEN 'dunno' ELSE 'defer_if_permit' END,
                   CASE WHEN i % 5 = 0 OR i % 7 = 0 THEN 'DUNNO'
                        ELSE 'DEFER_IF_PERMIT 4.7.1 Greylisted, retry in 300 seconds' END,
                   CASE WHEN i % 5 = 0 THEN 'authenticated' WHEN i % 7 = 0 THEN 'greylist_passed'
                        ELSE 'greylist_new' END,
                   (i % 4)::real, 300 + i % 2000
            FROM generate_series(1::bigint, {per_day}) AS i;
            ALTER TABLE event_log ATTACH PARTITION {part} FOR VALUES FROM ('{start}') TO ('{end}');""")
        print(f"   event_log partition {part}: {per_day:,} rows ({time.monotonic() - t1:.0f} s so far)", flush=True)
    t_events = time.monotonic() - t1
    t2 = time.monotonic()
    psql(dsn, "VACUUM ANALYZE greylist")
    psql(dsn, "VACUUM ANALYZE event_log")
    t_vacuum = time.monotonic() - t2
    sizes = psql(dsn, """SELECT (SELECT count(*) FROM greylist) || ' ' || (SELECT count(*) FROM event_log) || ' ' ||
        pg_total_relation_size('greylist') || ' ' ||
        (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'event_log'::regclass) || ' ' ||
        pg_database_size(current_database())""").split()
    info = {"greylist_rows": int(sizes[0]), "event_log_rows": int(sizes[1]),
            "greylist_mb": int(sizes[2]) / 2**20, "event_log_mb": int(sizes[3]) / 2**20,
            "database_mb": int(sizes[4]) / 2**20, "load_greylist_s": t_grey, "load_event_log_s": t_events,
            "vacuum_s": t_vacuum}
    print(f"   VACUUM ANALYZE {t_vacuum:.0f} s; greylist {info['greylist_rows']:,} rows {info['greylist_mb']:.0f} MB, "
          f"event_log {info['event_log_rows']:,} rows {info['event_log_mb']:.0f} MB, "
          f"database {info['database_mb']:.0f} MB", flush=True)
    return info


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------

def machine_description():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 2**20
    versions = {}
    for pkg in ("postgrey", "sqlgrey", "postgresql-15", "nsd", "dnsmasq-base"):
        p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        if p.returncode == 0:
            versions[pkg] = p.stdout
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "kernel": platform.release(),
            "versions": versions}


def short(n):
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"


def fmt_ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def print_tables(results, concurrency, servers):
    by = {(r["server"], r["conns"]): r for r in results}
    print("\n| server | connections | decisions/s | p50 ms | p99 ms | server CPU % | PostgreSQL CPU % "
          "| loadgen CPU % | machine busy % | rest % | server RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in concurrency:
        for s in servers:
            r = by.get((s, c))
            if not r:
                continue
            db = f"{r['db_cpu']:.0f}" if r["server"] in ("policyd", "policyd-scale") or "sqlgrey" in s else "-"
            print(f"| {r['label']} | {c} | {r['rate']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                  f"{r['server_cpu']:.0f} | {db} | {r['loadgen_cpu']:.0f} | {r['machine_busy']:.0f} | "
                  f"{r['rest_cpu']:.0f} | {r['rss_mb']:.1f} |")
    cols = [("postgrey", "policyd/postgrey"), ("sqlgrey", "policyd/sqlgrey"), ("dunno", "policyd/ceiling"),
            ("postgrey-tmpfs", "policyd/postgrey (tmpfs)"), ("sqlgrey-async", "policyd/sqlgrey (async)")]
    cols = [(s, h) for s, h in cols if s in servers]
    if "policyd" in servers and cols:
        print("\nThroughput ratios (decisions/s):\n")
        print("| connections | " + " | ".join(h for _, h in cols) + " | policyd CPU % | policyd RSS MB (peak) |")
        print("|---|" + "---|" * len(cols) + "---|---|")
        for c in concurrency:
            p = by.get(("policyd", c))
            if not p:
                continue
            cells = [fmt_ratio(p["rate"], by.get((s, c), {}).get("rate")) for s, _ in cols]
            print(f"| {c} | " + " | ".join(cells) + f" | {p['server_cpu']:.0f} | {p['rss_mb']:.1f} ({p['hwm_mb']:.1f}) |")


def check_targets(results, scale_results):
    """The performance issue's targets, each with its measured value."""
    by = {(r["server"], r["conns"]): r for r in results}
    out = []
    p64, d64 = by.get(("policyd", 64)), by.get(("dunno", 64))
    if p64 and d64:
        share = p64["rate"] / d64["rate"]
        out.append(("throughput at 64 connections >= 50% of the ceiling", f"{100 * share:.0f}%", share >= 0.5))
    for c, limit in ((8, 1.0), (64, 5.0)):
        p = by.get(("policyd", c))
        if p:
            out.append((f"p99 < {limit:g} ms at {c} connections", f"{p['p99']:.2f} ms", p["p99"] < limit))
    if scale_results:
        peak = max(r["hwm_mb"] for r in scale_results)
        out.append(("RSS < 100 MB with 1M triplets", f"{peak:.1f} MB peak (scaling run)", peak < 100))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=30000, help="requests per run at most (default 30000)")
    ap.add_argument("--seconds", type=float, default=15, help="seconds per measured run at most (default 15)")
    ap.add_argument("--concurrency", default="1,8,64", help="connection counts (default 1,8,64)")
    ap.add_argument("--scale", action="store_true", help="then preload 1M triplets and 10M event-log rows and "
                    "measure policyd again")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS), help="which servers (default: all)")
    ap.add_argument("--build", default=str(root / "build"), help="build dir of loadgen and dunno_server")
    ap.add_argument("--policyd", help="policyd binary (default BUILD/policyd/policyd)")
    ap.add_argument("--scale-triplets", type=int, default=1_000_000, help=argparse.SUPPRESS)
    ap.add_argument("--scale-events", type=int, default=10_000_000, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1000, help="base seed; a run at C connections uses seed+C")
    ap.add_argument("--json", help="also write every result to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, the database)")
    args = ap.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in ALL_SERVERS]
    if unknown:
        ap.error(f"unknown servers {unknown}; known: {', '.join(ALL_SERVERS)}")
    if args.scale and "policyd" not in servers:
        ap.error("--scale measures policyd: keep it in --servers")
    build = Path(args.build).resolve()
    policyd_bin = Path(args.policyd).resolve() if args.policyd else build / "policyd/policyd"
    loadgen = build / "bench/loadgen"

    missing = check_tools(servers, build, policyd_bin)
    if missing:
        print("compare.py: missing tools (it installs nothing itself):", file=sys.stderr)
        for what, how in missing:
            print(f"  {what:<40} {how}", file=sys.stderr)
        print("or leave the servers that need them out with --servers.", file=sys.stderr)
        return 2

    desc = machine_description()
    started = datetime.datetime.now().astimezone()
    print(f"# compare.py {started:%Y-%m-%d %H:%M %Z}: {desc['cores']} cores ({desc['cpu']}), "
          f"{desc['memory_gib']} GiB, Linux {desc['kernel']}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"# versions: {', '.join(f'{k} {v}' for k, v in desc['versions'].items())}")
    print(f"# servers {', '.join(servers)}; connections {concurrency}; at most {args.requests} requests "
          f"and {args.seconds:g} s per run; policyd {policyd_bin}; loadgen {loadgen}", flush=True)

    workdir = tempfile.mkdtemp(prefix="lupine-compare.", dir="/tmp")
    os.chmod(workdir, 0o755)
    pgdir = None
    env = None
    running = []
    results, scale_results, scale_info = [], [], None
    try:
        pgdir, dsn = bench.start_pg(prefix="lupine-compare-pg.", dbname="lupine")
        with open(os.path.join(pgdir, "data/postmaster.pid")) as f:
            postmaster = int(f.readline())
        if "policyd" in servers:
            env = bench.DnsEnv()
        for s in servers:
            if s == "dunno":
                running.append(start_dunno(build, workdir))
            elif s == "policyd":
                running.append(start_policyd(policyd_bin, dsn, env.server, workdir, args.requests))
            elif s.startswith("postgrey"):
                running.append(start_postgrey(workdir, tmpfs=s.endswith("tmpfs")))
            elif s.startswith("sqlgrey"):
                running.append(start_sqlgrey(pgdir, workdir, async_commit=s.endswith("async")))
        print("\nWhat each server answers to one new triplet:")
        for s in running:
            print(f"   {s.label:<42} {sample_reply(s.port)}")
        print(flush=True)
        for c in concurrency:
            print(f"== {c} connections (seed {args.seed + c}); load average {os.getloadavg()[0]:.2f}", flush=True)
            for s in running:
                results.append(measure(s, args, loadgen, c, args.seed + c, postmaster,
                                       env if s.name == "policyd" else None))
        print_tables(results, concurrency, servers)

        if args.scale:
            print("\n== scaling: preloading policyd's database", flush=True)
            for s in running:  # the peers are done; the database gets the machine to itself
                if s.name != "policyd":
                    s.stop()
            scale_info = preload(dsn, args.scale_triplets, args.scale_events)
            old = next(s for s in running if s.name == "policyd")
            old.stop()
            fresh = start_policyd(policyd_bin, dsn, env.server, workdir, args.requests, name="policyd-scale",
                                  label=f"policyd, {short(args.scale_triplets)} triplets + {short(args.scale_events)} events")
            running.append(fresh)
            rss0, _ = proc_memory(fresh.proc.pid)
            scale_info["rss_at_start_mb"] = rss0
            for c in concurrency:
                seed = args.seed + 1000 + c  # new triplets, as in the first pass
                print(f"== {c} connections (seed {seed}); load average {os.getloadavg()[0]:.2f}", flush=True)
                scale_results.append(measure(fresh, args, loadgen, c, seed, postmaster, env))
            print("\nScaling (the same workload, other seeds; policyd restarted after the preload):")
            both = [r for r in results if r["server"] == "policyd"] + scale_results
            print_tables(both, concurrency, ["policyd", "policyd-scale"])
            print(f"\npolicyd RSS with {args.scale_triplets:,} triplets: {rss0:.1f} MB at start, "
                  f"{max(r['hwm_mb'] for r in scale_results):.1f} MB peak")

        targets = check_targets(results, scale_results)
        if targets:
            print("\nTargets of the performance issue:\n")
            for what, value, ok in targets:
                print(f"   {'met    ' if ok else 'NOT MET'}  {what}: {value}")
        bad = [r for r in results + scale_results if r["errors"] or r["failed_connections"]]
        for r in bad:
            print(f"warning: {r['label']} c={r['conns']}: {r['errors']} errors, "
                  f"{r['failed_connections']} failed connections", file=sys.stderr)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f} (others' work on this machine shows as 'rest %')")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": desc, "started": started.isoformat(), "args": vars(args),
                           "results": results, "scale": scale_results, "scale_info": scale_info}, f, indent=1)
        return 0
    finally:
        for s in running:
            s.stop()
            if getattr(s, "dbdir", "").startswith("/dev/shm"):
                shutil.rmtree(s.dbdir, ignore_errors=True)
        if env is not None:
            env.stop()
        if pgdir:
            bench.stop_pg(pgdir)
        if args.keep:
            print(f"kept {workdir} and {pgdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            if pgdir:
                shutil.rmtree(pgdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
