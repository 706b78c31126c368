"""Rejected: ``cancel_task`` must be ``async def`` (CN-1)."""

from _valid_backend import ValidBackend

from spec import ExecutionBackend


class SyncCancel(ValidBackend):
    def cancel_task(self, uid: str) -> bool:  # type: ignore[override]
        return False


backend: ExecutionBackend = SyncCancel()  # E: assignment cancel_task
