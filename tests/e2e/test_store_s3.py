"""The S3 store against the real S3 server (versitygw): write-once without a HEAD first."""

from __future__ import annotations

import io
import threading

from miosa_operator.settings import Settings
from miosa_operator.store.s3store import S3Store

from .conftest import RELEASES_BUCKET, Environment


def test_concurrent_conditional_puts_have_one_winner(env: Environment, namespace: str) -> None:
    """If-None-Match alone keeps a release write-once: twelve writers at once, one wins, and
    the stored bytes are the winner's, whole."""
    store = S3Store(Settings.from_env(env.values).s3_config)
    assert not store.config.head_before_put
    uri = f"s3://{RELEASES_BUCKET}/{namespace}/race/dist.tar.zst"
    payloads = [bytes([index]) * (512 << 10) for index in range(12)]
    barrier = threading.Barrier(len(payloads))
    results: list[bool | BaseException] = [False] * len(payloads)

    def write(index: int) -> None:
        barrier.wait()
        try:
            results[index] = store.put_if_absent(uri, io.BytesIO(payloads[index]), size=len(payloads[index]))
        except BaseException as exc:  # noqa: BLE001 - a transient 409 is allowed, reported below
            results[index] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, result in enumerate(results) if result is True]
    assert len(winners) == 1, results
    assert all(r is False or r is True or "concurrent conditional write" in str(r) for r in results), results
    with store.open_read(uri) as reader:
        assert reader.read() == payloads[winners[0]]
