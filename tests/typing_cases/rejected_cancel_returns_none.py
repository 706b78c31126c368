"""Rejected: ``cancel_task`` returns a bool (CN-1)."""

from _valid_backend import ValidBackend

from spec import ExecutionBackend


class CancelNone(ValidBackend):
    async def cancel_task(self, uid: str) -> None:  # type: ignore[override]
        pass


backend: ExecutionBackend = CancelNone()  # E: assignment cancel_task
