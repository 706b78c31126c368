"""Backends for the command-line tests: what a backend may leave behind."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from mutants.local_mutants import CaptureOutsideWorkDir

from reference import NoopExecutionBackend

_NEVER = threading.Event()
"""Never set: whatever waits on it waits for ever."""


class ShutdownNeverFinishes(NoopExecutionBackend):
    """Its shutdown waits in a thread-pool call that never returns.

    The suite's deadline ends the wait (SD-4 fails), but the pool thread
    stays, and Python waits for pool threads at exit.
    """

    async def shutdown(self) -> None:
        await super().shutdown()
        await asyncio.get_running_loop().run_in_executor(None, _NEVER.wait)


class LeavesAThreadRunning(NoopExecutionBackend):
    """Starts a non-daemon thread that never ends; otherwise conforms."""

    def __init__(self) -> None:
        super().__init__()
        threading.Thread(target=_NEVER.wait, name="left-running").start()


class LittersAroundItsWorkDir(CaptureOutsideWorkDir):
    """Joins uids to the work dir as is (RS-11), and litters besides.

    Each batch also writes two levels above the work dir and leaves a
    read-only folder with a file in it inside the work dir.
    """

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        work = self._work_dir
        with open(os.path.join(work, "..", "..", "litter.txt"), "a") as out:
            out.write("x\n")
        locked = os.path.join(work, "locked")
        if not os.path.isdir(locked):
            os.makedirs(locked)
            with open(os.path.join(locked, "inside.txt"), "w") as out:
                out.write("x\n")
            os.chmod(locked, 0o500)
        await super().submit_tasks(tasks)
