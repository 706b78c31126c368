"""Know when a coroutine is *executing* (not merely suspended) on a thread.

The callback must never be invoked re-entrantly from inside ``submit_tasks``
or ``cancel_task`` (clause ST-5). A backend may legitimately ``await``
inside those methods and let other callbacks run meanwhile; what is forbidden
is a delivery from within one of their synchronous steps. `Stepped` drives
an awaitable one step at a time and counts, per thread, how many such steps
are executing right now.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Generator
from typing import Any, Generic, TypeVar

__all__ = ["StepCounter", "Stepped"]

_T = TypeVar("_T")


class StepCounter:
    """How many guarded steps are executing, per thread."""

    def __init__(self) -> None:
        self._depth: dict[int, int] = {}

    def active(self) -> bool:
        """Tell whether the current thread is inside a guarded step."""
        return self._depth.get(threading.get_ident(), 0) > 0

    def enter(self) -> int:
        """Mark the start of a step on this thread; returns the thread ident."""
        ident = threading.get_ident()
        self._depth[ident] = self._depth.get(ident, 0) + 1
        return ident

    def leave(self, ident: int) -> None:
        """Mark the end of a step begun by `enter`."""
        depth = self._depth[ident] - 1
        if depth:
            self._depth[ident] = depth
        else:
            del self._depth[ident]


class Stepped(Generic[_T]):
    """An awaitable that forwards to another while counting its steps."""

    def __init__(self, awaitable: Awaitable[_T], counter: StepCounter) -> None:
        self._awaitable = awaitable
        self._counter = counter

    def __await__(self) -> Generator[Any, Any, _T]:
        """Drive the wrapped awaitable, one counted step per ``send``/``throw``."""
        inner = self._awaitable.__await__()
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            ident = self._counter.enter()
            try:
                if to_throw is not None:
                    yielded = inner.throw(to_throw)
                else:
                    yielded = inner.send(to_send)
            except StopIteration as stop:
                result: _T = stop.value
                return result
            finally:
                self._counter.leave(ident)
            to_send, to_throw = None, None
            try:
                to_send = yield yielded
            except BaseException as exc:  # forwarded into the awaitable, as await does
                to_throw = exc
