"""Dispatch: accepted jobs handed to the runners, through admission when it is on.

`Dispatcher` takes accepted jobs off the submit path (a chunk per loop turn,
never a state from inside ``submit_tasks``, ST-5), reads their resource
requests (the backend's ``_wait_for_resources``), admits them in arrival order
through the thread queue's pool, and hands each to its runner: pool-thread
pullers (`reference._workers.JobQueue`), the process pool, `OnLoopRunner`, or
`ExecutableRunner`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

from reference import _workers
from reference._base import function_call
from reference._procpool import ProcessPool
from reference._resources import ResourcePool
from reference.local import services
from reference.local.executables import ExecutableRunner
from reference.local.functions import CoroutineCheck, OnLoopRunner
from reference.local.jobs import BackendHooks, LocalJob
from reference.local.placement import ONE_CORE
from spec import ResourceDemand

__all__ = ["DispatchHost", "Dispatcher"]

_DISPATCH_CHUNK = 128
"""Jobs handed on per loop turn, so a huge batch never stalls the loop (SC-3)."""

_LOCK_RETRY_SECONDS = 0.0005
"""How soon an admission that found the pool's lock busy tries again."""


class DispatchHost(BackendHooks, Protocol):
    """What the dispatcher needs of the backend: its loop, state and hooks."""

    def _unrunnable(self, task: dict[str, Any]) -> Exception: ...

    def _wait_for_resources(
        self, job: Any, pool: ResourcePool[Any]
    ) -> ResourceDemand | None: ...

    def _prepare_service(self, job: Any) -> bool: ...


class Dispatcher:
    """Routes accepted jobs to the runners, admitting them first with resources.

    Every job waits in one queue (the pool's), in arrival order, until its
    demand fits. Jobs for the thread pool are admitted by the pullers
    themselves: a puller gives back what its job held and takes the next
    job that fits under one lock, with no trip through the event loop
    (`reference._workers.JobQueue`). Executables, process-pool and on-loop
    jobs are admitted the same way, by whoever frees the resources, and
    launched here; their grants come back through `released`.
    """

    def __init__(
        self,
        host: DispatchHost,
        *,
        queue: _workers.JobQueue,
        pool: ResourcePool[LocalJob] | None,
        executor: Executor | None,
        procs: ProcessPool | None,
        on_loop: OnLoopRunner,
        executables: ExecutableRunner,
        is_coroutine: CoroutineCheck,
        async_on_loop: bool,
    ) -> None:
        self._host = host
        self._queue = queue
        self._pool = pool
        self._executor = executor
        self._procs = procs
        self._on_loop = on_loop
        self._executables = executables
        self._is_coroutine = is_coroutine
        self._async_on_loop = async_on_loop
        # Accepted, not yet handed to the runners.
        self.pending: deque[LocalJob] = deque()
        self._scheduled = False
        self._admission_scheduled = False
        self._launching = False
        queue.spawn = self.spawn_puller

    def add(self, jobs: list[LocalJob], loop: asyncio.AbstractEventLoop) -> None:
        """Take accepted jobs; they are handed on from later loop turns (ST-5)."""
        self.pending.extend(jobs)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.dispatch)

    def released(self) -> None:
        """A finished job gave resources back: admit the jobs that now fit."""
        if self._launching:
            # Inside launch (a job failed as it was handed over): admit on a
            # later turn rather than recursing.
            self.admit_soon()
        else:
            self.admit()

    def dispatch(self) -> None:
        """Hand a chunk of accepted jobs on (one loop turn); re-arm if more."""
        self._scheduled = False
        if self._host._closed:
            return
        pending = self.pending
        count = min(len(pending), _DISPATCH_CHUNK)
        pool = self._pool
        if pool is None:
            ready: list[LocalJob] = []
            for _ in range(count):
                job = pending.popleft()
                if job.canceled or (
                    job.task.get("is_service") is True
                    and not self._host._prepare_service(job)
                ):
                    continue
                ready.append(job)
            self.launch(ready)
        else:
            jobs: list[LocalJob] = []
            # One demand per job, kept only once a job asks for other than
            # the default: a batch of default tasks is queued in one C loop.
            demands: list[ResourceDemand] | None = None
            # The default path, inline: a thread-pool function task with no
            # request asks for one core, which any capacity can give.
            plain = self._procs is None and not self._async_on_loop
            for _ in range(count):
                job = pending.popleft()
                task = job.task
                if job.canceled or (
                    task.get("is_service") is True
                    and not self._host._prepare_service(job)
                ):
                    continue
                if (
                    plain
                    and job.service is None
                    and not task.get("task_backend_specific_kwargs")
                    and task.get("function") is not None
                ):
                    try:
                        function_call(task)  # a malformed call fails here
                    except Exception as exc:
                        self._host._fail(job, exc)
                        continue
                    job.threaded = True
                    jobs.append(job)
                    if demands is not None:
                        demands.append(ONE_CORE)
                else:
                    try:
                        demand = self._host._wait_for_resources(job, pool)
                    except Exception as exc:  # a bug fails this task, not the chunk
                        self._host._fail(job, exc)  # SB-9
                        continue
                    if demand is not None:
                        if demands is None:
                            demands = [ONE_CORE] * len(jobs)
                        jobs.append(job)
                        demands.append(demand)
            self._is_coroutine.forget()  # keep no function past its turn
            self.admit(jobs, ONE_CORE if demands is None else demands)
        if pending and not self._scheduled:
            self._scheduled = True
            self._host._bound_loop().call_soon(self.dispatch)

    def launch(self, jobs: list[LocalJob]) -> None:
        """Hand jobs to the thread pool, the process pool or the child runners."""
        if not jobs:
            return
        self._launching = True
        try:
            self._hand_over(jobs)
        finally:
            self._launching = False

    def _hand_over(self, jobs: list[LocalJob]) -> None:
        procs = self._procs
        on_loop = self._async_on_loop
        threaded: list[LocalJob] = []
        in_processes: list[LocalJob] = []
        looped: list[LocalJob] = []
        for job in jobs:
            task = job.task
            try:
                if task.get("function") is not None:
                    call = function_call(task)  # a malformed call fails here
                    service = job.service
                    if service is not None and services.on_loop(service, call[0]):
                        self._on_loop.start(job, services.service_call(service, call))
                        looped.append(job)
                    elif on_loop and self._is_coroutine(call[0]):
                        self._on_loop.start(job, call)
                        looped.append(job)
                    elif procs is not None:
                        job.call = call
                        in_processes.append(job)
                    else:
                        threaded.append(job)
                elif task.get("executable") is not None:
                    self._executables.queue.append(job)
                else:
                    self._host._fail(job, self._host._unrunnable(task))  # SB-5, SB-6
            except Exception as exc:  # a bad call; a custom executor's submit failing
                self._host._fail(job, exc)
        if threaded:
            self._start_in_threads(threaded)
        if in_processes and procs is not None:
            procs.put(in_processes)
        if looped:
            # One check for the chunk, right after the tasks' first steps.
            self._host._bound_loop().call_soon(self._on_loop.report_running, looped)
            self._is_coroutine.forget()  # keep no function past its turn
        if self._executables.queue:
            self._executables.start()

    def admit(
        self,
        jobs: Sequence[LocalJob] = (),
        demands: Sequence[ResourceDemand] | ResourceDemand = (),
    ) -> None:
        """Queue ``jobs`` for their ``demands`` (or one for all); start what fits."""
        admitted = self._queue.admit(jobs, demands)
        if admitted is None:
            # A puller holds the lock: it may have lost the GIL inside it.
            # Retrying on the very next turn would spin the loop, holding the
            # GIL that puller needs, for a whole switch interval (5 ms); a
            # timer lets the loop sleep in its selector and the puller finish.
            # Meanwhile the pullers admit the new jobs themselves.
            self.admit_soon(_LOCK_RETRY_SECONDS)
            return
        others, pullers = admitted
        self.launch(others)
        self._start_pullers(pullers)

    def admit_soon(self, delay: float = 0.0) -> None:
        """Admit waiting jobs on a later loop turn (once, however often asked).

        Args:
            delay: Seconds to wait first; 0 for the next turn.
        """
        if not self._admission_scheduled:
            self._admission_scheduled = True
            loop = self._host._bound_loop()
            if delay:
                loop.call_later(delay, self._admit_waiting)
            else:
                loop.call_soon(self._admit_waiting)

    def _admit_waiting(self) -> None:
        self._admission_scheduled = False
        if self._pool is not None and not self._host._closed:
            self.admit()

    def _start_in_threads(self, jobs: list[LocalJob]) -> None:
        self._start_pullers(self._queue.put(jobs))

    def _start_pullers(self, wanted: int) -> None:
        queue = self._queue
        for started in range(wanted):
            try:
                self.spawn_puller()
            except Exception as exc:  # e.g. the executor was shut down under us
                stranded: list[LocalJob] = queue.retire(wanted - started)
                # Their cores come back as they fail: admit the next on a
                # later turn, not by recursing once per task.
                launching, self._launching = self._launching, True
                try:
                    for job in stranded:
                        self._host._fail(job, exc)  # SB-9: only these
                finally:
                    self._launching = launching
                return

    def spawn_puller(self) -> None:
        """Submit one more puller to the thread pool (from any thread)."""
        assert self._executor is not None  # a thread pool has one
        self._executor.submit(self._queue.pull)
