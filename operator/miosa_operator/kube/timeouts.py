"""How long any call to the Kubernetes API may take (its own module: ``settings`` builds it
without importing the Kubernetes client)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timeouts:
    """Seconds to establish a connection, and to wait for each read of the answer."""

    connect: float = 5.0
    read: float = 30.0

    @property
    def request_timeout(self) -> tuple[float, float]:
        """The official client's ``_request_timeout`` (urllib3's connect/read pair)."""
        return (self.connect, self.read)
