"""Accepted: bare ``dict`` annotations (a non-strict user: generics allowed)."""
# mypy: allow-any-generics

from collections.abc import Callable

from spec import BackendState, ExecutionBackend
from spec.protocols import TaskStatesMap


class BareDictBackend:
    name: str = "bare"

    def state(self) -> BackendState:
        return BackendState.RUNNING

    def register_callback(self, func: Callable) -> None:
        pass

    def get_task_states_map(self) -> TaskStatesMap:
        raise NotImplementedError

    async def submit_tasks(self, tasks: list[dict]) -> None:
        pass

    async def cancel_task(self, uid: str) -> bool:
        return True

    async def shutdown(self) -> None:
        pass


backend: ExecutionBackend = BareDictBackend()
