"""Every DeploymentVersion the operator sees, by state and kind, from kopf's watch stream.

The gauges ``miosa_versions{state,kind}`` and ``miosa_versions_oldest_seconds{state}`` are
computed when Prometheus scrapes, from this in-memory table, so a scrape costs no API call
however many versions exist.  The table is fed by a kopf event handler (every ADDED, MODIFIED
and DELETED the operator's watch receives) and holds a few small fields per version.

It also answers "what is the id of version ``ns/name``" for log lines about Deployments,
which name their versions but do not carry their ids.  The journal feeds it the operator's
own status writes as they happen; a watch event older than those (by resourceVersion) is
ignored.

``since`` is when the census first saw a version in its current state; after an operator
restart it is the restart, so "oldest in building" can only err on the young side.

The operator watches only versions in flight (``handlers.UNSETTLED_VERSIONS``): a version
that becomes ready, failed or archived leaves the watch with a DELETED event.  So a DELETED
of a version the census knows as settled means "no longer watched", not "gone": it stays
counted.  Settled versions from before the process started are counted by ``seed`` (a paged
LIST at startup); a settled version deleted later (a retention admin's purge) stays counted
until the operator restarts or a new version takes its name, and a deleted namespace's
versions are dropped with it (``forget_namespace``).

Memory: settled versions are nearly all of them (10,000 of 10,000 in benchmark 5), so they
are kept compact, by namespace and name, as one int each: a code for (state, kind), the
resourceVersion and the ULID of ``ver_…`` (``_pack``); no ``since`` (the age gauge is about
states in flight) and no uid (the events that concern a settled version carry its name, and
a name belongs to one object at a time).  ~170 bytes per settled version instead of ~5 KB
(``benchmarks/census_memory.py``).  Versions in flight, and a settled one whose id is not a
``ver_`` ULID, keep their full ``Facts``.

With N shards each process counts its own share (``owns``): the singletons' holder also
writes other shards' versions (archiving, collection), and those writes must not make it
count them too, or the shards' sums would count them twice.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

UNSET = "unset"
SETTLED = frozenset({"ready", "failed", "archived"})


@dataclass(frozen=True, slots=True)
class Facts:
    namespace: str
    name: str
    kind: str
    state: str
    id: str | None
    since: float
    revision: int = 0


def _revision(raw: Any) -> int:
    """resourceVersion as a number when it is one (etcd's are; the contract says opaque)."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


# A settled version as one int: code (16 bits) | resourceVersion (64 bits) | id number.
_CODE_BITS, _REVISION_BITS = 16, 64
_CODE_MASK, _REVISION_MASK = (1 << _CODE_BITS) - 1, (1 << _REVISION_BITS) - 1
_ID_SHIFT = _CODE_BITS + _REVISION_BITS
_ID_PREFIX = "ver_"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DIGIT = {c: i for i, c in enumerate(_CROCKFORD)}
_ULID_LENGTH = 26
_PACKED_BYTES = 32  # code, revision and id number fit in 211 bits
_NAME_SEPARATOR = "\0"


def _id_number(version_id: Any) -> int | None:
    """``ver_`` + ULID as a number, plus one (0: no id); None when it is anything else."""
    if version_id is None:
        return 0
    if not isinstance(version_id, str) or len(version_id) != len(_ID_PREFIX) + _ULID_LENGTH:
        return None
    if not version_id.startswith(_ID_PREFIX):
        return None
    number = 0
    for char in version_id[len(_ID_PREFIX) :]:
        digit = _DIGIT.get(char)
        if digit is None:
            return None
        number = number << 5 | digit
    return number + 1


def _id_text(number: int) -> str | None:
    if not number:
        return None
    number -= 1
    chars = [_CROCKFORD[(number >> shift) & 31] for shift in range(5 * (_ULID_LENGTH - 1), -1, -5)]
    return _ID_PREFIX + "".join(chars)


def _trim_malloc() -> None:
    """glibc keeps the pages' freed buffers; ``malloc_trim`` returns what it can (another 1.8
    MB of 6.3 for 10,000 versions in ``benchmarks/census_memory.py``).  Not on other libcs."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class VersionCensus:
    def __init__(self, clock: Callable[[], float] = time.time, owns: Callable[[str], bool] = lambda uid: True) -> None:
        self._clock, self._owns = clock, owns
        self._lock = threading.Lock()
        # In flight (or settled with an id that does not pack): everything, by uid.
        self._facts: dict[str, Facts] = {}
        self._uid_by_name: dict[tuple[str, str], str] = {}
        # Settled: namespace -> name -> packed int; their number per code, kept current.
        self._settled: dict[str, dict[str, int]] = {}
        self._settled_counts: Counter[int] = Counter()
        self._codes: dict[tuple[str, str], int] = {}
        self._pairs: list[tuple[str, str]] = []

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event (``None`` for the initial listing, as kopf passes it)."""
        metadata = body.get("metadata") or {}
        uid = metadata.get("uid")
        if not uid or not self._owns(uid):
            return
        namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
        with self._lock:
            old = self._facts.get(uid)
            if event_type == "DELETED":
                # A settled version left the watch (it is not gone); an unknown one changes nothing.
                if old is not None and old.state not in SETTLED:
                    self._forget(uid, old)
                return
            status = body.get("status") or {}
            state = status.get("state") or UNSET
            revision = _revision(metadata.get("resourceVersion"))
            known = old.revision if old is not None else self._settled_revision(namespace, name)
            if known is not None and revision and revision < known:
                return  # a watch event older than what the journal already recorded
            kind = (body.get("spec") or {}).get("kind") or UNSET
            if old is not None:
                self._forget(uid, old)
            self._unsettle(namespace, name)
            packed = self._pack(state, kind, revision, status.get("id")) if state in SETTLED else None
            if packed is not None:
                self._settled.setdefault(namespace, {})[name] = packed
                self._settled_counts[packed & _CODE_MASK] += 1
                return
            since = old.since if old is not None and old.state == state else self._clock()
            self._facts[uid] = Facts(namespace, name, kind, state, status.get("id"), since, revision)
            self._uid_by_name[namespace, name] = uid

    def seed(self, bodies: Iterable[Mapping[str, Any]]) -> int:
        """Versions listed (not watched) at startup; anything the census already has wins.

        Call it once with every listing (it compacts what it kept when they are done)."""
        seen = 0
        try:
            for body in bodies:
                metadata = body.get("metadata") or {}
                uid, namespace, name = metadata.get("uid"), metadata.get("namespace") or "", metadata.get("name") or ""
                with self._lock:
                    known = uid in self._facts or name in self._settled.get(namespace, ())
                if uid and not known:
                    self.observe(None, body)
                seen += 1
        finally:  # also after a failed listing: what was counted stays counted, compactly
            body = metadata = {}  # the last listed body is not kept alive through the compaction
            gc.collect()  # the pages' leftovers first (and the free lists): their pools go back too
            self._compact()
            _trim_malloc()
        return seen

    def forget_namespace(self, namespace: str) -> None:
        with self._lock:
            for uid, facts in [(uid, facts) for uid, facts in self._facts.items() if facts.namespace == namespace]:
                self._forget(uid, facts)
            for packed in self._settled.pop(namespace, {}).values():
                self._uncount(packed)

    def counts(self) -> Counter[tuple[str, str]]:
        """(state, kind) -> number of versions."""
        with self._lock:
            counts = Counter((f.state, f.kind) for f in self._facts.values())
            for code, number in self._settled_counts.items():
                if number:
                    counts[self._pairs[code]] += number
            return counts

    def oldest_seconds(self, state: str) -> float:
        """How long the version longest in ``state``, a state in flight, has been there (0 when none is)."""
        if state in SETTLED:
            return 0.0
        now = self._clock()
        with self._lock:
            since = [f.since for f in self._facts.values() if f.state == state]
        return max(0.0, now - min(since)) if since else 0.0

    def version_id(self, namespace: str, name: str) -> str | None:
        with self._lock:
            uid = self._uid_by_name.get((namespace, name))
            facts = self._facts.get(uid) if uid else None
            if facts is not None:
                return facts.id
            packed = self._settled.get(namespace, {}).get(name)
            return _id_text(packed >> _ID_SHIFT) if packed is not None else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._facts) + sum(len(names) for names in self._settled.values())

    def _compact(self) -> None:
        """Settled entries rebuilt, now that the listed pages are gone.

        The names and ints kept while seeding were allocated between each page's thousands of
        short-lived objects: scattered, they kept most of the allocator's pools and arenas
        alive (~11 MB of RSS for 10,000 versions, against ~1.4 MB held).  Moved out into two
        flat buffers, freed, and made again one after another, they fill few pools densely
        and the rest go back to the system (``benchmarks/census_memory.py``).
        """
        for namespace in list(self._settled):
            with self._lock:
                names = self._settled.pop(namespace, None)
                if not names:
                    continue
                joined = _NAME_SEPARATOR.join(names)  # no Kubernetes name contains it
                packed = b"".join(value.to_bytes(_PACKED_BYTES, "little") for value in names.values())
                del names  # the scattered objects go now, before their copies are made
                values = (int.from_bytes(packed[i : i + _PACKED_BYTES], "little") for i in range(0, len(packed), _PACKED_BYTES))
                self._settled[namespace] = dict(zip(joined.split(_NAME_SEPARATOR), values, strict=True))

    # ------------------------------------------------------------------ under the lock
    def _forget(self, uid: str, facts: Facts) -> None:
        del self._facts[uid]
        key = (facts.namespace, facts.name)
        if self._uid_by_name.get(key) == uid:
            del self._uid_by_name[key]

    def _unsettle(self, namespace: str, name: str) -> None:
        names = self._settled.get(namespace)
        packed = names.pop(name, None) if names is not None else None
        if packed is not None:
            self._uncount(packed)
            if not names:
                del self._settled[namespace]

    def _uncount(self, packed: int) -> None:
        code = packed & _CODE_MASK
        self._settled_counts[code] -= 1
        if not self._settled_counts[code]:
            del self._settled_counts[code]

    def _settled_revision(self, namespace: str, name: str) -> int | None:
        packed = self._settled.get(namespace, {}).get(name)
        return (packed >> _CODE_BITS) & _REVISION_MASK if packed is not None else None

    def _pack(self, state: str, kind: str, revision: int, version_id: Any) -> int | None:
        """One int for a settled version, or None when it does not fit (then it keeps its Facts)."""
        number = _id_number(version_id)
        if number is None or not 0 <= revision <= _REVISION_MASK:
            return None
        code = self._codes.get((state, kind))
        if code is None:
            if len(self._pairs) > _CODE_MASK:
                return None
            code = self._codes[state, kind] = len(self._pairs)
            self._pairs.append((state, kind))
        return code | revision << _CODE_BITS | number << _ID_SHIFT
