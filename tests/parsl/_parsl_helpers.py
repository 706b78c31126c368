"""Task functions, a state recorder and process checks for the Parsl tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import Any

import cloudpickle
import psutil

from spec import TaskState

# Workers are separate processes that cannot import the tests: send these by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def add(a: int, b: int = 0) -> int:
    return a + b


async def async_add(a: int, b: int = 0) -> int:
    await asyncio.sleep(0.01)
    return a + b


def raise_key_error() -> None:
    raise KeyError("missing thing")


def kill_own_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def block(started: str, release: str, limit: float = 30.0) -> str:
    """Create ``started``, then wait (at most ``limit`` s) until ``release`` exists."""
    with open(started, "w"):
        pass
    end = time.monotonic() + limit
    while time.monotonic() < end and not os.path.exists(release):
        time.sleep(0.01)
    return "released"


def touch(path: str) -> str:
    with open(path, "w"):
        pass
    return path


class Unsendable:
    """An argument that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


class Recorder:
    """The callback: every state per uid, and an event per terminal uid."""

    def __init__(self) -> None:
        self.states: dict[str, list[TaskState]] = {}
        self.threads: set[int] = set()
        self._events: dict[str, asyncio.Event] = {}

    def __call__(self, task: dict[str, Any], state: TaskState) -> None:
        self.states.setdefault(task["uid"], []).append(state)
        self.threads.add(threading.get_ident())
        if state in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELED):
            self.event(task["uid"]).set()

    def event(self, uid: str) -> asyncio.Event:
        return self._events.setdefault(uid, asyncio.Event())

    async def wait(self, *uids: str, timeout: float = 60.0) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(self.event(u).wait() for u in uids)), timeout
        )

    def final(self, uid: str) -> TaskState:
        return self.states[uid][-1]


def parsl_processes(run_dir: str) -> list[psutil.Process]:
    """The processes of a DataFlowKernel whose run directory is ``run_dir``.

    Its interchange and worker pools name ``run_dir`` on their command
    lines; their descendants (the workers) are found through them.
    """
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if run_dir in " ".join(proc.info["cmdline"] or []):
            found[proc.pid] = proc
            try:
                for child in proc.children(recursive=True):
                    found[child.pid] = child
            except psutil.NoSuchProcess:
                pass
    return list(found.values())


def wait_gone(
    procs: list[psutil.Process], timeout: float = 10.0
) -> list[psutil.Process]:
    """The processes of ``procs`` still alive after ``timeout`` seconds."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    left = []
    for proc in alive:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            pass
    return left
