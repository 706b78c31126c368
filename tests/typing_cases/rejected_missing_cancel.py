"""Rejected: a backend without ``cancel_task`` is not an ExecutionBackend."""

from typing import Any

from spec import BackendState, ExecutionBackend, TaskStatesMap


class NoCancel:
    name = "no-cancel"

    def state(self) -> BackendState:
        return BackendState.INITIALIZED

    def register_callback(self, func: Any) -> None:
        pass

    def get_task_states_map(self) -> TaskStatesMap:
        raise NotImplementedError

    async def submit_tasks(self, tasks: list[Any]) -> None:
        pass

    async def shutdown(self) -> None:
        pass


backend: ExecutionBackend = NoCancel()  # E: assignment cancel_task
