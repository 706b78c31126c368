"""`CancelProtocol`: cancels of tasks already on Dask, and their answers.

Cancels are collected and sent to every worker in one ``client.run`` call
(`_worker.cancel_keys`), which marks the tasks there so they never start
and kills the process groups of running executables; each worker answers
which tasks it had already started in a thread, which cannot be stopped.
CANCELED is reported after the answer, and only for the others
(`_decisions.cancel_stopped`). An outcome that arrives meanwhile waits
(``DaskJob.held``) and stands if the task was not stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from reference.dask import _decisions
from reference.dask._jobs import DaskHooks, DaskJob
from reference.dask._link import ClusterLink
from spec import TaskKind, TaskState

__all__ = ["REMOTE_SLACK", "CancelProtocol"]

logger = logging.getLogger("reference.dask")

REMOTE_SLACK = 5.0
"""Seconds a cancel round trip may take on top of the kill grace."""


class CancelProtocol:
    """Sends cancels to the workers in shared calls and applies their answers.

    Args:
        host: The backend (reporting goes through its job table).
        link: The connection the cancels go through.
        grace: Seconds between SIGTERM and SIGKILL on the workers.
    """

    def __init__(self, host: DaskHooks, link: ClusterLink, grace: float) -> None:
        self._host = host
        self._link = link
        self._grace = grace
        self._waiters: list[DaskJob] = []
        self._futures_to_cancel: list[Any] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def round_trip(self) -> float:
        """Seconds one cancel call may take before it is given up."""
        return self._grace + REMOTE_SLACK

    async def cancel(self, job: DaskJob) -> bool:
        """Cancel a task on Dask; ``True`` iff it is reported CANCELED (CN-4).

        A task that had not started is marked on every worker and never
        starts (CN-6); a running executable's (or isolated re-run's) process
        group is killed (CN-5). A function started in a worker thread cannot
        be stopped: ``False``, and its own outcome is reported. Without an
        answer within two round trips, the backend cannot know: ``False``.
        """
        loop = asyncio.get_running_loop()
        answer = job.asking
        if answer is None:
            answer = job.asking = loop.create_future()
            self._waiters.append(job)
            if self.task is None or self.task.done():
                self.task = loop.create_task(self._flush())
        try:
            # Bounded: a flush in progress, then the one carrying this cancel.
            return await asyncio.wait_for(
                asyncio.shield(answer), 2 * self.round_trip + 1
            )
        except asyncio.TimeoutError:
            if answer.done():
                return answer.result()
            answer.set_result(False)  # so `_resolve` lets its outcome stand
            if job.asking is answer:
                # No answer came: its outcome, if it arrived, stands now
                # (delivered on a later loop turn, not from in here: ST-5).
                job.asking = None
                held, job.held = job.held, None
                if held is not None:
                    loop.call_soon(self._apply_held, job, held)
            return False

    def _apply_held(self, job: DaskJob, held: Callable[[], None]) -> None:
        if self._host._owes_result(job):
            held()

    async def _flush(self) -> None:
        """Send the cancels collected so far in one call; repeat until none."""
        while self._waiters or self._futures_to_cancel:
            waiters, self._waiters = self._waiters, []
            futures, self._futures_to_cancel = self._futures_to_cancel, []
            keys = [job.key for job in waiters]
            chunks = [job.chunk.key if job.chunk else "" for job in waiters]
            answers: dict[str, Any] | None = None
            try:
                answers = await asyncio.wait_for(
                    self._link.cancel_remote(keys, chunks, futures), self.round_trip
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "backend %r: canceling on Dask failed", self._host.name
                )
            replies = _decisions.read_replies(answers)
            for job in waiters:
                chunk = job.chunk
                stopped = _decisions.cancel_stopped(
                    job.key,
                    replies,
                    in_thread=job.kind is TaskKind.FUNCTION
                    and not (chunk is not None and chunk.isolated),
                    outcome_arrived=job.held is not None,
                    skipped=job.skipped,
                )
                try:
                    self._resolve(job, stopped)
                except Exception:  # a bug here must not strand the others
                    logger.exception("backend %r: resolving a cancel", self._host.name)

    def _resolve(self, job: DaskJob, stopped: bool) -> None:
        """Apply the workers' answer: CANCELED (CN-4), or the outcome stands."""
        answer = job.asking
        job.asking = None
        held, job.held = job.held, None
        if answer is not None and answer.done():
            stopped = answer.result()  # cancel() gave up waiting: it said False
        if not self._host._in_flight(job):  # shutdown reported it
            stopped = job.canceled
        elif stopped:
            job.canceled = True
            self._host._finish(job, TaskState.CANCELED)  # CN-4
            chunk = job.chunk
            if chunk is not None:
                chunk.live -= 1
                if chunk.live == 0 and chunk.future is not None:
                    # Every member is canceled: Dask may drop the task.
                    self._futures_to_cancel.append(chunk.future)
        elif held is not None:
            self._apply_held(job, held)  # it arrived meanwhile: it stands
        if answer is not None and not answer.done():
            answer.set_result(stopped)

    def stop(self) -> None:
        """At shutdown: forget waiting cancels; each is answered True."""
        self._waiters.clear()
