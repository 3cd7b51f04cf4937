"""Running kopf so that the operator knows the moment it is asked to stop.

kopf handles SIGTERM/SIGINT itself: it stops its watchers and then waits for every handler
that is still running, ingestions included (they can take minutes), before its cleanup
handlers run; the pod would be killed first. ``STOPPING`` is set by the same signal, before
kopf's own reaction, so a running ingestion ends its worker at once and releases its attempt
(``controllers.versions``): a graceful stop never counts as a crash.

How: kopf installs its signal handlers with ``loop.add_signal_handler``; the event loop here
(``StopAwareLoop``) wraps the callbacks it is given for those two signals. No private kopf
API is touched, and kopf's behaviour is otherwise unchanged.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

STOPPING = threading.Event()
"""Set when the operator has been asked to stop (SIGTERM, SIGINT)."""

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopAwareLoop(asyncio.SelectorEventLoop):
    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:  # type: ignore[override]  # typeshed types it with a TypeVarTuple
        if sig in _STOP_SIGNALS:
            inner = callback

            def callback(*given: Any) -> None:
                STOPPING.set()
                inner(*given)

        super().add_signal_handler(sig, callback, *args)


def run(**operator_args: Any) -> None:
    """``kopf.run`` on a ``StopAwareLoop``."""
    import kopf

    with asyncio.Runner(loop_factory=StopAwareLoop) as runner:
        try:
            runner.run(kopf.operator(**operator_args))
        except asyncio.CancelledError:
            pass
