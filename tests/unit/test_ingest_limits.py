"""Ingestion against hostile bundles, measured with resource limits rather than timing.

Every shape of issue 9 (and the two tarfile CVEs) runs through ``ingest_isolated``: a child
process whose address space and CPU time are capped well below what the shape used before
these caps existed. Each must end in its own reason — not in ``ResourceLimitExceeded``, which
would mean the reader itself was not bounded — and the accepted worst case must fit the
default budget. The isolation's own exits (limits, source failures, cancellation, timeouts,
crashes) are tested at the end.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

import hostile_bundles as hostile
from miosa_operator.ingest import BuildLog, BundleRejected, IngestLimits, ingest_bundle, isolation
from miosa_operator.ingest import worker as worker_module
from miosa_operator.ingest.isolation import (
    WARM,
    Budget,
    IngestionInterrupted,
    IngestionTimedOut,
    Usage,
    WarmWorkers,
    WorkerCrashed,
    ingest_isolated,
)
from miosa_operator.ingest.pax import sanitise_pax

MiB = 1 << 20
SMALL = Budget(memory_bytes=192 * MiB, cpu_seconds=20, wall_seconds=300)
"""A budget far below what the shapes took before: 3.3 GiB and 38 s for the deep directories,
820 MiB for the sparse map, 9 s of CPU per slow pax header."""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def isolated(
    data: bytes, budget: Budget = SMALL, limits: IngestLimits = IngestLimits(), source: io.RawIOBase | None = None, **kw: object
) -> tuple[str, Usage | None]:
    """Ingest in a limited worker; the verdict ("accepted" or the reason) and the usage."""
    seen: list[Usage] = []
    with tempfile.TemporaryFile() as out:
        try:
            ingest_isolated(
                source or io.BytesIO(data),  # type: ignore[arg-type]
                out,
                expected_sha256=sha(data),
                limits=limits,
                budget=budget,
                usage=seen.append,
                **kw,  # type: ignore[arg-type]
            )
        except BundleRejected as rejected:
            return rejected.reason, seen[0] if seen else None
    return "accepted", seen[0]


# --------------------------------------------------------------------------- every shape


@pytest.mark.parametrize("name", list(hostile.SHAPES))
def test_each_hostile_shape_ends_in_its_reason_within_a_small_budget(name: str) -> None:
    shape = hostile.SHAPES[name]
    verdict, usage = isolated(shape.build())
    assert verdict == (shape.reason or "accepted"), shape.what
    assert usage is not None and usage.peak_vm < SMALL.memory_bytes and usage.cpu_seconds < SMALL.cpu_seconds


def test_the_widest_accepted_bundle_fits_the_default_budget_with_room() -> None:
    verdict, usage = isolated(hostile.widest_accepted(), budget=Budget())
    assert verdict == "accepted"
    assert usage is not None and usage.peak_vm < Budget().memory_bytes * 0.6


# --------------------------------------------------------------------------- path depth


def test_path_depth_is_capped_and_configurable() -> None:
    at_cap = hostile.tar_of({"index.html": b"x", "/".join(["d"] * 31) + "/f.html": b"x"})
    over = hostile.tar_of({"index.html": b"x", "/".join(["d"] * 32) + "/f.html": b"x"})
    assert run(at_cap) == "accepted"
    assert run(over) == "UnsafePath"
    assert run(over, IngestLimits(max_path_depth=33)) == "accepted"
    assert (
        run(hostile.tar_of({"a/b/index.html": b"x"}), IngestLimits(max_path_depth=2), entrypoint="a/b/index.html") == "UnsafePath"
    )


def test_duplicates_and_file_as_directory_are_still_found_without_keeping_paths() -> None:
    file_then_child = hostile.tar_of({"index.html": b"x", "a/b": b"1", "a/b/c": b"2"})
    child_then_file = hostile.tar_of({"index.html": b"x", "a/b/c": b"1", "a/b": b"2"})
    assert run(file_then_child) == run(child_then_file) == "DuplicateMember"
    with pytest.raises(BundleRejected, match="'a/b/c' is inside 'a/b', which is a file"):
        ingest_bundle(io.BytesIO(file_then_child), io.BytesIO(), expected_sha256=sha(file_then_child))


def run(data: bytes, limits: IngestLimits = IngestLimits(), **kwargs: object) -> str:
    try:
        ingest_bundle(io.BytesIO(data), io.BytesIO(), expected_sha256=sha(data), limits=limits, **kwargs)  # type: ignore[arg-type]
    except BundleRejected as rejected:
        return rejected.reason
    return "accepted"


# --------------------------------------------------------------------------- zstd window


def test_zstd_window_is_capped_and_configurable() -> None:
    tar = hostile.tar_of({"index.html": b"x", "noise.bin": os.urandom(1 * MiB)})
    eight = hostile.zst(tar, window_log=23)
    sixteen = hostile.zst(tar, window_log=24)
    assert zstandard.get_frame_parameters(sixteen).window_size == 16 * MiB
    assert run(eight) == "accepted"
    assert run(sixteen) == "ZstdWindowTooLarge"
    assert run(sixteen, IngestLimits(max_zstd_window_bytes=16 * MiB)) == "accepted"
    assert run(eight, IngestLimits(max_zstd_window_bytes=4 * MiB)) == "ZstdWindowTooLarge"


def test_single_segment_frames_are_judged_by_their_content_size() -> None:
    tar = hostile.tar_of({"index.html": b"x", "noise.bin": os.urandom(3 * MiB)})
    framed = zstandard.ZstdCompressor(level=19).compress(tar)  # content <= level 19's window: single segment
    assert framed[4] & 0x20 and zstandard.get_frame_parameters(framed).window_size == len(tar)
    assert run(framed) == "accepted"
    assert run(framed, IngestLimits(max_zstd_window_bytes=2 * MiB)) == "ZstdWindowTooLarge"


# --------------------------------------------------------------------------- pax headers


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        (hostile.pax_record(b"GNU.sparse.major", b"1"), "UnsafeMemberType"),
        (hostile.pax_record(b"GNU.sparse.name", b"index.html"), "UnsafeMemberType"),
        (hostile.pax_record(b"GNU.sparse.realsize", b"99999999"), "UnsafeMemberType"),
        (hostile.pax_record(b"GNU.sparse.map", b"0,1"), "UnsafeMemberType"),
        (hostile.pax_record(b"size", b"-1"), "CorruptBundle"),
        (hostile.pax_record(b"size", b"12abc"), "CorruptBundle"),
        (hostile.pax_record(b"mtime", b"yesterday"), "CorruptBundle"),
        (b"12 path=x\n", "CorruptBundle"),  # declares more than the header holds
        (b"999999999999999999999999 path=x\n", "CorruptBundle"),
        (b"10 path=xyz", "CorruptBundle"),  # the record does not end in a newline
        (hostile.pax_record(b"path", b"a" * 1025), "UnsafePath"),
    ],
    ids=[
        "sparse major",
        "sparse name",
        "sparse realsize",
        "sparse map",
        "negative size",
        "garbled size",
        "garbled mtime",
        "bad length",
        "huge length",
        "no newline",
        "long path",
    ],
)
def test_pax_records_are_checked_before_tarfile_parses_them(records: bytes, reason: str) -> None:
    bundle = hostile.member(b"index.html", b"x") + hostile.pax_header(records) + hostile.member(b"a.html", b"x") + hostile.end()
    assert run(bundle) == reason


@pytest.mark.parametrize("key", [b"path", b"size"])
def test_a_global_header_may_not_rename_or_resize_every_member(key: bytes) -> None:
    records = hostile.pax_record(key, b"index.html" if key == b"path" else b"1")
    bundle = hostile.pax_header(records, kind=b"g") + hostile.member(b"index.html", b"x") + hostile.end()
    assert run(bundle) == "CorruptBundle"


def test_only_the_records_ingestion_uses_reach_tarfile() -> None:
    records = (
        hostile.pax_record(b"comment", b"1" * 5000)
        + hostile.pax_record(b"path", b"old.html")
        + hostile.pax_record(b"SCHILY.xattr.user.x", b"y")
        + hostile.pax_record(b"path", b"new.html")
        + hostile.pax_record(b"hdrcharset", b"BINARY")
        + hostile.pax_record(b"mtime", b"1700000000.5")
    )
    clean = sanitise_pax(records, is_global=False, max_path_bytes=1024)
    assert len(clean) == len(records)
    kept = clean.rstrip(b"\0")
    assert kept == hostile.pax_record(b"hdrcharset", b"BINARY") + hostile.pax_record(b"path", b"new.html") + hostile.pax_record(
        b"mtime", b"1700000000.5"
    )


def test_pax_path_and_mtime_still_apply() -> None:
    bundle = hostile.pax_header(hostile.pax_record(b"path", b"dir/index.html") + hostile.pax_record(b"mtime", b"1234.5"))
    bundle += hostile.member(b"short", b"hello") + hostile.end()
    out = io.BytesIO()
    result = ingest_bundle(io.BytesIO(bundle), out, expected_sha256=sha(bundle), entrypoint="dir/index.html")
    assert result.manifest.files == 1
    with tarfile_of(out.getvalue()) as archive:
        (member,) = [m for m in archive.getmembers() if m.isfile()]
        assert (member.name, member.mtime) == ("dir/index.html", 1234)


def tarfile_of(canonical: bytes):  # type: ignore[no-untyped-def]
    import tarfile

    return tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(canonical)), mode="r:")


# --------------------------------------------------------------------------- the tarfile CVEs


PYTHON_3_11_HDRCHARSET = rb"\d+ hdrcharset=([^\n]+)\n"
"""The expression CPython's tarfile used on every pax header until CVE-2024-6232 was fixed."""


def cpu_limited(code: str, seconds: int) -> subprocess.CompletedProcess[bytes]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 2))

    return subprocess.run([sys.executable, "-c", code], preexec_fn=limit, capture_output=True, timeout=600)


def test_cve_2024_6232_the_slow_header_is_slow_for_the_unpatched_expression() -> None:
    """The control: one of our slow headers costs CPython 3.11's own expression more than
    2 s of CPU (it is killed by the CPU limit), whichever interpreter runs this test."""
    record = hostile.pax_record(b"comment", b"1" * 60_000)
    code = f"import re; re.search({PYTHON_3_11_HDRCHARSET!r}, {record!r}); print('finished')"
    finished = cpu_limited(code, 2)
    assert finished.returncode == -signal.SIGXCPU, finished


def test_cve_2024_6232_our_reader_is_immune_whatever_the_interpreter() -> None:
    """Fifty such headers would cost an unpatched tarfile ~450 s of CPU; ours reads them in a
    worker limited to 10 s, and the bundle is an ordinary one."""
    bundle = hostile.slow_pax_headers(count=50)
    verdict, usage = isolated(bundle, Budget(memory_bytes=192 * MiB, cpu_seconds=10, wall_seconds=300))
    assert verdict == "accepted"
    assert usage is not None and usage.cpu_seconds < 10


@pytest.mark.parametrize("bundle", [hostile.negative_size(), hostile.negative_pax_size()], ids=["base-256", "pax"])
def test_cve_2025_8194_negative_sizes_are_refused_whatever_the_interpreter(bundle: bytes) -> None:
    verdict, _usage = isolated(bundle, Budget(memory_bytes=128 * MiB, cpu_seconds=5, wall_seconds=120))
    assert verdict == "CorruptBundle"


# --------------------------------------------------------------------------- nothing echoed


def test_checksum_mismatch_never_reveals_the_actual_digest() -> None:
    bundle = hostile.tar_of({"index.html": b"secret page"})
    log = BuildLog()
    with pytest.raises(BundleRejected) as caught:
        ingest_bundle(io.BytesIO(bundle), io.BytesIO(), expected_sha256="a" * 64, log=log.line)
    assert caught.value.reason == "ChecksumMismatch"
    text = caught.value.message + log.render().decode()
    assert sha(bundle) not in text and "a" * 64 in caught.value.message


@pytest.mark.parametrize("head", [b"<html>secret-token-1234</html>" * 30, b"PK\x03\x04secret" + bytes(600)])
def test_not_an_archive_never_shows_the_first_bytes(head: bytes) -> None:
    with pytest.raises(BundleRejected) as caught:
        ingest_bundle(io.BytesIO(head), io.BytesIO(), expected_sha256=sha(head))
    assert caught.value.reason == "NotAnArchive"
    assert "secret" not in caught.value.message and head[:4].hex() not in caught.value.message.replace(" ", "")


# --------------------------------------------------------------------------- the isolation itself


def test_the_worker_writes_the_same_release_as_in_process_ingestion() -> None:
    bundle = hostile.zst(hostile.tar_of({"index.html": hostile.PAGE, "a/b.css": b"body{}" * 500}))
    local = io.BytesIO()
    expected = ingest_bundle(io.BytesIO(bundle), local, expected_sha256=sha(bundle))
    lines: list[str] = []
    with tempfile.TemporaryFile() as out:
        result = ingest_isolated(io.BytesIO(bundle), out, expected_sha256=sha(bundle), log=lines.append)
        out.seek(0)
        assert out.read() == local.getvalue()
    assert result == expected
    assert any(line.startswith("checked 2 members") for line in lines)


def test_a_bundle_over_the_memory_budget_is_resource_limit_exceeded() -> None:
    verdict, _ = isolated(hostile.widest_accepted(), Budget(memory_bytes=96 * MiB, cpu_seconds=60))
    assert verdict == "ResourceLimitExceeded"


def test_a_bundle_over_the_cpu_budget_is_resource_limit_exceeded() -> None:
    with pytest.raises(BundleRejected, match=r"more than its 1 s of CPU time") as caught:
        isolated_raising(hostile.widest_accepted(), Budget(cpu_seconds=1))
    assert caught.value.reason == "ResourceLimitExceeded"


def isolated_raising(data: bytes, budget: Budget) -> None:
    with tempfile.TemporaryFile() as out:
        ingest_isolated(io.BytesIO(data), out, expected_sha256=sha(data), budget=budget)


class Source(io.RawIOBase):
    """Serves ``data``; after ``good`` bytes calls ``then`` (which may raise or block)."""

    def __init__(self, data: bytes, good: int, then: object) -> None:
        super().__init__()
        self._data, self._good, self._then, self._pos = data, good, then, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._pos >= self._good:
            self._then()  # type: ignore[operator]
        chunk = self._data[self._pos : min(len(self._data), self._pos + len(buffer))]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def no_workers_left() -> bool:
    return not [p for p in multiprocessing.active_children() if p.name == "miosa-ingest"]


BIG = hostile.tar_of({"index.html": hostile.PAGE, "noise.bin": os.urandom(8 * MiB)})


def test_a_failing_source_raises_its_own_error_and_the_worker_is_gone() -> None:
    error = TimeoutError("the store went away")

    def fail() -> None:
        raise error

    with pytest.raises(TimeoutError) as caught:
        isolated(BIG, source=io.BufferedReader(Source(BIG, 3 * MiB, fail)))
    assert caught.value is error
    assert no_workers_left()


def test_cancel_interrupts_and_kills_the_worker() -> None:
    cancel, blocked = threading.Event(), threading.Event()

    def block() -> None:
        cancel.set()
        blocked.wait(30)

    with pytest.raises(IngestionInterrupted):
        isolated(BIG, source=io.BufferedReader(Source(BIG, 2 * MiB, block)), cancel=cancel)
    blocked.set()
    assert no_workers_left()


def test_a_stuck_source_times_out_and_the_worker_is_killed() -> None:
    release = threading.Event()
    with pytest.raises(IngestionTimedOut):
        isolated(BIG, budget=Budget(wall_seconds=1.5), source=io.BufferedReader(Source(BIG, 2 * MiB, lambda: release.wait(30))))
    release.set()
    assert no_workers_left()


def test_a_worker_killed_from_outside_is_a_crash_not_a_verdict() -> None:
    def kill_worker() -> None:
        for child in multiprocessing.active_children():
            if child.name == "miosa-ingest" and child.pid:
                os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(WorkerCrashed, match=re.escape(f"signal {int(signal.SIGKILL)}")):
        isolated(BIG, source=io.BufferedReader(Source(BIG, 3 * MiB, kill_worker)))
    assert no_workers_left()


# --------------------------------------------------------------------------- graceful stop


def test_the_stop_signal_reaches_ingestions_before_kopf_reacts() -> None:
    """kopf installs its SIGTERM handler on the loop; the loop adds ``STOPPING`` to it."""
    import asyncio

    from miosa_operator import lifecycle

    seen: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, lambda: (seen.append(1), stopped.set()))  # what kopf does
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stopped.wait(), 10)
        loop.remove_signal_handler(signal.SIGTERM)

    lifecycle.STOPPING.clear()
    with asyncio.Runner(loop_factory=lifecycle.StopAwareLoop) as runner:
        runner.run(main())
    assert seen == [1] and lifecycle.STOPPING.is_set()
    lifecycle.STOPPING.clear()


def test_the_fork_server_starts_without_the_operators_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from multiprocessing import forkserver

    from miosa_operator.ingest import isolation

    monkeypatch.setenv("MIOSA_S3_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "t0ken")
    forkserver._forkserver._stop()  # type: ignore[attr-defined]  # a fresh one for this test
    isolation.start_fork_server()
    assert os.environ["MIOSA_S3_SECRET_ACCESS_KEY"] == "s3cr3t"  # the operator keeps its own
    verdict, _ = isolated(hostile.tar_of({"index.html": b"x"}))  # served by that server
    assert verdict == "accepted"
    server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    environ = Path(f"/proc/{server}/environ").read_bytes()
    assert b"s3cr3t" not in environ and b"t0ken" not in environ and b"PATH=" in environ


def test_a_worker_that_dies_as_the_operator_stops_is_an_interruption_not_a_crash() -> None:
    """A stop signal sent to the whole process group can end the worker (through the fork
    server) a moment before the operator sees it: still a graceful stop, not a crash."""
    cancel = threading.Event()

    def stop_everything() -> None:
        for child in multiprocessing.active_children():
            if child.name == "miosa-ingest" and child.pid:
                os.kill(child.pid, signal.SIGKILL)
        threading.Timer(0.3, cancel.set).start()

    with pytest.raises(IngestionInterrupted):
        isolated(BIG, source=io.BufferedReader(Source(BIG, 3 * MiB, stop_everything)), cancel=cancel)
    assert no_workers_left()


def test_workers_ignore_stop_signals_meant_for_the_operator() -> None:
    """SIGTERM to the process group: the worker carries on, the operator decides."""

    def term_worker() -> None:
        for child in multiprocessing.active_children():
            if child.name == "miosa-ingest" and child.pid:
                os.kill(child.pid, signal.SIGTERM)

    verdict, _ = isolated(BIG, source=io.BufferedReader(Source(BIG, 3 * MiB, term_worker)))
    assert verdict == "accepted"


# --------------------------------------------------------------------------- warm workers


@pytest.fixture
def warm() -> Iterator[WarmWorkers]:
    WARM.retire_all()
    yield WARM
    WARM.retire_all()


SMALL_SITE = hostile.zst(hostile.tar_of({"index.html": hostile.PAGE, "a.css": b"body{}" * 200}))
ROOMY = Budget(memory_bytes=1024 * MiB, cpu_seconds=60, wall_seconds=300)


def test_a_tenants_next_bundle_goes_to_its_warm_worker(warm: WarmWorkers) -> None:
    local = io.BytesIO()
    expected = ingest_bundle(io.BytesIO(SMALL_SITE), local, expected_sha256=sha(SMALL_SITE))
    pids = []
    for _ in range(3):
        with tempfile.TemporaryFile() as out:
            assert ingest_isolated(io.BytesIO(SMALL_SITE), out, expected_sha256=sha(SMALL_SITE), tenant="a") == expected
            out.seek(0)
            assert out.read() == local.getvalue()
        pids.append(warm.pids())
    assert len(pids[0]) == 1 and pids[0] == pids[1] == pids[2]


def test_a_warm_worker_never_takes_another_tenants_bundle(warm: WarmWorkers) -> None:
    assert isolated(SMALL_SITE, tenant="a")[0] == "accepted"
    (worker_a,) = warm.pids()
    assert isolated(SMALL_SITE, tenant="b")[0] == "accepted"
    worker_b = next(pid for pid in warm.pids() if pid != worker_a)
    assert isolated(SMALL_SITE, tenant="a")[0] == "accepted"
    assert sorted(warm.pids()) == sorted([worker_a, worker_b])


def test_each_job_of_a_warm_worker_gets_its_own_cpu_budget(warm: WarmWorkers) -> None:
    verdict, used = isolated(hostile.widest_accepted(), ROOMY, tenant="a")
    assert verdict == "accepted" and used is not None and used.cpu_seconds > 1
    (worker,) = warm.pids()
    verdict, _ = isolated(SMALL_SITE, Budget(memory_bytes=ROOMY.memory_bytes, cpu_seconds=1), tenant="a")
    assert verdict == "accepted" and warm.pids() == [worker]  # the 1 s counts from this job's start
    verdict, _ = isolated(hostile.widest_accepted(), Budget(memory_bytes=ROOMY.memory_bytes, cpu_seconds=1), tenant="a")
    assert verdict == "ResourceLimitExceeded" and warm.pids() == []  # SIGXCPU: that worker is gone


def test_a_rejected_bundle_keeps_the_worker(warm: WarmWorkers) -> None:
    assert isolated(b"not an archive at all" * 50, tenant="a")[0] == "NotAnArchive"
    (worker,) = warm.pids()
    assert isolated(SMALL_SITE, tenant="a")[0] == "accepted" and warm.pids() == [worker]


def test_a_reused_worker_gives_each_job_the_room_a_fresh_one_would(warm: WarmWorkers) -> None:
    budget = Budget(memory_bytes=192 * MiB, cpu_seconds=60)
    first, used = isolated(hostile.widest_accepted(), budget, tenant="a")
    assert first == "accepted" and used is not None and used.vm_limit == budget.memory_bytes
    (worker,) = warm.pids()
    second, again = isolated(hostile.widest_accepted(), budget, tenant="a")
    assert second == "accepted" and warm.pids() == [worker] and again is not None
    # the second job's limit: the budget plus what the first left mapped (its start is the worker's base)
    assert budget.memory_bytes < again.vm_limit <= budget.memory_bytes + worker_module.REUSE_SLACK


@pytest.mark.parametrize(
    ("usage", "reusable"),
    [
        ({"peak_vm": 120 * MiB, "vm": 90 * MiB, "vm_base": 40 * MiB}, True),
        ({"peak_vm": 230 * MiB, "vm": 90 * MiB, "vm_base": 40 * MiB}, False),  # came near its limit
        ({"peak_vm": 120 * MiB, "vm": 120 * MiB, "vm_base": 40 * MiB}, False),  # keeps too much mapped
        ({}, False),
    ],
)
def test_which_workers_take_another_job(usage: dict[str, int], reusable: bool) -> None:
    assert isolation._reusable({"result": {}, "usage": usage}, Budget()) is reusable
    assert isolation._reusable({"rejected": {"reason": "ResourceLimitExceeded"}, "usage": usage}, Budget()) is False


def a_killed_idle_worker(warm: WarmWorkers) -> int:
    """Tenant a's warm worker after one job, killed while idle and reaped."""
    assert isolated(SMALL_SITE, tenant="a")[0] == "accepted"
    (worker,) = warm.pids()
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:  # until reaped
        time.sleep(0.01)
    return worker


def test_a_warm_worker_killed_between_jobs_is_replaced(warm: WarmWorkers) -> None:
    worker = a_killed_idle_worker(warm)
    assert isolated(SMALL_SITE, tenant="a")[0] == "accepted"
    assert warm.pids() != [worker] and len(warm.pids()) == 1


def test_a_warm_worker_that_dies_after_it_was_found_alive_is_replaced(warm: WarmWorkers, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = a_killed_idle_worker(warm)
    # the moment between the liveness check and the job's send: it still looks alive
    monkeypatch.setattr(isolation._WarmWorker, "alive", lambda self: True)
    assert isolated(SMALL_SITE, tenant="a")[0] == "accepted"  # not a crash counted against the version
    assert warm.pids() != [worker] and len(warm.pids()) == 1


def test_a_warm_worker_killed_during_a_job_is_a_crash_and_not_kept(warm: WarmWorkers) -> None:
    def kill_worker() -> None:
        for child in multiprocessing.active_children():
            if child.name == "miosa-ingest" and child.pid:
                os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(WorkerCrashed):
        isolated(BIG, source=io.BufferedReader(Source(BIG, 3 * MiB, kill_worker)), tenant="a")
    assert warm.idle() == 0 and no_workers_left()


def test_idle_workers_expire_and_are_bounded(warm: WarmWorkers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "max_idle", 2)
    for tenant in ("a", "b", "c"):
        assert isolated(SMALL_SITE, tenant=tenant)[0] == "accepted"
    assert warm.idle() == 2  # the oldest (a's) was retired
    monkeypatch.setattr(warm, "idle_seconds", 1.0)
    time.sleep(1.1)
    assert isolated(SMALL_SITE, tenant="d")[0] == "accepted"
    assert warm.idle() == 1  # b's and c's expired when d's was taken
    warm.retire_all()
    assert no_workers_left()


def test_a_worker_retires_after_its_last_job(warm: WarmWorkers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "max_jobs", 2)
    assert isolated(SMALL_SITE, tenant="a")[0] == "accepted"
    (first,) = warm.pids()
    assert isolated(SMALL_SITE, tenant="a")[0] == "accepted"
    assert warm.pids() == []
    assert isolated(SMALL_SITE, tenant="a")[0] == "accepted"
    assert warm.pids() != [first]


def test_idle_workers_hold_no_ingestion_after_the_operator_exits() -> None:
    """An idle worker ignores SIGTERM; the exit hook closes its connection so the interpreter
    (and multiprocessing's own exit hook, which joins every child) does not wait forever."""
    script = (
        "import io, hashlib, tempfile\n"
        "from miosa_operator.ingest.isolation import ingest_isolated\n"
        "import hostile_bundles as h\n"
        "if __name__ == '__main__':\n"
        "    data = h.zst(h.tar_of({'index.html': h.PAGE}))\n"
        "    with tempfile.TemporaryFile() as out:\n"
        "        ingest_isolated(io.BytesIO(data), out, expected_sha256=hashlib.sha256(data).hexdigest(), tenant='a')\n"
        "    print('done')\n"
    )
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{tests}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
