"""`Settler`: reports finished Dask tasks, in batches, on the loop thread.

A consumer task takes finished futures from ``distributed.as_completed`` in
batches, gathers their results in one round trip, reports every task
(`_decisions.settlement` says what) and drops the futures, so Dask releases
them. A chunk lost with its worker is run again (`_decisions.after_loss`).
An outcome that arrives while a cancel is on its way is held for the
cancel's answer (`reference.dask._cancel`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

from distributed.scheduler import KilledWorker

from reference._placement import placement
from reference.dask import _decisions
from reference.dask._decisions import AfterLoss
from reference.dask._dispatch import Dispatcher
from reference.dask._jobs import Chunk, DaskHooks, DaskJob
from reference.dask._link import ClusterLink
from reference.dask._outcomes import CANCELED, Outcome
from spec import (
    BackendError,
    BackendState,
    ResourceCapacity,
    StandInError,
    TaskKind,
    TaskState,
    WorkerLostError,
)

__all__ = ["Settler"]

logger = logging.getLogger("reference.dask")

_REPORTS_PER_TURN = 512  # states delivered before yielding to the loop


class Settler:
    """Takes finished Dask futures and reports their tasks.

    Args:
        host: The backend (reporting goes through its job table).
        link: The connection the results are gathered through.
        chunks: The chunks on Dask by key, shared with the dispatcher.
        dispatcher: Sends the tasks of a lost chunk again.
        capacity: With resource accounting, what is handed out: every task
            that ran then gets its ``task["placement"]`` (PL-1).
    """

    def __init__(
        self,
        host: DaskHooks,
        link: ClusterLink,
        chunks: dict[str, Chunk],
        dispatcher: Dispatcher,
        capacity: ResourceCapacity | None = None,
    ) -> None:
        self._host = host
        self._capacity = capacity
        self._link = link
        self._chunks = chunks
        self._dispatcher = dispatcher
        self._wake: asyncio.Event | None = None
        self._direct_gather = True
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the consumer (once connected)."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._consume(self._link.completed, self._wake))

    def watch(self, futures: list[Any]) -> None:
        """Watch newly submitted futures."""
        completed = self._link.completed
        if completed is not None:
            completed.update(futures)
        if self._wake is not None:
            self._wake.set()

    async def _consume(self, completed: Any, wake: asyncio.Event) -> None:
        while True:
            if completed.is_empty():
                wake.clear()
                await wake.wait()
                continue
            try:
                first = await completed.__anext__()
            except StopAsyncIteration:
                continue
            batch = [first, *completed.next_batch(block=False)]
            try:
                await self.settle(batch)
            except asyncio.CancelledError:
                if self._host.state() is BackendState.SHUTDOWN:
                    raise  # shutdown stops the consumer
                # A stray CancelledError (raised by a task's code, a callback
                # or a library, not by shutdown) must not end the consumer:
                # every later task would go unreported (ST-8).
                self._settle_failed(batch)
            except Exception:  # never lose the consumer; the tasks fail instead
                self._settle_failed(batch)

    def _settle_failed(self, batch: list[Any]) -> None:
        logger.exception("backend %r: settling Dask results failed", self._host.name)
        for future in batch:
            self._settle_error(future, BackendError("internal error"))

    async def settle(self, batch: list[Any]) -> None:
        """Report the tasks of a batch of Dask futures that came out done."""
        client = self._link.client
        finished = [f for f in batch if f.status == "finished"]
        if finished:
            results = await self._gather(finished)
            if results is None:  # the batch could not be fetched: go one by one
                for future in finished:
                    try:
                        outcomes = await client.gather(future)
                    except Exception as exc:
                        self._settle_error(future, exc)
                    else:
                        self._settle_outcomes(future, outcomes)
            else:
                reported = 0
                for future, outcomes in zip(finished, results, strict=True):
                    self._settle_outcomes(future, outcomes)
                    reported += len(outcomes) if isinstance(outcomes, list) else 1
                    if reported >= _REPORTS_PER_TURN:
                        # Many callbacks in one turn would stall the loop (SC-3).
                        reported = 0
                        await asyncio.sleep(0)
        gathered = {f.key for f in finished}
        for future in batch:
            if future.key in gathered:
                continue
            status = future.status
            if status not in ("error", "cancelled"):
                # "lost" (or "pending", or "finished" again): its result was
                # on a worker that died before it was fetched, and Dask runs
                # it again. Not an error: it is watched again and reported
                # when it comes back (issue 11's flake failed its tasks here).
                if self._link.completed is not None:
                    self._link.completed.add(future)
                continue
            error: BaseException
            if status == "cancelled":
                error = WorkerLostError(
                    "Dask canceled the task without being asked to "
                    "(lost connection to the scheduler?)"
                )
            else:
                try:
                    error = await future.exception()
                except Exception as exc:
                    error = exc
            self._settle_error(future, error)

    async def _gather(self, futures: list[Any]) -> list[Any] | None:
        """Fetch a batch of results in one round trip, or return ``None``.

        Straight from the workers when the client can reach them (it spares
        the scheduler relaying every result), else through the scheduler.
        """
        client = self._link.client
        if self._direct_gather:
            try:
                return list(await client.gather(futures, direct=True))
            except Exception:
                if not any(f.status == "error" for f in futures):
                    # Workers behind a gateway or firewall: stop trying
                    # directly. (Not for a task's own error, e.g. a chunk
                    # that died with a worker while Dask recomputed it.)
                    self._direct_gather = False
        try:
            return list(await client.gather(futures, direct=False))
        except Exception:
            return None

    def _settle_outcomes(self, future: Any, outcomes: Any) -> None:
        chunk = self._chunks.pop(future.key, None)
        if chunk is None:
            return
        where = getattr(outcomes, "where", None)  # a chunk's: `Ran`
        if not isinstance(outcomes, list):  # an executable's one outcome
            outcomes = [outcomes]
        host = self._host
        for job, outcome in zip(chunk.entries, outcomes, strict=True):
            if job.asking is not None and host._owes_result(job):
                # A cancel is on its way: whether this outcome stands depends
                # on the workers' answer, so it waits for it.
                job.held = functools.partial(self.settle_member, job, outcome, where)
                job.skipped = outcome[0] == CANCELED
                continue
            if not host._owes_result(job):
                if job.canceled and job.kind is TaskKind.FUNCTION:
                    # Canceled, and it either ran already or the worker's
                    # guard skipped it: it will not run (again) now, so its
                    # CANCELED is true (CN-4). An executable waits for its
                    # group to be killed: the cancel reports it.
                    host._finish(job, TaskState.CANCELED)
                continue
            self.settle_member(job, outcome, where)

    def settle_member(
        self, job: DaskJob, outcome: Outcome, where: Mapping[str, Any] | None = None
    ) -> None:
        """Report one task's outcome (RS-1, RS-2, RS-5), and where it ran (PL-1)."""
        host = self._host
        try:
            found = _decisions.settlement(job.kind, outcome)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            # Loading what the worker sent ran the task's own code (a
            # __reduce__ raising, even CancelledError or SystemExit): that
            # fails this task only; the chunk's others are still reported.
            host._fail(job, StandInError(type(exc).__qualname__, str(exc)))
            return
        if found.state is TaskState.CANCELED:
            # A worker skipped it: a cancel whose answer did not come marked
            # it. It did not run and will not (CN-4).
            job.canceled = True
            host._finish(job, TaskState.CANCELED)
            return
        if found.fields:
            job.task.update(found.fields)
        where = found.where or where
        capacity = self._capacity
        if capacity is not None and where is not None:
            # Dask binds no cores: counted, and said so (cores None).
            memory = job.demand.memory if capacity.memory is not None else 0
            job.task["placement"] = placement(
                None, tuple(where["gpus"]), memory, where["host"], where["worker"]
            )
        if found.error is not None:
            host._fail(job, found.error, found.stderr)  # RS-2
        else:
            host._finish(job, found.state)  # RS-1, RS-5

    def _settle_error(self, future: Any, exc: BaseException) -> None:
        chunk = self._chunks.pop(future.key, None)
        if chunk is None:
            return
        if isinstance(exc, KilledWorker):
            self._settle_lost(chunk, exc)
            return
        # Members with a cancel on its way wait for its answer.
        for job in chunk.entries:
            if job.asking is not None and self._host._owes_result(job):
                job.held = functools.partial(self._host._fail, job, exc)
            else:
                self._host._fail(job, exc)

    def _settle_lost(self, chunk: Chunk, exc: KilledWorker) -> None:
        """A worker died with ``chunk`` on it: fail only the task at fault (RS-12).

        Each task still owed a result is decided by `_decisions.after_loss`:
        a function runs again alone in a child process of a worker, an
        executable again in a child of its own (it was queued behind the
        culprit, or its child died with the worker). A function whose chunk
        ran before the crash, or an executable killed mid-run with its
        worker, may so run twice.
        """
        lost = WorkerLostError(
            f"the Dask worker running this task died ({exc}); the task's result is lost"
        )
        lost.__cause__ = exc
        again: list[DaskJob] = []
        for job in chunk.entries:
            if not self._host._owes_result(job):
                continue
            if job.asking is not None:
                # Decided once the cancel's answer is in.
                job.held = functools.partial(self.lose, job, lost)
            elif self._lost_again(job, lost):
                again.append(job)
        self._run_again(again)

    def _lost_again(self, job: DaskJob, lost: WorkerLostError) -> bool:
        """Count a loss; whether ``job`` runs again (else it failed here)."""
        job.losses += 1
        if _decisions.after_loss(job.losses) is AfterLoss.RUN_AGAIN:
            return True
        self._host._fail(job, lost)  # RS-12
        return False

    def lose(self, job: DaskJob, lost: WorkerLostError) -> None:
        """Apply a worker loss to ``job`` once a cancel's answer let it stand."""
        if self._lost_again(job, lost):
            self._run_again([job])

    def _run_again(self, jobs: list[DaskJob]) -> None:
        if jobs:
            self._dispatcher.run_again(jobs)
