"""Mutants of service tasks (SV-*): each breaks one rule of contract 1.2.

The readiness mutants (SV-2, SV-3) are the noop backend, whose dry-run
services are announced at once; the others are the local backend, which
really runs services.
"""

from __future__ import annotations

from typing import Any

from reference import NoopExecutionBackend
from reference._base import Job
from reference._services import ServiceReady, announce
from spec import TaskKind, TaskState


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
            announce(self._report, task, {"probe": "dry_run", "dry_run": True})
        return super()._finish(job, state)


class _Overwrites(ServiceReady):
    def __call__(self, future: Any, task: Any, state: str) -> None:
        future.set_result(self.info)  # raises on a future already done


class CallbackOverwritesDoneFutures(NoopExecutionBackend):
    """SV-3: service_callback sets the result even on a future already done."""

    def _report(self, task: dict[str, Any], state: TaskState, **extra: Any) -> None:
        if "service_callback" in extra:
            extra["service_callback"] = _Overwrites(extra["service_callback"].info)
        super()._report(task, state, **extra)
