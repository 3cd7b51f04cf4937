#!/usr/bin/env bash
# Print a kubernetes.io/tls Secret for the operator's admission webhook: a new CA and a
# serving certificate for <service>.<namespace>.svc, made with openssl.  For installs
# without Helm or cert-manager (the kustomize base in manifests/):
#
#   hack/webhook-cert.sh | kubectl apply -f -
#   hack/webhook-cert.sh --namespace miosa-system --days 825 > webhook-tls.yaml
#
# The Secret carries tls.crt, tls.key and ca.crt; the operator serves tls.crt/tls.key and
# puts ca.crt into the webhook configurations' caBundle itself.  Re-run it (and restart the
# operator, or wait a minute for it to notice) before the certificate expires.
set -euo pipefail

namespace=miosa-system
service=miosa-operator-webhook
secret=miosa-operator-webhook-tls
days=3650

usage() {
  echo "usage: $0 [--namespace NS] [--service NAME] [--secret NAME] [--days N]" >&2
  exit 2
}
while (($#)); do
  case "$1" in
    --namespace) namespace="${2:?}"; shift 2 ;;
    --service) service="${2:?}"; shift 2 ;;
    --secret) secret="${2:?}"; shift 2 ;;
    --days) days="${2:?}"; shift 2 ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
done
[[ "$days" =~ ^[0-9]+$ ]] || usage

host="$service.$namespace.svc"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
  -subj "/CN=$service-ca" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$host" \
  -keyout tls.key -out tls.csr 2>/dev/null
cat >ext.cnf <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:$host,DNS:$host.cluster.local,DNS:$service.$namespace,DNS:$service
EOF
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
  -extfile ext.cnf -out tls.crt 2>/dev/null
openssl verify -CAfile ca.crt tls.crt >/dev/null

b64() { base64 <"$1" | tr -d '\n'; }
cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $secret
  namespace: $namespace
  labels:
    app.kubernetes.io/name: miosa-operator
    app.kubernetes.io/part-of: miosa-operator
type: kubernetes.io/tls
data:
  tls.crt: $(b64 tls.crt)
  tls.key: $(b64 tls.key)
  ca.crt: $(b64 ca.crt)
EOF
