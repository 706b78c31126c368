"""`LocalExecutionBackend`: runs tasks on the local machine.

Functions run in a thread or process pool, executables as asyncio subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from reference import _executables as ex
from reference import _workers
from reference._base import _RUNS_FUNCTIONS_AND_EXECUTABLES, BackendBase, function_call
from reference._core import CancelDecision
from reference._procpool import ProcessPool
from reference._resources import (
    Grant,
    ResourcePool,
    capacity_from,
)
from reference.local import services
from reference.local.dispatch import Dispatcher
from reference.local.executables import ExecutableRunner
from reference.local.functions import (
    CoroutineCheck,
    OnLoopRunner,
    pool_like,
    pool_width,
    stop_workers,
)
from reference.local.jobs import LocalJob
from reference.local.notices import NoticeInbox
from reference.local.options import LocalOptions
from reference.local.placement import place, read_request
from spec import (
    BackendState,
    Capability,
    ResourceCapacity,
    ResourceDemand,
    TaskState,
    WorkerLostError,
)

__all__ = ["LocalExecutionBackend"]

_ACCOUNTING = frozenset({Capability.RESOURCES, Capability.PLACEMENT})
"""With accounting on: requests honoured, and every task says where it ran
(bound to its cores where the platform can; ``"cores": None`` elsewhere)."""

_PROCESS_POOL_EXTRAS = frozenset(
    {Capability.CRASH_ISOLATION, Capability.PREEMPTIVE_CANCEL}
)

logger = logging.getLogger("reference")

# Work done per event-loop turn, so a huge batch never stalls the loop (SC-3).


_PROCESS_POOL_EXTRAS = frozenset(
    {Capability.CRASH_ISOLATION, Capability.PREEMPTIVE_CANCEL}
)


class LocalExecutionBackend(BackendBase[LocalJob]):
    """Runs tasks on the local machine: functions in a pool, executables as children.

    Function tasks (sync or ``async def``) run in one of two kinds of pool:

    - **threads** (the default, or any ``executor`` that is not a
      `ProcessPoolExecutor`): the backend keeps at most one call per pool
      thread in the executor, each running queued tasks one at a time, so a
      pool shared with other work may see its threads held until the queue
      is empty;
    - **processes** (``processes=N``, or a `ProcessPoolExecutor` whose
      settings are taken over): the backend starts and owns ``N`` worker
      processes, each in its own session, each running one task at a time.
      Functions and arguments travel with cloudpickle (lambdas, closures and
      local functions work). Workers start with ``forkserver`` (``spawn``
      where there is none) unless the executor's ``mp_context`` names
      ``spawn`` or ``forkserver``: a plain ``fork`` of a parent running
      threads is unsafe. Workers never import the caller's ``__main__``:
      a script without ``if __name__ == "__main__":`` runs its body once,
      in the caller only (what names ``__main__`` travels by value).

    Async functions run on one event loop per worker thread or process,
    reused across tasks. Function tasks report ``return_value`` when DONE,
    and ``exception`` and the traceback text in ``stderr`` when FAILED; their
    ``stdout`` is left unset (``str()`` of a large result would cost the
    event loop dearly).

    Executable tasks run as child processes watched by the event loop, each
    in its own process group, at most ``max_processes`` at a time. ``shell``
    (default ``True``: executable and arguments joined by spaces, run by
    ``/bin/sh``), ``cwd``, ``env`` and ``timeout`` come from
    ``task_backend_specific_kwargs``; with
    ``capture_stdio`` the output goes to ``<_work_dir>/<uid>.stdout`` and
    ``.stderr`` (the uid encoded if it could name a file elsewhere, see
    `reference._executables.capture_name`) and those paths are returned.

    With ``resources`` (or ``cores``, ``gpus``, ``memory``,
    ``mpi_launcher``) the backend honours resource requests: tasks wait in
    arrival order until their cores, GPUs and memory are free, executables
    see only their GPUs in ``CUDA_VISIBLE_DEVICES``, and a request that can
    never fit fails at once with `spec.ResourceUnavailableError`
    (docs/resources.md). Where the platform can (Linux), each task is also
    bound to the core ids it was granted (capability ``placement``): an
    executable from its first instruction, a function task's pool thread or
    worker process while it runs; every task that started carries
    ``task["placement"]`` saying where it ran.

    States are delivered on the event loop that called ``submit_tasks``:
    worker threads queue their notices, and the loop drains them in bursts.
    RUNNING is reported when a task really starts: a pool thread picked it
    up, it was sent to a worker process (which runs nothing else), or its
    child process was started; but not once a pool thread's function has
    already returned when the loop gets to its notice (no longer true, and
    RUNNING is optional).

    Faults in a process pool (capability ``crash_isolation``): a worker that
    dies (``os._exit``, a crash, a kill from outside) fails only the task it
    was running, with `spec.WorkerLostError`, and is replaced; queued tasks
    and tasks on other workers complete. A return value that pickles in the
    worker but cannot be unpickled here fails only its task, with an
    `pickle.UnpicklingError` naming its type; an argument that cannot be
    pickled fails only its task. If the pool's ``initializer`` raises, every
    function task fails with an error carrying its exception.

    With ``async_on_loop=True``, ``async def`` function tasks run as asyncio
    tasks on the event loop that called ``submit_tasks``, with no thread
    hand-off: cheaper, and what asyncio code expects of an ``async def``, but
    a coroutine that blocks (``time.sleep``, heavy computation between
    awaits) stalls that loop, the engine and every other task with it. Sync
    functions still go to ``executor``. Such a task reports RUNNING if it is
    still running after its first step (one that finishes in it goes
    straight to DONE), and cancelling it cancels its asyncio task:
    `asyncio.CancelledError` is raised inside the coroutine, and CANCELED is
    reported once the coroutine has stopped.

    Cancellation and its limits:

    - a task that has not started never starts, and is reported CANCELED;
    - a running executable's process group, and its descendants that left
      the group (found by a mark in their environment), get SIGTERM, then
      SIGKILL after ``kill_grace`` seconds; CANCELED is reported once the
      child has exited, and at most a short drain after the SIGKILL even if
      something still holds its output open;
    - a running function in a process pool is stopped (capability
      ``preemptive_cancel``): its worker's process group gets SIGTERM, then
      SIGKILL after ``kill_grace``; CANCELED is reported once the worker is
      dead, and a new worker takes its place;
    - a running ``async def`` function in a thread pool gets
      `asyncio.CancelledError` inside the coroutine, on its worker thread's
      loop; CANCELED is reported once the coroutine has ended (one that
      swallows the cancel and keeps going is reported CANCELED only when it
      ends, its result discarded);
    - a running *sync* function in a thread cannot be interrupted, so
      ``cancel_task`` returns False and its own outcome is reported: CANCELED
      is never reported for a function still running. A thread-pool
      backend therefore does not declare
      ``preemptive_cancel`` (nor ``crash_isolation``: a crash takes the
      whole process down).

    ``shutdown()`` reports every unfinished task CANCELED, kills child
    process groups and worker processes, cancels running coroutines, and
    returns within about ``shutdown_timeout`` seconds. A *thread* stuck in a
    long function cannot be killed: shutdown returns without it, but Python
    joins pool threads at interpreter exit, so such a thread still delays the
    end of the program. Worker processes never outlive the backend: each
    kills its own process group when the parent's end of a lifeline pipe
    closes, even if the parent dies without shutting down.

    Args:
        executor: Where function tasks run; a new `ThreadPoolExecutor` when
            ``None``. A `ProcessPoolExecutor` is read for its
            ``max_workers``, ``mp_context``, ``initializer``, ``initargs``
            and ``max_tasks_per_child``, and the backend runs its own worker
            processes with them instead (the executor itself runs nothing).
            The backend shuts it down in ``shutdown()``.
        name: Name used to identify this backend in an engine's registry.
        processes: Run function tasks in this many worker processes of the
            backend's own (the clearer spelling of a `ProcessPoolExecutor`);
            not together with ``executor``.
        max_processes: Most executable children running at once.
        kill_grace: Seconds between SIGTERM and SIGKILL when killing a child
            or a worker process.
        shutdown_timeout: Seconds ``shutdown()`` waits for children and
            workers to exit before it stops waiting.
        resources: Honour resource requests (``ranks``, ``cores_per_rank``,
            ``gpus_per_rank``, ``mem_per_rank``); implied by ``cores``,
            ``gpus``, ``memory`` or ``mpi_launcher``. The backend then
            declares the ``resources`` capability; see docs/resources.md.
        cores: Cores to hand out: a count (the lowest ids of the cpuset) or
            the core ids themselves; ``None`` for every core of this
            process's CPU affinity (``os.sched_getaffinity(0)``).
        gpus: GPU ids to hand out; those in ``CUDA_VISIBLE_DEVICES`` when
            ``None``.
        memory: MB to hand out; ``None`` leaves memory unaccounted.
        mpi_launcher: The argv prefix that runs an executable with
            ``ranks > 1``, ``"{ranks}"`` replaced by the rank count (e.g.
            ``["mpiexec", "-n", "{ranks}"]``). Without it such a task is
            FAILED with `spec.CapabilityNotSupportedError`.
        bind: Bind tasks to the core ids they are granted: ``None`` (the
            default) where the platform can, ``True`` always (an error where
            it cannot), ``False`` never (cores are only counted, and a count
            may then exceed the cpuset).
        async_on_loop: Run ``async def`` function tasks on the caller's
            event loop instead of in ``executor`` (default ``False``; see
            above and docs/reference-backends.md for when to choose it).

    Raises:
        TypeError: ``executor`` is not a `concurrent.futures.Executor`, both
            ``executor`` and ``processes`` are given, or ``max_processes``,
            ``processes``, ``cores``, ``gpus``, ``memory``, ``mpi_launcher``
            or ``async_on_loop`` has the wrong type.
        ValueError: A numeric option is out of range, or (binding) ``cores``
            names more cores, or other cores, than this process may use.
    """

    capabilities: frozenset[Capability] = _RUNS_FUNCTIONS_AND_EXECUTABLES | {
        Capability.SERVICES
    }
    """What a thread-pool backend offers; a process-pool one adds
    ``crash_isolation`` and ``preemptive_cancel`` (per instance)."""

    def __init__(
        self,
        executor: Executor | None = None,
        name: str = "default",
        *,
        processes: int | None = None,
        max_processes: int = 64,
        kill_grace: float = 2.0,
        shutdown_timeout: float = 5.0,
        resources: bool = False,
        cores: int | Iterable[int] | None = None,
        gpus: Sequence[str] | None = None,
        memory: int | None = None,
        mpi_launcher: Sequence[str] | None = None,
        bind: bool | None = None,
        async_on_loop: bool = False,
    ) -> None:
        super().__init__(name)
        options = LocalOptions.check(
            executor,
            processes=processes,
            max_processes=max_processes,
            kill_grace=kill_grace,
            shutdown_timeout=shutdown_timeout,
            resources=resources,
            cores=cores,
            gpus=gpus,
            memory=memory,
            mpi_launcher=mpi_launcher,
            bind=bind,
            async_on_loop=async_on_loop,
        )
        self._options = options
        self._async_on_loop = options.async_on_loop
        self._kill_grace = options.kill_grace
        self._is_coroutine_function = CoroutineCheck()
        self._resources: ResourcePool[LocalJob] | None = (
            self._new_pool(capacity_from(cores, gpus, memory, bind=options.bind))
            if options.resources
            else None
        )
        if options.resources:
            self.capabilities = self.capabilities | _ACCOUNTING
        self._inbox = NoticeInbox(self)
        push = self._inbox.push
        self._procs: ProcessPool | None = None
        if isinstance(executor, ProcessPoolExecutor):
            self._procs = pool_like(executor, push, self._kill_grace, name)
        elif options.processes is not None:
            self._procs = ProcessPool(
                options.processes, push, kill_grace=self._kill_grace, name=name
            )
        elif executor is None:
            executor = ThreadPoolExecutor(thread_name_prefix=f"asyncflow-{name}")
        if self._procs is not None:
            # This instance isolates crashes and stops running functions.
            self.capabilities = self.capabilities | _PROCESS_POOL_EXTRAS
        self._executor: Executor | None = executor
        self._loop: asyncio.AbstractEventLoop | None = None
        # Function jobs for a thread pool, run by a few long-lived pullers.
        width = 1 if executor is None else pool_width(executor)
        self._fn_queue = _workers.JobQueue(push, width, self._resources)
        self._on_loop = OnLoopRunner(self)
        self._executables = ExecutableRunner(
            self, options.max_processes, self._kill_grace
        )
        self._dispatcher = Dispatcher(
            self,
            queue=self._fn_queue,
            pool=self._resources,
            executor=executor,
            procs=self._procs,
            on_loop=self._on_loop,
            executables=self._executables,
            is_coroutine=self._is_coroutine_function,
            async_on_loop=self._async_on_loop,
        )
        self._closed = False
        self._shutdown_done: asyncio.Event | None = None

    @property
    def capacity(self) -> ResourceCapacity:
        """The cores, GPU ids and memory handed out to running tasks.

        Raises:
            AttributeError: Resource accounting is off (no ``resources``).
        """
        if self._resources is None:
            raise AttributeError(
                f"backend {self.name!r} does not account resources; "
                "construct it with resources=True"
            )
        return self._resources.capacity

    @property
    def executor(self) -> Executor | None:
        """The executor function tasks run in; ``None`` for a process pool.

        A process-pool backend runs its own workers (see `worker_pids`); the
        `ProcessPoolExecutor` it was given, if any, runs nothing.
        """
        return None if self._procs is not None else self._executor

    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes (empty for a thread pool)."""
        return self._procs.pids() if self._procs is not None else []

    # -- submission ----------------------------------------------------------

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Accept a batch and return at once; states follow through the callback.

        Args:
            tasks: Task dicts, each with a unique string ``uid``.

        Raises:
            InvalidTaskError: An entry is not a dict or lacks a string uid.
            DuplicateTaskError: A uid repeats or is already in flight.
            BackendShutdownError: The backend has been shut down.
            RuntimeError: Tasks are still in flight on another event loop.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop and self._state is not BackendState.SHUTDOWN:
            if self._jobs:
                raise RuntimeError(
                    f"backend {self.name!r} has tasks in flight on another event "
                    "loop; submit from that loop"
                )
            self._loop = loop
            self._inbox.bind(loop)
            self._executables.reset()
        accepted = self._accept(tasks, LocalJob)
        if not accepted:
            return
        self._dispatcher.add(accepted, loop)

    def _launch(self, jobs: list[LocalJob]) -> None:
        """Hand jobs to the runners (a seam: `Dispatcher.launch`)."""
        self._dispatcher.launch(jobs)

    # -- resource accounting (capability "resources") ----------------------------
    #
    # Every job waits in one queue (the pool's), in arrival order, until its
    # demand fits. Jobs for the thread pool are admitted by the pullers
    # themselves: a puller gives back what its job held and takes the next
    # job that fits under one lock, with no trip through the event loop
    # (_workers.JobQueue). Executables, process-pool and on-loop jobs are
    # admitted the same way, by whoever frees the resources, and launched
    # here; their grants come back here too, in _finish.

    @staticmethod
    def _new_pool(capacity: ResourceCapacity) -> ResourcePool[LocalJob]:
        """The pool resources are handed out from (a seam for the mutants)."""
        return ResourcePool(capacity)

    def _wait_for_resources(
        self, job: LocalJob, pool: ResourcePool[LocalJob]
    ) -> ResourceDemand | None:
        """Check ``job``'s request: its demand, or ``None`` if it failed.

        A request that can never run fails at once (RQ-2), a malformed one
        names what is wrong (RQ-3). Also marks the jobs the pullers run.
        """
        task = job.task
        is_function = task.get("function") is not None
        if is_function:
            try:
                call = function_call(task)  # a malformed call fails here
            except Exception as exc:
                self._fail(job, exc)
                return None
            job.threaded = self._procs is None and not (
                self._async_on_loop and self._is_coroutine_function(call[0])
            )
            if job.service is not None and services.on_loop(job.service, call[0]):
                job.threaded = False  # it runs on the loop (_hand_over)
        demand = read_request(
            task,
            is_function=is_function,
            launcher=self._options.mpi_launcher,
            pool=pool,
        )
        if isinstance(demand, Exception):
            self._fail(job, demand)  # RQ-2, RQ-3, SB-6
            return None
        job.ranks = demand.ranks
        return demand

    # -- notices from workers --------------------------------------------------

    def _finish(self, job: LocalJob, state: TaskState) -> bool:
        # A job a puller took gives back its grant in that puller, as the
        # function returns (_workers.JobQueue); any other grant comes back here.
        if job.service is not None and self._jobs.get(job.uid) is job:
            shutting_down = self._state is BackendState.SHUTDOWN
            state = services.settle(job, state, closing=shutting_down)
        waiting = (
            job.grant is not None and not job.pulled and self._fn_queue.release(job)
        )
        reported = super()._finish(job, state)
        if waiting and not self._closed:
            self._dispatcher.released()
        return reported

    # -- services (capability "services") -------------------------------------

    def _prepare_service(self, job: LocalJob) -> bool:
        """Give a service its readiness watch; False if its options failed it."""
        if job.service is not None or job.task.get("is_service") is not True:
            return True
        try:
            job.service = services.prepare(
                job.task, self._report_ready, lambda: self._service_timed_out(job)
            )
        except (TypeError, ValueError) as exc:
            self._fail(job, exc)  # SV-4
            return False
        return True

    def _service_running(self, job: LocalJob) -> None:
        """A service's RUNNING was just reported: watch it for readiness (SV-2).

        The runners call it right after they report a service job RUNNING.
        """
        task = job.task
        capture = task.get("capture_stdio") and job.child is not None
        path = self._capture_paths(self._work_dir, job.uid)[0]
        services.start_watching(job, self._bound_loop(), path if capture else None)

    def _service_timed_out(self, job: LocalJob) -> None:
        """Stop a service whose ``ready_timeout`` passed; it ends FAILED (SV-5)."""
        if self._jobs.get(job.uid) is not job or self._closed:
            return
        decision = self._stop(job)
        if decision is CancelDecision.CANNOT_STOP:
            # A function in a thread cannot be stopped: FAILED now, its
            # later result dropped.
            self._finish(job, TaskState.FAILED)
        elif decision is CancelDecision.NEVER_RUNS:
            self._cancel_soon(job, self._bound_loop())

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:  # pragma: no cover - set by the first submit
            raise RuntimeError("backend is not bound to an event loop")
        return self._loop

    # -- process pool faults ----------------------------------------------------

    def _worker_lost(self, job: LocalJob, code: object) -> None:
        """Fail only the task whose worker died (RS-12); a new worker replaces it."""
        if isinstance(code, int) and code < 0:
            how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        self._fail(
            job,
            WorkerLostError(
                f"the worker process running task {job.uid!r} died ({how}); "
                "only this task is lost, and a new worker takes its place"
            ),
        )

    # -- executables -----------------------------------------------------------

    def _terminate(self, job: LocalJob) -> None:
        """Stop a running child (a seam: `ExecutableRunner.terminate`)."""
        self._executables.terminate(job)

    def _placed(
        self,
        job: LocalJob,
        grant: Grant,
        options: ex.ExecOptions,
        command: str | list[str],
    ) -> tuple[ex.ExecOptions, str | list[str]]:
        """Give an executable its GPUs and launcher (a seam: `placement.place`)."""
        return place(grant, job.ranks, self._options.mpi_launcher, options, command)

    @staticmethod
    def _capture_paths(work_dir: str, uid: str) -> tuple[str, str]:
        """Where a task's capture files go: inside ``work_dir`` whatever the uid."""
        return ex.capture_paths(work_dir, uid)

    async def _stop_children(self, jobs: list[LocalJob], deadline: float) -> None:
        """Kill every child at shutdown (a seam: `ExecutableRunner.stop`)."""
        await self._executables.stop(jobs, deadline)

    # -- cancellation ------------------------------------------------------------

    async def cancel_task(self, uid: str) -> bool:
        """Cancel a task; see the class docstring for what happens to running ones.

        Args:
            uid: The task's uid.

        Returns:
            ``True`` if the task will be reported ``CANCELED``; ``False``
            for unknown or finished uids, and after shutdown.
        """
        job = self._job(uid)
        if job is None or self._closed:
            return False  # CN-2, CN-3
        if job.service is not None and job.service.readiness.timed_out:
            return False  # being stopped for its ready timeout: FAILED (SV-5)
        if job.canceled:
            return True
        decision = self._stop(job)
        if decision is CancelDecision.CANNOT_STOP:
            # CANCELED would not be true: its own outcome stands (CN-4).
            return False
        if decision is CancelDecision.NEVER_RUNS:
            # It never starts (CN-6); CANCELED on a later turn (ST-5).
            self._cancel_soon(job, self._bound_loop())
        # Else STOPPING: its runner reports CANCELED once it has stopped
        # (CN-5, CN-8).
        return True

    def _stop(self, job: LocalJob) -> CancelDecision:
        """Ask the part that holds ``job`` to cancel it; what it found."""
        if job.child is not None:
            return self._executables.cancel(job)
        if job.on_loop is not None and not job.ended:
            return self._on_loop.cancel(job)
        if self._procs is not None and job.call is not None:
            # STOPPING: the worker is being killed; STOPPED follows (CN-8).
            return self._procs.cancel(job)
        found = self._fn_queue.stop(job)
        if isinstance(found, _workers.CoroutineStop):
            self._stop_coroutine(job, found)
            return CancelDecision.STOPPING
        # A sync function running in a thread cannot be stopped (CANNOT_STOP).
        return found

    def _stop_coroutine(self, job: LocalJob, running: _workers.CoroutineStop) -> None:
        """Cancel an ``async def`` function on its worker thread's loop.

        The puller sends STOPPED once the coroutine has ended, and CANCELED is
        reported then, never before. A coroutine that swallows
        `asyncio.CancelledError` and carries on is reported CANCELED only when
        it ends (its result discarded); after ``kill_grace`` a warning says
        so.
        """
        with contextlib.suppress(RuntimeError):  # its loop is closed: it is over
            running.loop.call_soon_threadsafe(running.cancel)
        job.kill_timer = self._bound_loop().call_later(
            self._kill_grace, self._warn_unstopped, job
        )

    def _warn_unstopped(self, job: LocalJob) -> None:
        job.kill_timer = None
        if self._jobs.get(job.uid) is job:
            logger.warning(
                "backend %r: task %r has ignored its cancel for %.1f s; it is "
                "reported CANCELED once it ends",
                self.name,
                job.uid,
                self._kill_grace,
            )

    # -- shutdown --------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop the backend: cancel what is in flight, kill children; idempotent.

        Every unfinished task is reported ``CANCELED`` before this returns, no
        child process is left running, and no callback follows. It returns
        within about ``shutdown_timeout`` seconds even if a worker is stuck.
        """
        if self._shutdown_done is not None:
            await self._shutdown_done.wait()
            return
        self._shutdown_done = asyncio.Event()
        self._state = BackendState.SHUTDOWN
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.shutdown_timeout
        try:
            jobs = list(self._jobs.values())
            for job in jobs:
                if job.service is not None:
                    job.service.close()
                running = self._fn_queue.stop(job)
                # Even a sync function that runs on: SD-2 reports it CANCELED.
                job.canceled = True
                if isinstance(running, _workers.CoroutineStop):
                    with contextlib.suppress(RuntimeError):  # its loop is closed
                        running.loop.call_soon_threadsafe(running.cancel)
            # Pullers take no further job, and none waits for resources.
            self._fn_queue.close()
            self._dispatcher.pending.clear()
            self._executables.queue.clear()
            if self._procs is not None:
                self._procs.close()  # busy workers get TERM, then KILL
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            await self._stop_children(jobs, deadline)
            if self._procs is not None:
                await stop_workers(self._procs, self._kill_grace, deadline)
            await self._on_loop.stop(jobs, deadline)
            # Report what is left, then refuse to report anything else (SD-2, SD-3).
            self._cancel_all()
        finally:
            self._closed = True
            self._jobs.clear()
            self._inbox.notices.clear()
            self._shutdown_done.set()
