#!/usr/bin/env python3
"""Benchmark: running containers with berth, podman and docker side by side
in one run, from the same busybox image.

  run --rm        `run --rm --network none IMAGE true`, the wall time of the
                  CLI command, --iterations times after --warmup untimed runs;
                  the engines interleaved, the one going first rotating, each
                  command --settle seconds after the previous one returned
                  (what an engine still does in the background then, in its
                  daemons or in kernel workers tearing down namespaces and
                  cgroups, is not timed as the next engine's).
  run -d × 50     --containers sequential `run -d --network none IMAGE sleep
                  1000`, the wall time of the whole sequence, each batch
                  3 s after the previous one's removal (the kernel frees
                  namespaces and cgroups in the background); then, untimed,
                  2 s later, the supervisor's memory and `rm -f` of them
                  all. Repeated --batches times, engines interleaved.
  memory          while those containers run, each container's supervisor
                  (its init's parent: berth-monitor, conmon for podman,
                  containerd-shim-runc-v2 for docker): VmRSS, and Pss and
                  Private_Clean + Private_Dirty from /proc/PID/smaps_rollup.

berth also has to leave no process named berth* behind once no container runs.

The image is made here: Debian's busybox-static with a symlink per applet and
an /etc/passwd, imported into every engine as localhost/berthbench/busybox.
Every engine has its own state under a temporary directory in /var/tmp (and a
short one in /run): berth its --root and --run-root, podman its --root and
--runroot (cgroupfs, no systemd here; on hybrid cgroup hosts, where crun
refuses to run, podman uses runc), docker a dockerd of the benchmark's own
(Debian's docker.io). Everything is removed at the end, also on Ctrl-C.

    sudo python3 bench/container-run.py [--iterations 30] [--warmup 3] [--settle 0.25] [--containers 50] [--batches 3]
"""

import argparse
import datetime
import hashlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGE = "localhost/berthbench/busybox:latest"
SUPERVISOR = {"berth": "berth-monitor", "podman": "conmon", "docker": "containerd-shim-runc-v2"}


def busybox_rootfs_tar(path: Path):
    """/bin/busybox, one symlink per applet, /etc/passwd and /etc/group with root."""
    bb = Path("/bin/busybox").read_bytes()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        def add(name, data=None, mode=0o644, link=None):
            info = tarfile.TarInfo(name)
            info.mtime = 1767225600  # 2026-01-01: the same tar every time
            if data is None and link is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif link is not None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, link, 0o777
            else:
                info.size, info.mode = len(data), mode
            t.addfile(info, io.BytesIO(data) if data is not None else None)
        for d in ["bin", "dev", "etc", "proc", "root", "sys", "tmp"]:
            add(d)
        add("bin/busybox", bb, 0o755)
        apps = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
        for a in sorted(set(apps) - {"busybox"}):
            add(f"bin/{a}", link="busybox")
        add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", b"root:x:0:\n")


def one_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return (lines[-1] if lines else "no error message")[:300]


def run(cmd, env=None, timeout=120):
    """Run a command; its stdout, or RuntimeError with the last line of its stderr."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`{' '.join(cmd[:1] + cmd[-6:])}` timed out after {timeout} s") from None
    if r.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} {cmd_name(cmd)}: {one_line(r.stderr or r.stdout)}")
    return r.stdout


def cmd_name(cmd):
    """The subcommand of an engine command line, for error messages."""
    for w in ("run", "import", "rm", "inspect", "ps", "info", "rmi", "version"):
        if w in cmd:
            return w
    return ""


class Dockerd:
    """dockerd with its data root and socket under `d`, its exec root in /run."""

    def __init__(self, d: Path, exec_root: str):
        self.d = d
        self.exec_root = exec_root
        self.sock = f"unix://{d}/docker.sock"
        self.proc = None
        self.log = None

    def __enter__(self):
        d = self.d
        d.mkdir(exist_ok=True)
        self.log = open(d / "dockerd.log", "w")
        # A session of its own: a Ctrl-C in the terminal must not stop it
        # before its containers are removed.
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(d / "data"), "--exec-root", self.exec_root,
             "--pidfile", str(d / "dockerd.pid"), "-H", self.sock,
             "--iptables=false", "--ip6tables=false", "--bridge=none"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            if subprocess.run(["docker", "-H", self.sock, "version"], capture_output=True).returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__()
        log = (d / "dockerd.log").read_text(errors="replace")
        errs = [l for l in log.splitlines() if "level=fatal" in l or "level=error" in l or "failed to start" in l]
        raise RuntimeError(f"dockerd did not start: {one_line(errs[-1] if errs else log)}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
        return False


class Engine:
    def __init__(self, name, argv, env=None):
        self.name = name
        self.argv = argv  # the engine's command line up to the subcommand
        self.env = env
        self.failed = None  # "failed: <one line>"
        self.notes = []
        self.version = ""
        self.runtime = ""
        self.run_rm = []  # seconds
        self.run_d = []  # seconds for --containers starts, one per batch
        self.rm_s = []  # seconds for the untimed `rm -f`, for the record
        self.mem = []  # one dict per supervisor process (all batches)
        self.extra = {}

    def cmd(self, *args):
        return [*self.argv, *args]

    def run(self, *args, timeout=120):
        return run(self.cmd(*args), env=self.env, timeout=timeout)


# --- /proc ------------------------------------------------------------------


def proc_stat(pid):
    """(comm, state, ppid, starttime) of a process, or None."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = s[s.index("(") + 1:s.rindex(")")]
    f = s[s.rindex(")") + 2:].split()
    return comm, f[0], int(f[1]), int(f[19])


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def memory_kib(pid):
    """VmRSS, Pss and Private (clean + dirty) of a process in KiB, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    def field(text, key):
        for line in text.splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0
    return {"vmrss": field(status, "VmRSS"), "pss": field(rollup, "Pss"),
            "private": field(rollup, "Private_Clean") + field(rollup, "Private_Dirty")}


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def processes_mentioning(marks):
    """Live processes whose command line mentions one of `marks` (this run's paths)."""
    found = []
    for pid in all_pids():
        line = b" ".join(cmdline(pid)).decode(errors="replace")
        if pid != os.getpid() and any(m in line for m in marks):
            found.append(pid)
    return found


def berth_processes(marks, tracked):
    """Processes named berth*: this run's (the command line names our paths, or a
    monitor seen running a container of ours) and the host's others; zombies
    apart (a zombie has no command line: it is this run's only if it is a
    monitor seen running), with their parents."""
    out = {"ours_running": [], "others_running": 0, "ours_zombies": 0, "other_zombies": 0, "zombie_parents": []}
    for pid in all_pids():
        st = proc_stat(pid)
        if not st or not st[0].startswith("berth"):
            continue
        comm, state, ppid, start = st
        line = b" ".join(cmdline(pid)).decode(errors="replace")
        ours = any(m in line for m in marks) or (pid, start) in tracked
        if state == "Z":
            out["ours_zombies" if ours else "other_zombies"] += 1
            out["zombie_parents"] = sorted(set(out["zombie_parents"]) | {ppid})
        elif ours:
            out["ours_running"].append(f"{pid} {comm}")
        else:
            out["others_running"] += 1
    return out


def berth_leftovers(marks, tracked, when):
    """berth processes once no container runs. A monitor exits when its container
    is gone: this run's are waited for up to 5 s (running_gone_ms: how long it
    took), and so are zombies named berth* (an exited monitor is re-parented
    to PID 1, which may reap it late)."""
    t0 = time.perf_counter()
    gone = None
    while True:
        p = berth_processes(marks, tracked)
        dt = time.perf_counter() - t0
        if gone is None and not p["ours_running"]:
            gone = round(dt * 1000)
        if (not p["ours_running"] and not p["ours_zombies"] and not p["other_zombies"]) or dt > 5:
            return dict(p, when=when, running_gone_ms=gone, waited_ms=round(dt * 1000))
        time.sleep(0.05)


def mountpoints_under(prefixes):
    found = []
    for line in open("/proc/self/mountinfo"):
        mp = line.split()[4].encode().decode("unicode_escape")
        if any(mp == p or mp.startswith(p + "/") for p in prefixes):
            found.append(mp)
    return sorted(found, key=len, reverse=True)


def cgroups_named(ids):
    """Cgroup directories (down to depth 4) whose name contains one of `ids`."""
    found = []
    top = Path("/sys/fs/cgroup")
    for dirpath, dirnames, _ in os.walk(top):
        if len(Path(dirpath).relative_to(top).parts) >= 4:
            dirnames[:] = []
        found += [os.path.join(dirpath, d) for d in dirnames if any(i in d for i in ids)]
    return sorted(found)


def parent_cgroups():
    """The engines' parent cgroups (empty once their containers are gone)."""
    return {str(d) for name in ("berth", "docker", "libpod_parent") for d in Path("/sys/fs/cgroup").glob(f"*/{name}")}


def cgroup_mode():
    fstype = {}
    for line in open("/proc/self/mountinfo"):
        fields, _, tail = line.partition(" - ")
        fstype.setdefault(fields.split()[4], tail.split()[0])
    if fstype.get("/sys/fs/cgroup") == "cgroup2":
        return "v2"
    if fstype.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "hybrid"
    return "v1"


# --- the benchmark ------------------------------------------------------------


def setup_berth(e, a, tarball):
    e.version = one_line(run([a.berth, "version"]))
    e.runtime = "berth (built in)"
    b = Path(a.berth)
    if not (b.parent / "berth-monitor").exists():
        raise RuntimeError(f"no berth-monitor next to {b}")
    e.extra["binary"] = {"path": str(b.resolve()), "sha256": hashlib.sha256(b.read_bytes()).hexdigest(),
                         "mtime": datetime.datetime.fromtimestamp(b.stat().st_mtime, datetime.timezone.utc).isoformat()}
    e.run("import", str(tarball), IMAGE)
    e.run("run", "--rm", "--network", "none", IMAGE, "true")
    return e


def setup_podman(e, tarball):
    e.version = one_line(run(["podman", "--version"]))
    e.run("import", "-q", str(tarball), IMAGE)
    try:
        e.run("run", "--rm", "--network", "none", IMAGE, "true")
    except RuntimeError as err:
        if "hybrid mode not supported" not in str(err):
            raise
        # crun refuses hybrid cgroup hosts whose cgroup2 tree holds a controller.
        e.argv += ["--runtime", "runc"]
        try:
            e.run("run", "--rm", "--network", "none", IMAGE, "true")
        except RuntimeError as err2:
            raise RuntimeError(f"{err}; with --runtime runc: {err2}") from None
        e.notes.append(f"uses runc (--runtime runc): its default runtime failed with \"{str(err).split(': ', 1)[-1]}\"")
    info = e.run("info", "--format", "{{.Host.OCIRuntime.Name}}\t{{.Host.OCIRuntime.Path}}")
    name, path = (info.strip().split("\t") + [""])[:2]
    e.runtime = f"{name} ({one_line(run([path or name, '--version']).splitlines()[0])})"
    return e


def setup_docker(e, d, tarball):
    d.__enter__()
    e.extra["dockerd"] = d
    e.version = f"docker {e.run('version', '--format', '{{.Server.Version}}').strip()} (daemon; client " \
                f"{e.run('version', '--format', '{{.Client.Version}}').strip()})"
    rt = e.run("info", "--format", "{{.DefaultRuntime}}").strip()
    ver = one_line(run([rt, "--version"]).splitlines()[0]) if shutil.which(rt) else "?"
    e.runtime = f"{rt} ({ver}), through containerd-shim-runc-v2"
    e.run("import", str(tarball), IMAGE)
    e.run("run", "--rm", "--network", "none", IMAGE, "true")
    return e


def rotated(engines, i):
    ok = [e for e in engines if not e.failed]
    k = i % len(ok) if ok else 0
    return ok[k:] + ok[:k]


def bench_run_rm(engines, a):
    total = a.warmup + a.iterations
    for i in range(total):
        for e in rotated(engines, i):
            try:
                time.sleep(a.settle)
                subprocess.run(["sync"])
                t0 = time.perf_counter()
                e.run("run", "--rm", "--network", "none", IMAGE, "true")
                dt = time.perf_counter() - t0
            except RuntimeError as err:
                e.failed = f"failed: {err}"
                continue
            if i >= a.warmup:
                e.run_rm.append(dt)
        if (i + 1) % 10 == 0 or i + 1 == total:
            print(f"run --rm: {i + 1}/{total} (the first {a.warmup} untimed)", file=sys.stderr, flush=True)


def supervisors(e, ids):
    """Memory of the parent of each container's init (its supervisor)."""
    pids = e.run("inspect", "-f", "{{.State.Pid}}", *ids).split()
    found = {}
    for pid in pids:
        st = proc_stat(int(pid))
        if not st:
            continue
        parent = st[2]
        pst = proc_stat(parent)
        argv0 = cmdline(parent)[:1]
        name = Path(argv0[0].decode(errors="replace")).name if argv0 and argv0[0] else (pst[0] if pst else "?")
        mem = memory_kib(parent)
        if mem and pst:
            found[(parent, pst[3])] = dict(mem, process=name, pid=parent)
    return found


def bench_run_d(engines, a, batch, marks, tracked, checks, ids_seen):
    for e in rotated(engines, batch):
        ids = []
        try:
            subprocess.run(["sync"])
            # The kernel tears down the previous batch's namespaces and
            # cgroups in the background after its rm -f (whichever engine's):
            # let that finish before timing this one.
            time.sleep(3)
            t0 = time.perf_counter()
            for _ in range(a.containers):
                ids.append(e.run("run", "-d", "--network", "none", IMAGE, "sleep", "1000").strip().splitlines()[-1])
                ids_seen.add(ids[-1])
            dt = time.perf_counter() - t0
            time.sleep(2)  # untimed: let the supervisors settle
            sup = supervisors(e, ids)
            if len(sup) != len(ids):
                e.notes.append(f"batch {batch + 1}: {len(sup)} supervisor processes for {len(ids)} containers")
            names = sorted({m["process"] for m in sup.values()})
            if names != [SUPERVISOR[e.name]]:
                e.notes.append(f"batch {batch + 1}: the inits' parents are {', '.join(names)}")
            e.mem += list(sup.values())
            if e.name == "berth":
                tracked.update(sup.keys())
            if e.name == "docker":
                e.extra.setdefault("daemons", []).append(docker_daemons(e.extra["dockerd"]))
            e.run_d.append(dt)
        except RuntimeError as err:
            e.failed = f"failed: {err}"
        finally:
            if ids:
                t0 = time.perf_counter()
                try:
                    e.run("rm", "-f", *(["-t", "0"] if e.name == "podman" else []), *ids)
                    e.rm_s.append(time.perf_counter() - t0)
                except RuntimeError as err:
                    e.failed = e.failed or f"failed: {err}"
        if e.name == "berth":
            checks.append(berth_leftovers(marks, tracked, f"after rm -f of batch {batch + 1}"))
        print(f"run -d: batch {batch + 1}/{a.batches} {e.name} done", file=sys.stderr, flush=True)


def docker_daemons(d):
    """VmRSS/Pss of dockerd and its containerd (shared by all containers, not per container)."""
    out = {}
    pid = d.proc.pid
    out["dockerd"] = memory_kib(pid)
    for p in all_pids():
        st = proc_stat(p)
        if st and st[2] == pid and st[0] == "containerd":
            out["containerd"] = memory_kib(p)
    return out


# --- report -------------------------------------------------------------------


def stats(xs, scale=1.0, digits=2):
    if not xs:
        return None
    ys = sorted(x * scale for x in xs)
    p90 = ys[min(len(ys) - 1, round(0.9 * (len(ys) - 1)))]
    r = (lambda v: round(v, digits)) if digits else (lambda v: int(round(v)))
    return {"median": r(statistics.median(ys)), "p90": r(p90), "min": r(ys[0]), "max": r(ys[-1]), "n": len(ys)}


def ratio(x, base):
    return round(x / base, 2) if x is not None and base else None


def report(engines, a, host, checks, leftovers, started):
    med = lambda e, f: (f(e) or {}).get("median")
    run_rm = lambda e: stats(e.run_rm, 1000)
    run_d = lambda e: stats(e.run_d, 1, 3)
    memf = lambda k: (lambda e: stats([m[k] for m in e.mem], 1, 0))
    berth = next(e for e in engines if e.name == "berth")
    out = {}
    for e in engines:
        if e.failed == "not installed":
            out[e.name] = {"status": "not installed"}
            continue
        r = {"status": e.failed or "ok", "version": e.version, "runtime": e.runtime, "notes": e.notes}
        if e.run_rm:
            r["run_rm_ms"] = dict(run_rm(e), ratio_to_berth=ratio(med(e, run_rm), med(berth, run_rm)),
                                  samples=[round(x * 1000, 2) for x in e.run_rm])
        if e.run_d:
            r["run_d"] = {"containers": a.containers, "total_s": run_d(e),
                          "per_container_ms": round(med(e, run_d) * 1000 / a.containers, 1),
                          "ratio_to_berth": ratio(med(e, run_d), med(berth, run_d)),
                          "samples_s": [round(x, 3) for x in e.run_d],
                          "rm_f_s_untimed": [round(x, 3) for x in e.rm_s]}
        if e.mem:
            r["supervisor"] = {"process": SUPERVISOR[e.name], "processes_measured": len(e.mem),
                               **{f"{k}_kib": dict(memf(k)(e), ratio_to_berth=ratio(med(e, memf(k)), med(berth, memf(k))))
                                  for k in ("vmrss", "pss", "private")}}
        if "daemons" in e.extra:
            r["daemons_kib"] = e.extra["daemons"]
        if e.name == "berth":
            r["binary"] = e.extra.get("binary")
            r["berth_processes_with_no_container"] = checks
        out[e.name] = r
    return {
        "benchmark": "container-run",
        "started": started,
        "command": " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
        "settings": {"iterations": a.iterations, "warmup": a.warmup, "settle_s": a.settle,
                     "containers": a.containers,
                     "batches": a.batches, "image": IMAGE,
                     "order": "engines interleaved, the first one rotating"},
        "host": host,
        "engines": out,
        "leftovers": leftovers or "none",
    }


def print_table(rep):
    s, eng = rep["settings"], rep["engines"]
    h = rep["host"]
    print(f"\nLinux {h['kernel']}, {h['nproc']} CPUs, cgroups {h['cgroups']}, load average "
          f"{h['loadavg_before'][0]:.2f} before, {h['loadavg_after'][0]:.2f} after")
    for name, r in eng.items():
        if r["status"] == "not installed":
            print(f"  {name:7} not installed")
            continue
        if not r["version"]:
            print(f"  {name:7} {r['status']}")
            continue
        print(f"  {name:7} {r['version']}; runtime {r['runtime'] or '?'}")
        for n in r["notes"]:
            print(f"          note: {n}")

    def rows(title, key, cols, cells):
        print(f"\n{title}".ljust(52) + "".join(c.rjust(10) for c in cols))
        for name, r in eng.items():
            if key in r:
                print(f"  {name:49}" + "".join(str(c).rjust(10) for c in cells(r[key])))
            else:
                print(f"  {name:49}{r['status'] if r['status'] != 'ok' else 'no data'}")

    x = lambda v: "-" if v is None else f"{v:.2f}x"
    rows(f"run --rm --network none busybox true, {s['iterations']} runs (ms)", "run_rm_ms",
         ["median", "p90", "min", "vs berth"],
         lambda d: [f"{d['median']:.1f}", f"{d['p90']:.1f}", f"{d['min']:.1f}", x(d["ratio_to_berth"])])
    rows(f"{s['containers']} x run -d ... sleep 1000, {s['batches']} batches (s)", "run_d",
         ["median", "min", "ms each", "vs berth"],
         lambda d: [f"{d['total_s']['median']:.2f}", f"{d['total_s']['min']:.2f}", f"{d['per_container_ms']:.0f}",
                    x(d["ratio_to_berth"])])
    rows(f"supervisor with {s['containers']} running, median KiB", "supervisor",
         ["VmRSS", "PSS", "Private", "PSS vs b"],
         lambda d: [d["vmrss_kib"]["median"], d["pss_kib"]["median"], d["private_kib"]["median"],
                    x(d["pss_kib"]["ratio_to_berth"])])
    for name, r in eng.items():
        if "supervisor" in r:
            print(f"    {name}: {r['supervisor']['process']}, {r['supervisor']['processes_measured']} processes")
        for dm in r.get("daemons_kib", [])[:1]:
            parts = [f"{k} {v['vmrss'] / 1024:.0f} MiB VmRSS" for k, v in dm.items() if v]
            print(f"    {name}: plus its daemons, shared by all containers: {', '.join(parts)}")
    checks = eng.get("berth", {}).get("berth_processes_with_no_container", [])
    if checks:
        ours = max(len(c["ours_running"]) for c in checks)
        zombies = max(c["ours_zombies"] for c in checks)
        others = max(c["others_running"] for c in checks)
        other_z = max(c["other_zombies"] for c in checks)
        parents = sorted({p for c in checks for p in c["zombie_parents"]})
        print(f"\nberth processes of this run left when no container runs: {ours}"
              + (" still running after 5 s" if ours else "") + f" ({len(checks)} checks)")
        if zombies or other_z:
            print(f"  exited but not reaped after 5 s: up to {zombies} of this run's monitors and {other_z} berth* "
                  f"zombies of unknown owner; their parent: {', '.join(f'PID {p}' for p in parents)}")
        if others:
            print(f"  not counted: up to {others} other berth* processes on the host, not this run's")
    left = rep["leftovers"]
    print(f"left behind: {left if left != 'none' else 'nothing'}")


# --- main -----------------------------------------------------------------------


def cleanup(engines, daemons, work, run_dirs, ids_seen, cgroups_before):
    """Remove everything this run made; return what could not be removed."""
    for e in engines:
        if e.failed == "not installed":
            continue
        try:
            if e.name == "podman":
                e.run("rm", "-f", "-a", "-t", "0")
                e.run("rmi", "-f", IMAGE)
                e.run("system", "reset", "-f")
            else:
                ids = e.run("ps", "-aq").split()
                if ids:
                    ids_seen.update(ids)
                    e.run("rm", "-f", *ids)
                e.run("rmi", IMAGE)
        except (RuntimeError, OSError):
            pass  # the engine failed early, or its state goes with the directories below
    for d in daemons:
        d.__exit__()
    # berth keeps its run root (run_dirs[0]) on a tmpfs of its own when /run
    # is on disk: expected, and unmounted here once nothing is mounted in it.
    own = run_dirs[0]
    if mountpoints_under([own]) == [own]:
        subprocess.run(["umount", own], capture_output=True)
    marks = [str(work), *run_dirs]
    left = {}
    procs = processes_mentioning(marks)
    if procs:
        left["processes"] = [f"{p} {b' '.join(cmdline(p))[:120].decode(errors='replace')}" for p in procs]
        for p in procs:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)
    mounts = mountpoints_under(marks)
    if mounts:
        left["mounts"] = mounts
        for m in mounts:
            subprocess.run(["umount", "-l", m], capture_output=True)
    for d in run_dirs:
        shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    for d in sorted(parent_cgroups() - cgroups_before):  # made by this run; rmdir fails if in use
        try:
            os.rmdir(d)
        except OSError:
            pass
    short = {i[:12] for i in ids_seen}
    cgroups = cgroups_named(short) if short else []
    if cgroups:
        left["cgroups"] = cgroups
    if work.exists():
        left["work_dir"] = str(work)
    return left


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=30, help="timed `run --rm` per engine (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed `run --rm` before them (default 3)")
    ap.add_argument("--settle", type=float, default=0.25,
                    help="seconds between one `run --rm` and the next (default 0.25)")
    ap.add_argument("--containers", type=int, default=50, help="detached containers per batch (default 50)")
    ap.add_argument("--batches", type=int, default=3, help="batches of detached containers (default 3)")
    ap.add_argument("--berth", default=str(ROOT / "target/x86_64-unknown-linux-gnu/release/berth"))
    ap.add_argument("--out", default=str(HERE / "results/container-run.json"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("container-run.py: needs root")
    if not Path("/bin/busybox").exists():
        sys.exit("container-run.py: needs /bin/busybox (Debian's busybox-static)")
    if not Path(a.berth).exists():
        sys.exit(f"container-run.py: no {a.berth} (cargo build --release, or --berth PATH)")
    signal.signal(signal.SIGTERM, on_sigterm)
    cgroups_before = parent_cgroups()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="berth-run-bench.", dir="/var/tmp"))
    tag = work.name.rsplit(".", 1)[1]
    run_dirs = [f"/run/bbb-{tag}", f"/run/bbp-{tag}", f"/run/bbd-{tag}"]  # berth, podman, docker: short paths
    engines, daemons, checks, tracked, ids_seen = [], [], [], set(), set()
    marks = [str(work), *run_dirs]
    interrupted = False
    try:
        tarball = work / "busybox.tar"
        busybox_rootfs_tar(tarball)
        host = {"kernel": os.uname().release, "nproc": os.cpu_count(), "cgroups": cgroup_mode(),
                "loadavg_before": os.getloadavg()}
        conf = work / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = \"file\"\n"
                        "cgroup_manager = \"cgroupfs\"\n")
        dockerd = Dockerd(work / "docker", run_dirs[2])
        daemons.append(dockerd)
        engines += [
            Engine("berth", [a.berth, "--root", str(work / "berth"), "--run-root", run_dirs[0]]),
            Engine("podman", ["podman", "--root", str(work / "podman"), "--runroot", run_dirs[1],
                              "--cgroup-manager", "cgroupfs"], dict(os.environ, CONTAINERS_CONF=str(conf))),
            Engine("docker", ["docker", "-H", dockerd.sock]),
        ]
        for e, setup, needs in [
            (engines[0], lambda e: setup_berth(e, a, tarball), []),
            (engines[1], lambda e: setup_podman(e, tarball), ["podman"]),
            (engines[2], lambda e: setup_docker(e, dockerd, tarball), ["docker", "dockerd"]),
        ]:
            print(f"setting up {e.name} ...", file=sys.stderr, flush=True)
            if not all(shutil.which(n) for n in needs):
                e.failed = "not installed"
                continue
            try:
                setup(e)
            except (RuntimeError, OSError) as err:
                e.failed = f"failed: {err}"
        bench_run_rm(engines, a)
        checks.append(berth_leftovers(marks, tracked, "after the run --rm iterations"))
        for b in range(a.batches):
            bench_run_d(engines, a, b, marks, tracked, checks, ids_seen)
        host["loadavg_after"] = os.getloadavg()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("cleaning up ...", file=sys.stderr, flush=True)
        leftovers = cleanup(engines, daemons, work, run_dirs, ids_seen, cgroups_before)
    if interrupted:
        print(f"interrupted; left behind: {leftovers or 'nothing'}", file=sys.stderr)
        return 130
    rep = report(engines, a, host, checks, leftovers, started)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rep, indent=2) + "\n")
    print_table(rep)
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
