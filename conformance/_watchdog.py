"""`LoopWatch`: notices an event loop that stopped turning, from another thread.

A backend that blocks the loop (``executor.shutdown(wait=True)`` inside
``async def shutdown``, say) while one of the suite's blocking tasks runs
would otherwise stay stuck until that task gives up on its own: every wait
of the test is a loop callback, so none of them can fire. The watch pings
the loop from a thread; when a ping has gone unanswered for `STALL_LIMIT`
seconds it calls ``on_stall`` (the runner lets the test's blocking tasks
go, so the backend can return and the test can judge what happened).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

__all__ = ["STALL_LIMIT", "LoopWatch"]

STALL_LIMIT = 3.0
"""Seconds the loop may go without turning before ``on_stall`` is called.
Far above any stall a working backend causes (SC-3 allows 50 ms)."""

_PERIOD = 0.1
"""Seconds between pings."""


class LoopWatch:
    """Pings ``loop`` from a daemon thread; calls ``on_stall`` once per stall.

    Args:
        loop: The loop to watch (running in the calling thread).
        on_stall: Called from the watch's thread with the stall's length so
            far; must be thread-safe.
        limit: Seconds without a turn that count as a stall.

    Attributes:
        stalls: How many stalls were seen.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_stall: Callable[[float], None],
        limit: float = STALL_LIMIT,
    ) -> None:
        self.stalls = 0
        self._loop = loop
        self._on_stall = on_stall
        self._limit = limit
        self._answered = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="conformance:loop-watch", daemon=True
        )

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and wait for the thread to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _answer(self) -> None:
        self._answered = time.monotonic()

    def _watch(self) -> None:
        reported = False
        while not self._stop.wait(_PERIOD):
            try:
                self._loop.call_soon_threadsafe(self._answer)
            except RuntimeError:  # the loop is closed: nothing left to watch
                return
            silent = time.monotonic() - self._answered
            if silent < self._limit:
                reported = False
            elif not reported:
                reported = True
                self.stalls += 1
                self._on_stall(silent)
