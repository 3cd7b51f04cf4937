"""Where the end-to-end suite's own environment lives: a state directory and ports per slot.

Slot 0 is the default; ``MIOSA_E2E_SLOT=N`` (1-9) moves the directory and every port, so
several checkouts can run the suite at once.  `make dev` uses 23790/16443/19000/9443 and the
benchmarks 23890/16543/19100, so none of them ever meet.

``python tests/e2e/slots.py`` prints the variables as shell exports, for
``hack/env.sh`` (see ``make test-env``).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE = Path(os.environ.get("MIOSA_CACHE", Path.home() / ".cache" / "miosa-operator"))


def slot() -> int:
    value = int(os.environ.get("MIOSA_E2E_SLOT") or 0)
    if not 0 <= value <= 9:
        raise SystemExit(f"MIOSA_E2E_SLOT must be 0-9, not {value}")
    return value


SLOT = slot()
ENV_DIR = CACHE / ("test-env" if SLOT == 0 else f"test-env-{SLOT}")
ENV_PORTS = {
    "MIOSA_ETCD_PORT": 24000 + 20 * SLOT,  # and +10 for etcd's peer port
    "MIOSA_APISERVER_PORT": 17000 + SLOT,
    "MIOSA_S3_PORT": 20000 + SLOT,
}
WEBHOOK_PORT = 20500 + SLOT
"""The suite's operator serves its admission webhook here."""
ARTIFACTS_PORT = 20600 + SLOT
"""... and its artifact endpoint (static pods download releases from it) here."""
METRICS_PORT = 20700 + SLOT
"""...and its Prometheus metrics here (`make dev`'s operator uses the default, 8082)."""
SPARE_PORTS = range(21000 + 100 * SLOT, 21100 + 100 * SLOT)
"""Free for tests that start servers of their own, each in its own part (tests of one session
share them: a server kept for the session must not take another test's port):
``[0]`` test_admission's throttling proxy, ``[10:20]`` and ``[20:30]`` test_shards' artifact
and metrics ports, ``[40:90]`` the HTTP API's test server, ``[90:95]`` the Flux controllers."""


def environment_variables() -> dict[str, str]:
    """What ``hack/env.sh`` needs to start or stop the suite's environment.  Pods on the real
    node reach the suite's artifact endpoint, on the host's loopback, at the node's gateway."""
    return {
        "MIOSA_ENV_DIR": str(ENV_DIR),
        **{name: str(port) for name, port in ENV_PORTS.items()},
        "MIOSA_NODE_HOST_PORTS": str(ARTIFACTS_PORT),
    }


if __name__ == "__main__":
    for name, value in environment_variables().items():
        print(f"export {name}={value}")
