"""Mutants of placement (PL-*): the local backend with accounting on, binding.

Each reports, binds or restores one thing wrongly: a task without its
placement, a core handed to every task, a placement that names other cores
than the task runs on, a pool thread left bound after its last task.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reference import LocalExecutionBackend
from reference._placement import CoreSet
from reference._pull import Binding
from reference._resources import ResourcePool
from spec import ResourceCapacity, TaskState


class _Binds(LocalExecutionBackend):
    def __init__(self) -> None:
        super().__init__(
            ThreadPoolExecutor(4),
            cores=2,
            gpus=["0", "1"],
            kill_grace=0.5,
            shutdown_timeout=3.0,
        )


class OmitsPlacement(_Binds):
    """PL-1: binds every task, but reports no placement."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        job.task.pop("placement", None)
        return super()._finish(job, state)


class _EveryoneGetsTheFirst(CoreSet):
    """Hands out the lowest ids and never removes them: they leak to everyone."""

    def take(self, count: int) -> tuple[int, ...]:
        return tuple(range(count))

    def give(self, ids: Any) -> None:
        pass


class _LeakyPool(ResourcePool[Any]):
    def __init__(self, capacity: ResourceCapacity) -> None:
        super().__init__(capacity)
        self._free_core_ids = _EveryoneGetsTheFirst(capacity.core_ids)


class LeaksCoreZero(_Binds):
    """PL-2: core 0 goes to every task, whatever else holds it (a leaked core)."""

    @staticmethod
    def _new_pool(capacity: ResourceCapacity) -> ResourcePool[Any]:
        return _LeakyPool(capacity)


class LiesAboutCores(_Binds):
    """PL-3: each placement names the next core over, not the one it ran on."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        record = job.task.get("placement")
        if record and record.get("cores"):
            ids = list(self.capacity.core_ids)
            job.task["placement"] = {
                **record,
                "cores": tuple(
                    sorted(ids[(ids.index(c) + 1) % len(ids)] for c in record["cores"])
                ),
            }
        return super()._finish(job, state)


class _NeverRestores(Binding):
    def follow(self, job: Any) -> None:
        if job is not None:
            super().follow(job)


class ForgetsToRestore(_Binds):
    """PL-4: a pool thread stays bound to its last task's cores."""

    def __init__(self) -> None:
        super().__init__()
        self._fn_queue.binding = _NeverRestores
