#!/usr/bin/env python3
"""Benchmark: container networking with berth, podman and docker side by side
in one run, from the same busybox image.

  run --rm        `run --rm IMAGE true` on each engine's default bridge
                  network, the wall time of the CLI command, --iterations
                  times after --warmup untimed runs, engines interleaved;
                  for berth also `--network none` interleaved, so the
                  bridge's own cost shows.
  c2c             iperf3 (Debian's, the host's binary run inside the
                  containers' network namespaces with nsenter) from one
                  container to another on the default bridge, by address.
  host→port       iperf3 from the host to 127.0.0.1:<published port> of a
                  container (`-p`): berth's nftables DNAT, docker's
                  userland proxy (its default for loopback), podman's
                  port forwarder.
  veth            the same iperf3 between two network namespaces joined by
                  a plain veth pair, the baseline: one at each MTU the
                  engines give their containers (berth takes the host's,
                  as its issue asks; docker and podman 1500), so each
                  engine's "of veth" compares its path with a bare veth
                  pair of the same MTU; and "of veth 1500" against the
                  default one. The MTU alone moves a veth pair's
                  throughput by several percent.
  host veth       iperf3 from the host to a namespace over a plain veth
                  pair with one end in the host's namespace, at each MTU:
                  the bare path the host itself has to a namespace, under
                  the host's own netfilter hooks (the connection tracking
                  that any engine's NAT turns on there), which the two
                  namespaces above never meet. host→port "of host veth"
                  compares with it: what the engine's port path adds.

Each throughput is the median of --repeats runs of --seconds each; the
paths take turns (one run of each per round), so that a load that comes
and goes on the host touches all of them alike. The ratios are of those
medians; "round by round" gives, for each engine, the median over the
rounds of its run against the baseline's run of the same round, which a
load burst during one round moves less. All
traffic stays on this machine (loopback, and namespaces made here). Every
engine has its own state under a temporary directory; docker a dockerd of
the benchmark's own with its default bridge (it needs no docker0 already
present). Everything is removed at the end.

    sudo python3 bench/network.py [--iterations 30] [--warmup 3] [--seconds 3] [--repeats 3]
"""

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_spec = importlib.util.spec_from_file_location("container_run", HERE / "container-run.py")
cr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cr)
IMAGE = cr.IMAGE
PORT = 5201


class NetDockerd(cr.Dockerd):
    """The benchmark's dockerd, with its default bridge (docker0, on a subnet
    of its own) and its userland proxy for published ports, but without
    its iptables rules, which it would leave on the host after it exits
    (this spares docker the cost of its rules in `run --rm`)."""

    def __enter__(self):
        d = self.d
        d.mkdir(exist_ok=True)
        self.log = open(d / "dockerd.log", "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(d / "data"), "--exec-root", self.exec_root,
             "--pidfile", str(d / "dockerd.pid"), "-H", self.sock, "--bip", "10.79.0.1/24",
             "--iptables=false", "--ip6tables=false"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            if subprocess.run(["docker", "-H", self.sock, "version"], capture_output=True).returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("dockerd did not start: " + cr.one_line((d / "dockerd.log").read_text(errors="replace")))


def iperf(server_ns, client_ns, target, port=PORT, seconds=3):
    """Gbit/s of one iperf3 TCP run; server and client in the given network
    namespaces (None: the host's)."""
    pre = lambda ns: ["nsenter", f"--net={ns}"] if ns else []
    srv = subprocess.Popen([*pre(server_ns), "iperf3", "-s", "-1", "-p", str(PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = None
        for _ in range(50):
            r = subprocess.run([*pre(client_ns), "iperf3", "-c", target, "-p", str(port), "-t", str(seconds), "-J"],
                               capture_output=True, text=True, timeout=seconds + 30)
            if r.returncode == 0:
                out = json.loads(r.stdout)
                if "sum_received" in out.get("end", {}):
                    break
                out = None
            time.sleep(0.1)
        if out is None:
            raise RuntimeError(f"iperf3 to {target}:{port} failed")
        return out["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.kill()
        srv.wait()


class Veth:
    """Two network namespaces joined by a plain veth pair of MTU `mtu`: the
    baseline."""

    def __init__(self, mtu):
        tag = f"{os.getpid()}-{mtu}"
        self.mtu = mtu
        self.n1, self.n2 = f"bnb1-{tag}", f"bnb2-{tag}"

    def __enter__(self):
        sh = lambda *x: subprocess.run(["ip", *x], check=True, capture_output=True)
        n1, n2 = self.n1, self.n2
        sh("netns", "add", n1)
        sh("netns", "add", n2)
        sh("link", "add", "bnbv1", "netns", n1, "mtu", str(self.mtu), "type", "veth",
           "peer", "name", "bnbv2", "netns", n2, "mtu", str(self.mtu))
        sh("-n", n1, "addr", "add", "10.78.0.1/30", "dev", "bnbv1")
        sh("-n", n2, "addr", "add", "10.78.0.2/30", "dev", "bnbv2")
        for n, l in ((n1, "bnbv1"), (n2, "bnbv2")):
            sh("-n", n, "link", "set", l, "up")
            sh("-n", n, "link", "set", "lo", "up")
        return self

    def measure(self, a):
        return iperf(f"/run/netns/{self.n1}", f"/run/netns/{self.n2}", "10.78.0.1", seconds=a.seconds)

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.n1], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.n2], capture_output=True)
        return False


class HostVeth:
    """A network namespace joined to the host's by a plain veth pair of MTU
    `mtu` (subnet 10.78.`k`.0/30): the host's own bare path."""

    def __init__(self, mtu, k):
        self.mtu, self.k = mtu, k
        self.ns, self.link = f"bnbh-{os.getpid()}-{mtu}", f"bnbh{os.getpid() % 10000}-{k}"

    def __enter__(self):
        sh = lambda *x: subprocess.run(["ip", *x], check=True, capture_output=True)
        sh("netns", "add", self.ns)
        sh("link", "add", self.link, "mtu", str(self.mtu), "type", "veth",
           "peer", "name", "bnbv", "netns", self.ns, "mtu", str(self.mtu))
        sh("addr", "add", f"10.78.{self.k}.1/30", "dev", self.link)
        sh("-n", self.ns, "addr", "add", f"10.78.{self.k}.2/30", "dev", "bnbv")
        sh("link", "set", self.link, "up")
        sh("-n", self.ns, "link", "set", "bnbv", "up")
        sh("-n", self.ns, "link", "set", "lo", "up")
        return self

    def measure(self, a):
        return iperf(f"/run/netns/{self.ns}", None, f"10.78.{self.k}.2", seconds=a.seconds)

    def __exit__(self, *exc):
        # The pair goes with the namespace.
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        return False


def nft_tables():
    """The host's nftables tables, as (family, name)."""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {tuple(l.split()[1:3]) for l in out.splitlines() if l.startswith("table ")}


def pid_of(e, name):
    return int(e.run("inspect", "-f", "{{.State.Pid}}", name).strip())


def ip_of(e, name):
    return e.run("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).strip() or \
        e.run("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).strip()


def start_pair(e, a):
    """A server container with its iperf3 port published on 127.0.0.1, and
    a client container, on the engine's default bridge."""
    srv, cli = f"bn-srv-{os.getpid()}", f"bn-cli-{os.getpid()}"
    e.port = a.host_port
    a.host_port += 1
    e.run("run", "-d", "--name", srv, "-p", f"127.0.0.1:{e.port}:{PORT}", IMAGE, "sleep", "3600")
    e.run("run", "-d", "--name", cli, IMAGE, "sleep", "3600")
    e.sp, e.cp, e.sip = pid_of(e, srv), pid_of(e, cli), ip_of(e, srv)
    mtu = subprocess.run(["nsenter", f"--net=/proc/{e.sp}/ns/net", "cat", "/sys/class/net/eth0/mtu"],
                         capture_output=True, text=True).stdout.strip()
    e.mtu = int(mtu) if mtu.isdigit() else 1500


def measure_pair(e, a):
    e.c2c.append(iperf(f"/proc/{e.sp}/ns/net", f"/proc/{e.cp}/ns/net", e.sip, seconds=a.seconds))
    e.h2p.append(iperf(f"/proc/{e.sp}/ns/net", None, "127.0.0.1", port=e.port, seconds=a.seconds))


def throughput(engines, a):
    """Every path measured once per round, rounds repeated: a load that
    comes and goes on the host touches all paths alike."""
    live = []
    for e in engines:
        if e.failed:
            continue
        try:
            start_pair(e, a)
            live.append(e)
        except (RuntimeError, OSError) as err:
            e.notes.append(f"throughput failed: {err}")
    # berth puts a container on its bridge's fast path a second into its run.
    time.sleep(1.5)
    mtus = sorted({1500} | {e.mtu for e in live})
    baseline = {m: [] for m in mtus}
    host_baseline = {m: [] for m in mtus}
    with contextlib.ExitStack() as stack:
        veths = [stack.enter_context(Veth(m)) for m in mtus]
        host_veths = [stack.enter_context(HostVeth(m, k + 1)) for k, m in enumerate(mtus)]
        for r in range(a.repeats):
            print(f"iperf3: round {r + 1}/{a.repeats}", file=sys.stderr, flush=True)
            for veth in veths:
                baseline[veth.mtu].append(veth.measure(a))
            for veth in host_veths:
                host_baseline[veth.mtu].append(veth.measure(a))
            for e in list(live):
                try:
                    measure_pair(e, a)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
                    e.notes.append(f"throughput failed: {err}")
                    live.remove(e)
    return baseline, host_baseline


def bench_run_rm(engines, a):
    total = a.warmup + a.iterations
    for i in range(total):
        for e in cr.rotated(engines, i):
            try:
                t0 = time.perf_counter()
                e.run("run", "--rm", IMAGE, "true")
                dt = time.perf_counter() - t0
                e.fails_in_a_row = 0
            except RuntimeError as err:
                # A busy shared host makes a run fail now and then; three in
                # a row end the engine's part.
                e.fails_in_a_row = getattr(e, "fails_in_a_row", 0) + 1
                e.notes.append(f"iteration {i} failed: {err}")
                if e.fails_in_a_row >= 3:
                    e.failed = f"failed: {err}"
                continue
            if i >= a.warmup:
                e.run_rm.append(dt)
            if e.name == "berth":
                # The same without a network: what the bridge itself costs.
                t0 = time.perf_counter()
                e.run("run", "--rm", "--network", "none", IMAGE, "true")
                if i >= a.warmup:
                    e.run_rm_none.append(time.perf_counter() - t0)
        if (i + 1) % 10 == 0 or i + 1 == total:
            print(f"run --rm: {i + 1}/{total}", file=sys.stderr, flush=True)


def med(xs):
    return round(statistics.median(xs), 2) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3, help="seconds per iperf3 run (default 3)")
    ap.add_argument("--repeats", type=int, default=5, help="iperf3 runs per path (default 5)")
    ap.add_argument("--berth", default=str(ROOT / "target/x86_64-unknown-linux-gnu/release/berth"))
    ap.add_argument("--engines", default="berth,podman,docker")
    ap.add_argument("--out", default=str(HERE / "results/network.json"))
    a = ap.parse_args()
    a.host_port = 45201
    if os.geteuid() != 0:
        sys.exit("network.py: needs root")
    for need in ("iperf3", "nsenter", "ip"):
        if not shutil.which(need):
            sys.exit(f"network.py: needs {need} (scripts/setup.sh installs it)")
    signal.signal(signal.SIGTERM, cr.on_sigterm)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="berth-net-bench.", dir="/var/tmp"))
    tag = work.name.rsplit(".", 1)[1]
    run_dirs = [f"/run/bnb-{tag}", f"/run/bnp-{tag}", f"/run/bnd-{tag}"]
    engines, daemons = [], []
    host = {"kernel": os.uname().release, "nproc": os.cpu_count(), "loadavg_before": os.getloadavg()}
    baseline, host_baseline = {}, {}
    docker0_before = Path("/sys/class/net/docker0").exists()
    # podman's netavark leaves its iptables-nft tables (ip nat, ip filter)
    # with counters on every forwarded packet; the ones it made go at the end.
    tables_before = nft_tables()
    try:
        tarball = work / "busybox.tar"
        cr.busybox_rootfs_tar(tarball)
        conf = work / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = \"file\"\n"
                        "cgroup_manager = \"cgroupfs\"\n")
        dockerd = NetDockerd(work / "docker", run_dirs[2])
        daemons.append(dockerd)
        all_engines = [
            cr.Engine("berth", [a.berth, "--root", str(work / "berth"), "--run-root", run_dirs[0]]),
            cr.Engine("podman", ["podman", "--root", str(work / "podman"), "--runroot", run_dirs[1],
                                 "--cgroup-manager", "cgroupfs"], dict(os.environ, CONTAINERS_CONF=str(conf))),
            cr.Engine("docker", ["docker", "-H", dockerd.sock]),
        ]
        wanted = a.engines.split(",")
        setups = {"berth": lambda e: cr.setup_berth(e, a, tarball), "podman": lambda e: cr.setup_podman(e, tarball),
                  "docker": lambda e: cr.setup_docker(e, dockerd, tarball)}
        needs = {"berth": [], "podman": ["podman"], "docker": ["docker", "dockerd"]}
        for e in all_engines:
            e.c2c, e.h2p, e.run_rm_none = [], [], []
            if e.name not in wanted:
                continue
            engines.append(e)
            print(f"setting up {e.name} ...", file=sys.stderr, flush=True)
            if not all(shutil.which(n) for n in needs[e.name]):
                e.failed = "not installed"
                continue
            try:
                setups[e.name](e)
            except (RuntimeError, OSError) as err:
                e.failed = f"failed: {err}"
        bench_run_rm(engines, a)
        baseline, host_baseline = throughput(engines, a)
        host["loadavg_after"] = os.getloadavg()
    finally:
        print("cleaning up ...", file=sys.stderr, flush=True)
        for e in engines:
            if e.name == "berth" and e.version:
                ids = subprocess.run(e.cmd("ps", "-aq"), capture_output=True, text=True).stdout.split()
                if ids:
                    subprocess.run(e.cmd("rm", "-f", *ids), capture_output=True)
                # Its bridge and nftables table.
                subprocess.run(e.cmd("network", "prune", "-f"), capture_output=True)
        cr.cleanup(engines, daemons, work, run_dirs, set(), cr.parent_cgroups())
        if not docker0_before and Path("/sys/class/net/docker0").exists():
            subprocess.run(["ip", "link", "del", "docker0"], capture_output=True)
        for fam, name in nft_tables() - tables_before:
            if fam == "ip" and name in ("nat", "filter"):
                subprocess.run(["nft", "delete", "table", fam, name], capture_output=True)
    base = {m: med(xs) for m, xs in baseline.items()}

    def paired(xs, base_xs):
        """The median over rounds of the path's run against the baseline's
        run of the same round: a load that comes and goes moves both."""
        rs = [x / b for x, b in zip(xs, base_xs or []) if b]
        return round(statistics.median(rs), 2) if rs else None

    base_of = lambda e: base.get(getattr(e, "mtu", 1500))
    host_base = {m: med(xs) for m, xs in host_baseline.items()}
    berth = next((e for e in engines if e.name == "berth"), None)
    bm = lambda e: med([x * 1000 for x in e.run_rm])
    out = {}
    for e in engines:
        out[e.name] = {
            "status": e.failed or "ok", "version": e.version, "notes": e.notes,
            "run_rm_ms": {"median": bm(e), "n": len(e.run_rm),
                          "ratio_to_berth": cr.ratio(bm(e), bm(berth)) if berth else None,
                          "samples": [round(x * 1000, 2) for x in e.run_rm]},
            "mtu": getattr(e, "mtu", None),
            "c2c_gbit_s": {"median": med(e.c2c), "samples": [round(x, 2) for x in e.c2c],
                           "of_veth": cr.ratio(med(e.c2c), base_of(e)),
                           "of_veth_1500": cr.ratio(med(e.c2c), base.get(1500)),
                           "of_veth_paired": paired(e.c2c, baseline.get(getattr(e, "mtu", 1500)))},
            "host_to_port_gbit_s": {"median": med(e.h2p), "samples": [round(x, 2) for x in e.h2p],
                                    "of_veth": cr.ratio(med(e.h2p), base_of(e)),
                                    "of_veth_1500": cr.ratio(med(e.h2p), base.get(1500)),
                                    "of_host_veth": cr.ratio(med(e.h2p),
                                                             host_base.get(getattr(e, "mtu", 1500))),
                                    "of_veth_paired": paired(e.h2p, baseline.get(getattr(e, "mtu", 1500))),
                                    "of_host_veth_paired": paired(
                                        e.h2p, host_baseline.get(getattr(e, "mtu", 1500)))},
        }
    if berth and berth.run_rm_none:
        none = med([x * 1000 for x in berth.run_rm_none])
        out["berth"]["run_rm_network_none_ms"] = {"median": none, "bridge_cost_ms": round(bm(berth) - none, 2)}
    rep = {"benchmark": "network", "started": started, "host": host,
           "settings": {"iterations": a.iterations, "warmup": a.warmup, "seconds": a.seconds, "repeats": a.repeats},
           "veth_baseline_gbit_s": {str(m): {"median": base[m], "samples": [round(x, 2) for x in xs]}
                                    for m, xs in baseline.items()},
           "host_veth_baseline_gbit_s": {str(m): {"median": host_base[m], "samples": [round(x, 2) for x in xs]}
                                         for m, xs in host_baseline.items()},
           "engines": out}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rep, indent=2) + "\n")
    pairs = ", ".join(f"{b} Gbit/s at MTU {m}" for m, b in base.items())
    host_pairs = ", ".join(f"{b} Gbit/s at MTU {m}" for m, b in host_base.items())
    print(f"\nLinux {host['kernel']}, {host['nproc']} CPUs; plain veth pair: {pairs}")
    print(f"host to a namespace over a plain veth pair: {host_pairs}")
    print("(of veth: against the pair of the engine's MTU; in brackets: against MTU 1500;")
    print(" of host veth: host→port against the host's own pair of the engine's MTU)")
    print(f"{'':10}{'run --rm ms':>14}{'ratio':>8}{'MTU':>6}{'c2c Gbit/s':>13}{'of veth':>15}"
          f"{'host→port':>11}{'of veth':>15}{'of host veth':>14}")
    for name, r in out.items():
        if r["status"] != "ok" and not r["run_rm_ms"]["median"]:
            print(f"{name:10}{r['status']}")
            continue
        of = lambda x: f"{x['of_veth']} ({x['of_veth_1500']})"
        print(f"{name:10}{str(r['run_rm_ms']['median']):>14}{str(r['run_rm_ms']['ratio_to_berth']):>8}"
              f"{str(r['mtu']):>6}{str(r['c2c_gbit_s']['median']):>13}{of(r['c2c_gbit_s']):>15}"
              f"{str(r['host_to_port_gbit_s']['median']):>11}{of(r['host_to_port_gbit_s']):>15}"
              f"{str(r['host_to_port_gbit_s']['of_host_veth']):>14}")
        c, h = r["c2c_gbit_s"], r["host_to_port_gbit_s"]
        print(f"{'':10}round by round (median of each round's ratio): c2c {c['of_veth_paired']} of veth, "
              f"host→port {h['of_veth_paired']} of veth, {h['of_host_veth_paired']} of host veth")
        for n in r["notes"]:
            print(f"          note: {n}")
    if "run_rm_network_none_ms" in out.get("berth", {}):
        n = out["berth"]["run_rm_network_none_ms"]
        print(f"berth run --rm --network none: {n['median']} ms (the bridge costs {n['bridge_cost_ms']} ms of berth's run --rm)")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
