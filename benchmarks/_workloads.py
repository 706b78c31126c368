"""The trivial work every subject runs, and the task dicts that describe it.

The functions live in their own importable module (not ``__main__``) so a
process pool can pickle them by reference, the way a user's module-level
function would travel.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

__all__ = [
    "WORKLOADS",
    "async_noop",
    "block_async",
    "block_sync",
    "make_tasks",
    "run_on_process_loop",
    "run_on_thread_loop",
    "sync_noop",
]

WORKLOADS = ("async-fn", "sync-fn", "exec", "noop")
"""Workload names, in table order."""

_TRUE = "/bin/true"


async def async_noop(i: int) -> int:
    """The trivial async function task."""
    return i


def sync_noop(i: int) -> int:
    """The trivial sync function task."""
    return i


_thread_state = threading.local()


def run_on_thread_loop(i: int) -> int:
    """Run `async_noop` on this worker thread's persistent event loop.

    The fair raw baseline for async functions: one loop per worker thread,
    created on first use and reused, as the issue's target asks.
    """
    loop = getattr(_thread_state, "loop", None)
    if loop is None:
        loop = _thread_state.loop = asyncio.new_event_loop()
    return loop.run_until_complete(async_noop(i))


def run_with_asyncio_run(i: int) -> int:
    """Run `async_noop` with a fresh event loop per call (the naive way)."""
    return asyncio.run(async_noop(i))


_process_loop: asyncio.AbstractEventLoop | None = None


def run_on_process_loop(i: int) -> int:
    """Run `async_noop` on this worker process's persistent event loop."""
    global _process_loop
    if _process_loop is None:
        _process_loop = asyncio.new_event_loop()
    return _process_loop.run_until_complete(async_noop(i))


def make_tasks(workload: str, n: int, prefix: str) -> list[dict[str, Any]]:
    """Build ``n`` task dicts for ``workload``, as the engine would.

    Args:
        workload: One of `WORKLOADS`.
        n: How many tasks.
        prefix: Prefix of the uids, unique per measurement.

    Returns:
        Fresh task dicts (never reused: backends write results into them).
    """
    if workload == "async-fn" or workload == "noop":
        return [
            {"uid": f"{prefix}.{i}", "function": async_noop, "args": (i,), "kwargs": {}}
            for i in range(n)
        ]
    if workload == "sync-fn":
        return [
            {"uid": f"{prefix}.{i}", "function": sync_noop, "args": (i,), "kwargs": {}}
            for i in range(n)
        ]
    if workload == "exec":
        return [
            {
                "uid": f"{prefix}.{i}",
                "executable": _TRUE,
                "arguments": [],
                "task_backend_specific_kwargs": {"shell": False},
            }
            for i in range(n)
        ]
    raise ValueError(f"unknown workload {workload!r}")


def block_sync(started: str) -> int:
    """Write this process's pid to ``started``, then sleep: a task to cancel."""
    with open(started, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(60)
    return 0


async def block_async(started: str, saw_cancel: str) -> int:
    """`block_sync` as a coroutine; it marks ``saw_cancel`` when cancelled."""
    with open(started, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        with open(saw_cancel, "w"):
            pass
        raise
    return 0
