#!/usr/bin/env bash
# The real node: one kubelet with containerd, runc and CNI beside kwok's fake nodes.
#
#   hack/node.sh up       start it in a running environment (hack/env.sh up --real-node does)
#   hack/node.sh down     stop it and remove everything it made on the host
#   hack/node.sh status   say whether it runs
#   hack/node.sh images   rebuild the images when their inputs changed and import them again
#   hack/node.sh env      the variables hack/env.sh adds to the environment file
#
# Pods run for real only where they are sent: the node carries the label and the taint
# `node.miosa.io/real=true` (NoSchedule); a namespace annotated with a default node selector
# and toleration (the API server's PodNodeSelector and PodTolerationRestriction admission
# plugins; tests/e2e/realnode.py `steer_to_real_node`) sends all its pods there.
# Everything else stays on kwok.
#
# Side by side with other environments: every host-wide name derives from the environment's
# API server port, which no two environments share (dev 16443, bench 16543, test slots
# 17000-17009): bridge `mio<port>`, subnet 10.X.Y.0/24, nftables table `miosa_<port>`,
# cgroup `/miosa-<port>`, CNI network `miosa-<port>`.  The kubelet listens on the node's own
# address (the bridge's gateway), so its ports never clash either.
#
# Leaving nothing behind: containerd and the kubelet share a private mount namespace in which
# /run is a tmpfs and /var an overlay whose writes land in the node's directory; every mount
# they make (container root filesystems, volumes, network namespaces' bind mounts) lives and
# dies with that namespace, and the paths that cannot be configured (/run/containerd/s,
# /var/lib/cni, /var/log/containers) never touch the host.  Pods run under the cgroup
# /miosa-<port>, so `down` kills every container process by cgroup, not by name.
#
# How pods reach the host's loopback-only servers: nftables DNATs, from the bridge only,
# the `kubernetes` Service (10.0.0.1:443) to the API server, and <gateway>:<port> to
# 127.0.0.1:<port> for the S3 server and MIOSA_NODE_HOST_PORTS (route_localnet on the
# bridge); the same ports DNAT for the host's own connections to the gateway, so one URL
# (e.g. MIOSA_S3_ENDPOINT) serves host processes and pods alike.  The host reaches pods directly on the bridge, and the API server calls webhooks
# on pod addresses (--enable-aggregator-routing).  There is no kube-proxy and no cluster DNS:
# kube-proxy's iptables chains (and nftables table) have fixed host-wide names, which two
# environments would fight over.  So pods cannot reach other Services by ClusterIP or name;
# giving the node a network namespace of its own per environment, with kube-proxy and a DNS
# server inside it, would lift that.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${MIOSA_CACHE:-$HOME/.cache/miosa-operator}"
BIN="$CACHE/bin"
ENV_DIR="${MIOSA_ENV_DIR:-$CACHE/env}"
PKI="$ENV_DIR/pki"
LOGS="$ENV_DIR/logs"
RUN="$ENV_DIR/run"
NODE_DIR="$ENV_DIR/node"
KUBECONFIG_FILE="$ENV_DIR/kubeconfig"
APISERVER_PORT="${MIOSA_APISERVER_PORT:-16443}"
S3_PORT="${MIOSA_S3_PORT:-19000}"
# More of the host's loopback ports pods may reach at the gateway, e.g. the artifact endpoint
# of an operator running on the host (comma-separated; tests/e2e/slots.py sets its own).
HOST_PORTS_LIST="${MIOSA_NODE_HOST_PORTS:-}"
read -r -a HOST_PORTS <<<"${HOST_PORTS_LIST//,/ }"

ID="$APISERVER_PORT"
NODE_NAME="real-node"
NODE_LABEL="node.miosa.io/real"
BRIDGE="mio$ID"
TABLE="miosa_$ID"
CGROUP="miosa-$ID"
NETWORK="miosa-$ID"
SUBNET="${MIOSA_NODE_SUBNET:-10.$((100 + (ID >> 8) % 100)).$((ID & 255))}" # a /24
GATEWAY="$SUBNET.1"
SERVICE_IP=10.0.0.1 # the `kubernetes` Service (hack/env.sh: --service-cluster-ip-range 10.0.0.0/24)
CGROUP_CONTROLLERS=(cpu cpuacct cpuset memory pids blkio devices freezer systemd unified)
SANDBOX_IMAGE=miosa.local/pause:1

log() { printf '[node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
ctr_() { "$BIN/ctr" --address "$NODE_DIR/containerd.sock" --namespace k8s.io "$@"; }
alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# ---------------------------------------------------------------- host network
network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$GATEWAY/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Let DNAT to 127.0.0.1 route packets that came in on this bridge (and only this one).
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  nft delete table ip "$TABLE" 2>/dev/null || true
  nft -f - <<EOF
table ip $TABLE {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "$BRIDGE" ip daddr $SERVICE_IP tcp dport 443 dnat to 127.0.0.1:$APISERVER_PORT
    iifname "$BRIDGE" ip daddr $GATEWAY tcp dport $S3_PORT dnat to 127.0.0.1:$S3_PORT
$(for port in "${HOST_PORTS[@]}"; do
    echo "    iifname \"$BRIDGE\" ip daddr $GATEWAY tcp dport $port dnat to 127.0.0.1:$port"
  done)
  }
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr $GATEWAY tcp dport $S3_PORT dnat to 127.0.0.1:$S3_PORT
$(for port in "${HOST_PORTS[@]}"; do
    echo "    ip daddr $GATEWAY tcp dport $port dnat to 127.0.0.1:$port"
  done)
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$BRIDGE" oifname != "$BRIDGE" drop
    oifname "$BRIDGE" iifname != "$BRIDGE" drop
  }
}
EOF
}

network_down() {
  nft delete table ip "$TABLE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
}

# ---------------------------------------------------------------- cgroups
cgroups_up() {
  local c dir
  for c in "${CGROUP_CONTROLLERS[@]}"; do
    dir="/sys/fs/cgroup/$c/$CGROUP"
    [[ -d "/sys/fs/cgroup/$c" ]] || continue
    mkdir -p "$dir"
  done
  # A v1 cpuset cgroup starts with no CPUs and no memory nodes: give it its parent's.
  if [[ -d /sys/fs/cgroup/cpuset/$CGROUP ]]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$CGROUP/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$CGROUP/cpuset.mems"
  fi
}

# Every process of every pod: the pids in any cgroup under ours.
pod_pids() {
  local c
  for c in "${CGROUP_CONTROLLERS[@]}"; do
    [[ -d "/sys/fs/cgroup/$c/$CGROUP" ]] || continue
    find "/sys/fs/cgroup/$c/$CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}

cgroups_down() {
  local c pids tries=10
  while ((tries--)); do
    pids="$(pod_pids)"
    [[ -z "$pids" ]] && break
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  done
  for c in "${CGROUP_CONTROLLERS[@]}"; do
    [[ -d "/sys/fs/cgroup/$c/$CGROUP" ]] || continue
    find "/sys/fs/cgroup/$c/$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

# ---------------------------------------------------------------- identity and config
node_pki() {
  [[ -f "$PKI/node.crt" ]] && return
  (
    cd "$PKI"
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:nodes/CN=system:node:$NODE_NAME" \
      -keyout node.key -out node.csr 2>/dev/null
    printf 'extendedKeyUsage = clientAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n' >node.ext
    openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile node.ext -out node.crt 2>/dev/null
  )
}

write_configs() {
  mkdir -p "$NODE_DIR"/{cni,cni-ipam,containerd,kubelet,pod-logs,var/upper,var/work,runc}
  cat >"$NODE_DIR/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: miosa-local
  cluster: {server: 'https://127.0.0.1:$APISERVER_PORT', certificate-authority: '$PKI/ca.crt'}
users:
- name: $NODE_NAME
  user: {client-certificate: '$PKI/node.crt', client-key: '$PKI/node.key'}
contexts:
- name: $NODE_NAME
  context: {cluster: miosa-local, user: $NODE_NAME}
current-context: $NODE_NAME
EOF
  cat >"$NODE_DIR/containerd.toml" <<EOF
version = 3
root = '$NODE_DIR/containerd/root'
state = '$NODE_DIR/containerd/state'
# opt would create /opt/containerd; NRI would listen on /var/run/nri.
disabled_plugins = ['io.containerd.internal.v1.opt', 'io.containerd.nri.v1.nri']

[grpc]
  address = '$NODE_DIR/containerd.sock'

[ttrpc]
  address = '$NODE_DIR/containerd.sock.ttrpc'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$SANDBOX_IMAGE'

[plugins.'io.containerd.cri.v1.runtime']
  # This machine withholds CAP_SYS_RESOURCE even from root, so no process may lower its
  # oom_score_adj below where it started (0); the sandbox's -998 and Guaranteed pods' -997
  # would make runc fail.  Clamp them to containerd's own value, as rootless setups do.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = '$BIN/runc'
      Root = '$NODE_DIR/runc'
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['$BIN/cni']
    conf_dir = '$NODE_DIR/cni'

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
EOF
  cat >"$NODE_DIR/cni/10-miosa.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$SUBNET.0/24", "gateway": "$GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE_DIR/cni-ipam"
      }
    }
  ]
}
EOF
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine's cgroup hierarchy is v1, which the kubelet refuses unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
containerRuntimeEndpoint: unix://$NODE_DIR/containerd.sock
address: $GATEWAY
healthzBindAddress: $GATEWAY
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
podLogsDir: $NODE_DIR/pod-logs
registerWithTaints:
- {key: $NODE_LABEL, value: "true", effect: NoSchedule}
failSwapOn: false
protectKernelDefaults: true
volumePluginDir: $NODE_DIR/volume-plugins
maxPods: 60
serializeImagePulls: false
kubeAPIQPS: 50
kubeAPIBurst: 100
syncFrequency: 10s
# The images are imported, never pulled: image garbage collection would lose them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
}

# ---------------------------------------------------------------- processes
launch() {
  local name="$1"; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

wait_for() {
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$what did not come up in ${limit}s; last log lines:"
      tail -n 30 "$LOGS/$what.log" >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

# The kernel settings the kubelet wants (cm.setupKernelTunables); unless they already have
# these values it writes them host-wide (panic_on_oops=1 on a shared machine!).  Inside the
# node's namespace each is a file holding its value, and protectKernelDefaults makes the
# kubelet refuse rather than write should one ever differ.
KUBELET_SYSCTLS=(vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000)

# Run as the first process of the node's mount namespace (see the header), then become $@.
namespace_init() {
  local setting file
  mount -t tmpfs -o mode=0755 miosa-node-run /run
  mount -t overlay miosa-node-var \
    -o "lowerdir=/var,upperdir=$NODE_DIR/var/upper,workdir=$NODE_DIR/var/work" /var
  mkdir -p "$NODE_DIR/sysctl"
  for setting in "${KUBELET_SYSCTLS[@]}"; do
    file="$NODE_DIR/sysctl/${setting%%=*}"
    mkdir -p "$(dirname "$file")"
    echo "${setting#*=}" >"$file"
    mount --bind "$file" "/proc/sys/${setting%%=*}"
  done
  exec "$@"
}

start_containerd() {
  launch containerd unshare --mount --propagation private -- \
    "$HERE/node.sh" _namespace_init "$BIN/containerd" --config "$NODE_DIR/containerd.toml"
  wait_for containerd 30 ctr_ version
}

import_images() {
  local archive
  while read -r archive; do
    # ctr warns on every call that cgroup v1 is deprecated: keep that out of the way.
    ctr_ images import "$archive" >/dev/null 2>>"$LOGS/ctr.log" ||
      { tail -n 5 "$LOGS/ctr.log" >&2; return 1; }
  done < <("$HERE/build-images.sh" paths)
}

start_kubelet() {
  local ns
  ns="/proc/$(cat "$RUN/containerd.pid")/ns/mnt"
  # PATH without sbin: a host with iptables installed would otherwise get the kubelet's
  # host-wide KUBE-* chains; this node needs none (see the header).
  launch kubelet nsenter --mount="$ns" -- env PATH="/usr/local/bin:/usr/bin:/bin" \
    "$BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" --kubeconfig "$NODE_DIR/kubelet.kubeconfig" \
    --root-dir "$NODE_DIR/kubelet" --hostname-override "$NODE_NAME" --node-ip "$GATEWAY" \
    --node-labels "$NODE_LABEL=true" --v=1
  wait_for kubelet 90 node_ready
}

node_ready() {
  [[ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

authorize_node() {
  # No Node authorizer here (RBAC only): bind the kubelet's user to the system:node role.
  kubectl_ create clusterrolebinding miosa-real-node --clusterrole system:node \
    --user "system:node:$NODE_NAME" --dry-run=client -o yaml | kubectl_ apply -f - >/dev/null
}

# ---------------------------------------------------------------- commands
cmd_up() {
  local start=$SECONDS
  if alive kubelet && alive containerd && node_ready; then
    log "real node already running"
    return
  fi
  [[ -f "$KUBECONFIG_FILE" ]] || die "no environment in $ENV_DIR: start it with hack/env.sh up --real-node"
  "$HERE/host-packages.sh" nftables
  "$HERE/build-images.sh"
  cmd_down >/dev/null 2>&1 || true
  mkdir -p "$LOGS" "$RUN"
  trap 'log "start failed; cleaning up"; cmd_down >/dev/null 2>&1' ERR
  network_up
  cgroups_up
  node_pki
  write_configs
  authorize_node
  start_containerd
  local t=$SECONDS
  import_images
  log "images imported in $((SECONDS - t)) s"
  start_kubelet
  trap - ERR
  log "real node $NODE_NAME ($GATEWAY, pods in $SUBNET.0/24) up in $((SECONDS - start)) s"
}

cmd_down() {
  local name pid
  # The kubelet first, so it restarts nothing; then every container; then containerd and
  # its shims (their command lines name this directory).
  if alive kubelet; then kill -TERM "$(cat "$RUN/kubelet.pid")" 2>/dev/null || true; fi
  pkill -KILL -f -- "$NODE_DIR/kubelet.yaml" 2>/dev/null || true
  cgroups_down
  for name in containerd kubelet; do
    [[ -f "$RUN/$name.pid" ]] || continue
    pid="$(cat "$RUN/$name.pid")"
    kill -TERM "$pid" 2>/dev/null || true
  done
  pkill -TERM -f -- "$NODE_DIR/" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while pgrep -f -- "$NODE_DIR/" >/dev/null 2>&1 && ((SECONDS < deadline)); do sleep 0.2; done
  pkill -KILL -f -- "$NODE_DIR/" 2>/dev/null || true
  while pgrep -f -- "$NODE_DIR/" >/dev/null 2>&1 && ((SECONDS < deadline + 5)); do sleep 0.2; done
  rm -f "$RUN/containerd.pid" "$RUN/kubelet.pid"
  cgroups_down
  network_down
  # Nothing of the node is mounted on the host, so its files can simply go.
  rm -rf "$NODE_DIR"
  log "real node stopped"
}

cmd_status() {
  local c
  for c in containerd kubelet; do
    if alive "$c"; then echo "$c: running (pid $(cat "$RUN/$c.pid"))"; else echo "$c: stopped"; fi
  done
}

# What hack/env.sh appends to the environment file: pods reach S3 at the gateway (DNAT), and
# the host does too, so the operator can hand its own endpoint to static server pods.
cmd_env() {
  cat <<EOF
export MIOSA_S3_ENDPOINT=http://$GATEWAY:$S3_PORT
export MIOSA_REAL_NODE=$NODE_NAME
export MIOSA_REAL_NODE_LABEL=$NODE_LABEL
export MIOSA_REAL_NODE_ADDRESS=$GATEWAY
EOF
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  images) alive containerd || die "the real node is not running"; "$HERE/build-images.sh"; import_images ;;
  _namespace_init) shift; namespace_init "$@" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
