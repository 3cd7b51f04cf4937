#!/usr/bin/env bash
# What the HTTP API's end-to-end tests need besides Python (tests/e2e/test_httpapi_*.py):
#
#   * Debian's chromium (/usr/bin/chromium), driven headless by playwright-core: Playwright's
#     own browser download is not used;
#   * the npm packages pinned in tests/e2e/node/package-lock.json (playwright-core,
#     openapi-typescript, openapi-fetch, typescript), installed with `npm ci` and npm's
#     cache under ~/.cache/miosa-operator/npm, so a second run installs nothing.
#
# Idempotent; `make browser-tools` and .ci/run call it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
CACHE="${MIOSA_CACHE:-$HOME/.cache/miosa-operator}"
NODE_DIR="$REPO/tests/e2e/node"

log() { printf '[browser-tools] %s\n' "$*" >&2; }

if [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" -ne 0 ]]; then
    log "chromium is missing: run as root, or: sudo apt-get install chromium"
    exit 1
  fi
  log "installing Debian's chromium (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

command -v npm >/dev/null || { log "npm (Node.js 20+) is missing"; exit 1; }
stamp="$NODE_DIR/node_modules/.installed"
if [[ ! -f "$stamp" || "$NODE_DIR/package-lock.json" -nt "$stamp" ]]; then
  log "npm ci in tests/e2e/node"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error --cache "$CACHE/npm")
  touch "$stamp"
fi
log "ready: $(/usr/bin/chromium --version 2>/dev/null | head -1), node $(node --version)"
