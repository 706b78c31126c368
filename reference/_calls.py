"""A function call in a worker thread or process: its thread's own event loop.

`call` runs a function task's callable, running a coroutine it returns on
`thread_loop` (one persistent loop per worker thread, never a fresh
``asyncio.run`` loop per task); `sendable` makes an exception safe to send
across processes, and `load_exception` rebuilds one a remote worker sent;
`unsendable_error` names the part of a task that cannot be pickled. Used by
the pullers (`reference._workers`), the process pool's workers
(`reference._procpool`) and the Dask and Parsl backends.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
from collections.abc import (
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any

import cloudpickle

from spec import StandInError

__all__ = ["call", "load_exception", "sendable", "thread_loop", "unsendable_error"]


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


def sendable(exc: BaseException) -> BaseException:
    """Return ``exc`` if it survives a pickle round trip, else a stand-in."""
    try:
        pickle.loads(pickle.dumps(exc))
    except BaseException:  # even SystemExit from its __reduce__ (RS-9)
        kind = type(exc)
        try:
            message = str(exc)
        except BaseException:
            message = "<str() of the exception failed>"
        return StandInError(f"{kind.__module__}.{kind.__qualname__}", message)
    return exc


def load_exception(
    payload: bytes | None, type_name: str, message: str
) -> BaseException:
    """Rebuild an exception a worker sent, or a `StandInError` naming its type (RS-9).

    The reverse of `sendable`, for the workers that send exceptions as
    cloudpickled bytes (`reference._outcomes.failure`).
    """
    if payload is not None:
        try:
            exc = cloudpickle.loads(payload)
        except Exception:
            pass
        else:
            if isinstance(exc, BaseException):
                return exc
    return StandInError(type_name or "unknown", message)


def unsendable_error(
    uid: str, parts: Iterable[tuple[str, Any]], exc: Exception, workers: str
) -> TypeError:
    """The error failing a task that cannot be pickled, naming the part at fault.

    Args:
        uid: The task's uid.
        parts: ``(name, value)`` of what was pickled: ``("args", [...])``.
        exc: What pickling raised.
        workers: Whose workers it was for ("Dask", "Parsl"), for the message.
    """
    what = _unsendable(parts) or "its function or arguments"
    error = TypeError(
        f"task {uid!r}: {what} cannot be pickled to send it to the {workers} "
        f"workers: {exc}"
    )
    error.__cause__ = exc
    return error


def _unsendable(parts: Iterable[tuple[str, Any]], depth: int = 0) -> str:
    """Name the first part that does not pickle: ``"arguments[1] (Lock)"``.

    Lists, tuples and dicts are searched one level further down (twice at
    most: ``task_backend_specific_kwargs['env']['X']``), so the name points
    at the value itself rather than at the container holding it.
    """
    for name, value in parts:
        try:
            cloudpickle.dumps(value)
        except Exception:
            inner: list[tuple[str, Any]] = []
            if depth < 2 and isinstance(value, (list, tuple)):
                inner = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
            elif depth < 2 and isinstance(value, dict):
                inner = [(f"{name}[{k!r}]", v) for k, v in value.items()]
            return _unsendable(inner, depth + 1) or (
                f"{name} ({type(value).__qualname__})"
            )
    return ""
