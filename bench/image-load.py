#!/usr/bin/env python3
"""Benchmark: `load` of a multi-layer image archive, berth against podman
(and docker when its daemon answers), side by side in one run.

The image is made here: a Debian rootfs from debootstrap (minbase, cached
under /var/tmp/berth-bench-cache; the mirror is read from this host's apt
sources) plus layers of random (incompressible) and text data, about 400 MB
unpacked in 7 layers, written as a docker-archive (uncompressed layers, as
`docker save` writes them). Without debootstrap (or with --base busybox) the
base layer is Debian's busybox-static instead.

docker is measured with a daemon of the benchmark's own (dockerd from
Debian's docker.io), started untimed before each load on that load's file
system. Each load goes into a fresh, empty ext4 file system made for it (a sparse
image on a loop device with direct I/O), so that no engine inherits the
state the previous one left on the shared disk (ext4 on some hosts slows
inode allocation for minutes after many files are deleted). Medians over
--iterations; engines interleaved.

    sudo python3 bench/image-load.py [--iterations 3] [--size-mb 400] [--base debian|busybox]
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def layer_tar(files):
    """An uncompressed layer tar of (name, bytes) pairs, deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        dirs = sorted({str(Path(n).parent) for n, _ in files if str(Path(n).parent) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            t.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def busybox_layer():
    bb = Path("/bin/busybox").read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev"]:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            t.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(bb)
        info.mode = 0o755
        t.addfile(info, io.BytesIO(bb))
        apps = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
        for a in apps:
            if a == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{a}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            t.addfile(info)
    return buf.getvalue()


def apt_mirror():
    """The Debian mirror this host's apt uses (never written down here)."""
    for f in [Path("/etc/apt/sources.list.d/debian.sources")]:
        if f.exists():
            for line in f.read_text().splitlines():
                if line.lower().startswith("uris:"):
                    return line.split()[1]
    f = Path("/etc/apt/sources.list")
    if f.exists():
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    return None


CACHE = Path("/var/tmp/berth-bench-cache")


def debian_layer():
    """A Debian 12 minbase rootfs as a layer tar, or None if it can't be made."""
    rootfs = CACHE / "bookworm-minbase"
    if not (rootfs / "etc/debian_version").exists():
        mirror = apt_mirror()
        if not shutil.which("debootstrap") or not mirror:
            return None
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        print(f"debootstrap bookworm (minbase) into {rootfs} ...", flush=True)
        r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"debootstrap failed: {r.stderr.strip().splitlines()[-1:]}")
            shutil.rmtree(rootfs, ignore_errors=True)
            return None
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    r = subprocess.run(["tar", "--numeric-owner", "--sort=name", "--xattrs", "-C", str(rootfs), "-cf", "-", "."],
                       capture_output=True)
    if r.returncode != 0:
        return None
    return r.stdout


def make_archive(path: Path, size_mb: int, base: str):
    rng = random.Random(42)
    layers = [debian_layer() if base == "debian" else None]
    if layers[0] is None:
        layers[0] = busybox_layer()
    rest = max(6, size_mb - len(layers[0]) // (1 << 20))
    per = max(1, rest // 6)
    for i in range(3):  # random data: a few large files per layer
        files = [(f"data/rand{i}/f{j}", rng.randbytes(per * 1024 * 1024 // 4)) for j in range(4)]
        layers.append(layer_tar(files))
    words = [w.encode() for w in "the quick brown fox jumps over a lazy dog berth container image layer".split()]
    for i in range(3):  # text: many small files
        files = []
        total = 0
        j = 0
        while total < per * 1024 * 1024:
            text = b" ".join(rng.choice(words) for _ in range(rng.randint(200, 2000)))
            files.append((f"text{i}/d{j // 100}/f{j}.txt", text))
            total += len(text)
            j += 1
        layers.append(layer_tar(files))
    diff_ids = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))],
    }, sort_keys=True).encode()
    cid = hashlib.sha256(config).hexdigest()
    with tarfile.open(path, "w") as t:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        add(f"{cid}.json", config)
        names = []
        for l, d in zip(layers, diff_ids):
            n = f"{d[7:]}/layer.tar"
            add(n, l)
            names.append(n)
        add("manifest.json", json.dumps([{"Config": f"{cid}.json", "RepoTags": ["bench/load:1"], "Layers": names}]).encode())
    return sum(len(l) for l in layers), len(layers), "sha256:" + cid


def prun(d: Path) -> str:
    """podman's runroot: volatile, and at most 50 characters long."""
    return f"/run/bbp-{d.parent.name[-8:]}-{d.name[:12]}"


class Dockerd:
    """dockerd with its data root, exec root and socket under `d`."""

    def __init__(self, d: Path):
        self.d = d
        self.proc = None

    def __enter__(self):
        d = self.d
        self.log = open(d / "dockerd.log", "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(d / "docker"), "--exec-root", f"/run/bbd-{d.parent.name[-8:]}-{d.name[:12]}",
             "--pidfile", str(d / "dockerd.pid"), "-H", f"unix://{d}/docker.sock",
             "--iptables=false", "--ip6tables=false", "--bridge=none"],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if subprocess.run(["docker", "-H", f"unix://{d}/docker.sock", "version"],
                              capture_output=True).returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("dockerd did not start (see its log)")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(f"/run/bbd-{self.d.parent.name[-8:]}-{self.d.name[:12]}", ignore_errors=True)
        return False


class FreshFs:
    """A new empty ext4 file system on a loop device (direct I/O), mounted
    at `mnt` for the duration of a `with` block."""

    def __init__(self, work: Path, name: str):
        self.img = work / f"{name}.img"
        self.mnt = work / f"{name}.mnt"
        self.dev = None

    def __enter__(self):
        subprocess.run(["truncate", "-s", "16G", str(self.img)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.img)],
                       check=True)
        self.dev = subprocess.run(["losetup", "--direct-io=on", "--show", "-f", str(self.img)],
                                  check=True, capture_output=True, text=True).stdout.strip()
        self.mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", self.dev, str(self.mnt)], check=True)
        return self.mnt

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
        if self.dev:
            subprocess.run(["losetup", "-d", self.dev], capture_output=True)
        self.img.unlink(missing_ok=True)
        return False


def timed(cmd, env=None):
    subprocess.run(["sync"])
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {r.stderr.decode().strip().splitlines()[-1:]}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=400)
    ap.add_argument("--base", choices=["debian", "busybox"], default="debian")
    ap.add_argument("--no-fresh-fs", action="store_true", help="load into the host's /var/tmp instead")
    ap.add_argument("--berth", default=str(ROOT / "target/x86_64-unknown-linux-gnu/release/berth"))
    ap.add_argument("--out", default=str(HERE / "results/image-load.json"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("image-load.py: needs root")
    work = Path(tempfile.mkdtemp(prefix="berth-load-bench.", dir="/var/tmp"))
    try:
        archive = work / "image.tar"
        size, nlayers, image_id = make_archive(archive, a.size_mb, a.base)
        print(f"image: {nlayers} layers, {size / 1e6:.0f} MB unpacked, archive {archive.stat().st_size / 1e6:.0f} MB")
        conf = work / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = \"file\"\n")
        penv = dict(os.environ, CONTAINERS_CONF=str(conf))
        engines = {
            "berth": (lambda d: [a.berth, "--root", str(d / "berth"), "load", "-q", "-i", str(archive)], None),
        }
        if shutil.which("podman"):
            engines["podman"] = (lambda d: ["podman", "--root", str(d / "podman"), "--runroot", prun(d),
                                            "load", "-q", "-i", str(archive)], penv)
        docker = bool(shutil.which("docker") and shutil.which("dockerd"))
        if docker:
            # A daemon of the benchmark's own, started (untimed) on each
            # fresh file system; the load is what is timed.
            engines["docker"] = (lambda d: ["docker", "-H", f"unix://{d}/docker.sock", "load", "-q", "-i",
                                            str(archive)], None)
        results = {name: [] for name in engines}
        notes = {}
        for i in range(a.iterations):
            for name, (cmd, env) in engines.items():
                if name in notes:
                    continue
                try:
                    if a.no_fresh_fs:
                        d = work / f"{name}{i}"
                        d.mkdir()
                        fs = contextlib.nullcontext(d)
                    else:
                        fs = FreshFs(work, f"{name}{i}")
                    with fs as d:
                        with (Dockerd(d) if name == "docker" else contextlib.nullcontext()):
                            results[name].append(timed(cmd(d), env=env))
                        if name == "podman":
                            subprocess.run(["podman", "--root", str(d / "podman"), "--runroot", prun(d),
                                            "system", "reset", "-f"], capture_output=True, env=penv)
                except (RuntimeError, subprocess.CalledProcessError) as e:
                    notes[name] = str(e)
        print(f"\nload of the archive, {a.iterations} runs each (s)   median      min   vs berth")
        base = statistics.median(results["berth"]) if results["berth"] else None
        for name, xs in results.items():
            if name in notes:
                print(f"  {name:8} failed: {notes[name]}")
                continue
            med = statistics.median(xs)
            ratio = f"{med / base:.2f}x" if base else "-"
            print(f"  {name:8} {med:27.2f} {min(xs):8.2f} {ratio:>9}")
        if not docker:
            print(f"  {'docker':8} not installed")
        if "podman" not in engines:
            print(f"  {'podman':8} not installed")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({
            "image": {"layers": nlayers, "unpacked_bytes": size, "archive_bytes": archive.stat().st_size,
                      "id": image_id, "base": a.base},
            "fresh_fs": not a.no_fresh_fs,
            "iterations": a.iterations, "seconds": results, "failed": notes,
            "nproc": os.cpu_count(), "kernel": os.uname().release,
        }, indent=2))
        print(f"\nwrote {a.out}")
    finally:
        for d in sorted(work.glob("podman*")):
            if d.is_dir() and not d.name.endswith(".mnt"):
                subprocess.run(["podman", "--root", str(d / "podman"), "--runroot", prun(d), "system", "reset",
                                "-f"], capture_output=True, env=dict(os.environ, CONTAINERS_CONF=str(work / "containers.conf")))
        # Only this run's: another run may be going on.
        for r in Path("/run").glob(f"bbp-{work.name[-8:]}-*"):
            shutil.rmtree(r, ignore_errors=True)
        for m in work.glob("*.mnt"):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
