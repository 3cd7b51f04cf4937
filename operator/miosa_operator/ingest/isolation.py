"""Run one ingestion in a child process with its own memory and CPU limits.

Design decisions:

* **A bundle can exhaust its budget, never the operator.** ``ingest_isolated`` runs
  ``ingest_bundle`` in a child process (``worker.run``) limited by ``RLIMIT_AS`` and
  ``RLIMIT_CPU``. Whatever a bundle does that the caps of ``limits`` did not foresee, the
  worst outcome is ``ResourceLimitExceeded`` for that version; and ingestions run in parallel
  without sharing the operator's GIL.
* **Children come from multiprocessing's fork server.** The operator is multi-threaded, so it
  must not ``fork``; a fresh ``python -m`` per ingestion costs ~0.3 s of CPU (imports), which
  would dominate small bundles (apply -> ready is ~0.1 s). The fork server is started once
  (single-threaded, this module and the worker preloaded) and forks a child per ingestion in
  milliseconds. It dies with the operator, and each child dies with it (``PR_SET_PDEATHSIG``).
* **The worker never touches the store.** The caller opens the source and the output; a
  pump thread here copies the source into a pipe the worker reads, and the worker writes the
  canonical release into the output's file descriptor (passed to it). Store errors therefore
  happen in the operator process and keep their classes (``TransientStoreError`` …): when the
  source fails, the worker is killed first (so it cannot mistake a cut-off stream for a
  truncated bundle) and the source's exception is raised unchanged.
* **Every way out is explicit.** ``cancel`` (operator shutdown) kills the worker and raises
  ``IngestionInterrupted``; the wall-clock ``budget.wall_seconds`` kills it and raises
  ``IngestionTimedOut`` (a slow store is not the bundle's fault); a CPU overrun (the soft
  ``RLIMIT_CPU`` kills with ``SIGXCPU``) and a ``MemoryError`` are
  ``BundleRejected(ResourceLimitExceeded)``; any other death (a crash of libzstd, an OOM kill
  from outside) is ``WorkerCrashed``. The worker is always joined.
* **Warm workers for a tenant's next bundle** (``WarmWorkers``). Forking a worker per
  ingestion costs more than ingesting a small bundle on a busy machine (the fork, the child's
  first touches of the interpreter's pages, and one more hand-off before the first byte: ~100 ms
  of a 1 MiB version's ~200, measured in ``docs/benchmarks.md``). So a worker that gave a clean
  verdict waits for the next job, **of the same tenant only** (and the same niceness and memory
  budget, which it set on itself once): whatever one tenant's bytes could leave in a worker never
  meets another tenant's bundle. Each job gets the address space a fresh worker would: the
  budget plus what earlier jobs left mapped (``worker.serve``). A worker is used for
  ``_MAX_JOBS`` jobs at most, retired when a job came within ``2 x _MEMORY_HEADROOM`` of its
  limit (so the memory verdict below stays about one job: ``VmPeak`` is the process's) or left
  more than ``worker.REUSE_SLACK`` mapped, after ``_IDLE_SECONDS`` without work, and at once on
  any other way out (killed, timed out, crashed). At most ``_MAX_IDLE`` wait in all; without a
  tenant a job gets a fresh worker.
* **The fork server holds no secrets.** ``start_fork_server`` starts it before kopf (while
  the operator is still single-threaded) with an environment reduced to ``_INHERITED``: the
  store's credentials never reach a process that parses tenants' bytes.
* **Memory is virtual here.** ``RLIMIT_AS`` counts address space, which bounds RSS from
  above; the measured peaks are in ``docs/benchmarks.md``. A run that fails with
  ``CorruptBundle`` within ``_MEMORY_HEADROOM`` of the limit is reported as
  ``ResourceLimitExceeded``: libzstd reports a failed allocation as its own error.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing import forkserver, reduction
from typing import IO, Any, BinaryIO

from ..api.conditions import Reason
from . import worker
from .bundle import IngestResult, Manifest
from .common import CHUNK, human
from .errors import BundleRejected
from .limits import IngestLimits, MiB

_MEMORY_HEADROOM = 16 * MiB
_MAX_LINE = 64 << 10
_MAX_LOG_LINES = 10_000
_POLL = 0.25
_SHUTDOWN_GRACE = 2.0
_MAX_IDLE = 8
_IDLE_SECONDS = 30.0
_MAX_JOBS = 100

_CONTEXT = multiprocessing.get_context("forkserver")
# "__main__" too: a forked child then skips re-running the operator's entry script.
_CONTEXT.set_forkserver_preload(["__main__", "miosa_operator.ingest.worker"])
_INHERITED = re.compile(r"^(PATH|HOME|LANG|LC_[A-Z]+|TZ|TMPDIR|PYTHON[A-Z_]*|VIRTUAL_ENV)$")


def start_fork_server() -> None:
    """Start the fork server now, with only ``_INHERITED`` variables in its environment.

    Call it while the process is single-threaded (``cli`` does, before kopf starts): the
    environment is swapped for the duration of the start. Without it the server starts on
    the first ingestion, with the operator's full environment.
    """
    saved = dict(os.environ)
    try:
        for name in [name for name in os.environ if not _INHERITED.match(name)]:
            del os.environ[name]
        forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass(frozen=True)
class Budget:
    """What one ingestion may use: address space, CPU time and wall-clock time, and how
    readily it yields the CPU (``niceness``, added to the operator's own)."""

    memory_bytes: int = 256 * MiB
    cpu_seconds: int = 300
    wall_seconds: float = 900.0
    niceness: int = 10


@dataclass(frozen=True)
class Usage:
    """What the worker used (from the worker's own report; zero when it was killed)."""

    cpu_seconds: float = 0.0
    peak_rss: int = 0
    peak_vm: int = 0
    vm: int = 0
    vm_limit: int = 0
    """The job's address-space limit (a warm worker's: the budget plus what it kept mapped)."""
    vm_base: int = 0
    """A warm worker's address space before its first job."""


class IngestionInterrupted(Exception):
    """Stopped from outside (``cancel``: the operator is shutting down); nothing was decided."""


class IngestionTimedOut(Exception):
    """The ingestion did not finish within its wall-clock budget (a slow store, a stuck read)."""


class WorkerCrashed(Exception):
    """The worker died without a verdict, for no reason attributable to the bundle's budget."""


def ingest_isolated(
    source: BinaryIO,
    out: IO[bytes],
    *,
    expected_sha256: str,
    entrypoint: str = "index.html",
    limits: IngestLimits = IngestLimits(),
    budget: Budget = Budget(),
    log: Callable[[str], None] = lambda _: None,
    cancel: threading.Event | None = None,
    usage: Callable[[Usage], None] = lambda _: None,
    tenant: str | None = None,
) -> IngestResult:
    """``ingest_bundle`` in a limited child process: the same results and rejections.

    ``out`` must have a file descriptor (a temporary file); the worker writes the canonical
    release through it. ``usage`` receives what the worker used, when it said. With a
    ``tenant`` the job goes to a warm worker of that tenant when one waits (``WARM``).
    """
    out.flush()
    job = {
        "expected_sha256": expected_sha256,
        "entrypoint": entrypoint,
        "limits": asdict(limits),
        "memory_bytes": budget.memory_bytes,
        "cpu_seconds": budget.cpu_seconds,
        "niceness": budget.niceness,
    }
    bundle_r, bundle_w = os.pipe()
    messages_r, messages_w = os.pipe()
    try:
        if tenant is None:
            process: Any = _CONTEXT.Process(
                target=worker.run,
                args=(job, _Inherited(bundle_r), _Inherited(messages_w), _Inherited(out.fileno())),
                name="miosa-ingest",
                daemon=True,
            )
            process.start()
        else:
            process = WARM.start(
                _WarmKey(tenant, budget.niceness, budget.memory_bytes), job, (bundle_r, messages_w, out.fileno())
            )
    finally:
        os.close(bundle_r)
        os.close(messages_w)
    run = _Run(process, budget, cancel)
    pump = _Pump(source, os.fdopen(bundle_w, "wb"), run)
    verdict: dict[str, Any] | None = None
    try:
        verdict = run.read_verdict(messages_r, log, time.monotonic() + budget.wall_seconds)
    finally:
        os.close(messages_r)
        run.finish(decided=verdict is not None, keep=tenant is not None and _reusable(verdict, budget))
        pump.join()
    if pump.error is not None:
        raise pump.error
    if run.stopped is None and verdict is None and cancel is not None and cancel.wait(_SHUTDOWN_GRACE):
        # A stop signal sent to the whole process group (a terminal, some supervisors) can
        # end the fork server, and with it the worker, a moment before the operator reacts.
        run.stopped = IngestionInterrupted("the operator is shutting down")
    if run.stopped is not None:
        raise run.stopped
    if verdict is not None and "usage" in verdict:
        usage(Usage(**verdict["usage"]))
    return _conclude(verdict, run.exitcode, budget)


def _reusable(verdict: dict[str, Any] | None, budget: Budget) -> bool:
    """Whether a worker may take another job after this verdict (see the module docstring)."""
    if verdict is None or not ("result" in verdict or "rejected" in verdict):
        return False
    if verdict.get("rejected", {}).get("reason") == Reason.RESOURCE_LIMIT_EXCEEDED:
        return False
    used = verdict.get("usage") or {}
    if not used:
        return False
    # Retired if it came near a limit (so a later job's memory verdict is about that job
    # alone: see ``_conclude``) or keeps more mapped than a next job may start with.
    near_limit = used.get("peak_vm", budget.memory_bytes) >= budget.memory_bytes - 2 * _MEMORY_HEADROOM
    kept = used.get("vm", 0) - used.get("vm_base", 0)
    return not near_limit and kept <= worker.REUSE_SLACK


@dataclass(frozen=True)
class _WarmKey:
    tenant: str
    niceness: int
    memory_bytes: int


class _WarmWorker:
    """A ``worker.serve`` process and its control connection; quacks like a ``Process`` for
    ``_Run`` (``kill``, ``join``, ``exitcode``, ``close``)."""

    def __init__(self, key: _WarmKey) -> None:
        self.key = key
        self.jobs = 0
        self.idle_since = time.monotonic()
        self._connection, theirs = _CONTEXT.Pipe(duplex=True)
        self._process = _CONTEXT.Process(
            target=worker.serve, args=(theirs, key.memory_bytes, key.niceness), name="miosa-ingest", daemon=True
        )
        try:
            self._process.start()
        finally:
            theirs.close()

    def send(self, job: dict[str, Any], fds: tuple[int, int, int]) -> None:
        self.jobs += 1
        self._connection.send(job)
        with socket.fromfd(self._connection.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as channel:
            reduction.sendfds(channel, list(fds))

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def alive(self) -> bool:
        return self._process.exitcode is None

    def kill(self) -> None:
        self._process.kill()

    def join(self, timeout: float | None = None) -> None:
        self._process.join(timeout)

    def close(self) -> None:
        """Retire: closing the connection ends ``serve``; a worker that does not is killed."""
        self._connection.close()
        self._process.join(timeout=2.0)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()
        self._process.close()


class WarmWorkers:
    """Idle warm workers by tenant, niceness and memory budget (see the module docstring)."""

    def __init__(self, max_idle: int, idle_seconds: float, max_jobs: int) -> None:
        self.max_idle, self.idle_seconds, self.max_jobs = max_idle, idle_seconds, max_jobs
        self._idle: list[_WarmWorker] = []
        self._lock = threading.Lock()

    def take(self, key: _WarmKey) -> _WarmWorker:
        with self._lock:
            stale = self._expire()
            found = next((w for w in reversed(self._idle) if w.key == key), None)
            if found is not None:
                self._idle.remove(found)
        for old in stale:
            old.close()
        if found is not None and found.alive():
            return found
        if found is not None:
            found.close()
        return _WarmWorker(key)

    def start(self, key: _WarmKey, job: dict[str, Any], fds: tuple[int, int, int]) -> _WarmWorker:
        """A worker of ``key`` that has the job: an idle one, or a new one when the idle one
        died after ``take`` found it alive (its end of the connection is closed, the send
        fails). Without this a worker's own death while idle would count against the version."""
        warm = self.take(key)
        try:
            warm.send(job, fds)
        except OSError:
            warm.close()
            warm = _WarmWorker(key)  # once: a new worker that cannot take a job is a fault of ours
            warm.send(job, fds)
        return warm

    def give_back(self, warm: _WarmWorker) -> None:
        if warm.jobs >= self.max_jobs or not warm.alive():
            warm.close()
            return
        warm.idle_since = time.monotonic()
        with self._lock:
            self._idle.append(warm)
            stale = self._expire()
            while len(self._idle) > self.max_idle:
                stale.append(self._idle.pop(0))
        for old in stale:
            old.close()

    def keep_at_most(self, max_idle: int) -> None:
        """As many idle workers as ingestions may run at once (``cli`` sets it from the settings)."""
        self.max_idle = max(1, max_idle)

    def pids(self) -> list[int]:
        """The idle workers' process ids, oldest first (for tests and diagnostics)."""
        with self._lock:
            return [w.pid for w in self._idle]

    def retire_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for warm in idle:
            warm.close()

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def _expire(self) -> list[_WarmWorker]:
        deadline = time.monotonic() - self.idle_seconds
        stale = [w for w in self._idle if w.idle_since < deadline]
        self._idle = [w for w in self._idle if w.idle_since >= deadline]
        return stale


WARM = WarmWorkers(max_idle=_MAX_IDLE, idle_seconds=_IDLE_SECONDS, max_jobs=_MAX_JOBS)
"""The operator's warm workers (one set per process)."""
# Before multiprocessing's own exit hook (registered earlier, so it runs later), which would
# wait forever for idle workers: they ignore SIGTERM, and only a closed connection ends them.
atexit.register(WARM.retire_all)


class _Inherited:
    """A file descriptor handed to the worker (pickled with ``reduction.DupFd``, as
    multiprocessing's own connections are); the worker receives the plain number."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        return (_detach, (reduction.DupFd(self.fd),))


def _detach(dup: Any) -> int:
    return int(dup.detach())


class _Run:
    def __init__(self, process: Any, budget: Budget, cancel: threading.Event | None) -> None:
        self.process = process
        self.budget = budget
        self.cancel = cancel
        self.stopped: Exception | None = None
        self.exitcode: int | None = None
        self._closed = False
        self._lock = threading.Lock()

    def read_verdict(self, fd: int, log: Callable[[str], None], deadline: float) -> dict[str, Any] | None:
        """Relay log lines until the worker's final message or the end of its output."""
        lines = _Lines(fd)
        logged = 0
        while True:
            if self.cancel is not None and self.cancel.is_set():
                self.stop(IngestionInterrupted("the operator is shutting down"))
                return None
            if time.monotonic() > deadline:
                self.stop(IngestionTimedOut("ingestion did not finish within its time budget (MIOSA_INGEST_TIMEOUT)"))
                return None
            if not select.select([fd], [], [], _POLL)[0]:
                continue
            for message in lines.read():
                if "log" not in message:
                    return message
                if logged < _MAX_LOG_LINES:
                    log(str(message["log"]))
                    logged += 1
            if lines.eof:
                return None

    def stop(self, why: Exception) -> None:
        with self._lock:
            if self.stopped is None:
                self.stopped = why
        self.kill()

    def kill(self) -> None:
        with self._lock:
            if not self._closed and self.process.exitcode is None:
                self.process.kill()

    def finish(self, decided: bool, keep: bool = False) -> None:
        """After its verdict a one-job worker exits by itself, and a warm one that may go on
        goes back to ``WARM``; otherwise the worker is killed. Either way it is joined."""
        if keep and isinstance(self.process, _WarmWorker) and self.process.alive():
            with self._lock:
                self._closed = True
            WARM.give_back(self.process)
            return
        if decided and not isinstance(self.process, _WarmWorker):
            self.process.join(timeout=10.0)
        self.kill()
        self.process.join()
        with self._lock:
            self.exitcode = self.process.exitcode
            self._closed = True
            self.process.close()


class _Lines:
    """JSON lines from the worker, each bounded."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = b""
        self.eof = False

    def read(self) -> list[dict[str, Any]]:
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            self.eof = True
            return []
        self._pending += chunk
        *complete, self._pending = self._pending.split(b"\n")
        if len(self._pending) > _MAX_LINE:
            raise WorkerCrashed("the ingestion worker wrote an over-long message")
        try:
            return [json.loads(line) for line in complete if line.strip()]
        except ValueError as exc:
            raise WorkerCrashed(f"the ingestion worker wrote an unreadable message: {exc}") from None


class _Pump:
    """Copies the source into the worker's bundle pipe, on a thread of its own."""

    def __init__(self, source: BinaryIO, sink: IO[bytes], run: _Run) -> None:
        self._source = source
        self._sink = sink
        self._run = run
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._copy, name="ingest-pump", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        try:
            while True:
                try:
                    chunk = self._source.read(CHUNK)
                except Exception as exc:  # noqa: BLE001 - the caller's error, raised unchanged
                    self.error = exc
                    self._run.kill()  # before EOF: a cut-off stream is not a truncated bundle
                    return
                if not chunk:
                    return
                self._sink.write(chunk)
        except (BrokenPipeError, ValueError, OSError):
            pass  # the worker stopped reading: it decided, or it was killed
        finally:
            try:
                self._sink.close()
            except OSError:
                pass

    def join(self) -> None:
        # A store read in progress cannot be interrupted; it ends with the store's own read
        # timeout and then finds the pipe closed. Nothing waits for it beyond this.
        self._thread.join(timeout=1.0)


def _conclude(verdict: dict[str, Any] | None, exitcode: int | None, budget: Budget) -> IngestResult:
    if verdict is not None and "result" in verdict:
        fields = dict(verdict["result"])
        fields["manifest"] = Manifest(**fields["manifest"])
        return IngestResult(**fields)
    if verdict is not None and "rejected" in verdict:
        reason, message = verdict["rejected"]["reason"], verdict["rejected"]["message"]
        used = verdict.get("usage") or {}
        limit = used.get("vm_limit") or budget.memory_bytes
        if reason == Reason.CORRUPT_BUNDLE and used.get("peak_vm", 0) >= limit - _MEMORY_HEADROOM:
            reason = Reason.RESOURCE_LIMIT_EXCEEDED
            message = f"ingestion needed more than its {human(budget.memory_bytes)} of memory (MIOSA_INGEST_MEMORY)"
        raise BundleRejected(reason, message)
    if exitcode == -signal.SIGXCPU:
        raise BundleRejected(
            Reason.RESOURCE_LIMIT_EXCEEDED,
            f"ingestion used more than its {budget.cpu_seconds} s of CPU time (MIOSA_INGEST_CPU_SECONDS)",
        )
    how = f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit status {exitcode}"
    raise WorkerCrashed(f"the ingestion worker died without a verdict ({how})")
