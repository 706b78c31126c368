"""A function call in a worker thread or process: its thread's own event loop.

`call` runs a function task's callable, running a coroutine it returns on
`thread_loop` (one persistent loop per worker thread, never a fresh
``asyncio.run`` loop per task); `sendable` makes an exception safe to send
across processes; `in_context` awaits a coroutine with each step run in a
given `contextvars.Context`. Used by the pullers (`reference._workers`), the
process pool's workers (`reference._procpool`) and the Dask workers.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import pickle
import threading
import types
from collections.abc import (
    Callable,
    Coroutine,
    Generator,
    Mapping,
    Sequence,
)
from typing import Any

from spec import StandInError

__all__ = ["call", "in_context", "sendable", "thread_loop"]


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


@types.coroutine
def in_context(
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
