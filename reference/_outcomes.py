"""What a remote worker sends back per task: `Outcome` tuples of plain data.

Shared by the Dask and Parsl workers. Results travel as strings and bytes,
never as live objects, so a return value or exception that cannot be pickled
fails only its own task, with a message saying why. This module imports only
the standard library and cloudpickle: it is also the program of the
isolated re-run child (`reference._isolated`), run as a file so that the
child imports neither ``reference`` nor the worker's framework to run one
function.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

__all__ = [
    "EXITED",
    "FAILED",
    "OK",
    "Outcome",
    "await_outcome",
    "dumps_function_item",
    "failure",
    "gather_outcomes",
    "isolated_main",
    "start_item",
    "success",
]

OK = "ok"
"""Outcome status: the task succeeded; ``payload`` pickles its result."""
FAILED = "failed"
"""Outcome status: the task failed; ``payload`` pickles the exception."""
EXITED = "exited"
"""Outcome status: an executable ran; ``payload`` pickles its results."""

Outcome = tuple[str, bytes | None, str, str, str]
"""``(status, payload, stderr, type_name, message)`` sent back per task.

``payload`` is cloudpickled: the return value (functions), the executable's
results, or the exception; ``None`` when it could not be pickled, in which
case ``type_name`` and ``message`` describe what could not be sent.
"""


def failure(exc: BaseException, stderr: str | None = None) -> Outcome:
    """Package an exception, falling back to its description if it won't pickle."""
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    text = stderr if stderr is not None else _traceback_text(exc)
    try:
        payload: bytes | None = cloudpickle.dumps(exc)
        cloudpickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
    except Exception:
        payload = None
    return (FAILED, payload, text, type_name, str(exc))


def success(value: object) -> Outcome:
    """Package a return value, or the failure saying it cannot be sent back."""
    try:
        return (OK, cloudpickle.dumps(value), "", "", "")
    except Exception as exc:
        error = TypeError(
            f"the return value ({type(value).__qualname__}) cannot be pickled "
            f"to send it back from the worker: {exc}"
        )
        return failure(error, stderr=str(error))


def _traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def dumps_function_item(
    function: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> bytes:
    """Pickle one function task for a worker (done by the backend)."""
    blob: bytes = cloudpickle.dumps((function, tuple(args), kwargs))
    return blob


async def await_outcome(awaitable: Any) -> Outcome:
    """Await a task's coroutine; its `Outcome`."""
    try:
        value = await awaitable
    except BaseException as exc:  # a task's own CancelledError is its failure too
        return failure(exc)
    return success(value)


async def gather_outcomes(awaitables: list[Any]) -> list[Outcome]:
    """Await many tasks' coroutines concurrently; their `Outcome` s, in order."""
    # Inside a coroutine, so gather's futures belong to the running loop.
    return list(await asyncio.gather(*(await_outcome(a) for a in awaitables)))


def start_item(blob: bytes) -> Outcome | Any:
    """Call one task's function: its `Outcome`, or the awaitable it returned."""
    try:
        function, args, kwargs = cloudpickle.loads(blob)
    except Exception as exc:
        return failure(
            RuntimeError(
                f"the worker cannot unpickle the task's function: {exc!r} "
                "(is its module installed where the workers run?)"
            )
        )
    try:
        result = function(*args, **kwargs)
    except BaseException as exc:  # even SystemExit fails only its own task
        return failure(exc)
    if inspect.isawaitable(result):
        return result
    return success(result)


def isolated_main() -> None:
    """The isolated re-run's child: run the task read from stdin, write the outcome.

    Not for direct use. The function's own prints go to stderr, so that
    stdout carries only the pickled `Outcome`.
    """
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    started = start_item(sys.stdin.buffer.read())
    if not isinstance(started, tuple):
        loop = asyncio.new_event_loop()
        try:
            started = loop.run_until_complete(await_outcome(started))
        finally:
            loop.close()
    result.write(pickle.dumps(started))
    result.close()


if __name__ == "__main__":  # the isolated child, run with runpy.run_path
    isolated_main()
