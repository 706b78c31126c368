"""`NoopExecutionBackend`: completes every task without running anything."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from reference._base import BackendBase, Job
from reference._services import announce, service_options
from spec import (
    BackendState,
    Capability,
    TaskKind,
    TaskState,
    is_service,
    task_kind,
)

__all__ = ["NoopExecutionBackend"]

_SLICE = 1024  # tasks completed per loop turn (SC-3)


class NoopExecutionBackend(BackendBase[Job]):
    """A dry-run backend: every runnable task ends ``DONE`` with dummy output.

    Useful to test workflow logic without running anything. It is strict, as a
    reference should be: batches are validated as the contract says, states
    are delivered asynchronously on the event loop (never from inside
    ``submit_tasks``), and a task can be cancelled until its state is
    delivered.

    Function and executable tasks get ``stdout`` and ``return_value`` set to
    ``"Dummy Output"``; prompt tasks get ``"Dummy Prompt Output"`` (RS-13). A
    task with nothing to run is ``FAILED`` with a `ValueError` (clause SB-5),
    and so is a prompt that is not a ``str`` (RS-14). A service
    (``is_service``) is reported RUNNING, ready at once with
    ``service_info == {"probe": "dry_run", "dry_run": True}`` (SV-2, SV-3),
    then DONE like any task; its ``ready`` options are still checked.

    Args:
        name: Name used to identify this backend in an engine's registry.
    """

    capabilities: frozenset[Capability] = frozenset(
        {Capability.DRY_RUN, Capability.PROMPTS, Capability.SERVICES}
    )

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Accept a batch; its states arrive on later turns of the event loop.

        Args:
            tasks: Task dicts, each with a unique string ``uid``. The list is
                not kept: the caller may clear or reuse it at once (SB-10).

        Raises:
            InvalidTaskError: An entry is not a dict or lacks a string uid.
            DuplicateTaskError: A uid repeats or is already in flight.
            BackendShutdownError: The backend has been shut down.
        """
        accepted = self._accept(tasks, Job)
        if accepted:
            # One loop callback per slice keeps submit O(n), and a huge batch
            # never stalls the loop in one turn (SC-3).
            asyncio.get_running_loop().call_soon(self._complete, deque(accepted))

    def _complete(self, batch: deque[Job]) -> None:
        for _ in range(min(len(batch), _SLICE)):
            job = batch.popleft()
            if not self._owes_result(job):
                continue  # canceled: its CANCELED report is already scheduled
            task = job.task
            kind = task_kind(task)
            if kind is None:
                self._fail(job, self._unrunnable(task))
                continue
            prompt = kind is TaskKind.PROMPT
            if prompt and not isinstance(task["prompt"], str):
                # Strict: a prompt is text (RS-14 gives the failure its shape).
                self._fail(
                    job,
                    ValueError(
                        f"'prompt' must be a str, got {type(task['prompt']).__name__}"
                    ),
                )
                continue
            if is_service(task) and not self._dry_run_service(job, kind):
                continue
            output = "Dummy Prompt Output" if prompt else "Dummy Output"
            task["stdout"] = output
            task["return_value"] = output
            self._finish(job, TaskState.DONE)
        if batch and self._state is not BackendState.SHUTDOWN:
            asyncio.get_running_loop().call_soon(self._complete, batch)

    def _dry_run_service(self, job: Job, kind: TaskKind) -> bool:
        """Report a service RUNNING and ready; False if its options are refused."""
        try:
            service_options(job.task, kind)
        except (TypeError, ValueError) as error:
            self._fail(job, error)  # strict: a real run would refuse it (SV-4)
            return False
        self._report(job.task, TaskState.RUNNING)
        announce(self._report_ready, job.task, {"probe": "dry_run", "dry_run": True})
        return True

    async def cancel_task(self, uid: str) -> bool:
        """Cancel a task whose state has not been delivered yet.

        Args:
            uid: The task's uid.

        Returns:
            ``True`` if the task will be reported ``CANCELED``; ``False`` for
            anything that is not the uid of a task in flight (never raises).
        """
        job = self._job(uid)
        if job is None:
            return False
        if not job.canceled:
            self._cancel_soon(job, asyncio.get_running_loop())
        return True

    async def shutdown(self) -> None:
        """Report every task still in flight ``CANCELED``; idempotent."""
        self._state = BackendState.SHUTDOWN
        self._cancel_all()
