#!/usr/bin/env bash
# `make kind`: the operator in a kind cluster, for machines with a container engine.
#
#   kind create cluster (reused when it exists) -> docker build (the Dockerfile)
#   -> kind load docker-image -> helm install (hack/kind-values.yaml) -> the examples
#
# Needs docker, kind, kubectl and helm on PATH (helm and kubectl from
# ~/.cache/miosa-operator/bin are used when present).  The local environment (`make dev`)
# needs none of them; this is the path for users who already run kind.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${MIOSA_CACHE:-$HOME/.cache/miosa-operator}"
CLUSTER="${KIND_CLUSTER:-miosa}"
IMAGE="ghcr.io/miosa/miosa-operator:0.1.0"
NAMESPACE=miosa-system
export PATH="$PATH:$CACHE/bin"

log() { printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
need() { command -v "$1" >/dev/null || { log "error: $1 not found (make kind needs docker, kind, kubectl, helm)"; exit 1; }; }

for tool in docker kind kubectl helm; do need "$tool"; done
docker info >/dev/null 2>&1 || { log "error: the docker engine does not answer"; exit 1; }

if ! kind get clusters | grep -qx "$CLUSTER"; then
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 120s
fi
CONTEXT="kind-$CLUSTER"
k() { kubectl --context "$CONTEXT" "$@"; }

log "building $IMAGE with the Dockerfile"
docker build -t "$IMAGE" "$REPO"
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "installing the chart"
helm --kube-context "$CONTEXT" upgrade --install miosa-operator "$REPO/charts/miosa-operator" \
  --namespace "$NAMESPACE" --create-namespace --values "$HERE/kind-values.yaml" --wait --timeout 300s

log "applying the examples"
k apply -f "$REPO/examples/00-namespace.yaml" -f "$REPO/examples/20-dynamic-app.yaml" -f "$REPO/examples/30-retention.yaml"
k -n demo wait --for=condition=Ready dver/hello-api-v1 --timeout=300s
k -n demo patch mdep hello-api --type merge -p '{"spec":{"promotedVersion":"hello-api-v1"}}'
k -n demo wait --for=condition=Ready mdep/hello-api --timeout=300s
k -n demo get mdep,dver,deploy,svc
cat <<EOT

The operator runs in kind cluster "$CLUSTER" (context $CONTEXT).
The static-site example needs its bundle uploaded first (see README).   Remove: kind delete cluster --name $CLUSTER
EOT
