#!/usr/bin/env bash
# `make dev`: the local environment plus the CRDs, the operator and the examples.
#
#   hack/dev.sh up     start (or reuse) the environment, install CRDs, run the operator, apply examples
#   hack/dev.sh down   stop everything (same as hack/env.sh down)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${MIOSA_CACHE:-$HOME/.cache/miosa-operator}"
ENV_DIR="${MIOSA_ENV_DIR:-$CACHE/env}"
VENV="${VENV:-$REPO/.venv}"

log() { printf '[dev %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

up() {
  "$HERE/env.sh" up >/dev/null
  # shellcheck disable=SC1091
  source "$ENV_DIR/env"
  kubectl apply --server-side --force-conflicts -f "$REPO/crds/" >/dev/null
  kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
  start_operator
  upload_examples
  # Established is not yet served everywhere on a fresh, busy API server: the CRD handler
  # answers 503 "Resource kind ... not found" for a moment, so the apply is retried.
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    kubectl apply -f "$REPO/examples/" >/dev/null 2>"$ENV_DIR/examples-apply.err" && break
    ((attempt < 10)) || { cat "$ENV_DIR/examples-apply.err" >&2; return 1; }
    sleep 2
  done
  log "examples applied; waiting for them to become ready"
  kubectl -n demo wait --for=condition=Ready dver --all --timeout=180s || true
  # Promotion is a separate step by design: only ready versions can go live.
  "$VENV/bin/kubectl-miosa" -n demo promote hello-site hello-site-v1 --reason "first launch" --wait --timeout 120 || true
  "$VENV/bin/kubectl-miosa" -n demo promote hello-api hello-api-v1 --reason "first launch" --wait --timeout 120 || true
  kubectl -n demo get mdep,dver,deploy,svc
  cat <<EOT

Everything runs on loopback. Try:
  source $ENV_DIR/env
  kubectl -n demo get dver -l deploy.miosa.io/external-workspace-id=dental-office-123
Operator log: $ENV_DIR/logs/operator.log      Stop: make down
EOT
}

# The operator runs as it does in a cluster: under its own ServiceAccount with the packaged
# least-privilege role (the admission policies know it by that name), behind the chart's
# admission configuration pointed at loopback, with the API server's client certificate
# required (hack/env.sh made the admission client CA).
start_operator() {
  local pidfile="$ENV_DIR/run/operator.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "operator already running (pid $(cat "$pidfile"))"
    return
  fi
  local port="${MIOSA_WEBHOOK_PORT:-9443}" webhook="$ENV_DIR/webhook"
  kubectl create namespace miosa-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl apply -f "$REPO/manifests/operator/serviceaccount.yaml" -f "$REPO/manifests/operator/rbac.yaml" >/dev/null
  operator_kubeconfig >"$ENV_DIR/operator.kubeconfig"
  if [[ ! -f "$webhook/tls.key" ]]; then
    mkdir -p "$webhook"
    "$VENV/bin/python" -c 'import sys; from pathlib import Path; from miosa_operator.webhook import self_signed; self_signed(["127.0.0.1"], Path(sys.argv[1]))' "$webhook"
  fi
  "$VENV/bin/python" "$HERE/local-admission.py" --url "https://127.0.0.1:$port/promotion" --ca "$webhook/tls.crt" |
    kubectl apply --server-side --force-conflicts --field-manager=miosa-local-admission -f - >/dev/null
  log "starting the operator (releases in s3://miosa-releases, webhook on 127.0.0.1:$port)"
  KUBECONFIG="$ENV_DIR/operator.kubeconfig" \
  MIOSA_RELEASES_URI="${MIOSA_RELEASES_URI:-s3://miosa-releases}" \
  MIOSA_WEBHOOK_ADDR=127.0.0.1 MIOSA_WEBHOOK_PORT="$port" \
  MIOSA_WEBHOOK_CERT="$webhook/tls.crt" MIOSA_WEBHOOK_KEY="$webhook/tls.key" MIOSA_WEBHOOK_CA="$webhook/tls.crt" \
  MIOSA_WEBHOOK_CLIENT_CA="$ENV_DIR/pki/admission-ca.crt" MIOSA_WEBHOOK_CLIENT_NAMES=kube-apiserver-admission \
  MIOSA_WEBHOOK_CONFIGURATION=miosa-operator \
    setsid "$VENV/bin/miosa-operator" run --standalone >"$ENV_DIR/logs/operator.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# A kubeconfig for ServiceAccount miosa-system/miosa-operator (a bound token, 24 h).
operator_kubeconfig() {
  local token server
  token="$(kubectl -n miosa-system create token miosa-operator --duration=24h)"
  server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  cat <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: '$server', certificate-authority: '$ENV_DIR/pki/ca.crt'}}]
users: [{name: miosa-operator, user: {token: '$token'}}]
contexts: [{name: miosa-operator, context: {cluster: local, user: miosa-operator, namespace: miosa-system}}]
current-context: miosa-operator
EOF
}

upload_examples() {
  "$VENV/bin/python" - "$REPO/examples/bundles" <<'PY'
import os, pathlib, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["MIOSA_S3_ENDPOINT"], region_name=os.environ["MIOSA_S3_REGION"],
                  aws_access_key_id=os.environ["MIOSA_S3_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["MIOSA_S3_SECRET_ACCESS_KEY"],
                  config=Config(s3={"addressing_style": "path"}))
# Into the tenant's own upload prefix (<uploads>/<namespace>/): the only place its versions may name.
for bundle in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    s3.put_object(Bucket="miosa-uploads", Key=f"demo/{bundle.name}", Body=bundle.read_bytes())
PY
}

case "${1:-}" in
  up) up ;;
  down) "$HERE/env.sh" down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
