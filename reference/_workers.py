"""What runs inside the executor's workers (threads or processes) for function tasks.

Async functions run on one persistent event loop per worker thread (or
worker process), never on a fresh ``asyncio.run`` loop per task. In a thread
pool, a few long-lived "puller" calls (`JobQueue.pull`) take queued jobs one
at a time and hand their notices (started, done, failed) straight to the
backend's thread-safe ``push``; process workers return
``(ok, value, traceback_text)`` and the backend's done-callback pushes it.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import cloudpickle

from spec import StandInError

__all__ = [
    "DONE",
    "FAILED",
    "LOST",
    "RUNNING",
    "STOPPED",
    "CloudPickled",
    "JobQueue",
    "run_in_process",
    "thread_loop",
]

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
    never starts) and ``task`` (the task dict with its ``function``).

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
            if not job.canceled:  # a cancelled job never starts (CN-6)
                return job

    def pull(self) -> None:
        """Run queued jobs in this pool thread until none is left (a puller)."""
        push = self._push
        while (job := self._next()) is not None:
            task = job.task
            push((job, RUNNING, None, None))
            try:
                result = call(
                    task["function"], task.get("args") or (), task.get("kwargs") or {}
                )
            except BaseException as exc:  # a task's SystemExit must not kill it
                push((job, FAILED, exc, traceback.format_exc()))
                continue
            push((job, DONE, result, None))


_PROTOCOL = pickle.HIGHEST_PROTOCOL


class CloudPickled:
    """Wraps a value so the process pool pickles it with cloudpickle.

    The pool pickles call items in its own feeder thread, so the cost of
    cloudpickle (lambdas, closures, local functions) stays off the event loop,
    and a value that cannot be pickled fails only its own task.

    Args:
        value: ``(func, args, kwargs)``; it arrives in the worker as itself.
        uid: The task's uid, for the error message.
    """

    __slots__ = ("uid", "value")

    def __init__(self, value: tuple[Any, Any, Any], uid: str) -> None:
        self.value = value
        self.uid = uid

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        value = self.value
        # The C pickler is several times faster; it suffices for module-level
        # functions. ``__main__`` ones go by value, as a worker may not share
        # the parent's ``__main__``.
        if getattr(value[0], "__module__", None) != "__main__":
            try:
                return (pickle.loads, (pickle.dumps(value, _PROTOCOL),))
            except Exception:
                pass  # a lambda, a closure, a local function: cloudpickle below
        try:
            data = cloudpickle.dumps(value, _PROTOCOL)
        except Exception as exc:
            raise pickle.PicklingError(
                f"function task {self.uid!r} cannot be sent to a process pool: "
                f"its function or arguments cannot be pickled ({exc})"
            ) from exc
        return (cloudpickle.loads, (data,))


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


def run_in_process(call: Any) -> tuple[bool, Any, str | None]:
    """Run one function task in a process-pool worker.

    Args:
        call: ``(func, args, kwargs)``, sent as a `CloudPickled`.

    Returns:
        ``(True, return_value, None)`` or ``(False, exception, traceback_text)``;
        an exception that cannot travel back is replaced by `StandInError`.
    """
    func, args, kwargs = call
    try:
        result = call(func, args, kwargs)
    except BaseException as exc:  # a task's SystemExit must not kill the worker
        return (False, sendable(exc), traceback.format_exc())
    return (True, result, None)
