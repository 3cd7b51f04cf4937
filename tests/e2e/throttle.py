"""A TCP proxy on loopback that trickles the server's answers while throttled.

Put in front of the real S3 server, it turns every bundle download into a slow one (a
tenant's slow or stalling upload source) without changing a byte: requests pass through at
full speed and SigV4 signatures stay valid (the Host header is the client's, unchanged).
``release()`` lets everything through at full speed so the slow work can finish.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType


class ThrottlingProxy:
    def __init__(self, listen_port: int, upstream_host: str, upstream_port: int, chunk: int = 512, pause: float = 0.25) -> None:
        self.listen_port, self.upstream = listen_port, (upstream_host, upstream_port)
        self.chunk, self.pause = chunk, pause
        self.throttled = threading.Event()
        self.throttled.set()
        self.active = 0
        """Connections open right now."""
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="throttling-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def release(self) -> None:
        self.throttled.clear()

    def __enter__(self) -> ThrottlingProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

        async def stop() -> None:
            if self._server:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.active += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            with self._lock:
                self.active -= 1
            return
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer, slow=False),
                self._pipe(upstream_reader, client_writer, slow=True),
            )
        finally:
            with self._lock:
                self.active -= 1
            for writer in (client_writer, upstream_writer):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool) -> None:
        try:
            while True:
                throttled = slow and self.throttled.is_set()
                data = await reader.read(self.chunk if throttled else 1 << 16)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                if throttled:
                    await asyncio.sleep(self.pause)
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                pass
