#!/usr/bin/env bash
# Build the real node's container images without a registry or a container engine, as OCI
# archives that `ctr images import` reads, cached in $MIOSA_CACHE/images:
#
#   miosa.local/pause:1                  the pod sandbox (hack/images/pause, static Go)
#   miosa.local/testapp:1                HTTP app of dynamic versions (hack/images/testapp)
#   ghcr.io/miosa/miosa-operator:0.1.0   the operator and static server image
#
# The operator image is the Dockerfile's recipe, step for step, on a Debian rootfs made
# with debootstrap ($DEBIAN_SUITE, whose python3 carries Debian's security patches):
#   build stage   debian + python3 python3-venv; `python -m venv /opt/miosa`; pip install
#                 the project's wheel; pip uninstall pip
#   final stage   debian + python3 (layer 1); COPY /opt/miosa; useradd 10001 (layer 2);
#                 ENV, USER, ENTRYPOINT, CMD and LABELs as in the Dockerfile
# Each stage runs in a chroot over an overlay mount inside a private mount namespace, so a
# crash leaves no mount behind, and the overlay's upper directory *is* the layer.
#
# Every image is rebuilt only when its inputs change (a stamp next to the archive records
# them): the Debian rootfs once per suite, the operator's layer when operator/ or
# pyproject.toml change.  The operator's archive is named by the hash of its inputs, so
# checkouts sharing the cache (worktrees testing at once) never import each other's code.
# `hack/build-images.sh paths` prints the archives, one per line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${MIOSA_CACHE:-$HOME/.cache/miosa-operator}"
IMAGES="$CACHE/images"
MIRROR="${MIOSA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
OPERATOR_IMAGE="${MIOSA_OPERATOR_IMAGE:-ghcr.io/miosa/miosa-operator:0.1.0}"
CA_BUNDLE="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
export CA_BUNDLE
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
oci() { "$PYTHON" "$HERE/oci-image.py" "$@" >/dev/null; }
fresh() { [[ -s "$1" && "$(cat "$1.stamp" 2>/dev/null)" == "$2" ]]; }

# go_image NAME REF USER: one static Go program as /NAME, its entrypoint.
go_image() {
  local name="$1" ref="$2" user="$3" out="$IMAGES/$1.tar" stamp work
  stamp="$(cat "$HERE/images/go.mod" "$HERE/images/$name/main.go" | sha256sum | cut -c1-16) $ref"
  fresh "$out" "$stamp" && return
  log "building $ref"
  work="$(mktemp -d "$IMAGES/.work-$name.XXXXXX")"
  (cd "$HERE/images" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/rootfs/$name" "./$name")
  mkdir -p "$work/rootfs/tmp" && chmod 1777 "$work/rootfs/tmp"
  oci layer "$work/rootfs" "$work/layer.tar"
  printf '{"Entrypoint": ["/%s"], "User": "%s", "Env": ["PATH=/"]}\n' "$name" "$user" >"$work/config.json"
  oci archive "$out" --name "$ref" --config "$work/config.json" "$work/layer.tar"
  echo "$stamp" >"$out.stamp"
  rm -rf "$work"
}

# in_chroot ROOT LOWER UPPER COMMAND...: run COMMAND (a shell script) chrooted into an overlay
# of LOWER with writes going to UPPER, in a mount namespace of its own.
in_chroot() {
  local merged="$1" lower="$2" upper="$3" script="$4"
  mkdir -p "$merged" "$upper" "$upper.work"
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare --mount --propagation private -- bash -euo pipefail -c '
    merged="$1" lower="$2" upper="$3" script="$4"
    mount -t overlay miosa-image -o "lowerdir=$lower,upperdir=$upper,workdir=$upper.work" "$merged"
    mount --rbind /dev "$merged/dev"
    mount -t proc proc "$merged/proc"
    mount -t tmpfs tmpfs "$merged/tmp"
    mount --bind /etc/resolv.conf "$merged/etc/resolv.conf"
    # The host'"'"'s CA bundle (it may trust a TLS proxy in front of PyPI), outside the layer.
    touch "$merged/tmp/ca.crt" && mount --bind "$CA_BUNDLE" "$merged/tmp/ca.crt"
    [[ -d "${WHEELS:-}" ]] && mkdir "$merged/tmp/wheels" && mount --bind "$WHEELS" "$merged/tmp/wheels"
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 \
      PIP_DEFAULT_TIMEOUT=180 PIP_CERT=/tmp/ca.crt chroot "$merged" /bin/sh -euc "$script"
  ' in_chroot "$merged" "$lower" "$upper" "$script"
  rm -rf "$upper.work"
  # An overlay whiteout (a deleted lower file) would need translating into an OCI whiteout;
  # the recipes below only add and change files, so there must be none.
  if [[ -n "$(find "$upper" -type c -print -quit)" ]]; then
    echo "unexpected whiteout in $upper" >&2
    return 1
  fi
}

# debian_rootfs: the build stage's rootfs (python3 + venv) and the final stage's (python3),
# each trimmed like Debian's slim images' apt state (no package lists, no .debs).
debian_rootfs() {
  local base="$IMAGES/debian-$DEBIAN_SUITE" stamp="$DEBIAN_SUITE minbase python3 python3-venv ca-certificates v1"
  fresh "$base/final.tar" "$stamp" && return
  if [[ "$(cat "$base/build.stamp" 2>/dev/null)" != "$stamp" ]]; then
    "$HERE/host-packages.sh" debootstrap
    log "debootstrap $DEBIAN_SUITE (python3, python3-venv, ca-certificates) from $MIRROR"
    local t=$SECONDS
    rm -rf "$base" && mkdir -p "$base"
    unshare --mount --propagation private -- debootstrap --variant=minbase \
      --include=python3,python3-venv,ca-certificates "$DEBIAN_SUITE" "$base/build" "$MIRROR" >"$base/debootstrap.log" 2>&1 ||
      { tail -n 20 "$base/debootstrap.log" >&2; return 1; }
    rm -rf "$base/build/var/cache/apt/archives/"*.deb "$base/build/var/lib/apt/lists/"*
    : >"$base/build/etc/resolv.conf"
    echo "$stamp" >"$base/build.stamp"
    log "debootstrap took $((SECONDS - t)) s"
  fi
  # The final stage has python3 but not the venv module (the Dockerfile's final stage neither).
  rm -rf "$base/final"
  cp -a "$base/build" "$base/final"
  # shellcheck disable=SC2016 # expanded in the chroot
  chroot "$base/final" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -euc \
    'dpkg --purge $(dpkg-query -W -f "\${Package} " "python3*-venv" python3-pip-whl python3-setuptools-whl) >/dev/null'
  oci layer "$base/final" "$base/final.tar"
  echo "$stamp" >"$base/final.tar.stamp"
}

# The inputs of the operator's layer: the code that goes into its wheel, and this recipe
# (README.md, the wheel's long description, is left out: editing it changes nothing that runs).
operator_sources_hash() {
  (
    cd "$REPO"
    find operator -name '*.py' -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
    sha256sum pyproject.toml Dockerfile "$HERE/build-images.sh"
  ) | sha256sum | cut -c1-16
}

operator_archive() { echo "$IMAGES/miosa-operator-$(operator_sources_hash).tar"; }

operator_image() {
  local out base="$IMAGES/debian-$DEBIAN_SUITE" stamp work
  out="$(operator_archive)"
  stamp="$(operator_sources_hash) $DEBIAN_SUITE $OPERATOR_IMAGE"
  fresh "$out" "$stamp" && return
  log "building $OPERATOR_IMAGE"
  local t=$SECONDS
  work="$(mktemp -d "$IMAGES/.work-operator.XXXXXX")"
  # The project's wheel, as `pip install .` in the Dockerfile builds it.
  "$PYTHON" -m pip wheel --quiet --no-deps --disable-pip-version-check -w "$work/wheels" "$REPO" >/dev/null
  export WHEELS="$work/wheels"
  in_chroot "$work/build" "$base/build" "$work/build-upper" '
    python3 -m venv /opt/miosa
    /opt/miosa/bin/pip install --no-cache-dir --disable-pip-version-check --quiet /tmp/wheels/*.whl
    /opt/miosa/bin/pip uninstall -y --disable-pip-version-check --quiet pip'
  # COPY --from=build /opt/miosa /opt/miosa, then the Dockerfile's useradd.
  mkdir -p "$work/final-upper/opt"
  cp -a "$work/build-upper/opt/miosa" "$work/final-upper/opt/miosa"
  in_chroot "$work/final" "$base/final" "$work/final-upper" '
    useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin miosa
    /opt/miosa/bin/miosa-operator --help >/dev/null'
  oci layer "$work/final-upper" "$work/app.tar"
  cat >"$work/config.json" <<'EOF'
{
  "Env": ["PATH=/opt/miosa/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
          "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/tmp"],
  "User": "10001:10001",
  "Entrypoint": ["miosa-operator"],
  "Cmd": ["run", "--standalone"],
  "Labels": {
    "org.opencontainers.image.title": "miosa-operator",
    "org.opencontainers.image.description": "Immutable DeploymentVersions, promotion, rollback and retention for Kubernetes",
    "org.opencontainers.image.licenses": "Apache-2.0"
  }
}
EOF
  oci archive "$out" --name "$OPERATOR_IMAGE" --config "$work/config.json" "$base/final.tar" "$work/app.tar"
  echo "$stamp" >"$out.stamp"
  rm -rf "$work"
  log "$OPERATOR_IMAGE took $((SECONDS - t)) s"
}

paths() { printf '%s\n' "$IMAGES/pause.tar" "$IMAGES/testapp.tar" "$(operator_archive)"; }

main() {
  mkdir -p "$IMAGES"
  # Work directories of builds that died; a build running in another checkout is younger.
  find "$IMAGES" -maxdepth 1 -name '.work-*' -mmin +120 -exec rm -rf {} +
  local t=$SECONDS
  go_image pause miosa.local/pause:1 65535:65535
  go_image testapp miosa.local/testapp:1 65532:65532
  debian_rootfs
  operator_image
  ((SECONDS - t < 2)) || log "images ready in $IMAGES ($((SECONDS - t)) s)"
}

case "${1:-build}" in
  build) main ;;
  paths) paths ;;
  *) echo "usage: $0 [build|paths]" >&2; exit 2 ;;
esac
