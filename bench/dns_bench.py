#!/usr/bin/env python3
"""Decisions/s and latency with DNS checks on, cold cache then warm cache, against the
local test DNS servers (NSD behind dnsmasq, tests/system/dnsenv.py) and a throwaway
PostgreSQL. Build first (scripts/bootstrap.sh). Usage:
    bench/dns_bench.py [--connections 8] [--requests 20000]
Cold: every request comes from a client not seen before (each list is queried, NXDOMAIN
for most). Warm: the same clients again (answers come from policyd's cache)."""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root / "tests/system"))
from dnsenv import DnsEnv  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    build = root / "build"
    pgdir = tempfile.mkdtemp(prefix="lupine-bench-pg.")
    dsn = subprocess.run([str(root / "scripts/pg_up.sh"), pgdir, "bench"], capture_output=True, text=True,
                         check=True).stdout.strip()
    env = DnsEnv()
    port = free_port()
    log = open(os.path.join(pgdir, "policyd.log"), "w")
    policyd = subprocess.Popen([str(build / "policyd/policyd"), "-o", f"database={dsn}",
                                "-o", f"listen=inet:127.0.0.1:{port}", "-o", f"dns.servers={env.server}",
                                "-o", "dnsbl.lists=dnsbl.test=127.0.0.[2..11]*3, bl2.test*1, dnswl.test*-5"],
                               stderr=log)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
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
        subprocess.run([str(root / "scripts/pg_up.sh"), "--stop", pgdir])


if __name__ == "__main__":
    main()
