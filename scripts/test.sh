#!/bin/sh
# The whole test suite: install what the tests need, then run every test
# (unit, root and end-to-end). Run as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --all-targets -q
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
