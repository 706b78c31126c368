"""Mutants of service tasks (SV-*): each breaks one rule of contract 1.2.

The readiness mutants (SV-2, SV-3) are the noop backend, whose dry-run
services are announced at once; the others are the local backend, which
really runs services.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from reference import LocalExecutionBackend, NoopExecutionBackend
from reference._base import Job
from reference._services import ServiceReady, announce
from spec import Capability, TaskKind, TaskState, parse_ready


class NeverAnnouncesServices(NoopExecutionBackend):
    """SV-2: a service is reported RUNNING, never announced ready."""

    def _dry_run_service(self, job: Job, kind: TaskKind) -> bool:
        self._report(job.task, TaskState.RUNNING)
        return True


class AnnouncesEveryTask(NoopExecutionBackend):
    """SV-2: every task, service or not, gets a service_callback."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        if state is TaskState.DONE and not task.get("is_service"):
            self._report(task, TaskState.RUNNING)
            announce(self._report_ready, task, {"probe": "dry_run", "dry_run": True})
        return super()._finish(job, state)


class _Overwrites(ServiceReady):
    def __call__(self, future: Any, task: Any, state: str) -> None:
        future.set_result(self.info)  # raises on a future already done


class CallbackOverwritesDoneFutures(NoopExecutionBackend):
    """SV-3: service_callback sets the result even on a future already done."""

    def _report_ready(self, task: dict[str, Any], ready: Any) -> None:
        super()._report_ready(task, _Overwrites(ready.info))


class _Local(LocalExecutionBackend):
    """The local backend on a small thread pool, as the other local mutants."""

    def __init__(self) -> None:
        super().__init__(ThreadPoolExecutor(2), kill_grace=0.5, shutdown_timeout=3.0)


class RunsServicesAsBatchTasks(_Local):
    """SB-6: without the services capability, a service runs as a batch task."""

    capabilities = LocalExecutionBackend.capabilities - {Capability.SERVICES}

    def _prepare_service(self, job: Any) -> bool:
        return True  # no watch, no refusal: it just runs


class StopsServicesOnceReady(_Local):
    """SV-1: a service is stopped 0.3 s after it is ready, as if a timeout applied."""

    def _report_ready(self, task: dict[str, Any], ready: Any) -> None:
        super()._report_ready(task, ready)
        job = self._job(task["uid"])
        if job is not None:
            self._bound_loop().call_later(0.3, self._stop, job)


class IgnoresProbes(_Local):
    """SV-4: every service is announced ready when it starts, whatever its probe."""

    def _prepare_service(self, job: Any) -> bool:
        prepared = super()._prepare_service(job)
        if job.service is not None:
            readiness = job.service.readiness
            readiness.options = replace(readiness.options, probe=parse_ready(None))
        return prepared


class EarlyEndEndsAsItWould(_Local):
    """SV-5: a service ending before it was ready is reported as a batch task would."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        if job.service is not None and not job.service.readiness.ready:
            job.service.close()
            job.service = None
        return super()._finish(job, state)


class ReadyServicesEndDone(_Local):
    """SV-6: a service that ends after it was ready is reported DONE, even failed."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        if job.service is not None and job.service.readiness.announced:
            state = TaskState.DONE
        return super()._finish(job, state)


class StopsOnlyTheServiceLeader(_Local):
    """SV-7: cancelling a ready executable service kills its leader, not its group."""

    def _terminate(self, job: Any) -> None:
        child = job.child
        if job.service is None or child is None:
            super()._terminate(job)
            return
        os.kill(child.pid, signal.SIGKILL)
        child.stop_reading()  # a child left behind holds the pipes


class GeneratorsRunToTheEnd(_Local):
    """SV-8: an async generator service is run to its end before it is announced."""

    def _prepare_service(self, job: Any) -> bool:
        prepared = super()._prepare_service(job)
        if job.service is not None and job.service.readiness.options.generator:
            job.service.on_yield = lambda value: None  # the first yield goes unseen
        return prepared
