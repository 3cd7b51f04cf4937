#!/usr/bin/env bash
# Debian packages the tests and tools need, installed once (idempotent, like build-binaries.sh):
#
#   prometheus   for promtool: checks and unit-tests the chart's PrometheusRule and the Grafana
#                dashboard's queries (tests/unit/test_prometheus_rules.py). Building promtool from
#                the Go module proxy pulls every service-discovery SDK (36 min cold on a loaded
#                2-core machine); Debian's package installs in under a minute.
#
# Extra packages may be named on the command line.  Needs root or sudo, and Debian's archive.
set -euo pipefail

PACKAGES=(prometheus "$@")

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
((${#missing[@]})) || exit 0

sudo=()
((EUID == 0)) || sudo=(sudo)
echo "[system-packages] installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
