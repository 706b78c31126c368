"""Scale: nothing retained, big batches, a responsive loop, bounded children."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import spec
from conformance.harness import Harness
from conformance.registry import cites

_C = spec.Capability

BIG_BATCH = 10_000
"""Tasks in the batch of SC-2 and SC-3, as the clauses say."""

STALL_BOUND_MS = 50.0
"""The longest loop stall SC-3 allows during the big submit."""

MANY_EXECUTABLES = 300
"""Executables in one batch for SC-4: run all at once, their pipes alone would
need more descriptors than `FD_HEADROOM`."""


FD_HEADROOM = 400
"""Descriptors allowed above those already open while SC-4 runs."""


@contextlib.contextmanager
def _fd_limit(headroom: int) -> Iterator[int | None]:
    """Lower the soft descriptor limit to open + ``headroom`` (POSIX only).

    A backend starting every executable at once then runs out of descriptors,
    which is what SC-4 is about, whatever the machine's own limit is.
    """
    try:
        import resource
    except ImportError:  # not POSIX: keep the machine's limit
        yield None
        return
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    try:
        opened = len(os.listdir(fd_dir))
    except OSError:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = opened + headroom
    if soft != resource.RLIM_INFINITY and soft <= wanted:
        yield None
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class _TrackedTask(dict[str, Any]):
    """A task dict that can be weakly referenced, to see whether it is retained."""

    __slots__ = ("__weakref__",)


def _quick_task(h: Harness, index: int) -> dict[str, Any]:
    task = h.runnable_task(uid=f"big.{index:06d}")
    return task


@cites("SC-1")
async def finished_tasks_released(h: Harness) -> None:
    """Once reported terminal, a task dict is no longer referenced by the backend."""
    tasks = [_TrackedTask(h.runnable_task()) for _ in range(20)]
    refs = [weakref.ref(t) for t in tasks]
    uids = [t["uid"] for t in tasks]
    await h.submit(list(tasks))
    del tasks
    await h.wait_terminal(uids)
    end = time.monotonic() + 3.0
    alive = len(refs)
    while time.monotonic() < end:
        # Let the backend's own bookkeeping (futures, loop callbacks) unwind.
        for _ in range(10):
            await asyncio.sleep(0)
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
        if not alive:
            break
        await asyncio.sleep(0.05)
    h.expect(
        not alive,
        "SC-1",
        f"{alive} of {len(refs)} finished task dicts are still referenced",
    )


@cites("SC-2", "SC-3", deadline=60.0)
async def ten_thousand_tasks(h: Harness) -> None:
    """A 10,000-task batch: a responsive loop, then every task terminal.

    The submit may stall the loop at most 50 ms at a time (SC-3), and every
    task reaches a terminal state, DONE for these quick tasks (SC-2). One
    batch serves both clauses, so a slow backend runs 10,000 tasks once.
    """
    tasks = [_quick_task(h, i) for i in range(BIG_BATCH)]
    started = time.perf_counter()
    stall = await _submit_measuring_stall(h, tasks)
    overhead = h.backend.submit_overhead
    stall_ms = max(0.0, stall - overhead) * 1000
    h.measure("SC-3 max loop stall during a 10,000-task submit (ms)", stall_ms)
    h.measure("SC-3 monitor bookkeeping excluded (ms)", overhead * 1000)
    h.note(
        f"max loop stall {stall_ms:.1f} ms (bound {STALL_BOUND_MS:.0f} ms; "
        f"{overhead * 1000:.1f} ms of monitor bookkeeping excluded)"
    )
    h.expect(
        stall_ms <= STALL_BOUND_MS,
        "SC-3",
        f"the event loop stalled {stall_ms:.1f} ms during the submit "
        f"(bound {STALL_BOUND_MS:.0f} ms)",
    )
    states = await h.wait_terminal([t["uid"] for t in tasks], clause_id="SC-2")
    h.measure(
        "SC-2 10,000-task batch, submit to last state (s)",
        time.perf_counter() - started,
    )
    not_done = [
        uid for uid, state in states.items() if state is not spec.TaskState.DONE
    ]
    h.expect(
        not not_done,
        "SC-2",
        f"{len(not_done)} of {BIG_BATCH} quick tasks did not end DONE "
        f"(first: {not_done[:3]})",
    )


async def _submit_measuring_stall(h: Harness, tasks: list[dict[str, Any]]) -> float:
    """Submit ``tasks``; return the longest the loop stood still meanwhile (s)."""
    worst = 0.0
    last = time.perf_counter()
    stop = asyncio.Event()
    beat = 0.001

    async def heartbeat() -> None:
        nonlocal worst, last
        while not stop.is_set():
            await asyncio.sleep(beat)
            now = time.perf_counter()
            worst = max(worst, now - last - beat)
            last = now

    ticker = asyncio.create_task(heartbeat())
    # A garbage collection pause during the submit would be the interpreter's
    # (its length grows with every object the process holds), not the
    # backend's: collect now, and not while measuring.
    gc.collect()
    await asyncio.sleep(0.01)
    worst = 0.0  # the stall that counts starts with the submit
    gc.disable()
    try:
        await h.submit(tasks)
        # The gap still open when submit returns counts too; what the backend
        # does on later loop turns (delivering states) is not the submit's.
        stall = max(worst, time.perf_counter() - last - beat)
    finally:
        gc.enable()
        stop.set()
        await ticker
    return stall


async def _started_plateau(h: Harness, marks: Path, quiet: float = 0.3) -> int:
    """Wait until no new gated child has started for ``quiet`` s; return how many."""
    count, since = 0, time.monotonic()
    while count < MANY_EXECUTABLES and time.monotonic() - since < quiet:
        # Children signal through files; nothing to await but the clock.
        await asyncio.sleep(0.02)
        now = len(os.listdir(marks))
        if now != count:
            count, since = now, time.monotonic()
        if h.remaining() < 5:
            break
    return count


@cites("SC-4", deadline=60.0)
async def many_executables(h: Harness) -> None:
    """Hundreds of executables in one batch all finish; descriptors last."""
    if h.has(_C.DRY_RUN):
        h.not_applicable("a dry-run backend starts no process")
    # Each child waits at a gate, so a backend that starts them all at once
    # really has them all alive (and their pipes open) at the same time.
    gate = h.work_dir / "gate"
    marks = h.work_dir / "started"
    marks.mkdir()
    script = h.script(
        f'touch "{marks}/$1"; i=0; '
        f'while [ ! -e "{gate}" ] && [ $i -lt 400 ]; do sleep 0.02; i=$((i+1)); done',
        "gated.sh",
    )
    tasks = [h.executable_task(script, [str(i)]) for i in range(MANY_EXECUTABLES)]
    with _fd_limit(FD_HEADROOM) as limit:
        if limit:
            h.note(f"file-descriptor limit lowered to {limit} for this test")
        await h.submit(tasks)
        peak = await _started_plateau(h, marks)
        gate.touch()
        states = await h.wait_terminal([t["uid"] for t in tasks], clause_id="SC-4")
    h.note(f"{peak} of {MANY_EXECUTABLES} gated executables ran at once")
    failed = [t for t in tasks if states[t["uid"]] is not spec.TaskState.DONE]
    example = failed[0].get("exception") if failed else None
    h.expect(
        not failed,
        "SC-4",
        f"{len(failed)} of {MANY_EXECUTABLES} executables did not end DONE "
        f"(first exception: {example!r})",
    )
