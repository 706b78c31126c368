"""A correct drop-in backend; each rejected case breaks one member of it."""

from collections.abc import Callable
from typing import Any

from spec import BackendState, TaskStatesMap


class ValidBackend:
    supports_implicit_data_linking = False
    supports_explicit_data_linking = False

    def __init__(self) -> None:
        self.name = "valid"
        self._work_dir = "."
        self.is_attached = False
        self.attached_to: list[str] = []

    def state(self) -> BackendState:
        return BackendState.INITIALIZED

    def register_callback(self, func: Callable[[dict[str, Any], str], None]) -> None:
        pass

    def get_task_states_map(self) -> TaskStatesMap:
        raise NotImplementedError

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        pass

    async def cancel_task(self, uid: str) -> bool:
        return False

    async def shutdown(self) -> None:
        pass

    def task_state_cb(self, task: dict[str, Any], state: str) -> None:
        pass

    def build_task(
        self, uid: str, task_desc: dict[str, Any], task_specific_kwargs: dict[str, Any]
    ) -> None:
        pass

    def link_implicit_data_deps(
        self, src_task: dict[str, Any], dst_task: dict[str, Any]
    ) -> None:
        pass

    def link_explicit_data_deps(
        self,
        src_task: dict[str, Any] | None = None,
        dst_task: dict[str, Any] | None = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> None:
        pass
