"""Rejected: ``state()`` must be synchronous (LC-2)."""

from _valid_backend import ValidBackend

from spec import BackendState, ExecutionBackend


class AsyncState(ValidBackend):
    async def state(self) -> BackendState:  # type: ignore[override]
        return BackendState.INITIALIZED


backend: ExecutionBackend = AsyncState()  # E: assignment state
