#!/bin/sh
# Install every Debian 12 package berth's build and tests need. Run as root.
set -eu
export DEBIAN_FRONTEND=noninteractive
pkgs="busybox-static libseccomp-dev pkg-config gcc iproute2 procps python3 podman runc crun skopeo docker-registry apache2-utils openssl nftables iperf3 util-linux"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The registry tests start their own docker-registry servers; the
# package's service is not wanted.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
