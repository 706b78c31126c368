"""Functions the suite submits as tasks.

They live at module level in an importable module so a process-pool backend
can pickle them by reference. Waiting is done on files, which both threads
and child processes see, and every wait is bounded so an abandoned task
ends on its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

_POLL = 0.01


def echo(value: Any) -> Any:
    """Return ``value``."""
    return value


def combine(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return the arguments it was called with."""
    return args, kwargs


async def async_echo(value: Any) -> Any:
    """Return ``value`` after yielding to the event loop once."""
    await asyncio.sleep(0)
    return value


class PayloadError(Exception):
    """The exception `fail` raises; its type must survive the trip back."""


def fail(message: str) -> None:
    """Raise `PayloadError` with ``message``."""
    raise PayloadError(message)


class UnpicklableError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def fail_unpicklable(message: str) -> None:
    """Raise `UnpicklableError`, which a process pool cannot send back."""
    raise UnpicklableError(message)


def touch(path: str) -> str:
    """Create ``path`` (a dry-run backend must never call this)."""
    with open(path, "w"):
        pass
    return path


def span(path: str, seconds: float) -> str:
    """Hold the task ``seconds``; write ``"<start> <end>"`` (epoch s) to ``path``."""
    start = time.time()
    time.sleep(seconds)
    with open(path, "w") as out:
        out.write(f"{start} {time.time()}")
    return path


def block(started: str, release: str, limit: float) -> str:
    """Create ``started``, then wait until ``release`` exists (at most ``limit`` s).

    Returns early if the directory of ``started`` disappears: the suite has
    finished with the task and cleaned up.
    """
    with open(started, "w"):
        pass
    folder = os.path.dirname(started)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if os.path.exists(release) or not os.path.isdir(folder):
            return "released"
        time.sleep(_POLL)
    return "timed out"
