"""Notices from worker threads and processes, delivered on the event loop.

Pullers and the process pool's dispatchers `push` ``(job, kind, value,
text)`` from their threads; `NoticeInbox.drain` turns them into reported
states on the backend's loop, a chunk per loop turn, one wake-up per burst.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Protocol

from reference import _workers
from reference.local.jobs import BackendHooks, LocalJob, Notice
from spec import TaskState

__all__ = ["InboxHost", "NoticeInbox"]

_DRAIN_CHUNK = 256
"""Notices delivered per loop turn, so a burst never stalls the loop (SC-3)."""


class InboxHost(BackendHooks, Protocol):
    """What the inbox needs of the backend: its state and reporting hooks."""

    def _owes_result(self, job: Any) -> bool: ...

    def _launch(self, jobs: list[Any]) -> None: ...

    def _worker_lost(self, job: Any, code: object) -> None: ...


class NoticeInbox:
    """Queues workers' notices (thread-safe) and drains them on the loop.

    Attributes:
        notices: Pushed, not yet drained.
        loop: The loop to wake; ``None`` until the backend is bound to one.
    """

    def __init__(self, host: InboxHost) -> None:
        self._host = host
        self.notices: deque[Notice] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake_pending = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake ``loop`` from now on; wake-ups owed by the old one never come."""
        self.loop = loop
        self._wake_pending = False

    def push(self, notice: Notice) -> None:
        """Queue a worker's notice; wake the loop once per burst. Thread-safe."""
        self.notices.append(notice)
        # Appending before reading the flag means a drain that already reset
        # it will still see this notice; a spare wake-up is harmless.
        loop = self.loop
        if not self._wake_pending and loop is not None:
            self._wake_pending = True
            # A closed loop means nobody is left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        """Deliver a chunk of queued notices on the loop (ST-4); re-arm if more."""
        self._wake_pending = False
        notices = self.notices
        if self._host._closed:
            notices.clear()
            return
        report = self._host._report
        admitted: list[LocalJob] = []
        for _ in range(min(len(notices), _DRAIN_CHUNK)):
            job, kind, value, text = notices.popleft()
            if kind == _workers.STOPPED:
                # A canceled job's worker or coroutine has stopped: now the
                # CANCELED that cancel_task promised is true (CN-8).
                if job.kill_timer is not None:
                    job.kill_timer.cancel()
                    job.kill_timer = None
                self._host._finish(job, TaskState.CANCELED)
                continue
            if not self._host._owes_result(job):
                continue  # canceled (result discarded) or already reported
            task = job.task
            if kind == _workers.RUNNING:
                # A puller sends it once, as it takes the job (_workers.JobQueue).
                # If the function has already returned, RUNNING is no longer
                # true: the outcome follows, and RUNNING is optional (ST-3).
                # Through an engine that halves the callbacks of short tasks.
                if not job.ended:
                    report(task, TaskState.RUNNING)
                    if job.service is not None:
                        self._host._service_running(job)
            elif kind == _workers.DONE:
                task["return_value"] = value
                self._host._finish(job, TaskState.DONE)  # RS-1, RS-2
            elif kind == _workers.FAILED:
                task["exception"] = value
                task["stderr"] = text
                self._host._finish(job, TaskState.FAILED)  # RS-3, RS-9
            elif kind == _workers.ADMITTED:
                # A puller admitted it (it holds its resources); it is not
                # one the pullers run.
                admitted.append(job)
            else:
                self._host._worker_lost(job, value)
        self._host._launch(admitted)
        if notices and not self._wake_pending:
            self._wake_pending = True
            self._host._bound_loop().call_soon(self.drain)
