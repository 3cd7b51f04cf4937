"""The RSS baseline: a bare kopf operator with a no-op handler on the same objects.

Same kopf settings as the operator where they matter for memory (standalone, the same
namespace glob, the same listing page size, a 16-thread executor), no Kubernetes client
calls of its own, no boto3, no pydantic models: what watching that many objects costs in
kopf itself.  (kopf imports the ``kubernetes`` package on its own when it is installed.)
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

GROUP, VERSION = "deploy.miosa.io", "v1alpha1"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 270
    settings.watching.chunk_size = 500
    settings.posting.level = logging.WARNING
    logging.getLogger(__name__).info("bare kopf configured")


@kopf.on.resume(GROUP, VERSION, "deploymentversions")
@kopf.on.create(GROUP, VERSION, "deploymentversions")
def noop(**_: Any) -> None:
    pass


if __name__ == "__main__":
    kopf.configure(verbose=False)
    kopf.run(standalone=True, clusterwide=False, namespaces=["mb-op-*"])
