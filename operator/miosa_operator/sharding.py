"""Which tenants an operator process handles when the operator runs as N shards.

Design decisions:

* **A shard is a range of uid hashes.** The API server filters the list and watch streams
  itself (``shardSelector``, Kubernetes 1.36+, feature gate ``ShardedListAndWatch``): shard
  ``i`` of ``n`` receives only the DeploymentVersions and Deployments whose uid's 64-bit
  FNV-1a hash lies in ``[i·2⁶⁴/n, (i+1)·2⁶⁴/n)``.  Nothing is sent to a process that would
  only drop it, so each shard parses and remembers a 1/n share of the events.
* **By uid, not by namespace**, although a tenant per shard would have kept a tenant's
  numbering and fair share in one process: FNV-1a puts strings that differ only at the end
  (``customer-0001``, ``customer-0002``, …) next to each other in its high bits, so ranges of
  namespace hashes would put whole families of tenants on one shard (measured: 14 namespaces,
  13 on the same half).  Uids are random, so shards get equal shares.  What follows: a
  tenant's versions are spread over the shards.  Numbering is a compare-and-swap on the
  Deployment's status and never depended on one process; a per-tenant share of ingestion
  slots holds per shard.
* **The same hash here.** ``owns`` computes the API server's hash (FNV-1a over the UTF-8
  bytes, ``k8s.io/apimachinery/pkg/sharding.HashField``; checked against a real API server)
  for what kopf does not shard for us: Namespace events (offboarding a deleted tenant is
  done by the shard that owns the Namespace's uid), and a last check in the handlers that the
  server really applied the selector.
"""

from __future__ import annotations

from dataclasses import dataclass

HASH_SPACE = 1 << 64
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv1a64(value: str) -> int:
    digest = _FNV_OFFSET
    for byte in value.encode():
        digest = ((digest ^ byte) * _FNV_PRIME) % HASH_SPACE
    return digest


def _hex(value: int) -> str:
    """The API server's notation: 0x + 16 hex digits (2⁶⁴ itself has 17)."""
    return f"0x{value:016x}"


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not one of 0..{self.count - 1}")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def start(self) -> int:
        return self.index * HASH_SPACE // self.count

    @property
    def end(self) -> int:
        return (self.index + 1) * HASH_SPACE // self.count

    @property
    def selector(self) -> str:
        """The ``shardSelector`` of list and watch requests for this shard's objects."""
        return f"shardRange(object.metadata.uid, '{_hex(self.start)}', '{_hex(self.end)}')"

    def owns(self, uid: str) -> bool:
        return not self.sharded or self.start <= fnv1a64(uid) < self.end

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"
