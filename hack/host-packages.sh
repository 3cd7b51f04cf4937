#!/usr/bin/env bash
# Install the Debian packages the real node needs, when they are missing.
#
#   hack/host-packages.sh            everything below
#   hack/host-packages.sh PKG...     only these
#
# libseccomp-dev + pkg-config: runc is built with seccomp (RuntimeDefault profiles);
# nftables: the node's per-environment table (hack/node.sh); debootstrap: the operator
# image's rootfs (hack/build-images.sh); shellcheck: `make lint` checks hack/*.sh.
# A machine that has them all runs no apt command at all.
set -euo pipefail

PACKAGES=("$@")
((${#PACKAGES[@]})) || PACKAGES=(libseccomp-dev pkg-config nftables debootstrap shellcheck)

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
