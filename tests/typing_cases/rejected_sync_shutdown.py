"""Rejected: ``shutdown`` must be ``async def`` (SD-1)."""

from _valid_backend import ValidBackend

from spec import ExecutionBackend


class SyncShutdown(ValidBackend):
    def shutdown(self) -> None:  # type: ignore[override]
        pass


backend: ExecutionBackend = SyncShutdown()  # E: assignment shutdown
