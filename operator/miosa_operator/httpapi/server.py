"""Run the HTTP API with uvicorn: JSON logs, bounded connections, graceful shutdown.

* Logs are JSON lines on stderr (the access log from ``middleware.AccessLog``, and
  uvicorn's and our own messages), ready for a log pipeline; uvicorn's own access log is off.
* On SIGTERM uvicorn stops accepting connections, lets requests in flight finish for
  ``shutdown_grace_seconds`` (the chart's ``terminationGracePeriodSeconds`` is longer) and
  then runs the lifespan shutdown, which closes the API server sessions, and ends by the
  signal (uvicorn re-raises it).  ``/readyz`` fails from the moment shutdown begins.
* ``limit_concurrency`` answers 503 beyond ``max_connections`` instead of queueing without
  bound; idle keep-alive connections are closed after 5 s.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import uvicorn

from ..settings import Settings
from ..store.router import StoreRouter
from .app import asgi, create_app
from .kube import Cluster, Kube


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name.endswith(".access") and message.startswith("{"):
            return message  # already a JSON access record
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def serve(settings: Settings) -> None:
    configure_logging()
    kube = Kube(Cluster.from_environment(), timeout=settings.api_kube_timeout)
    app = create_app(settings, kube, StoreRouter.from_settings(settings))
    config = uvicorn.Config(
        asgi(app),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=5,
        limit_concurrency=settings.api_max_connections,
        timeout_graceful_shutdown=int(settings.api_shutdown_grace_seconds),
        lifespan="on",
    )
    logging.getLogger(__name__).info(
        "miosa-operator api on http://%s:%d (uploads to %s)", settings.api_host, settings.api_port, settings.api_uploads_uri
    )
    uvicorn.Server(config).run()
