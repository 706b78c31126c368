"""Backends for the command-line tests: what a backend may leave behind."""

from __future__ import annotations

import asyncio
import threading

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
