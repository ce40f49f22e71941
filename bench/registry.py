#!/usr/bin/env python3
"""Benchmark: `pull` and `push` against a registry on 127.0.0.1, berth
against podman and docker (when installed), side by side in one run.

The image is image-load.py's (a Debian minbase rootfs from the cache under
/var/tmp/berth-bench-cache plus random and text layers: 7 layers, about
410 MB unpacked), copied once by skopeo into a source registry (Debian's
docker-registry), which gzips the layers (about 230 MB compressed).

Each iteration and engine, interleaved:
- pull: the image from the source registry into an empty store of its own
  (berth --root, podman --root/--runroot, a dockerd of the benchmark's own
  with its own data root, started untimed), timed including unpacking;
- push: the pulled image to a new, empty registry (fresh storage per run).
Medians over --iterations.

    sudo python3 bench/registry.py [--iterations 3] [--size-mb 400]
"""

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_spec = importlib.util.spec_from_file_location("image_load", HERE / "image-load.py")
image_load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_load)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry on 127.0.0.1 with its storage under `d`."""

    def __init__(self, d: Path):
        self.d = d
        self.proc = None

    def __enter__(self):
        self.d.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (self.d / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.d / 'data'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.d / "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.d / "log", "w"))
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
        shutil.rmtree(self.d, ignore_errors=True)
        return False


def timed(cmd, env=None):
    subprocess.run(["sync"])
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {r.stderr.decode().strip().splitlines()[-1:]}")
    return dt


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {r.stderr.decode().strip().splitlines()[-1:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=400)
    ap.add_argument("--no-fresh-fs", action="store_true", help="stores on the host's /var/tmp instead")
    ap.add_argument("--berth", default=str(ROOT / "target/x86_64-unknown-linux-gnu/release/berth"))
    ap.add_argument("--out", default=str(HERE / "results/registry.json"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("registry.py: needs root")
    for tool in ["docker-registry", "skopeo"]:
        if not shutil.which(tool):
            sys.exit(f"registry.py: needs {tool} (scripts/setup.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="berth-registry-bench.", dir="/var/tmp"))
    conf = work / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = \"file\"\n")
    penv = dict(os.environ, CONTAINERS_CONF=str(conf))
    benv = dict(os.environ, BERTH_CONFIG_DIR=str(work / "berth-config"), DOCKER_CONFIG=str(work / "docker-config"))
    try:
        archive = work / "image.tar"
        size, nlayers, image_id = image_load.make_archive(archive, a.size_mb, "debian")
        with Registry(work / "source") as src:
            image = f"{src.host}/bench/img:1"
            run(["skopeo", "copy", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{image}"])
            archive.unlink()
            compressed = sum(f.stat().st_size for f in (work / "source/data").rglob("data") if f.is_file())
            print(f"image: {nlayers} layers, {size / 1e6:.0f} MB unpacked, {compressed / 1e6:.0f} MB in the registry")

            def berth_pull(d):
                return [a.berth, "--root", str(d / "berth"), "pull", "-q", image]

            def berth_push(d, dst):
                run([a.berth, "--root", str(d / "berth"), "tag", image, f"{dst}/bench/img:1"], env=benv)
                return [a.berth, "--root", str(d / "berth"), "push", "-q", f"{dst}/bench/img:1"]

            def pod(d):
                return ["podman", "--root", str(d / "podman"), "--runroot", image_load.prun(d)]

            engines = {"berth": (berth_pull, berth_push, benv)}
            if shutil.which("podman"):
                engines["podman"] = (
                    lambda d: pod(d) + ["pull", "-q", "--tls-verify=false", image],
                    lambda d, dst: pod(d) + ["push", "-q", "--tls-verify=false", image, f"docker://{dst}/bench/img:1"],
                    penv)
            docker = bool(shutil.which("docker") and shutil.which("dockerd"))
            if docker:
                def dk(d):
                    return ["docker", "-H", f"unix://{d}/docker.sock"]

                def docker_push(d, dst):
                    run(dk(d) + ["tag", image, f"{dst}/bench/img:1"])
                    return dk(d) + ["push", "-q", f"{dst}/bench/img:1"]
                engines["docker"] = (lambda d: dk(d) + ["pull", "-q", image], docker_push, None)
            results = {name: {"pull": [], "push": []} for name in engines}
            notes = {}
            for i in range(a.iterations):
                for name, (pull, push, env) in engines.items():
                    if name in notes:
                        continue
                    if a.no_fresh_fs:
                        d = work / f"{name}{i}"
                        d.mkdir()
                        fs = contextlib.nullcontext(d)
                    else:
                        fs = image_load.FreshFs(work, f"{name}{i}")
                    try:
                        with fs as d:
                            try:
                                with (image_load.Dockerd(d) if name == "docker" else contextlib.nullcontext()):
                                    results[name]["pull"].append(timed(pull(d), env=env))
                                    with Registry(work / f"dst-{name}{i}") as dst:
                                        results[name]["push"].append(timed(push(d, dst.host), env=env))
                            finally:
                                if name == "podman":
                                    subprocess.run(pod(d) + ["system", "reset", "-f"], capture_output=True, env=penv)
                    except (RuntimeError, subprocess.CalledProcessError) as e:
                        notes[name] = str(e)
        for op in ["pull", "push"]:
            print(f"\n{op} of the image, {a.iterations} runs each (s)   median      min   vs berth")
            base = statistics.median(results["berth"][op]) if results["berth"][op] else None
            for name, r in results.items():
                xs = r[op]
                if name in notes and not xs:
                    print(f"  {name:8} failed: {notes[name]}")
                    continue
                med = statistics.median(xs)
                ratio = f"{med / base:.2f}x" if base else "-"
                print(f"  {name:8} {med:28.2f} {min(xs):8.2f} {ratio:>9}")
            if not docker:
                print(f"  {'docker':8} not installed")
            if "podman" not in engines:
                print(f"  {'podman':8} not installed")
        for name, n in notes.items():
            print(f"note: {name}: {n}")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({
            "image": {"layers": nlayers, "unpacked_bytes": size, "compressed_bytes": compressed},
            "fresh_fs": not a.no_fresh_fs, "iterations": a.iterations, "seconds": results, "failed": notes,
            "nproc": os.cpu_count(), "kernel": os.uname().release,
        }, indent=2))
        print(f"\nwrote {a.out}")
    finally:
        for m in work.glob("*.mnt"):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        for r in Path("/run").glob(f"bbp-{work.name[-8:]}-*"):
            shutil.rmtree(r, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
