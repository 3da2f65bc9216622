#!/usr/bin/env python3
"""Where policyd spends its instructions or time under load: the full pipeline of
bench/compare.py (greylisting on a throwaway PostgreSQL, event log, limits, flood control,
three DNS lists on the test DNS servers, warm cache), loadgen at 8 connections. Usage:

    bench/profile_policyd.py [--tool callgrind|perf] [--requests 12000] [--connections 8] [--top 25]
                     [--window 15] [--build DIR] [--policyd PATH]

callgrind: policyd runs under valgrind (as nobody when started as root). After a warm-up run
(same clients, other triplets) a measured run starts; the counters are zeroed 3 s into it and
dumped --window seconds later (a few thousand decisions: Valgrind makes policyd ~20-50 times
slower), and callgrind_annotate prints the functions by instructions (self cost, then
inclusive).
perf: policyd runs natively; `perf record -e cpu-clock -a -g` samples the whole machine
during the measured run (hardware counters are often missing in VMs), and perf report prints
the share of samples by command (policyd, postgres, loadgen, others) and policyd's top
symbols. Both print the exact commands they ran. Needs valgrind or linux-perf (Debian)."""
import argparse
import collections
import datetime
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root / "bench"))
import dns_bench as bench  # noqa: E402


def run(cmd, **kw):
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], **kw)


def loadgen(lg, port, args, seed, tag=None):
    cmd = [lg, "--port", port, "--connections", args.connections, "--requests", args.requests,
           "--seconds", 600, "--seed", seed]
    if tag:
        cmd += ["--sender-tag", tag]
    r = run(cmd, capture_output=True, text=True)
    print(r.stdout, end="", flush=True)
    m = re.search(r"decisions/s=(\d+)", r.stdout)
    return float(m.group(1)) if m else 0.0


def callgrind_self(path):
    """Self cost (Ir) per function name from a callgrind output file, and the total: every cost
    line counts for the current fn= except the one after a calls= line (a call's inclusive cost)."""
    names, selfc, total, fn, after_call = {}, collections.Counter(), 0, None, False

    def name(spec):
        m = re.match(r"\((\d+)\)(?: (.*))?", spec)
        if not m:
            return spec
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), spec)

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line[0].isdigit() or line[0] in "+-*":
                if after_call:
                    after_call = False
                elif fn is not None:
                    v = int(line.split()[-1])
                    selfc[fn] += v
                    total += v
            elif line.startswith("fn="):
                fn = name(line[3:])
            elif line.startswith("cfn="):
                name(line[4:])
            elif line.startswith("calls="):
                after_call = True
    return selfc, total


def decisions_between(log_path, t0, t1):
    """Decision log lines whose timestamp lies in [t0, t1] (epoch seconds)."""
    n = 0
    with open(log_path, errors="replace") as f:
        for line in f:
            if " decision " not in line:
                continue
            try:
                t = datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
            except ValueError:
                continue
            n += t0 <= t <= t1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tool", choices=("callgrind", "perf"), default="callgrind")
    ap.add_argument("--requests", type=int, default=12000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--window", type=float, default=15, help="callgrind: seconds of the measured run profiled")
    ap.add_argument("--build", default=str(root / "build"))
    ap.add_argument("--policyd")
    args = ap.parse_args()
    build = Path(args.build).resolve()
    policyd_bin = Path(args.policyd).resolve() if args.policyd else build / "policyd/policyd"
    lg = build / "bench/loadgen"
    need = "valgrind" if args.tool == "callgrind" else "perf"
    if not shutil.which(need):
        print(f"profile_policyd.py: {need} is missing (apt-get install -y {'valgrind' if need == 'valgrind' else 'linux-perf'})",
              file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="lupine-profile.", dir="/tmp")
    os.chmod(workdir, 0o777)  # policyd writes callgrind's output after dropping root
    pgdir, dsn = bench.start_pg(prefix="lupine-profile-pg.", dbname="lupine")
    env = bench.DnsEnv()
    port = bench.free_port()
    cmd = bench.policyd_command(policyd_bin, dsn, port, env.server, workdir, ["name=bench-mx"])
    out = os.path.join(workdir, "callgrind.out")
    if args.tool == "callgrind":
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd
        if os.geteuid() == 0:
            # Valgrind's control pipes belong to the user it starts as: a policyd that drops
            # root after starting could no longer answer callgrind_control. Start it as
            # RUN_AS instead (policyd ignores server.user when not started as root).
            cmd = ["setpriv", f"--reuid={bench.RUN_AS}", f"--regid={bench.RUN_AS_GROUP}", "--clear-groups"] + cmd
    print("$ " + " ".join(cmd), flush=True)
    log = open(os.path.join(workdir, "policyd.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    perf = None
    try:
        bench.wait_port(port, proc, limit=120)
        warm_rate = loadgen(lg, port, args, 7, tag="warm")
        time.sleep(1.5)
        if args.tool == "callgrind":
            # Valgrind serves callgrind_control between basic blocks; a policyd asleep in
            # epoll_wait needs a ptrace'd wake-up, which hangs here. So counters are zeroed and
            # dumped while the measured run keeps policyd busy: the profile is a window of it.
            cg = ["callgrind_control"]
            if os.geteuid() == 0:
                cg = ["setpriv", f"--reuid={bench.RUN_AS}", f"--regid={bench.RUN_AS_GROUP}", "--clear-groups"] + cg
            # The measured run sends the warm-up's clients (its DNS answers are cached) and must
            # still be running when the window closes.
            window = min(args.window, 0.6 * args.requests / max(warm_rate, 1.0) - 3)
            if window < 3:
                print("profile_policyd.py: --requests too small for a profiling window at this rate", file=sys.stderr)
                return 2
            lcmd = [str(c) for c in (lg, "--port", port, "--connections", args.connections, "--requests",
                                     args.requests, "--seconds", 600, "--seed", 7)]
            print("$ " + " ".join(lcmd) + " &", flush=True)
            lgp = subprocess.Popen(lcmd, stdout=subprocess.PIPE, text=True)
            time.sleep(3)
            t_zero = time.time()
            run(cg + ["-z", proc.pid], check=True, capture_output=True, timeout=60)
            time.sleep(window)
            t_dump = time.time()
            run(cg + ["-d", proc.pid], check=True, capture_output=True, timeout=60)
            lgp.send_signal(signal.SIGINT)
            lgp.wait(timeout=30)
            dumps = sorted(glob.glob(out + ".*"), key=os.path.getmtime)
            if not dumps:
                print("no callgrind dump found", file=sys.stderr)
                return 1
            n = decisions_between(os.path.join(workdir, "policyd.log"), t_zero, t_dump)
            print(f"profiled window: {t_dump - t_zero:.1f} s, {n} decisions at {args.connections} connections "
                  f"(counted from policyd's decision log lines)")
            selfc, total = callgrind_self(dumps[-1])
            print(f"\n{total:,} instructions in policyd (all threads), {total / max(n, 1):,.0f} per decision\n")
            print("Self cost by function (callgrind_annotate's self column splits inlined code by file, and\n"
                  "credits thread entry points with everything under them when a dump is taken mid-run):")
            for fn, v in selfc.most_common(args.top):
                print(f"  {100 * v / total:6.2f}%  {fn[:150]}")
            r = run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dumps[-1]],
                    capture_output=True, text=True)
            print("Inclusive cost of policyd's own functions (callgrind_annotate --inclusive=yes):")
            shown = 0
            for line in r.stdout.splitlines():
                if "lupine::" in line and shown < args.top:
                    print("  " + line[:220])
                    shown += 1
        else:
            perf_data = os.path.join(workdir, "perf.data")
            pcmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-a", "-g", "-o", perf_data]
            print("$ " + " ".join(pcmd) + " &", flush=True)
            perf = subprocess.Popen(pcmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            loadgen(lg, port, args, 7)
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
            comm = policyd_bin.name[:15]  # the kernel's comm: the executable's name, cut to 15 bytes
            for sort, label, keep in (("comm", "Samples by command (the whole machine):", None),
                                      ("comm,dso", f"{comm} and postgres by object:", (comm, "postgres")),
                                      ("comm,dso,symbol", f"{comm}'s top symbols:", (comm,)),
                                      ("comm,dso,symbol", "postgres's top symbols:", ("postgres",))):
                r = run(["perf", "report", "-i", perf_data, "--no-children", "--sort", sort, "--stdio", "-g", "none"],
                        capture_output=True, text=True)
                rows = [line for line in r.stdout.splitlines() if line.strip() and not line.startswith("#")]
                if keep:
                    rows = [line for line in rows if len(line.split()) > 1 and line.split()[1] in keep]
                print(label)
                print("\n".join(line.rstrip()[:170] for line in rows[:args.top]))
        return 0
    finally:
        if perf is not None and perf.poll() is None:
            perf.kill()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        env.stop()
        bench.stop_pg(pgdir)
        print(f"(profile output and policyd log in {workdir})", file=sys.stderr)
        shutil.rmtree(pgdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
