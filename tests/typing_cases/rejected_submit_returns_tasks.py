"""Rejected: ``submit_tasks`` returns None (radical 0.6's local returned tasks)."""

import asyncio
from typing import Any

from _valid_backend import ValidBackend

from spec import ExecutionBackend


class ReturnsTasks(ValidBackend):
    async def submit_tasks(  # type: ignore[override]
        self, tasks: list[dict[str, Any]]
    ) -> list[asyncio.Task[None]]:
        return []


backend: ExecutionBackend = ReturnsTasks()  # E: assignment submit_tasks
