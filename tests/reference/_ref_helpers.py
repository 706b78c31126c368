"""Helpers shared by the reference-backend tests (imported as ``_ref_helpers``)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import psutil

from spec import TASK_TRANSITIONS, TaskState

QUICK_DONE = ([TaskState.DONE], [TaskState.RUNNING, TaskState.DONE])
"""What a quick task may be reported: RUNNING is optional (ST-3), and the
local backend drops a RUNNING notice that is already stale when the loop
gets to it (the task has finished), as it would no longer be true."""


class Recorder:
    """A state callback that records every delivery and checks the state machine.

    It keeps uids and states only, never the task dicts, so tests can check
    that the backend retains nothing.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, TaskState, int]] = []
        self.last: dict[str, TaskState | None] = {}
        self.violations: list[str] = []
        self._changed: asyncio.Event | None = None

    def __call__(self, task: dict[str, Any], state: TaskState) -> None:
        uid = task["uid"]
        self.events.append((uid, state, threading.get_ident()))
        previous = self.last.get(uid)
        if not isinstance(state, TaskState):
            self.violations.append(f"{uid}: {state!r} is not a TaskState")
        elif state not in TASK_TRANSITIONS[previous]:
            self.violations.append(f"{uid}: {previous} -> {state}")
        self.last[uid] = state
        if self._changed is not None:
            self._changed.set()

    def states(self, uid: str) -> list[TaskState]:
        """Every state delivered for ``uid``, in order."""
        return [state for u, state, _ in self.events if u == uid]

    def final(self, uid: str) -> TaskState | None:
        """The last state delivered for ``uid``."""
        return self.last.get(uid)

    async def wait(
        self,
        uids: Iterable[str],
        state: TaskState | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Wait until every uid reached ``state`` (default: any terminal state)."""
        wanted = list(uids)
        position = 0  # states only progress: a uid once reached stays reached

        def reached(uid: str) -> bool:
            last = self.last.get(uid)
            if state is None:
                return last is not None and last is not TaskState.RUNNING
            return state in self.states(uid) if last is not None else False

        async def loop() -> None:
            nonlocal position
            while True:
                while position < len(wanted) and reached(wanted[position]):
                    position += 1
                if position == len(wanted):
                    return
                changed.clear()
                await changed.wait()

        # One event per wait, so a recorder can outlive an event loop.
        changed = self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(loop(), timeout)
        finally:
            self._changed = None


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie awaiting its reaper).

    Polls for up to ``timeout`` seconds: a killed process may close its pipes
    (which is what the backend waits for) an instant before it is a zombie.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


async def read_pid(path: Any, timeout: float = 10.0) -> int:
    """Wait for a child to write its pid into ``path`` and return it."""

    async def poll() -> int:
        while True:
            try:
                text = path.read_text().strip()
            except FileNotFoundError:
                text = ""
            if text.endswith("."):
                return int(text[:-1])
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)


def group_has_live_members(pgid: int) -> bool:
    """True if a non-zombie process of group ``pgid`` still runs.

    Zombies are ignored: a killed grandchild is reparented to PID 1, which
    may be slow to reap it (or, in some containers, never does).
    """
    for proc in psutil.process_iter(["status"]):
        try:
            if (
                os.getpgid(proc.pid) == pgid
                and proc.info["status"] != psutil.STATUS_ZOMBIE
            ):
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False
