"""The ingestion worker: the child process side of ``isolation.ingest_isolated``.

``run`` executes in a process forked from multiprocessing's fork server (which preloaded this
module), once per ingestion. Before it reads a byte it limits itself (address space:
``RLIMIT_AS``; CPU time: ``RLIMIT_CPU``, whose soft limit kills with ``SIGXCPU``), keeps
glibc to one malloc arena (a thread arena would reserve 64 MiB of address space for libzstd's
worker thread), asks the kernel to kill it when its parent (the fork server) dies, and lowers
its CPU priority to the job's ``niceness``: ingestion is bulk work, while the operator process
serves every tenant's reconciles, so on a busy node the control loop wins the CPU (the
niceness per worker is chosen by the operator, see ``controllers.ingestion_slots``). Then it
runs ``ingest_bundle`` from the bundle pipe into the output file and reports on the message
pipe, one JSON object per line:

    {"log": "..."}                                          a build-log line, as it happens
    {"result": {...}, "usage": {...}}                       the IngestResult fields
    {"rejected": {"reason": ..., "message": ...}, "usage": {...}}

``usage`` is the worker's CPU seconds, peak RSS and peak address space. The worker reads no
settings, no credentials and no network: the operator streams the bundle in and uploads the
release. A ``MemoryError`` is reported as ``ResourceLimitExceeded`` (a reserve allocated at
start is freed first, so the report itself has room).

``serve`` is the same worker kept warm (``isolation.WarmWorkers``): it limits itself once, then
takes jobs one after another from its control connection, each with its own three file
descriptors, until the connection closes. Each job gets limits of its own: the soft
``RLIMIT_CPU`` is moved to the CPU used so far plus the job's seconds (the hard CPU limit is
never set, since an unprivileged process could not raise it again for the next job), and the
soft ``RLIMIT_AS`` to the budget plus what earlier jobs left mapped. After each job it gives
freed memory back to the kernel (``malloc_trim``) and reports what it holds, so the operator
can retire a worker a job left large.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import resource
import signal
import socket
from multiprocessing import reduction
from typing import Any

from ..api.conditions import Reason
from .bundle import ingest_bundle
from .errors import BundleRejected
from .limits import IngestLimits

_RESERVE_BYTES = 2 << 20
HARD_CPU_GRACE = 5
REUSE_SLACK = 64 << 20
"""Address space a warm worker may keep between jobs (beyond it, it is retired)."""
_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8


def run(job: dict[str, Any], source_fd: int, messages_fd: int, out_fd: int) -> None:
    """One ingestion, start to verdict (``job``: see ``isolation.ingest_isolated``)."""
    _harden(job["memory_bytes"], job["cpu_seconds"], job["niceness"])
    _ingest(job, source_fd, messages_fd, out_fd)


def serve(connection: Any, memory_bytes: int, niceness: int) -> None:
    """Jobs from ``connection`` (a multiprocessing ``Connection``) until it closes.

    Each job gets the address space a fresh worker would give it: ``memory_bytes`` plus what
    earlier jobs left mapped (``malloc_trim`` cannot give everything back), up to
    ``REUSE_SLACK``; a worker that keeps more than that is retired by the operator.
    """
    _harden(memory_bytes + REUSE_SLACK, None, niceness)
    base = _vm_now()
    while True:
        try:
            job = connection.recv()
            with socket.fromfd(connection.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as channel:
                fds = reduction.recvfds(channel, 3)
        except (EOFError, OSError):
            return
        used = _cpu_seconds()
        _limit(resource.RLIMIT_CPU, math.ceil(used + job["cpu_seconds"]), resource.RLIM_INFINITY)
        kept = min(max(0, _vm_now() - base), REUSE_SLACK)
        _limit(resource.RLIMIT_AS, memory_bytes + kept, memory_bytes + REUSE_SLACK)
        _reset_peak_rss()
        _ingest({**job, "vm_limit": memory_bytes + kept, "vm_base": base}, *fds)
        _trim()


def _ingest(job: dict[str, Any], source_fd: int, messages_fd: int, out_fd: int) -> None:
    before = _cpu_seconds()
    limits = {key: job[key] for key in ("vm_limit", "vm_base") if key in job}

    def used() -> dict[str, float]:
        return usage(before) | limits

    reserve: bytearray | None = bytearray(_RESERVE_BYTES)
    with os.fdopen(messages_fd, "w", encoding="utf-8") as messages, os.fdopen(source_fd, "rb") as source:

        def say(message: dict[str, Any]) -> None:
            messages.write(json.dumps(message) + "\n")
            messages.flush()

        try:
            with os.fdopen(out_fd, "wb", buffering=1 << 20) as out:
                result = ingest_bundle(
                    source,
                    out,
                    expected_sha256=job["expected_sha256"],
                    entrypoint=job["entrypoint"],
                    limits=IngestLimits(**job["limits"]),
                    log=lambda line: say({"log": line}),
                )
        except BundleRejected as rejected:
            say({"rejected": {"reason": rejected.reason, "message": rejected.message}, "usage": used()})
            return
        except MemoryError:
            reserve = None
            message = f"ingestion needed more than its {job['memory_bytes'] >> 20} MiB of memory (MIOSA_INGEST_MEMORY)"
            say({"rejected": {"reason": str(Reason.RESOURCE_LIMIT_EXCEEDED), "message": message}, "usage": used()})
            return
        del reserve
        say({"result": dataclasses.asdict(result), "usage": used()})


def _harden(memory_bytes: int, cpu_seconds: int | None, niceness: int) -> None:
    # Only the operator ends a worker (or its CPU limit, or its parent's death): a stop signal
    # sent to the whole process group must reach the operator, which then decides.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # Linux: die with the fork server
        libc.mallopt(_M_ARENA_MAX, 1)  # glibc
    except (OSError, AttributeError):
        pass
    if cpu_seconds is not None:
        _limit(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + HARD_CPU_GRACE)
    _limit(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    os.nice(niceness)


def _limit(kind: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(kind)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def usage(cpu_before: float = 0.0) -> dict[str, float]:
    """CPU seconds since ``cpu_before``, peak RSS and peak address space of this process so far,
    and the address space it holds now."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu = own.ru_utime + own.ru_stime - cpu_before
    peak_rss = _status_field("VmHWM:") or own.ru_maxrss * 1024
    return {"cpu_seconds": cpu, "peak_rss": peak_rss, "peak_vm": _vm_peak(), "vm": _vm_now()}


def _reset_peak_rss() -> None:
    """Linux: VmHWM starts again from the current RSS, so each job reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _trim() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc: free heap pages go back to the kernel
    except (OSError, AttributeError):
        pass


def _vm_now() -> int:
    return _status_field("VmSize:")


def _vm_peak() -> int:
    return _status_field("VmPeak:")


def _status_field(field: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
