"""`NoopExecutionBackend`: completes every task without running anything."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from reference._base import BackendBase
from spec import BackendState, Capability, TaskKind, TaskState, task_kind

__all__ = ["NoopExecutionBackend"]


class NoopExecutionBackend(BackendBase):
    """A dry-run backend: every runnable task ends ``DONE`` with dummy output.

    Useful to test workflow logic without running anything. It is strict, as a
    reference should be: batches are validated as the contract says, states
    are delivered asynchronously on the event loop (never from inside
    ``submit_tasks``), and a task can be cancelled until its state is
    delivered.

    Function and executable tasks get ``stdout`` and ``return_value`` set to
    ``"Dummy Output"``; prompt tasks get ``"Dummy Prompt Output"``. A task with
    nothing to run is ``FAILED`` with a `ValueError` (clause SB-5).

    Args:
        name: Name used to identify this backend in an engine's registry.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.DRY_RUN, Capability.PROMPTS}
    )

    def __init__(self, name: str = "default") -> None:
        super().__init__(name)
        self._pending_cancels: set[str] = set()

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Accept a batch; its states arrive on a later turn of the event loop.

        Args:
            tasks: Task dicts, each with a unique string ``uid``.

        Raises:
            InvalidTaskError: An entry is not a dict or lacks a string uid.
            DuplicateTaskError: A uid repeats or is already in flight.
            BackendShutdownError: The backend has been shut down.
        """
        accepted = self._accept(tasks)
        if accepted:
            # One loop callback per batch keeps submit O(n) and cheap per task.
            asyncio.get_running_loop().call_soon(self._complete, accepted)

    def _complete(self, batch: list[dict[str, Any]]) -> None:
        for task in batch:
            if task["uid"] in self._pending_cancels:
                continue  # its CANCELED report is already scheduled
            kind = task_kind(task)
            if kind is None:
                task["exception"] = self._unrunnable(task)
                task["stderr"] = str(task["exception"])
                self._finish(task, TaskState.FAILED)
                continue
            prompt = kind is TaskKind.PROMPT
            output = "Dummy Prompt Output" if prompt else "Dummy Output"
            task["stdout"] = output
            task["return_value"] = output
            self._finish(task, TaskState.DONE)

    async def cancel_task(self, uid: str) -> bool:
        """Cancel a task whose state has not been delivered yet.

        Args:
            uid: The task's uid.

        Returns:
            ``True`` if the task will be reported ``CANCELED``; ``False`` for
            unknown or finished uids.
        """
        task = self._in_flight.get(uid)
        if task is None:
            return False
        if uid not in self._pending_cancels:
            self._pending_cancels.add(uid)
            # Delivered on a later loop turn: never from inside cancel_task (ST-5).
            asyncio.get_running_loop().call_soon(self._deliver_cancel, task)
        return True

    def _deliver_cancel(self, task: dict[str, Any]) -> None:
        self._pending_cancels.discard(task["uid"])
        self._finish(task, TaskState.CANCELED)

    async def shutdown(self) -> None:
        """Report every task still in flight ``CANCELED``; idempotent."""
        self._state = BackendState.SHUTDOWN
        for task in list(self._in_flight.values()):
            self._finish(task, TaskState.CANCELED)
        self._pending_cancels.clear()
