#!/usr/bin/env python3
"""Container lifecycle benchmark: berth-runtime side by side with runc, crun, youki.

Two benchmarks, both running /bin/true from one prepared busybox bundle:

  create+start+wait+delete  four commands per iteration, the way an engine
                            drives a runtime: `create --pid-file`, `start`,
                            waitpid() on the container's init (this process is
                            a child subreaper, so the orphaned init is re-parented
                            to it), then `delete`.
  run                       one `run` command (create, start, wait and delete
                            inside the runtime).

The runtimes are interleaved iteration by iteration (round robin, the first
runtime rotating each iteration) so that machine noise hits all of them alike.
Each runtime gets its own --root temporary directory.

Peak memory is the ru_maxrss that os.wait4() reports for the runtime process of
`run` and of `create`, measured in separate, untimed probes (see spawn()).

Needs root and Python 3.11 (standard library only). See bench/README.md.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "runtime-lifecycle.json"
BUSYBOX = "/bin/busybox"  # Debian's busybox-static

LIFECYCLE = "create+start+wait+delete"
RUN = "run"
BENCHMARKS = (LIFECYCLE, RUN)
PHASES = ("create", "start", "wait", "delete")

# --- Linux bits through ctypes ------------------------------------------------

LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 2


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def become_subreaper() -> None:
    """Orphaned descendants (the containers' init processes) become our children."""
    _check(LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def setns_mnt(fd: int) -> None:
    # Joining a mount namespace resets cwd to its root; we only use absolute paths.
    _check(LIBC.setns(fd, CLONE_NEWNS), "setns(CLONE_NEWNS)")


def make_hidden_unified_ns() -> int:
    """A private mount namespace where /sys/fs/cgroup/unified is unmounted.

    Debian's crun 1.8 refuses hybrid cgroup hosts whose cgroup2 tree holds a
    controller ("cgroups in hybrid mode not supported, drop all controllers
    from cgroupv2"). Without the cgroup2 mount in view crun sees a plain v1
    host and works. Only this process's private copy of the mount table
    changes (it is made rprivate before the unmount, so nothing propagates);
    the host is untouched. Returns an fd of the new namespace; this process
    itself goes back to the host's namespace.
    """
    host = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(LIBC.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        try:
            _check(LIBC.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / rprivate")
            _check(LIBC.umount2(b"/sys/fs/cgroup/unified", MNT_DETACH), "umount /sys/fs/cgroup/unified")
            return os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            setns_mnt(host)
    finally:
        os.close(host)


# --- statistics -----------------------------------------------------------------


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 1]."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(xs: list[float], digits: int = 3) -> dict:
    return {
        "n": len(xs),
        "median": round(percentile(xs, 0.5), digits),
        "p90": round(percentile(xs, 0.9), digits),
        "min": round(min(xs), digits),
        "max": round(max(xs), digits),
        "mean": round(sum(xs) / len(xs), digits),
    }


# --- the runtimes -------------------------------------------------------------


class StepError(Exception):
    """A runtime command failed; the message is one line for the report."""


@dataclass
class Runtime:
    name: str
    path: str | None  # None: not installed
    bundle: Path | None = None  # the shared bundle
    root: Path | None = None  # its own --root state directory
    work: Path | None = None  # scratch: pid file, stderr log
    ns_fd: int | None = None  # mount namespace to run it in (crun workaround)
    version: str = ""
    notes: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # task -> "failed: <one line>"
    ms: dict[str, list[float]] = field(default_factory=lambda: {b: [] for b in BENCHMARKS})
    phases_ms: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    rss_kib: dict[str, list[int]] = field(default_factory=lambda: {"run": [], "create": []})

    def argv(self, *args: str) -> list[str]:
        return [self.path, "--root", str(self.root), *args]

    def in_ns(self):
        """Context manager: run the body inside this runtime's mount namespace, if any."""
        return _Namespace(self.ns_fd)


class _Namespace:
    def __init__(self, fd: int | None):
        self.fd, self.host = fd, None

    def __enter__(self):
        if self.fd is not None:
            self.host = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            setns_mnt(self.fd)

    def __exit__(self, *exc):
        if self.host is not None:
            setns_mnt(self.host)
            os.close(self.host)
            self.host = None


# Forks a subshell that waits for a byte on fd 3 and then execs "$@", prints
# the subshell's pid and exits. Once we have reaped the shell, the subshell is
# re-parented to us (the subreaper) and only then told to go, so no one else
# can reap it and os.wait4() gets its rusage. See spawn() for why.
TRAMPOLINE = '{ read -r _ <&3; exec "$@" 3<&-; } </dev/null >/dev/null & echo $!'


def spawn(argv: list[str], stderr_path: Path, clean_rss: bool = False) -> int:
    """Start argv with stdin/stdout on /dev/null and stderr to a file; return its pid.

    With clean_rss, start it through TRAMPOLINE. ru_maxrss is the high-water
    mark of a *process*, kept across execve(), and a child forked (or
    vforked) from this Python process starts with Python's resident set:
    spawned directly, even /bin/true reports ~14 MiB. Forked from a small
    static busybox shell instead, the floor is about 1 MiB (main() measures
    it with /bin/true and reports it).
    """
    env = os.environ.copy()
    stdio = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(stderr_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]
    if not clean_rss:
        stdio.append((os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0))
        return os.posix_spawn(argv[0], argv, env, file_actions=stdio)

    pid_r, pid_w = os.pipe()  # the shell prints the subshell's pid here
    go_r, go_w = os.pipe()  # we write a byte here once the shell is reaped
    try:
        sh = os.posix_spawn(
            BUSYBOX,
            ["sh", "-c", TRAMPOLINE, "sh", *argv],
            env,
            file_actions=[*stdio, (os.POSIX_SPAWN_DUP2, pid_w, 1), (os.POSIX_SPAWN_DUP2, go_r, 3)],
        )
    finally:
        os.close(pid_w)
        os.close(go_r)
    with os.fdopen(pid_r, "rb") as f:
        out = f.read()
    os.waitpid(sh, 0)
    os.write(go_w, b"\n")
    os.close(go_w)
    return int(out)


def run_cmd(rt: Runtime, args: list[str], clean_rss: bool = False) -> tuple[int, int]:
    """Run one runtime command to completion. Returns (ns elapsed, ru_maxrss KiB).

    Raises StepError (with the runtime's last stderr line) on a non-zero exit.
    """
    log = rt.work / "stderr.log"
    t0 = time.perf_counter_ns()
    pid = spawn(rt.argv(*args), log, clean_rss)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter_ns() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise StepError(f"`{args[0]}` exited {code}: {last_line(log)}")
    return elapsed, usage.ru_maxrss


def last_line(path: Path) -> str:
    try:
        lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no stderr)"
    return lines[-1] if lines else "(no stderr)"


def describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def reap(pid: int) -> int | None:
    """Kill and reap a container init left behind by a failed iteration; return its wait status."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        os.kill(pid, signal.SIGKILL)
        return os.waitpid(pid, 0)[1]
    except (ChildProcessError, ProcessLookupError):
        return None


def force_delete(rt: Runtime, cid: str) -> None:
    """Best-effort `delete --force`, used after a failure and at the end."""
    pid = spawn(rt.argv("delete", "--force", cid), rt.work / "cleanup.log")
    os.waitpid(pid, 0)


def lifecycle(rt: Runtime, cid: str) -> tuple[int, list[int]]:
    """create, start, wait for the init, delete. Returns (total ns, per-phase ns).

    The total is wall time from spawning `create` to `delete`'s exit, so it
    includes what an engine does in between (reading the pid file).
    """
    pid_file = rt.work / "pid"
    pid_file.unlink(missing_ok=True)
    init_pid = None
    try:
        t0 = time.perf_counter_ns()
        t_create, _ = run_cmd(rt, ["create", "--bundle", str(rt.bundle), "--pid-file", str(pid_file), cid])
        init_pid = int(pid_file.read_text())
        t_start, _ = run_cmd(rt, ["start", cid])
        t1 = time.perf_counter_ns()
        _, status = os.waitpid(init_pid, 0)  # ours: we are the subreaper
        t_wait = time.perf_counter_ns() - t1
        init_pid = None
        if status != 0:
            raise StepError(f"container process ended with {describe_exit(status)}")
        t_delete, _ = run_cmd(rt, ["delete", cid])
        return time.perf_counter_ns() - t0, [t_create, t_start, t_wait, t_delete]
    except StepError as e:
        raise StepError(cleanup_after_failure(rt, cid, init_pid, str(e))) from None


def create_rss(rt: Runtime, cid: str) -> int:
    """`create` through the trampoline for its ru_maxrss, then `delete --force`."""
    pid_file = rt.work / "pid"
    pid_file.unlink(missing_ok=True)
    init_pid = None
    try:
        _, rss = run_cmd(rt, ["create", "--bundle", str(rt.bundle), "--pid-file", str(pid_file), cid], clean_rss=True)
        init_pid = int(pid_file.read_text())
        run_cmd(rt, ["delete", "--force", cid])
        os.waitpid(init_pid, 0)  # killed by the forced delete
        return rss
    except StepError as e:
        raise StepError(cleanup_after_failure(rt, cid, init_pid, str(e))) from None


def run_once(rt: Runtime, cid: str, clean_rss: bool = False) -> tuple[int, int]:
    """One `run`. Returns (ns elapsed, ru_maxrss KiB)."""
    try:
        return run_cmd(rt, ["run", "--bundle", str(rt.bundle), cid], clean_rss)
    except StepError as e:
        raise StepError(cleanup_after_failure(rt, cid, None, str(e))) from None


def cleanup_after_failure(rt: Runtime, cid: str, init_pid: int | None, msg: str) -> str:
    """`delete --force` the container and reap its init; return msg plus how the init ended."""
    if init_pid is not None:
        # Tells why e.g. `start` failed when the init died right after `create`.
        status = reap(init_pid)
        if status is not None:
            msg += f" (container init: {describe_exit(status)})"
    force_delete(rt, cid)
    return msg


# --- one iteration --------------------------------------------------------------

# Timed tasks first, then the memory probes (which go through the trampoline).
# Each task fails on its own: a runtime whose `start` is broken still gets its
# `create` memory measured.
TASKS = (LIFECYCLE, RUN, "rss-create", "rss-run")
TASK_TAG = {LIFECYCLE: "lc", RUN: "run", "rss-create": "mc", "rss-run": "mr"}


def do_task(rt: Runtime, task: str, cid: str, record: bool) -> None:
    """One measurement of one runtime; a failure marks that task failed for good."""
    if task in rt.failed:
        return
    try:
        with rt.in_ns():
            if task == LIFECYCLE:
                total, phases = lifecycle(rt, cid)
                if record:
                    rt.ms[LIFECYCLE].append(total / 1e6)
                    for p, ns in zip(PHASES, phases):
                        rt.phases_ms[p].append(ns / 1e6)
            elif task == RUN:
                ns, _ = run_once(rt, cid)
                if record:
                    rt.ms[RUN].append(ns / 1e6)
            elif task == "rss-create":
                rss = create_rss(rt, cid)
                if record:
                    rt.rss_kib["create"].append(rss)
            else:  # rss-run
                _, rss = run_once(rt, cid, clean_rss=True)
                if record:
                    rt.rss_kib["run"].append(rss)
    except StepError as e:
        rt.failed[task] = f"failed: {e}"
        print(f"\n{rt.name}: {task} {rt.failed[task]}", file=sys.stderr)


def iterate(runtimes: list[Runtime], tag: str, label: str, index: int, record: bool) -> None:
    k = index % len(runtimes)
    order = runtimes[k:] + runtimes[:k]  # rotate who goes first
    for task in TASKS:
        for rt in order:
            do_task(rt, task, f"{tag}-{rt.name}-{TASK_TAG[task]}{label}{index}", record)


# --- setup --------------------------------------------------------------------


def make_bundle(dest: Path, berth: str) -> dict:
    """A busybox rootfs plus berth's default spec, tweaked to run /bin/true."""
    rootfs = dest / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    # The mount points an image ships (docker's busybox image has them too), so
    # that no runtime has to create them in the shared, read-only rootfs.
    for d in ("proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir()

    spec_dir = dest.parent / "spec"
    spec_dir.mkdir()
    subprocess.run([berth, "spec", "--bundle", str(spec_dir)], check=True)
    config = json.loads((spec_dir / "config.json").read_text())
    config["ociVersion"] = "1.0.2"  # Debian's crun 1.8 refuses newer versions
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    # No linux.cgroupsPath: every runtime derives the cgroup from the container
    # id, and ids carry the runtime's name, so they never collide.
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return {
        "rootfs": f"busybox-static, {len(applets)} applets",
        "args": config["process"]["args"],
        "ociVersion": config["ociVersion"],
        "namespaces": [n["type"] for n in config["linux"]["namespaces"]],
        "readonly_rootfs": config["root"].get("readonly", False),
    }


def version_of(path: str) -> str:
    p = subprocess.run([path, "--version"], capture_output=True, text=True)
    return (p.stdout or p.stderr).strip()


def smoke_test(rt: Runtime, tag: str, allow_workaround: bool) -> None:
    """One untimed `run`; try the hybrid-cgroup workaround for crun if that fails."""
    try:
        with rt.in_ns():
            run_once(rt, f"{tag}-{rt.name}-smoke")
        return
    except StepError as e:
        error = str(e)
    print(f"{rt.name}: smoke test {error}", file=sys.stderr)
    if allow_workaround and "hybrid mode not supported" in error:
        try:
            rt.ns_fd = make_hidden_unified_ns()
            with rt.in_ns():
                run_once(rt, f"{tag}-{rt.name}-smoke2")
            rt.notes.append(
                "runs in a private mount namespace without /sys/fs/cgroup/unified "
                "(it refuses hybrid cgroup hosts whose cgroup2 tree holds controllers), "
                "so it uses the v1 controllers only"
            )
            print(f"{rt.name}: works with /sys/fs/cgroup/unified hidden; using that", file=sys.stderr)
            return
        except (OSError, StepError) as e2:
            error += f"; with /sys/fs/cgroup/unified hidden: {e2}"
    for task in TASKS:
        rt.failed[task] = f"failed: {error}"


def cgroup_mode() -> str:
    # mountinfo: "... mountpoint ... - fstype source options"
    fstype = {}
    for line in open("/proc/self/mountinfo"):
        fields, _, tail = line.partition(" - ")
        fstype.setdefault(fields.split()[4], tail.split()[0])
    if fstype.get("/sys/fs/cgroup") == "cgroup2":
        return "v2"
    if fstype.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "hybrid"
    return "v1" if "cgroup" in fstype.values() else "none"


def host_info() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
    info = {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "cgroups": cgroup_mode(),
        "python": platform.python_version(),
        "busybox": subprocess.run([BUSYBOX], capture_output=True, text=True).stdout.splitlines()[0],
    }
    try:
        unified = Path("/sys/fs/cgroup/unified/cgroup.controllers").read_text().split()
        info["cgroup2_controllers"] = unified
    except OSError:
        pass
    return info


def berth_build_info(path: str) -> dict:
    """Which berth binary was measured (it is rebuilt often)."""
    st = os.stat(path)
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()
    return {
        "binary_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "binary_mtime": datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).isoformat(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def rss_floor(work: Path) -> int:
    """ru_maxrss of /bin/true through the trampoline: the smallest value it can report."""
    samples = []
    for _ in range(5):
        pid = spawn(["/bin/true"], work / "floor.log", clean_rss=True)
        samples.append(os.wait4(pid, 0)[2].ru_maxrss)
    return int(percentile(samples, 0.5))


# --- leftovers and cleanup ------------------------------------------------------


def cgroup_leftovers(tag: str) -> list[str]:
    """Cgroup directories named after our containers, in every hierarchy."""
    found = []
    for top in Path("/sys/fs/cgroup").iterdir():
        for dirpath, dirnames, _ in os.walk(top):
            depth = len(Path(dirpath).relative_to(top).parts)
            if depth >= 4:
                dirnames[:] = []
            found += [os.path.join(dirpath, d) for d in dirnames if tag in d]
    return sorted(found)


def cleanup(runtimes: list[Runtime], tag: str) -> dict:
    """Make sure nothing stays behind; return what had been left, if anything.

    Normally every container was deleted already, so this finds nothing. After
    an interruption it `delete --force`s whatever each runtime still has in its
    --root, kills and reaps stray children (a container init waiting for
    `start`, a runtime command cut short), and lists cgroups named after our
    containers.
    """
    left: dict = {}

    def delete_all() -> None:
        for rt in runtimes:
            if rt.root is None or not rt.root.exists():
                continue
            entries = sorted(os.listdir(rt.root))
            if entries:
                left.setdefault(f"{rt.name} --root entries", []).extend(entries)
                with rt.in_ns():
                    for cid in entries:
                        force_delete(rt, cid)

    delete_all()
    stray = reap_children()
    if stray:
        left["stray processes"] = stray
        delete_all()  # a `create` cut short may have finished meanwhile
    cgroups = cgroup_leftovers(tag)
    if cgroups:
        left["cgroups"] = cgroups
    return left


def reap_children(grace: float = 2.0) -> list[str]:
    """Reap every child; kill those still running after `grace` seconds.

    Normally there are none: every command was waited for and every container
    init reaped. After an interruption: the command that was cut short, and
    orphans re-parented to us (container inits of half-done iterations).
    """
    found, deadline = [], time.monotonic() + grace
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found  # no children at all
        if pid:
            found.append(f"pid {pid} ({describe_exit(status)})")
        elif time.monotonic() < deadline:
            time.sleep(0.05)
        else:
            for child in (p for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == os.getpid()):
                os.kill(int(child), signal.SIGKILL)
            deadline = float("inf")  # the killed ones are reaped on the next rounds


def _ppid(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


# --- report -------------------------------------------------------------------


def ratio(x: float | None, base: float | None) -> float | None:
    return round(x / base, 2) if x is not None and base else None


def build_report(runtimes, args, host, bundle_info, berth_build, floor, leftovers, started) -> dict:
    berth = runtimes[0]
    base = {b: percentile(berth.ms[b], 0.5) if b not in berth.failed else None for b in BENCHMARKS}
    base_rss = {k: percentile(v, 0.5) if f"rss-{k}" not in berth.failed else None for k, v in berth.rss_kib.items()}
    out = {}
    for rt in runtimes:
        entry: dict = {"path": rt.path, "version": rt.version}
        if rt.path is None:
            entry["status"] = "not installed"
            out[rt.name] = entry
            continue
        entry["notes"] = rt.notes
        entry["benchmarks"] = {}
        for b in BENCHMARKS:
            if b in rt.failed:
                entry["benchmarks"][b] = {"status": rt.failed[b]}
                continue
            s = summary(rt.ms[b])
            d = {"status": "ok", "ms": s, "ratio_to_berth": ratio(s["median"], base[b])}
            if b == LIFECYCLE:
                d["phases_ms"] = {p: summary(rt.phases_ms[p]) for p in PHASES}
            d["samples_ms"] = [round(x, 3) for x in rt.ms[b]]
            entry["benchmarks"][b] = d
        entry["peak_rss_kib"] = {}
        for k, v in rt.rss_kib.items():
            if f"rss-{k}" in rt.failed:
                entry["peak_rss_kib"][k] = {"status": rt.failed[f"rss-{k}"]}
                continue
            med = percentile(v, 0.5)
            entry["peak_rss_kib"][k] = {
                "status": "ok", "median": int(med), "min": min(v), "max": max(v), "n": len(v),
                "ratio_to_berth": ratio(med, base_rss[k]), "samples": v,
            }
        entry["status"] = "ok" if not rt.failed else "; ".join(f"{t}: {m}" for t, m in rt.failed.items())
        out[rt.name] = entry
    return {
        "benchmark": "runtime-lifecycle",
        "started": started,
        "command": " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
        "settings": {
            "iterations": args.iterations,
            "warmup": args.warmup,
            "order": "round robin per iteration, first runtime rotating",
            "workload": "/bin/true",
        },
        "host": host,
        "bundle": bundle_info,
        "berth_build": berth_build,
        "rss_note": "ru_maxrss from os.wait4() on the runtime process (includes children it reaped), "
        "started from a busybox shell so it does not inherit Python's resident set",
        "rss_floor_kib": floor,
        "runtimes": out,
        "leftovers": leftovers or "none",
    }


def fmt(x, spec=".2f", none="n/a") -> str:
    return none if x is None else format(x, spec)


def xfmt(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def print_table(report: dict) -> None:
    h = report["host"]
    s = report["settings"]
    print(f"\nHost: Linux {h['kernel']} {h['machine']}, {h['nproc']} CPUs ({h['cpu']}), cgroups {h['cgroups']}")
    print(f"{s['iterations']} timed iterations after {s['warmup']} warm-up, {s['order']}; workload {s['workload']}")
    load = h["loadavg_1_5_15"]
    print(f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load['before'])}, "
          f"after {'/'.join(f'{x:.2f}' for x in load['after'])}")
    rts = report["runtimes"]
    for name, r in rts.items():
        where = f"{r['path']}  ({r['version'].splitlines()[0]})" if r["path"] else "not installed"
        print(f"  {name:6} {where}")
        for n in r.get("notes", []):
            print(f"         note: {n}")
    w = 10
    for b in BENCHMARKS:
        print(f"\n{b} (ms)".ljust(34) + "".join(c.rjust(w) for c in ("median", "p90", "min", "vs berth")))
        for name, r in rts.items():
            d = r.get("benchmarks", {}).get(b)
            if d is None:
                print(f"  {name:30}{r['status']}")
            elif d["status"] != "ok":
                print(f"  {name:30}{d['status']}")
            else:
                m = d["ms"]
                cells = [fmt(m["median"]), fmt(m["p90"]), fmt(m["min"]), xfmt(d["ratio_to_berth"])]
                print(f"  {name:30}" + "".join(c.rjust(w) for c in cells))
    print(f"\n{LIFECYCLE} phases, median ms".ljust(34) + "".join(p.rjust(w) for p in PHASES))
    for name, r in rts.items():
        d = r.get("benchmarks", {}).get(LIFECYCLE)
        if d and d["status"] == "ok":
            print(f"  {name:30}" + "".join(fmt(d["phases_ms"][p]["median"]).rjust(w) for p in PHASES))
    print(f"\npeak RSS, median KiB (floor {report['rss_floor_kib']})".ljust(34)
          + "".join(c.rjust(w) for c in ("run", "vs berth", "create", "vs berth")))
    for name, r in rts.items():
        if "peak_rss_kib" not in r:
            continue
        cells = []
        for k in ("run", "create"):
            d = r["peak_rss_kib"][k]
            cells += [str(d["median"]), xfmt(d["ratio_to_berth"])] if d["status"] == "ok" else ["failed", ""]
        print(f"  {name:30}" + "".join(c.rjust(w) for c in cells))
    left = report["leftovers"]
    print(f"\nleft behind: {left if left != 'none' else 'nothing'}")


def write_svg(report: dict, path: Path) -> None:
    """Grouped bar chart of the median times, one group per benchmark."""
    colors = {"berth": "#d9480f", "runc": "#1c7ed6", "crun": "#2f9e44", "youki": "#7048e8"}
    rows = []  # (benchmark, runtime, median or None, label)
    for b in BENCHMARKS:
        for name, r in report["runtimes"].items():
            d = r.get("benchmarks", {}).get(b)
            if d and d["status"] == "ok":
                rows.append((b, name, d["ms"]["median"], f"{d['ms']['median']:.2f} ms"))
            else:
                rows.append((b, name, None, "not installed" if d is None else "failed"))
    top = max([m for _, _, m, _ in rows if m is not None] or [1.0])
    bar_h, gap, left, width = 22, 14, 190, 420
    y = 50
    parts = []
    for b in BENCHMARKS:
        parts.append(f'<text x="10" y="{y}" font-weight="bold">{b} of /bin/true (median)</text>')
        y += 10
        for _, name, m, label in (r for r in rows if r[0] == b):
            parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{name}</text>')
            if m is not None:
                wbar = max(1, width * m / top)
                parts.append(f'<rect x="{left}" y="{y}" width="{wbar:.1f}" height="{bar_h}" fill="{colors.get(name, "#868e96")}"/>')
                parts.append(f'<text x="{left + wbar + 6:.1f}" y="{y + 16}">{label}</text>')
            else:
                parts.append(f'<text x="{left}" y="{y + 16}" fill="#868e96">{label}</text>')
            y += bar_h + 6
        y += gap + 20
    h = report["host"]
    title = f"OCI runtime lifecycle, {report['settings']['iterations']} iterations, Linux {h['kernel']}, {h['nproc']} CPUs"
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 120}" height="{y}" '
        f'font-family="sans-serif" font-size="13">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n'
        f'<text x="10" y="22" font-size="15">{title}</text>\n' + "\n".join(parts) + "\n</svg>\n"
    )
    path.write_text(svg)


# --- main -----------------------------------------------------------------------


def progress(what: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r{what} {done}/{total}   ", end="\n" if done == total else "", file=sys.stderr, flush=True)
    elif done == total or done % 10 == 0:
        print(f"{what} {done}/{total}", file=sys.stderr, flush=True)


def on_sigterm(signum, frame):
    raise KeyboardInterrupt  # unwind through main()'s cleanup


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=50, help="timed iterations per runtime (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up iterations (default 5)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT.relative_to(REPO)})")
    ap.add_argument("--no-svg", action="store_true", help="do not write the SVG chart next to the JSON")
    ap.add_argument("--berth", default=str(REPO / "target" / "x86_64-unknown-linux-gnu" / "release" / "berth-runtime"), help="berth-runtime binary")
    ap.add_argument("--no-crun-workaround", action="store_true",
                    help="do not hide /sys/fs/cgroup/unified from crun on hybrid hosts")
    args = ap.parse_args()
    if args.iterations < 1 or args.warmup < 0:
        ap.error("--iterations must be >= 1 and --warmup >= 0")
    if os.geteuid() != 0:
        sys.exit("runtime-lifecycle: needs root (the runtimes create namespaces and cgroups)")
    if not os.access(args.berth, os.X_OK):
        sys.exit(f"runtime-lifecycle: no berth-runtime at {args.berth} (cargo build --release)")
    if not os.access(BUSYBOX, os.X_OK):
        sys.exit(f"runtime-lifecycle: {BUSYBOX} missing (apt-get install busybox-static)")

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    become_subreaper()
    signal.signal(signal.SIGTERM, on_sigterm)
    tag = f"bb{os.getpid()}"  # in every container id, to find leftovers
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    runtimes = [
        Runtime("berth", os.path.abspath(args.berth)),
        *(Runtime(n, shutil.which(n)) for n in ("runc", "crun", "youki")),
    ]
    present = [rt for rt in runtimes if rt.path]
    try:
        bundle_info = make_bundle(tmp / "bundle", runtimes[0].path)
        for rt in present:
            rt.bundle = tmp / "bundle"
            rt.root = tmp / f"root-{rt.name}"
            rt.work = tmp / f"work-{rt.name}"
            rt.root.mkdir()
            rt.work.mkdir()
            rt.version = version_of(rt.path)
            smoke_test(rt, tag, allow_workaround=rt.name == "crun" and not args.no_crun_workaround)
        floor = rss_floor(tmp)

        load_before = os.getloadavg()
        for i in range(args.warmup):
            iterate(present, tag, "w", i, record=False)
            progress("warm-up", i + 1, args.warmup)
        for i in range(args.iterations):
            iterate(present, tag, "", i, record=True)
            progress("iteration", i + 1, args.iterations)
        load_after = os.getloadavg()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        interrupted = True
    else:
        interrupted = False
    finally:
        leftovers = cleanup(present, tag)
        for rt in present:
            if rt.ns_fd is not None:
                os.close(rt.ns_fd)
        shutil.rmtree(tmp, ignore_errors=True)
    if interrupted:
        print(f"cleaned up; left behind: {leftovers or 'nothing'}", file=sys.stderr)
        return 130

    host = host_info()
    host["loadavg_1_5_15"] = {"before": load_before, "after": load_after}
    report = build_report(runtimes, args, host, bundle_info, berth_build_info(runtimes[0].path),
                          floor, leftovers, started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {args.out}", end="")
    if not args.no_svg:
        svg = args.out.with_suffix(".svg")
        write_svg(report, svg)
        print(f" and {svg}", end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
