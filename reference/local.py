"""`LocalExecutionBackend`: runs tasks on the local machine.

Functions run in a thread or process pool, executables as asyncio subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import signal
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from subprocess import PIPE
from typing import Any

from typing_extensions import Self

from reference import _executables as ex
from reference import _workers
from reference._base import (
    _RUNS_FUNCTIONS_AND_EXECUTABLES,
    BackendBase,
    Job,
    duration,
    function_call,
)
from reference._children import Child, spawn
from reference._procpool import ProcessPool
from reference._resources import (
    Grant,
    ResourcePool,
    capacity_from,
    function_refusal,
    unavailable,
)
from spec import (
    RESOURCE_KEYS,
    BackendState,
    Capability,
    CapabilityNotSupportedError,
    ResourceCapacity,
    ResourceDemand,
    TaskState,
    WorkerLostError,
    resource_demand,
)

__all__ = ["LocalExecutionBackend"]

logger = logging.getLogger("reference")

# Work done per event-loop turn, so a huge batch never stalls the loop (SC-3).
_DISPATCH_CHUNK = 128
_DRAIN_CHUNK = 256
_SPAWNS_PER_TURN = 8

_Notice = tuple["_Job", int, Any, "str | None"]

# What a task without a resource request asks for (one core); shared.
_ONE_CORE = ResourceDemand()


class _Job(Job):
    """The local backend's handle on one accepted task.

    ``canceled`` is also read by pool threads just before a queued job would
    start.
    """

    __slots__ = (
        "call",
        "child",
        "coro",
        "ended",
        "grant",
        "kill_timer",
        "mark",
        "on_loop",
        "pulled",
        "ranks",
        "started",
        "threaded",
        "timed_out",
        "worker",
    )

    def __init__(self, task: dict[str, Any]) -> None:
        super().__init__(task)
        # With resource accounting: what it holds while it runs, and its ranks.
        self.grant: Grant | None = None
        self.ranks = 1
        # Run by the thread pool's pullers, which admit it themselves.
        self.threaded = False
        # Process pools: the validated call, and where it runs (_procpool's mark).
        self.call: tuple[Any, ...] | None = None
        self.worker: Any = None
        # Thread pools: a puller has taken it (under the queue's lock), and
        # (loop, puller) while its coroutine runs, for JobQueue.stop to cancel it.
        self.pulled = False
        self.coro: tuple[asyncio.AbstractEventLoop, Any] | None = None
        # Set by a pool thread once the function has returned or raised.
        self.ended = False
        # ``async_on_loop``: the asyncio task running the coroutine, and
        # whether that task has taken its first step.
        self.on_loop: asyncio.Task[None] | None = None
        self.started = False
        self.child: Child | None = None
        # The next step of stopping a child: KILL after the grace, then the
        # end of the drain (see _terminate).
        self.kill_timer: asyncio.TimerHandle | None = None
        self.timed_out = False
        # Set in the environment of the child and all its descendants, so the
        # ones that leave its process group can still be found and killed.
        self.mark: str | None = None


def _canceled(job: _Job) -> bool:
    return job.canceled


def _pool_width(executor: Executor) -> int:
    """How many threads ``executor`` runs at once: the most pullers worth keeping.

    `ThreadPoolExecutor` keeps its size only in the private ``_max_workers``;
    when that is missing (another Python, a custom executor) the stdlib's own
    default size is the best guess. A wrong guess costs little: too many
    pullers find the queue empty and return, too few lower parallelism.
    """
    width = getattr(executor, "_max_workers", None)
    if isinstance(width, int) and not isinstance(width, bool) and width > 0:
        return width
    return min(32, (os.cpu_count() or 1) + 4)


_PROCESS_POOL_EXTRAS = frozenset(
    {Capability.CRASH_ISOLATION, Capability.PREEMPTIVE_CANCEL}
)


def _pool_like(
    executor: ProcessPoolExecutor,
    push: Callable[[_Notice], None],
    kill_grace: float,
    name: str,
) -> ProcessPool:
    """An owned `ProcessPool` with a `ProcessPoolExecutor`'s settings.

    They are read from its private attributes (the stdlib offers no public
    way); a missing one falls back to the stdlib's own default.
    """
    workers = getattr(executor, "_max_workers", None)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        workers = os.cpu_count() or 1
    return ProcessPool(
        workers,
        push,
        context=getattr(executor, "_mp_context", None),
        initializer=getattr(executor, "_initializer", None),
        initargs=getattr(executor, "_initargs", ()),
        max_tasks_per_child=getattr(executor, "_max_tasks_per_child", None),
        kill_grace=kill_grace,
        name=name,
    )


class LocalExecutionBackend(BackendBase[_Job]):
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
      threads is unsafe. As with any such start method, a script that
      starts the backend at import time needs ``if __name__ == "__main__":``.

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
    (docs/resources.md).

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
        cores: Cores to hand out; ``os.cpu_count()`` when ``None``.
        gpus: GPU ids to hand out; those in ``CUDA_VISIBLE_DEVICES`` when
            ``None``.
        memory: MB to hand out; ``None`` leaves memory unaccounted.
        mpi_launcher: The argv prefix that runs an executable with
            ``ranks > 1``, ``"{ranks}"`` replaced by the rank count (e.g.
            ``["mpiexec", "-n", "{ranks}"]``). Without it such a task is
            FAILED with `spec.CapabilityNotSupportedError`.
        async_on_loop: Run ``async def`` function tasks on the caller's
            event loop instead of in ``executor`` (default ``False``; see
            above and docs/reference-backends.md for when to choose it).

    Raises:
        TypeError: ``executor`` is not a `concurrent.futures.Executor`, both
            ``executor`` and ``processes`` are given, or ``max_processes``,
            ``processes``, ``cores``, ``gpus``, ``memory``, ``mpi_launcher``
            or ``async_on_loop`` has the wrong type.
        ValueError: A numeric option is out of range.
    """

    capabilities: frozenset[Capability] = _RUNS_FUNCTIONS_AND_EXECUTABLES
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
        cores: int | None = None,
        gpus: Sequence[str] | None = None,
        memory: int | None = None,
        mpi_launcher: Sequence[str] | None = None,
        async_on_loop: bool = False,
    ) -> None:
        super().__init__(name)
        if not isinstance(async_on_loop, bool):
            raise TypeError(
                f"async_on_loop must be a bool, got {type(async_on_loop).__name__}"
            )
        self._async_on_loop = async_on_loop
        self._last_function: object = None
        self._last_is_coroutine = False
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(
                "executor must be a concurrent.futures.Executor (a "
                "ThreadPoolExecutor or ProcessPoolExecutor), got "
                f"{type(executor).__name__}"
            )
        if processes is not None:
            if executor is not None:
                raise TypeError(
                    "give executor or processes, not both: processes=N runs "
                    "function tasks in N worker processes of the backend's own"
                )
            if isinstance(processes, bool) or not isinstance(processes, int):
                raise TypeError(f"processes must be an int, got {processes!r}")
            if processes < 1:
                raise ValueError(f"processes must be at least 1, got {processes}")
        if isinstance(max_processes, bool) or not isinstance(max_processes, int):
            raise TypeError(f"max_processes must be an int, got {max_processes!r}")
        if max_processes < 1:
            raise ValueError(f"max_processes must be at least 1, got {max_processes}")
        self._kill_grace = duration("kill_grace", kill_grace, zero_ok=True)
        self._shutdown_timeout = duration("shutdown_timeout", shutdown_timeout)
        if mpi_launcher is not None and (
            isinstance(mpi_launcher, (str, bytes))
            or not mpi_launcher
            or not all(isinstance(arg, str) for arg in mpi_launcher)
        ):
            raise TypeError(
                f"mpi_launcher must be a non-empty list of str, got {mpi_launcher!r}"
            )
        self._mpi_launcher = None if mpi_launcher is None else list(mpi_launcher)
        accounting = resources or any(
            option is not None for option in (cores, gpus, memory, mpi_launcher)
        )
        self._resources: ResourcePool[_Job] | None = (
            self._new_pool(capacity_from(cores, gpus, memory)) if accounting else None
        )
        if accounting:
            self.capabilities = self.capabilities | {Capability.RESOURCES}
        self._admission_scheduled = False
        self._launching = False
        self._procs: ProcessPool | None = None
        if isinstance(executor, ProcessPoolExecutor):
            self._procs = _pool_like(executor, self._push, self._kill_grace, name)
        elif processes is not None:
            self._procs = ProcessPool(
                processes, self._push, kill_grace=self._kill_grace, name=name
            )
        elif executor is None:
            executor = ThreadPoolExecutor(thread_name_prefix=f"asyncflow-{name}")
        if self._procs is not None:
            # This instance isolates crashes and stops running functions.
            self.capabilities = self.capabilities | _PROCESS_POOL_EXTRAS
        self._executor: Executor | None = executor
        self._max_processes = max_processes
        self._loop: asyncio.AbstractEventLoop | None = None
        # Accepted, not yet handed to the executor / the child runners.
        self._to_dispatch: deque[_Job] = deque()
        self._dispatch_scheduled = False
        self._exec_queue: deque[_Job] = deque()
        # Function jobs for a thread pool, run by a few long-lived pullers.
        width = 1 if executor is None else _pool_width(executor)
        self._fn_queue = _workers.JobQueue(self._push, width, self._resources)
        self._fn_queue.spawn = self._spawn_puller
        self._runners: set[asyncio.Task[None]] = set()
        self._spawn_budget = _SPAWNS_PER_TURN
        self._spawn_waiters: deque[asyncio.Future[None]] = deque()
        # Notices from worker threads; drained on the loop, one wake-up per burst.
        self._notices: deque[_Notice] = deque()
        self._wake_pending = False
        self._closed = False
        self._shutdown_done: asyncio.Event | None = None
        # Prefix of every task mark of this backend; set by the first spawn,
        # so that shutdown scans for leftovers only if a child ever ran.
        self._mark_scope: str | None = None

    @classmethod
    async def create(
        cls,
        executor: Executor | None = None,
        name: str = "default",
        *,
        processes: int | None = None,
        max_processes: int = 64,
        kill_grace: float = 2.0,
        shutdown_timeout: float = 5.0,
        resources: bool = False,
        cores: int | None = None,
        gpus: Sequence[str] | None = None,
        memory: int | None = None,
        mpi_launcher: Sequence[str] | None = None,
        async_on_loop: bool = False,
    ) -> Self:
        """Construct and await a backend: ``backend = await Backend.create()``.

        Takes the same arguments as the class.

        Returns:
            The ready backend.
        """
        backend = cls(
            executor,
            name,
            processes=processes,
            max_processes=max_processes,
            kill_grace=kill_grace,
            shutdown_timeout=shutdown_timeout,
            resources=resources,
            cores=cores,
            gpus=gpus,
            memory=memory,
            mpi_launcher=mpi_launcher,
            async_on_loop=async_on_loop,
        )
        return await backend

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
            # Callbacks owed by the old loop will never come.
            self._wake_pending = False
            self._spawn_budget = _SPAWNS_PER_TURN
            self._spawn_waiters.clear()
        accepted = self._accept(tasks, _Job)
        if not accepted:
            return
        self._to_dispatch.extend(accepted)
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            # Handed to the executor on later loop turns, in chunks: submit
            # returns fast and never delivers a state itself (ST-5).
            loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._closed:
            return
        pending = self._to_dispatch
        count = min(len(pending), _DISPATCH_CHUNK)
        pool = self._resources
        if pool is None:
            ready: list[_Job] = []
            for _ in range(count):
                job = pending.popleft()
                if not job.canceled:
                    ready.append(job)
            self._launch(ready)
        else:
            jobs: list[_Job] = []
            demands: list[ResourceDemand] = []
            # The default path, inline: a thread-pool function task with no
            # request asks for one core, which any capacity can give.
            plain = self._procs is None and not self._async_on_loop
            for _ in range(count):
                job = pending.popleft()
                if job.canceled:
                    continue
                task = job.task
                if (
                    plain
                    and not task.get("task_backend_specific_kwargs")
                    and task.get("function") is not None
                ):
                    try:
                        function_call(task)  # a malformed call fails here
                    except Exception as exc:
                        self._fail(job, exc)
                        continue
                    job.threaded = True
                    jobs.append(job)
                    demands.append(_ONE_CORE)
                elif (demand := self._wait_for_resources(job, pool)) is not None:
                    jobs.append(job)
                    demands.append(demand)
            self._last_function = None  # keep no task's function past its turn
            self._admit(jobs, demands)
        if pending and not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self._bound_loop().call_soon(self._dispatch)

    def _launch(self, jobs: list[_Job]) -> None:
        """Hand jobs to the thread pool, the process pool or the child runners."""
        if not jobs:
            return
        self._launching = True
        try:
            self._hand_over(jobs)
        finally:
            self._launching = False

    def _hand_over(self, jobs: list[_Job]) -> None:
        procs = self._procs
        on_loop = self._async_on_loop
        threaded: list[_Job] = []
        in_processes: list[_Job] = []
        looped: list[_Job] = []
        for job in jobs:
            task = job.task
            try:
                if task.get("function") is not None:
                    call = function_call(task)  # a malformed call fails here
                    if on_loop and self._is_coroutine_function(call[0]):
                        self._start_on_loop(job, call)
                        looped.append(job)
                    elif procs is not None:
                        job.call = call
                        in_processes.append(job)
                    else:
                        threaded.append(job)
                elif task.get("executable") is not None:
                    self._exec_queue.append(job)
                else:
                    self._fail(job, self._unrunnable(task))
            except Exception as exc:  # a bad call; a custom executor's submit failing
                self._fail(job, exc)
        if threaded:
            self._start_in_threads(threaded)
        if in_processes and procs is not None:
            procs.put(in_processes)
        if looped:
            # One check for the chunk, right after the tasks' first steps.
            self._bound_loop().call_soon(self._report_on_loop_running, looped)
            self._last_function = None  # keep no task's function past its turn
        if self._exec_queue:
            self._start_runners()

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
    def _new_pool(capacity: ResourceCapacity) -> ResourcePool[_Job]:
        """The pool resources are handed out from (a seam for the mutants)."""
        return ResourcePool(capacity)

    def _wait_for_resources(
        self, job: _Job, pool: ResourcePool[_Job]
    ) -> ResourceDemand | None:
        """Check ``job``'s request: its demand, or ``None`` if it failed.

        A request that can never run fails at once (RQ-2), a malformed one
        names what is wrong (RQ-3). Also marks the jobs the pullers run.
        """
        task = job.task
        options = task.get("task_backend_specific_kwargs")
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
        if options is None or (
            isinstance(options, dict) and options.keys().isdisjoint(RESOURCE_KEYS)
        ):
            return _ONE_CORE  # the default path: one core fits any capacity
        try:
            demand = resource_demand(options if isinstance(options, dict) else None)
        except ValueError as exc:
            self._fail(job, exc)  # RQ-3
            return None
        refusal = function_refusal(job.uid, demand) if is_function else None
        if refusal is not None:
            self._fail(job, refusal)
            return None
        if demand.ranks > 1 and self._mpi_launcher is None:
            self._fail(
                job,
                CapabilityNotSupportedError(
                    "ranks > 1 without an mpi_launcher",
                    f"task {job.uid!r} asks for {demand.ranks} ranks; construct "
                    'the backend with mpi_launcher=["mpiexec", "-n", "{ranks}"]',
                ),
            )
            return None
        if not pool.fits(demand):
            self._fail(job, unavailable(job.uid, demand, pool.capacity))  # RQ-2
            return None
        job.ranks = demand.ranks
        return demand

    def _admit(
        self, jobs: Sequence[_Job] = (), demands: Sequence[ResourceDemand] = ()
    ) -> None:
        """Queue ``jobs`` for their ``demands``; start every job that fits now."""
        admitted = self._fn_queue.admit(jobs, demands)
        if admitted is None:  # a puller holds the lock: admit on a later turn
            self._admit_soon()
            return
        others, pullers = admitted
        self._launch(others)
        self._start_pullers(pullers)

    def _admit_soon(self) -> None:
        if not self._admission_scheduled:
            self._admission_scheduled = True
            self._bound_loop().call_soon(self._admit_waiting)

    def _admit_waiting(self) -> None:
        self._admission_scheduled = False
        if self._resources is not None and not self._closed:
            self._admit()

    def _is_coroutine_function(self, func: Callable[..., Any]) -> bool:
        # An engine submits the same few functions over and over: remember
        # the last answer within a dispatch turn rather than ask inspect for
        # every task.
        if func is not self._last_function:
            self._last_function = func
            self._last_is_coroutine = inspect.iscoroutinefunction(func)
        return self._last_is_coroutine

    def _start_on_loop(
        self,
        job: _Job,
        call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]],
    ) -> None:
        """Start an ``async def`` task as an asyncio task on the bound loop."""
        job.on_loop = self._bound_loop().create_task(self._run_on_loop(job, *call))

    async def _run_on_loop(
        self,
        job: _Job,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        # Outcomes are reported here, in the task's last step, rather than
        # from a done-callback: one loop turn and one handle fewer per task.
        # The coroutine is built here too, so a task canceled before its
        # first step leaves no never-awaited coroutine behind.
        job.started = True
        try:
            value = func(*args, **kwargs)
            if asyncio.iscoroutine(value):
                value = await value
        except BaseException as exc:
            job.ended = True
            if job.canceled:
                # Stopped by cancel_task or shutdown: CANCELED is true now (CN-5).
                self._finish(job, TaskState.CANCELED)
            else:
                # Its own error; a CancelledError it raised itself included.
                self._fail(job, exc, "".join(traceback.format_exception(exc)))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise  # a request to stop the program, not only a task's failure
            return
        job.ended = True
        if job.canceled:
            # It swallowed the cancel and returned: it has stopped; the value
            # is dropped, as cancel_task promised CANCELED.
            self._finish(job, TaskState.CANCELED)
            return
        job.task["return_value"] = value
        self._finish(job, TaskState.DONE)

    def _report_on_loop_running(self, jobs: list[_Job]) -> None:
        """RUNNING for the started tasks still running after their first step."""
        for job in jobs:
            if job.started and not job.ended and self._owes_result(job):
                self._report(job.task, TaskState.RUNNING)

    def _start_in_threads(self, jobs: list[_Job]) -> None:
        self._start_pullers(self._fn_queue.put(jobs))

    def _start_pullers(self, wanted: int) -> None:
        queue = self._fn_queue
        for started in range(wanted):
            try:
                self._spawn_puller()
            except Exception as exc:  # e.g. the executor was shut down under us
                stranded: list[_Job] = queue.retire(wanted - started)
                # Their cores come back as they fail: admit the next on a
                # later turn, not by recursing once per task.
                launching, self._launching = self._launching, True
                try:
                    for job in stranded:
                        self._fail(job, exc)
                finally:
                    self._launching = launching
                return

    def _spawn_puller(self) -> None:
        """Submit one more puller to the thread pool (from any thread)."""
        assert self._executor is not None  # a thread pool has one
        self._executor.submit(self._fn_queue.pull)

    # -- notices from workers --------------------------------------------------

    def _push(self, notice: _Notice) -> None:
        """Queue a worker's notice; wake the loop once per burst. Thread-safe."""
        self._notices.append(notice)
        # Appending before reading the flag means a drain that already reset
        # it will still see this notice; a spare wake-up is harmless.
        loop = self._loop
        if not self._wake_pending and loop is not None:
            self._wake_pending = True
            # A closed loop means nobody is left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._wake_pending = False
        notices = self._notices
        if self._closed:
            notices.clear()
            return
        report = self._report
        admitted: list[_Job] = []
        for _ in range(min(len(notices), _DRAIN_CHUNK)):
            job, kind, value, text = notices.popleft()
            if kind == _workers.STOPPED:
                # A canceled job's worker or coroutine has stopped: now the
                # CANCELED that cancel_task promised is true (CN-8).
                if job.kill_timer is not None:
                    job.kill_timer.cancel()
                    job.kill_timer = None
                self._finish(job, TaskState.CANCELED)
                continue
            if not self._owes_result(job):
                continue  # canceled (result discarded) or already reported
            task = job.task
            if kind == _workers.RUNNING:
                # A puller sends it once, as it takes the job (_workers.JobQueue).
                # If the function has already returned, RUNNING is no longer
                # true: the outcome follows, and RUNNING is optional (ST-3).
                # Through an engine that halves the callbacks of short tasks.
                if not job.ended:
                    report(task, TaskState.RUNNING)
            elif kind == _workers.DONE:
                task["return_value"] = value
                self._finish(job, TaskState.DONE)
            elif kind == _workers.FAILED:
                task["exception"] = value
                task["stderr"] = text
                self._finish(job, TaskState.FAILED)
            elif kind == _workers.ADMITTED:
                # A puller admitted it (it holds its resources); it is not
                # one the pullers run.
                admitted.append(job)
            else:
                self._worker_lost(job, value)
        self._launch(admitted)
        if notices and not self._wake_pending:
            self._wake_pending = True
            self._bound_loop().call_soon(self._drain)

    def _finish(self, job: _Job, state: TaskState) -> bool:
        # A job a puller took gives back its grant in that puller, as the
        # function returns (_workers.JobQueue); any other grant comes back here.
        waiting = (
            job.grant is not None and not job.pulled and self._fn_queue.release(job)
        )
        reported = super()._finish(job, state)
        if waiting and not self._closed:
            if self._launching:
                # Inside _launch (a job failed as it was handed over): admit
                # on a later turn rather than recursing.
                self._admit_soon()
            else:
                self._admit()
        return reported

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:  # pragma: no cover - set by the first submit
            raise RuntimeError("backend is not bound to an event loop")
        return self._loop

    # -- process pool faults ----------------------------------------------------

    def _worker_lost(self, job: _Job, code: object) -> None:
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

    def _start_runners(self) -> None:
        loop = self._bound_loop()
        want = min(len(self._exec_queue), self._max_processes - len(self._runners))
        for _ in range(want):
            runner = loop.create_task(self._run_executables())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)

    async def _run_executables(self) -> None:
        # One runner per allowed child: the runner count is the bound (SC-4).
        queue = self._exec_queue
        while queue and not self._closed:
            job = queue.popleft()
            if job.canceled:
                continue
            try:
                await self._run_executable(job)
            except Exception as exc:  # a bug must not hang the task
                logger.exception("backend %r: executable task %r", self.name, job.uid)
                self._fail(job, exc)

    async def _run_executable(self, job: _Job) -> None:
        task = job.task
        await self._spawn_slot()
        if _canceled(job) or self._closed:
            return  # cancelled while waiting for its turn: it never starts (CN-6)
        try:
            options = ex.parse_options(task)
            command = ex.build_command(task, options)
        except ValueError as exc:
            self._fail(job, exc)
            return
        if job.grant is not None:
            options, command = self._placed(job, job.grant, options, command)
        out = err = PIPE
        paths = ("", "")
        if options.capture_stdio:
            # Fixed now: a _work_dir changed while the task runs must not
            # change where its output goes, nor the paths it reports.
            paths = self._capture_paths(self._work_dir, job.uid)
            try:
                out, err = ex.open_capture_fds(paths)
            except OSError as exc:
                self._fail(job, exc)
                return
        if self._mark_scope is None:
            self._mark_scope = ex.new_mark()
        job.mark = ex.new_mark(self._mark_scope)
        try:
            child = await spawn(command, options, out, err, mark=job.mark)
        except OSError as exc:
            self._fail(job, ex.spawn_error(exc, task, options))
            return
        finally:
            if out != PIPE:  # capture files: the child has its own copies
                os.close(out)
                os.close(err)
        if job.canceled or self._closed:
            # Cancelled while starting; its CANCELED is already on its way.
            self._kill_now(job, child)
            await child.finished
            child.close()
            return
        job.child = child
        self._report(task, TaskState.RUNNING)
        timer = None
        if options.timeout is not None:
            timer = self._bound_loop().call_later(options.timeout, self._time_out, job)
        try:
            await child.finished
        except BaseException:
            # Abandoned (the runner was cancelled): leave no process behind.
            self._kill_now(job, child)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if job.kill_timer is not None:
                job.kill_timer.cancel()
                # The leader is gone; make sure nothing of its group lingers.
                self._kill_now(job, child)
            child.close()
        if _canceled(job):  # a helper: mypy would keep the narrowing across awaits
            # cancel_task promised CANCELED once the child was gone (CN-5).
            self._finish(job, TaskState.CANCELED)
            return
        code = child.returncode
        exit_code = code if code is not None else -1
        if options.capture_stdio:
            stdout, stderr = paths
        else:
            stdout = ex.decode(b"".join(child.stdout))
            stderr = ex.decode(b"".join(child.stderr))
        done = ex.record_exit(
            task, options, exit_code, stdout, stderr, timed_out=job.timed_out
        )
        self._finish(job, TaskState.DONE if done else TaskState.FAILED)

    def _placed(
        self,
        job: _Job,
        grant: Grant,
        options: ex.ExecOptions,
        command: str | list[str],
    ) -> tuple[ex.ExecOptions, str | list[str]]:
        """Give an executable its GPUs (RQ-4) and, for ranks, its launcher."""
        if grant.gpus:
            env = dict(os.environ if options.env is None else options.env)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(grant.gpus)
            options = dataclasses.replace(options, env=env)
        if job.ranks > 1 and self._mpi_launcher is not None:
            ranks = str(job.ranks)
            launcher = [arg.replace("{ranks}", ranks) for arg in self._mpi_launcher]
            inner = ["/bin/sh", "-c", command] if isinstance(command, str) else command
            command = launcher + inner
        return options, command

    @staticmethod
    def _capture_paths(work_dir: str, uid: str) -> tuple[str, str]:
        """Where a task's capture files go: inside ``work_dir`` whatever the uid."""
        return ex.capture_paths(work_dir, uid)

    def _time_out(self, job: _Job) -> None:
        if not job.canceled:
            job.timed_out = True
            self._terminate(job)

    async def _spawn_slot(self) -> None:
        """Wait for a turn of the loop with spawns to spare.

        Each spawn blocks the loop thread until the child has executed: a
        burst of them in one loop turn would stall the loop (SC-3), while
        one per turn would starve the children of throughput. Runners past
        this turn's budget queue up and are woken in order, a turn's worth
        at a time (never polling: 64 runners spinning on ``sleep(0)`` cost
        more than the spawns).
        """
        loop = self._bound_loop()
        if self._spawn_budget <= 0:
            waiter = loop.create_future()
            self._spawn_waiters.append(waiter)
            await waiter  # its spawn was counted by the refill that woke it
            return
        if self._spawn_budget == _SPAWNS_PER_TURN:
            loop.call_soon(self._refill_spawn_budget)
        self._spawn_budget -= 1

    def _refill_spawn_budget(self) -> None:
        budget = _SPAWNS_PER_TURN
        waiters = self._spawn_waiters
        while waiters and budget:
            waiter = waiters.popleft()
            if not waiter.done():  # else its runner was cancelled
                waiter.set_result(None)
                budget -= 1
        self._spawn_budget = budget
        if budget < _SPAWNS_PER_TURN:
            # The woken runners spawn on the next turn: refill after it.
            self._bound_loop().call_soon(self._refill_spawn_budget)

    def _terminate(self, job: _Job) -> None:
        """Stop a running child: TERM now, KILL after the grace, then drain.

        The signals go to the child's process group and to its descendants
        that left the group (found by the task's mark). Once they are
        killed, output is read for `ex.DRAIN` seconds more; then the pipes
        are closed whatever still holds them (a descendant that could not be
        found), so the task is reported within the grace plus the drain
        (CN-7). With nothing left to signal (the leader is gone and nothing
        carries the mark), the drain starts at once.
        """
        child = job.child
        if child is None or job.kill_timer is not None:
            return
        child.poll()  # an exited leader is no reason to wait the grace
        in_group = ex.signal_group(child.pid, signal.SIGTERM)
        escaped = ex.signal_marked(
            signal.SIGTERM, self._marks(job), skip_groups=(child.pid,)
        )
        grace = self._kill_grace if in_group or escaped else 0.0
        job.kill_timer = self._bound_loop().call_later(grace, self._kill, job)

    def _kill(self, job: _Job) -> None:
        child = job.child
        if child is None:
            return
        self._kill_now(job, child)
        job.kill_timer = self._bound_loop().call_later(
            ex.DRAIN, self._end_drain, job, child
        )

    def _end_drain(self, job: _Job, child: Child) -> None:
        # Something still holds the pipes. Look once more (a descendant caught
        # in the middle of an exec shows no environment to the first scan),
        # then stop waiting for it.
        ex.signal_marked(signal.SIGKILL, self._marks(job), skip_groups=(child.pid,))
        child.stop_reading()

    def _kill_now(self, job: _Job, child: Child) -> None:
        """SIGKILL the child's group and its marked descendants."""
        ex.signal_group(child.pid, signal.SIGKILL)
        ex.signal_marked(signal.SIGKILL, self._marks(job), skip_groups=(child.pid,))

    @staticmethod
    def _marks(job: _Job) -> tuple[str, ...]:
        return (job.mark,) if job.mark is not None else ()

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
            return False
        if job.canceled:
            return True
        loop = self._bound_loop()
        if job.child is not None:
            job.canceled = True
            # The runner reports CANCELED once the child has exited.
            self._terminate(job)
        elif job.on_loop is not None and not job.ended:
            # CancelledError inside the coroutine; _run_on_loop reports
            # CANCELED once it has stopped. One whose task has not taken its
            # first step never starts (the cancel ends its task before the
            # body runs), so nothing else would report it.
            job.canceled = True
            job.on_loop.cancel()
            if not job.started:
                self._cancel_soon(job, loop)
        elif self._procs is not None and job.call is not None:
            queued = self._procs.cancel(job)
            if queued is None:
                return False  # its result is already back: that outcome stands
            if queued:
                self._cancel_soon(job, loop)  # never reached a worker: never starts
            # Else its worker is being killed; STOPPED reports CANCELED once
            # the worker is dead (CN-8).
        else:
            running = self._fn_queue.stop(job)
            if running == _workers.UNSTOPPABLE:
                # A sync function running in a thread cannot be stopped:
                # CANCELED would not be true, so its own outcome stands.
                return False
            if running == _workers.NOT_STARTED:
                self._cancel_soon(job, loop)
            else:
                assert not isinstance(running, str)
                self._stop_coroutine(job, running, loop)
        return True

    def _stop_coroutine(
        self,
        job: _Job,
        running: tuple[asyncio.AbstractEventLoop, Callable[[], None]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Cancel an ``async def`` function on its worker thread's loop.

        The puller sends STOPPED once the coroutine has ended, and CANCELED is
        reported then, never before. A coroutine that swallows
        `asyncio.CancelledError` and carries on is reported CANCELED only when
        it ends (its result discarded); after ``kill_grace`` a warning says
        so.
        """
        worker_loop, cancel = running
        with contextlib.suppress(RuntimeError):  # its loop is closed: it is over
            worker_loop.call_soon_threadsafe(cancel)
        job.kill_timer = loop.call_later(self._kill_grace, self._warn_unstopped, job)

    def _warn_unstopped(self, job: _Job) -> None:
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
        deadline = loop.time() + self._shutdown_timeout
        try:
            jobs = list(self._jobs.values())
            for job in jobs:
                running = self._fn_queue.stop(job)
                # Even a sync function that runs on: SD-2 reports it CANCELED.
                job.canceled = True
                if not isinstance(running, str):  # a coroutine in a pool thread
                    with contextlib.suppress(RuntimeError):
                        running[0].call_soon_threadsafe(running[1])
            # Pullers take no further job, and none waits for resources.
            self._fn_queue.close()
            self._to_dispatch.clear()
            self._exec_queue.clear()
            if self._procs is not None:
                self._procs.close()  # busy workers get TERM, then KILL
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            await self._stop_children(jobs, deadline)
            await self._stop_workers(deadline)
            await self._stop_on_loop(jobs, deadline)
            # Report what is left, then refuse to report anything else (SD-2, SD-3).
            self._cancel_all()
        finally:
            self._closed = True
            self._jobs.clear()
            self._notices.clear()
            self._shutdown_done.set()

    async def _stop_on_loop(self, jobs: list[_Job], deadline: float) -> None:
        """Cancel the coroutines running on the loop; wait (bounded) until they stop."""
        running = [
            job.on_loop for job in jobs if job.on_loop is not None and not job.ended
        ]
        if not running:
            return
        for task in running:
            task.cancel()
        timeout = max(0.01, deadline - asyncio.get_running_loop().time())
        # A coroutine that ignores the cancel is left behind at the deadline;
        # its task is still reported CANCELED (SD-2), its result dropped.
        await asyncio.wait(running, timeout=timeout)

    async def _stop_children(self, jobs: list[_Job], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        # Every job whose runner still waits, even if its leader has exited:
        # a descendant may hold the pipes.
        running = [j for j in jobs if j.child is not None]
        # One scan for every mark of this backend: the escaped descendants of
        # running tasks, and leftovers of finished ones (a daemon that left
        # its group) too.
        scope = () if self._mark_scope is None else (self._mark_scope + ".",)
        groups = {j.child.pid for j in running if j.child is not None}
        for job in running:
            if job.child is not None and job.kill_timer is None:
                ex.signal_group(job.child.pid, signal.SIGTERM)
        ex.signal_marked(signal.SIGTERM, prefixes=scope, skip_groups=groups)
        if self._runners:
            grace = min(self._kill_grace, max(0.0, deadline - loop.time()))
            await asyncio.wait(set(self._runners), timeout=grace)
        for job in running:
            if job.kill_timer is not None:
                job.kill_timer.cancel()
            if job.child is not None:
                ex.signal_group(job.child.pid, signal.SIGKILL)
                # Tasks end CANCELED: no output is owed, so no drain either.
                job.child.stop_reading()
        ex.signal_marked(signal.SIGKILL, prefixes=scope)
        if self._runners:
            await asyncio.wait(
                set(self._runners), timeout=max(0.01, deadline - loop.time())
            )
        for runner in list(self._runners):
            runner.cancel()

    async def _stop_workers(self, deadline: float) -> None:
        procs = self._procs
        if procs is None:
            return
        loop = asyncio.get_running_loop()
        # The dispatchers TERM busy workers, KILL them after the grace, and
        # reap them; past the grace (or near the deadline) KILL them all here.
        grace_end = min(deadline - 0.1, loop.time() + self._kill_grace + 0.1)
        while loop.time() < grace_end and procs.alive():
            await asyncio.sleep(0.01)
        if procs.alive():
            procs.kill_all()
        while loop.time() < deadline and procs.alive():
            await asyncio.sleep(0.01)
