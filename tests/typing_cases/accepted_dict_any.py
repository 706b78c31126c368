"""Accepted: the most common annotation, plain ``dict[str, Any]`` tasks."""

from collections.abc import Callable
from typing import Any

from spec import BackendState, ExecutionBackend, TaskStatesMap


class StatesMap:
    DONE = "DONE"
    RUNNING = "RUNNING"
    CANCELED = "CANCELED"
    FAILED = "FAILED"
    terminal_states = {"DONE", "FAILED", "CANCELED"}


class DictBackend:
    def __init__(self) -> None:
        self.name = "dict"
        self._cb: Callable[[dict[str, Any], str], None] = lambda t, s: None

    def state(self) -> BackendState:
        return BackendState.INITIALIZED

    def register_callback(self, func: Callable[[dict[str, Any], str], None]) -> None:
        self._cb = func

    def get_task_states_map(self) -> StatesMap:
        return StatesMap()

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        return None

    async def cancel_task(self, uid: str) -> bool:
        return False

    async def shutdown(self) -> None:
        return None


backend: ExecutionBackend = DictBackend()
states_map: TaskStatesMap = StatesMap()
