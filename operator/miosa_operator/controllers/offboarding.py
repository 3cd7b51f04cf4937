"""Tenant offboarding: a deleted namespace takes its releases with it.

A tenant's releases and build logs live under ``<releases>/<namespace>/``.  Deleting the
namespace deletes its DeploymentVersions (the ValidatingAdmissionPolicy that protects the
audit record lets a terminating namespace's own cleanup through), and nothing would ever
point at those releases again: without this module they would stay in the store for ever,
owned by nobody.

``TenantOffboarding`` removes ``<releases>/<namespace>/`` once the namespace is gone:

* ``collect(namespace)`` on the watch event that reports the namespace deleted (the
  namespace controller removes the Namespace object only after everything in it), and
* ``sweep()`` at startup and periodically, for namespaces deleted while the operator was
  down: every tenant prefix in the store whose namespace does not exist.

Nothing is removed for a namespace that exists (checked right before deleting), so a
namespace re-created under the same name keeps what it has; only prefixes that are valid
namespace names are considered, so nothing else in the releases location is touched.
"""

from __future__ import annotations

import logging
import re
import threading

from ..kube.client import Namespaces
from ..store.base import ArtifactStore, join_uri

log = logging.getLogger(__name__)

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class TenantOffboarding:
    def __init__(self, kube: Namespaces, store: ArtifactStore, releases_uri: str) -> None:
        self.kube, self.store, self.releases_uri = kube, store, releases_uri.rstrip("/")

    def prefix(self, namespace: str) -> str:
        return join_uri(self.releases_uri, namespace) + "/"

    def collect(self, namespace: str) -> int:
        """Delete everything under the tenant's prefix if its namespace is gone; how many objects."""
        if not _NAMESPACE.match(namespace) or self.kube.namespace_exists(namespace):
            return 0
        deleted = 0
        for item in list(self.store.list(self.prefix(namespace))):
            deleted += bool(self.store.delete(item.uri))
        if deleted:
            log.info("tenant %s offboarded: %d release objects deleted from %s", namespace, deleted, self.prefix(namespace))
        return deleted

    def stored_tenants(self) -> set[str]:
        """Namespaces that have something under the releases location."""
        base = self.releases_uri + "/"
        tenants = set()
        for item in self.store.list(base):
            first, separator, _ = item.uri[len(base) :].partition("/")
            if separator and _NAMESPACE.match(first):
                tenants.add(first)
        return tenants

    def sweep(self) -> dict[str, int]:
        """Collect every stored tenant whose namespace no longer exists."""
        gone = self.stored_tenants() - self.kube.namespace_names()
        return {namespace: self.collect(namespace) for namespace in sorted(gone)}


class PeriodicOffboarding:
    """``sweep`` soon after startup and then every ``interval`` seconds, in a thread of its own."""

    def __init__(self, offboarding: TenantOffboarding, interval: float, first_delay: float = 30.0) -> None:
        self.offboarding, self.interval, self.first_delay = offboarding, interval, first_delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="miosa-offboarding", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        delay = self.first_delay
        while not self._stop.wait(delay):
            delay = self.interval
            try:
                collected = {ns: n for ns, n in self.offboarding.sweep().items() if n}
                if collected:
                    log.info("offboarding sweep: releases of deleted namespaces removed: %s", collected)
            except Exception:  # a failed sweep must not stop the next one
                log.exception("offboarding sweep failed; retrying in %.0fs", self.interval)
