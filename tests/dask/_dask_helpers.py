"""Task functions, a state recorder and a batch runner for the Dask backend tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import Any

import cloudpickle

from spec import TaskState

# Workers are separate processes that cannot import the tests: send these by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def add(a: int, b: int = 0) -> int:
    return a + b


async def async_add(a: int, b: int = 0) -> int:
    await asyncio.sleep(0.01)
    return a + b


async def loop_use_count() -> tuple[int, int, int]:
    """Count the tasks that ran on this loop: 1 each time if loops were fresh."""
    loop = asyncio.get_running_loop()
    count = getattr(loop, "asyncflow_test_count", 0) + 1
    loop.asyncflow_test_count = count  # type: ignore[attr-defined]
    return os.getpid(), threading.get_ident(), count


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickles, but cannot be rebuilt
        super().__init__(f"{a}-{b}")
        self.lock = threading.Lock()


def raise_key_error() -> None:
    raise KeyError("missing thing")


def raise_system_exit() -> None:
    raise SystemExit(3)


def raise_unpicklable() -> None:
    raise Unpicklable(1, 2)


def return_lock() -> Any:
    return threading.Lock()


def sleep_then(seconds: float, marker: str | None = None) -> str:
    time.sleep(seconds)
    if marker:
        with open(marker, "w") as f:
            f.write("ran")
    return "slept"


def block(started: str, release: str, limit: float = 30.0) -> str:
    """Create ``started``, then wait (at most ``limit`` s) until ``release`` exists."""
    with open(started, "w"):
        pass
    end = time.monotonic() + limit
    while time.monotonic() < end and not os.path.exists(release):
        time.sleep(0.01)
    return "released"


def kill_own_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Recorder:
    """The callback: records every state, with the thread it arrived on."""

    def __init__(self) -> None:
        self.states: dict[str, list[TaskState]] = {}
        self.threads: set[int] = set()
        self.terminal: dict[str, asyncio.Event] = {}
        self.closed = False
        self.after_close: list[tuple[str, TaskState]] = []

    def __call__(self, task: dict[str, Any], state: TaskState) -> None:
        uid = task["uid"]
        if self.closed:
            self.after_close.append((uid, state))
        self.states.setdefault(uid, []).append(state)
        self.threads.add(threading.get_ident())
        if state in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELED):
            self.event(uid).set()

    def event(self, uid: str) -> asyncio.Event:
        return self.terminal.setdefault(uid, asyncio.Event())

    async def wait(self, *uids: str, timeout: float = 60.0) -> None:
        events = [self.event(uid).wait() for uid in uids]
        await asyncio.wait_for(asyncio.gather(*events), timeout)

    def final(self, uid: str) -> TaskState:
        return self.states[uid][-1]


async def run_batch(
    address: str, tasks: list[dict[str, Any]], **kwargs: Any
) -> Recorder:
    """Run ``tasks`` on a fresh backend until all are terminal, then shut it down.

    Args:
        address: The scheduler to connect to.
        tasks: One batch of task dicts.
        **kwargs: More `DaskExecutionBackend` arguments.

    Returns:
        The recorder that saw every state.
    """
    # Imported here: workers load this module by value and need no backend.
    from reference.dask import DaskExecutionBackend

    backend = DaskExecutionBackend(address=address, **kwargs)
    recorder = Recorder()
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(*(t["uid"] for t in tasks))
    finally:
        await backend.shutdown()
    return recorder


def exit_worker(code: int = 7) -> None:
    """Kill the process running this task at once (no cleanup, no exception)."""
    os._exit(code)


def exit_worker_when(path: str, limit: float = 60.0, code: int = 7) -> None:
    """Wait (at most ``limit`` s) until ``path`` exists, then kill this process."""
    end = time.monotonic() + limit
    while time.monotonic() < end and not os.path.exists(path):
        time.sleep(0.01)
    os._exit(code)


def note_start(directory: str, uid: str, seconds: float = 0.0) -> str:
    """Record when this task started (``<directory>/<uid>``), sleep, return uid."""
    with open(os.path.join(directory, uid), "w") as f:
        f.write(repr(time.time()))
    time.sleep(seconds)
    return uid


class Unsendable:
    """An argument whose ``str()`` works but which cannot be pickled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __str__(self) -> str:
        return "unsendable"


def pid_then_sleep(path: str, seconds: float) -> str:
    """Write this process's pid to ``path``, then sleep."""
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)  # the reader never sees a partial pid
    time.sleep(seconds)
    return "woke"


def _raise_cancelled_error() -> None:
    raise asyncio.CancelledError("raised while unpickling a return value")


class UnpicklesToCancelledError:
    """Pickles fine on the worker; loading it on the client raises CancelledError."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_raise_cancelled_error, ())


def return_cancel_bomb() -> UnpicklesToCancelledError:
    return UnpicklesToCancelledError()


def span(path: str, seconds: float) -> str:
    """Hold the task ``seconds``; write ``"<start> <end>"`` (epoch s) to ``path``."""
    start = time.time()
    time.sleep(seconds)
    with open(path, "w") as out:
        out.write(f"{start} {time.time()}")
    return path


def peak_overlap(spans: list[tuple[float, float, int]]) -> int:
    """The most cores held at once by ``(start, end, cores)`` spans."""
    events = sorted(
        [(s, c) for s, _, c in spans] + [(e, -c) for _, e, c in spans],
        key=lambda ev: (ev[0], ev[1]),  # an end before a start at the same time
    )
    held = peak = 0
    for _, change in events:
        held += change
        peak = max(peak, held)
    return peak


async def async_span(path: str, seconds: float) -> str:
    """`span` awaiting instead of sleeping in its thread."""
    start = time.time()
    await asyncio.sleep(seconds)
    with open(path, "w") as out:
        out.write(f"{start} {time.time()}")
    return path


def exit_worker_once_released(started: str, go: str, limit: float = 60.0) -> None:
    """Say it started (``started``), wait until ``go`` exists, kill this process."""
    with open(started, "w"):
        pass
    exit_worker_when(go, limit)
