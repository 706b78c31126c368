"""Accepted: a ``Callable[..., None]`` callback and freely named parameters."""

from collections.abc import Callable
from typing import Any

from spec import BackendState, ExecutionBackend, TaskStatesMap


class LooseBackend:
    name = "loose"

    def state(self) -> BackendState:
        return BackendState.INITIALIZED

    def register_callback(self, callback: Callable[..., None]) -> None:
        pass

    def get_task_states_map(self) -> TaskStatesMap:
        raise NotImplementedError

    async def submit_tasks(self, batch: list[Any]) -> None:
        pass

    async def cancel_task(self, task_uid: str) -> bool:
        return False

    async def shutdown(self) -> None:
        pass


backend: ExecutionBackend = LooseBackend()
