"""Rejected: ``submit_tasks`` must be ``async def`` (SB-1)."""

from typing import Any

from _valid_backend import ValidBackend

from spec import ExecutionBackend


class SyncSubmit(ValidBackend):
    def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:  # type: ignore[override]
        pass


backend: ExecutionBackend = SyncSubmit()  # E: assignment submit_tasks
