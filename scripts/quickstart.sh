#!/bin/sh
# Quick start: install the build packages, build berth, and run the
# hello-world image built into berth (no network) in a container.
# Run as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q
export PATH="$PWD/target/x86_64-unknown-linux-gnu/release:$PATH"
berth run --rm hello-world
