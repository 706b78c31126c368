"""`Dispatcher`: sends accepted tasks to Dask, in chunks, a slice per loop turn.

Function tasks are pickled one by one and sent many to a Dask task
(`_worker.run_functions`); executables one per Dask task
(`_worker.run_executable`). A task that cannot be sent fails alone, naming
what was wrong (RS-3, SB-9); a refusal by Dask fails only the chunk at
fault. With resource accounting, requests are checked first (RQ-2, RQ-3)
and tasks go in submission order (RQ-5).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from reference._base import duration, function_call
from reference._calls import unsendable_error
from reference._executables import build_command, parse_options
from reference.dask import _decisions, _outcomes, _worker
from reference.dask._jobs import ONE_CORE, Chunk, DaskHooks, DaskJob
from reference.dask._link import ClusterLink
from reference.dask._options import DaskOptions
from spec import BackendError, ResourceCapacity, TaskKind, resource_demand

__all__ = ["Dispatcher"]

logger = logging.getLogger("reference.dask")

_SLICE = 2_000  # tasks dispatched per event-loop turn: keeps the loop responsive
_EXEC_FIELDS = ("uid", "executable", "arguments", "capture_stdio")
_EXEC_OPTIONS = ("shell", "cwd", "env", "timeout")


class Dispatcher:
    """The queue of tasks not yet on Dask, and the packing of it into Dask tasks.

    Args:
        host: The backend (failing a task goes through its job table).
        link: The connection whose client takes the Dask tasks.
        options: The backend's options (chunk size, grace, capacity).
        chunks: The chunks on Dask by key, shared with the settling side.
        submitted: Called with the new futures, once Dask has them.
        token: Makes this backend's keys unique on a shared cluster.
    """

    def __init__(
        self,
        host: DaskHooks,
        link: ClusterLink,
        options: DaskOptions,
        chunks: dict[str, Chunk],
        submitted: Callable[[list[Any]], None],
        token: str,
    ) -> None:
        self._host = host
        self._link = link
        self._options = options
        self._chunks = chunks
        self._submitted = submitted
        self._token = token
        self._counter = itertools.count()
        self.pending: deque[DaskJob] = deque()
        self._wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None

    def queue(self, jobs: Iterable[DaskJob]) -> None:
        """Queue jobs for the next loop turns; start the dispatch loop once."""
        pending, token, counter = self.pending, self._token, self._counter
        for job in jobs:
            job.key = f"{job.uid}-{token}-{next(counter)}"
            pending.append(job)
        if self._wake is None:
            self._wake = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._run(self._wake))
        self._wake.set()

    async def _run(self, wake: asyncio.Event) -> None:
        await self._link.connect()
        while True:
            if not self.pending:
                wake.clear()
                await wake.wait()
                continue
            error = self._link.error
            if error is not None:
                while self.pending:
                    self._host._fail(self.pending.popleft(), error)
                continue
            await self._link.refresh_nthreads()
            self._slice()
            await asyncio.sleep(0)

    def _slice(self) -> None:
        host = self._host
        backlog = len(self.pending)
        functions: list[DaskJob] = []
        executables: list[DaskJob] = []
        accounted: list[DaskJob] = []  # with resource accounting: in order
        capacity = self._options.capacity
        while self.pending and (
            len(functions) + len(executables) + len(accounted) < _SLICE
        ):
            job = self.pending.popleft()
            if not host._owes_result(job):
                continue
            if capacity is not None:
                accounted.append(job)
            elif job.kind is TaskKind.FUNCTION:
                functions.append(job)
            else:
                executables.append(job)
        size = _decisions.chunk_size(
            self._options.chunk_size, backlog, self._link.nthreads
        )
        try:
            if accounted and capacity is not None:
                self._submit_in_order(self._requested(accounted, capacity), size)
            if functions:
                self.submit_functions(functions, size)
            if executables:
                self.submit_executables(executables)
        except Exception as exc:  # a bug here must fail tasks, never strand them
            logger.exception("backend %r: dispatching to Dask failed", host.name)
            for job in (*functions, *executables, *accounted):
                chunk = job.chunk
                if chunk is None or chunk.future is None:
                    if chunk is not None:
                        self._chunks.pop(chunk.key, None)
                    host._fail(job, BackendError(f"dispatch failed: {exc!r}"))

    def _requested(
        self, jobs: list[DaskJob], capacity: ResourceCapacity
    ) -> list[DaskJob]:
        """Check each task's resource request; those that may run, in order.

        A malformed request fails naming key and value (RQ-3), one that can
        never fit fails at once (RQ-2).
        """
        runnable: list[DaskJob] = []
        for job in jobs:
            options = job.task.get("task_backend_specific_kwargs")
            try:
                demand = resource_demand(options if isinstance(options, dict) else None)
            except ValueError as exc:
                self._host._fail(job, exc)  # RQ-3
                continue
            refused = _decisions.refusal(job.uid, job.kind, demand, capacity)
            if refused is not None:
                self._host._fail(job, refused)  # RQ-2
                continue
            job.demand = demand
            runnable.append(job)
        return runnable

    def _submit_in_order(self, jobs: list[DaskJob], size: int) -> None:
        """Send accounted tasks to Dask in submission order (RQ-5).

        Dask starts the tasks waiting for resources on a worker by priority,
        and never lets one overtake another that does not fit yet; the
        priority follows the order of submission. So each run of tasks of one
        sort goes in its own call, in order: one-core functions chunked,
        larger function requests and executables one per Dask task.
        """

        def sort(job: DaskJob) -> int:
            if job.kind is not TaskKind.FUNCTION:
                return 2
            return 0 if job.demand == ONE_CORE else 1

        for group, run in itertools.groupby(jobs, key=sort):
            members = list(run)
            if group == 2:
                self.submit_executables(members)
            else:
                self.submit_functions(members, size if group == 0 else 1)

    def run_again(self, jobs: list[DaskJob]) -> None:
        """Send the tasks of a lost Dask task again (RS-12).

        Functions go one per Dask task, each run in a child process of a
        worker; executables one per Dask task as always, under a new key
        (the old one names the failed Dask task, which Dask would hand back).
        """
        functions = [job for job in jobs if job.kind is TaskKind.FUNCTION]
        executables = [job for job in jobs if job.kind is not TaskKind.FUNCTION]
        if functions:
            self.submit_functions(functions, 1, isolated=True)
        for job in executables:
            job.key = f"{job.uid}-{self._token}-{next(self._counter)}"
        if executables:
            self.submit_executables(executables)

    def submit_functions(
        self, jobs: list[DaskJob], size: int, *, isolated: bool = False
    ) -> None:
        """Pickle function tasks one by one and send them in chunks of ``size``.

        A task that cannot be pickled fails alone, naming what could not be
        (RS-3); it never reaches a chunk, so it cannot spoil one. ``isolated``
        sends one task per Dask task, run in a child process of the worker.
        """
        chunks: list[Chunk] = []
        batches: list[_worker.FunctionBatch] = []
        one_at_a_time = self._options.capacity is not None  # a chunk holds one core
        items: list[tuple[str, bytes]] = []
        members: list[DaskJob] = []
        size = 1 if isolated else size
        for job in jobs:
            try:
                function, args, kwargs = function_call(job.task)
            except ValueError as exc:
                self._host._fail(job, exc)  # SB-9
                continue
            try:
                blob = _outcomes.dumps_function_item(function, args, kwargs)
            except Exception as exc:
                parts = (("function", function), ("args", args), ("kwargs", kwargs))
                error = unsendable_error(job.uid, parts, exc, "Dask")
                self._host._fail(job, error)  # RS-3
                continue
            items.append((job.key, blob))
            members.append(job)
            if len(items) >= size:
                chunk = self._new_chunk(members, isolated=isolated)
                chunks.append(chunk)
                batches.append(
                    _worker.FunctionBatch(items, isolated, chunk.key, one_at_a_time)
                )
                items, members = [], []
        if items:
            chunk = self._new_chunk(members, isolated=isolated)
            chunks.append(chunk)
            batches.append(
                _worker.FunctionBatch(items, isolated, chunk.key, one_at_a_time)
            )
        if chunks:
            self._submit(_worker.run_functions, chunks, batches)

    def submit_executables(self, jobs: list[DaskJob]) -> None:
        """Check and pickle executable tasks one by one; one Dask task each.

        Each job travels as bytes pickled here, so an argument that cannot be
        pickled fails only its task, naming it, instead of the ``client.map``
        carrying the slice.
        """
        chunks: list[Chunk] = []
        payloads: list[_worker.ExecutableJob] = []
        capacity = self._options.capacity
        work_dir = self._host._work_dir
        for job in jobs:
            task = job.task
            options = task.get("task_backend_specific_kwargs") or {}
            try:
                # The one duration validator, before any worker sees the value:
                # inf or 1e20 would overflow the worker's timer, NaN kill at once.
                if isinstance(options, dict) and options.get("timeout") is not None:
                    duration("timeout", options["timeout"])
                build_command(task, parse_options(task))
            except (TypeError, ValueError) as exc:
                self._host._fail(job, exc)  # SB-9
                continue
            part = {k: task[k] for k in _EXEC_FIELDS if k in task}
            part["task_backend_specific_kwargs"] = {
                k: options[k] for k in _EXEC_OPTIONS if k in options
            }
            try:
                blob = cloudpickle.dumps(part)
            except Exception as exc:
                error = unsendable_error(job.uid, part.items(), exc, "Dask")
                self._host._fail(job, error)
                continue
            chunks.append(self._new_chunk([job], key=job.key))
            payload = _worker.ExecutableJob(
                job.key, blob, work_dir, self._options.kill_grace
            )
            if capacity is not None:  # it sees only its GPUs, or none (RQ-6)
                payload.gpus = job.demand.whole_gpus
                payload.gpu_pool = capacity.gpus
            payloads.append(payload)
        if chunks:
            self._submit(_worker.run_executable, chunks, payloads)

    def _new_chunk(
        self, members: list[DaskJob], key: str | None = None, *, isolated: bool = False
    ) -> Chunk:
        if key is None:
            key = f"asyncflow-{self._token}-c{next(self._counter)}"
        capacity = self._options.capacity
        resources = None
        if capacity is not None:
            resources = _decisions.dask_resources(
                (e.demand for e in members), capacity.memory is not None
            )
        chunk = Chunk(key, members, live=len(members), isolated=isolated)
        chunk.resources = resources
        for job in members:
            job.chunk = chunk
        self._chunks[key] = chunk
        return chunk

    def _submit(self, function: Any, chunks: list[Chunk], payloads: list[Any]) -> None:
        """Hand chunks to Dask in one ``client.map``; one by one if it refuses.

        Payloads are bytes pickled per task, so a refusal is rare (a key Dask
        rejects, a lost connection); retrying each chunk alone keeps it to
        the chunk at fault. Chunks holding different resources go in
        separate calls (``resources`` is per call), in order, so Dask's
        priorities keep the submission order (RQ-5).
        """
        resources = chunks[0].resources
        if resources is not None:
            for at, chunk in enumerate(chunks):
                if chunk.resources != resources:
                    self._submit(function, chunks[:at], payloads[:at])
                    self._submit(function, chunks[at:], payloads[at:])
                    return
        try:
            futures = self._link.client.map(
                function,
                payloads,
                key=[c.key for c in chunks],
                pure=False,
                resources=resources,
            )
        except Exception as exc:
            if len(chunks) > 1:
                for chunk, payload in zip(chunks, payloads, strict=True):
                    self._submit(function, [chunk], [payload])
                return
            for chunk in chunks:
                self._chunks.pop(chunk.key, None)
                for job in chunk.entries:
                    if job.chunk is chunk:
                        error = BackendError(f"Dask refused the task: {exc!r}")
                        self._host._fail(job, error)  # SB-9
            return
        for chunk, future in zip(chunks, futures, strict=True):
            chunk.future = future
        self._submitted(futures)
