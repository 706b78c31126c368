"""The Dask backend's records: a task (`DaskJob`), a Dask task (`Chunk`).

Also `DaskHooks`, the backend's methods its parts (dispatch, settling,
cancels) call back through: the one place a terminal state is reported is
the backend's job table (`reference._base.BackendBase._finish`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from reference._base import Job
from spec import BackendState, ResourceDemand, TaskKind, TaskState, task_kind

__all__ = ["ONE_CORE", "Chunk", "DaskHooks", "DaskJob"]

ONE_CORE = ResourceDemand()
"""The resource request of a task without one."""


class DaskJob(Job):
    """One accepted task and where it is on the cluster.

    Attributes:
        kind: What it runs; ``None`` for nothing runnable here (no function
            or executable, or a prompt).
        key: Unique per submission: names the task to the workers.
        chunk: The Dask task carrying it, once dispatched.
        losses: How many workers died while its chunk was on them.
        asking: A cancel on its way to the workers, resolved with
            ``cancel_task``'s answer.
        held: What arrived for it while the cancel was on its way, applied
            once the answer says it was not stopped (its outcome stands).
        skipped: The held outcome says a worker skipped it.
        demand: Its resource request, once checked.
    """

    __slots__ = (
        "asking",
        "chunk",
        "demand",
        "held",
        "key",
        "kind",
        "losses",
        "skipped",
    )

    def __init__(self, task: dict[str, Any]) -> None:
        super().__init__(task)
        self.kind: TaskKind | None = task_kind(task)
        self.key = ""
        self.chunk: Chunk | None = None
        self.losses = 0
        self.asking: asyncio.Future[bool] | None = None
        self.held: Callable[[], None] | None = None
        self.skipped = False
        self.demand = ONE_CORE


@dataclass(eq=False)
class Chunk:
    """One Dask task: a chunk of function tasks, or one executable.

    Attributes:
        key: The Dask key.
        entries: The tasks it carries, in order.
        future: Its Dask future, once submitted.
        live: Members not canceled; at 0 the Dask future is canceled.
        isolated: Each member runs in a child process of the worker.
        resources: Dask resources it holds, if accounted.
    """

    key: str
    entries: list[DaskJob]
    future: Any = None
    live: int = 0
    isolated: bool = False
    resources: dict[str, int] | None = None


class DaskHooks(Protocol):
    """The backend's methods the parts call: its job table and reporting."""

    name: str
    _work_dir: str

    def state(self) -> BackendState: ...

    def _owes_result(self, job: DaskJob) -> bool: ...

    def _finish(self, job: DaskJob, state: TaskState) -> bool: ...

    def _fail(
        self, job: DaskJob, error: BaseException, stderr: str | None = None
    ) -> None: ...

    def _in_flight(self, job: DaskJob) -> bool: ...
