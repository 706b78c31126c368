"""Mutants of resource accounting (RQ-*) and of prompt results (RS-13, RS-14).

The resource mutants are the local backend with accounting on (2 cores, two
made-up GPU ids), each breaking one rule of the scheduler.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reference import LocalExecutionBackend, NoopExecutionBackend
from reference._resources import Grant, ResourcePool
from spec import ResourceCapacity, ResourceDemand, TaskKind, TaskState, task_kind


class _Accounting(LocalExecutionBackend):
    def __init__(self, cores: int = 2, bind: bool | None = None) -> None:
        super().__init__(
            ThreadPoolExecutor(4),
            cores=cores,
            bind=bind,
            gpus=["0", "1"],
            kill_grace=0.5,
            shutdown_timeout=3.0,
        )


class Oversubscribes(_Accounting):
    """RQ-1: hands out 8 cores while its capacity says 2."""

    def __init__(self) -> None:
        super().__init__(cores=8, bind=False)  # 8 counted cores on any machine

    @property
    def capacity(self) -> ResourceCapacity:
        return ResourceCapacity(2, ("0", "1"))


class _AcceptsAnything(ResourcePool[Any]):
    def fits(self, demand: ResourceDemand) -> bool:
        return True


class OversizedWaitsForever(_Accounting):
    """RQ-2: a request larger than the capacity is queued, and never runs."""

    @staticmethod
    def _new_pool(capacity: ResourceCapacity) -> ResourcePool[Any]:
        return _AcceptsAnything(capacity)


class IgnoresMalformedRequests(_Accounting):
    """RQ-3: a malformed request is read as the default one (one core)."""

    def _wait_for_resources(self, job: Any, pool: Any) -> Any:
        options = job.task.get("task_backend_specific_kwargs") or {}
        for key in ("ranks", "cores_per_rank", "gpus_per_rank", "mem_per_rank"):
            options.pop(key, None)
        return super()._wait_for_resources(job, pool)


class SharesFirstGpu(_Accounting):
    """RQ-4: every executable is given GPU 0, whatever it was granted."""

    def _placed(self, job: Any, grant: Grant, options: Any, command: Any) -> Any:
        if grant.gpus:
            grant = Grant(grant.cores, ("0",) * len(grant.gpus), grant.memory)
        return super()._placed(job, grant, options, command)


class NoGpuSeesEvery(_Accounting):
    """RQ-6: an executable granted no GPU sees every GPU of the capacity."""

    def _placed(self, job: Any, grant: Grant, options: Any, command: Any) -> Any:
        options, command = super()._placed(job, grant, options, command)
        if not grant.gpus:
            env = dict(os.environ if options.env is None else options.env)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.capacity.gpus)
            options = dataclasses.replace(options, env=env)
        return options, command


class _GreedyPool(ResourcePool[Any]):
    """Takes the first queued job that fits, letting small ones overtake big ones."""

    def take(self, skip: Any) -> tuple[Any, Grant] | None:
        for entry in list(self.waiting):
            job, (cores, *_) = entry
            if skip(job):
                self.waiting.remove(entry)
            elif cores <= self.free_cores:
                self.waiting.remove(entry)
                self.free_cores -= cores
                return job, Grant(cores, (), 0)
        return None


class StarvesLargeRequests(_Accounting):
    """RQ-5: one-core tasks overtake a task that needs every core, forever."""

    @staticmethod
    def _new_pool(capacity: ResourceCapacity) -> ResourcePool[Any]:
        return _GreedyPool(capacity)


class PromptAnswerInResponse(NoopExecutionBackend):
    """RS-13: a prompt's answer goes to ``response`` (a list), not ``stdout``."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        if state is TaskState.DONE and task_kind(task) is TaskKind.PROMPT:
            task["response"] = [task.pop("stdout")]
            task["return_value"] = None
        return super()._finish(job, state)


class PromptErrorAsString(NoopExecutionBackend):
    """RS-14: a failed prompt's ``exception`` is a string."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        if state is TaskState.FAILED and task_kind(task) is TaskKind.PROMPT:
            task["exception"] = str(task.get("exception"))
        return super()._finish(job, state)
