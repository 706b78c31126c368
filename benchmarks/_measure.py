"""Timing primitives: count terminal callbacks, watch the loop, trace memory.

A task counts when its terminal state reaches the callback, so every figure
is "first submit -> last terminal callback" on the event-loop thread.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Counter",
    "Sample",
    "StallWatch",
    "median",
    "traced_memory",
]

_TERMINAL = frozenset({"DONE", "FAILED", "CANCELED"})


@dataclass
class Sample:
    """One timed run of ``n`` tasks through one subject."""

    n: int
    seconds: float
    """First submit -> last terminal callback."""
    submit_seconds: float | None = None
    """How long the ``submit_tasks`` call itself took (backends only)."""
    done: int = 0
    failed: int = 0
    canceled: int = 0
    first_error: str | None = None
    off_loop_callbacks: int = 0
    """Callbacks that arrived on a thread other than the loop's (a contract breach)."""
    max_stall_ms: float | None = None
    cpu_seconds: float | None = None
    """CPU time of this whole process over the timed part (engine runs only)."""

    @property
    def rate(self) -> float:
        """Tasks per second."""
        return self.n / self.seconds if self.seconds > 0 else float("inf")


class Counter:
    """A state callback that counts terminal states and notes the last one's time.

    Args:
        n: How many terminal states complete the run.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.finished = self.loop.create_future()
        self.t_last = 0.0
        self.sample = Sample(n=n, seconds=0.0)
        if n == 0:
            self.finished.set_result(None)

    def __call__(self, task: Any, state: Any) -> None:
        """Receive ``(task, state)`` from a backend."""
        if threading.get_ident() != self._loop_thread:
            # Hop to the loop so the count stays single-threaded; note the breach.
            self.sample.off_loop_callbacks += 1
            self.loop.call_soon_threadsafe(self, task, state)
            return
        name = getattr(state, "value", state)
        if name not in _TERMINAL:
            return
        sample = self.sample
        if name == "DONE":
            sample.done += 1
        elif name == "FAILED":
            sample.failed += 1
            if sample.first_error is None and isinstance(task, dict):
                exc = task.get("exception")
                sample.first_error = repr(exc) if exc else str(task.get("stderr"))
        else:
            sample.canceled += 1
        if sample.done + sample.failed + sample.canceled == self.n:
            self.t_last = time.perf_counter()
            if not self.finished.done():
                self.finished.set_result(None)

    def count_future(self, fut: asyncio.Future[Any]) -> None:
        """Done-callback form, for raw baselines built on asyncio futures."""
        if fut.cancelled():
            self("", "CANCELED")
        elif fut.exception() is not None:
            self({"exception": fut.exception()}, "FAILED")
        else:
            self("", "DONE")

    async def wait(self, timeout: float) -> None:
        """Wait until every task is terminal.

        Raises:
            TimeoutError: Not all of them within ``timeout`` seconds.
        """
        await asyncio.wait_for(asyncio.shield(self.finished), timeout)


class StallWatch:
    """A heartbeat coroutine that records the longest gap between its ticks.

    A gap longer than the tick interval is time the loop was busy elsewhere:
    a stall, as seen by every other coroutine on that loop.

    Args:
        interval: Seconds the heartbeat sleeps between ticks.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.max_gap = 0.0
        self.full_gcs = 0
        """Full (generation 2) garbage collections while watching."""
        self.longest_gc = 0.0
        """The longest of them, in seconds."""
        self._gc_started = 0.0
        self._stop = False
        self._task: asyncio.Task[None] | None = None
        self._ticked = asyncio.Event()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # A full collection stops every thread holding the GIL, the loop too.
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.full_gcs += 1
            self.longest_gc = max(
                self.longest_gc, time.perf_counter() - self._gc_started
            )

    async def _beat(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last - self.interval)
            last = now
            self._ticked.set()

    async def __aenter__(self) -> StallWatch:
        self._task = asyncio.create_task(self._beat())
        await asyncio.wait_for(self._ticked.wait(), 5)
        self.max_gap = 0.0  # start counting from a running heartbeat
        gc.callbacks.append(self._on_gc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)
        self._stop = True
        if self._task is not None:
            await self._task

    @property
    def max_stall_ms(self) -> float:
        """The longest stall seen, in milliseconds."""
        return max(0.0, self.max_gap) * 1000.0


@dataclass
class MemoryFigure:
    """Python-heap growth (tracemalloc) across one run."""

    n: int
    peak_bytes: int
    retained_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)


async def traced_memory(
    n: int, run: Callable[[], Awaitable[None]]
) -> tuple[MemoryFigure, float]:
    """Run ``run()`` under tracemalloc; report peak and retained growth.

    ``run`` must create its tasks itself and drop its references before it
    returns, so what is still allocated afterwards is what the subject kept.

    Returns:
        The figure and the wall time of the run (slowed by tracing).
    """
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        gc.collect()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        await run()
        elapsed = time.perf_counter() - t0
        # Let callbacks already scheduled on the loop run and release their refs.
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return MemoryFigure(n, peak - base, current - base), elapsed


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))
