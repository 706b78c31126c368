"""What runs inside the executor's workers (threads or processes) for function tasks.

Async functions run on one persistent event loop per worker thread (or
worker process), never on a fresh ``asyncio.run`` loop per task. In a thread
pool, a few long-lived "puller" calls (`JobQueue.pull`) take queued jobs one
at a time and hand their notices (started, done, failed, stopped) straight
to the backend's thread-safe ``push``; `reference._procpool` runs `call` in
its worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import pickle
import threading
import traceback
import types
from asyncio import _get_running_loop, _set_running_loop
from collections import deque
from collections.abc import (
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any

from spec import StandInError

__all__ = [
    "DONE",
    "FAILED",
    "LOST",
    "RUNNING",
    "STOPPED",
    "JobQueue",
    "call",
    "sendable",
    "thread_loop",
]

# What JobQueue.stop found.
NOT_STARTED = "not started"
UNSTOPPABLE = "unstoppable"

# Notice kinds pushed to the backend; small ints keep the hot path cheap.
RUNNING = 0
DONE = 1
FAILED = 2
LOST = 3
STOPPED = 4
"""A cancelled task's worker (or coroutine) has stopped: report CANCELED now."""


class _LoopHolder:
    """Owns a worker's event loop and closes it when the worker goes away."""

    __slots__ = ("loop", "pid")

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()

    def __del__(self) -> None:
        # A thread's locals are dropped when it exits; close its loop then,
        # so no "unclosed event loop" warning is left for the GC.
        if self.pid == os.getpid() and not self.loop.is_closed():
            self.loop.close()


_thread_state = threading.local()


def thread_loop() -> asyncio.AbstractEventLoop:
    """Return this thread's own event loop, created on first use.

    It lives as long as the thread and is closed when the thread ends; the
    local backend's workers and the Dask workers run coroutines on it.
    """
    holder: _LoopHolder | None = getattr(_thread_state, "holder", None)
    # The pid check drops a loop inherited through fork (a forked process
    # pool worker must not reuse its parent's loop).
    if holder is None or holder.pid != os.getpid():
        holder = _LoopHolder()
        _thread_state.holder = holder
    return holder.loop


def call(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    """Call ``func``; run a coroutine it returns on this thread's own loop."""
    result = func(*args, **kwargs)
    if asyncio.iscoroutine(result):
        result = thread_loop().run_until_complete(result)
    return result


class JobQueue:
    """Function jobs waiting for a pool thread, and the pullers that run them.

    Instead of one executor call (a `concurrent.futures.Future` and a work
    item) per task, the backend keeps at most ``width`` `pull` calls in the
    pool; each takes the next job, runs it, and takes another until the
    queue is empty. Per task that leaves only the backend's job and its
    notices, few enough objects that a 10,000-task batch no longer sets off
    full garbage collections on the event loop (SC-3); and since each puller
    takes one job at a time, a slow task holds up no other task while a
    thread is free.

    ``put`` runs on the event loop, ``pull`` in pool threads: the lock only
    makes "the queue is empty, this puller stops" and "jobs were added, are
    there enough pullers" exclusive, so no job is left without a puller.
    Jobs need ``canceled`` (checked just before a job starts: a cancelled job
    never starts), ``task`` (the task dict with its ``function``) and
    ``coro`` (``None``; set while an ``async def`` function runs, so `stop`
    can cancel it on its loop) and ``ended``, which the puller sets once the
    function has returned or raised, before it pushes the outcome.

    Args:
        push: The backend's thread-safe ``push((job, kind, value, text))``.
        width: Most pullers at once: the pool's worker count.
    """

    __slots__ = ("_jobs", "_lock", "_pullers", "_push", "closed", "width")

    def __init__(
        self, push: Callable[[tuple[Any, int, Any, str | None]], None], width: int
    ) -> None:
        self._jobs: deque[Any] = deque()
        self._lock = threading.Lock()
        self._pullers = 0
        self._push = push
        self.closed = False
        self.width = width

    def put(self, jobs: Iterable[Any]) -> int:
        """Queue jobs; return how many new pullers the caller must submit.

        Never more than the backlog, nor more than ``width`` in all.
        """
        with self._lock:
            if self.closed:
                return 0
            self._jobs.extend(jobs)
            wanted = min(self.width - self._pullers, len(self._jobs))
            if wanted <= 0:
                return 0
            self._pullers += wanted
            return wanted

    def retire(self, count: int) -> list[Any]:
        """Forget ``count`` pullers that could not be submitted.

        Returns:
            The queued jobs, taken out, if no puller is left to run them.
        """
        with self._lock:
            self._pullers -= count
            if self._pullers > 0:
                return []
            stranded = list(self._jobs)
            self._jobs.clear()
            return stranded

    def close(self) -> None:
        """Drop the queued jobs; pullers stop after the job they are running."""
        with self._lock:
            self.closed = True
            self._jobs.clear()

    def _next(self) -> Any:
        jobs = self._jobs
        while True:
            try:
                job = jobs.popleft()  # atomic: no lock on the hot path
            except IndexError:
                with self._lock:
                    if jobs and not self.closed:
                        continue  # refilled in between: keep pulling
                    self._pullers -= 1
                    return None
            if self.closed:
                with self._lock:
                    self._pullers -= 1
                return None
            with self._lock:  # exclusive with stop(): started or canceled, never both
                if job.canceled:  # a canceled job never starts (CN-6)
                    continue
                job.pulled = True
            return job

    def stop(
        self, job: Any
    ) -> tuple[asyncio.AbstractEventLoop, Callable[[], None]] | str:
        """Cancel ``job`` if it can be stopped; say what became of it.

        Under the lock, exclusive with a puller taking the job and with
        `_await` publishing its coroutine.

        Returns:
            `NOT_STARTED`: it is marked canceled and will never start.
            `UNSTOPPABLE`: a puller has taken it and it is not a coroutine
            (a sync function running in a thread, or one that has just
            returned); it is left alone and its outcome stands.
            Otherwise ``(loop, cancel)`` for its running coroutine: it is
            marked canceled, and the caller runs ``cancel`` on ``loop`` (with
            ``call_soon_threadsafe``) to throw `asyncio.CancelledError` into
            it; ``cancel`` does nothing once the coroutine has ended.
        """
        with self._lock:
            if job.pulled and job.coro is None:
                return UNSTOPPABLE
            job.canceled = True
            if job.coro is None:
                return NOT_STARTED
            loop, puller = job.coro
            return loop, functools.partial(puller.cancel, job)

    def pull(self) -> None:
        """Run queued jobs in this pool thread until none is left (a puller)."""
        loop = thread_loop()
        if _get_running_loop() is not None:  # e.g. an executor that runs it inline
            raise RuntimeError(
                "JobQueue.pull cannot run in a thread whose event loop is running"
            )
        pulling = _PullerTask(self._pull(loop), loop=loop)
        while True:
            try:
                loop.run_until_complete(pulling)
                return
            except BaseException:
                # The loop stopped with the puller still pending: a job
                # called loop.stop(), or SystemExit / KeyboardInterrupt came
                # out of a task or callback a job started (the loop lets
                # them out of any; _pull catches its jobs' own, and that
                # task keeps its exception, logged as never retrieved).
                # Left pending, the puller's job would never be reported,
                # nor the jobs queued behind it: run the loop on (unless it
                # is closed: trying again would spin forever).
                if pulling.done() or loop.is_closed():
                    raise

    async def _pull(self, loop: asyncio.AbstractEventLoop) -> None:
        # The puller is one asyncio task on this thread's loop for as long as
        # jobs keep coming: an ``async def`` job is awaited inside it, so one
        # that never suspends costs no loop turn, no task of its own and no
        # run_until_complete (about 18 us a job before).
        puller = _Puller(asyncio.current_task())
        push = self._push
        while (job := self._next()) is not None:
            task = job.task
            push((job, RUNNING, None, None))
            is_coroutine = False
            try:
                # No running loop while a function runs, as in a plain thread:
                # a sync function may start its own (asyncio.run).
                _set_running_loop(None)
                try:
                    result = task["function"](
                        *(task.get("args") or ()), **(task.get("kwargs") or {})
                    )
                finally:
                    _set_running_loop(loop)
                if asyncio.iscoroutine(result):
                    is_coroutine = True
                    result = await self._await(job, result, puller, loop)
            except BaseException as exc:  # a task's SystemExit must not kill it
                # Set before the outcome is pushed: a RUNNING notice the loop
                # has not delivered yet is stale from here on, and is dropped.
                job.ended = True
                if is_coroutine and job.canceled:
                    push((job, STOPPED, None, None))  # it has ended: CANCELED
                else:
                    push((job, FAILED, exc, traceback.format_exc()))
                continue
            job.ended = True
            if is_coroutine and job.canceled:
                push((job, STOPPED, None, None))  # it swallowed the cancel
            else:
                push((job, DONE, result, None))

    async def _await(
        self,
        job: Any,
        coro: Coroutine[Any, Any, Any],
        puller: _Puller,
        loop: asyncio.AbstractEventLoop,
    ) -> Any:
        """Await ``job``'s coroutine where `stop` can cancel it."""
        with self._lock:
            if job.canceled:  # canceled as it started: its body never runs
                coro.close()
                raise asyncio.CancelledError
            job.coro = (loop, puller)
            puller.job = job
        # Its own copy of the context, as an asyncio task would have, marked
        # as this job's: so are the callbacks and tasks it starts, which run
        # in (copies of) it, and _PullerTask.cancel can tell their requests.
        context = contextvars.copy_context()
        token = object()  # not the job: what it leaves behind must not hold it
        context.run(_JOB_TOKEN.set, token)
        puller.task.awaiting = token
        try:
            return await _in_context(context, coro)
        finally:
            with self._lock:
                job.coro = None
            puller.job = None
            puller.task.awaiting = None
            if puller.cancel_requested():
                # Meant for this job (ours, or its own current_task().cancel()):
                # one not thrown in yet would hit the next job, so take it here.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)
                puller.forget_cancels()


_JOB_TOKEN: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "_JOB_TOKEN", default=None
)
"""In a coroutine job's context: a token of that job (see `_PullerTask`)."""


class _PullerTask(asyncio.Task[None]):
    """A puller's task: it drops the cancels a job left behind once it ended.

    A job's coroutine runs inside this task, so ``asyncio.current_task()`` in
    it, and in the callbacks and tasks it starts, is this task. As a task of
    its own, the job's task would be done when such a leftover (a watchdog
    not called off, a task holding it) cancels it, and nothing would happen;
    here the cancel would hit the job the puller runs by then. So a request
    made in a job's context while that job is not the one being awaited is
    dropped. Requests from outside any job's context pass (`_Puller.cancel`
    bypasses this check anyway).
    """

    awaiting: object | None = None
    """The token of the job being awaited (`_JOB_TOKEN`), if any."""

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the task, unless a job that has ended asks (then return False)."""
        requester = _JOB_TOKEN.get()
        if requester is not None and requester is not self.awaiting:
            return False
        return super().cancel(msg)


class _Puller:
    """A puller's asyncio task and the coroutine job it is awaiting, if any."""

    __slots__ = ("_cancelling", "_uncancel", "job", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        assert isinstance(task, _PullerTask)  # _pull runs as one (pull)
        self.task = task
        self.job: Any = None
        # Python 3.11+ counts cancel requests.
        self._cancelling: Callable[[], int] | None = getattr(task, "cancelling", None)
        self._uncancel: Callable[[], int] | None = getattr(task, "uncancel", None)

    def cancel(self, job: Any) -> None:
        """Throw `asyncio.CancelledError` into ``job``'s coroutine, if it still runs.

        Runs on the puller's own loop, so it sees the puller suspended: either
        in ``job``, or already past it (then there is nothing to stop).
        """
        if self.job is job:
            asyncio.Task.cancel(self.task)  # the backend's: no leftover's check

    def cancel_requested(self) -> bool:
        """Whether a cancel request is left on the task."""
        if self._cancelling is not None:
            return self._cancelling() > 0
        # Python 3.10 counts nothing; its tasks show a cancel not thrown in yet.
        return bool(getattr(self.task, "_must_cancel", False))

    def forget_cancels(self) -> None:
        """Clear the cancel requests that were meant for the job just ended."""
        if self._uncancel is not None:
            while self._uncancel() > 0:
                pass


@types.coroutine
def _in_context(
    context: contextvars.Context, coro: Coroutine[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    """``await coro``, each of its steps run in ``context``.

    What the awaiting task sends or throws in is passed on to ``coro``, and
    what ``coro`` yields (the futures it waits on) is passed up, as
    ``await`` itself does.
    """
    run = context.run
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            yielded = run(coro.send, value) if error is None else run(coro.throw, error)
        except StopIteration as stop:
            return stop.value
        try:
            value = yield yielded
            error = None
        except GeneratorExit:
            run(coro.close)
            raise
        except BaseException as exc:
            value = None
            error = exc


def sendable(exc: BaseException) -> BaseException:
    """Return ``exc`` if it survives a pickle round trip, else a stand-in."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        kind = type(exc)
        try:
            message = str(exc)
        except Exception:
            message = "<str() of the exception failed>"
        return StandInError(f"{kind.__module__}.{kind.__qualname__}", message)
    return exc
