"""Functions the suite submits as tasks.

They live at module level in an importable module so a process-pool backend
can pickle them by reference. Waiting is done on files, which both threads
and child processes see, and every wait is bounded so an abandoned task
ends on its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
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


def nap(value: Any, seconds: float) -> Any:
    """Return ``value`` after ``seconds``: a healthy task that stays in flight."""
    time.sleep(seconds)
    return value


def exit_worker(code: int) -> None:
    """End the worker process at once (``os._exit``): no cleanup, no reply."""
    os._exit(code)


def kill_worker() -> None:
    """Kill the worker process with SIGKILL, as the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def _refuse_to_load(reason: str) -> None:
    raise RuntimeError(reason)


class UnloadableResult:
    """A return value that pickles in the worker but fails to unpickle elsewhere."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_refuse_to_load, ("UnloadableResult cannot be loaded here",))


def unloadable() -> UnloadableResult:
    """Return an `UnloadableResult`."""
    return UnloadableResult()


class ExitingResult:
    """A return value whose unpickling raises `SystemExit` (a `BaseException`)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (sys.exit, ("ExitingResult cannot be loaded here",))


def exiting() -> ExitingResult:
    """Return an `ExitingResult`."""
    return ExitingResult()


def write_later(started: str, marker: str, delay: float) -> str:
    """Create ``started``, then ``marker`` after ``delay`` s, unless stopped first."""
    with open(started, "w"):
        pass
    time.sleep(delay)
    with open(marker, "w"):
        pass
    return "not stopped"


async def async_write_later(started: str, marker: str, delay: float) -> str:
    """`write_later` as an ``async def`` function."""
    with open(started, "w"):
        pass
    await asyncio.sleep(delay)
    with open(marker, "w"):
        pass
    return "not stopped"


def block_then_fail(started: str, release: str, limit: float) -> None:
    """`block`, then raise `PayloadError`: a service failing after it was ready."""
    block(started, release, limit)
    raise PayloadError("the service failed after it was ready")


async def serve(
    started: str, release: str, value: Any, limit: float, fail: bool = False
) -> AsyncIterator[Any]:
    """An async generator service: create ``started``, yield ``value``, then wait.

    It waits until ``release`` exists (at most ``limit`` s, or until the
    folder of ``started`` is gone), then ends, raising `PayloadError` if
    ``fail``.
    """
    with open(started, "w"):
        pass
    yield value
    folder = os.path.dirname(started)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if os.path.exists(release) or not os.path.isdir(folder):
            break
        await asyncio.sleep(_POLL)
    if fail:
        raise PayloadError("the service failed after it was ready")


def where(path: str, seconds: float) -> list[int]:
    """Record where the task runs, holding it ``seconds``; return its cores.

    Writes five lines to ``path``: start and end (epoch s), the cores of
    ``os.sched_getaffinity(0)`` as a CPU list, then the pid and the native
    thread id that ran it (so the suite can look at that thread afterwards).
    """
    start = time.time()
    cores = sorted(os.sched_getaffinity(0))
    time.sleep(seconds)
    with open(path, "w") as out:
        out.write(
            f"{start}\n{time.time()}\n{','.join(map(str, cores))}\n"
            f"{os.getpid()}\n{threading.get_native_id()}\n"
        )
    return cores
