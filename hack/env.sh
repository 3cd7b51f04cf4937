#!/usr/bin/env bash
# The local environment: a real Kubernetes control plane and a real S3 server on loopback.
#
#   hack/env.sh up               build (cached) and start everything, write a kubeconfig, print how to use it
#   hack/env.sh up --real-node   the same plus one real node (kubelet, containerd): hack/node.sh
#   hack/env.sh down             stop everything, leave no process behind
#   hack/env.sh status           say what runs
#
# etcd, kube-apiserver (TLS, RBAC, admission webhooks and policies, service-account tokens,
# a client certificate it presents to admission webhooks; ShardedListAndWatch on, for operator
# shards),
# kube-controller-manager, kube-scheduler, kwok with fake nodes (so pods of apps/v1
# Deployments become Ready) and versitygw (S3 over a local directory).
#
# Every process gets the state directory in its command line; `down` kills by pid file and
# then by that path, so a half-started environment from a crashed run is always cleaned.
# Data (etcd, S3 objects) is wiped on each `up`: the environment is disposable.  Certificates
# and keys are kept so a warm start does no crypto.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${MIOSA_CACHE:-$HOME/.cache/miosa-operator}"
BIN="$CACHE/bin"
ENV_DIR="${MIOSA_ENV_DIR:-$CACHE/env}"
PKI="$ENV_DIR/pki"
LOGS="$ENV_DIR/logs"
RUN="$ENV_DIR/run"

ETCD_PORT="${MIOSA_ETCD_PORT:-23790}"
APISERVER_PORT="${MIOSA_APISERVER_PORT:-16443}"
S3_PORT="${MIOSA_S3_PORT:-19000}"
KWOK_NODES="${MIOSA_KWOK_NODES:-2}"
S3_ACCESS_KEY="${MIOSA_DEV_S3_ACCESS_KEY:-miosa-dev}"
S3_SECRET_KEY="${MIOSA_DEV_S3_SECRET_KEY:-miosa-dev-secret-key}"
S3_BUCKETS=(miosa-releases miosa-logs miosa-uploads)
KUBECONFIG_FILE="$ENV_DIR/kubeconfig"
# shellcheck source=versions.env
source "$HERE/versions.env"
KWOK_STAGES="$CACHE/kwok-stages-$KWOK_VERSION.yaml"

log() { printf '[env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# ---------------------------------------------------------------- certificates
# Python 3.13+ verifies TLS strictly (VERIFY_X509_STRICT): the CA needs keyUsage, and every
# certificate key identifiers.  Bump the marker when the certificates' shape changes.
PKI_DONE="$PKI/.done-v2"

make_pki() {
  [[ -f "$PKI_DONE" ]] && return
  log "creating certificates in $PKI"
  rm -rf "$PKI" && mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=miosa-local-ca" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout ca.key -out ca.crt 2>/dev/null
    cat >apiserver.ext <<'EOF'
subjectAltName = DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    issue apiserver "/CN=kube-apiserver" apiserver.ext
    printf 'extendedKeyUsage = clientAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n' >client.ext
    issue admin "/O=system:masters/CN=miosa-admin" client.ext
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  touch "$PKI_DONE"
}

# The API server's identity towards admission webhooks: a CA of its own (webhooks trust only
# it, not the cluster CA that also signs the admin's certificate) and a client certificate
# it presents to every webhook (AdmissionConfiguration -> kubeConfigFile, user "*").
make_admission_pki() {
  [[ -f "$PKI/.admission-done-v2" ]] && return
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=miosa-admission-client-ca" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout admission-ca.key -out admission-ca.crt 2>/dev/null
    printf 'extendedKeyUsage = clientAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n' >admission-client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver-admission" \
      -keyout admission-client.key -out admission-client.csr 2>/dev/null
    openssl x509 -req -in admission-client.csr -CA admission-ca.crt -CAkey admission-ca.key \
      -CAcreateserial -days 3650 -extfile admission-client.ext -out admission-client.crt 2>/dev/null
    cat >admission-kubeconfig <<EOF
apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: $PKI/admission-client.crt
    client-key: $PKI/admission-client.key
EOF
    cat >admission-config.yaml <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $PKI/admission-kubeconfig
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $PKI/admission-kubeconfig
EOF
  )
  touch "$PKI/.admission-done-v2"
}

# issue NAME SUBJECT EXTFILE: a key and a certificate signed by the local CA.
issue() {
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile "$3" -out "$1.crt" 2>/dev/null
}

write_kubeconfig() {
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: miosa-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: miosa-admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: miosa-local
  context: {cluster: miosa-local, user: miosa-admin}
current-context: miosa-local
EOF
  chmod 600 "$KUBECONFIG_FILE"
}

# ---------------------------------------------------------------- processes
# launch NAME ARGS...: start a process in its own session, remember its pid.
launch() {
  local name="$1"; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# wait_for WHAT SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$what did not come up in ${limit}s; last log lines:"
      tail -n 20 "$LOGS/$what.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

apiserver_ready() {
  curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -q ok
}

s3() { # s3 METHOD PATH: a SigV4-signed request to the S3 server.
  curl -sf -X "$1" --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "http://127.0.0.1:$S3_PORT$2"
}

start_etcd() {
  launch etcd "$BIN/etcd" --name miosa --data-dir "$ENV_DIR/data/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "miosa=http://127.0.0.1:$((ETCD_PORT + 10))" \
    --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  launch kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --cert-dir "$ENV_DIR/data/apiserver" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode RBAC \
    --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,MutatingAdmissionPolicy,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,PodNodeSelector,PodTolerationRestriction \
    --admission-control-config-file "$PKI/admission-config.yaml" \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --enable-aggregator-routing=true \
    --endpoint-reconciler-type none \
    --feature-gates ShardedListAndWatch=true \
    --allow-privileged=true --profiling=false --v=1
  wait_for kube-apiserver 60 apiserver_ready
}

# Each controller acts as its own ServiceAccount (kube-system/<name>-controller, bootstrap
# RBAC), as in kubeadm clusters: admission sees e.g. the namespace controller as itself, not as
# a cluster admin.
start_controllers() {
  launch kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --controllers '*' --use-service-account-credentials \
    --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 --v=1
  launch kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 --v=1
  # kwok-faults.yaml: images whose pods fail like a real kubelet would say (health-gate tests).
  launch kwok "$BIN/kwok" --kubeconfig "$KUBECONFIG_FILE" --config "$KWOK_STAGES" --config "$HERE/kwok-faults.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --manage-nodes-with-label-selector "" \
    --node-ip 127.0.0.1 --cidr 10.244.0.0/16 --server-address "127.0.0.1:0"
}

create_nodes() {
  local i manifest=""
  for ((i = 0; i < KWOK_NODES; i++)); do
    manifest+="---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: '0'}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
status:
  allocatable: {cpu: '32', memory: 256Gi, pods: '250'}
  capacity: {cpu: '32', memory: 256Gi, pods: '250'}
"
  done
  wait_for kwok 30 kubectl_ get --raw /api/v1/namespaces/default/serviceaccounts/default
  printf '%s' "$manifest" | kubectl_ apply -f - >/dev/null
  wait_for kwok 30 nodes_ready
}

nodes_ready() {
  [[ "$(kubectl_ get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c True)" == "$KWOK_NODES" ]]
}

start_s3() {
  # The sidecar (object metadata) must not be inside the gateway's root directory.
  mkdir -p "$ENV_DIR/data/s3/root" "$ENV_DIR/data/s3/meta"
  launch versitygw env ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" \
    "$BIN/versitygw" --port "127.0.0.1:$S3_PORT" --region us-east-1 \
    posix --sidecar "$ENV_DIR/data/s3/meta" "$ENV_DIR/data/s3/root"
  wait_for versitygw 30 s3 GET /
  local b
  for b in "${S3_BUCKETS[@]}"; do s3 PUT "/$b" >/dev/null; done
}

write_env_file() {
  cat >"$ENV_DIR/env" <<EOF
export KUBECONFIG=$KUBECONFIG_FILE
export MIOSA_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export MIOSA_S3_REGION=us-east-1
export MIOSA_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY
export MIOSA_S3_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export MIOSA_ENV_DIR=$ENV_DIR
export PATH=$BIN:\$PATH
EOF
  if [[ $REAL_NODE == 1 ]]; then "$HERE/node.sh" env >>"$ENV_DIR/env"; fi
}

# ---------------------------------------------------------------- commands
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok versitygw)

running() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  apiserver_ready
}

cmd_down() {
  local f pid
  # The real node first: its containers are found by cgroup, not by command line.
  if [[ -d "$ENV_DIR/node" ]]; then "$HERE/node.sh" down >/dev/null 2>&1 || true; fi
  # Every pid file: the components, and anything else started into this environment
  # (hack/dev.sh adds the operator).
  for f in "$RUN"/*.pid; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  # Anything else started from this state directory (a crashed run's leftovers, an operator).
  pkill -TERM -f -- "$ENV_DIR/" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while pgrep -f -- "$ENV_DIR/" >/dev/null 2>&1 || any_pid_alive; do
    ((SECONDS >= deadline)) && break
    sleep 0.2
  done
  pkill -KILL -f -- "$ENV_DIR/" 2>/dev/null || true
  for f in "$RUN"/*.pid; do
    if [[ -f "$f" ]]; then kill -KILL -- "-$(cat "$f")" 2>/dev/null || true; fi
  done
  rm -rf "$RUN"
  log "stopped"
}

any_pid_alive() {
  local f
  for f in "$RUN"/*.pid; do
    [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null && return 0
  done
  return 1
}

cmd_up() {
  local start=$SECONDS
  if running; then
    if [[ $REAL_NODE == 1 ]]; then
      "$HERE/node.sh" up
      write_env_file
    fi
    log "already running"
    print_usage
    return
  fi
  "$HERE/build-binaries.sh"
  cmd_down >/dev/null 2>&1 || true
  rm -rf "$ENV_DIR/data" "$LOGS"
  mkdir -p "$ENV_DIR/data" "$LOGS" "$RUN"
  make_pki
  make_admission_pki
  write_kubeconfig
  write_env_file
  # A start that fails half-way must not leave processes behind.
  trap 'log "start failed; cleaning up"; cmd_down >/dev/null 2>&1' ERR
  start_s3 &
  local s3_job=$!
  start_etcd
  start_apiserver
  start_controllers
  create_nodes
  wait "$s3_job" || { cmd_down >/dev/null 2>&1; die "S3 server failed"; }
  if [[ $REAL_NODE == 1 ]]; then "$HERE/node.sh" up; fi
  trap - ERR
  log "environment up in $((SECONDS - start)) s"
  print_usage
}

print_usage() {
  cat <<EOF
The local environment is running. Use it with:

  source $ENV_DIR/env        # or: export KUBECONFIG=$KUBECONFIG_FILE
  kubectl get nodes

S3: http://127.0.0.1:$S3_PORT (access key $S3_ACCESS_KEY), buckets: ${S3_BUCKETS[*]}
Logs: $LOGS    Stop: hack/env.sh down
EOF
}

cmd_status() {
  local c
  for c in "${COMPONENTS[@]}"; do
    if alive "$c"; then echo "$c: running (pid $(cat "$RUN/$c.pid"))"; else echo "$c: stopped"; fi
  done
  if [[ -d "$ENV_DIR/node" ]]; then "$HERE/node.sh" status; fi
}

REAL_NODE=0
[[ "${2:-}" == --real-node ]] && REAL_NODE=1

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up [--real-node]|down|status" >&2; exit 2 ;;
esac
