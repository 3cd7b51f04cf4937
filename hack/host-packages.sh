#!/usr/bin/env bash
# Install the Debian packages the project needs (the real node, lint, promtool), when missing.
#
#   hack/host-packages.sh            everything below
#   hack/host-packages.sh PKG...     only these
#
# libseccomp-dev + pkg-config: runc is built with seccomp (RuntimeDefault profiles);
# nftables: the node's per-environment table (hack/node.sh); debootstrap: the operator
# image's rootfs (hack/build-images.sh); shellcheck: `make lint` checks hack/*.sh;
# prometheus: its promtool checks and unit-tests the chart's PrometheusRule and the Grafana
# dashboard's queries (tests/unit/test_prometheus_rules.py) — building promtool from the Go
# module proxy pulls every service-discovery SDK (36 min cold on a busy 2-core machine).
# A machine that has them all runs no apt command at all.
set -euo pipefail

PACKAGES=("$@")
((${#PACKAGES[@]})) || PACKAGES=(libseccomp-dev pkg-config nftables debootstrap shellcheck prometheus)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0

if ((EUID != 0)); then
  echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "[packages] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
