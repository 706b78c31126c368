"""What runs inside the executor's workers (threads or processes) for function tasks.

Async functions run on one persistent event loop per worker thread (or
worker process), never on a fresh ``asyncio.run`` loop per task. Thread
workers hand their notices (started, done, failed) straight to the backend's
thread-safe ``push``; process workers return ``(ok, value, traceback_text)``
and the backend's done-callback pushes it.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle

from spec import StandInError

__all__ = [
    "DONE",
    "FAILED",
    "LOST",
    "RUNNING",
    "CloudPickled",
    "run_in_process",
    "run_in_thread",
]

# Notice kinds pushed to the backend; small ints keep the hot path cheap.
RUNNING = 0
DONE = 1
FAILED = 2
LOST = 3


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


def _worker_loop() -> asyncio.AbstractEventLoop:
    holder: _LoopHolder | None = getattr(_thread_state, "holder", None)
    # The pid check drops a loop inherited through fork (a forked process
    # pool worker must not reuse its parent's loop).
    if holder is None or holder.pid != os.getpid():
        holder = _LoopHolder()
        _thread_state.holder = holder
    return holder.loop


def _call(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    result = func(*args, **kwargs)
    if asyncio.iscoroutine(result):
        result = _worker_loop().run_until_complete(result)
    return result


def run_in_thread(
    push: Callable[[tuple[Any, int, Any, str | None]], None],
    job: Any,
    func: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> None:
    """Run one function task in a pool thread and push its notices.

    Args:
        push: The backend's thread-safe ``push((job, kind, value, text))``.
        job: The backend's handle for the task, passed back untouched.
        func: The task's function, sync or ``async def``.
        args: Positional arguments.
        kwargs: Keyword arguments.
    """
    push((job, RUNNING, None, None))
    try:
        result = _call(func, args, kwargs)
    except BaseException as exc:  # a task's SystemExit must not kill the worker
        push((job, FAILED, exc, traceback.format_exc()))
        return
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


def _sendable(exc: BaseException) -> BaseException:
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
        result = _call(func, args, kwargs)
    except BaseException as exc:  # a task's SystemExit must not kill the worker
        return (False, _sendable(exc), traceback.format_exc())
    return (True, result, None)
