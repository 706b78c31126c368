"""Starting and stopping a DataFlowKernel: the blocking Parsl calls, bounded.

`open_dfk` builds the DataFlowKernel (which starts the executors: htex's
interchange, and the provider's first blocks of workers); `wait_for_workers`
waits, bounded, until a worker has connected, so that a provider whose
workers never come up gives a clear error rather than tasks that hang;
`close_dfk` cleans the DataFlowKernel up, leaving no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from reference._executables import group_alive, signal_group
from spec import BackendError

__all__ = ["close_dfk", "open_dfk", "wait_for_workers"]

logger = logging.getLogger("reference.parsl")

_GROUP_GRACE = 5.0  # seconds a cancelled local block gets to exit before SIGKILL
_POLL = 0.25  # seconds between asking the interchange for its workers


def open_dfk(config: Any) -> Any:
    """Build a DataFlowKernel from ``config`` (blocking: run it in a thread)."""
    from parsl.dataflow.dflow import DataFlowKernel

    return DataFlowKernel(config)


def _connected(executor: Any) -> int:
    """Workers connected to an htex-like executor's interchange (blocking)."""
    managers = executor.connected_managers()
    return sum(int(m.get("worker_count", 0)) for m in managers if m.get("active", True))


def _blocks(executor: Any) -> str:
    """What the provider says of the executor's blocks, for an error message."""
    try:
        status = executor.status()
    except Exception as exc:
        return f"(block status unavailable: {exc!r})"
    if not status:
        return "no block was started"
    return ", ".join(
        f"block {b}: {s.state.name}{f' ({s.message})' if s.message else ''}"
        for b, s in status.items()
    )


async def wait_for_workers(
    executor: Any, label: str, timeout: float | None, run_dir: str
) -> int:
    """Wait until a worker has connected to ``executor``; how many there are.

    An executor without an interchange to ask (a ThreadPoolExecutor) is
    ready at once.

    Raises:
        BackendError: No worker connected within ``timeout`` seconds; the
            message names the executor, the blocks' states and the logs.
    """
    if not hasattr(executor, "connected_managers"):
        return int(getattr(executor, "max_threads", 1) or 1)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        count = await asyncio.to_thread(_connected, executor)
        if count:
            return count
        if deadline is not None and loop.time() >= deadline:
            blocks = await asyncio.to_thread(_blocks, executor)
            raise BackendError(
                f"no Parsl worker connected to executor {label!r} within "
                f"{timeout:g} s ({blocks}); see the worker logs under {run_dir}, "
                "or raise start_timeout if the batch queue is slow"
            )
        await asyncio.sleep(_POLL)


def close_dfk(dfk: Any) -> None:
    """Clean ``dfk`` up: its blocks, executors and interchange. Blocking.

    Every block is cancelled first (`_cancel_blocks`), then the
    DataFlowKernel cleans up; an interchange still alive is killed, and a
    local block's processes get `_GROUP_GRACE` seconds before SIGKILL: no
    process of the backend's outlives its shutdown (SD-5).
    """
    groups = _cancel_blocks(dfk)
    try:
        dfk.cleanup()
    except Exception:
        logger.exception("Parsl's cleanup failed")
    for executor in dfk.executors.values():
        proc = getattr(executor, "interchange_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
    _wait_groups(groups, _GROUP_GRACE)


def _cancel_blocks(dfk: Any) -> list[int]:
    """Cancel every block of every executor; the process groups of local ones.

    htex's own shutdown leaves the workers to the scaling strategy, which
    cancels only the blocks it has polled; so they are cancelled here
    first, all of them. A LocalProvider runs each block in a process group
    of its own (the pid it records leads no group, so its group is looked
    up), which `_wait_groups` then sees gone.
    """
    groups: list[int] = []
    for executor in dfk.executors.values():
        provider = getattr(executor, "provider", None)
        jobs = list(getattr(executor, "blocks_to_job_id", {}).values())
        if provider is None or not jobs:
            continue
        resources = getattr(provider, "resources", {})
        for job in jobs:
            pid = resources.get(job, {}).get("remote_pid")
            with contextlib.suppress(Exception):
                groups.append(os.getpgid(int(pid)))
        try:
            provider.cancel(jobs)
        except Exception:
            logger.exception("cancelling Parsl blocks %s failed", jobs)
    return groups


def _wait_groups(groups: list[int], grace: float) -> None:
    """Wait up to ``grace`` seconds for the groups to be gone; SIGKILL the rest."""
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        groups = [g for g in groups if group_alive(g)]
        time.sleep(0.05)
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)
