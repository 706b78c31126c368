"""Function tasks of the local backend: pool sizes, and ``async def`` tasks on the loop.

Thread-pool tasks are run by `reference._workers.JobQueue`'s pullers and
process-pool tasks by `reference._procpool.ProcessPool`; this module holds
what the backend needs to set those up (`pool_width`, `pool_like`),
`CoroutineCheck`, and `OnLoopRunner`, which runs ``async def`` tasks as
asyncio tasks on the caller's loop (``async_on_loop=True``).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any, Protocol

from reference._core import CancelDecision
from reference._placement import placement
from reference._procpool import ProcessPool
from reference.local.jobs import BackendHooks, LocalJob, Notice
from spec import TaskState

__all__ = [
    "CoroutineCheck",
    "OnLoopHost",
    "OnLoopRunner",
    "pool_like",
    "pool_width",
    "stop_workers",
]


def pool_width(executor: Executor) -> int:
    """How many threads ``executor`` runs at once: the most pullers worth keeping.

    `ThreadPoolExecutor` keeps its size only in the private ``_max_workers``;
    when that is missing (another Python, a custom executor) the stdlib's own
    default size is the best guess. A wrong guess costs little: too many
    pullers find the queue empty and return, too few lower parallelism.
    """
    width = getattr(executor, "_max_workers", None)
    if isinstance(width, int) and not isinstance(width, bool) and width > 0:
        return width
    return min(32, (os.cpu_count() or 1) + 4)


def pool_like(
    executor: ProcessPoolExecutor,
    push: Callable[[Notice], None],
    kill_grace: float,
    name: str,
) -> ProcessPool:
    """An owned `ProcessPool` with a `ProcessPoolExecutor`'s settings.

    They are read from its private attributes (the stdlib offers no public
    way); a missing one falls back to the stdlib's own default.
    """
    workers = getattr(executor, "_max_workers", None)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        workers = os.cpu_count() or 1
    return ProcessPool(
        workers,
        push,
        context=getattr(executor, "_mp_context", None),
        initializer=getattr(executor, "_initializer", None),
        initargs=getattr(executor, "_initargs", ()),
        max_tasks_per_child=getattr(executor, "_max_tasks_per_child", None),
        kill_grace=kill_grace,
        name=name,
    )


class CoroutineCheck:
    """``inspect.iscoroutinefunction`` with a memory of the last function asked.

    An engine submits the same few functions over and over: the last answer
    is kept within a dispatch turn rather than asked of inspect per task.
    """

    __slots__ = ("_answer", "_last")

    def __init__(self) -> None:
        self._last: object = None
        self._answer = False

    def __call__(self, func: Callable[..., Any]) -> bool:
        """Whether ``func`` is an ``async def`` function."""
        if func is not self._last:
            self._last = func
            self._answer = inspect.iscoroutinefunction(func)
        return self._answer

    def forget(self) -> None:
        """Keep no task's function past its turn."""
        self._last = None


class OnLoopHost(BackendHooks, Protocol):
    """What `OnLoopRunner` needs of its backend besides the common hooks."""

    def _owes_result(self, job: Any) -> bool: ...


class OnLoopRunner:
    """Runs ``async def`` function tasks as asyncio tasks on the backend's loop."""

    def __init__(self, host: OnLoopHost) -> None:
        self._host = host

    def start(
        self,
        job: LocalJob,
        call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]],
    ) -> None:
        """Start an ``async def`` task as an asyncio task on the bound loop."""
        job.on_loop = self._host._bound_loop().create_task(self._run(job, *call))

    async def _run(
        self,
        job: LocalJob,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        # Outcomes are reported here, in the task's last step, rather than
        # from a done-callback: one loop turn and one handle fewer per task.
        # The coroutine is built here too, so a task canceled before its
        # first step leaves no never-awaited coroutine behind.
        job.started = True
        if (grant := job.grant) is not None:
            # Many coroutines share the loop's thread: counted, never bound.
            job.task["placement"] = placement(None, grant.gpus, grant.memory)
        try:
            value = func(*args, **kwargs)
            if asyncio.iscoroutine(value):
                value = await value
        except BaseException as exc:
            job.ended = True
            if job.canceled:
                # Stopped by cancel_task or shutdown: CANCELED is true now (CN-5).
                self._host._finish(job, TaskState.CANCELED)
            else:
                # Its own error; a CancelledError it raised itself included.
                tb = "".join(traceback.format_exception(exc))
                self._host._fail(job, exc, tb)  # RS-3
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise  # a request to stop the program, not only a task's failure
            return
        job.ended = True
        if job.canceled:
            # It swallowed the cancel and returned: it has stopped; the value
            # is dropped, as cancel_task promised CANCELED.
            self._host._finish(job, TaskState.CANCELED)
            return
        job.task["return_value"] = value
        self._host._finish(job, TaskState.DONE)  # RS-2

    def report_running(self, jobs: list[LocalJob]) -> None:
        """RUNNING for the started tasks still running after their first step."""
        for job in jobs:
            if job.started and not job.ended and self._host._owes_result(job):
                self._host._report(job.task, TaskState.RUNNING)
                if job.service is not None:
                    self._host._service_running(job)

    def cancel(self, job: LocalJob) -> CancelDecision:
        """Cancel a job's asyncio task: CancelledError is raised inside the coroutine.

        The runner reports CANCELED once the coroutine has stopped. One whose
        task has not taken its first step never starts (the cancel ends its
        task before the body runs): the caller reports that one.
        """
        job.canceled = True
        if job.on_loop is not None:
            job.on_loop.cancel()
        return CancelDecision.STOPPING if job.started else CancelDecision.NEVER_RUNS

    async def stop(self, jobs: list[LocalJob], deadline: float) -> None:
        """Cancel the coroutines running on the loop; wait (bounded) until they stop."""
        running = [
            job.on_loop for job in jobs if job.on_loop is not None and not job.ended
        ]
        if not running:
            return
        for task in running:
            task.cancel()
        timeout = max(0.01, deadline - asyncio.get_running_loop().time())
        # A coroutine that ignores the cancel is left behind at the deadline;
        # its task is still reported CANCELED (SD-2), its result dropped.
        await asyncio.wait(running, timeout=timeout)


async def stop_workers(procs: ProcessPool, kill_grace: float, deadline: float) -> None:
    """Wait (bounded) for a closed pool's workers to die; KILL them past the grace.

    The pool's dispatchers TERM busy workers, KILL them after the grace and
    reap them; past the grace (or near ``deadline``) every worker left is
    killed here (SD-4, SD-5).
    """
    loop = asyncio.get_running_loop()
    grace_end = min(deadline - 0.1, loop.time() + kill_grace + 0.1)
    while loop.time() < grace_end and procs.alive():
        await asyncio.sleep(0.01)
    if procs.alive():
        procs.kill_all()
    while loop.time() < deadline and procs.alive():
        await asyncio.sleep(0.01)
