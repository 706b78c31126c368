"""`DueStates`: states held back until their due time, delivered in bursts.

One timer (``loop.call_at``) for all of them: the earliest due state arms
it, and each firing delivers at most `BURST` states, so a burst never
stalls the loop for long (SC-3).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BURST", "DueStates"]

BURST = 256
"""Most states delivered per loop turn."""

_E = TypeVar("_E")


class DueStates(Generic[_E]):
    """A heap of ``(due, order, entry, terminal?)`` and the pump that empties it.

    Args:
        deliver: Called with ``(entry, terminal)`` when a held state is due.
    """

    def __init__(self, deliver: Callable[[_E, bool], None]) -> None:
        self._deliver = deliver
        self._heap: list[tuple[float, int, _E, bool]] = []
        self._order = itertools.count()
        self._handle: asyncio.Handle | None = None
        self._armed_at = math.inf
        self.loop: asyncio.AbstractEventLoop | None = None

    def hold(self, due: float, entry: _E, terminal: bool) -> None:
        """Deliver the entry's RUNNING (or terminal state) at loop time ``due``."""
        heapq.heappush(self._heap, (due, next(self._order), entry, terminal))
        if due < self._armed_at and self.loop is not None:
            if self._handle is not None:
                self._handle.cancel()
            self._armed_at = due
            self._handle = self.loop.call_at(due, self._pump)

    def _pump(self) -> None:
        """Deliver what is due, at most `BURST` states, then re-arm."""
        loop = self.loop
        self._handle = None
        self._armed_at = math.inf
        if loop is None:
            return
        heap = self._heap
        now = loop.time()
        for _ in range(BURST):
            if not heap or heap[0][0] > now:
                break
            _, _, entry, terminal = heapq.heappop(heap)
            self._deliver(entry, terminal)
        if not heap or self._handle is not None:
            return
        if heap[0][0] <= now:
            # More is due: on the next turn, so other work runs in between.
            self._armed_at = -math.inf
            self._handle = loop.call_soon(self._pump)
        else:
            self._armed_at = heap[0][0]
            self._handle = loop.call_at(self._armed_at, self._pump)

    def clear(self) -> None:
        """Stop the pump and forget every held state (shutdown delivers them)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf
        self._heap = []
