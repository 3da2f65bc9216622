"""A real DNS set-up on loopback for the DNS tests: NSD serves the test zones
authoritatively, dnsmasq (no cache) is the resolver policyd asks, forwarding each test
zone to NSD, `dead.test` to a UDP socket that never answers (a list that times out) and
`broken.test` to an NSD zone that failed to load (SERVFAIL). dnsmasq logs every query, so
tests can count what policyd asked.

Zones (TEST-NET-1 192.0.2.0/24 and 2001:db8::/32 clients):
  dnsbl.test   192.0.2.2 -> 127.0.0.2 + TXT; .3 -> 127.0.0.3; .9 -> 127.255.255.254 (refusal);
               .20-.29 -> 127.0.0.2 (for cache tests); 127.0.0.2 -> 127.0.0.2 (RFC 5782 test);
               2001:db8::2 -> 127.0.0.2
  bl2.test     192.0.2.2 -> 127.0.0.4
  wildcard.test  every name -> 127.0.0.2 (fails the RFC 5782 self-test)
  dnswl.test   192.0.2.5 -> 127.0.10.2
  reverse      192.0.2.10 PTR mail.good.test (A 192.0.2.10: confirmed)
               192.0.2.11 PTR fake.good.test (A 192.0.2.99: not confirmed)
               192.0.2.12 no PTR
               192.0.2.13 PTR 13-2-0-192.dyn.isp.test (A 192.0.2.13: confirmed but dynamic)
               2001:db8::10 PTR mail6.good.test (AAAA 2001:db8::10)
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SOA = "@ IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 {neg}\n@ IN NS ns.{z}.\nns IN A 127.0.0.1\n"


def _free_port(kind=socket.SOCK_DGRAM):
    """A loopback port free for UDP and TCP: NSD and dnsmasq bind both, and a UDP port
    the kernel hands out can be in use for TCP (an ephemeral port of a live or TIME_WAIT
    connection), which made a start fail now and then."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM)
        try:
            other.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            other.close()
    raise RuntimeError("no loopback port free for both UDP and TCP")


def _nibbles(addr):
    import ipaddress
    full = ipaddress.ip_address(addr).exploded.replace(":", "")
    return ".".join(reversed(full))


def zones():
    z = {}
    z["dnsbl.test"] = SOA.format(z="dnsbl.test", neg=300) + "\n".join([
        "$TTL 300",
        "2.0.0.127 IN A 127.0.0.2",
        '2.0.0.127 IN TXT "RFC 5782 test entry"',
        "2.2.0.192 IN A 127.0.0.2",
        '2.2.0.192 IN TXT "Listed by dnsbl.test, see https://dnsbl.test/q?192.0.2.2"',
        "3.2.0.192 IN A 127.0.0.3",
        "9.2.0.192 IN A 127.255.255.254",
        _nibbles("2001:db8::2") + ".dnsbl.test. IN A 127.0.0.2",
    ] + [f"{i}.2.0.192 IN A 127.0.0.2" for i in range(20, 30)]) + "\n"
    # A list that answers for everything (an expired zone parked behind a wildcard):
    # RFC 5782's self-test (127.0.0.1 must not be listed) catches it.
    z["wildcard.test"] = SOA.format(z="wildcard.test", neg=300) + "* IN A 127.0.0.2\n"
    z["bl2.test"] = SOA.format(z="bl2.test", neg=300) + "2.2.0.192 IN A 127.0.0.4\n"
    z["dnswl.test"] = SOA.format(z="dnswl.test", neg=300) + "5.2.0.192 IN A 127.0.10.2\n"
    z["good.test"] = SOA.format(z="good.test", neg=300) + (
        "mail IN A 192.0.2.10\nfake IN A 192.0.2.99\nmail6 IN AAAA 2001:db8::10\n")
    z["isp.test"] = SOA.format(z="isp.test", neg=300) + "13-2-0-192.dyn IN A 192.0.2.13\n"
    z["2.0.192.in-addr.arpa"] = SOA.format(z="2.0.192.in-addr.arpa", neg=300) + (
        "10 IN PTR mail.good.test.\n11 IN PTR fake.good.test.\n13 IN PTR 13-2-0-192.dyn.isp.test.\n")
    z["8.b.d.0.1.0.0.2.ip6.arpa"] = SOA.format(z="8.b.d.0.1.0.0.2.ip6.arpa", neg=300) + (
        _nibbles("2001:db8::10") + ".ip6.arpa. IN PTR mail6.good.test.\n")
    return z


class DnsEnv:
    """Starts NSD, a silent UDP socket and dnsmasq. `server` is what policyd's
    dns.servers should be ("127.0.0.1:PORT")."""

    def __init__(self):
        for tool in ("nsd", "dnsmasq"):
            if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
                raise RuntimeError(f"{tool} is not installed (scripts/bootstrap.sh installs it)")
        self.dir = tempfile.mkdtemp(prefix="lupine-dns-")
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.silent.bind(("127.0.0.1", 0))
        self.silent_port = self.silent.getsockname()[1]
        self.nsd_port = _free_port()
        self.port = _free_port()
        try:
            self._start_nsd()
            self._start_dnsmasq()
        except BaseException:
            self.stop()  # no server outlives a failed start
            raise
        self.server = f"127.0.0.1:{self.port}"

    def _start_nsd(self):
        conf = [
            "server:",
            f"  ip-address: 127.0.0.1@{self.nsd_port}",
            f"  port: {self.nsd_port}",
            '  username: ""',
            f'  zonesdir: "{self.dir}"',
            f'  pidfile: "{self.dir}/nsd.pid"',
            f'  logfile: "{self.dir}/nsd.log"',
            f'  xfrdfile: "{self.dir}/xfrd.state"',
            f'  zonelistfile: "{self.dir}/zone.list"',
            '  database: ""',
            "  server-count: 1",
            "  do-ip6: no",
            "  verbosity: 1",
            # NSD limits answers per client network by default (RRL, 200/s): every query
            # here comes from 127.0.0.1, so that would drop answers under load.
            "  rrl-ratelimit: 0",
            "  rrl-whitelist-ratelimit: 0",
            "remote-control:",
            "  control-enable: no",
        ]
        for name, text in zones().items():
            with open(os.path.join(self.dir, name + ".zone"), "w") as f:
                f.write("$ORIGIN " + name + ".\n$TTL 300\n" + text)
            conf += ["zone:", f"  name: {name}", f"  zonefile: {name}.zone"]
        # A configured zone whose file is missing: NSD answers SERVFAIL for it.
        conf += ["zone:", "  name: broken.test", "  zonefile: broken.test.zone"]
        path = os.path.join(self.dir, "nsd.conf")
        with open(path, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.procs.append(subprocess.Popen(["nsd", "-d", "-c", path], stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(self.dir, "nsd.stderr"), "w")))
        self._wait_udp(self.nsd_port, "ns.dnsbl.test")

    def _start_dnsmasq(self):
        self.query_log = os.path.join(self.dir, "queries.log")
        args = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--cache-size=0",
                "--no-negcache", "--bind-interfaces", "--dns-forward-max=5000", "--listen-address=127.0.0.1", f"--port={self.port}",
                "--user=root", "--log-queries", f"--log-facility={self.query_log}",
                f"--pid-file={self.dir}/dnsmasq.pid"]
        for name in list(zones().keys()) + ["broken.test"]:
            args.append(f"--server=/{name}/127.0.0.1#{self.nsd_port}")
        args.append(f"--server=/dead.test/127.0.0.1#{self.silent_port}")
        self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(self.dir, "dnsmasq.stderr"), "w")))
        self._wait_udp(self.port, "ns.dnsbl.test")

    def _wait_udp(self, port, name, limit=10.0):
        """Bounded wait until a server answers an A query for name."""
        query = _build_query(name)
        end = time.time() + limit
        while time.time() < end:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.2)
            try:
                s.sendto(query, ("127.0.0.1", port))
                data, _ = s.recvfrom(512)
                if data[:2] == query[:2]:
                    return
            except OSError:
                pass
            finally:
                s.close()
            time.sleep(0.05)
        raise RuntimeError(f"DNS server on port {port} did not answer; logs in {self.dir}")

    def queries(self, name, qtype=None):
        """How many queries for name dnsmasq received so far: any type, or only qtype
        ("A", "TXT", "PTR", ...)."""
        tag = f"query[{qtype}] " if qtype else "query["
        try:
            with open(self.query_log) as f:
                return sum(1 for line in f if tag in line and f" {name} " in line)
        except FileNotFoundError:
            return 0

    def queries_under(self, zone):
        """How many queries for zone or any name below it dnsmasq received so far."""
        try:
            with open(self.query_log) as f:
                return sum(1 for line in f if "query[" in line
                           and (f" {zone} " in line or f".{zone} " in line))
        except FileNotFoundError:
            return 0

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        self.silent.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _build_query(name, qtype=1):
    import random
    qid = random.randint(0, 65535)
    header = qid.to_bytes(2, "big") + b"\x01\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00"
    q = b"".join(len(l).to_bytes(1, "big") + l.encode() for l in name.split(".")) + b"\x00"
    return header + q + qtype.to_bytes(2, "big") + b"\x00\x01"


if __name__ == "__main__":
    env = DnsEnv()
    print("resolver", env.server, "nsd", env.nsd_port, "dir", env.dir)
    try:
        subprocess.run(["dig", "+short", "-p", str(env.port), "@127.0.0.1", "2.2.0.192.dnsbl.test", "A"])
        subprocess.run(["dig", "+short", "-p", str(env.port), "@127.0.0.1", "2.2.0.192.dnsbl.test", "TXT"])
        subprocess.run(["dig", "-p", str(env.port), "@127.0.0.1", "x.broken.test", "A"], stdout=open("/tmp/broken.txt", "w"))
        subprocess.run(["dig", "+short", "-p", str(env.port), "@127.0.0.1", "-x", "192.0.2.10"])
        subprocess.run(["dig", "+tries=1", "+time=1", "-p", str(env.port), "@127.0.0.1", "2.2.0.192.dead.test", "A"], stdout=open("/tmp/dead.txt", "w"))
        print(open("/tmp/broken.txt").read().count("SERVFAIL"), "servfail;", env.queries("2.2.0.192.dnsbl.test"), "queries logged")
        print(open("/tmp/dead.txt").read()[:300])
    finally:
        env.stop()
