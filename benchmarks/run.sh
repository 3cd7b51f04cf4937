#!/usr/bin/env bash
# Run the benchmarks (not part of the test suite) against their own isolated environment:
# ~/.cache/miosa-operator/bench-env, ports 23890/16543/19100 (never the e2e tests' one).
#   benchmarks/run.sh                 # all seven, ~12-15 minutes on 2 cores
#   benchmarks/run.sh --only 1,4      # some of them
#   benchmarks/run.sh --quick         # smaller samples, a smoke run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PY:-.venv/bin/python}"
exec "$PY" -m benchmarks "$@"
