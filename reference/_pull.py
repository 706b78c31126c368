"""A puller: the loop in which a pool thread runs function jobs, one at a time.

`reference._workers.JobQueue` keeps the jobs and decides which one a puller
takes next (and, with resources, admits it); `pull` is what runs in the pool
thread: it takes a job, binds the thread to the job's cores, calls the
function (awaiting it, for ``async def``) and pushes the notices the backend
reports from. The notice kinds are small ints to keep that path cheap.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import traceback
from asyncio import _get_running_loop, _set_running_loop
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable, Coroutine
from typing import Any

from reference._calls import thread_loop
from reference._placement import bind_thread, placement, thread_cores
from reference._resources import ResourcePool

__all__ = [
    "ADMITTED",
    "DONE",
    "FAILED",
    "LOST",
    "RUNNING",
    "STOPPED",
    "Binding",
    "Puller",
    "pull",
]

# Notice kinds pushed to the backend: ``push((job, kind, value, text))``.
RUNNING = 0
DONE = 1
FAILED = 2
LOST = 3
STOPPED = 4
"""A cancelled task's worker (or coroutine) has stopped: report CANCELED now."""
ADMITTED = 5
"""A puller admitted a job it does not run (its resources are held): launch it."""

Notice = tuple[Any, int, Any, "str | None"]
"""``(job, kind, value, text)``: what a puller pushes to the backend."""


class Binding:
    """A puller thread's CPU affinity, following the cores of its jobs (PL-3).

    Where the pool names core ids, the thread is bound to the cores of the
    job it runs and put back to its own affinity (``home``) when it has
    none; a job that takes over the cores of the one before (the default
    path) costs no system call. Without core ids it does nothing.
    """

    __slots__ = ("bound", "home")

    def __init__(self, pool: ResourcePool[Any] | None) -> None:
        binds = pool is not None and bool(pool.capacity.core_ids)
        self.home: tuple[int, ...] | None = thread_cores() if binds else None
        self.bound: tuple[int, ...] | None = None

    def follow(self, job: Any) -> None:
        """Bind the thread for ``job`` (``None``: restore it)."""
        if self.home is None:
            return
        ids = None if job is None else job.grant.core_ids
        if ids is not self.bound and ids != self.bound:
            bind_thread(self.home if ids is None else ids)
            self.bound = ids


class Puller:
    """A puller and the coroutine job it is awaiting, if any, with its task."""

    __slots__ = ("job", "running")

    def __init__(self) -> None:
        self.job: Any = None
        self.running: asyncio.Task[Any] | None = None

    def start(
        self, job: Any, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Task[Any]:
        """Start ``job``'s coroutine as a task of its own; return that task."""
        self.running = _task_in_copy(loop, coro)
        self.job = job
        return self.running

    def cancel(self, job: Any) -> None:
        """Throw `asyncio.CancelledError` into ``job``'s coroutine, if it still runs.

        Runs on the puller's own loop, so it sees the puller suspended: either
        in ``job``, or already past it (then there is nothing to stop).
        """
        running = self.running
        if self.job is job and running is not None:
            running.cancel()


def _task_in_copy(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]
) -> asyncio.Task[Any]:
    """A task for ``coro`` on ``loop``, in a copy of the current context, started.

    Started eagerly, as Python 3.12's ``eager_start`` would: its first step
    runs now, in this call, with the task as the current task, so a job
    that ends without suspending (most do) costs no turn of the loop. A
    turn per step costs a selector poll, and each poll gives the GIL up to
    the other threads; with a task per job (issue 20) that made ``async
    def`` jobs 3.7 times slower. The step ``create_task`` scheduled is taken
    back off the loop's ready queue and run here, the calling task set
    aside meanwhile (the same on every Python: ``eager_start`` would let a
    ``SystemExit`` out of the constructor, losing the task and logging its
    exception as never retrieved). If the step is not where it should be
    (another Python's internals), the loop runs it as usual.
    """
    task: asyncio.Task[Any] = contextvars.copy_context().run(loop.create_task, coro)
    ready = getattr(loop, "_ready", None)
    if not ready or not _steps(ready[-1], task):
        return task
    step = ready.pop()
    outer = asyncio.current_task(loop)
    if outer is not None:
        _leave_task(loop, outer)
    try:
        step._run()
    except BaseException:
        # SystemExit or KeyboardInterrupt out of the job: the task holds it
        # too, and its caller takes it from there, as from any ended task.
        if not task.done():
            raise
    finally:
        if outer is not None:
            _enter_task(loop, outer)
    return task


def _steps(handle: Any, task: asyncio.Task[Any]) -> bool:
    """Whether ``handle`` (from a loop's ready queue) is ``task``'s next step."""
    return getattr(handle._callback, "__self__", None) is task


def pull(
    next_job: Callable[[Any], Any],
    push: Callable[[Notice], None],
    binding: Binding,
    lock: threading.Lock,
    *,
    placed: bool,
) -> None:
    """Run jobs in this pool thread until ``next_job`` has none left.

    Args:
        next_job: Given the job just run (``None`` at first), returns the
            next one, or ``None``: the puller then stops.
        push: The backend's thread-safe notice queue.
        binding: This thread's CPU affinity, following its jobs' cores.
        lock: Shared with ``JobQueue.stop``: a coroutine job is published
            (``job.coro``) or found canceled under it.
        placed: Jobs hold grants: write each task's ``placement`` (PL-1).

    Raises:
        RuntimeError: This thread already runs an event loop.
    """
    loop = thread_loop()
    if _get_running_loop() is not None:  # e.g. an executor that runs it inline
        raise RuntimeError(
            "JobQueue.pull cannot run in a thread whose event loop is running"
        )
    pulling = loop.create_task(_pull(loop, next_job, push, binding, lock, placed))
    while True:
        try:
            loop.run_until_complete(pulling)
            return
        except BaseException:
            # The loop stopped with the puller still pending: a job called
            # loop.stop(), or SystemExit / KeyboardInterrupt came out of a
            # task or callback a job started (the loop lets them out of any;
            # _pull catches its jobs' own, and that task keeps its exception,
            # logged as never retrieved). Left pending, the puller's job
            # would never be reported, nor the jobs queued behind it: run
            # the loop on (unless it is closed: trying again would spin
            # forever).
            if pulling.done() or loop.is_closed():
                raise


async def _pull(
    loop: asyncio.AbstractEventLoop,
    next_job: Callable[[Any], Any],
    push: Callable[[Notice], None],
    binding: Binding,
    lock: threading.Lock,
    placed: bool,
) -> None:
    # The puller is one asyncio task on this thread's loop for as long as
    # jobs keep coming (no run_until_complete per job); an ``async def`` job
    # runs in a task of its own (`_await`). Each job, sync or not, starts
    # from a copy of the puller's context, so a ContextVar one job sets is
    # not seen by the next.
    #
    # A job's outcome is pushed only once the next job is taken and this
    # thread is bound for it (or restored, if there is none): so when the
    # last outcome is reported, no thread is still bound (PL-4).
    puller = Puller()
    fresh_context = contextvars.copy_context
    job = None
    outcome: Notice | None = None
    # The grant of the last job and its placement record: a job that takes
    # a grant over (the default path) shares its record (read-only) and
    # finds the thread already bound, so it costs one identity check.
    held: Any = None
    record: Any = None
    try:
        while True:
            job = next_job(job)
            if job is None:
                binding.follow(None)
                if outcome is not None:
                    push(outcome)  # after the thread is restored (PL-4)
                    outcome = None
                return
            task = job.task
            if placed:
                grant = job.grant
                if grant is not held:
                    held = grant
                    binding.follow(job)
                    record = placement(grant.core_ids, grant.gpus, grant.memory)
                task["placement"] = record
            if outcome is not None:
                push(outcome)  # after the thread is bound for its next job
                outcome = None
            push((job, RUNNING, None, None))
            is_coroutine = False
            try:
                # No running loop while a function runs, as in a plain
                # thread: a sync function may start its own (asyncio.run).
                _set_running_loop(None)
                try:
                    result = fresh_context().run(
                        task["function"],
                        *(task.get("args") or ()),
                        **(task.get("kwargs") or {}),
                    )
                finally:
                    _set_running_loop(loop)
                # None (most sync tasks) skips iscoroutine's ABC check.
                if result is not None and asyncio.iscoroutine(result):
                    is_coroutine = True
                    result = await _await(job, result, puller, loop, lock)
            except BaseException as exc:  # a task's SystemExit must not kill it
                # Set before the outcome is pushed: a RUNNING notice the loop
                # has not delivered yet is stale from here on, and is dropped.
                job.ended = True
                if is_coroutine and job.canceled:
                    outcome = (job, STOPPED, None, None)  # ended: CANCELED
                else:
                    outcome = (job, FAILED, exc, traceback.format_exc())
                continue
            job.ended = True
            if is_coroutine and job.canceled:
                outcome = (job, STOPPED, None, None)  # it swallowed the cancel
            else:
                outcome = (job, DONE, result, None)
    finally:
        binding.follow(None)
        if outcome is not None:  # the loop stopped under us: report it still
            push(outcome)


async def _await(
    job: Any,
    coro: Coroutine[Any, Any, Any],
    puller: Puller,
    loop: asyncio.AbstractEventLoop,
    lock: threading.Lock,
) -> Any:
    """Await ``job``'s coroutine in an asyncio task of its own.

    One task per coroutine job, as ``asyncio.run`` would give it: what the
    job leaves behind that cancels "its" task (a watchdog it did not call
    off, a thread calling ``loop.call_soon_threadsafe(task.cancel)`` after it
    returned) finds that task done and changes nothing, whoever asks and
    from whichever thread. Its context is a copy of the puller's, as for any
    new task. The task takes its first step as it is created (most jobs end
    there, and are then awaited without a turn of the loop); the job is
    published to `reference._workers.JobQueue.stop` first, so a cancel
    during that step is accepted and delivered once the step is over, as
    one that came just before a task's first turn would be.
    """
    with lock:
        if job.canceled:  # canceled as it started: its body never runs
            coro.close()
            raise asyncio.CancelledError
        job.coro = (loop, puller)
    try:
        return await puller.start(job, coro, loop)
    finally:
        with lock:
            job.coro = None
        puller.job = puller.running = None
