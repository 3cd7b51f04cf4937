#!/usr/bin/env bash
# Build, once, every binary the local environment needs, from the Go module proxy with the
# installed Go toolchain, into a cache outside the repository.
#
# Why this shape: there is no Docker engine or download site here, so kind/k3d and envtest's
# tarballs are out.  `go install k8s.io/kubernetes/cmd/...` is refused because that module
# carries a replace block, so we write a tiny go.mod of our own that requires it and points
# each staging module k8s.io/X at its published v0.Y.Z.  etcd's main module has the same
# problem; a three-line main.go around etcdmain.Main avoids it.
#
# Each binary lands in $MIOSA_CACHE/bin and is skipped when already built for the pinned
# version (a stamp file records it), so a warm run takes a second.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE="${MIOSA_CACHE:-$HOME/.cache/miosa-operator}"
BIN="$CACHE/bin"
SRC="$CACHE/src"
mkdir -p "$BIN" "$SRC"
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# built NAME STAMP: true when $BIN/NAME exists and was built from STAMP.
built() { [[ -x "$BIN/$1" && "$(cat "$BIN/.$1.stamp" 2>/dev/null)" == "$2" ]]; }
mark() { echo "$2" >"$BIN/.$1.stamp"; }

build_kubernetes() {
  local stamp="k8s-$K8S_VERSION"
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
  local missing=0
  for n in "${names[@]}"; do built "$n" "$stamp" || missing=1; done
  [[ $missing == 0 ]] && { log "kubernetes $K8S_VERSION cached"; return; }

  local dir="$SRC/kubernetes-$K8S_VERSION" minor="${K8S_VERSION#*.}"
  minor="${minor%%.*}"
  mkdir -p "$dir"
  log "kubernetes v$K8S_VERSION: resolving modules"
  (
    cd "$dir"
    go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null
    local upstream
    upstream="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.mod"
    {
      echo "module miosa.local/kubernetes-build"
      echo
      echo "go $(awk '/^go /{print $2; exit}' "$upstream")"
      echo
      echo "require k8s.io/kubernetes v$K8S_VERSION"
      echo
      echo "replace ("
      # Every `k8s.io/X => ./staging/src/k8s.io/X` becomes `k8s.io/X => k8s.io/X v0.<minor>.<patch>`.
      sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$upstream" |
        while read -r mod; do echo "	$mod => $mod v0.${K8S_VERSION#*.}"; done
      echo ")"
    } >go.mod
    echo 'package tools' >tools.go
    go mod download all >/dev/null 2>&1 || true
  )
  local commit date pkg="k8s.io/component-base/version" cpkg="k8s.io/client-go/pkg/version"
  commit="$(printf 'v%s' "$K8S_VERSION" | sha1sum | cut -c1-40)"
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="-s -w"
  for p in "$pkg" "$cpkg"; do
    ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date -X $p.gitCommit=$commit"
  done
  local t
  for n in "${names[@]}"; do
    built "$n" "$stamp" && continue
    log "building $n v$K8S_VERSION"
    t=$SECONDS
    (cd "$dir" && go build -mod=mod -ldflags "$ld" -o "$BIN/$n" "k8s.io/kubernetes/cmd/$n")
    mark "$n" "$stamp"
    log "$n took $((SECONDS - t)) s"
  done
}

build_etcd() {
  local stamp="etcd-$ETCD_VERSION"
  built etcd "$stamp" && { log "etcd $ETCD_VERSION cached"; return; }
  local dir="$SRC/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  log "building etcd v$ETCD_VERSION"
  (
    cd "$dir"
    cat >main.go <<'EOF'
// The etcd server, built from go.etcd.io/etcd/server/v3 (its own main module has replaces).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    [[ -f go.mod ]] || go mod init miosa.local/etcd-build >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
    go mod tidy >/dev/null
    go build -ldflags "-s -w" -o "$BIN/etcd" .
  )
  mark etcd "$stamp"
}

build_kwok() {
  local stamp="kwok-$KWOK_VERSION"
  built kwok "$stamp" && { log "kwok $KWOK_VERSION cached"; return; }
  log "building kwok v$KWOK_VERSION"
  GOBIN="$BIN" go install \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  mark kwok "$stamp"
}

# kwok needs Stage definitions (what happens to fake nodes and pods); the "fast" set ships
# in the same module, so take it from there: nodes become Ready, pods Running and Ready.
kwok_stages() {
  local out="$CACHE/kwok-stages-$KWOK_VERSION.yaml"
  [[ -s "$out" ]] && return
  local dir
  dir="$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION/kustomize/stage"
  [[ -d "$dir" ]] || go mod download "sigs.k8s.io/kwok@v$KWOK_VERSION" 2>/dev/null ||
    (cd "$SRC" && GOFLAGS=-mod=mod go mod download -x "sigs.k8s.io/kwok@v$KWOK_VERSION" >/dev/null 2>&1)
  local f tmp="$out.tmp"
  : >"$tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    { echo "---"; cat "$dir/$f"; } >>"$tmp"
  done
  mv "$tmp" "$out"
}

build_versitygw() {
  local stamp="versitygw-$VERSITYGW_VERSION"
  built versitygw "$stamp" && { log "versitygw $VERSITYGW_VERSION cached"; return; }
  log "building versitygw v$VERSITYGW_VERSION"
  GOBIN="$BIN" go install \
    -ldflags "-s -w -X main.Version=v$VERSITYGW_VERSION -X main.Build=release -X main.BuildTime=$(date -u +%Y-%m-%d)" \
    "github.com/versity/versitygw/cmd/versitygw@v$VERSITYGW_VERSION"
  mark versitygw "$stamp"
}

build_helm() {
  local stamp="helm-$HELM_VERSION"
  built helm "$stamp" && { log "helm $HELM_VERSION cached"; return; }
  log "building helm v$HELM_VERSION"
  # Like helm's own Makefile: the version, and the Kubernetes version `helm template` assumes
  # without a cluster (otherwise v1.20), taken from the client-go helm is built with.
  local mod minor ld="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  mod="$(cd "$SRC" && go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  minor="$(awk '$1 == "k8s.io/client-go" {split($2, v, "."); print v[2]; exit}' "$mod")"
  if [[ -n "$minor" ]]; then
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
    done
  fi
  GOBIN="$BIN" go install -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  mark helm "$stamp"
}

# ---------------------------------------------------------------- the real node (hack/node.sh)
# containerd (daemon, runc shim, ctr) from its own module: no replace block, no cgo needed
# without the btrfs snapshotter.
build_containerd() {
  local stamp="containerd-$CONTAINERD_VERSION" n names=(containerd containerd-shim-runc-v2 ctr) pkgs=()
  for n in "${names[@]}"; do built "$n" "$stamp" || pkgs+=("github.com/containerd/containerd/v2/cmd/$n@v$CONTAINERD_VERSION"); done
  ((${#pkgs[@]})) || { log "containerd $CONTAINERD_VERSION cached"; return; }
  log "building containerd v$CONTAINERD_VERSION"
  GOBIN="$BIN" go install -tags "no_btrfs urfave_cli_no_docs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" "${pkgs[@]}"
  for n in "${names[@]}"; do mark "$n" "$stamp"; done
}

# runc needs cgo (its nsenter is C) and libseccomp for seccomp profiles; the Debian packages
# are installed by hack/host-packages.sh.  Without the libpathrs tag it uses its pure-Go path code.
build_runc() {
  local stamp="runc-$RUNC_VERSION"
  built runc "$stamp" && { log "runc $RUNC_VERSION cached"; return; }
  "$HERE/host-packages.sh" libseccomp-dev pkg-config
  log "building runc v$RUNC_VERSION"
  CGO_ENABLED=1 GOBIN="$BIN" go install -tags "seccomp urfave_cli_no_docs" \
    -ldflags "-s -w -X main.version=$RUNC_VERSION" "github.com/opencontainers/runc@v$RUNC_VERSION"
  mark runc "$stamp"
}

# The CNI plugins the node's network uses, in a directory of their own (containerd's bin_dirs).
build_cni() {
  local stamp="cni-$CNI_PLUGINS_VERSION" mod="github.com/containernetworking/plugins/plugins"
  [[ -x "$BIN/cni/bridge" && "$(cat "$BIN/.cni.stamp" 2>/dev/null)" == "$stamp" ]] &&
    { log "CNI plugins $CNI_PLUGINS_VERSION cached"; return; }
  log "building CNI plugins v$CNI_PLUGINS_VERSION"
  mkdir -p "$BIN/cni"
  GOBIN="$BIN/cni" go install -ldflags "-s -w" \
    "$mod/main/bridge@v$CNI_PLUGINS_VERSION" "$mod/main/loopback@v$CNI_PLUGINS_VERSION" \
    "$mod/ipam/host-local@v$CNI_PLUGINS_VERSION"
  mark cni "$stamp"
}

# timed NAME FUNCTION: run a build step and record how long it took (README's figures).
timed() {
  local t=$SECONDS
  "$2"
  ((SECONDS - t < 2)) || log "$1 took $((SECONDS - t)) s"
}

# kstatus: a small main around sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute (source in
# hack/kstatus), so tests check our conditions against the library GitOps tools use.
build_kstatus() {
  local stamp
  stamp="kstatus-$CLI_UTILS_VERSION-$(sha256sum "$HERE/kstatus/main.go" | cut -c1-12)"
  built kstatus "$stamp" && { log "kstatus (cli-utils $CLI_UTILS_VERSION) cached"; return; }
  local dir="$SRC/kstatus-$CLI_UTILS_VERSION"
  log "building kstatus (cli-utils v$CLI_UTILS_VERSION)"
  mkdir -p "$dir"
  cp "$HERE/kstatus/main.go" "$dir/main.go"
  (
    cd "$dir"
    [[ -f go.mod ]] || go mod init miosa.local/kstatus >/dev/null 2>&1
    go get "sigs.k8s.io/cli-utils@v$CLI_UTILS_VERSION" >/dev/null
    go mod tidy >/dev/null
    go build -ldflags "-s -w" -o "$BIN/kstatus" .
  )
  mark kstatus "$stamp"
}

# Flux's source-controller and kustomize-controller, run as local processes by the GitOps
# e2e tests.  Their main modules carry replace blocks (`./api` and a few pins), so, as for
# Kubernetes, a go.mod of our own takes theirs whole (same requires and pins, so the same
# dependency versions), points `./api` at the published api module and requires the
# controller; only the two main packages are built.  Their CRDs come from the same modules.
# flux-health (hack/flux-health) is built in the kustomize-controller module, so it
# evaluates healthCheckExprs with exactly that controller's code.
build_flux() {
  local stamp="flux-source-$FLUX_SOURCE_CONTROLLER_VERSION-kustomize-$FLUX_KUSTOMIZE_CONTROLLER_VERSION"
  local crds="$CACHE/flux-crds-$FLUX_SOURCE_CONTROLLER_VERSION-$FLUX_KUSTOMIZE_CONTROLLER_VERSION"
  local health_stamp
  health_stamp="$stamp-$(sha256sum "$HERE/flux-health/main.go" | cut -c1-12)"
  if built source-controller "$stamp" && built kustomize-controller "$stamp" &&
    built flux-health "$health_stamp" && [[ -f "$crds/.done" ]]; then
    log "flux controllers cached"
    return
  fi
  local ctl version dir upstream
  mkdir -p "$crds"
  for ctl in source-controller kustomize-controller; do
    version="$FLUX_SOURCE_CONTROLLER_VERSION"
    [[ $ctl == kustomize-controller ]] && version="$FLUX_KUSTOMIZE_CONTROLLER_VERSION"
    dir="$SRC/flux-$ctl-$version"
    mkdir -p "$dir"
    upstream="$(cd "$SRC" && go mod download -json "github.com/fluxcd/$ctl@v$version" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
    install -m 644 "$upstream"/config/crd/bases/*.yaml "$crds/"
    (
      cd "$dir"
      {
        sed -e "s#^module .*#module miosa.local/flux-$ctl-build#" -e '\#=> \./api#d' "$upstream/go.mod"
        echo "require github.com/fluxcd/$ctl v$version"
      } >go.mod
      install -m 644 "$upstream/go.sum" go.sum
      if ! built "$ctl" "$stamp"; then
        log "building flux $ctl v$version"
        go build -mod=mod -ldflags "-s -w" -o "$BIN/$ctl" "github.com/fluxcd/$ctl"
        mark "$ctl" "$stamp"
      fi
      if [[ $ctl == kustomize-controller ]] && ! built flux-health "$health_stamp"; then
        log "building flux-health"
        mkdir -p fluxhealth && cp "$HERE/flux-health/main.go" fluxhealth/main.go
        go build -mod=mod -ldflags "-s -w" -o "$BIN/flux-health" ./fluxhealth
        mark flux-health "$health_stamp"
      fi
    )
  done
  touch "$crds/.done"
}

# `hack/build-binaries.sh kstatus flux`: only those (the names of the build_* functions).
if (($#)); then
  for name; do "build_$name"; done
  exit
fi

start=$SECONDS
build_etcd
build_versitygw
build_kwok
kwok_stages
build_kubernetes
build_helm
timed containerd build_containerd
timed runc build_runc
timed cni build_cni
timed kstatus build_kstatus
timed flux build_flux
log "all binaries ready in $BIN ($((SECONDS - start)) s)"
