"""Accepted: tasks annotated with the project's TypedDict."""

from collections.abc import Callable

from spec import BackendState, ExecutionBackend, TaskDict, TaskState, TaskStatesMap


class TypedBackend:
    @property
    def name(self) -> str:
        return "typed"

    def state(self) -> BackendState:
        return BackendState.SHUTDOWN

    def register_callback(self, func: Callable[[TaskDict, TaskState], None]) -> None:
        pass

    def get_task_states_map(self) -> TaskStatesMap:
        raise NotImplementedError

    async def submit_tasks(self, tasks: list[TaskDict]) -> None:
        for task in tasks:
            task["return_value"] = task["uid"]

    async def cancel_task(self, uid: str) -> bool:
        return False

    async def shutdown(self) -> None:
        pass


backend: ExecutionBackend = TypedBackend()
