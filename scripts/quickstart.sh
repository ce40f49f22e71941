#!/bin/sh
# Quick start: install the build packages, build berth, load the hello-world
# image built into berth (no network) and run it in a container.
# Run as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q
berth=$PWD/target/release/berth
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export BERTH_ROOT="$work/store"
"$berth" image inspect hello-world > "$work/image.json"   # loads the built-in image
"$berth" images
# Until `berth run` exists, run the image through berth's OCI runtime: a
# bundle whose rootfs is the image's layer.
mkdir -p "$work/bundle/rootfs"
cp -a "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["GraphDriver"]["Data"]["LowerDir"])' "$work/image.json")"/. "$work/bundle/rootfs/"
"$berth" runtime spec --bundle "$work/bundle"
python3 - "$work/bundle/config.json" "$work/image.json" <<'PY'
import json, sys
cfg, img = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))[0]
cfg["process"].update(args=img["Config"]["Cmd"], terminal=False)
cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] == "/proc"]
cfg["linux"]["maskedPaths"] = cfg["linux"]["readonlyPaths"] = []
cfg["hostname"] = "hello"
json.dump(cfg, open(sys.argv[1], "w"))
PY
"$berth" runtime --root "$work/run" run --bundle "$work/bundle" "hello-$$"
