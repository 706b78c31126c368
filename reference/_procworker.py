"""The worker side of `reference._procpool`: what runs in a worker process.

`worker_main` takes a pickled call, runs it (`reference._calls.call`) and
sends back its outcome, one at a time; `watch_parent` kills the worker's
process group when the parent goes away. The messages both sides exchange
are built by `message` and read by `parse`: one byte of kind, a type name,
a pickled payload.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from reference._calls import call, sendable
from spec import StandInError

__all__ = [
    "MSG_DONE",
    "MSG_FAILED",
    "MSG_READY",
    "parse",
    "worker_main",
]

PROTOCOL = pickle.HIGHEST_PROTOCOL

# Message kinds from a worker: the first byte of each message.
MSG_READY = 0
MSG_DONE = 1
MSG_FAILED = 2


def message(kind: int, type_name: str, payload: bytes) -> bytes:
    """One message to the parent: its kind, a type name, and a pickled payload."""
    name = type_name.encode("utf-8", "replace")[:65535]
    return bytes((kind,)) + len(name).to_bytes(2, "big") + name + payload


def type_name(value: object) -> str:
    """The qualified name of ``value``'s type, as messages carry it."""
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def failure(exc: BaseException, text: str) -> bytes:
    """The failure message for ``exc``: itself if it pickles, else a stand-in."""
    safe = sendable(exc)
    try:
        payload = pickle.dumps((safe, text), PROTOCOL)
    except Exception:  # a stand-in's message or the text itself would not pickle
        stand_in = StandInError(type_name(exc), "<the exception could not be sent>")
        payload = pickle.dumps((stand_in, text), PROTOCOL)
    return message(MSG_FAILED, type_name(exc), payload)


def watch_parent(lifeline: Connection) -> None:
    """Kill this worker's process group once the parent's end of ``lifeline`` closes.

    Runs in a daemon thread of the worker: the parent never writes to the
    lifeline, so ``recv_bytes`` returns only when the parent closed it (its
    pool shut down, it was collected, or the parent died, however it died).
    """
    with contextlib.suppress(BaseException):
        lifeline.recv_bytes()
    with contextlib.suppress(OSError):
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os._exit(1)  # pragma: no cover - the SIGKILL above already ended us


def worker_main(
    jobs: Connection,
    results: Connection,
    lifeline: Connection,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    """Run one worker: take a pickled call, run it, send its outcome; repeat."""
    # Its own session and process group: a cancel kills the function's
    # children along with it, and a signal sent to the parent's group does
    # not reach it mid-task.
    with contextlib.suppress(OSError):
        os.setsid()
    threading.Thread(target=watch_parent, args=(lifeline,), daemon=True).start()
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            results.send_bytes(failure(exc, traceback.format_exc()))
            return
    results.send_bytes(message(MSG_READY, "", b""))
    recv, send = jobs.recv_bytes, results.send_bytes
    while True:
        try:
            data = recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe: no more work
        try:
            func, args, kwargs = pickle.loads(data)
        except BaseException as exc:
            send(failure(exc, traceback.format_exc()))
            continue
        try:
            result = call(func, args, kwargs)
        except BaseException as exc:  # a task's SystemExit must not end the worker
            send(failure(exc, traceback.format_exc()))
            continue
        del func, args, kwargs
        try:
            payload = pickle.dumps(result, PROTOCOL)
        except Exception as exc:
            error = pickle.PicklingError(
                f"the return value, a {type_name(result)} object, cannot be "
                f"pickled to send it back from the worker process: {exc}"
            )
            send(failure(error, traceback.format_exc()))
            continue
        send(message(MSG_DONE, type_name(result), payload))
        del result, payload


def parse(message: bytes) -> tuple[int, str, memoryview]:
    """Split a worker's message into its kind, type name and payload."""
    size = int.from_bytes(message[1:3], "big")
    name = message[3 : 3 + size].decode("utf-8", "replace")
    return message[0], name, memoryview(message)[3 + size :]
