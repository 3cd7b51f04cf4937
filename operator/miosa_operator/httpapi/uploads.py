"""Publishing a bundle over HTTP: spool the request body to disk, hash it, store it.

Design decisions:

* **Streamed, never held in memory.** The body is written chunk by chunk to a temporary
  file in ``spool_dir`` while its sha256 is computed; memory use is one chunk.  The file is
  then stored with the artifact store's write-once ``put_if_absent`` (boto3, in a worker
  thread), and deleted whatever happens.
* **Hostile bodies end early.** A ``Content-Length`` above the cap is refused before a byte
  is read; a chunked body is cut off at the cap; a body that stalls longer than
  ``body_idle_timeout`` is dropped (408), so a slow client cannot hold a slot forever.
  Uploads in flight are capped overall and per tenant (429), so one tenant cannot exhaust
  the disk or the slots of the others.
* **Content-addressed, in the tenant's own prefix.** The object is
  ``<uploads>/<namespace>/<dep id>/<sha256>.<ext>``: the namespace comes from the resolved
  Deployment, never from the request; the same bundle published twice is stored once.  The
  format comes from the magic bytes (the operator checks every member later).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from ..ingest.errors import BundleRejected
from ..ingest.streams import detect_format
from ..store.base import join_uri
from .errors import ApiError, Code

HEAD_BYTES = 1024


@dataclass(frozen=True)
class Spooled:
    path: str
    size: int
    sha256: str
    format: str  # tar.zst, tar.gz or tar


def too_large(limit: int) -> ApiError:
    return ApiError(413, Code.PAYLOAD_TOO_LARGE, f"the request body is larger than {limit} bytes")


def body_stalled(seconds: float) -> ApiError:
    return ApiError(408, Code.REQUEST_TIMEOUT, f"the request body stalled for more than {seconds:g} s")


def check_declared_length(content_length: str | None, limit: int) -> None:
    """Refuse an oversized body before reading it (400 for a malformed header)."""
    if content_length is None:
        return
    if not content_length.isdigit():
        raise ApiError(400, Code.INVALID_PARAMETER, "Content-Length is not a number")
    if int(content_length) > limit:
        raise too_large(limit)


async def with_idle_timeout(chunks: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The same chunks, or 408 when the next one takes longer than ``seconds``."""
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), timeout=seconds)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise body_stalled(seconds) from exc
        yield chunk


async def spool(chunks: AsyncIterator[bytes], directory: str, limit: int) -> Spooled:
    """Write the body to a temporary file with its sha256 and format; the caller deletes it."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    fd, path = tempfile.mkstemp(prefix="miosa-upload-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                digest.update(chunk)
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                out.write(chunk)  # page cache; a chunk is at most what the server read at once
        if size == 0:
            raise ApiError(400, Code.INVALID_PARAMETER, "the request body is empty: send the bundle (.tar.zst, .tar.gz or .tar)")
        try:
            fmt = detect_format(head)
        except BundleRejected as exc:
            raise ApiError(415, Code.UNSUPPORTED_MEDIA_TYPE, exc.message) from exc
        return Spooled(path, size, digest.hexdigest(), fmt)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def upload_uri(uploads_uri: str, namespace: str, deployment_id: str, sha256: str, fmt: str) -> str:
    """Where a tenant's published bundle is stored (see the module docstring)."""
    return join_uri(uploads_uri, namespace, deployment_id, f"{sha256}.{fmt}")


class UploadSlots:
    """Uploads in flight, overall and per tenant; 429 beyond either cap."""

    def __init__(self, total: int, per_tenant: int) -> None:
        self.total, self.per_tenant = total, per_tenant
        self._busy: Counter[str] = Counter()

    @contextlib.contextmanager
    def take(self, namespace: str) -> Iterator[None]:
        if sum(self._busy.values()) >= self.total or self._busy[namespace] >= self.per_tenant:
            raise ApiError(429, Code.TOO_MANY_UPLOADS, "too many uploads in progress; retry in a moment")
        self._busy[namespace] += 1
        try:
            yield
        finally:
            self._busy[namespace] -= 1
            if not self._busy[namespace]:
                del self._busy[namespace]
