#!/usr/bin/env python3
"""Benchmark: `load` of a multi-layer image archive, berth against podman
(and docker when its daemon answers), side by side in one run.

The image is made here: a busybox-static base layer plus layers of random
(incompressible) and text data, about 400 MB unpacked in 7 layers, written
as a docker-archive (uncompressed layers, as `docker save` writes them).
Each load goes into a fresh, empty store; medians over --iterations.

    sudo python3 bench/image-load.py [--iterations 3] [--size-mb 400]
"""

import argparse
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


def make_archive(path: Path, size_mb: int):
    rng = random.Random(42)
    per = max(1, size_mb // 6)
    layers = [busybox_layer()]
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


def timed(cmd, env=None):
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
    ap.add_argument("--berth", default=str(ROOT / "target/release/berth"))
    ap.add_argument("--out", default=str(HERE / "results/image-load.json"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("image-load.py: needs root")
    work = Path(tempfile.mkdtemp(prefix="berth-load-bench.", dir="/var/tmp"))
    try:
        archive = work / "image.tar"
        size, nlayers, image_id = make_archive(archive, a.size_mb)
        print(f"image: {nlayers} layers, {size / 1e6:.0f} MB unpacked, archive {archive.stat().st_size / 1e6:.0f} MB")
        conf = work / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = \"file\"\n")
        penv = dict(os.environ, CONTAINERS_CONF=str(conf))
        engines = {
            "berth": lambda i: [a.berth, "--root", str(work / f"berth{i}"), "load", "-q", "-i", str(archive)],
        }
        if shutil.which("podman"):
            engines["podman"] = lambda i: ["podman", "--root", str(work / f"podman{i}"), "--runroot", str(work / f"prun{i}"),
                                           "load", "-q", "-i", str(archive)]
        if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            engines["docker"] = lambda i: ["docker", "load", "-q", "-i", str(archive)]
        results = {name: [] for name in engines}
        notes = {}
        subprocess.run(["sync"])
        for i in range(a.iterations):
            for name, cmd in engines.items():
                if name in notes:
                    continue
                try:
                    results[name].append(timed(cmd(i), env=penv if name == "podman" else None))
                except RuntimeError as e:
                    notes[name] = str(e)
                if name == "docker":
                    subprocess.run(["docker", "rmi", "-f", "bench/load:1"], capture_output=True)
                subprocess.run(["sync"])
        print(f"\nload of the archive, {a.iterations} runs each (s)   median      min   vs berth")
        base = statistics.median(results["berth"]) if results["berth"] else None
        for name, xs in results.items():
            if name in notes:
                print(f"  {name:8} failed: {notes[name]}")
                continue
            med = statistics.median(xs)
            ratio = f"{med / base:.2f}x" if base else "-"
            print(f"  {name:8} {med:27.2f} {min(xs):8.2f} {ratio:>9}")
        for missing in ("podman", "docker"):
            if missing not in engines:
                print(f"  {missing:8} not available")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({
            "image": {"layers": nlayers, "unpacked_bytes": size, "archive_bytes": archive.stat().st_size, "id": image_id},
            "iterations": a.iterations, "seconds": results, "failed": notes,
            "nproc": os.cpu_count(), "kernel": os.uname().release,
        }, indent=2))
        print(f"\nwrote {a.out}")
    finally:
        for d in work.glob("podman*"):
            subprocess.run(["podman", "--root", str(d), "--runroot", str(work / ("prun" + d.name[6:])), "system", "reset", "-f"],
                           capture_output=True, env=dict(os.environ, CONTAINERS_CONF=str(work / "containers.conf")))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
