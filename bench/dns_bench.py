#!/usr/bin/env python3
"""Decisions/s and latency with DNS checks on, cold cache then warm cache, against the
local test DNS servers (NSD behind dnsmasq, tests/system/dnsenv.py) and a throwaway
PostgreSQL. Build first (scripts/bootstrap.sh). Usage:
    bench/dns_bench.py [--connections 8] [--requests 20000]
Cold: every request comes from a client not seen before (each list is queried, NXDOMAIN
for most). Warm: the same clients again (answers come from policyd's cache).

The helpers (throwaway PostgreSQL, policyd command line, port waits) are shared with
bench/compare.py."""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root / "tests/system"))
from dnsenv import DnsEnv  # noqa: E402,F401  (re-exported for bench/compare.py)

# The lists of the DNS benchmarks: one weighted DNSBL with a reply filter, one plain, one DNSWL.
LISTS = "dnsbl.test=127.0.0.[2..11]*3, bl2.test*1, dnswl.test*-5"
# Started as root, policyd binds and then must run as another user (it refuses to serve as root).
RUN_AS = "nobody" if os.geteuid() == 0 else None
RUN_AS_GROUP = "nogroup"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_pg(prefix="lupine-bench-pg.", dbname="bench"):
    """A throwaway PostgreSQL cluster (scripts/pg_up.sh) in a new temp dir: (dir, DSN of dbname).
    The dir is made traversable so that daemons running as other users (policyd as RUN_AS,
    sqlgrey) reach the unix socket."""
    pgdir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(pgdir, 0o711)
    dsn = create_db(pgdir, dbname)
    os.chmod(pgdir, 0o711)  # pg_up.sh chowns it to postgres as root; keep it traversable
    return pgdir, dsn


def create_db(pgdir, dbname):
    """The DSN of database dbname on the cluster in pgdir (created if missing)."""
    return subprocess.run([str(root / "scripts/pg_up.sh"), pgdir, dbname], capture_output=True, text=True,
                          check=True).stdout.strip()


def stop_pg(pgdir):
    subprocess.run([str(root / "scripts/pg_up.sh"), "--stop", pgdir], check=False)


def policyd_command(binary, dsn, port, dns_server, workdir, extra=()):
    """policyd on 127.0.0.1:port with the DNS lists against dns_server; extra: more -o settings.
    An empty config file in workdir keeps a system /etc/lupine/policyd.conf out of the run."""
    conf = os.path.join(workdir, "policyd.conf")
    with open(conf, "w") as f:
        f.write("# bench: every setting is given with -o\n")
    os.chmod(conf, 0o644)
    cmd = [str(binary), "-c", conf, "-o", f"database={dsn}", "-o", f"listen=inet:127.0.0.1:{port}",
           "-o", f"dns.servers={dns_server}", "-o", f"dnsbl.lists={LISTS}",
           "-o", f"event_log.spill_dir={os.path.join(workdir, 'spill')}"]
    if RUN_AS:
        cmd += ["-o", f"server.user={RUN_AS}"]
    for o in extra:
        cmd += ["-o", o]
    return cmd


def wait_port(port, proc=None, limit=30.0):
    """Bounded wait until 127.0.0.1:port accepts a connection; fails early if proc exited."""
    end = time.time() + limit
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {limit:.0f}s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    build = root / "build"
    pgdir, dsn = start_pg()
    env = DnsEnv()
    port = free_port()
    log = open(os.path.join(pgdir, "policyd.log"), "w")
    policyd = subprocess.Popen(policyd_command(build / "policyd/policyd", dsn, port, env.server, pgdir), stderr=log)
    try:
        wait_port(port, policyd)
        for label in ("cold cache", "warm cache"):
            print(f"== {label}: {args.connections} connections, DNS lists dnsbl.test, bl2.test, dnswl.test")
            sys.stdout.flush()
            subprocess.run([str(build / "bench/loadgen"), "--port", str(port), "--connections",
                            str(args.connections), "--requests", str(args.requests), "--seed", "42",
                            "--seconds", "60"], check=False)
        print("queries seen by the DNS server:", sum(1 for line in open(env.query_log) if "query[" in line))
    finally:
        policyd.send_signal(signal.SIGTERM)
        policyd.wait(timeout=30)
        env.stop()
        stop_pg(pgdir)
        shutil.rmtree(pgdir, ignore_errors=True)


if __name__ == "__main__":
    main()
