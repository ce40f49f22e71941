#!/bin/sh
# Quick start: install the build packages, build berth, and run a container
# from a busybox bundle. Run as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q
bundle=$(mktemp -d /tmp/berth-demo.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
./scripts/busybox-bundle.sh "$bundle" sh -c 'echo "hello from berth: pid $$, hostname $(hostname), root $(ls /)"' >/dev/null
./target/release/berth runtime run --bundle "$bundle" "demo-$$"
