"""Accepted: a complete drop-in for radical.asyncflow 0.6, with every capability."""

from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any

from typing_extensions import Self

from spec import (
    AsyncflowBackend,
    BackendState,
    Capability,
    SupportsAsyncContext,
    SupportsAsyncInit,
    SupportsCapabilities,
    TaskState,
    TaskStatesMap,
)


class FullBackend:
    capabilities = frozenset({Capability.FUNCTIONS})
    supports_implicit_data_linking = False
    supports_explicit_data_linking = False

    def __init__(self) -> None:
        self.name = "full"
        self._work_dir = "."
        self.is_attached = False
        self.attached_to: list[str] = []

    def state(self) -> BackendState:
        return BackendState.INITIALIZED

    def register_callback(
        self, func: Callable[[dict[str, Any], TaskState], None]
    ) -> None:
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
    ) -> dict[str, str]:
        return {"target": file_name or ""}

    async def _ready(self) -> Self:
        return self

    def __await__(self) -> Generator[Any, None, Self]:
        return self._ready().__await__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


backend: AsyncflowBackend = FullBackend()
awaitable: SupportsAsyncInit = FullBackend()
context: SupportsAsyncContext = FullBackend()
declared: SupportsCapabilities = FullBackend()
