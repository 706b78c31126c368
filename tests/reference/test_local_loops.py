"""LocalExecutionBackend across event loops (sync tests: each runs its own loops)."""

from __future__ import annotations

import asyncio

from _ref_helpers import Recorder

from reference import LocalExecutionBackend
from spec import TaskState


async def async_add(a: int, b: int = 0) -> int:
    await asyncio.sleep(0)
    return a + b


def test_the_backend_follows_a_new_event_loop_once_idle() -> None:
    """pytest-asyncio gives each test its own loop; a reused backend follows."""
    backend = LocalExecutionBackend()
    recorder = Recorder()
    backend.register_callback(recorder)

    async def one(uid: str) -> None:
        await backend.submit_tasks([{"uid": uid, "function": async_add, "args": (1,)}])
        await recorder.wait([uid])

    asyncio.run(one("first"))
    asyncio.run(one("second"))
    asyncio.run(backend.shutdown())
    assert recorder.final("first") is TaskState.DONE
    assert recorder.final("second") is TaskState.DONE
