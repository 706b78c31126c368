"""Shutdown: idempotent, cancels what is left, bounded, silent after, no children."""

from __future__ import annotations

import asyncio

import spec
from conformance import processes
from conformance.harness import Harness
from conformance.registry import cites

_C = spec.Capability


@cites("SD-1")
async def shutdown_idempotent(h: Harness) -> None:
    """A second (and third) ``shutdown()`` returns without error."""
    task = h.runnable_task()
    await h.run([task])
    for attempt in range(3):
        try:
            await h.shutdown()
        except Exception as exc:
            h.fail("SD-1", f"shutdown() call {attempt + 1} raised {exc!r}")


@cites("SD-2")
async def shutdown_cancels_unfinished(h: Harness) -> None:
    """Every unfinished task is reported CANCELED before ``shutdown()`` returns."""
    if h.can_block():
        blockers = [h.blocker() for _ in range(3)]
        tasks = [b.task for b in blockers]
        await h.submit(tasks)
        await h.wait_started(blockers[0], "SD-2")
    else:
        tasks = [h.runnable_task() for _ in range(3)]
        await h.submit(tasks)
    await h.shutdown()
    for task in tasks:
        uid = task["uid"]
        states = [s for s in h.delivered(uid) if spec.is_terminal(s)]
        h.expect(
            len(states) == 1,
            "SD-2",
            f"after shutdown() returned, the task has terminal states {states}",
            uid,
        )
        if h.can_block():
            h.expect(
                states == [spec.TaskState.CANCELED],
                "SD-2",
                f"an unfinished task was reported {states}, not CANCELED",
                uid,
            )


@cites("SD-3")
async def silent_after_shutdown(h: Harness) -> None:
    """No callback comes after ``shutdown()`` returns, even as work winds down."""
    tasks = [h.runnable_task() for _ in range(3)]
    if h.can_block():
        tasks += [h.blocker().task for _ in range(2)]
    await h.submit(tasks)
    await h.shutdown()
    count = sum(len(s) for s in h.states.values())
    h.release_all()
    # Absence cannot be awaited: give stragglers loop turns and a short while.
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.3)
    later = sum(len(s) for s in h.states.values())
    h.expect(
        later == count,
        "SD-3",
        f"{later - count} state(s) delivered after shutdown() returned",
    )


@cites("SD-4")
async def shutdown_bounded_with_stuck_task(h: Harness) -> None:
    """``shutdown()`` returns in bounded time while a task is stuck running."""
    if not h.can_block():
        h.not_applicable("the backend cannot run a task that blocks")
    blocker = h.blocker()
    await h.submit([blocker.task])
    await h.wait_started(blocker, "SD-4")
    await h.shutdown("SD-4", timeout=10.0)
    # No terminal state at all is SD-2's failure (the monitor records it);
    # DONE or FAILED means shutdown() waited for the stuck task to end.
    ended = [s for s in h.delivered(blocker.uid) if spec.is_terminal(s)]
    h.expect(
        ended in ([], [spec.TaskState.CANCELED]),
        "SD-4",
        f"the stuck task was reported {[str(s) for s in ended]}: shutdown() "
        "waited for it instead of canceling it",
        blocker.uid,
    )


@cites("SD-5")
async def no_child_outlives_shutdown(h: Harness) -> None:
    """Child processes (and their children) are gone when ``shutdown()`` returns.

    Running executables that start a child of their own where the backend runs
    executables; otherwise whatever the backend started for blocked tasks
    (a process pool's workers, say), or nothing at all.
    """
    procs: dict[int, processes.ProcessInfo] = {}
    if h.has(_C.EXECUTABLES) and not h.has(_C.DRY_RUN):
        trees = [h.process_tree() for _ in range(2)]
        await h.submit([blocker.task for blocker, _ in trees])
        for blocker, pid_file in trees:
            await h.wait_started(blocker, "SD-5")
            procs.update(h.read_pids(pid_file))
    elif h.can_block():
        blocker = h.blocker()
        await h.submit([blocker.task])
        await h.wait_started(blocker, "SD-5")
    else:
        await h.run([h.runnable_task() for _ in range(3)])
    procs.update(
        (pid, info)
        for pid, info in processes.descendants().items()
        if pid not in h.baseline
    )
    h.note(f"{len(procs)} child process(es) alive before shutdown()")
    try:
        await h.shutdown()
        # Killed processes may need a moment to be reaped; a short grace only.
        survivors = await h.wait_gone(procs, grace=2.0)
        h.expect(
            not survivors,
            "SD-5",
            f"{len(survivors)} process(es) survived shutdown(): "
            + processes.describe(survivors),
        )
    finally:
        processes.kill(procs)
