"""What escapes the backend's own tasks, loop callbacks and threads during a test.

A backend that crashes in an asyncio task it created, a loop callback or a
thread of its own reports nothing for the tasks that crash stranded; the
test then sees only a missing state after its wait. asyncio hands such an
exception to the loop's exception handler ("Task exception was never
retrieved", "Exception in callback ...") and a thread's to
`threading.excepthook`; by default both only log it, and the suite keeps the
log quiet. `Escapes` records them instead, so the failure they caused can
show them, traceback and all, next to its clause.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["ESCAPED", "TRACEBACK", "Escape", "Escapes"]

ESCAPED = "escaped from "
"""How an escape's first evidence line starts."""

TRACEBACK = "  | "
"""How each line of an escape's traceback starts in the evidence (the
report keeps them with the message, never cuts them as trace lines)."""

_KEPT = 5
"""Escapes kept per test; the rest are counted."""

_FRAMES = 8
"""Traceback lines kept per escape (its innermost frames)."""


@dataclass(frozen=True)
class Escape:
    """One exception that escaped the backend's own machinery."""

    where: str
    """Where it escaped: asyncio's description, or the thread's name."""
    exception: str
    """``repr`` of the exception."""
    traceback: tuple[str, ...]
    """Its last traceback lines, innermost last (empty if it had none)."""

    def lines(self) -> list[str]:
        """The escape for a failure's evidence: where, what, the traceback."""
        return [f"{ESCAPED}{self.where}: {self.exception}", *self.traceback]


def _traceback_lines(
    kind: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> tuple[str, ...]:
    if exc is None:
        return ()
    text = "".join(traceback.format_exception(kind or type(exc), exc, tb))
    return tuple(TRACEBACK + line for line in text.rstrip().splitlines()[-_FRAMES:])


class Escapes:
    """Records escapes on one event loop, and from threads, while installed.

    Install it in the test's loop for the test's time; `threading.excepthook`
    is process-wide, so the previous hook is chained and restored (the suite
    runs one test at a time).
    """

    def __init__(self) -> None:
        self.found: list[Escape] = []
        self.count = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_hook: Any = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start recording on ``loop`` and in every thread."""
        self._loop = loop
        loop.set_exception_handler(self._on_loop)
        self._previous_hook = threading.excepthook
        threading.excepthook = self._on_thread

    def uninstall(self) -> None:
        """Stop recording; give asyncio and threads their handlers back."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.set_exception_handler(None)
        if threading.excepthook == self._on_thread:
            threading.excepthook = self._previous_hook

    def collect(self, thorough: bool = False) -> list[Escape]:
        """The escapes so far; ``thorough``: after a garbage collection.

        asyncio reports a task's unretrieved exception when the task is
        freed: at once, usually, but only at a collection if the task sits in
        a reference cycle. A collection costs a good part of a second on a
        loaded machine, so it is for a test that failed.
        """
        if thorough:
            gc.collect()
        with self._lock:
            return list(self.found)

    def _add(self, escape: Escape) -> None:
        with self._lock:
            self.count += 1
            if len(self.found) < _KEPT:
                self.found.append(escape)

    def _on_loop(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        exc = context.get("exception")
        what = str(context.get("message") or "an error in the event loop")
        where = f"an asyncio task or loop callback ({what})"
        if exc is None:
            self._add(Escape(where, "(no exception object)", ()))
            return
        lines = _traceback_lines(type(exc), exc, exc.__traceback__)
        self._add(Escape(where, repr(exc), lines))

    def _on_thread(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return  # a thread's sys.exit() ends the thread quietly, as Python does
        name = args.thread.name if args.thread is not None else "?"
        self._add(
            Escape(
                f"thread {name!r}",
                repr(args.exc_value),
                _traceback_lines(args.exc_type, args.exc_value, args.exc_traceback),
            )
        )
