"""Mutants of the tutorial's backend (docs/tutorial/tutorial_backend.py).

The tutorial backend is the shape a first backend takes: coroutines on the
loop, plain functions awaited through ``loop.run_in_executor``. Its mutants
are the mistakes that shape invites.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from spec import TaskState

_FILE = (
    Path(__file__).resolve().parents[3] / "docs" / "tutorial" / "tutorial_backend.py"
)


def _tutorial() -> ModuleType:
    """The tutorial's module, loaded from its file once (it is not a package)."""
    loaded = sys.modules.get("tutorial_backend")
    if loaded is not None:
        return loaded
    found = importlib.util.spec_from_file_location("tutorial_backend", _FILE)
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    sys.modules["tutorial_backend"] = module
    found.loader.exec_module(module)
    return module


class LiesAboutThreadCancel(_tutorial().TutorialBackend):  # type: ignore[misc]
    """CN-9: reports CANCELED while the thread-pool function runs on.

    It cancels the asyncio task awaiting the thread-pool call (the shape
    ``cancel_task`` takes when written without thinking), which stops the
    await, not the function. It declares no ``preemptive_cancel`` (so CN-8
    does not apply), yet its CANCELED says the function stopped: the thread
    runs on and its effects land after the report. The tutorial's own
    ``cancel_task`` returns False for a function in a thread instead.
    """

    async def cancel_task(self, uid: str) -> bool:
        entry = self._in_flight.get(uid) if isinstance(uid, str) else None
        if entry is None:
            return False
        task, runner = entry
        if runner is not None:
            runner.cancel()  # stops the await, not the thread behind it
        asyncio.get_running_loop().call_soon(self._finish, task, TaskState.CANCELED)
        return True
